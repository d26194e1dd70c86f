"""The one wiring place: ``create_app(config)`` builds the gateway's aiohttp application.

The application owns the shared resources and hands them to what uses them: the embedded
store's Storage (shared by the store API sub-app and the runtime's embedded sink) and the HTTP
client session (shared by the adapters). :func:`build_runtime` creates every component of the
runtime, typed, in one place. Lifetimes, in start order (teardown runs in reverse, and only for
what started):

1. the Storage (before, and closed after, everything else, the store sub-app included);
2. the HTTP client session (``cleanup_ctx``);
3. the store API sub-app (its subscriptions notifier and temporal database);
4. the runtime (:func:`_runtime_ctx`): sources stop first, what they sent is committed,
   publishers drain within a bound, then sinks and the gateway database close.

With ``jonction run --workers N`` this process is the parent of N ingestion workers
(:mod:`gateway.runtime.workers`): they run the sources that can share their input and commit to
the same gateway database; they start after this process's sources and stop before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway import home
from gateway.console import web as console
from gateway.contract import Adapter, discover, discover_simulators
from gateway.crosssite import HostPolicy
from gateway.errors import ConfigInvalid, JonctionError, Unavailable
from gateway.rules.engine import RulesEngine
from gateway.runtime import admin
from gateway.runtime.archive import RawArchive
from gateway.runtime.commands import Commands, listing_response
from gateway.runtime.config import CONTEXT_PATH, GatewayConfig, check_source_configs
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.dedup import SeenKeys, shared_claims
from gateway.runtime.logging import redact
from gateway.runtime.metrics import Labels, Metrics
from gateway.runtime.outbox import STATUS_CACHE_S, Outbox
from gateway.runtime.pipeline import Pipeline, SinkRoute
from gateway.runtime.publisher import Publisher
from gateway.runtime.sinks import EmbeddedSink, RemoteBrokerSink, Sink
from gateway.runtime.state import RUNTIME, Runtime
from gateway.runtime.validator import load_validator
from gateway.runtime.workers import PoolRuntime, WorkerPlan, WorkerPool, workers_handler
from gateway.store.app import create_store_app
from gateway.store.backends import create_storage
from gateway.store.base import Storage, tune_gc
from gateway.store.settings import StoreSettings
from gateway.store.subscriptions import NOTIFIER_KEY
from schemas import contexts

log = logging.getLogger("jonction.runtime")

EMBEDDED = "embedded"
"""Name of the embedded store's sink."""
MAINTENANCE_EVERY_S = 60.0

HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("jonction_http", aiohttp.ClientSession)
STORE_API: web.AppKey[web.Application] = web.AppKey("jonction_store_api", web.Application)
"""The embedded store's API sub-app (its subscriptions notifier tells the embedded sink how to batch)."""
"""The HTTP client session of the gateway application, shared by the adapters (set when it starts)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------------------- middlewares


def _auth_middleware(token: str | None) -> Middleware:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if expected is not None and path.startswith("/admin/") and path != "/admin/openapi.json":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return admin.problem(401, "Unauthorized", "a valid bearer token is required")
        return await handler(request)

    return auth


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except JonctionError as exc:
        return admin.problem(exc.http_status, type(exc).__name__, str(exc))
    except Exception as exc:  # never a traceback to a client; the log has the details
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        return admin.problem(500, "Internal Server Error", "unexpected error (see the gateway log)")


@web.middleware
async def _commands(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes of commandable attributes through the embedded store become commands (gateway.runtime.commands)."""
    rt = request.config_dict.get(RUNTIME)
    if rt is None or rt.commands is None or not request.path.startswith("/ngsi-ld/"):
        return await handler(request)
    return await rt.commands.intercept(request, handler)


async def commands_log(request: web.Request) -> web.Response:
    """``GET /admin/commands?entity=&status=&tenant=``: commands sent back to the field."""
    return listing_response(request.app[RUNTIME].commands, request.query)


# ---------------------------------------------------------------------------- routes


async def healthz(request: web.Request) -> web.Response:  # noqa: ARG001  # aiohttp handler signature
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


@runtime_checkable
class _Checked(Protocol):
    """A shared dedup store that can tell whether it answers (:meth:`PostgresClaims.check`)."""

    async def check(self) -> None:
        """Raise unless the store answers within a short bound."""
        ...


async def readyz(request: web.Request) -> web.Response:
    """Readiness with the state of storage, the shared dedup store, sinks and sources.

    Not ready (503) when storage or the embedded store fails, when the idempotency keys shared
    with other instances (``dedup.database``) cannot be reached (every message would be refused:
    a load balancer should send them to another instance), or a source has failed (it will not
    restart on its own); a remote broker that is down is reported as ``degraded`` but keeps the
    gateway ready, because the outbox buffers for it (a source being retried is reported likewise).
    """
    rt = request.app[RUNTIME]
    checks: dict[str, Any] = {}
    ready = rt.ready
    try:
        rt.db.ping()
        checks["storage"] = {"status": "ok"}
    except Exception as exc:
        checks["storage"] = {"status": "failed", "error": str(exc)}
        ready = False
    shared = rt.pipeline.shared
    if isinstance(shared, _Checked):
        try:
            await shared.check()
            checks["dedup"] = {"status": "ok"}
        except Exception as exc:
            checks["dedup"] = {"status": "failed", "error": redact(str(exc))}
            ready = False
    sinks: dict[str, Any] = {}
    for name, pub in rt.publishers.items():
        if name == EMBEDDED:
            try:
                await pub.sink.check()
                sinks[name] = {"status": "ok"}
            except Exception as exc:
                sinks[name] = {"status": "failed", "error": redact(str(exc))}
                ready = False
        else:
            sinks[name] = {"status": "ok" if pub.state == "closed" and not pub.failures else "degraded",
                           "circuit": pub.state, "error": pub.last_error}
    checks["sinks"] = sinks
    checks["sources"] = {n: {"status": s.status.state, "error": s.status.last_error} for n, s in rt.sources.items()}
    # A source that failed for good (an invalid configuration) will not come back on its own:
    # the gateway is not doing its job. One that is unavailable is being retried, like a broker.
    if any(s.status.state == "failed" for s in rt.sources.values()):
        ready = False
    return web.json_response({"status": "ready" if ready else "not-ready", "checks": checks},
                             status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    rt = request.app[RUNTIME]
    return web.Response(text=rt.metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def jonction_context(request: web.Request) -> web.Response:
    """The jonction @context, served to brokers that expand entities sent with a Link to it.

    No token: a broker fetching a @context carries none. The document is immutable for a
    release, so brokers and caches may keep it (an ETag answers their revalidation).
    """
    body, etag = _context_document()
    headers = {"ETag": etag, "Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*",
               "X-Content-Type-Options": "nosniff"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/ld+json", headers=headers)


@functools.cache
def _context_document() -> tuple[bytes, str]:
    document = contexts.bundled_context(contexts.JONCTION_CONTEXT_IRI)
    body = json.dumps(document, ensure_ascii=False, sort_keys=True, indent=1).encode()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


# ---------------------------------------------------------------------------- store


def allowed_hosts(cfg: GatewayConfig) -> tuple[str, ...]:
    """Host names the admin and write APIs answer to besides loopback: ``server.allowed_hosts`` and
    the host of ``server.public_url`` (the name clients were told to use)."""
    public = urlsplit(cfg.public_url).hostname if cfg.public_url else None
    return (*cfg.allowed_hosts, *([public] if public else []))


def store_settings(cfg: GatewayConfig) -> StoreSettings:
    """The embedded store API's settings, from the gateway's config (same token, hosts, data)."""
    everyone, per_tenant = cfg.embedded_tokens
    tokens = (frozenset({cfg.admin_token}) if cfg.admin_token else frozenset()) | everyone
    return StoreSettings(data_dir=cfg.data_dir, host=cfg.host, tokens=tokens, tenant_tokens=per_tenant,
                         allowed_hosts=frozenset(allowed_hosts(cfg)),
                         durability="full" if cfg.durability == "full" else "normal",
                         allow_unfiltered_queries=cfg.allow_unfiltered_queries,
                         database=cfg.embedded_database, sharing=cfg.embedded_sharing)


def _storage_ctx(storage: Storage, cfg: GatewayConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    """The embedded store's Storage: opened first, closed last (see :func:`_enclosing`)."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        tune_gc()
        await storage.start()
        # A client that follows the Link the gateway announces reads its own store with it.
        storage.alias_context(cfg.context_url, contexts.JONCTION_CONTEXT_IRI)
        try:
            yield
        finally:
            await storage.close()

    return ctx


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    """The HTTP client session the adapters share."""
    async with aiohttp.ClientSession() as session:
        app[HTTP] = session
        yield


# ---------------------------------------------------------------------------- gauges


def _register_gauges(rt: Runtime) -> None:
    """Gauges read at scrape time: each asks the component that owns the figure."""

    # Both outbox gauges read one status query, at most STATUS_CACHE_S old: a scrape costs one
    # query, and a scraper polling many times a second no more than one a second.
    def backlog() -> Iterable[tuple[Labels, float]]:
        return [((("sink", r.sink), ("tenant", r.tenant)), float(r.entities))
                for r in rt.outbox.status(STATUS_CACHE_S)]

    def age() -> Iterable[tuple[Labels, float]]:
        return [((("sink", r.sink), ("tenant", r.tenant)), r.oldest_age_s) for r in rt.outbox.status(STATUS_CACHE_S)]

    def outbox_bytes() -> Iterable[tuple[Labels, float]]:
        return [((), float(rt.outbox.bytes))]

    def stored_letters() -> Iterable[tuple[Labels, float]]:
        return [((("source", s), ("stage", st)), float(n)) for (s, st), n in sorted(rt.deadletters.count().items())]

    def circuits() -> Iterable[tuple[Labels, float]]:
        return [((("sink", n),), 1.0 if p.state == "open" else 0.0) for n, p in rt.publishers.items()]

    def sources_up() -> Iterable[tuple[Labels, float]]:
        return [((("source", n), ("adapter", s.status.adapter)), 1.0 if s.status.state == "running" else 0.0)
                for n, s in rt.sources.items()]

    def archive_bytes() -> Iterable[tuple[Labels, float]]:
        return [((), float(rt.archive.bytes))]

    m = rt.metrics
    m.gauge("jonction_outbox_entities", "Entities waiting in the outbox, per sink and tenant.", backlog)
    m.gauge("jonction_outbox_oldest_age_seconds", "Age of the oldest entity waiting, per sink and tenant.", age)
    m.gauge("jonction_outbox_bytes", "Bytes held by the outbox.", outbox_bytes)
    m.gauge("jonction_dead_letters_stored", "Dead letters currently kept, per source and stage.", stored_letters)
    m.gauge("jonction_sink_circuit_open", "1 when the sink's circuit breaker is open.", circuits)
    m.gauge("jonction_source_up", "1 when the source is running.", sources_up)
    m.gauge("jonction_archive_bytes", "Bytes held by the raw archive.", archive_bytes)


# ---------------------------------------------------------------------------- lifecycle


async def _maintenance(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(MAINTENANCE_EVERY_S)
        try:
            rt.archive.prune()
            rt.seen.prune()
            if rt.commands is not None:
                rt.commands.prune()
        except Exception as exc:  # maintenance must never stop the gateway
            log.warning("maintenance failed: %s", exc)


async def _start_simulators(rt: Runtime) -> None:
    if not rt.config.simulators:
        return
    found = discover_simulators()
    for sim_cfg in {s.name: s for s in rt.config.simulators}.values():
        factory = found.get(sim_cfg.name)
        if factory is None:
            log.warning("simulator %s is not installed; skipped", sim_cfg.name)
            continue
        sim = factory(sim_cfg.options)
        await sim.start()
        rt.simulators.append(sim)


def build_runtime(
    config: GatewayConfig,
    adapters: Mapping[str, type[Adapter]],
    *,
    http: aiohttp.ClientSession,
    storage: Storage | None,
    publishing: bool = True,
    workers: WorkerPlan | None = None,
) -> Runtime:
    """Every component of the running gateway, created and wired here (opens the gateway database).

    ``publishing=False`` builds a worker of ``jonction run --workers``: the ingestion half only
    (it queues for every configured sink; the parent publishes). ``workers`` builds the parent of
    such workers: the sources they run are bound here but supervised there.
    """
    db = Database(config.data_dir / "gateway.sqlite", durability=config.durability)
    metrics = Metrics()
    archive = RawArchive(db, max_bytes=config.archive_max_bytes, max_age_s=config.archive_max_age_s)
    outbox = Outbox(db, max_bytes=config.outbox_max_bytes)
    deadletters = DeadLetters(db)
    seen = SeenKeys(db, max_age_s=config.dedup_max_age_s)
    sinks: list[Sink] = []
    routes: list[SinkRoute] = []
    latest_only: dict[str, bool] = {}
    if storage is not None or (not publishing and config.embedded):
        if storage is not None:
            sinks.append(EmbeddedSink(EMBEDDED, storage))
        routes.append(SinkRoute(EMBEDDED, config.embedded_tenants))
        latest_only[EMBEDDED] = config.embedded_latest_only
    for sc in config.sinks:
        if publishing:
            sinks.append(RemoteBrokerSink(sc.name, sc.settings))
        routes.append(SinkRoute(sc.name, sc.tenants))
        latest_only[sc.name] = sc.latest_only
    shared = (shared_claims(config.dedup_database, password=config.dedup_password, max_age_s=config.dedup_max_age_s)
              if config.dedup_database else None)
    pipeline = Pipeline(db, archive, outbox, deadletters, seen, metrics, load_validator(config.schema_validation),
                        routes, shared)
    publishers = {sink.name: Publisher(sink, db, outbox, deadletters, metrics, config.publisher,
                                       latest_only=latest_only[sink.name]) for sink in sinks}
    parts = (config, adapters, http, storage, metrics, db, archive, outbox, deadletters, seen, pipeline, publishers)
    rt = Runtime(*parts) if workers is None else PoolRuntime(*parts, shared=workers.shared)
    if publishing:
        _register_gauges(rt)
    if publishing and storage is not None:
        rt.commands = Commands(db, storage, lambda: rt.sources)
        publishers[EMBEDDED].on_published = rt.commands.record_sources
    return rt


async def _runtime_ctx(
    app: web.Application, config: GatewayConfig, adapters: Mapping[str, type[Adapter]], storage: Storage | None,
    workers: WorkerPlan | None = None,
) -> AsyncIterator[None]:
    rt = build_runtime(config, adapters, http=app[HTTP], storage=storage, workers=workers)
    app[RUNTIME] = rt
    cfg = rt.config
    tasks = [asyncio.create_task(pub.run(), name=f"publisher:{name}") for name, pub in rt.publishers.items()]
    tasks.append(asyncio.create_task(_maintenance(rt), name="maintenance"))
    if STORE_API in app and NOTIFIER_KEY in app[STORE_API]:
        notifier = app[STORE_API][NOTIFIER_KEY]
        for pub in rt.publishers.values():
            if isinstance(pub.sink, EmbeddedSink):
                pub.sink.subscribed = lambda: bool(notifier.subs)
    if cfg.rules is not None and storage is not None:
        engine = rt.rules = RulesEngine(cfg.rules, rt.db, storage, rt.deadletters, app[HTTP])
        for pub in rt.publishers.values():
            if isinstance(pub.sink, EmbeddedSink):
                pub.sink.observers.append(engine.observe)
        tasks.append(asyncio.create_task(engine.run(), name="rules"))
    if rt.commands is not None:
        tasks.append(asyncio.create_task(rt.commands.run(), name="commands"))
    if cfg.open_data is not None and storage is not None:
        from gateway.opendata.schedule import run_periodically

        tasks.append(asyncio.create_task(run_periodically(cfg.open_data, storage), name="open-data"))
    pool: WorkerPool | None = None
    try:
        await _start_simulators(rt)
        if rt.pipeline.shared is not None:
            with contextlib.suppress(Unavailable):  # logged; claims connect again when messages come
                await rt.pipeline.shared.open()
        for src in cfg.sources:
            if src.enabled:
                rt.start_source(src)
        if workers is not None and isinstance(rt, PoolRuntime):
            # The publishers are running already: the workers' first commits wake them.
            pool = rt.pool = WorkerPool(rt, workers)
            await pool.start()
        rt.ready = True
        if cfg.sinks and not cfg.public_url and not cfg.loopback and cfg.host in ("0.0.0.0", "::"):
            # Brokers fetch the @context from this URL: a guessed host name may not reach us.
            log.warning("remote sinks announce the @context at %s (host name guessed): set server.public_url",
                        cfg.context_url)
        log.info("jonction gateway started", extra={
            "sources": len(rt.sources), "sinks": list(rt.publishers), "data_dir": str(cfg.data_dir),
            "context_url": cfg.context_url})
        yield
    finally:
        rt.ready = False
        if pool is not None:
            # Workers first: each stops its listeners, commits what it accepted and reports it.
            await pool.stop(cfg.drain_timeout_s + 5)
        await asyncio.gather(*(s.stop() for s in rt.sources.values()), return_exceptions=True)
        await rt.pipeline.aclose()
        started = time.monotonic()
        drained = await asyncio.gather(*(p.drain(cfg.drain_timeout_s) for p in rt.publishers.values()))
        log.info("shutdown: publishers %s in %.2fs", "drained" if all(drained) else "stopped with a backlog",
                 time.monotonic() - started)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if rt.commands is not None:
            await rt.commands.settle()
        for pub in rt.publishers.values():
            with contextlib.suppress(Exception):
                await pub.sink.close()
        for sim in rt.simulators:
            with contextlib.suppress(Exception):
                await sim.stop()
        rt.db.close()


def create_app(config: GatewayConfig, *, adapters: Mapping[str, type[Adapter]] | None = None,
               workers: WorkerPlan | None = None) -> web.Application:
    """Build the gateway application (no I/O: everything starts when the app starts).

    ``adapters`` replaces entry-point discovery (tests inject adapter classes this way).
    ``workers`` makes this process the parent of ingestion workers (``jonction run --workers``).
    Raises ConfigInvalid, listing every problem, before anything is opened.
    """
    if not config.loopback and not config.admin_token:
        raise ConfigInvalid("refusing to start", [
            f"/admin: the gateway listens on {config.host!r} (not loopback): set admin.token_file or "
            "admin.token (${ENV}) so that the admin and write APIs require a bearer token"])
    found = dict(adapters) if adapters is not None else discover()
    check_source_configs(config, found)
    policy = HostPolicy.of(config.host, allowed_hosts(config))
    app = web.Application(client_max_size=config.max_body, middlewares=[
        _errors, admin.cross_site_guard(policy),
        _auth_middleware(config.admin_token), _commands])
    links = [*(home.ngsi_links("/ngsi-ld/v1") if config.embedded else []), *home.ADMIN_LINKS]
    console.mount_gateway(app, config, links=links, policy=policy)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(CONTEXT_PATH, jonction_context)
    admin.add_routes(app)
    app.router.add_get("/admin/workers", workers_handler)
    app.router.add_get("/admin/commands", commands_log)
    app.cleanup_ctx.append(_http_ctx)
    storage: Storage | None = None
    if config.embedded:
        # One Storage, created here and handed over: the store API serves it, the runtime's
        # embedded sink writes through it (Python, no HTTP hop).
        storage = create_storage(config.embedded_database or config.data_dir / "store.sqlite",
                                 durability="full" if config.durability == "full" else "normal")
        store_api = app[STORE_API] = create_store_app(store_settings(config), storage=storage)
        app.add_subapp("/ngsi-ld/v1", store_api)
        _enclosing(app, _storage_ctx(storage, config))
    _after_subapps(app, functools.partial(_runtime_ctx, app, config, found, storage, workers))
    return app


def _enclosing(app: web.Application, ctx: Callable[[web.Application], AsyncIterator[None]]) -> None:
    """Run ``ctx`` like a ``cleanup_ctx`` that encloses the sub-apps too (call after ``add_subapp``).

    aiohttp cleans a parent's ``cleanup_ctx`` up before its sub-apps: a resource the parent
    hands to a sub-app would close while the sub-app still uses it. This one is entered before
    anything starts and exited after everything, sub-apps included, has been cleaned up.
    """
    stack = contextlib.AsyncExitStack()

    async def enter(_app: web.Application) -> None:
        await stack.enter_async_context(contextlib.asynccontextmanager(ctx)(app))

    async def leave(_app: web.Application) -> None:
        await stack.aclose()

    app.on_startup.insert(0, enter)
    app.on_cleanup.append(leave)


def _after_subapps(app: web.Application, ctx: Callable[[], AsyncIterator[None]]) -> None:
    """Run ``ctx`` like a ``cleanup_ctx``, but after the sub-apps have started and before they stop.

    The runtime publishes into the embedded store as soon as it starts (a backlog from the last
    run, say): the store API's subscriptions notifier must be listening by then. So it starts
    last (``on_startup``, appended after the sub-app) and stops first (``on_shutdown``), with the
    same generator discipline.
    """
    running: list[AsyncIterator[None]] = []

    async def start(_app: web.Application) -> None:
        gen = ctx()
        await gen.__anext__()
        running.append(gen)

    async def stop(_app: web.Application) -> None:
        while running:
            gen = running.pop()
            with contextlib.suppress(StopAsyncIteration):
                await gen.__anext__()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    # A failed startup skips on_shutdown in some paths; cleanup (before the sub-app's) is the backstop.
    app.on_cleanup.insert(0, stop)
