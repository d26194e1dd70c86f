"""A vendor can be ACCEPTED on files: models it does not supply and API checks are 'not applicable'."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.profile import load_profile, parse_profile
from conformance.reports import html_report, junit_xml, validate_report
from conformance.runner import run
from conformance.targets import FilesTarget, load_target
from gateway.cli import main
from gateway.errors import ConfigInvalid

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "conformance" / "examples"


def _container(n: int, at: str) -> dict[str, Any]:
    ent = json.loads((ROOT / "schemas" / "examples" / "waste-container.json").read_text(encoding="utf-8"))
    ent["id"] = f"urn:ngsi-ld:WasteContainer:test:bac-{n}"
    ent["fillingLevel"] = {"type": "Property", "value": 0.1 * (n + 1), "unitCode": "C62", "observedAt": at}
    ent["temperature"] = {"type": "Property", "value": 9.5, "unitCode": "CEL", "observedAt": at}
    return dict(ent)


def _delivery(folder: Path, readings: int = 4) -> Path:
    """A folder of valid WasteContainer files: one .json per reading time and the same series as .ndjson."""
    folder.mkdir()
    start = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
    for k in range(readings):
        at = (start + timedelta(hours=k)).isoformat().replace("+00:00", "Z")
        (folder / f"releve-{k}.json").write_text(json.dumps([_container(n, at) for n in range(2)]))
    at = (start + timedelta(hours=readings)).isoformat().replace("+00:00", "Z")
    (folder / "dernier.ndjson").write_text("".join(json.dumps(_container(n, at)) + "\n" for n in range(2)))
    return folder


def _sheet(path: Path, **extra: Any) -> Path:
    path.write_text(yaml.safe_dump({"vendor": "ACME", "declarations": [
        {"type": "WasteContainer", "reporting_interval_seconds": 3600, "completeness_min": 0.9, "devices": 2,
         "ranges": {"fillingLevel": {"min": 0, "max": 1, "unit": "C62"}}}], **extra}))
    return path


def test_fournisseur_donnees_accepts_a_folder_of_valid_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _delivery(tmp_path / "livraison")
    sheet = _sheet(tmp_path / "fiche.yaml")
    out = tmp_path / "out"
    code = main(["check", "--profile", "fournisseur-donnees", "--target", str(folder), "--vendor-sheet", str(sheet),
                 "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "— ACCEPTED" in printed
    report = json.loads((out / "report.json").read_text())
    assert validate_report(report) == []
    assert report["summary"]["accepted"] is True
    assert report["target"] == {"kind": "files", "files": [str(folder / "dernier.ndjson")]
                                + [str(folder / f"releve-{k}.json") for k in range(4)]}
    verdicts = {r["id"]: r["verdict"] for r in report["results"]}
    assert verdicts["L1-SDM-020"] == "pass"  # WasteContainer, supplied, judged
    assert verdicts["Q-INT-001"] == verdicts["Q-CMP-001"] == verdicts["Q-DEV-001"] == "pass"
    # Listed apart: models nobody delivers, and freshness (needs a live feed).
    apart = {c["id"]: c["why"] for c in report["not_applicable"]}
    assert set(apart) == {"L1-SDM-001", "L1-SDM-005", "L1-SDM-008", "L1-SDM-009", "L1-SDM-010", "L1-SDM-013",
                          "L1-SDM-018", "L1-SDM-021", "L1-SDM-022", "Q-LAT-001"}
    assert "live feed" in apart["Q-LAT-001"]
    assert report["summary"]["not_applicable"] == 10
    assert report["summary"]["mandatory_total"] == report["summary"]["mandatory_passed"] == 21
    # The JUnit and HTML reports show the verdict too.
    junit = ET.fromstring((out / "report.junit.xml").read_text())
    skipped = {c.get("name", "").split()[0]: c.find("skipped") for c in junit.iter("testcase")}
    na = skipped["L1-SDM-013"]
    assert na is not None and na.get("message", "").startswith("not applicable: ")
    html = (out / "report.html").read_text()
    assert "ACCEPTED" in html and "NOT ACCEPTED" not in html
    assert "Not applicable to this target (10)" in html


async def test_a_supplied_model_missing_from_the_delivery_blocks(tmp_path: Path) -> None:
    profile = load_profile("fournisseur-donnees")
    profile.quality.update(yaml.safe_load(_sheet(tmp_path / "fiche.yaml", supplies=["Streetlight"]).read_text()))
    report = await run(profile, load_target(str(_delivery(tmp_path / "livraison"))))
    assert validate_report(report) == []
    streetlight = next(r for r in report["results"] if r["id"] == "L1-SDM-013")
    assert streetlight["verdict"] == "skip"
    assert "supplies Streetlight" in streetlight["reason"]
    assert report["summary"]["accepted"] is False


async def test_a_model_the_profile_requires_blocks_when_missing(tmp_path: Path) -> None:
    profile = parse_profile(yaml.safe_dump({
        "id": "lighting", "version": "1.0", "title": {"fr": "Éclairage", "en": "Lighting"},
        "ngsi_ld": {"standard": "ETSI GS CIM 009", "version": "V1.9.1"}, "levels": {"mandatory": ["L1"]},
        "models": [{"name": "WasteContainer", "version": "0.3.0"},
                   {"name": "Streetlight", "version": "0.2.1", "required": True}]}).encode(), "test")
    report = await run(profile, load_target(str(_delivery(tmp_path / "livraison"))))
    verdicts = {r["id"]: (r["verdict"], r["reason"]) for r in report["results"]}
    assert verdicts["L1-SDM-013"][0] == "skip" and "profile requires Streetlight" in verdicts["L1-SDM-013"][1]
    assert verdicts["L1-SDM-020"][0] == "pass"
    assert report["summary"]["accepted"] is False


async def test_api_checks_on_files_are_not_applicable_and_listed_apart(tmp_path: Path) -> None:
    profile = load_profile("territoire-essentiel")
    report = await run(profile, load_target(str(_delivery(tmp_path / "livraison"))))
    assert validate_report(report) == []
    api = [r for r in report["results"] if r["level"] in ("L2", "L6")]
    assert api and {r["verdict"] for r in api} == {"not_applicable"}
    assert {c["id"] for c in report["not_applicable"]} >= {r["id"] for r in api}
    assert report["summary"]["skip"] == 0
    assert report["summary"]["accepted"] is True
    assert "Sans objet pour cette cible" in html_report(report, "fr")


async def test_a_required_check_that_could_not_run_still_blocks(tmp_path: Path) -> None:
    # One reading per container: the declared reporting interval cannot be measured on this delivery.
    profile = load_profile("fournisseur-donnees")
    profile.quality.update(yaml.safe_load(_sheet(tmp_path / "fiche.yaml").read_text()))
    report = await run(profile, load_target(str(_delivery(tmp_path / "livraison", readings=0))))
    verdicts = {r["id"]: (r["verdict"], r["reason"]) for r in report["results"]}
    assert verdicts["Q-INT-001"][0] == "skip" and "two or more observations" in verdicts["Q-INT-001"][1]
    assert report["summary"]["accepted"] is False
    junit = junit_xml(report)
    assert 'message="nothing to measure for reporting interval' in junit


async def test_a_promise_the_vendor_did_not_make_is_not_applicable(tmp_path: Path) -> None:
    profile = load_profile("fournisseur-donnees")
    profile.quality["declarations"] = [{"type": "WasteContainer", "reporting_interval_seconds": 3600}]
    report = await run(profile, load_target(str(_delivery(tmp_path / "livraison"))))
    verdicts = {r["id"]: r["verdict"] for r in report["results"] if r["level"] == "Q"}
    assert verdicts == {"Q-CMP-001": "not_applicable", "Q-DEV-001": "not_applicable", "Q-INT-001": "pass",
                        "Q-INT-002": "pass", "Q-LAT-001": "not_applicable", "Q-RNG-001": "not_applicable"}
    assert report["summary"]["accepted"] is True


def test_target_accepts_entity_files_directly(tmp_path: Path) -> None:
    folder = _delivery(tmp_path / "livraison")
    one = load_target(str(folder / "dernier.ndjson"))
    assert isinstance(one, FilesTarget) and one.paths == [folder / "dernier.ndjson"]
    (folder / ".hidden.json").write_text("{}")
    (folder / "notes.txt").write_text("not an entity")
    every = load_target(str(folder))
    assert isinstance(every, FilesTarget) and len(every.paths) == 5
    empty = tmp_path / "vide"
    empty.mkdir()
    with pytest.raises(ConfigInvalid, match="holds no entity file"):
        load_target(str(empty))
    with pytest.raises(ConfigInvalid, match="nor a folder"):
        load_target(str(tmp_path / "absent.json"))


def test_shipped_example_targets_work_as_they_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "--profile", "fournisseur-donnees", "--target", str(EXAMPLES / "target-files.yaml"),
                 "--vendor-sheet", str(EXAMPLES / "vendor-sheet.yaml"), "--out", str(tmp_path / "files")])
    assert code == 0, capsys.readouterr().out
    profile = tmp_path / "open311.yaml"
    profile.write_text(yaml.safe_dump({
        "id": "open311-data", "version": "1.0", "title": {"fr": "Signalements", "en": "Citizen reports"},
        "ngsi_ld": {"standard": "ETSI GS CIM 009", "version": "V1.9.1"}, "levels": {"mandatory": ["L1"]},
        "models": [{"name": "service_requests", "version": "0.1.0", "required": True}]}))
    code = main(["check", "--profile", str(profile), "--target", str(EXAMPLES / "target-adapter.yaml"),
                 "--out", str(tmp_path / "adapter")])
    assert code == 0, capsys.readouterr().out
    report = json.loads((tmp_path / "adapter" / "report.json").read_text())
    assert {r["verdict"] for r in report["results"]} == {"pass"}


@pytest.mark.parametrize("strict", [False, True], ids=["plain", "strict"])
async def test_a_strict_profile_makes_model_warnings_fail_l1(tmp_path: Path, strict: bool) -> None:
    at = "2025-03-01T06:00:00Z"
    odd = dict(_container(0, at), fillLevel={"type": "Property", "value": 0.4})
    unknown = dict(_container(1, at), id="urn:ngsi-ld:AirQualityObservation:x", type="AirQualityObservation")
    kelvin = _container(2, at)
    kelvin["temperature"] = {"type": "Property", "value": 282.6, "unitCode": "KEL", "observedAt": at}
    path = tmp_path / "livraison.ndjson"
    path.write_text("".join(json.dumps(e) + "\n" for e in (odd, unknown, kelvin)))
    profile = parse_profile(yaml.safe_dump({
        "id": "strict-data", "version": "1.0", "title": {"fr": "Strict", "en": "Strict"}, "strict": strict,
        "ngsi_ld": {"standard": "ETSI GS CIM 009", "version": "V1.9.1"}, "levels": {"mandatory": ["L1"]},
        "models": [{"name": "WasteContainer", "version": "0.3.0"}]}).encode(), "test")
    assert profile.strict is strict
    report = await run(profile, load_target(str(path)))
    assert validate_report(report) == []
    results = {r["id"]: r for r in report["results"]}
    failed = {cid for cid, r in results.items() if r["verdict"] == "fail"}
    # A temperature in kelvin fails the unit check either way (CEL is the models' unit).
    assert "/temperature: KEL instead of CEL" in results["L1-UNT-002"]["reason"]
    if strict:
        assert failed == {"L1-ENT-001", "L1-SDM-020", "L1-UNT-002"}
        assert f"{path}:2/type: no bundled Smart Data Model for type 'AirQualityObservation'" in \
            results["L1-ENT-001"]["reason"]
        assert f"{path}:1/fillLevel: 'fillLevel' is not defined by WasteContainer" in results["L1-SDM-020"]["reason"]
    else:
        assert failed == {"L1-UNT-002"}


def test_the_clause_names_the_models_that_must_be_delivered() -> None:
    from conformance.clause import render

    profile = parse_profile(yaml.safe_dump({
        "id": "lighting", "version": "1.0", "title": {"fr": "Éclairage", "en": "Lighting"},
        "ngsi_ld": {"standard": "ETSI GS CIM 009", "version": "V1.9.1"}, "levels": {"mandatory": ["L1"]},
        "models": [{"name": "WasteContainer", "version": "0.3.0"},
                   {"name": "Streetlight", "version": "0.2.1", "required": True}]}).encode(), "test")
    text = render(profile, lang="en", fmt="md")
    assert "| Streetlight (must be delivered) | 0.2.1 |" in text
    assert "| WasteContainer | 0.3.0 |" in text
