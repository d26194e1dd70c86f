"""`jonction validate --strict` and wrong units: each case rejected with its JSON pointer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.validation import validate, validate_strict
from tests.conftest import ROOT


def _air(**attrs: Any) -> dict[str, Any]:
    return {"id": "urn:ngsi-ld:AirQualityObserved:gerland", "type": "AirQualityObserved",
            "dateObserved": {"type": "Property", "value": "2025-03-01T08:00:00Z"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.83, 45.73]}}, **attrs}


def _container(**attrs: Any) -> dict[str, Any]:
    doc = json.loads((ROOT / "schemas" / "examples" / "waste-container.json").read_text(encoding="utf-8"))
    doc.update(attrs)
    return dict(doc)


def _cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], entity: dict[str, Any], *flags: str) -> tuple[int, Any]:
    path = tmp_path / "entity.json"
    path.write_text(json.dumps(entity), encoding="utf-8")
    code = main(["validate", "--format", "json", *flags, str(path)])
    report = json.loads(capsys.readouterr().out)
    (verdict,) = report["files"][0]["verdicts"]
    return code, verdict


def _pointers(verdict: dict[str, Any], key: str = "errors") -> list[tuple[str, str]]:
    return [(p["pointer"], p["rule"]) for p in verdict[key]]


def test_a_unit_of_another_quantity_is_an_error_even_without_strict(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, verdict = _cli(tmp_path, capsys, _air(no2={"type": "Property", "value": 31, "unitCode": "CEL"}))
    assert code == 1
    assert _pointers(verdict) == [("/no2/unitCode", "unit-dimension")]
    assert "GQ" in verdict["errors"][0]["message"]


@pytest.mark.parametrize(("entity", "pointer", "rule"), [
    (_container(temperature={"type": "Property", "value": 282.6, "unitCode": "KEL"}),
     "/temperature/unitCode", "unit-mismatch"),
    (_air(no2={"type": "Property", "value": 0.031, "unitCode": "GP"}), "/no2/unitCode", "unit-mismatch"),
    (_air(no2={"type": "Property", "value": 16, "unitCode": "61"}), "/no2/unitCode", "unit-unconvertible"),
    (dict(_air(), type="AirQualityObservation"), "/type", "unknown-model"),
    (_container(fillLevel={"type": "Property", "value": 0.4}), "/fillLevel", "unknown-attribute"),
    (_container(refDevice={"type": "Property", "value": ["urn:ngsi-ld:Device:sonde-0042"]}), "/refDevice",
     "ngsi-type"),
], ids=["kelvin-temperature", "mg-no2", "ppb-no2", "unknown-type", "undefined-attribute", "wrong-ngsi-type"])
def test_strict_rejects_what_plain_validation_only_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         entity: dict[str, Any], pointer: str, rule: str) -> None:
    code, verdict = _cli(tmp_path, capsys, entity)
    assert code == 0 and (pointer, rule) in _pointers(verdict, "warnings")
    code, verdict = _cli(tmp_path, capsys, entity, "--strict")
    assert code == 1
    assert _pointers(verdict) == [(pointer, rule)]


def test_an_unknown_type_names_the_closest_model() -> None:
    (problem,) = validate_strict(dict(_air(), type="AirQualityObservation")).errors
    assert problem.expected == "AirQualityObserved" and "did you mean AirQualityObserved?" in problem.message


@pytest.mark.parametrize("golden", [
    "adapters/ngsi_v2/fixtures/waste_and_air.golden.json",       # NO2 in the v2 data: no2 in the entity
    "adapters/chirpstack_v3/fixtures/em310_up_bytes.golden.json",  # the LoRaWAN Device and its controlledAsset
    "adapters/rest_mapping/fixtures/luminarias_night_page.golden.json",
])
def test_jonctions_own_outputs_are_clean_in_strict_mode(golden: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--strict", str(ROOT / golden)]) == 0, capsys.readouterr().out
    entities = json.loads((ROOT / golden).read_text(encoding="utf-8"))
    for entity in entities if isinstance(entities, list) else [entities]:
        assert validate_strict(entity).errors == (), entity["id"]
        assert validate(entity).warnings == (), entity["id"]


def test_a_device_controlling_an_asset_links_it_with_a_relationship() -> None:
    device = {"id": "urn:ngsi-ld:Device:em310-1", "type": "Device",
              "controlledProperty": {"type": "Property", "value": ["fillingLevel"]},
              "controlledAsset": {"type": "Relationship", "object": "urn:ngsi-ld:WasteContainer:w1"}}
    assert validate_strict(device).valid
    device["controlledAsset"] = {"type": "Relationship", "object": "bin 1"}
    assert [(p.pointer, p.rule) for p in validate_strict(device).errors] == [
        ("/controlledAsset/object", "relationship-object")]


def test_validate_takes_strict_as_a_keyword() -> None:
    unknown = dict(_air(), type="AirQualityObservation")
    assert validate(unknown).valid
    assert [(p.pointer, p.rule) for p in validate(unknown, strict=True).errors] == [("/type", "unknown-model")]



def test_a_device_linking_its_asset_stays_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every LoRaWAN uplink carries a Device whose controlledAsset is a Relationship: that common case
    must not pay the detailed path (the schema walk with pointers), and a bad link must still take it."""
    import gateway.validation as validation

    walks: list[str] = []
    real = validation._schema_problems

    def counted(spec: Any, *args: Any, **kwargs: Any) -> Any:
        walks.append(spec.name)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(validation, "_schema_problems", counted)
    device = {"id": "urn:ngsi-ld:Device:em310-1", "type": "Device",
              "controlledProperty": {"type": "Property", "value": ["fillingLevel"]},
              "controlledAsset": {"type": "Relationship", "object": "urn:ngsi-ld:WasteContainer:w1"}}
    assert validate(device).valid and validate(device).warnings == ()
    assert walks == []
    device["controlledAsset"] = {"type": "Relationship", "object": "bin 1"}
    assert not validate(device).valid
    assert walks == ["Device"]
