"""End to end: ChirpStack v4 uplinks published to a real Mosquitto → the runtime → the embedded store."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import yaml

from adapters.chirpstack_v4 import ChirpstackV4Adapter
from adapters.kit.simulators.lorawan import create as create_simulator
from gateway.runtime.state import RUNTIME
from gateway.validation import validate
from tests.adapters.lorawan.mosquitto import Broker
from tests.runtime.support import config, eventually, running

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = yaml.safe_load((ROOT / "adapters/chirpstack_v4/sample.yaml").read_text())
FIXTURE = json.loads((ROOT / "adapters/chirpstack_v4/fixtures/em310_up_decoded.json").read_text())
EUI = "24e124713b100001"
CONTAINER = "urn:ngsi-ld:WasteContainer:ville-a:verre-mairie"
TOPIC = f"application/9a0c7b1e/device/{EUI}/event/up"


def uplink(dedup: str, time: str, distance: int, gateway: str) -> bytes:
    doc = copy.deepcopy(FIXTURE)
    doc.update(deduplicationId=dedup, time=time)
    doc["object"]["distance"] = distance
    doc["rxInfo"] = [{"gatewayId": gateway, "uplinkId": 1, "rssi": -100, "snr": 3.0}]
    return json.dumps(doc).encode()


def source(port: int) -> dict[str, Any]:
    cfg = copy.deepcopy(SAMPLE)
    cfg.pop("http")
    cfg["mqtt"] = {"host": "127.0.0.1", "port": port, "client_id": "jonction-e2e",
                   "topics": ["application/+/device/+/event/+"], "backoff": {"initial": 0.05, "max": 0.5}}
    return {"name": "chirpstack", "adapter": "chirpstack_v4", "tenant": "", "config": cfg}


async def test_uplinks_through_mosquitto_reach_the_store_once(tmp_path: Path, broker: Broker) -> None:
    cfg = config(tmp_path, sources=[source(broker.port)])
    async with running(cfg, adapters={"chirpstack_v4": ChirpstackV4Adapter}) as (base, app):
        rt = app[RUNTIME]
        first = uplink("11111111-1111-4111-8111-111111111111", "2026-03-04T07:00:00Z", 1440, "7276ff002e062a11")
        copy_via_other_gateway = uplink("11111111-1111-4111-8111-111111111111", "2026-03-04T07:00:00Z", 1440,
                                        "7276ff002e062a42")
        second = uplink("22222222-2222-4222-8222-222222222222", "2026-03-04T08:00:00Z", 715, "7276ff002e062a11")
        await eventually(lambda: rt.sources["chirpstack"].status.state == "running", what="source running")
        adapter: Any = rt.sources["chirpstack"].adapter  # a network-server adapter: its MQTT link
        await eventually(lambda: adapter.mqtt.connected.is_set(), what="subscribed")
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="e2e-publisher") as client:
            for body in (first, copy_via_other_gateway, second):
                await client.publish(TOPIC, body, qos=1)

        async def latest() -> Any:
            stored = await rt.embedded_store.get("ville-a", CONTAINER)
            ok = stored and stored["fillingLevel"]["observedAt"] == "2026-03-04T08:00:00Z"
            return stored if ok else None

        stored = await eventually(latest, what="the second uplink in the store")
        assert stored["fillingLevel"]["value"] == 0.7 and stored["fillingLevel"]["unitCode"] == "C62"
        assert stored["location"]["value"]["type"] == "Point"
        assert stored["refDevice"]["object"] == f"urn:ngsi-ld:Device:{EUI}"
        device = await rt.embedded_store.get("ville-a", f"urn:ngsi-ld:Device:{EUI}")
        assert device is not None and device["rssi"]["value"] == -100 and device["rssi"]["snr"]["unitCode"] == "2N"
        assert validate(stored).valid and validate(device).valid
        assert rt.metrics.duplicates.get(source="chirpstack") == 1, "the copy from the second gateway is a duplicate"
        async with aiohttp.ClientSession() as http, http.get(f"{base}/admin/archive") as r:
            archive = await r.json()
        keys = [m["idempotencyKey"] for m in archive["messages"]]
        assert sorted(set(keys)) == ["up:11111111-1111-4111-8111-111111111111",
                                     "up:22222222-2222-4222-8222-222222222222"]

async def test_simulator_feeds_the_http_integration(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    cfg = copy.deepcopy(SAMPLE)
    del cfg["name"], cfg["tenant"]  # the source entry's name and tenant apply
    cfg["transport"] = "http"
    cfg["http"] = {"listen": {"host": "127.0.0.1", "port": port, "path": "/chirpstack/uplinks"}}
    cfg["devices"] = [
        {"dev_eui": "24E124713B100101", "profile": "milesight-em310-udl", "location": {"lon": 3.88, "lat": 43.61},
         "params": {"container_height_mm": 1800, "full_distance_mm": 250}},
        {"dev_eui": "A84041000181E101", "profile": "dragino-laq4", "location": {"lon": 3.88, "lat": 43.60}}]
    gateway_cfg = config(tmp_path, sources=[{"name": "lorawan", "adapter": "chirpstack_v4", "tenant": "",
                                             "config": cfg}])
    simulator = create_simulator({"target": f"http://127.0.0.1:{port}/chirpstack/uplinks",
                                  "devices": ["24E124713B100101", "A84041000181E101"], "interval": 0.2})
    async with running(gateway_cfg, adapters={"chirpstack_v4": ChirpstackV4Adapter}) as (_, app):
        rt = app[RUNTIME]
        await simulator.start()
        try:
            waste = await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:24e124713b100101"),
                                     what="a simulated EM310 uplink in the store")
            air = await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:AirQualityObserved:a84041000181e101"),
                                   what="a simulated LAQ4 uplink in the store")
        finally:
            await simulator.stop()
            await simulator.stop()
    assert 0 <= waste["fillingLevel"]["value"] <= 1
    assert air["co2"]["unitCode"] == "59" and 200 < air["co2"]["value"] < 700
    assert 0 < air["relativeHumidity"]["value"] < 1
    assert simulator.sent >= 2
