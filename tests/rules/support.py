"""Test support for rules: a pass-through adapter, a fake GMAO work-order API and a fake Open311 endpoint."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.contract import Emit, Manifest
from gateway.model import RawMessage, epoch_time
from tests.loopback import Loopback


class PassAdapter:
    """A push adapter driven by the test: ``await PassAdapter.instances[name].send([entity, ...])``."""

    manifest: ClassVar[Manifest] = Manifest("pass", "Pass-through test source", ("test",),
                                            ("WasteContainer", "Streetlight", "AirQualityObserved"))
    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    instances: ClassVar[dict[str, PassAdapter]] = {}

    def __init__(self, config: dict[str, Any], *, http: Any = None, log: Any = None) -> None:
        self.name = str(config.get("name", "pass"))
        self._emit: Emit | None = None
        self._stopped = asyncio.Event()
        self._keys = itertools.count()
        PassAdapter.instances[self.name] = self

    async def check(self) -> None:
        """Nothing to reach."""

    async def run(self, emit: Emit) -> None:
        self._emit = emit
        self._stopped.clear()
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()

    async def send(self, entities: list[dict[str, Any]], *, tenant: str = "") -> None:
        deadline = time.monotonic() + 10
        while self._emit is None:
            assert time.monotonic() < deadline, "adapter never started"
            await asyncio.sleep(0.01)
        body = json.dumps(entities).encode()
        await self._emit(RawMessage(self.name, tenant, epoch_time(time.time()), body,
                                    f"{time.time_ns()}-{next(self._keys)}"))

    def to_entities(self, raw: RawMessage) -> list[dict[str, Any]]:
        entities = json.loads(raw.payload)
        assert isinstance(entities, list)
        return entities


class FakeGmao(Loopback):
    """A GMAO work-order API: ``POST /work-orders`` → ``{"id", "status": "open"}``, ``GET /work-orders/{id}``.

    ``POST /work-orders/{id}/close`` closes one (``closes`` records each call, its body included).
    It requires ``Authorization: Bearer <token>``; ``refuse`` makes it answer that status instead
    (``refuse_close`` for the close call).
    """

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.orders: dict[str, dict[str, Any]] = {}
        self.posts: list[dict[str, Any]] = []
        self.refuse: int | None = None
        self.refuse_close: int | None = None
        self.closes: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/work-orders", self._create)
        app.router.add_get("/work-orders/{id}", self._read)
        app.router.add_post("/work-orders/{id}/close", self._close)

    async def _close(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        order = self.orders.get(request.match_info["id"])
        body = await request.json()
        self.closes.append({"id": request.match_info["id"], **body})
        if self.refuse_close is not None:
            return web.json_response({"error": "order locked", "code": "E_LOCKED"}, status=self.refuse_close)
        if order is None:
            return web.json_response({"error": "not found"}, status=404)
        order["status"] = "closed"
        return web.json_response({"id": order["id"], "status": "closed"})

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    async def _create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.refuse is not None:
            self.posts.append({"refused": self.refuse})
            return web.json_response({"error": "asset unknown to the GMAO", "code": "E_ASSET"}, status=self.refuse)
        body = await request.json()
        order_id = f"WO-{len(self.orders) + 1:04d}"
        self.orders[order_id] = {"id": order_id, "status": "open", **body}
        self.posts.append(body)
        return web.json_response({"id": order_id, "status": "open"}, status=201)

    async def _read(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        order = self.orders.get(request.match_info["id"])
        if order is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"id": order["id"], "status": order["status"]})


class FakeOpen311(Loopback):
    """A GeoReport v2 endpoint: ``POST /requests.json`` (form) → ``[{"service_request_id", "service_notice"}]``.

    ``GET /requests/{id}.json`` answers ``[{"service_request_id", "status"}]`` from ``statuses`` (open at first).
    """

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.requests: list[dict[str, str]] = []
        self.refuse: int | None = None
        self.statuses: dict[str, str] = {}
        self.reads = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/requests.json", self._post)
        app.router.add_get("/requests/{file}", self._get)

    async def _get(self, request: web.Request) -> web.Response:
        number = request.match_info["file"].removesuffix(".json")
        if number not in self.statuses:
            return web.json_response([{"code": 404, "description": "no such request"}], status=404)
        self.reads += 1
        return web.json_response([{"service_request_id": number, "status": self.statuses[number],
                                   "service_code": "STL-01"}])

    async def _post(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-www-form-urlencoded"
        form = dict(parse_qsl((await request.read()).decode()))
        if form.get("api_key") != self.api_key:
            return web.json_response([{"code": 403, "description": "invalid api_key"}], status=403)
        if self.refuse is not None:
            return web.json_response([{"code": 400, "description": "service_code 999 not found"}], status=self.refuse)
        self.requests.append(form)
        number = f"SR-{len(self.requests):05d}"
        self.statuses[number] = "open"
        return web.json_response([{"service_request_id": number, "service_notice": "acknowledged"}], status=201)
