"""Commands back to the field: an NGSI-LD PATCH on the embedded store → a ChirpStack v4 downlink on a real Mosquitto."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest
import yaml

from adapters.chirpstack_v4 import ChirpstackV4Adapter
from adapters.chirpstack_v4.commands import dali_arc_level
from gateway.runtime.commands import Commands
from gateway.runtime.state import RUNTIME
from tests.adapters.lorawan.mosquitto import MOSQUITTO, Broker
from tests.runtime.support import config, eventually, running

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "adapters/chirpstack_v4/sample.yaml").read_text())
UPLINK = json.loads((ROOT / "adapters/chirpstack_v4/fixtures/ws558_up_decoded.json").read_text())
EUI = "24e124756c100007"
APP = "9a0c7b1e-3f7d-4d1e-8a52-61f0c2d4e5b6"
LAMP = "urn:ngsi-ld:Streetlight:ville-a:rue-haute-12"
DOWN = f"application/{APP}/device/{EUI}/command/down"
LINK = ('<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; '
        'type="application/ld+json"')
TENANT = {"NGSILD-Tenant": "ville-a", "Authorization": "Bearer tok-a", "Link": LINK}


def commands_of(app: Any) -> Commands:
    """The running gateway's commands (the embedded store is on in these tests)."""
    commands = app[RUNTIME].commands
    assert commands is not None
    return commands


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto broker on a free loopback port with persistence."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed (Debian package 'mosquitto'; .ci/run installs it)")
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def gateway_config(tmp: Path, port: int) -> Any:
    cfg = copy.deepcopy(SAMPLE)
    cfg.pop("http")
    cfg["mqtt"] = {"host": "127.0.0.1", "port": port, "client_id": "jonction-cmd",
                   "topics": ["application/+/device/+/event/+"], "backoff": {"initial": 0.05, "max": 0.3}}
    cfg["state_dir"] = str(tmp / "lorawan-state")
    tokens = tmp / "tokens"
    tokens.write_text("ville-a tok-a\nville-b tok-b\n")
    return config(tmp, sources=[{"name": "chirpstack", "adapter": "chirpstack_v4", "tenant": "", "config": cfg}],
                  embedded_store={"tokens_file": str(tokens)})


def uplink(n: int) -> bytes:
    doc = copy.deepcopy(UPLINK)
    doc["deduplicationId"] = f"d251ad9f-80be-4fd1-82e3-{n:012d}"
    doc["time"] = f"2026-03-04T18:{30 + n:02d}:00Z"
    return json.dumps(doc).encode()


class Field:
    """The network server side: publishes uplinks and acks, collects the downlinks jonction enqueues."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.downlinks: list[tuple[str, dict[str, Any]]] = []

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        """Subscribed (persistent session at QoS 1: what is published while we are away waits for us)."""
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="network-server", clean_session=False,
                                  timeout=5) as client:
            await client.subscribe("application/+/device/+/command/down", qos=1)

            async def listen() -> None:
                async for message in client.messages:
                    self.downlinks.append((str(message.topic), json.loads(bytes(message.payload))))  # type: ignore[arg-type]

            task = asyncio.create_task(listen())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def publish(self, event: str, body: bytes) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="uplinks", timeout=5) as client:
            await client.publish(f"application/{APP}/device/{EUI}/event/{event}", body, qos=1)

    async def ack(self, item: str, *, acknowledged: bool = True) -> None:
        doc = {"deduplicationId": "5ad92516-0836-4159-8a6b-f566778899aa", "time": "2026-03-04T19:00:00Z",
               "deviceInfo": UPLINK["deviceInfo"], "queueItemId": item, "acknowledged": acknowledged, "fCntDown": 15}
        await self.publish("ack", json.dumps(doc).encode())


async def lamp_in_store(app: Any, field: Field, n: int = 0) -> dict[str, Any]:
    rt = app[RUNTIME]
    await eventually(lambda: rt.sources["chirpstack"].adapter.mqtt.connected.is_set(), what="subscribed")
    await field.publish("up", uplink(n))
    return await eventually(lambda: rt.embedded_store.get("ville-a", LAMP), what="the street light in the store")


async def status(app: Any, wanted: str) -> dict[str, Any]:
    async def check() -> Any:
        found = await app[RUNTIME].embedded_store.get("ville-a", LAMP)
        ok = found and found.get("dimmingLevelCommand", {}).get("value") == wanted
        return found["dimmingLevelCommand"] if ok else None

    result: dict[str, Any] = await eventually(check, what=f"dimmingLevelCommand {wanted}")
    return result


async def patch(http: aiohttp.ClientSession, base: str, entity: str, body: Any,
                headers: dict[str, str] = TENANT) -> tuple[int, str]:
    # POST (append): the street light has no dimmingLevel yet, a PATCH (update) would not create it.
    async with http.post(f"{base}/ngsi-ld/v1/entities/{entity}/attrs", json=body, headers=headers) as r:
        return r.status, await r.text()


async def test_dimming_becomes_a_downlink_then_acknowledged(tmp_path: Path, broker: Broker) -> None:
    field = Field(broker.port)
    async with running(gateway_config(tmp_path, broker.port),
                       adapters={"chirpstack_v4": ChirpstackV4Adapter}) as (base, app), \
            field.listening(), aiohttp.ClientSession() as http:
        await lamp_in_store(app, field)
        code, text = await patch(http, base, LAMP, {"dimmingLevel": {"type": "Property", "value": 50}})
        assert code == 204, text
        listed = commands_of(app).listing(entity=LAMP)
        assert len(listed) == 1 and listed[0]["attribute"] == "dimmingLevel", "durable before the 204"
        await eventually(lambda: field.downlinks, what="the downlink")
        topic, item = field.downlinks[0]
        assert topic == DOWN
        # Generic DALI dimming downlink: set level (0x01), arc level of 50 % on the IEC 62386 curve, output 2.
        assert base64.b64decode(item["data"]) == bytes([0x01, 229, 0x02]) and dali_arc_level(50) == 229
        assert item["fPort"] == 10 and item["confirmed"] is True and item["devEui"] == EUI
        assert item["id"] == listed[0]["id"]
        sent = await status(app, "sent")
        assert sent["commandId"]["value"] == item["id"] and sent["requestedValue"]["value"] == 50
        await field.ack(item["id"])
        await status(app, "acknowledged")
        async with http.get(f"{base}/admin/commands", params={"entity": LAMP, "status": "acknowledged"}) as r:
            assert r.status == 200
            assert [c["id"] for c in (await r.json())["commands"]] == [item["id"]]
        assert commands_of(app).prune() == 0, "a finished command is kept 30 days"
        assert commands_of(app).prune(keep_s=-1) == 1 and commands_of(app).listing() == []
        # A second command the device does not acknowledge ends as a visible failure.
        # Now that the attribute exists, the single-attribute PATCH is a command too.
        async with http.patch(f"{base}/ngsi-ld/v1/entities/{LAMP}/attrs/dimmingLevel",
                              json={"type": "Property", "value": 0}, headers=TENANT) as r:
            assert r.status == 204, await r.text()
        await eventually(lambda: len(field.downlinks) == 2, what="the second downlink")
        assert base64.b64decode(field.downlinks[1][1]["data"]) == bytes([0x01, 0, 0x02])
        await status(app, "sent")
        await field.ack(field.downlinks[1][1]["id"], acknowledged=False)
        failed = await status(app, "failed")
        assert "did not acknowledge" in failed["detail"]["value"]


async def test_refusals_and_ordinary_writes(tmp_path: Path, broker: Broker) -> None:
    field = Field(broker.port)
    async with running(gateway_config(tmp_path, broker.port),
                       adapters={"chirpstack_v4": ChirpstackV4Adapter}) as (base, app), \
            aiohttp.ClientSession() as http:
        await lamp_in_store(app, field)
        # Another tenant's token cannot command ville-a's street light (the store's write auth).
        code, _ = await patch(http, base, LAMP, {"dimmingLevel": {"type": "Property", "value": 10}},
                              headers={"NGSILD-Tenant": "ville-a", "Authorization": "Bearer tok-b"})
        assert code == 401
        # Nor can anyone without a token.
        code, _ = await patch(http, base, LAMP, {"dimmingLevel": {"type": "Property", "value": 10}},
                              headers={"NGSILD-Tenant": "ville-a"})
        assert code == 401
        # A street light no source produced: dimmingLevel is a command nobody can send → 422 naming it.
        async with http.post(f"{base}/ngsi-ld/v1/entities", headers=TENANT,
                             json={"id": "urn:ngsi-ld:Streetlight:ville-a:manual", "type": "Streetlight",
                                   "location": {"type": "GeoProperty",
                                                "value": {"type": "Point", "coordinates": [2.35, 48.85]}}}) as r:
            assert r.status == 201, await r.text()
        code, text = await patch(http, base, "urn:ngsi-ld:Streetlight:ville-a:manual",
                                 {"dimmingLevel": {"type": "Property", "value": 10}})
        assert code == 422 and "dimmingLevel" in text and "OperationNotSupported" in text
        stored = await app[RUNTIME].embedded_store.get("ville-a", "urn:ngsi-ld:Streetlight:ville-a:manual")
        assert stored is not None and "dimmingLevel" not in stored, "a refused command is not written either"
        # A non-commandable attribute is an ordinary write: no command.
        code, text = await patch(http, base, LAMP, {"status": {"type": "Property", "value": "ok"}})
        assert code == 204, text
        assert commands_of(app).listing() == [], "no command from an ordinary write or a refusal"
        # A batch with one command nobody can send is refused whole (422 naming it), nothing written.
        lamp_30 = {"id": LAMP, "type": "Streetlight", "dimmingLevel": {"type": "Property", "value": 30}}
        orphan = {"id": "urn:ngsi-ld:Streetlight:ville-a:manual", "type": "Streetlight",
                  "dimmingLevel": {"type": "Property", "value": 30}}
        async with http.post(f"{base}/ngsi-ld/v1/entityOperations/update", headers=TENANT,
                             json=[lamp_30, orphan]) as r:
            assert r.status == 422 and "manual" in await r.text()
        assert commands_of(app).listing() == []
        # A batch update commands what it writes.
        async with http.post(f"{base}/ngsi-ld/v1/entityOperations/update", headers=TENANT, json=[lamp_30]) as r:
            assert r.status == 204, await r.text()
        listed = commands_of(app).listing()
        assert [(c["entityId"], c["attribute"], c["value"]) for c in listed] == [(LAMP, "dimmingLevel", 30)]


async def test_target_down_then_back_and_a_restart_deliver_exactly_once(tmp_path: Path, broker: Broker) -> None:
    field = Field(broker.port)
    cfg = gateway_config(tmp_path, broker.port)
    async with field.listening():
        pass  # the network server's persistent session exists before the outage
    async with running(cfg, adapters={"chirpstack_v4": ChirpstackV4Adapter}) as (base, app), \
            aiohttp.ClientSession() as http:
        await lamp_in_store(app, field)
        broker.stop()
        code, text = await patch(http, base, LAMP, {"dimmingLevel": {"type": "Property", "value": 100}})
        assert code == 204, text
        commands = commands_of(app)
        await eventually(lambda: commands.listing()[0]["attempts"] >= 2, what="retries while the broker is down")
        assert commands.listing()[0]["status"] == "pending"
        pending = await status(app, "pending")
        assert "unavailable" in pending["detail"]["value"]
        cid = commands.listing()[0]["id"]
    # jonction restarts; the broker comes back; the device's application id was kept in state_dir.
    broker.start()
    async with running(cfg, adapters={"chirpstack_v4": ChirpstackV4Adapter}) as (base, app), field.listening():
        await eventually(lambda: field.downlinks, what="the downlink after the restart")
        await status(app, "sent")
        await field.ack(cid)
        await status(app, "acknowledged")
        assert [i["id"] for _, i in field.downlinks] == [cid], "delivered exactly once"
        assert base64.b64decode(field.downlinks[0][1]["data"]) == bytes([0x01, 254, 0x02])
