"""The reference adapter over real HTTP: auth, size limit, acknowledgement after emit."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aiohttp
import pytest

from adapters.ngsi_v2 import NgsiV2Adapter
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import RawMessage
from tests.conftest import free_port

FIXTURE = Path(__file__).resolve().parents[3] / "adapters/ngsi_v2/fixtures/waste_and_air.json"


async def _serve(config: dict[str, object]) -> tuple[NgsiV2Adapter, list[RawMessage], asyncio.Task[None], str]:
    port = free_port()
    adapter = NgsiV2Adapter({"listen": {"host": "127.0.0.1", "port": port}, **config})
    received: list[RawMessage] = []

    async def emit(raw: RawMessage) -> None:
        received.append(raw)

    task = asyncio.create_task(adapter.run(emit))
    url = f"http://127.0.0.1:{port}/v2/notify"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.post(url, data=b"{}", headers={"Content-Type": "application/json"}):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    return adapter, received, task, url


async def test_notification_is_acknowledged_after_emit_and_translates() -> None:
    adapter, received, task, url = await _serve({"token": "s3cret"})
    body = FIXTURE.read_bytes()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 401
            async with session.post(url, data=body, headers={"Authorization": "Bearer s3cret",
                                                             "Fiware-Service": "lyon"}) as resp:
                assert resp.status == 200
            async with session.post(url, data=b'{"no": "data"}', headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 400
                assert "subscriptionId" in (await resp.json())["detail"]
            big = io.BytesIO(b"x" * (2 << 20))
            async with session.post(url, data=big, headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 413
    finally:
        await adapter.stop()
        await task
    assert len(received) == 1
    raw = received[0]
    assert raw.tenant == "lyon"
    assert raw.idempotency_key.startswith("65a0c0ffee0000000000beef:")
    entities = adapter.to_entities(raw)
    assert [e["type"] for e in entities] == ["WasteContainer", "AirQualityObserved"]
    assert entities[0]["location"]["value"]["coordinates"] == [4.8467, 45.7485]


async def test_open_listener_without_token_is_refused() -> None:
    adapter = NgsiV2Adapter({"listen": {"host": "0.0.0.0", "port": free_port()}})
    with pytest.raises(ConfigInvalid, match="token"):
        await adapter.check()


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        (b"not json", ""),
        (json.dumps({"subscriptionId": "s", "data": [{"id": "x"}]}).encode(), "/data/0"),
        (json.dumps({"subscriptionId": "s", "data": [{"id": "x", "type": "T", "a": 3}]}).encode(), "/data/0/a"),
        (json.dumps({"subscriptionId": "s", "data": [
            {"id": "x", "type": "T", "d": {"type": "DateTime", "value": "2024-01-01T00:00:00"}}]}).encode(),
         "/data/0/d/value"),
    ],
)
def test_bad_payloads_name_the_problem(payload: bytes, pointer: str) -> None:
    adapter = NgsiV2Adapter({})
    with pytest.raises(TranslationError) as info:
        adapter.to_entities(RawMessage("s", "", "2024-01-01T00:00:00Z", payload, "k"))
    assert info.value.pointer == pointer


async def test_run_again_after_stop_serves_again() -> None:
    """The supervisor restarts a source by calling stop() then run() on the same instance."""
    adapter, received, task, url = await _serve({})
    await adapter.stop()
    await task
    second = asyncio.create_task(adapter.run(lambda raw: _append(received, raw)))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.post(url, data=FIXTURE.read_bytes()) as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        assert not second.done()
    finally:
        await adapter.stop()
        await second
    assert any(raw.payload == FIXTURE.read_bytes() for raw in received)


async def _append(received: list[RawMessage], raw: RawMessage) -> None:
    received.append(raw)
