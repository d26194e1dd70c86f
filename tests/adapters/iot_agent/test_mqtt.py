"""The iot_agent adapter over a real Mosquitto: the IoT Agents' topics, and a command round trip."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from gateway.runtime.state import RUNTIME
from tests.adapters.iot_agent.test_end_to_end import AIR_GROUP, APIKEY, FIWARE, gateway
from tests.adapters.lorawan.mosquitto import MOSQUITTO, Broker
from tests.runtime.support import eventually

LAMP = {
    "device_id": "lamp001", "entity_name": "urn:ngsi-ld:Streetlight:lamp001", "entity_type": "Streetlight",
    "protocol": "PDI-IoTA-UltraLight", "transport": "MQTT",
    "attributes": [{"object_id": "s", "name": "powerState", "type": "Text"},
                   {"object_id": "l", "name": "illuminanceLevel", "type": "Number"}],
    "commands": [{"name": "switch", "type": "command"}],
    "static_attributes": [{"name": "location", "type": "geo:point", "value": "45.7578, 4.8320"},
                          {"name": "status", "type": "Text", "value": "ok"}],
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto broker on a free loopback port."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed (Debian package 'mosquitto'; .ci/run installs it)")
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


async def publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="device-sim", timeout=5) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


async def test_measures_on_every_topic_form_reach_the_store(tmp_path: Path, broker: Broker) -> None:
    mqtt = {"host": "127.0.0.1", "port": broker.port, "backoff": {"initial": 0.05, "max": 0.5}}
    async with gateway(tmp_path, mqtt=mqtt) as gw, aiohttp.ClientSession() as http:
        assert gw.adapter.mqtt is not None
        await eventually(lambda: gw.adapter.mqtt is not None and gw.adapter.mqtt.connected.is_set(),
                         what="subscribed")
        async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]}, headers=FIWARE) as r:
            assert r.status == 201
        await publish(broker.port, [
            (f"/{APIKEY}/aq1/attrs", json.dumps({"t": 21.5, "no2": 30}).encode()),
            (f"/ul/{APIKEY}/aq2/attrs", b"t|12|no2|40"),
            (f"/json/{APIKEY}/aq3/attrs", json.dumps({"t": 3, "no2": 4}).encode()),
            (f"{APIKEY}/aq4/attrs", b"t|7|no2|8"),
            ("/unknownkey/aq9/attrs", b"t|1"),
        ])
        aq1 = await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:aq1")
        assert aq1["temperature"]["value"] == 21.5 and aq1["no2"]["value"] == 30
        assert (await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:aq2"))["no2"]["value"] == 40
        assert (await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:aq3"))["temperature"]["value"] == 3
        assert (await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:aq4"))["temperature"]["value"] == 7
        # A single attribute on its own topic.
        await publish(broker.port, [(f"/{APIKEY}/aq1/attrs/t", b"22.5")])
        store = gw.app[RUNTIME].embedded_store

        async def updated() -> bool:
            found = await store.get("openiot", "urn:ngsi-ld:AirQualityObserved:aq1")
            return bool(found and found["temperature"]["value"] == 22.5)

        await eventually(updated, what="the single-attribute update")
        letters = await eventually(gw.dead_letters, what="the unknown apikey's dead letter")
        assert "DEVICE_GROUP_NOT_FOUND" in letters[0].reason


async def test_command_round_trip_through_mosquitto(tmp_path: Path, broker: Broker) -> None:
    mqtt = {"host": "127.0.0.1", "port": broker.port, "backoff": {"initial": 0.05, "max": 0.5}}
    group = {**AIR_GROUP, "resource": "/iot/d"}
    async with gateway(tmp_path, mqtt=mqtt) as gw, aiohttp.ClientSession() as http:
        await eventually(lambda: gw.adapter.mqtt is not None and gw.adapter.mqtt.connected.is_set(),
                         what="subscribed")
        async with http.post(f"{gw.north}/iot/services", json={"services": [group]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.north}/iot/devices", json={"devices": [LAMP]}, headers=FIWARE) as r:
            assert r.status == 201
        received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="lamp001", timeout=5) as device:
            await device.subscribe(f"/{APIKEY}/lamp001/cmd", qos=1)

            async def listen() -> None:
                async for message in device.messages:
                    await received.put((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]

            listener = asyncio.create_task(listen())
            try:
                # The command, as an NGSI-LD client (or a broker forwarding it) sends it.
                async with http.patch(f"{gw.north}/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:lamp001/attrs",
                                      json={"switch": {"type": "Property", "value": "on"}},
                                      headers={"NGSILD-Tenant": "openiot", "Content-Type": "application/json"}) as r:
                    assert r.status == 204, await r.text()
                topic, payload = await asyncio.wait_for(received.get(), 20)
                assert topic == f"/{APIKEY}/lamp001/cmd" and payload == b"lamp001@switch|on"
                pending = await gw.entity("openiot", "urn:ngsi-ld:Streetlight:lamp001")
                assert pending["switch_status"]["value"] == "PENDING"
                # The device executes it and answers on /cmdexe, then reports its state.
                await device.publish(f"/ul/{APIKEY}/lamp001/cmdexe", b"lamp001@switch|switched on", qos=1)
                await device.publish(f"/ul/{APIKEY}/lamp001/attrs", b"s|on|l|0.9", qos=1)
            finally:
                listener.cancel()
        store = gw.app[RUNTIME].embedded_store

        async def done() -> Any:
            found = await store.get("openiot", "urn:ngsi-ld:Streetlight:lamp001")
            ok = found and found.get("switch_status", {}).get("value") == "OK" and "powerState" in found
            return found if ok else None

        lamp = await eventually(done, what="the command result and the new state")
        assert lamp["switch_info"]["value"] == "switched on"
        assert lamp["powerState"]["value"] == "on" and lamp["illuminanceLevel"]["value"] == 0.9
