"""Test support for the runtime: an in-process adapter, a recording NGSI-LD broker, app runners."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web

from gateway.contract import Emit, Manifest
from gateway.errors import TranslationError
from gateway.model import RawMessage, entity, epoch_time, geo, point, prop, urn
from gateway.runtime.app import create_app
from gateway.runtime.archive import RawArchive
from gateway.runtime.config import GatewayConfig, parse
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.dedup import SeenKeys
from gateway.runtime.metrics import Metrics
from gateway.runtime.outbox import Outbox
from gateway.runtime.pipeline import Pipeline, SinkRoute, SourceBinding
from gateway.runtime.validator import load_validator
from tests.loopback import Loopback, serving


class FakeAdapter:
    """A push adapter driven by the test: ``await FakeAdapter.instances[name].send(doc)``.

    A message ``{"device", "fill", "at", "id"}`` becomes one WasteContainer whose fillingLevel is
    ``fill / DIVISOR``: with DIVISOR = 1 a percentage is sent as is and fails the schema
    (maximum 1), the "mapping bug" the dead-letter tests fix by setting DIVISOR = 100.
    """

    manifest: ClassVar[Manifest] = Manifest("fake", "Fake test source", ("test",), ("WasteContainer",))
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "tenant": {"type": "string"}, "fail_check": {"type": "boolean"},
                       "api_token": {"type": "string", "writeOnly": True}},
    }
    DIVISOR: ClassVar[float] = 100.0
    instances: ClassVar[dict[str, FakeAdapter]] = {}

    def __init__(self, config: dict[str, Any], *, http: Any = None, log: Any = None) -> None:
        self.config = config
        self.name = str(config.get("name", "fake"))
        self.tenant = str(config.get("tenant", ""))
        self._emit: Emit | None = None
        self._stopped = asyncio.Event()
        self.checks = 0
        FakeAdapter.instances[self.name] = self

    async def check(self) -> None:
        self.checks += 1
        if self.config.get("fail_check") and self.checks < 3:
            raise ConnectionError("vendor platform refused the connection")

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        self._stopped.clear()
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()

    async def ready(self) -> None:
        deadline = time.monotonic() + 10
        while self._emit is None:
            assert time.monotonic() < deadline, "adapter never started"
            await asyncio.sleep(0.01)

    async def send(self, doc: dict[str, Any], *, key: str | None = None, tenant: str = "") -> None:
        await self.ready()
        assert self._emit is not None
        body = json.dumps(doc).encode()
        await self._emit(RawMessage(self.name, tenant, epoch_time(time.time()), body,
                                    key or str(doc.get("id", doc.get("device"))),
                                    metadata={"device_id": str(doc.get("device", ""))}))

    def to_entities(self, raw: RawMessage) -> list[dict[str, Any]]:
        doc = json.loads(raw.payload)
        if doc.get("crash"):
            raise ZeroDivisionError("a bug in the adapter")
        if "fill" not in doc:
            raise TranslationError("no fill level in the uplink", "/fill")
        attrs: dict[str, Any] = {
            "fillingLevel": prop(doc["fill"] / self.DIVISOR, observed_at=doc.get("at", raw.received_at)),
            "location": geo(point(3.87, 43.6)),
        }
        if "temp" in doc:
            attrs["temperature"] = prop(doc["temp"], unit="CEL", observed_at=doc.get("at", raw.received_at))
        return [entity("WasteContainer", urn("WasteContainer", doc["device"]), **attrs)]


class RecordingBroker(Loopback):
    """A loopback NGSI-LD broker: records batch upserts, merges state, fails chosen ids with a 207."""

    client_max_size = 64 << 20

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.state: dict[str, dict[str, dict[str, Any]]] = {}
        self.fail_ids: dict[str, int] = {}
        self.reject_ids: set[str] = set()
        self.poison_ids: set[str] = set()
        """Ids that make the broker refuse the whole request with a bare 400 (no per-entity body)."""
        self.status_override: int | None = None

    async def _upsert(self, request: web.Request) -> web.Response:
        body = await request.json()
        tenant = request.headers.get("NGSILD-Tenant", "")
        self.requests.append({"tenant": tenant, "ids": [e["id"] for e in body], "headers": dict(request.headers),
                              "body": body})
        if self.status_override is not None:
            return web.json_response({"title": "unavailable"}, status=self.status_override)
        if any(item["id"] in self.poison_ids for item in body):
            return web.json_response({"title": "Bad Request", "detail": "unparsable entity"}, status=400)
        errors, success = [], []
        for item in body:
            if item["id"] in self.reject_ids:
                errors.append({"entityId": item["id"],
                               "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
                                         "title": "bad data", "detail": "attribute rejected by policy"}})
                continue
            left = self.fail_ids.get(item["id"], 0)
            if left > 0:
                self.fail_ids[item["id"]] = left - 1
                errors.append({"entityId": item["id"],
                               "error": {"type": "https://uri.etsi.org/ngsi-ld/errors/InternalError",
                                         "title": "temporary", "detail": "try again"}})
                continue
            current = self.state.setdefault(tenant, {}).setdefault(item["id"], {})
            current.update(item)
            success.append(item["id"])
        if errors:
            return web.json_response({"success": success, "errors": errors}, status=207)
        return web.Response(status=204)

    async def _types(self, request: web.Request) -> web.Response:
        return web.json_response([])

    def routes(self, app: web.Application) -> None:
        """Batch upsert and the type list."""
        app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", self._upsert)
        app.router.add_get("/ngsi-ld/v1/types", self._types)


class PipelineParts:
    """A pipeline over a real gateway database file in ``tmp``, with the fake adapter as source ``bins``."""

    def __init__(self, tmp: Path, routes: Sequence[SinkRoute], *, max_bytes: int) -> None:
        self.db = Database(tmp / "gateway.sqlite")
        self.archive = RawArchive(self.db, max_bytes=max_bytes, max_age_s=3600)
        self.outbox = Outbox(self.db, max_bytes=max_bytes)
        self.letters = DeadLetters(self.db)
        self.seen = SeenKeys(self.db, max_age_s=3600)
        self.metrics = Metrics()
        self.pipeline = Pipeline(self.db, self.archive, self.outbox, self.letters, self.seen, self.metrics,
                                 load_validator(True), list(routes))
        self.pipeline.add_source(SourceBinding("bins", "fake", FakeAdapter({"name": "bins"})))

    def close(self) -> None:
        """Close the database."""
        self.db.close()


class OtherConnection:
    """A second connection to a database file, as another process (a worker) would hold it."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)

    def execute(self, sql: str) -> sqlite3.Cursor:
        """Run one statement (``BEGIN IMMEDIATE`` takes the write lock until ``COMMIT``)."""
        return self.conn.execute(sql)

    def count(self, table: str) -> int:
        """The rows of ``table`` this connection sees."""
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # the test's own table names

    def close(self) -> None:
        """Give up a transaction still open (a failed test's lock), then close."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.conn.close()


def config(tmp: Path, **overrides: Any) -> GatewayConfig:
    """A test gateway config: loopback, fast publisher, data in ``tmp``."""
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "data_dir": str(tmp / "data"),
        "publisher": {"linger": 0.005, "backoff_initial": 0.05, "backoff_max": 0.5, "breaker_threshold": 3,
                      "breaker_cooldown": 0.3},
        "shutdown": {"drain_timeout": 5},
        "sources": [{"name": "bins", "adapter": "fake", "tenant": ""}],
    }
    doc.update(overrides)
    return parse(doc)


@asynccontextmanager
async def running(
    cfg: GatewayConfig, adapters: dict[str, Any] | None = None
) -> AsyncIterator[tuple[str, web.Application]]:
    """Start the gateway app on a free loopback port; yield its base URL and the app."""
    app = create_app(cfg, adapters=adapters if adapters is not None else {"fake": FakeAdapter})
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}", app


async def eventually(predicate: Callable[[], Any], *, within: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
