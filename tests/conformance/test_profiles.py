"""Profiles: validated by their JSON Schema; a waiver needs a written reason; models match schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conformance.profile import SHIPPED, load_profile, load_vendor_sheet, parse_profile
from conformance.registry import catalogue
from gateway.errors import ConfigInvalid

BASE = {
    "id": "test-profile", "version": "1.0", "title": {"fr": "Test", "en": "Test"},
    "ngsi_ld": {"standard": "ETSI GS CIM 009", "version": "V1.9.1"}, "levels": {"mandatory": ["L2"]},
}


def _problems(doc: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigInvalid) as err:
        parse_profile(yaml.safe_dump(doc).encode(), "test.yaml")
    return err.value.problems


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_are_valid(name: str) -> None:
    profile = load_profile(name)
    assert profile.id == name
    assert len(profile.sha256) == 64
    assert profile.selection()


def test_shipped_profiles_select_the_promised_levels() -> None:
    assert load_profile("territoire-essentiel").mandatory_levels == ["L1", "L2", "L6"]
    assert load_profile("territoire-complet").mandatory_levels == ["L1", "L2", "L3", "L4", "L5", "L6", "Q"]
    assert load_profile("fournisseur-donnees").mandatory_levels == ["L1", "Q"]


def test_a_waiver_without_reason_is_a_profile_error() -> None:
    problems = _problems({**BASE, "waivers": [{"check": "L2-QRY-020"}]})
    assert any("/waivers/0" in p and "reason" in p for p in problems), problems
    problems = _problems({**BASE, "waivers": [{"check": "L2-QRY-020", "reason": "   "}]})
    assert any("/waivers/0/reason" in p for p in problems), problems


def test_a_waiver_with_reason_waives_the_check() -> None:
    doc = {**BASE, "waivers": [{"check": "L2-QRY-020", "reason": "the legacy broker allows unbounded queries"}]}
    profile = parse_profile(yaml.safe_dump(doc).encode(), "test.yaml")
    assert profile.selection()["L2-QRY-020"] == "waived"
    assert profile.waivers["L2-QRY-020"].startswith("the legacy")


def test_unknown_check_ids_and_levels_are_profile_errors() -> None:
    problems = _problems({**BASE, "checks": {"mandatory": ["L2-ZZZ-999"]}})
    assert any("unknown check id L2-ZZZ-999" in p for p in problems), problems
    problems = _problems({**BASE, "levels": {"mandatory": ["L9"]}})
    assert any("/levels/mandatory/0" in p for p in problems), problems


def test_model_versions_must_match_the_shipped_schemas() -> None:
    problems = _problems({**BASE, "models": [{"name": "WasteContainer", "version": "9.9.9"}]})
    assert any("/models/0/version" in p and "0.3.0" in p for p in problems), problems
    problems = _problems({**BASE, "models": [{"name": "NoSuchModel", "version": "0.0.1"}]})
    assert any("/models/0/name" in p for p in problems), problems


def test_model_checks_follow_the_profile_models() -> None:
    profile = load_profile("territoire-essentiel")
    selected = profile.selection()
    assert "L1-SDM-020" in selected  # WasteContainer is named
    assert "L1-SDM-007" not in selected  # Junction is not
    assert all(catalogue()[c].level in ("L1", "L2", "L6") for c in selected)


def test_vendor_sheet_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "vendor.yaml"
    good.write_text(yaml.safe_dump({"vendor": "ACME", "window_seconds": 86400, "declarations": [
        {"type": "WasteContainer", "reporting_interval_seconds": 3600, "completeness_min": 0.95,
         "ranges": {"fillingLevel": {"min": 0, "max": 1, "unit": "C62"}}}]}))
    assert load_vendor_sheet(good)["declarations"][0]["type"] == "WasteContainer"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"declarations": [{"type": "WasteContainer", "completeness_min": 2}]}))
    with pytest.raises(ConfigInvalid) as err:
        load_vendor_sheet(bad)
    text = "\n".join(err.value.problems)
    assert "reporting_interval_seconds" in text and "/declarations/0/completeness_min" in text


def test_shipped_examples_are_valid() -> None:
    """The example target files and vendor sheet validate against their schemas."""
    from conformance.schemadoc import check_against

    examples = Path(__file__).resolve().parents[2] / "conformance" / "examples"
    for name in ("target-endpoint.yaml", "target-files.yaml", "target-adapter.yaml"):
        assert check_against("target.schema.json", yaml.safe_load((examples / name).read_text())) == [], name
    sheet = load_vendor_sheet(examples / "vendor-sheet.yaml")
    assert {d["type"] for d in sheet["declarations"]} == {"WasteContainer", "Streetlight"}
    assert sheet["supplies"] == ["WasteContainer", "Streetlight"]
