"""UltraLight 2.0, the JEXL subset and the translation rules, without sockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.iot_agent import IotAgentAdapter
from adapters.iot_agent.expressions import ExpressionError, compile_expression
from adapters.iot_agent.provisioning import ProvisioningError, Registry, effective
from adapters.iot_agent.translate import definition, measure_entity
from adapters.iot_agent.ultralight import format_command, parse_command_result, parse_measures
from adapters.kit.testing import fixture_message
from gateway.errors import TranslationError
from gateway.validation import validate

HERE = Path(__file__).parent
ROOT = HERE.parents[2]


# --------------------------------------------------------------------------- UltraLight


def test_ultralight_groups_times_and_escapes() -> None:
    groups = parse_measures("t|21.5|h|40#2024-05-14T08:10:00+02:00|t|21.7#|name|A%7CB%23C%25")
    assert [dict(g.values) for g in groups] == [{"t": "21.5", "h": "40"}, {"t": "21.7"}, {"name": "A|B#C%"}]
    assert [g.time for g in groups] == [None, "2024-05-14T06:10:00Z", None]


@pytest.mark.parametrize("payload", ["", "t|21.5|h", "|", "t|1#", "t|1##h|2", "notatime|t|1", "t|%FF",
                                     "2024-05-14T06:00:00Z"])
def test_malformed_ultralight_names_the_group(payload: str) -> None:
    with pytest.raises(TranslationError) as caught:
        parse_measures(payload)
    assert caught.value.reason


def test_ultralight_commands() -> None:
    assert format_command("bell001", "ring", "") == "bell001@ring|"
    assert format_command("lamp", "dim", {"level": 50, "ramp": "a|b"}) == "lamp@dim|level=50|ramp=a%7Cb"
    result = parse_command_result("lamp@dim|done%23ok")
    assert (result.device_id, result.command, result.result) == ("lamp", "dim", "done#ok")
    with pytest.raises(TranslationError):
        parse_command_result("no-at-sign|x")


# --------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(("source", "context", "expected"), [
    ("t * 1.8 + 32", {"t": 21.5}, 70.7),
    ("${@t * 2}", {"t": 3}, 6),
    ("2 ^ 3 ^ 2", {}, 512),
    ("10 - 2 - 3", {}, 5),
    ("7 // 2 + 7 % 2", {}, 4),
    ('s == "1" ? "on" : "off"', {"s": "1"}, "on"),
    ('"Room " + n', {"n": 4}, "Room 4"),
    ("a.b[1]", {"a": {"b": [5, 6]}}, 6),
    ("name|toUpperCase|substr(0, 3)", {"name": "gerland"}, "GER"),
    ("v|round(1)", {"v": 2.25}, 2.3),
    ("x in [1, 2] && !y", {"x": 2, "y": False}, True),
    ("t|parsefloat / 10", {"t": "215"}, 21.5),
    ("missing * 2", {}, None),          # JavaScript's NaN: the attribute is left out
    ("1 / 0", {}, None),
    ('"a" - 1', {}, None),
    ("9 ^ 999", {}, None),              # no huge numbers
])
def test_expressions(source: str, context: dict[str, object], expected: object) -> None:
    assert compile_expression(source).evaluate(context) == expected


@pytest.mark.parametrize("source", ["1 +", "(1", "x|nope", '"open', "a b", "__import__('os')", "a; b",
                                    "x" * 1025, "(" * 80 + "1" + ")" * 80, "`ls`"])
def test_bad_expressions_are_refused_when_provisioned(source: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(source)


def test_expressions_reach_no_python_object() -> None:
    # Member access only reads JSON objects and arrays: nothing of Python is reachable by name.
    for source in ("t.__class__", "t.real", "s.upper", "d.keys", "s.length"):
        value = compile_expression(source).evaluate({"t": 1, "s": "ab", "d": {}})
        assert value in (None, 2)


# --------------------------------------------------------------------------- translation


@pytest.mark.parametrize("case", ["air_quality_ul", "streetlight_measure"])
def test_ultralight_cases_match_their_golden_output(case: str) -> None:
    adapter = IotAgentAdapter({})
    payload = next(HERE.glob(f"{case}.txt"))
    entities = adapter.to_entities(fixture_message("iot_agent", payload))
    assert json.loads(json.dumps(entities)) == json.loads((HERE / f"{case}.golden.json").read_text())
    for item in entities:
        assert validate(item, strict=True).valid


def _definition(**fields: object) -> str:
    doc = {"service": "openiot", "subservice": "/", "device_id": "d1", "entity_type": "Thing", **fields}
    return json.dumps(doc)


def test_types_explicit_attributes_and_timestamp() -> None:
    d = definition(_definition(
        attributes=[{"object_id": "n", "name": "count", "type": "Integer"},
                    {"object_id": "b", "name": "open", "type": "Boolean"},
                    {"object_id": "p", "name": "position", "type": "geo:point"},
                    {"object_id": "w", "name": "when", "type": "DateTime"},
                    {"object_id": "r", "name": "refParking", "type": "Relationship"}],
        explicitAttrs=True, timestamp=True))
    entity = measure_entity(d, {"n": "3", "b": "1", "p": "45.1, 4.8", "w": "2024-05-14T08:00:00+02:00",
                                "r": "lot7", "noise": "x"}, observed_at="2024-05-14T06:00:00Z", pointer="",
                            from_text=True)
    assert entity["count"]["value"] == 3 and entity["open"]["value"] is True
    assert entity["position"] == {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.8, 45.1]},
                                  "observedAt": "2024-05-14T06:00:00Z"}
    assert entity["when"]["value"] == "2024-05-14T06:00:00Z"
    assert entity["refParking"]["object"] == "urn:ngsi-ld:Parking:lot7"
    assert "noise" not in entity  # explicitAttrs
    assert entity["TimeInstant"]["value"] == "2024-05-14T06:00:00Z"


def test_time_instant_in_the_measure_wins_and_bad_values_name_their_pointer() -> None:
    d = definition(_definition(attributes=[{"object_id": "t", "name": "temperature", "type": "Number"}]))
    entity = measure_entity(d, {"t": 1, "TimeInstant": "2024-01-01T00:00:00+01:00"},
                            observed_at="2024-05-14T06:00:00Z", pointer="", from_text=False)
    assert entity["temperature"]["observedAt"] == "2023-12-31T23:00:00Z"
    with pytest.raises(TranslationError) as caught:
        measure_entity(d, {"t": "warm"}, observed_at="2024-05-14T06:00:00Z", pointer="/0", from_text=True)
    assert caught.value.pointer == "/0/t"


# --------------------------------------------------------------------------- provisioning store


def test_registry_keeps_groups_and_devices_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "iot_agent.sqlite"
    first = Registry(path)
    first.open()
    first.add_groups("openiot", "/", [{"apikey": "k1", "entity_type": "Thing", "autoprovision": False}])
    first.add_devices("openiot", "/", [{"device_id": "d1", "attributes": [{"object_id": "a", "name": "b"}]}])
    with pytest.raises(ProvisioningError) as duplicate:
        first.add_devices("openiot", "/", [{"device_id": "d1"}])
    assert duplicate.value.name == "DUPLICATE_DEVICE_ID" and duplicate.value.code == 409
    first.close()
    second = Registry(path)
    second.open()
    group, device, service, _ = second.resolve("k1", "d1", None, True)
    assert group is not None and device is not None and service == "openiot"
    with pytest.raises(ProvisioningError) as unknown:
        second.resolve("k1", "d2", None, True)  # the group does not autoprovision
    assert unknown.value.name == "DEVICE_NOT_FOUND"
    merged = effective(group, device, service="openiot", subservice="/", device_id="d1")
    assert merged["entity_type"] == "Thing" and merged["attributes"] == [{"object_id": "a", "name": "b"}]
    second.close()


def test_yaml_provisioning_is_read_only_through_the_api() -> None:
    registry = Registry(None)
    registry.load_configured([{"service": "openiot", "apikey": "k", "resource": "/iot/json"}], [])
    with pytest.raises(ProvisioningError) as caught:
        registry.delete_group("openiot", "/", "/iot/json", "k")
    assert caught.value.code == 409


def test_sample_config_provisioning_is_valid() -> None:
    import yaml

    sample = yaml.safe_load((ROOT / "adapters/iot_agent/sample.yaml").read_text())
    adapter = IotAgentAdapter(sample)
    assert len(adapter.registry.groups) == 1 and len(adapter.registry.devices) == 1
