"""Push integrations over real loopback HTTP: ChirpStack HTTP integration, TTS webhooks, ThingPark tunnel."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yaml

from adapters.chirpstack_v4 import ChirpstackV4Adapter
from adapters.kit.lorawan.adapter import NetworkServerAdapter
from adapters.thingpark import ThingparkAdapter
from adapters.tts_v3 import TtsV3Adapter
from gateway.errors import ConfigInvalid
from gateway.model import RawMessage

ROOT = Path(__file__).resolve().parents[3]
AS_KEY = "0123456789ABCDEF0123456789ABCDEF"


def sample(domain: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "adapters" / domain / "sample.yaml").read_text())


def fixture(domain: str, name: str) -> bytes:
    return (ROOT / "adapters" / domain / "fixtures" / f"{name}.json").read_bytes()


class Emitted:
    """Records emitted messages; can hold them (to prove the answer waits) or fail."""

    def __init__(self) -> None:
        self.items: list[RawMessage] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def __call__(self, raw: RawMessage) -> None:
        await self.release.wait()
        if self.fail:
            raise RuntimeError("outbox full (simulated)")
        self.items.append(raw)


async def serve(adapter: NetworkServerAdapter, emit: Emitted) -> AsyncIterator[str]:
    task = asyncio.create_task(adapter.run(emit))
    assert adapter.push is not None
    await asyncio.wait_for(adapter.push.started.wait(), 10)
    try:
        yield f"http://127.0.0.1:{adapter.push.bound_port}"
    finally:
        await adapter.stop()
        await task


@pytest.fixture
async def chirpstack(tmp_path: Path) -> AsyncIterator[tuple[str, Emitted]]:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    cfg = sample("chirpstack_v4")
    cfg["transport"] = "http"
    cfg["http"] = {"listen": {"host": "127.0.0.1", "port": 0, "path": "/chirpstack"}, "token_file": str(token),
                   "max_body_bytes": 4096}
    emit = Emitted()
    async for base in serve(ChirpstackV4Adapter(cfg), emit):
        yield base, emit


async def test_chirpstack_http_integration_answers_after_emit(chirpstack: tuple[str, Emitted]) -> None:
    base, emit = chirpstack
    emit.release.clear()
    async with aiohttp.ClientSession() as http:
        body = fixture("chirpstack_v4", "em310_up_decoded")
        request = asyncio.ensure_future(http.post(f"{base}/chirpstack?event=up", data=body,
                                                  headers={"Authorization": "Bearer s3cret-token"}))
        await asyncio.sleep(0.2)
        assert not request.done(), "no answer before emit returned"
        emit.release.set()
        response = await request
        assert response.status == 200
        response.release()
    (raw,) = emit.items
    assert raw.idempotency_key == "up:6b8a3c2e-1f4d-4e6a-9b7c-0d1e2f3a4b5c"
    assert raw.tenant == "ville-a" and raw.metadata["event"] == "up" and raw.metadata["path"] == "/chirpstack"


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing Authorization header"),
    ({"Authorization": "Bearer wrong"}, "wrong token in Authorization"),
    ({"Authorization": "s3cret-token"}, "wrong token in Authorization"),
])
async def test_chirpstack_http_refuses_unauthenticated_requests(chirpstack: tuple[str, Emitted],
                                                                headers: dict[str, str], reason: str) -> None:
    base, emit = chirpstack
    async with aiohttp.ClientSession() as http, http.post(f"{base}/chirpstack?event=up",
                                                          data=fixture("chirpstack_v4", "join"), headers=headers) as r:
        assert r.status == 401
        assert (await r.json())["detail"] == reason
    assert emit.items == []


async def test_chirpstack_http_limits_bad_bodies_and_failures(chirpstack: tuple[str, Emitted]) -> None:
    base, emit = chirpstack
    auth = {"Authorization": "Bearer s3cret-token"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/chirpstack?event=up", data=b"{" + b" " * 5000 + b"}", headers=auth) as r:
            assert r.status == 413
        async with http.post(f"{base}/chirpstack?event=up", data=b"not json", headers=auth) as r:
            assert r.status == 400 and "not JSON" in (await r.json())["detail"]
        emit.fail = True
        async with http.post(f"{base}/chirpstack?event=join", data=fixture("chirpstack_v4", "join"), headers=auth) as r:
            assert r.status == 503, "not accepted: ChirpStack must retry"
        async with http.get(f"{base}/chirpstack") as r:
            assert r.status == 405
    assert emit.items == []


async def test_public_listener_without_token_is_refused() -> None:
    cfg = sample("chirpstack_v4")
    cfg["transport"] = "http"
    cfg["http"] = {"listen": {"host": "0.0.0.0", "port": 0}}
    with pytest.raises(ConfigInvalid) as info:
        await ChirpstackV4Adapter(cfg).check()
    assert "authentication is required" in str(info.value)


async def test_tts_webhook_with_a_path_per_message_kind() -> None:
    cfg = sample("tts_v3")
    cfg["transport"] = "http"
    cfg["http"] = {"listen": {"host": "127.0.0.1", "port": 0, "path": "/tts"}, "header": "X-Jonction-Token",
                   "token": "webhook-token"}
    emit = Emitted()
    async for base in serve(TtsV3Adapter(cfg), emit):
        async with aiohttp.ClientSession() as http:
            for kind, name in (("uplink", "laq4_uplink_decoded"), ("join", "join_accept")):
                async with http.post(f"{base}/tts/{kind}", data=fixture("tts_v3", name),
                                     headers={"X-Jonction-Token": "webhook-token"}) as r:
                    assert r.status == 200
            async with http.post(f"{base}/tts/uplink", data=fixture("tts_v3", "join_accept"),
                                 headers={"X-Jonction-Token": "other"}) as r:
                assert r.status == 401
    assert [r.idempotency_key for r in emit.items] == ["up:as:up:01HQZ5T0B9A1B2C3D4E5F6G7H8",
                                                      "join:as:up:01HQZ7B2D1C3D4E5F6G7H8J9KA"]
    assert emit.items[0].metadata["event"] == "uplink" and emit.items[0].tenant == "ville-b"


# ---------------------------------------------------------------- ThingPark tunnel security


def signed_url(base: str, body: dict[str, Any], *, key: str = AS_KEY, when: datetime | None = None,
               as_id: str = "jonction.ville-b") -> str:
    """The URL ThingPark builds: LrnDevEui, LrnFPort, LrnInfos, AS_ID, Time, then Token (computed here)."""
    msg = body["DevEUI_uplink"]
    moment = (when or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds")
    query = (f"LrnDevEui={msg['DevEUI']}&LrnFPort={msg['FPort']}&LrnInfos=UPHTTP_LAB_LORA&AS_ID={as_id}"
             f"&Time={quote(moment, safe=':')}")
    fields = "".join(str(msg[k]) for k in ("CustomerID", "DevEUI", "FPort", "FCntUp", "payload_hex"))
    token = hashlib.sha256((fields + query + key.lower()).encode()).hexdigest()
    return f"{base}/thingpark?{query}&Token={token}"


@pytest.fixture
async def thingpark(tmp_path: Path) -> AsyncIterator[tuple[str, Emitted]]:
    key = tmp_path / "as-key"
    key.write_text(AS_KEY)
    cfg = sample("thingpark")
    cfg["http"] = {"listen": {"host": "127.0.0.1", "port": 0, "path": "/thingpark"}, "as_key_file": str(key),
                   "as_id": "jonction.ville-b", "max_clock_skew": 60}
    emit = Emitted()
    async for base in serve(ThingparkAdapter(cfg), emit):
        yield base, emit


async def test_thingpark_token_accepted(thingpark: tuple[str, Emitted]) -> None:
    base, emit = thingpark
    body = json.loads(fixture("thingpark", "em310_uplink_strings"))
    async with aiohttp.ClientSession() as http, http.post(signed_url(base, body), json=body) as r:
        assert r.status == 200, await r.text()
    (raw,) = emit.items
    assert raw.idempotency_key == "up:24e124713b100001:1845:5a1c77e0" and raw.tenant == "ville-a"


@pytest.mark.parametrize("attack", ["tampered", "no-token", "wrong-key", "stale", "wrong-as-id"])
async def test_thingpark_refuses_what_it_cannot_authenticate(thingpark: tuple[str, Emitted], attack: str) -> None:
    base, emit = thingpark
    body = json.loads(fixture("thingpark", "em310_uplink_strings"))
    url = signed_url(base, body)
    if attack == "tampered":
        body["DevEUI_uplink"]["payload_hex"] = "0175540382ff0f040000"
    elif attack == "no-token":
        url = url.split("&Token=")[0]
    elif attack == "wrong-key":
        url = signed_url(base, body, key="F" * 32)
    elif attack == "stale":
        url = signed_url(base, body, when=datetime.now(UTC) - timedelta(minutes=10))
    elif attack == "wrong-as-id":
        url = signed_url(base, body, as_id="someone-else")
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as r:
        assert r.status == 401
        detail = (await r.json())["detail"]
    expected = {"tampered": "Token does not match", "no-token": "missing Token", "wrong-key": "Token does not match",
                "stale": "replayed or stale", "wrong-as-id": "AS_ID"}[attack]
    assert expected in detail
    assert emit.items == []
