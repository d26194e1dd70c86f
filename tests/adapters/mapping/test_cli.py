"""``jonction mapping check|apply``: onboarding a vendor from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[3]
LUMINARIAS = ROOT / "adapters/rest_mapping/examples/luminarias.yaml"


def test_check_a_good_mapping(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mapping", "check", str(LUMINARIAS)]) == 0
    assert "builds Streetlight entities with 10 attributes" in capsys.readouterr().out


def test_check_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('entity_type: Streetlight\nid: "urn:ngsi-ld:Streetlight:{ref}"\n'
                   'attributes:\n  a: {select: "x[", unit: KWHH}\n  b: {value: 1, crs: "EPSG:2154"}\n')
    assert main(["mapping", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    for key in ("/attributes/a/select:", "/attributes/a/unit:", "/attributes/b/crs:"):
        assert key in err


def test_apply_to_a_page_of_the_vendor_api(capsys: pytest.CaptureFixture[str]) -> None:
    page = ROOT / "adapters/rest_mapping/fixtures/luminarias_night_page.json"
    assert main(["mapping", "apply", str(LUMINARIAS), str(page)]) == 0
    out = capsys.readouterr()
    entities = json.loads(out.out)
    assert [e["id"] for e in entities][-1] == "urn:ngsi-ld:Streetlight:LUM-0008"
    assert "4 entities, 0 problems" in out.err


def test_apply_to_a_csv_reports_each_bad_line(capsys: pytest.CaptureFixture[str]) -> None:
    mapping = ROOT / "adapters/files/examples/streetlights_gis.yaml"
    csv = ROOT / "tests/adapters/files/data/inventaire_eclairage.csv"
    assert main(["mapping", "apply", str(mapping), str(csv)]) == 1
    err = capsys.readouterr().err
    assert [line.split(":")[1].strip() for line in err.splitlines() if line.startswith("untranslatable")] == [
        "line 4", "line 5", "line 7", "line 8", "line 9"]
    assert "4 entities, 5 problems" in err


def test_check_and_apply_a_mapping_that_reads_the_push(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mapping = tmp_path / "device.yaml"
    mapping.write_text('entity_type: AirQualityObserved\nid: "urn:ngsi-ld:AirQualityObserved:{$query.i}"\n'
                       "tenant: $headers.Fiware-Service\nattributes:\n  no2: {select: no2, unit: GQ}\n"
                       "  dateObserved: {select: ts, epoch: ms}\n"
                       "  location: {type: GeoProperty, value: {type: Point, coordinates: [3.8767, 43.6108]}}\n")
    assert main(["mapping", "check", str(mapping)]) == 0
    out = capsys.readouterr().out
    assert "with 3 attributes (1 static)" in out
    assert "reads from the push: $query.i (/id), $headers.fiware-service (/tenant)" in out
    document = tmp_path / "measure.json"
    document.write_text('{"no2": 30, "ts": 1764756000000}')
    assert main(["mapping", "apply", str(mapping), str(document), "--query", "i=aq-1",
                 "--header", "Fiware-Service: openiot"]) == 0
    (entity,) = json.loads(capsys.readouterr().out)
    assert entity["id"] == "urn:ngsi-ld:AirQualityObserved:aq-1"
    assert entity["dateObserved"]["value"] == "2025-12-03T10:00:00Z"
    # Without the query parameter the id cannot be built: the item is reported, not a crash.
    assert main(["mapping", "apply", str(mapping), str(document)]) == 1
    assert "id placeholder {$query.i} is missing" in capsys.readouterr().err
    assert main(["mapping", "apply", str(mapping), str(document), "--query", "i"]) == 2
    assert "--query 'i': expected NAME=VALUE" in capsys.readouterr().err
