"""A lamp's burning hours and switch counter as Smart Data Models DeviceMeasurement entities."""

from __future__ import annotations

import json
from typing import Any

import pytest

from adapters.talq.simulator import create
from adapters.talq.translate import device_context, translate
from gateway.errors import TranslationError
from gateway.validation import validate

DAY = 1733140800.0  # 2024-12-02 12:00 UTC: 13:00 in Paris, lamps off
NIGHT = 1733180400.0  # 2024-12-02 23:00 UTC: midnight in Paris, lamps at 50 %


def _context(gw: Any) -> str:
    devices = {d["address"]: device_context(d) for d in gw.devices()}
    return json.dumps({"devices": devices, "links_by_device": {}, "default_location": None, "gateway": gw.address})


def _measurements(gw: Any, moment: float) -> dict[str, dict[str, Any]]:
    entities = translate("log-reports", gw.log_report(moment), _context(gw))
    return {e["id"]: e for e in entities if e["type"] == "DeviceMeasurement"}


def test_each_lamp_has_a_burning_hours_and_a_switching_cycles_measurement_strict_clean() -> None:
    gw = create({"lamps": 3, "clock": lambda: DAY})
    gw.log_report(DAY)  # by day: every lamp off
    measured = _measurements(gw, NIGHT)
    found = {k: v for k, v in measured.items() if v["measurementType"]["value"] == "cumulative"}
    assert len(found) == 6, "two counters per lamp, none for the cabinet"
    states = [v["controlledProperty"]["value"] for v in measured.values() if v not in found.values()]
    assert states == ["cabinetDoor"], "the cabinet's door is a two-state measurement"
    lamp = gw.lamps[1]
    hours = found[f"urn:ngsi-ld:DeviceMeasurement:{lamp.address}:burningHours"]
    cycles = found[f"urn:ngsi-ld:DeviceMeasurement:{lamp.address}:switchingCycles"]
    assert hours["numValue"]["unitCode"] == "HUR" and hours["unit"]["value"] == "HUR"
    assert hours["numValue"]["value"] == round(lamp.hours, 2) and hours["controlledProperty"]["value"] == "burningHours"
    assert cycles["numValue"]["unitCode"] == "C62" and cycles["controlledProperty"]["value"] == "switchingCycles"
    assert cycles["numValue"]["value"] == 3650 + 2 + 1, "switched on once at dusk"
    assert isinstance(cycles["numValue"]["value"], int)
    for item in (hours, cycles):
        assert item["refDevice"]["object"] == f"urn:ngsi-ld:Streetlight:{lamp.address}"
        assert item["dateObserved"]["value"] == "2024-12-02T23:00:00Z"
        assert item["measurementType"]["value"] == "cumulative"
        verdict = validate(item, strict=True)
        assert verdict.valid, verdict.errors
    later = _measurements(gw, NIGHT + 3600)  # an hour later, still lit: no new cycle, one more burning hour
    assert later[cycles["id"]]["numValue"]["value"] == cycles["numValue"]["value"]
    assert later[hours["id"]]["numValue"]["value"] == pytest.approx(hours["numValue"]["value"] + 1, abs=0.01)


@pytest.mark.parametrize(("value", "reason"), [(-3, "cannot be negative"), ("4000", "a number is expected"),
                                               (True, "a number is expected")])
def test_a_bad_counter_is_refused_with_its_pointer(value: Any, reason: str) -> None:
    gw = create({"lamps": 1})
    body = {"entries": [{"data": {"type": "AttributeLogData", "srcAddress": f"{gw.lamps[0].address}/lampMonitor1",
                                  "attributeName": "switchOnCounter",
                                  "attributeValue": {"type": "AttributeInteger", "value": value}}}]}
    with pytest.raises(TranslationError, match=reason) as caught:
        translate("log-reports", body, _context(gw))
    assert caught.value.pointer == "/entries/0/data/attributeValue/value"


PHOTOCELL = {"address": "photocell-quai", "name": "Cellule quai du Lez", "class": "Photocell",
             "functions": [{"id": "photocell1", "type": "PhotocellFunction"},
                           {"id": "location1", "type": "LocationSensorFunction",
                            "location": {"type": "AttributeLocation",
                                         "value": {"latitude": 43.6031, "longitude": 3.8951}}}]}


def _report(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"entries": [{"data": e} for e in entries]}


def test_photocell_output_and_cabinet_events_are_two_state_measurements_strict_clean() -> None:
    gw = create({"lamps": 1})
    cabinet = next(d for d in gw.devices() if d["class"] == "LightingCabinet")
    devices = {d["address"]: device_context(d) for d in (*gw.devices(), PHOTOCELL)}
    context = json.dumps({"devices": devices, "links_by_device": {}, "default_location": None, "gateway": gw.address})
    body = _report(
        {"type": "AttributeLogData", "srcAddress": "photocell-quai/photocell1", "attributeName": "photocellOutput",
         "attributeValue": {"type": "AttributeBinary", "value": "ON", "timestamp": "2024-12-02T16:41:00Z"}},
        {"type": "EventLogData", "srcAddress": f"{cabinet['address']}/cabinetMonitor1", "eventType": "cabinetDoorOpen",
         "startEndFlag": True, "timestamp": "2024-12-02T16:45:00Z"},
        {"type": "EventLogData", "srcAddress": f"{cabinet['address']}/cabinetMonitor1", "eventType": "leakageDetected",
         "startEndFlag": False, "timestamp": "2024-12-02T16:45:00Z"},
    )
    found = {e["id"]: e for e in translate("log-reports", body, context)}
    photocell = found["urn:ngsi-ld:DeviceMeasurement:photocell-quai:photocellOutput"]
    assert photocell["textValue"]["value"] == "on" and photocell["dateObserved"]["value"] == "2024-12-02T16:41:00Z"
    assert photocell["location"]["value"]["coordinates"] == [3.8951, 43.6031]
    door = found[f"urn:ngsi-ld:DeviceMeasurement:{cabinet['address']}:cabinetDoor"]
    assert door["textValue"]["value"] == "open"
    assert door["refDevice"]["object"] == f"urn:ngsi-ld:StreetlightControlCabinet:{cabinet['address']}"
    leak = found[f"urn:ngsi-ld:DeviceMeasurement:{cabinet['address']}:earthLeakage"]
    assert leak["textValue"]["value"] == "none" and leak["controlledProperty"]["value"] == "earthLeakage"
    for item in (photocell, door, leak):
        verdict = validate(item, strict=True)
        assert verdict.valid, verdict.errors
    bad = _report({"type": "AttributeLogData", "srcAddress": "photocell-quai/photocell1",
                   "attributeName": "photocellOutput", "attributeValue": {"type": "AttributeBinary", "value": "DIM"}})
    with pytest.raises(TranslationError, match="ON/OFF") as caught:
        translate("log-reports", bad, context)
    assert caught.value.pointer == "/entries/0/data/attributeValue/value"
