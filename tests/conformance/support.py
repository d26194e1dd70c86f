"""Test support: the embedded store on loopback, seeding, a vendor feeder and a rule-breaking proxy."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.model import format_time
from gateway.store.app import create_root_app
from gateway.store.settings import StoreSettings
from tests.conftest import free_port
from tests.loopback import receiving, serving
from tests.schemas.own_examples import own_example

TOKEN = "jc-test-token-5f2a"

KNOWN_STORE_DEVIATIONS: frozenset[str] = frozenset()
"""Checks the embedded store fails today, each with the store bug behind it; empty when the store
conforms. (L3-BAT-009 and L3-BAT-016 were listed here until the store answered a batch upsert that
both creates and updates with 201 and the created ids, §6.15.3.1.) The tests stay honest: a failing
check is fixed in the store, never by weakening the check."""


@asynccontextmanager
async def running_store(
    data_dir: Path, *, allow_unfiltered_queries: bool = False, database: str | None = None
) -> AsyncIterator[str]:
    """The embedded NGSI-LD store on a free loopback port (SQLite in ``data_dir``, or ``database``), token required.

    By default the store refuses an unfiltered GET /entities as CIM 009 asks (check L2-QRY-020);
    ``allow_unfiltered_queries=True`` runs it as the demo territory does.
    """
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    settings = StoreSettings(data_dir=data_dir, auth_required=True, tokens=frozenset({TOKEN}), durability="normal",
                             allow_unfiltered_queries=allow_unfiltered_queries, database=database)
    async with serving(create_root_app(settings)) as port:
        yield f"http://127.0.0.1:{port}"


def model_example(name: str) -> dict[str, Any]:
    """A valid normalized entity of a Smart Data Model: our own example (schemas/examples), a fresh copy.

    (The upstream examples are cross-checked against our schemas in tests/schemas/test_upstream_parity.py.)
    """
    doc = own_example(name)
    doc.pop("@context", None)
    return doc


async def seed(url: str, entities: list[dict[str, Any]]) -> None:
    """Upsert entities into the store (as a vendor would)."""
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{url}/ngsi-ld/v1/entityOperations/upsert", json=entities,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status in (201, 204, 207), await resp.text()
            if resp.status == 207:
                body = await resp.json()
                assert not body.get("errors"), body


@asynccontextmanager
async def feeder(url: str, *, etype: str, devices: int, interval: float,
                 value: Callable[[int], float] = lambda k: 20.0 + k % 5) -> AsyncIterator[None]:
    """A simulated vendor: every ``interval`` s, each device reports a reading observed on a time grid.

    observedAt values sit exactly on the grid (start + k x interval) so measured intervals do not
    depend on scheduling jitter; a late tick is skipped, never stretched.
    """
    stop = asyncio.Event()
    t0 = time.time()

    async def loop() -> None:
        k = 0
        async with aiohttp.ClientSession() as s:
            while not stop.is_set():
                now = time.time()
                k = max(k + 1, int((now - t0) / interval))
                at = format_time(datetime.fromtimestamp(t0 + k * interval, tz=UTC))
                batch = [{"id": f"urn:ngsi-ld:{etype}:dev{d}", "type": etype,
                          "level": {"type": "Property", "value": value(k), "unitCode": "P1", "observedAt": at}}
                         for d in range(devices)]
                async with s.post(f"{url}/ngsi-ld/v1/entityOperations/upsert", json=batch,
                                  headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                    await resp.read()
                delay = t0 + (k + 1) * interval - time.time()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
                except TimeoutError:
                    pass

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        stop.set()
        await task


# ------------------------------------------------------------------------------------ breaking proxy

CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def _drop_links(value: str, pred: Callable[[str], bool]) -> str:
    parts = [p for p in value.split(",") if p.strip() and not pred(p)]
    return ",".join(parts)


class BreakingProxy:
    """A reverse proxy in front of the store that breaks exactly one rule of the standard."""

    def __init__(self, upstream: str, brk: str | None) -> None:
        self.upstream = upstream
        self.brk = brk
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Serve on a free loopback port; returns the proxy's base URL."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.session = aiohttp.ClientSession(auto_decompress=False)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        """Stop serving."""
        await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Forward one request, breaking it or its answer as configured."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        query = dict(request.query)
        brk = self.brk
        if brk == "keyvalues":
            if query.get("options") == "keyValues":
                del query["options"]
            if query.get("format") == "simplified":
                del query["format"]
        if brk == "ignore-unknown-parameters":
            query.pop("jcUnknownParameter", None)
        if brk == "q-ignored":
            query.pop("q", None)
        if brk == "geo-ignored":
            for key in ("georel", "geometry", "coordinates"):
                query.pop(key, None)
        if brk == "temporal-filters-ignored" and request.path.startswith("/ngsi-ld/v1/temporal/entities/"):
            for key in ("timerel", "timeAt", "endTimeAt"):
                query.pop(key, None)
        if brk == "lastN-ignored":
            query.pop("lastN", None)
        if brk == "merge-patch-refused" and headers.get("Content-Type", "").startswith(
                "application/merge-patch+json"):
            return web.Response(status=415)
        if brk == "no-406" and headers.get("Accept") == "text/csv":
            headers["Accept"] = "application/json"
        if brk == "tenant-leak" and request.method == "GET":
            tenant = headers.get("NGSILD-Tenant", "")
            if tenant.endswith("-b"):
                headers["NGSILD-Tenant"] = tenant[:-2] + "-a"
        if brk == "accept-any-type" and headers.get("Content-Type", "").startswith("text/plain"):
            headers["Content-Type"] = "application/json"
        if brk == "open-writes" and request.method != "GET" and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {TOKEN}"
        body = await request.read()
        data: Any = body
        if request.body_exists and "Content-Length" not in request.headers and brk != "no-411":
            async def stream() -> AsyncIterator[bytes]:
                yield body
            data = stream()
        skip = [h for h in ("Content-Type", "Accept") if h not in request.headers]
        url = self.upstream + request.path + ("?" + _qs(query) if query else "")
        async with self.session.request(request.method, url, headers=headers, data=data if body or
                                        request.body_exists else None, skip_auto_headers=skip,
                                        allow_redirects=False) as up:
            raw = await up.read()
            out_headers = {k: v for k, v in up.headers.items() if k.lower() not in HOP and k.lower() != "link"}
            links = up.headers.getall("Link", [])
            status = up.status
        raw, out_headers, links, status = self._break_response(raw, out_headers, links, status)
        resp = web.Response(status=status, body=raw)
        for k, v in out_headers.items():
            resp.headers[k] = v
        for link in links:
            if link:
                resp.headers.add("Link", link)
        return resp

    def _break_response(self, raw: bytes, headers: dict[str, str], links: list[str],
                        status: int) -> tuple[bytes, dict[str, str], list[str], int]:
        brk = self.brk
        if brk == "no-context-link":
            links = [_drop_links(v, lambda p: CONTEXT_REL in p) for v in links]
        if brk == "no-pagination-links":
            links = [_drop_links(v, lambda p: 'rel="next"' in p or 'rel="prev"' in p or "rel=next" in p
                                 or "rel=prev" in p) for v in links]
        if brk == "tenant-echo":
            headers = {k: v for k, v in headers.items() if k.lower() != "ngsild-tenant"}
        if brk == "count-missing":
            headers = {k: v for k, v in headers.items() if k.lower() != "ngsild-results-count"}
        if brk == "conflict-hidden" and status == 409 and b"AlreadyExists" in raw:
            status, raw = 201, b""
        if brk == "missing-tenant-is-empty" and status == 404 and b"NonexistentTenant" in raw:
            status = 200
            raw = b"[]"
        if brk in ("error-type", "batch-shape", "no-ld-context") and raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if brk == "error-type" and isinstance(body, dict) and str(body.get("type", "")).endswith(
                    "/ResourceNotFound"):
                body["type"] = "https://uri.etsi.org/ngsi-ld/errors/NotFound"
                raw = json.dumps(body).encode()
            if brk == "batch-shape" and status == 207 and isinstance(body, dict) and "success" in body:
                raw = json.dumps({"succeeded": body["success"], "failed": body.get("errors", [])}).encode()
            if brk == "no-ld-context" and isinstance(body, dict) and "@context" in body:
                del body["@context"]
                raw = json.dumps(body).encode()
        return raw, headers, links, status


def _qs(query: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(query)


@asynccontextmanager
async def breaking_proxy(upstream: str, brk: str | None) -> AsyncIterator[str]:
    """A BreakingProxy for the duration of a block."""
    proxy = BreakingProxy(upstream, brk)
    url = await proxy.start()
    try:
        yield url
    finally:
        await proxy.stop()


@asynccontextmanager
async def notification_relay(receiver_port: int, *, drop_tenant: bool = False) -> AsyncIterator[str]:
    """A public-facing relay in front of the checker's receiver (as a reverse proxy would be in a
    real deployment), optionally losing the NGSILD-Tenant header of notifications."""

    async def relay(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        if drop_tenant:
            headers = {k: v for k, v in headers.items() if k.lower() != "ngsild-tenant"}
        async with aiohttp.ClientSession() as s, s.post(
                f"http://127.0.0.1:{receiver_port}{request.path}", data=await request.read(),
                headers=headers) as resp:
            return web.Response(status=resp.status)

    async with receiving(relay) as port:
        yield f"http://127.0.0.1:{port}"
