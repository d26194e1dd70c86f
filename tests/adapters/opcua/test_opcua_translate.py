"""Pure translation of recorded OPC UA data changes: units, status, times, 64-bit, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.kit.simulators.waternet import unit_id
from adapters.opcua import OpcUaAdapter
from adapters.opcua.translate import decode_unit_id, severity
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import RawMessage
from tests.conftest import SAMPLES, needs_shared

FOLDER = Path(__file__).resolve().parents[3] / "adapters" / "opcua"


def adapter() -> OpcUaAdapter:
    return OpcUaAdapter(yaml.safe_load((FOLDER / "sample.yaml").read_text()))


def raw(doc: dict[str, Any] | bytes) -> RawMessage:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return RawMessage(source="t", tenant="", received_at="2024-05-02T06:20:00Z", payload=payload,
                      idempotency_key="k")


def power(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"server": "usine-nord", "ref": "nsu=urn:jonction:simulator:waternet;s=Pump1.Power",
                           "node": "ns=2;s=Pump1.Power", "value": 1200.5, "datatype": "Double",
                           "status": {"code": 0, "name": "Good"}, "source_ts": "2024-05-02T08:15:00+02:00",
                           "server_ts": None}
    doc.update(changes)
    return doc


@pytest.mark.parametrize(("code", "number"), [("MTR", 5067858), ("C62", 4404786), ("KWT", 4937556),
                                               ("P1", 20529), ("BAR", 4342098), ("MTQ", 5067857)])
def test_unit_id_is_the_packed_common_code(code: str, number: int) -> None:
    assert decode_unit_id(number) == code
    assert unit_id(code) == number


@pytest.mark.parametrize("number", [0, -1, 1 << 24, 65, 0x6D7472])
def test_unit_ids_that_are_not_common_codes(number: int) -> None:
    assert decode_unit_id(number) is None


def test_severity_is_the_top_two_bits() -> None:
    assert severity(0) == "Good"
    assert severity(0x40000000) == "Uncertain"
    assert severity(0x80000000) == "Bad"
    assert severity(0xC0000000) == "Bad"


def test_observed_at_is_the_source_timestamp_in_utc() -> None:
    (item,) = adapter().to_entities(raw(power()))
    assert item["power"]["observedAt"] == "2024-05-02T06:15:00Z"
    assert "unitCode" not in item["power"], "no EngineeringUnits and no configured unit: no unit"


def test_falls_back_to_server_then_receipt_time() -> None:
    (item,) = adapter().to_entities(raw(power(source_ts=None, server_ts="2024-05-02T06:16:00Z")))
    assert item["power"]["observedAt"] == "2024-05-02T06:16:00Z"
    (item,) = adapter().to_entities(raw(power(source_ts=None)))
    assert item["power"]["observedAt"] == "2024-05-02T06:20:00Z"


def test_percent_engineering_units_converted_to_a_fraction() -> None:
    doc = {"server": "usine-nord", "ref": "WaterNet/Valve1/Opening", "node": "ns=2;s=Valve1.Opening",
           "value": 40, "status": {"code": 0}, "source_ts": "2024-05-02T06:15:00Z",
           "eu": {"namespace": "http://www.opcfoundation.org/UA/units/un/cefact", "unit_id": 20529}}
    (valve,) = adapter().to_entities(raw(doc))
    assert valve["openStatus"]["unitCode"] == "C62"
    assert valve["openStatus"]["value"] == 0.4


def test_foreign_unit_namespace_is_not_decoded() -> None:
    (item,) = adapter().to_entities(raw(power(eu={"namespace": "urn:vendor:units", "unit_id": 5394509})))
    assert "unitCode" not in item["power"]


def test_nan_keeps_the_status_not_a_fake_number() -> None:
    (item,) = adapter().to_entities(raw(power(value="NaN")))
    assert "power" not in item
    assert item["opcuaStatus"]["datasetId"] == "urn:ngsi-ld:opcua:power"
    assert item["opcuaStatus"]["rawValue"]["value"] == "NaN"


def test_small_64_bit_integers_stay_plain_numbers() -> None:
    (item,) = adapter().to_entities(raw(power(value=42, datatype="Int64")))
    assert item["power"]["value"] == 42 and "exactValue" not in item["power"]
    assert item["power"]["opcuaDataType"]["value"] == "Int64"


def test_static_attributes_complete_the_entity() -> None:
    (item,) = adapter().to_entities(raw(power()))
    assert item["startsAt"] == {"type": "Relationship", "object": "urn:ngsi-ld:Junction:J1"}
    assert item["initialStatus"]["value"] == "OPEN"


@pytest.mark.parametrize(
    ("payload", "pointer", "reason"),
    [
        (b"not json", "", "not JSON"),
        (b"[1, 2]", "", "JSON object"),
        (json.dumps(power(ref="ns=9;s=Unknown")).encode(), "/ref", "no mapping"),
        (json.dumps(power(server=None)).encode(), "/server", "server"),
        (json.dumps(power(source_ts="yesterday")).encode(), "/source_ts", "RFC 3339"),
        (json.dumps(power(status="Good")).encode(), "/status", "status"),
        (b"{" + b" " * (1 << 20) + b"}", "", "over"),
    ],
)
def test_bad_payloads_name_the_problem(payload: bytes, pointer: str, reason: str) -> None:
    with pytest.raises(TranslationError) as caught:
        adapter().to_entities(raw(payload))
    assert caught.value.pointer == pointer
    assert reason in caught.value.reason


def test_config_problems_are_reported_together() -> None:
    cfg = yaml.safe_load((FOLDER / "sample.yaml").read_text())
    cfg["servers"].append(dict(cfg["servers"][0]))
    cfg["servers"][0]["security"] = {"policy": "Basic256Sha256"}
    cfg["servers"][0]["nodes"].append(dict(cfg["servers"][0]["nodes"][0], entity="not a uri"))
    with pytest.raises(ConfigInvalid) as caught:
        OpcUaAdapter(cfg)
    text = "\n".join(caught.value.problems)
    assert "used twice" in text and "certificate" in text and "mapped twice" in text


def test_a_boolean_node_is_a_boolean_without_unit() -> None:
    """One entity fed by several nodes (attribute name <- node id), a Boolean node among them."""
    cfg = {"servers": [{"name": "pompe", "endpoint": "opc.tcp://127.0.0.1:4840/usine", "nodes": [
        {"node": f"ns=2;s=Pompe1.{name}", "entity": "urn:ngsi-ld:Device:usine:pompe-1", "type": "Device",
         "attribute": name} for name in ("Arret", "Vitesse")]}]}
    doc = {"server": "pompe", "ref": "ns=2;s=Pompe1.Arret", "node": "ns=2;s=Pompe1.Arret", "value": True,
           "datatype": "Boolean", "status": {"code": 0}, "source_ts": "2025-03-01T08:00:00Z"}
    (item,) = OpcUaAdapter(cfg).to_entities(raw(doc))
    assert item["id"] == "urn:ngsi-ld:Device:usine:pompe-1"
    assert item["Arret"]["value"] is True and "unitCode" not in item["Arret"]
    assert item["Arret"]["observedAt"] == "2025-03-01T08:00:00Z"


@needs_shared
def test_iotagent_style_mapping_translates(tmp_path: Path) -> None:
    """An iotagent-opcua provisioning (attribute name ← node id) expressed as our mapping."""
    device = json.loads((SAMPLES / "opcua" / "iotagent-opcua__performDeviceProvisioning.request.json").read_text())
    attrs = [a["name"] for a in device["devices"][0]["attributes"]]
    cfg = {"servers": [{"name": "car", "endpoint": "opc.tcp://127.0.0.1:5001/UA/CarServer", "nodes": [
        {"node": f"ns=3;s={name}", "entity": "urn:ngsi-ld:Device:age01_Car", "type": "Device", "attribute": name}
        for name in attrs]}]}
    doc = {"server": "car", "ref": "ns=3;s=EngineStopped", "node": "ns=3;s=EngineStopped", "value": False,
           "datatype": "Boolean", "status": {"code": 0}, "source_ts": "2024-05-02T06:15:00Z"}
    (item,) = OpcUaAdapter(cfg).to_entities(raw(doc))
    assert item["EngineStopped"]["value"] is False and "unitCode" not in item["EngineStopped"]


def test_epanet_observations_take_the_models_object_shape() -> None:
    doc = {"server": "usine-nord", "ref": "WaterNet/Tank1/Level", "node": "ns=2;s=Tank1.Level", "value": 4.2,
           "status": {"code": 0}, "source_ts": "2024-05-02T06:15:00Z"}
    (tank,) = adapter().to_entities(raw(doc))
    assert tank["level"]["value"] == {"value": 4.2}
    (pump,) = adapter().to_entities(raw(power()))
    assert pump["power"]["value"] == 1200.5, "a plain number attribute stays a number"


@pytest.mark.parametrize(("severity", "word"), [(1, "informational"), (199, "informational"), (200, "low"),
                                                (450, "medium"), (600, "high"), (800, "critical"), (1000, "critical")])
def test_event_severity_bands(severity: int, word: str) -> None:
    from adapters.opcua.translate import alert_severity

    assert alert_severity(severity) == word


def test_event_without_mapping_or_id_is_refused() -> None:
    event = {"server": "usine-nord", "ref": "ns=2;s=Elsewhere", "kind": "event", "event_id": "ab", "severity": 5}
    with pytest.raises(TranslationError, match="no event mapping"):
        adapter().to_entities(raw(event))
    with pytest.raises(TranslationError) as caught:
        adapter().to_entities(raw(dict(event, ref="i=2253", event_id="")))
    assert caught.value.pointer == "/event_id"


def test_a_text_node_saying_nan_is_text() -> None:
    (item,) = adapter().to_entities(raw(power(value="NaN", datatype="String")))
    assert item["power"]["value"] == "NaN" and "unitCode" not in item["power"]


def _with_node(**mapping: Any) -> OpcUaAdapter:
    cfg = yaml.safe_load((FOLDER / "sample.yaml").read_text())
    (node,) = [n for n in cfg["servers"][0]["nodes"] if str(n.get("node", "")).endswith("Pump1.Power")]
    node.update(mapping)
    return OpcUaAdapter(cfg)


def test_unit_override_and_conversion() -> None:
    (item,) = _with_node(unit="WTT", convert_to="KWT").to_entities(raw(power(value=1500.0)))
    assert item["power"]["value"] == 1.5 and item["power"]["unitCode"] == "KWT"
    (item,) = _with_node(unit="HTZ").to_entities(raw(power()))
    assert item["power"]["unitCode"] == "HTZ" and item["power"]["value"] == 1200.5


def test_impossible_conversions_name_the_units() -> None:
    with pytest.raises(TranslationError) as caught:
        _with_node(unit="BAR", convert_to="KWT").to_entities(raw(power()))
    assert caught.value.pointer == "/eu" and "KWT" in caught.value.reason
    with pytest.raises(TranslationError, match="no unit"):
        _with_node(convert_to="KWT").to_entities(raw(power()))
