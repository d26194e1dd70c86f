"""Device profiles (data, validated) and provisioning (config, CSV, rules)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.kit.lorawan import config as lorawan_config
from adapters.kit.lorawan.profile import PROFILE_SCHEMA, Profile, builtin_profiles, check_profile, load_profiles
from adapters.kit.lorawan.provisioning import Registry
from adapters.kit.lorawan.uplink import Uplink
from gateway.errors import ConfigInvalid, TranslationError

ROOT = Path(__file__).resolve().parents[3]
REQUIRED = {"milesight-em310-udl": "WasteContainer", "milesight-am307": "IndoorEnvironmentObserved",
            "elsys-ers-co2": "IndoorEnvironmentObserved", "dragino-laq4": "AirQualityObserved",
            "axioma-qalcosonic-w1": "WaterConsumptionObserved", "adeunis-pulse": "WaterConsumptionObserved",
            "milesight-ws558-streetlight": "Streetlight", "milesight-ws558-cabinet": "StreetlightControlCabinet",
            "milesight-em300-di": "WaterConsumptionObserved"}


def test_the_required_profiles_exist_with_their_models() -> None:
    profiles = builtin_profiles()
    for name, entity_type in REQUIRED.items():
        assert profiles[name].entity_type == entity_type


@pytest.mark.parametrize("path", sorted((ROOT / "adapters/kit/lorawan/profiles").glob("*.yaml")), ids=lambda p: p.name)
def test_every_profile_file_validates(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert check_profile(document, path.name) == []
    assert document["id"] == path.stem, "file name == profile id"


def test_every_profile_has_golden_outputs_in_an_adapter() -> None:
    goldens = "".join(p.read_text() for p in ROOT.glob("adapters/*/fixtures/*.golden.json"))
    samples = "".join(p.read_text() for p in ROOT.glob("adapters/*/sample.yaml"))
    for name, profile in builtin_profiles().items():
        assert f"profile: {name}" in samples
        assert f'"type": "{profile.entity_type}"' in goldens, name


def _profile(**changes: Any) -> dict[str, Any]:
    base = yaml.safe_load((ROOT / "adapters/kit/lorawan/profiles/milesight-em310-udl.yaml").read_text())
    base.update(changes)
    return base


@pytest.mark.parametrize(("change", "problem"), [
    ({"decoder": "nope"}, "/decoder: no built-in decoder 'nope'"),
    ({"attributes": {"fillingLevel": {"from": "distance", "unit": "mm"}}}, "/attributes/fillingLevel/unit"),
    ({"attributes": {"fillingLevel": {"from": "distance", "unit": "XYZ"}}}, "'XYZ' is not a UN/CEFACT common code"),
    ({"attributes": {"fillingLevel": {"from": "distance", "scale": "$nope"}}}, "$nope is not a declared parameter"),
    ({"attributes": {"fillingLevel": {"from": "distance", "eval": "1+1"}}}, "Additional properties"),
    ({"entity_type": "waste container"}, "/entity_type"),
])
def test_bad_profiles_are_refused_with_the_place(change: dict[str, Any], problem: str) -> None:
    problems = check_profile(_profile(**change), "bad.yaml")
    assert any(problem in p for p in problems), problems


def test_a_territory_profile_directory_adds_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(_profile(id="mine-em310")))
    profiles = load_profiles([str(tmp_path)])
    assert "mine-em310" in profiles and "milesight-am307" in profiles
    (tmp_path / "broken.yaml").write_text("id: [unclosed")
    with pytest.raises(ConfigInvalid) as info:
        load_profiles([str(tmp_path)])
    assert "broken.yaml" in str(info.value)


def test_profile_schema_is_a_valid_draft_2020_12_schema() -> None:
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(PROFILE_SCHEMA)


# ---------------------------------------------------------------- transformations


def em310() -> Profile:
    return builtin_profiles()["milesight-em310-udl"]


@pytest.mark.parametrize(("distance", "level"), [(1800, 0.0), (2500, 0.0), (250, 1.0), (100, 1.0), (1025, 0.5)])
def test_fill_level_from_distance_is_clamped_to_0_1(distance: int, level: float) -> None:
    params = {"container_height_mm": 1800, "full_distance_mm": 250}
    attrs = em310().attributes({"distance": distance}, params, "/object")
    assert attrs["fillingLevel"].value == level and attrs["fillingLevel"].unit == "C62"


def test_vendor_field_renames_are_absorbed_by_the_profile() -> None:
    params = {"container_height_mm": 1800, "full_distance_mm": 0}
    assert em310().attributes({"position": "tilt"}, params, "")["status"].value == "lidOpen"
    assert em310().attributes({"tilt": "normal"}, params, "")["status"].value == "ok"


def test_an_unmapped_value_is_a_translation_error_with_its_pointer() -> None:
    with pytest.raises(TranslationError) as info:
        em310().attributes({"position": "upside-down"}, {"container_height_mm": 1800, "full_distance_mm": 0},
                           "/object")
    assert info.value.pointer == "/object/position"
    assert "no mapping" in info.value.reason


def test_out_of_range_rejects_and_names_the_range() -> None:
    am307 = builtin_profiles()["milesight-am307"]
    with pytest.raises(TranslationError) as info:
        am307.attributes({"temperature": 327.6}, {}, "/object")
    assert info.value.pointer == "/object/temperature"
    assert "outside the plausible range [-20, 60]" in info.value.reason


def test_battery_is_clamped_and_numbers_as_strings_are_read() -> None:
    device = em310().device_attributes({"battery": "104"}, {}, "")
    assert device["batteryLevel"].value == 1


def test_pulse_counter_uses_the_device_parameters() -> None:
    pulse = builtin_profiles()["adeunis-pulse"]
    params, problems = pulse.parameters_for({"litres_per_pulse": 2.5}, "/devices/0")
    assert problems == [] and params == {"litres_per_pulse": 2.5, "index_offset_litres": 0}
    attrs = pulse.attributes({"bytes": {"counterValues": [1001, 990]}}, params, "")
    assert attrs["waterConsumption"].value == 2502 and attrs["waterConsumption"].unit == "LTR"


def test_payload_time_without_zone_is_read_as_utc() -> None:
    pulse = builtin_profiles()["adeunis-pulse"]
    assert pulse.observed_time({"bytes": {"timestamp": "2023-12-28T19:22:17.000"}}, {}, "") == "2023-12-28T19:22:17Z"
    with pytest.raises(TranslationError) as info:
        pulse.observed_time({"bytes": {"timestamp": "yesterday"}}, {}, "/object")
    assert info.value.pointer == "/object/bytes/timestamp"


# ---------------------------------------------------------------- provisioning


def profiles() -> dict[str, Profile]:
    return dict(builtin_profiles())


def uplink(eui: str, **kw: Any) -> Uplink:
    return Uplink(kind="up", dev_eui=eui, key="k", **kw)


def test_config_devices_normalize_deveuis_and_reproject_lambert93() -> None:
    registry = Registry.from_config({"devices": [{
        "dev_eui": "24-E1-24-71-3B-10-00-01", "profile": "milesight-em310-udl",
        "location": {"x": 652381.2, "y": 6862203.6, "crs": "EPSG:2154"}, "params": {"container_height_mm": 1800}}]},
        profiles())
    record = registry.known("24e124713b100001")
    assert record is not None and record.entity_id == "urn:ngsi-ld:WasteContainer:24e124713b100001"
    assert record.location is not None
    lon, lat = record.location["coordinates"]
    assert lon == pytest.approx(2.35098, abs=1e-4) and lat == pytest.approx(48.85811, abs=1e-4)


def test_every_provisioning_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigInvalid) as info:
        Registry.from_config({"devices": [
            {"dev_eui": "not-an-eui", "profile": "milesight-em310-udl"},
            {"dev_eui": "24e124713b100001", "profile": "nope"},
            {"dev_eui": "24e124713b100002", "profile": "milesight-em310-udl"},
            {"dev_eui": "24e124713b100003", "profile": "milesight-em310-udl", "location": {"lon": 2, "lat": 48},
             "params": {"container_height_mm": -5, "colour": "red"}},
        ], "auto_provision": [{"match": {}, "profile": "axioma-qalcosonic-w1"}]}, profiles())
    text = "\n".join(info.value.problems)
    assert "/devices/0/dev_eui" in text
    assert "/devices/1/profile: unknown device profile 'nope'" in text
    assert "/devices/2/params/container_height_mm: required" in text
    assert "/devices/2: profile milesight-em310-udl needs 'location'" in text
    assert "/devices/3/params/container_height_mm: -5 is below the minimum 1" in text
    assert "/devices/3/params/colour: profile milesight-em310-udl has no parameter" in text
    assert "/auto_provision/0/match: a rule needs at least one condition" in text


def test_csv_provisioning_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(
        "dev_eui;profile;tenant;entity_id;name;x;y;crs;param.container_height_mm;attr.storedWasteKind\n"
        "24E124713B100001;milesight-em310-udl;ville-a;urn:ngsi-ld:WasteContainer:v1;Verre 1;652381.2;6862203.6;"
        "EPSG:2154;1800;glass\n"
        "24E124713B100002;milesight-em310-udl;ville-a;;;;;;;\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as info:
        Registry.from_config({"devices_csv": str(path)}, profiles())
    assert any(p.startswith("devices.csv:3/params/container_height_mm") for p in info.value.problems)
    path.write_text(path.read_text().splitlines()[0] + "\n" + path.read_text().splitlines()[1] + "\n")
    registry = Registry.from_config({"devices_csv": str(path)}, profiles())
    record = registry.known("24e124713b100001")
    assert record is not None and record.tenant == "ville-a" and record.name == "Verre 1"
    assert record.params == {"container_height_mm": 1800, "full_distance_mm": 0}
    assert record.attributes == {"storedWasteKind": "glass"}


def test_csv_with_unknown_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text("dev_eui,profile,colour\n24E124713B100001,milesight-em310-udl,red\n")
    with pytest.raises(ConfigInvalid) as info:
        Registry.from_config({"devices_csv": str(path)}, profiles())
    assert "unknown column(s) ['colour']" in str(info.value)


def test_rules_match_by_prefix_application_profile_and_tags() -> None:
    registry = Registry.from_config({"auto_provision": [
        {"match": {"dev_eui_prefix": "8C83FC05"}, "profile": "axioma-qalcosonic-w1", "tenant": "eau",
         "entity_id": "urn:ngsi-ld:WaterConsumptionObserved:{dev_eui}"},
        {"match": {"application": "eclairage", "tags": {"usage": "compteur"}}, "profile": "milesight-em300-di"},
    ]}, profiles())
    first = registry.resolve(uplink("8c83fc05000100aa"))
    assert first is not None and first.auto and first.tenant == "eau"
    assert first.entity_id == "urn:ngsi-ld:WaterConsumptionObserved:8c83fc05000100aa"
    second = registry.resolve(uplink("24e1241360000001", applications=("1", "eclairage"), tags={"usage": "compteur"}))
    assert second is not None and second.profile.id == "milesight-em300-di"
    assert registry.resolve(uplink("24e1241360000001", applications=("eclairage",))) is None
    with pytest.raises(TranslationError) as info:
        registry.require(uplink("0000000000000001"), "/deviceInfo")
    assert "unknown device 0000000000000001" in info.value.reason and info.value.pointer == "/deviceInfo"


# ---------------------------------------------------------------- config schemas


@pytest.mark.parametrize("domain", sorted(lorawan_config.ADAPTERS))
def test_adapter_config_schema_files_are_the_composed_schema(domain: str) -> None:
    on_disk = json.loads((ROOT / "adapters" / domain / "config.schema.json").read_text())
    assert on_disk == lorawan_config.schema_for(domain), "run: python -m adapters.kit.lorawan.config"


def test_config_errors_before_any_io() -> None:
    from adapters.chirpstack_v4 import ChirpstackV4Adapter

    sample = yaml.safe_load((ROOT / "adapters/chirpstack_v4/sample.yaml").read_text())
    broken = copy.deepcopy(sample)
    broken["transport"] = "mqtt"
    del broken["mqtt"]
    with pytest.raises(ConfigInvalid):
        ChirpstackV4Adapter(broken)
    broken = copy.deepcopy(sample)
    broken["devices"][0]["profile"] = "missing"
    with pytest.raises(ConfigInvalid) as info:
        ChirpstackV4Adapter(broken)
    assert "/devices/0/profile" in str(info.value)
