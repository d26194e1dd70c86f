"""The one wiring place: ``create_app(config)`` builds the gateway's aiohttp application.

Everything with a lifetime (databases, the embedded store, sinks, publishers, supervised
sources, simulators) is set up by one async generator run like a ``cleanup_ctx`` (see
``_add_lifecycle``), so that teardown runs only for what started, in reverse order: sources stop
first, what they sent is committed, publishers drain within a bound, then sinks and storage close.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import importlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from gateway import home
from gateway.contract import adapter_logger, discover
from gateway.crosssite import HostPolicy
from gateway.errors import ConfigInvalid, JonctionError
from gateway.model import RawMessage
from gateway.runtime import admin
from gateway.runtime.archive import RawArchive
from gateway.runtime.config import CONTEXT_PATH, GatewayConfig, SourceConfig, check_source_configs, source_config
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.logging import redact
from gateway.runtime.metrics import Labels
from gateway.runtime.outbox import Outbox
from gateway.runtime.pipeline import Pipeline, SinkRoute, SourceBinding
from gateway.runtime.publisher import Publisher
from gateway.runtime.sinks import EmbeddedSink, RemoteBrokerSink, Sink
from gateway.runtime.state import RUNTIME, Runtime
from gateway.runtime.supervisor import Supervised
from gateway.runtime.validator import load_validator
from schemas import contexts

log = logging.getLogger("jonction.runtime")

EMBEDDED = "embedded"
"""Name of the embedded store's sink."""
MAINTENANCE_EVERY_S = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------------------- middlewares


def _auth_middleware(token: str | None) -> Any:
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


# ---------------------------------------------------------------------------- routes


async def healthz(request: web.Request) -> web.Response:  # noqa: ARG001  # aiohttp handler signature
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness with the state of storage, sinks and sources.

    Not ready (503) when storage or the embedded store fails, or a source has failed (it will not
    restart on its own); a remote broker that is down is reported as ``degraded`` but keeps the
    gateway ready, because the outbox buffers for it (a source being retried is reported likewise).
    """
    rt = request.app[RUNTIME]
    checks: dict[str, Any] = {}
    ready = rt.ready
    try:
        if rt.db is None:
            raise RuntimeError("not open")
        rt.db.ping()
        checks["storage"] = {"status": "ok"}
    except Exception as exc:
        checks["storage"] = {"status": "failed", "error": str(exc)}
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


async def _open_store(rt: Runtime) -> Any:
    """Open the embedded store's storage (``<data>/store.sqlite``)."""
    base = importlib.import_module("gateway.store.base")
    path = rt.config.data_dir / "store.sqlite"
    return await base.open_storage(rt.config.embedded_database or path,
                                   durability="full" if rt.config.durability == "full" else "normal")


def allowed_hosts(cfg: GatewayConfig) -> tuple[str, ...]:
    """Host names the admin and write APIs answer to besides loopback: ``server.allowed_hosts`` and
    the host of ``server.public_url`` (the name clients were told to use)."""
    public = urlsplit(cfg.public_url).hostname if cfg.public_url else None
    return (*cfg.allowed_hosts, *([public] if public else []))


def _store_api(cfg: GatewayConfig) -> web.Application | None:
    """The embedded store's HTTP API as a sub-app, when the store room provides it."""
    try:
        store_app = importlib.import_module("gateway.store.app")
        settings_mod = importlib.import_module("gateway.store.settings")
    except ImportError:
        return None
    tokens = frozenset({cfg.admin_token}) if cfg.admin_token else frozenset()
    settings = settings_mod.StoreSettings(data_dir=cfg.data_dir, host=cfg.host, tokens=tokens,
                                          allowed_hosts=frozenset(allowed_hosts(cfg)),
                                          durability="full" if cfg.durability == "full" else "normal",
                                          allow_unfiltered_queries=cfg.allow_unfiltered_queries,
                                          database=cfg.embedded_database)
    sub: web.Application = store_app.create_store_app(settings)
    return sub


# ---------------------------------------------------------------------------- gauges


def _register_gauges(rt: Runtime) -> None:
    def backlog() -> Iterable[tuple[Labels, float]]:
        if rt.outbox is None:
            return []
        return [((("sink", r["sink"]), ("tenant", r["tenant"])), float(r["entities"])) for r in rt.outbox.status()]

    def age() -> Iterable[tuple[Labels, float]]:
        if rt.outbox is None:
            return []
        return [((("sink", r["sink"]), ("tenant", r["tenant"])), float(r["oldestAgeSeconds"]))
                for r in rt.outbox.status()]

    def outbox_bytes() -> Iterable[tuple[Labels, float]]:
        return [((), float(rt.outbox.bytes if rt.outbox else 0))]

    def stored_letters() -> Iterable[tuple[Labels, float]]:
        if rt.deadletters is None:
            return []
        return [((("source", s), ("stage", st)), float(n)) for (s, st), n in sorted(rt.deadletters.count().items())]

    def circuits() -> Iterable[tuple[Labels, float]]:
        return [((("sink", n),), 1.0 if p.state == "open" else 0.0) for n, p in rt.publishers.items()]

    def sources_up() -> Iterable[tuple[Labels, float]]:
        return [((("source", n), ("adapter", s.status.adapter)), 1.0 if s.status.state == "running" else 0.0)
                for n, s in rt.sources.items()]

    def archive_bytes() -> Iterable[tuple[Labels, float]]:
        return [((), float(rt.archive.bytes if rt.archive else 0))]

    m = rt.metrics
    m.gauge("jonction_outbox_entities", "Entities waiting in the outbox, per sink and tenant.", backlog)
    m.gauge("jonction_outbox_oldest_age_seconds", "Age of the oldest entity waiting, per sink and tenant.", age)
    m.gauge("jonction_outbox_bytes", "Bytes held by the outbox.", outbox_bytes)
    m.gauge("jonction_dead_letters_stored", "Dead letters currently kept, per source and stage.", stored_letters)
    m.gauge("jonction_sink_circuit_open", "1 when the sink's circuit breaker is open.", circuits)
    m.gauge("jonction_source_up", "1 when the source is running.", sources_up)
    m.gauge("jonction_archive_bytes", "Bytes held by the raw archive.", archive_bytes)


# ---------------------------------------------------------------------------- lifecycle


def _emitter(pipeline: Pipeline, binding: SourceBinding) -> Callable[[RawMessage], Awaitable[None]]:
    async def emit(raw: RawMessage) -> None:
        # The runtime, not the adapter, knows the source's name; the adapter may pick a tenant.
        if raw.source != binding.name or (not raw.tenant and binding.tenant):
            raw = dataclasses.replace(raw, source=binding.name, tenant=raw.tenant or binding.tenant)
        await pipeline.emit(raw)

    return emit


async def _maintenance(rt: Runtime) -> None:
    while True:
        await asyncio.sleep(MAINTENANCE_EVERY_S)
        try:
            if rt.archive is not None:
                rt.archive.prune()
            if rt.pipeline is not None:
                rt.pipeline.prune_dedup()
        except Exception as exc:  # maintenance must never stop the gateway
            log.warning("maintenance failed: %s", exc)


async def _start_simulators(rt: Runtime) -> None:
    from importlib import metadata

    wanted = {s.name: s for s in rt.config.simulators}
    if not wanted:
        return
    found = {ep.name: ep for ep in metadata.entry_points(group="jonction.simulators")}
    for name, sim_cfg in wanted.items():
        ep = found.get(name)
        if ep is None:
            log.warning("simulator %s is not installed; skipped", name)
            continue
        sim = ep.load()(sim_cfg.options)
        await sim.start()
        rt.simulators.append(sim)


def start_source(rt: Runtime, src: SourceConfig) -> Supervised:
    """Instantiate a source's adapter (no I/O), bind it to the pipeline and supervise it."""
    assert rt.pipeline is not None and rt.http is not None
    cls = rt.adapters[src.adapter]
    effective = source_config(src, getattr(cls, "config_schema", None) or {}, rt.config.data_dir)
    adapter = cls(effective, http=rt.http, log=adapter_logger(src.adapter))
    binding = SourceBinding(src.name, src.adapter, adapter, src.tenant, src.routes)
    rt.pipeline.add_source(binding)
    sup = Supervised(src.name, src.adapter, adapter, _emitter(rt.pipeline, binding))
    rt.sources[src.name] = sup
    sup.start()
    return sup


async def restart_source(rt: Runtime, name: str) -> Supervised | None:
    """Stop a source and start a fresh adapter instance (it re-reads its mapping files)."""
    src = next((s for s in rt.config.sources if s.name == name and s.enabled), None)
    if src is None:
        return None
    old = rt.sources.get(name)
    if old is not None:
        await old.stop()
    log.info("source %s restarted on request", name, extra={"source": name})
    return start_source(rt, src)


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = app[RUNTIME]
    cfg = rt.config
    db = rt.db = Database(cfg.data_dir / "gateway.sqlite", durability=cfg.durability)
    rt.archive = RawArchive(db, max_bytes=cfg.archive_max_bytes, max_age_s=cfg.archive_max_age_s)
    rt.outbox = Outbox(db, max_bytes=cfg.outbox_max_bytes)
    rt.deadletters = DeadLetters(db)
    sinks: list[Sink] = []
    routes: list[SinkRoute] = []
    if cfg.embedded:
        rt.store = rt.store or await _open_store(rt)
        # A client that follows the Link the gateway announces reads its own store with it.
        rt.store.alias_context(cfg.context_url, contexts.JONCTION_CONTEXT_IRI)
        sinks.append(EmbeddedSink(EMBEDDED, rt.store))
        routes.append(SinkRoute(EMBEDDED, cfg.embedded_tenants))
    for sc in cfg.sinks:
        sinks.append(RemoteBrokerSink(sc.name, sc.settings))
        routes.append(SinkRoute(sc.name, sc.tenants))
    pipeline = rt.pipeline = Pipeline(db, rt.archive, rt.outbox, rt.deadletters, rt.metrics,
                                      load_validator(cfg.schema_validation), routes,
                                      dedup_max_age_s=cfg.dedup_max_age_s)
    tasks: list[asyncio.Task[None]] = []
    for sink in sinks:
        pub = Publisher(sink, db, rt.outbox, rt.deadletters, rt.metrics, cfg.publisher)
        rt.publishers[sink.name] = pub
        tasks.append(asyncio.create_task(pub.run(), name=f"publisher:{sink.name}"))
    tasks.append(asyncio.create_task(_maintenance(rt), name="maintenance"))
    session = aiohttp.ClientSession()
    try:
        await _start_simulators(rt)
        rt.http = session
        rt.restart = functools.partial(restart_source, rt)
        for src in cfg.sources:
            if src.enabled:
                start_source(rt, src)
        rt.ready = True
        if cfg.sinks and not cfg.public_url and not cfg.loopback and cfg.host in ("0.0.0.0", "::"):
            # Brokers fetch the @context from this URL: a guessed host name may not reach us.
            log.warning("remote sinks announce the @context at %s (host name guessed): set server.public_url",
                        cfg.context_url)
        log.info("jonction gateway started", extra={
            "sources": len(rt.sources), "sinks": [s.name for s in sinks], "data_dir": str(cfg.data_dir),
            "context_url": cfg.context_url})
        yield
    finally:
        rt.ready = False
        await asyncio.gather(*(s.stop() for s in rt.sources.values()), return_exceptions=True)
        pipeline.close()
        started = time.monotonic()
        drained = await asyncio.gather(*(p.drain(cfg.drain_timeout_s) for p in rt.publishers.values()))
        log.info("shutdown: publishers %s in %.2fs", "drained" if all(drained) else "stopped with a backlog",
                 time.monotonic() - started)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for sink in sinks:
            with contextlib.suppress(Exception):
                await sink.close()
        for sim in rt.simulators:
            with contextlib.suppress(Exception):
                await sim.stop()
        await session.close()
        if rt.store is not None and not app.get(_STORE_OWNED_BY_API, False):
            with contextlib.suppress(Exception):
                await rt.store.close()
        db.close()


_STORE_OWNED_BY_API: web.AppKey[bool] = web.AppKey("jonction_store_owned_by_api", bool)


def create_app(config: GatewayConfig, *, adapters: Mapping[str, Any] | None = None) -> web.Application:
    """Build the gateway application (no I/O: everything starts when the app starts).

    ``adapters`` replaces entry-point discovery (tests inject adapter classes this way).
    Raises ConfigInvalid, listing every problem, before anything is opened.
    """
    if not config.loopback and not config.admin_token:
        raise ConfigInvalid("refusing to start", [
            f"/admin: the gateway listens on {config.host!r} (not loopback): set admin.token_file or "
            "admin.token (${ENV}) so that the admin and write APIs require a bearer token"])
    found = dict(adapters) if adapters is not None else dict(discover())
    check_source_configs(config, found)
    rt = Runtime(config, found)
    app = web.Application(client_max_size=config.max_body, middlewares=[
        _errors, admin.cross_site_guard(HostPolicy.of(config.host, allowed_hosts(config))),
        _auth_middleware(config.admin_token)])
    app[RUNTIME] = rt
    app[_STORE_OWNED_BY_API] = False
    _register_gauges(rt)
    links = [*(home.ngsi_links("/ngsi-ld/v1") if config.embedded else []), *home.ADMIN_LINKS]
    app.router.add_get("/", home.landing_handler("jonction gateway", links))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(CONTEXT_PATH, jonction_context)
    admin.add_routes(app)
    if config.embedded:
        api = _store_api(config)
        if api is not None:
            app.add_subapp("/ngsi-ld/v1", api)
            app[_STORE_API] = api
            # The API's Storage is the one the runtime writes through (Python, no HTTP hop);
            # the sub-app opens it on startup (before the runtime) and closes it last.
            rt.store = api[importlib.import_module("gateway.store.settings").STORAGE_KEY]
            app[_STORE_OWNED_BY_API] = True
    _add_lifecycle(app)
    return app


_STORE_API: web.AppKey[web.Application] = web.AppKey("jonction_store_api", web.Application)
_LIFECYCLE: web.AppKey[list[AsyncIterator[None]]] = web.AppKey("jonction_lifecycle", list)


def _add_lifecycle(app: web.Application) -> None:
    """Run ``_runtime_ctx`` like a ``cleanup_ctx``, but after the store sub-app has started.

    aiohttp starts a parent's ``cleanup_ctx`` before its sub-apps, and cleans it up before
    them too. The runtime needs the store API's Storage open before it starts, and must drain
    its publishers before that Storage closes: so it starts last (``on_startup``, appended after
    the sub-app) and stops first (``on_shutdown``), with the same generator discipline.
    """
    app[_LIFECYCLE] = []

    async def start(_app: web.Application) -> None:
        gen = _runtime_ctx(app)
        await gen.__anext__()
        app[_LIFECYCLE].append(gen)

    async def stop(_app: web.Application) -> None:
        while app[_LIFECYCLE]:
            gen = app[_LIFECYCLE].pop()
            with contextlib.suppress(StopAsyncIteration):
                await gen.__anext__()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    # A failed startup skips on_shutdown in some paths; cleanup (before the sub-app's) is the backstop.
    app.on_cleanup.insert(0, stop)
