"""OPC UA through the real gateway: simulator, adapter, pipeline, validation, embedded store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from adapters.kit.simulators.waternet import NAMESPACE
from gateway.contract import discover
from tests.conftest import free_port
from tests.runtime.support import config, eventually, running

LINK = '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; ' \
       'type="application/ld+json"'


async def entities(base: str, entity_type: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
        f"{base}/ngsi-ld/v1/entities", params={"type": entity_type, "limit": "100"}, headers={"Link": LINK}
    ) as resp:
        return list(await resp.json()) if resp.status == 200 else []


async def test_water_network_reaches_the_store(tmp_path: Path) -> None:
    sim_port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{sim_port}/jonction/waternet"
    nodes = [
        {"node": f"nsu={NAMESPACE};s=Pump1.Speed", "entity": "urn:ngsi-ld:Pump:P1", "type": "Pump",
         "attribute": "speed"},
        {"browse_path": "WaterNet/Junction1/Pressure", "entity": "urn:ngsi-ld:Junction:J1", "type": "Junction",
         "attribute": "pressure"},
    ]
    cfg = config(
        tmp_path,
        simulators=[{"name": "waternet", "options": {"port": sim_port, "interval_s": 0.2}}],
        sources=[{"name": "usine", "adapter": "opcua", "tenant": "", "config": {
            "servers": [{"name": "usine", "endpoint": endpoint, "namespace": NAMESPACE,
                         "publishing_interval_ms": 100, "reconnect": {"min_s": 0.2, "max_s": 1}, "nodes": nodes}],
            "entities": {"urn:ngsi-ld:Pump:P1": {"attributes": {
                "initialStatus": "OPEN", "startsAt": {"object": "urn:ngsi-ld:Junction:J1"},
                "endsAt": {"object": "urn:ngsi-ld:Tank:T1"}}}}}}],
    )
    async with running(cfg, adapters=discover()) as (base, _app):
        pumps = await eventually(lambda: entities(base, "Pump"), what="the pump in the store")
        junctions = await eventually(lambda: entities(base, "Junction"), what="the junction in the store")
    (pump,) = pumps
    assert pump["speed"]["unitCode"] == "RPM"
    assert pump["speed"]["opcuaStatus"]["value"] == "Good"
    assert pump["startsAt"]["object"] == "urn:ngsi-ld:Junction:J1"
    assert junctions[0]["pressure"]["value"]["value"] > 0
