"""Devices and provisioning over HTTP: list a LoRaWAN source's devices, add one validated like the config,
keep it across a restart of the gateway so that its uplinks translate instead of becoming dead letters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from adapters.chirpstack_v4 import ChirpstackV4Adapter
from gateway.runtime.config import GatewayConfig
from gateway.runtime.state import RUNTIME
from tests.conftest import free_port
from tests.runtime.support import FakeAdapter, config, eventually, running

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "devices-test-token-91c2"
ADAPTERS: dict[str, Any] = {"chirpstack_v4": ChirpstackV4Adapter, "fake": FakeAdapter}
EM310 = {"dev_eui": "24E1-2471-3B10-0001", "profile": "milesight-em310-udl",
         "entity_id": "urn:ngsi-ld:WasteContainer:ville-a:verre-mairie", "name": "Colonne à verre",
         "tenant": "ville-a", "location": {"lon": 2.3522, "lat": 48.8566},
         "params": {"container_height_mm": 1800, "full_distance_mm": 250}}
AM307 = {"dev_eui": "24e124707c100002", "profile": "milesight-am307", "tenant": "ville-a",
         "entity_id": "urn:ngsi-ld:IndoorEnvironmentObserved:ville-a:salle-3", "location": {"lon": 2.35, "lat": 48.85}}


def lora_config(tmp: Path, push_port: int, **overrides: Any) -> GatewayConfig:
    """A gateway with one ChirpStack v4 source (HTTP integration on loopback) knowing only the AM307."""
    source = {"name": "lora", "adapter": "chirpstack_v4", "tenant": "ville-a", "config": {
        "transport": "http", "http": {"listen": {"host": "127.0.0.1", "port": push_port, "path": "/chirpstack"}},
        "devices": [AM307]}}
    return config(tmp, sources=[source, {"name": "bins", "adapter": "fake", "tenant": ""}], **overrides)


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _push(port: int, name: str, dedup_id: str | None = None) -> None:
    doc = json.loads((ROOT / "adapters/chirpstack_v4/fixtures" / f"{name}.json").read_text())
    if dedup_id is not None:  # a later uplink: the first one's key was already seen (and dead-lettered)
        doc["deduplicationId"], doc["fCnt"] = dedup_id, doc["fCnt"] + 1
    body = json.dumps(doc).encode()
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{port}/chirpstack?event=up", data=body,
            headers={"Content-Type": "application/json"}) as resp:
        assert resp.status in (200, 204), await resp.text()


async def _pushed_ready(app: web.Application) -> bool:
    sup = app[RUNTIME].sources.get("lora")
    push = getattr(sup.adapter, "push", None) if sup else None
    return bool(push is not None and push.started.is_set())


async def test_list_add_and_restart_then_uplinks_translate(tmp_path: Path) -> None:
    push_port = free_port()
    cfg = lora_config(tmp_path, push_port)
    async with running(cfg, ADAPTERS) as (base, app), _session() as http:
        await eventually(lambda: _pushed_ready(app), what="the push receiver")
        async with http.get(base + "/admin/sources/lora/devices") as resp:
            assert resp.status == 200
            doc = await resp.json()
        assert [d["devEui"] for d in doc["devices"]] == ["24e124707c100002"]
        assert doc["devices"][0]["entityType"] == "IndoorEnvironmentObserved"
        assert doc["devices"][0]["lastUplink"] is None
        em310 = next(p for p in doc["profiles"] if p["id"] == "milesight-em310-udl")
        assert em310["entityType"] == "WasteContainer" and "container_height_mm" in em310["parameters"]
        # before provisioning, the EM310's uplink is a dead letter naming the unknown device
        await _push(push_port, "em310_up_bytes")
        letters = await eventually(lambda: app[RUNTIME].deadletters.list(source="lora"), what="a dead letter")
        assert "unknown device 24e124713b100001" in letters[0].reason
        async with http.post(base + "/admin/sources/lora/devices", json=EM310) as resp:
            assert resp.status == 201, await resp.text()
            added = await resp.json()
        assert added["devEui"] == "24e124713b100001" and added["entityType"] == "WasteContainer"
        async with http.post(base + "/admin/sources/lora/devices", json=EM310) as resp:
            assert resp.status == 422
            assert (await resp.json())["errors"][0]["pointer"] == "/dev_eui"
        stored = json.loads((tmp_path / "data/state/lora/devices.json").read_text())
        assert stored[0]["dev_eui"] == "24e124713b100001"
        # the AM307's uplink leaves its radio metadata on the device list
        await _push(push_port, "am307_up_bytes")

        async def radio() -> Any:
            async with http.get(base + "/admin/sources/lora/devices") as resp:
                devices = {d["devEui"]: d for d in (await resp.json())["devices"]}
            return devices["24e124707c100002"]["lastUplink"]

        seen = await eventually(radio, what="radio metadata")
        assert isinstance(seen["rssi"], int | float) and seen["gateways"] and seen["fCnt"] is not None
    # a new gateway process on the same data folder: the added device is still there and translates
    async with running(lora_config(tmp_path, push_port), ADAPTERS) as (base, app), _session() as http:
        await eventually(lambda: _pushed_ready(app), what="the push receiver")
        async with http.get(base + "/admin/sources/lora/devices") as resp:
            devices = {d["devEui"]: d for d in (await resp.json())["devices"]}
        assert devices["24e124713b100001"]["addedAtRunTime"] is True
        before = len(app[RUNTIME].deadletters.list(source="lora"))
        await _push(push_port, "em310_up_bytes", "11111111-2222-4333-8444-555555555555")

        async def stored_entity() -> bool:
            async with http.get(base + "/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:ville-a:verre-mairie",
                                headers={"NGSILD-Tenant": "ville-a"}) as resp:
                return resp.status == 200
        assert await eventually(stored_entity, what="the EM310's WasteContainer in the store")
        assert len(app[RUNTIME].deadletters.list(source="lora")) == before


async def test_invalid_devices_are_refused_with_pointers(tmp_path: Path) -> None:
    async with running(lora_config(tmp_path, free_port()), ADAPTERS) as (base, _app), _session() as http:
        url = base + "/admin/sources/lora/devices"
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({**EM310, "dev_eui": "not-a-deveui"}, "/dev_eui", "DevEUI"),
            ({**EM310, "profile": "no-such-profile"}, "/profile", "unknown device profile"),
            ({**EM310, "location": {"lon": 2.35, "lat": 123}}, "/location", ""),
            ({**EM310, "params": {"container_height_mm": 1800, "full_distance_mm": 250, "colour": 1}},
             "/params/colour", "no parameter"),
            ({**EM310, "entity_id": "not a uri"}, "/entity_id", "URI"),
            ({**EM310, "nickname": "x"}, "", "nickname"),
            ({"profile": "milesight-am307"}, "", "dev_eui"),
        ]
        for body, where, text in cases:
            async with http.post(url, json=body) as resp:
                assert resp.status == 422, (body, await resp.text())
                errors = (await resp.json())["errors"]
            assert any(e["pointer"].startswith(where) and text in e["message"] for e in errors), (where, errors)
        async with http.post(url, data="[1, 2]", headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400
        async with http.post(url, data="{" + " " * 70000 + "}", headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 413
        async with http.get(url) as resp:
            assert [d["devEui"] for d in (await resp.json())["devices"]] == ["24e124707c100002"]
        async with http.get(base + "/admin/sources") as resp:
            assert {s["name"]: s["devices"] for s in (await resp.json())["sources"]} == {"lora": True, "bins": False}
        async with http.get(base + "/admin/sources/bins/devices") as resp:
            assert resp.status == 404  # an adapter without a device registry
        async with http.get(base + "/admin/sources/nope/devices") as resp:
            assert resp.status == 404
        async with http.get(base + "/admin/openapi.json") as resp:
            assert "post" in (await resp.json())["paths"]["/admin/sources/{name}/devices"]


async def test_devices_need_the_token_and_refuse_cross_site_calls(tmp_path: Path) -> None:
    cfg = lora_config(tmp_path, free_port(), admin={"token": TOKEN})
    async with running(cfg, ADAPTERS) as (base, _app), _session() as http:
        url = base + "/admin/sources/lora/devices"
        async with http.get(url) as resp:
            assert resp.status == 401
        async with http.post(url, json=EM310) as resp:
            assert resp.status == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(url, json=EM310, headers={**bearer, "Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
        async with http.post(url, data=json.dumps(EM310), headers={**bearer, "Content-Type": "text/plain"}) as resp:
            assert resp.status == 403
        async with http.get(url, headers=bearer) as resp:
            assert len((await resp.json())["devices"]) == 1  # nothing was added by the refused calls
        async with http.post(base + "/console/login", data={"token": TOKEN}, allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.post(url, json=EM310) as resp:  # the console's session stands for the token
            assert resp.status == 201
