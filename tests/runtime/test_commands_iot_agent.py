"""Commands back to the field through the IoT Agent adapter: NGSI-LD append on the embedded store → /cmd → /cmdexe."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from adapters.iot_agent import IotAgentAdapter
from gateway.runtime.commands import Commands
from gateway.runtime.state import RUNTIME
from tests.adapters.iot_agent.test_end_to_end import AIR_GROUP, APIKEY, FIWARE, iota_config
from tests.adapters.lorawan.mosquitto import MOSQUITTO, Broker
from tests.conftest import free_port
from tests.runtime.support import eventually, running

LAMP_ID = "urn:ngsi-ld:Streetlight:lamp001"
LAMP = {
    "device_id": "lamp001", "entity_name": LAMP_ID, "entity_type": "Streetlight",
    "protocol": "PDI-IoTA-UltraLight", "transport": "MQTT",
    "attributes": [{"object_id": "s", "name": "powerState", "type": "Text"}],
    "commands": [{"name": "switch", "type": "command"}],
    "static_attributes": [{"name": "location", "type": "geo:point", "value": "45.7578, 4.8320"},
                          {"name": "status", "type": "Text", "value": "ok"}],
}


def commands_of(app: Any) -> Commands:
    """The running gateway's commands (the embedded store is on in these tests)."""
    commands = app[RUNTIME].commands
    assert commands is not None
    return commands


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


async def test_iot_agent_command_round_trip_from_the_store(tmp_path: Path, broker: Broker) -> None:
    north, south = free_port(), free_port()
    mqtt = {"host": "127.0.0.1", "port": broker.port, "backoff": {"initial": 0.05, "max": 0.5}}
    cfg = iota_config(tmp_path, north, south, mqtt=mqtt)
    async with running(cfg, adapters={"iot_agent": IotAgentAdapter}) as (base, app), \
            aiohttp.ClientSession() as http:
        rt = app[RUNTIME]
        adapter: Any = rt.sources["iota"].adapter
        await eventually(lambda: adapter.mqtt is not None and adapter.mqtt.connected.is_set(), what="subscribed")
        async with http.post(f"http://127.0.0.1:{north}/iot/services",
                             json={"services": [{**AIR_GROUP, "resource": "/iot/d"}]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"http://127.0.0.1:{north}/iot/devices", json={"devices": [LAMP]}, headers=FIWARE) as r:
            assert r.status == 201
        received: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="lamp001", timeout=5) as device:
            await device.subscribe(f"/{APIKEY}/lamp001/cmd", qos=1)

            async def listen() -> None:
                async for message in device.messages:
                    await received.put((str(message.topic), bytes(message.payload)))  # type: ignore[arg-type]

            listener = asyncio.create_task(listen())
            try:
                # The lamp reports once: the gateway now knows the entity came from this source.
                await device.publish(f"/ul/{APIKEY}/lamp001/attrs", b"s|off", qos=1)
                await eventually(lambda: commands_of(app).origin("openiot", LAMP_ID), what="entity → source recorded")
                async with http.post(f"{base}/ngsi-ld/v1/entities/{LAMP_ID}/attrs",
                                     json={"switch": {"type": "Property", "value": "on"}},
                                     headers={"NGSILD-Tenant": "openiot"}) as r:
                    assert r.status == 204, await r.text()
                topic, payload = await asyncio.wait_for(received.get(), 20)
                assert topic == f"/{APIKEY}/lamp001/cmd" and payload == b"lamp001@switch|on"
                await device.publish(f"/ul/{APIKEY}/lamp001/cmdexe", b"lamp001@switch|switched on", qos=1)

                async def acknowledged() -> Any:
                    found = await rt.embedded_store.get("openiot", LAMP_ID)
                    ok = found and found.get("switchCommand", {}).get("value") == "acknowledged"
                    return found if ok else None

                lamp = await eventually(acknowledged, what="switchCommand acknowledged")
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
        assert "switched on" in lamp["switchCommand"]["detail"]["value"]
        listed = commands_of(app).listing(entity=LAMP_ID)
        assert [(c["attribute"], c["value"], c["status"], c["source"]) for c in listed] == [
            ("switch", "on", "acknowledged", "iota")]
