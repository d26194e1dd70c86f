"""Remote broker profiles and auth, the outbox budget and the archive bounds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.errors import Unavailable
from gateway.model import RawMessage
from gateway.runtime.archive import RawArchive
from gateway.runtime.db import Database
from gateway.runtime.outbox import QueuedRow
from gateway.runtime.sinks import RemoteBrokerSink, RemoteSettings
from gateway.runtime.state import RUNTIME
from tests.conftest import free_port
from tests.loopback import Loopback, receiving
from tests.runtime.support import FakeAdapter, config, eventually, running


class OAuthBroker(Loopback):
    """A token endpoint (client credentials, short-lived tokens) and a broker that checks them."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, float] = {}
        self.issued = 0
        self.bodies: list[tuple[dict[str, str], Any]] = []

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        auth = request.headers.get("Authorization", "")
        import base64

        if form.get("grant_type") != "client_credentials" or auth != "Basic " + base64.b64encode(
                b"gw:s3cret-client").decode():
            return web.json_response({"error": "invalid_client"}, status=401)
        self.issued += 1
        value = f"tok-{self.issued}"
        self.tokens[value] = time.monotonic() + 3600
        return web.json_response({"access_token": value, "token_type": "Bearer", "expires_in": 0})

    async def upsert(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")[7:]
        if self.tokens.get(given, 0) < time.monotonic():
            return web.json_response({"title": "expired"}, status=401)
        self.bodies.append((dict(request.headers), await request.json()))
        return web.Response(status=204)

    def routes(self, app: web.Application) -> None:
        """The token endpoint and the batch upsert."""
        app.router.add_post("/oauth/token", self.token)
        app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", self.upsert)


async def test_oauth2_token_refresh_and_inline_context() -> None:
    broker = OAuthBroker()
    await broker.start()
    url = f"http://127.0.0.1:{broker.port}"
    sink = RemoteBrokerSink("city", RemoteSettings(
        url=url, profile="stellio", context="https://example.org/ctx.jsonld", context_mode="inline",
        oauth2={"token_url": f"{url}/oauth/token", "client_id": "gw", "client_secret": "s3cret-client"}))
    try:
        item = {"id": "urn:ngsi-ld:WasteContainer:x", "type": "WasteContainer",
                "fillingLevel": {"type": "Property", "value": 0.5}}
        assert (await sink.upsert("lattes", [item], "c1")).failed == {}
        broker.tokens = dict.fromkeys(broker.tokens, 0.0)  # expired: the broker answers 401, the sink refreshes
        assert (await sink.upsert("lattes", [item], "c2")).failed == {}
        assert broker.issued == 2
        headers, body = broker.bodies[-1]
        assert headers["Content-Type"] == "application/ld+json"
        assert "Link" not in headers
        assert body[0]["@context"] == "https://example.org/ctx.jsonld"
        assert headers["NGSILD-Tenant"] == "lattes"
        assert {k.lower(): v for k, v in headers.items()}["x-correlation-id"] == "c2", headers
    finally:
        await sink.close()
        await broker.stop()


async def test_link_header_and_tenant_map_for_orion_ld() -> None:
    seen: list[dict[str, str]] = []

    async def upsert(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=201)

    async with receiving(upsert, path="/ngsi-ld/v1/entityOperations/upsert") as port:
        sink = RemoteBrokerSink("orion", RemoteSettings(
            url=f"http://127.0.0.1:{port}/ngsi-ld/v1", profile="orion-ld", tenant_map={"lattes": "openiot_lattes"},
            bearer_token="static-token-1234"))
        try:
            assert sink.max_batch == 100
            await sink.upsert("lattes", [{"id": "urn:ngsi-ld:X:1", "type": "X"}], "c")
            assert seen[0]["NGSILD-Tenant"] == "openiot_lattes"
            assert seen[0]["Authorization"] == "Bearer static-token-1234"
            assert seen[0]["Link"].startswith("<https://jonction.eu/ns/context/v1.jsonld>")
            assert seen[0]["Content-Type"] == "application/json"
        finally:
            await sink.close()


async def test_outbox_budget_refuses_new_messages_without_losing_any(tmp_path: Path) -> None:
    FakeAdapter.instances.clear()
    cfg = config(tmp_path, outbox={"max_bytes": 600}, embedded_store={"enabled": False},
                 sinks=[{"name": "down", "url": f"http://127.0.0.1:{free_port()}"}])
    async with running(cfg) as (_base, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        accepted = 0
        with pytest.raises(Unavailable, match="disk budget"):
            for i in range(50):
                await adapter.send({"id": f"b{i}", "device": f"bin-{i}", "fill": 1, "at": "2026-01-01T10:00:00Z"})
                accepted += 1
        assert 0 < accepted < 50
        assert rt.outbox is not None and rt.outbox.depth("down") == accepted


def test_archive_is_bounded_by_size_and_age(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.sqlite")
    archive = RawArchive(db, max_bytes=1000, max_age_s=3600)
    with db.transaction() as conn:
        for i in range(30):
            archive.append(conn, RawMessage("s", "", "2026-01-01T00:00:00Z", b"x" * 100, f"k{i}"), f"c{i}")
    assert archive.prune() == 20
    kept = archive.list(limit=100)
    assert [m.raw.idempotency_key for m in kept] == [f"k{i}" for i in range(20, 30)]
    assert archive.stats()["bytes"] == 1000
    with db.transaction() as conn:
        conn.execute("UPDATE archive SET at = at - 7200 WHERE idem IN ('k20', 'k21')")
    archive.prune()
    assert [m.raw.idempotency_key for m in archive.list()][:1] == ["k22"]
    db.close()


async def test_correlation_id_follows_the_message_to_the_broker(tmp_path: Path) -> None:
    from tests.runtime.support import RecordingBroker

    FakeAdapter.instances.clear()
    broker = RecordingBroker()
    await broker.start()
    try:
        cfg = config(tmp_path, embedded_store={"enabled": False}, sinks=[{"name": "city", "url": broker.url}])
        async with running(cfg) as (base, _app):
            adapter = FakeAdapter.instances["bins"]
            await adapter.send({"id": "c1", "device": "bin-c", "fill": 1, "at": "2026-01-01T10:00:00Z"})
            await eventually(lambda: broker.requests, what="publish")
            import aiohttp

            async with aiohttp.ClientSession() as http, http.get(f"{base}/admin/archive") as resp:
                archived = (await resp.json())["messages"][0]
        sent = {k.lower(): v for k, v in broker.requests[0]["headers"].items()}
        assert sent["x-correlation-id"] == archived["correlationId"]
        assert json.dumps(broker.requests[0]["body"])  # a JSON array of entities
    finally:
        await broker.stop()


def test_validator_bridge_with_and_without_schemas() -> None:
    from gateway.runtime.validator import load_validator

    good = {"id": "urn:ngsi-ld:WasteContainer:v", "type": "WasteContainer",
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.87, 43.6]}},
            "fillingLevel": {"type": "Property", "value": 0.4}}
    broken = {**good, "fillingLevel": {"type": "Property"}}
    out_of_range = {**good, "fillingLevel": {"type": "Property", "value": 40}}
    structural = load_validator(False)([good, broken, out_of_range])
    assert structural[0] == [] and structural[2] == []  # no model check without schemas
    assert structural[1] == [("Property without 'value'", "/fillingLevel")]
    full = load_validator(True)([good, broken, out_of_range])
    assert full[0] == []
    assert full[1] and full[1][0][1].startswith("/fillingLevel")
    assert full[2] and full[2][0][1] == "/fillingLevel/value"


def test_outbox_rows_read_back_what_the_standard_encoder_would_queue(tmp_path: Path) -> None:
    """The fast encoder falls back for values orjson writes differently or refuses; rows read back equal."""
    import math

    from gateway.runtime.outbox import Outbox

    db = Database(tmp_path / "gateway.sqlite")
    outbox = Outbox(db, max_bytes=1 << 20)
    entities: list[dict[str, Any]] = [
        {"id": "urn:ngsi-ld:T:plain", "type": "T", "a": {"type": "Property", "value": 1.5}, "b": "é ✓"},
        {"id": "urn:ngsi-ld:T:nan", "type": "T", "a": {"type": "Property", "value": float("nan")}},
        {"id": "urn:ngsi-ld:T:inf", "type": "T", "a": {"type": "Property", "value": float("-inf")}},
        {"id": "urn:ngsi-ld:T:big", "type": "T", "a": {"type": "Property", "value": 2**70}},
        {"id": "urn:ngsi-ld:T:keys", "type": "T", "a": {"type": "Property", "value": {1: "x"}}},
        {"id": "urn:ngsi-ld:T:null", "type": "T", "a": {"type": "Property", "value": [None, "nullable"]}},
    ]
    with db.transaction() as conn:
        outbox.add(conn, [QueuedRow("s", "", e, "c", "src", 0.0) for e in entities])
    rows = outbox.fetch("s", 0, 100)
    assert [r.entity_id for r in rows] == [e["id"] for e in entities]
    assert outbox.bytes == sum(len(r.body) for r in rows)
    for row, sent in zip(rows, entities, strict=True):
        expected = json.loads(json.dumps(sent, separators=(",", ":"), ensure_ascii=False))
        got = row.entity()
        value = got["a"]["value"] if isinstance(got.get("a"), dict) else None
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(expected["a"]["value"])
        else:
            assert got == expected
    db.conn.close()
