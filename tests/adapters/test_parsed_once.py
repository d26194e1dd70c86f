"""Push paths parse a body once and resolve a device once, with the same entities as a fresh translation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from adapters.chirpstack_v4 import ChirpstackV4Adapter
from adapters.kit.lorawan.provisioning import Registry
from adapters.kit.payload import ParsedBodies
from adapters.ngsi_v2 import NgsiV2Adapter
from gateway.model import RawMessage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts JSON parses: ``json.loads`` and the strict parser (``JSONDecoder.decode``), its fast path (orjson)."""
    calls: list[int] = []
    real = json.JSONDecoder.decode
    real_orjson = orjson.loads

    def counting(self: json.JSONDecoder, text: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(self, text, *args, **kwargs)

    def counting_orjson(data: bytes | str) -> Any:
        calls.append(1)
        return real_orjson(data)

    monkeypatch.setattr(json.JSONDecoder, "decode", counting)
    monkeypatch.setattr(orjson, "loads", counting_orjson)
    yield calls


def test_parsed_bodies_hand_a_document_out_once_and_stay_bounded() -> None:
    kept = ParsedBodies(limit=2)
    body = b'{"a": [1, 2]}'
    doc = {"a": [1, 2]}
    kept.keep(body, doc)
    assert kept.load(body) is doc
    again = kept.load(body)  # parsed afresh: no two translations share a document
    assert again == doc and again is not doc
    kept.keep(b"1", 1)
    kept.keep(b"2", 2)
    kept.keep(b"3", 3)  # the limit was reached: the older ones are forgotten
    assert kept.load(b"3") == 3 and kept.load(b"1") == 1


async def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as resp:
        return resp.status


async def test_ngsi_v2_notification_is_parsed_once(parses: list[int]) -> None:
    adapter = NgsiV2Adapter({"listen": {"host": "127.0.0.1", "port": 0}})
    entities: list[list[dict[str, Any]]] = []

    async def emit(raw: RawMessage) -> None:
        entities.append(adapter.to_entities(raw))

    task = asyncio.create_task(adapter.run(emit))
    await asyncio.wait_for(adapter.push.started.wait(), 10)
    body = (ROOT / "adapters/ngsi_v2/fixtures/waste_and_air.json").read_bytes()
    fresh = NgsiV2Adapter({}).to_entities(RawMessage("ngsi_v2", "", "2026-01-01T00:00:00Z", body, "k"))
    try:
        parses.clear()  # after a first translation: the models' schemas are loaded
        assert await _post(adapter.push.url, body, {"Content-Type": "application/json"}) == 200
        assert len(parses) == 1
    finally:
        await adapter.stop()
        await task
    assert entities == [fresh]


async def test_lorawan_http_uplink_is_parsed_and_resolved_once(parses: list[int],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    resolves: list[str] = []
    real = Registry.resolve

    def counting(self: Registry, uplink: Any) -> Any:
        resolves.append(uplink.dev_eui)
        return real(self, uplink)

    monkeypatch.setattr(Registry, "resolve", counting)
    cfg = yaml.safe_load((ROOT / "adapters/chirpstack_v4/sample.yaml").read_text())
    cfg["transport"] = "http"
    cfg["http"] = {"listen": {"host": "127.0.0.1", "port": 0, "path": "/chirpstack"}}
    adapter = ChirpstackV4Adapter(cfg)
    entities: list[list[dict[str, Any]]] = []

    async def emit(raw: RawMessage) -> None:
        entities.append(adapter.to_entities(raw))

    task = asyncio.create_task(adapter.run(emit))
    assert adapter.push is not None
    await asyncio.wait_for(adapter.push.started.wait(), 10)
    body = (ROOT / "adapters/chirpstack_v4/fixtures/em310_up_decoded.json").read_bytes()
    fresh = ChirpstackV4Adapter(cfg).to_entities(
        RawMessage("chirpstack_v4", "", "2026-01-01T00:00:00Z", body, "k", metadata={"event": "up"}))
    try:
        parses.clear()
        resolves.clear()
        assert await _post(adapter.push.url + "?event=up", body, {}) == 200
        assert len(parses) == 1 and len(resolves) == 1
    finally:
        await adapter.stop()
        await task
    assert [e["id"] for e in entities[0]] == [e["id"] for e in fresh] and len(fresh) == 2
