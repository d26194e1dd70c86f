"""The webhook receiver over real loopback HTTP: signatures, replays, redeliveries, limits, mapping."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.webhook import WebhookAdapter, sign, signing_key
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import RawMessage
from gateway.validation import validate

ROOT = Path(__file__).resolve().parents[3]
SECRET = "whsec_" + base64.b64encode(b"a-very-secret-key-of-32-bytes!!!").decode()
KEY = signing_key(SECRET)
BODY = (ROOT / "adapters/webhook/fixtures/parking_events.json").read_bytes()


class Collector:
    """An emit callback that keeps what it receives (and can be told to fail)."""

    def __init__(self) -> None:
        self.messages: list[RawMessage] = []
        self.fail = False

    async def __call__(self, raw: RawMessage) -> None:
        if self.fail:
            raise OSError("outbox unavailable")
        self.messages.append(raw)


async def _started(config: dict[str, Any], emit: Collector) -> tuple[WebhookAdapter, asyncio.Task[None]]:
    adapter = WebhookAdapter({"secret": SECRET, "listen": {"port": 0, "path": "/hook"},
                              "mapping_file": "builtin:parking_events.yaml", **config})
    task = asyncio.create_task(adapter.run(emit))
    await asyncio.wait_for(adapter.ready.wait(), 10)
    return adapter, task


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _headers(body: bytes, msg_id: str = "msg_1", stamp: int | None = None, key: bytes = KEY) -> dict[str, str]:
    ts = str(int(time.time()) if stamp is None else stamp)
    return {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sign(key, msg_id, ts, body),
            "Content-Type": "application/json"}


async def _stop(adapter: WebhookAdapter, task: asyncio.Task[None]) -> None:
    await adapter.stop()
    await asyncio.wait_for(task, 10)


async def test_good_signature_is_accepted_and_translated(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({"name": "parking", "tenant": "montpellier"}, emit)
    try:
        async with client.post(adapter.url, data=BODY, headers=_headers(BODY)) as resp:
            assert resp.status == 202
            assert await resp.json() == {"status": "accepted", "messages": 1}
        (raw,) = emit.messages
        assert raw.payload == BODY
        assert raw.tenant == "montpellier"
        assert raw.metadata["webhook_id"] == "msg_1"
        entities = adapter.to_entities(raw)
        assert [e["status"]["value"] for e in entities] == ["occupied", "free", "unknown"]
        assert all(validate(e).valid for e in entities)
        assert adapter.stats["accepted"] == 1 and adapter.rejected == 0
    finally:
        await _stop(adapter, task)


async def test_signature_rotation_any_listed_signature_matches(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({}, emit)
    try:
        headers = _headers(BODY)
        old = sign(b"previous-key", "msg_1", headers["webhook-timestamp"], BODY)
        headers["webhook-signature"] = f"{old} {headers['webhook-signature']}"
        async with client.post(adapter.url, data=BODY, headers=headers) as resp:
            assert resp.status == 202
    finally:
        await _stop(adapter, task)


@pytest.mark.parametrize(
    ("change", "counter"),
    [
        ({"key": b"wrong-key"}, "bad_signature"),
        ({"stamp": int(time.time()) - 301}, "stale_timestamp"),
        ({"stamp": int(time.time()) + 3600}, "stale_timestamp"),
        ({"tamper": True}, "bad_signature"),
        ({"drop": "webhook-signature"}, "missing_headers"),
    ],
)
async def test_refused_deliveries_are_401_and_counted(
    client: aiohttp.ClientSession, change: dict[str, Any], counter: str
) -> None:
    emit = Collector()
    adapter, task = await _started({}, emit)
    try:
        headers = _headers(BODY, stamp=change.get("stamp"), key=change.get("key", KEY))
        body = BODY.replace(b"B12", b"B99") if change.get("tamper") else BODY
        if "drop" in change:
            headers.pop(change["drop"])
        async with client.post(adapter.url, data=body, headers=headers) as resp:
            assert resp.status == 401
            assert resp.content_type == "application/problem+json"
        assert emit.messages == []
        assert adapter.stats[counter] == 1
        assert adapter.rejected == 1
    finally:
        await _stop(adapter, task)


async def test_replayed_delivery_is_acknowledged_but_not_imported_twice(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({}, emit)
    try:
        headers = _headers(BODY, msg_id="msg_same")
        for expected in (202, 200):
            async with client.post(adapter.url, data=BODY, headers=headers) as resp:
                assert resp.status == expected
        assert len(emit.messages) == 1
        assert adapter.stats["duplicates"] == 1
    finally:
        await _stop(adapter, task)


async def test_old_timestamp_replay_of_a_captured_delivery_is_refused(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({"tolerance": 60}, emit)
    try:
        captured = _headers(BODY, msg_id="msg_old", stamp=int(time.time()) - 120)
        async with client.post(adapter.url, data=BODY, headers=captured) as resp:
            assert resp.status == 401
        assert adapter.stats["stale_timestamp"] == 1 and emit.messages == []
    finally:
        await _stop(adapter, task)


async def test_body_over_the_limit_is_413(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({"max_body_bytes": 512}, emit)
    try:
        big = json.dumps({"events": [{"spotId": str(n), "zoneId": "Z"} for n in range(100)]}).encode()
        async with client.post(adapter.url, data=big, headers=_headers(big)) as resp:
            assert resp.status == 413
        assert adapter.stats["too_large"] == 1 and emit.messages == []
    finally:
        await _stop(adapter, task)


async def test_pipeline_failure_answers_503_and_the_retry_is_accepted(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({}, emit)
    try:
        headers = _headers(BODY, msg_id="msg_retry")
        emit.fail = True
        async with client.post(adapter.url, data=BODY, headers=headers) as resp:
            assert resp.status == 503
        emit.fail = False
        async with client.post(adapter.url, data=BODY, headers=headers) as resp:
            assert resp.status == 202
        assert len(emit.messages) == 1
    finally:
        await _stop(adapter, task)


async def test_tenant_selector_splits_a_delivery_per_item(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    mapping = {"entity_type": "ParkingSpot", "items": "events", "tenant": "commune",
               "id": "urn:ngsi-ld:ParkingSpot:{spotId}",
               "attributes": {"status": {"select": "state"}}}
    adapter, task = await _started({"mapping": mapping, "mapping_file": None, "tenant": "default"}, emit)
    try:
        body = json.dumps({"events": [{"spotId": "a", "commune": "34172", "state": "free"},
                                      {"spotId": "b", "state": "occupied"}]}).encode()
        async with client.post(adapter.url, data=body, headers=_headers(body)) as resp:
            assert resp.status == 202
        assert [m.tenant for m in emit.messages] == ["34172", "default"]
        assert [adapter.to_entities(m)[0]["id"] for m in emit.messages] == [
            "urn:ngsi-ld:ParkingSpot:a", "urn:ngsi-ld:ParkingSpot:b"]
    finally:
        await _stop(adapter, task)


async def test_not_json_is_accepted_then_a_dead_letter(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({}, emit)
    try:
        body = b"<xml/>"
        async with client.post(adapter.url, data=body, headers=_headers(body)) as resp:
            assert resp.status == 202
        with pytest.raises(TranslationError, match="not JSON"):
            adapter.to_entities(emit.messages[0])
    finally:
        await _stop(adapter, task)


def test_secret_must_be_base64_after_the_prefix() -> None:
    with pytest.raises(ConfigInvalid, match="base64"):
        signing_key("whsec_not base64!")


async def test_stop_before_run_and_twice() -> None:
    adapter = WebhookAdapter({"secret": SECRET, "mapping_file": "builtin:parking_events.yaml"})
    await adapter.stop()
    await adapter.stop()


async def test_run_again_after_stop_keeps_the_seen_ids(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({}, emit)
    headers = _headers(BODY, msg_id="msg_restart")
    async with client.post(adapter.url, data=BODY, headers=headers) as resp:
        assert resp.status == 202
    await _stop(adapter, task)
    # The runtime restarts a failed source on the same instance: stop() then run().
    task = asyncio.create_task(adapter.run(emit))
    await asyncio.wait_for(adapter.ready.wait(), 10)
    try:
        async with client.post(adapter.url, data=BODY, headers=headers) as resp:
            assert resp.status == 200  # the redelivery is still recognised
        assert len(emit.messages) == 1
    finally:
        await _stop(adapter, task)


async def test_absurdly_nested_json_is_a_dead_letter_not_a_crash(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({"max_body_bytes": 1 << 20}, emit)
    try:
        body = b"[" * 100_000 + b"]" * 100_000
        async with client.post(adapter.url, data=body, headers=_headers(body)) as resp:
            assert resp.status == 202
        with pytest.raises(TranslationError, match="nested too deeply"):
            adapter.to_entities(emit.messages[0])
    finally:
        await _stop(adapter, task)
