"""The simulated TALQ gateway through the real runtime into the embedded store, and a command back to it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import aiohttp

from adapters.talq import TalqAdapter
from adapters.talq.simulator import create
from gateway.runtime.state import RUNTIME
from gateway.validation import validate
from tests.conftest import free_port
from tests.runtime.support import config, eventually, running


async def test_devices_and_log_reports_reach_the_store_and_a_dimming_command_round_trips(tmp_path: Path) -> None:
    cms_port, gw_port = free_port(), free_port()
    source = {"name": "talq", "adapter": "talq", "tenant": "",
              "config": {"http": {"listen": {"host": "127.0.0.1", "port": cms_port, "path": "/talq"}},
                         "gateway": {"url": f"http://127.0.0.1:{gw_port}/talq"}}}
    gw = create({"cms_url": f"http://127.0.0.1:{cms_port}/talq", "port": gw_port, "lamps": 12, "interval": 0.2})
    async with running(config(tmp_path, sources=[source]), adapters={"talq": TalqAdapter}) as (base, app):
        rt = app[RUNTIME]
        await eventually(lambda: rt.sources["talq"].status.state == "running", what="source running")
        adapter: Any = rt.sources["talq"].adapter
        await gw.start()
        try:
            store = rt.embedded_store

            async def having(entity_id: str, attribute: str, value: Any = None) -> Any:
                found = await store.get("", entity_id)
                if not found or attribute not in found:
                    return None
                return found if value is None or found[attribute]["value"] == value else None

            lamp_id = f"urn:ngsi-ld:Streetlight:{gw.lamps[0].address}"
            lamp = await eventually(lambda: having(lamp_id, "powerConsumption"), what="a lamp with its readings")
            broken = await eventually(lambda: having(f"urn:ngsi-ld:Streetlight:{gw.lamps[7].address}", "voltage"),
                                      what="the failed lamp")
            cabinet = await eventually(lambda: having(f"urn:ngsi-ld:StreetlightControlCabinet:{gw.cabinet}",
                                                      "energyConsumed"), what="the cabinet's meter")
            group = await eventually(lambda: having(f"urn:ngsi-ld:StreetlightGroup:{gw.group}", "refStreetlight"),
                                     what="the group read back from the gateway")
            assert lamp["powerConsumption"]["unitCode"] == "WTT" and lamp["voltage"]["unitCode"] == "VLT"
            assert lamp["lifetimePowerConsumption"]["unitCode"] == "KWH" and lamp["current"]["unitCode"] == "AMP"
            assert lamp["location"]["value"]["type"] == "Point"
            assert broken["status"]["value"] == "defectiveLamp" and broken["powerState"]["value"] == "off"
            assert cabinet["energyConsumed"]["unitCode"] == "KWH" and cabinet["totalActivePower"]["unitCode"] == "KWT"
            assert cabinet["energyConsumed"]["value"] >= 85_000
            assert len(group["refStreetlight"]["object"]) == 12
            for item in (lamp, broken, cabinet, group):
                assert validate(item).valid, validate(item).errors

            result = await adapter.send_command({"id": "c-1", "tenant": "", "entity_id": lamp_id,
                                                 "entity_type": "Streetlight", "attribute": "dimmingLevel",
                                                 "value": 30, "issued_at": "2026-12-03T12:00:00Z"})
            assert result == {"status": "acknowledged", "detail": "gateway applied level 30 %", "retry": False}
            dimmed = await eventually(lambda: having(lamp_id, "illuminanceLevel", 0.3),
                                      what="the lamp reporting its new level")
            assert dimmed

            # the same through the NGSI-LD API: a write of dimmingLevel is a command (runtime's framework)
            link = ('<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; '
                    'type="application/ld+json"')
            async with aiohttp.ClientSession() as http, http.post(
                    f"{base}/ngsi-ld/v1/entities/{lamp_id}/attrs", headers={"Link": link},
                    json={"dimmingLevel": {"type": "Property", "value": 70}}) as resp:
                assert resp.status == 204, await resp.text()
            done = await eventually(lambda: having(lamp_id, "dimmingLevelCommand", "acknowledged"),
                                    what="the command acknowledged on the entity")
            assert done["dimmingLevelCommand"]["requestedValue"]["value"] == 70
            await eventually(lambda: having(lamp_id, "illuminanceLevel", 0.7), what="the lamp at 70 %")

            # a bad log report: 400 naming the pointer, and a dead letter
            src = f"{gw.lamps[1].address}/lampMonitor1"
            body = {"entries": [{"data": {"type": "AttributeLogData", "srcAddress": src,
                                          "attributeName": "activePower",
                                          "attributeValue": {"type": "AttributeFloat", "value": "lots"}}}]}
            async with aiohttp.ClientSession() as http:
                async with http.post(f"http://127.0.0.1:{cms_port}/talq/log-reports", json=body,
                                     params={"clientAddress": gw.address, "talqRequestId": str(uuid.uuid4())},
                                     headers={"talq-api-version": "2.7.1"}) as resp:
                    assert resp.status == 400
                    answer = await resp.json()
            assert answer[0]["references"][0]["address"]["address"] == "/entries/0/data/attributeValue/value"
            letters = await eventually(lambda: rt.deadletters.list(source="talq", limit=10), what="the dead letter")
            assert letters[0].pointer == "/entries/0/data/attributeValue/value"
        finally:
            await gw.stop()
