"""`jonction indicators` end to end: history written into a real store (SQLite on disk, PostgreSQL), the CLI run,
the JSON figures checked against hand-computed ones, and the HTML and CSV checked to carry them."""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from gateway.cli import main
from gateway.indicators import primitives as p
from gateway.indicators.report import SCHEMA_FILE
from gateway.store.backends import open_storage

START = datetime(2025, 12, 31, 23, tzinfo=UTC)  # local midnight, January 1st 2026 (Europe/Paris)
FEB = datetime(2026, 1, 31, 23, tzinfo=UTC)     # local midnight, February 1st
END = datetime(2026, 2, 28, 23, tzinfo=UTC)     # local midnight, March 1st
WINDOWS = ["--baseline", "2026-01-01/2026-02-01", "--period", "2026-02-01/2026-03-01"]


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _prop(value: Any, moment: datetime) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": _at(moment)}


def _lighting() -> list[dict[str, Any]]:
    """Two luminaires read hourly: 1 kWh an hour in January, 0.5 in February; lamp 1 fails 3 h on February 10."""
    out = []
    for n in (1, 2):
        energy = 1000.0 * n
        moment = START
        while moment < END:
            hour = (moment.hour + 1) % 24  # local hour in winter
            status = "defectiveLamp" if n == 1 and moment in (datetime(2026, 2, 10, h, tzinfo=UTC)
                                                             for h in (1, 2, 3)) else "ok"
            out.append({"id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight",
                        "lifetimePowerConsumption": _prop(energy, moment),
                        "powerState": _prop("on" if hour < 7 or hour >= 18 else "off", moment),
                        "status": _prop(status, moment)})
            energy += 1.0 if moment < FEB else 0.5
            moment += timedelta(hours=1)
    return out


def _waste_and_sensors() -> list[dict[str, Any]]:
    """A container collected once at 0.9 in January, at 0.8 and 0.4 in February; a device reporting every 15 min."""
    fill = [(datetime(2026, 1, 10, 6, tzinfo=UTC), 0.5), (datetime(2026, 1, 11, 6, tzinfo=UTC), 0.9),
            (datetime(2026, 1, 11, 9, tzinfo=UTC), 0.05),
            (datetime(2026, 2, 5, 6, tzinfo=UTC), 0.8), (datetime(2026, 2, 5, 9, tzinfo=UTC), 0.1),
            (datetime(2026, 2, 9, 9, tzinfo=UTC), 0.05),
            (datetime(2026, 2, 9, 6, tzinfo=UTC), 0.4)]  # a late reading, written after the one that followed it
    out: list[dict[str, Any]] = [{"id": "urn:ngsi-ld:WasteContainer:c1", "type": "WasteContainer",
                                  "fillingLevel": _prop(v, m)} for m, v in fill]
    moment = FEB
    while moment < END:
        out.append({"id": "urn:ngsi-ld:Device:d1", "type": "Device", "rssi": _prop(-90, moment)})
        moment += timedelta(minutes=15)
    return out


async def _fill(url: str) -> None:
    storage = await open_storage(url)
    try:
        for tenant, entities in (("ville-a", _lighting()), ("ville-b", _waste_and_sensors())):
            for i in range(0, len(entities), 2000):
                result = await storage.append_history(tenant, entities[i:i + 2000])
                assert not result.errors, result.to_json()
    finally:
        await storage.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """CLI options reaching a store holding the synthetic territory, on each backend."""
    if request.param == "sqlite":
        (tmp_path / "data").mkdir()
        asyncio.run(_fill(str(tmp_path / "data" / "store.sqlite")))
        return ["--data", str(tmp_path / "data")]
    url: str = request.getfixturevalue("postgres_url")
    asyncio.run(_fill(url))
    return ["--database", url]


def _indicator(doc: dict[str, Any], ident: str) -> dict[str, Any]:
    return next(i for i in doc["indicators"] if i["id"] == ident)


def _tenant(ind: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in ind["tenants"] if t["tenant"] == name)


def test_figures_json_csv_and_html(store: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["indicators", *store, *WINDOWS, "--out", str(out)]) == 0
    doc = json.loads((out / "indicators.json").read_text(encoding="utf-8"))
    assert not list(Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).iter_errors(doc))
    assert doc["tenants"] == ["ville-a", "ville-b"]

    # 744 hourly readings in January: 743 increments of 1 kWh per lamp; 672 in February: 671 of 0.5
    energy = _indicator(doc, "lighting.energy")
    assert energy["territory"]["baseline"]["value"] == 2 * 743
    assert energy["territory"]["period"]["value"] == 2 * 335.5
    assert energy["territory"]["difference"] == 2 * 335.5 - 2 * 743
    assert _tenant(energy, "ville-a")["baseline"]["entities"] == 2
    assert _tenant(energy, "ville-b")["baseline"]["value"] is None  # no luminaire there
    assert energy["territory"]["period"]["months"] == {"2026-02": 671.0}
    per = _indicator(doc, "lighting.energy_per_luminaire")["territory"]
    jan, feb = 31 * p.DAY / p.AVERAGE_MONTH, 28 * p.DAY / p.AVERAGE_MONTH
    assert per["baseline"]["value"] == pytest.approx(743 / jan, rel=1e-5)
    assert per["period"]["value"] == pytest.approx(335.5 / feb, rel=1e-5)
    saved = (335.5 / feb - 743 / jan) / (743 / jan) * 100
    assert per["change_percent"] == pytest.approx(saved, rel=1e-4)

    # burning: on from 18:00 to 07:00 local, 13 h a night; January holds 31 nights, each reading held 1 h
    burning = _indicator(doc, "lighting.burning_hours")["territory"]
    assert burning["baseline"]["value"] == 31 * 13
    failed = _indicator(doc, "lighting.failed_lamps")["territory"]
    assert (failed["baseline"]["value"], failed["period"]["value"]) == (0, 1)
    assert _indicator(doc, "lighting.repair_hours")["territory"]["period"]["value"] == 3

    share = _indicator(doc, "waste.collections_below_half")
    assert _tenant(share, "ville-b")["baseline"]["value"] == 0
    assert _tenant(share, "ville-b")["period"]["value"] == 50
    assert _indicator(doc, "waste.fill_at_collection")["territory"]["period"]["value"] == pytest.approx(60)
    assert _indicator(doc, "waste.collections")["territory"]["period"]["value"] == 2

    completeness = _indicator(doc, "sensors.completeness")["territory"]
    assert completeness["period"]["value"] == 100
    assert completeness["baseline"]["value"] is None  # the device was not reporting yet: left out
    assert _indicator(doc, "air.pm25_hours_above_who")["territory"]["period"]["value"] is None

    with (out / "indicators.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    row = next(r for r in rows if r["indicator"] == "lighting.energy" and r["scope"] == "territory")
    assert (row["baseline"], row["period"], row["unit"]) == ("1486", "671", "kWh")
    assert any(r["scope"] == "entity" and r["entity"] == "urn:ngsi-ld:Streetlight:2" for r in rows)

    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith('<!DOCTYPE html><html lang="fr">')
    assert "1\u202f486" in page and "Énergie consommée par l'éclairage" in page.replace("&#x27;", "'")
    assert "<th scope=\"row\">ville-a</th>" in page and "<svg role=\"img\"" in page and "<title>" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch
    assert "src=" not in page and "<link" not in page
    assert "history instances read" in capsys.readouterr().out
    assert "<summary>Objets dont la valeur a le plus changé" in page and "urn:ngsi-ld:Streetlight:1</th>" in page


def test_postgresql_reads_halve_a_window_too_large_for_one_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_url: str
) -> None:
    """A slice over the backend's row limit is read in halves, with the same figures."""
    from gateway.store.postgres import history as pg_history

    asyncio.run(_fill(postgres_url))
    options = ["indicators", "--database", postgres_url, *WINDOWS, "--tenant", "ville-a"]
    assert main([*options, "--out", str(tmp_path / "whole")]) == 0
    monkeypatch.setattr(pg_history, "MAX_SLICE_ROWS", 300)  # a month of hourly readings is ~2,200 rows
    assert main([*options, "--out", str(tmp_path / "halves")]) == 0
    whole, halves = (json.loads((tmp_path / d / "indicators.json").read_text(encoding="utf-8"))["indicators"]
                     for d in ("whole", "halves"))
    assert [i["territory"] for i in whole] == [i["territory"] for i in halves]
    assert _indicator({"indicators": halves}, "lighting.energy")["territory"]["baseline"]["value"] == 2 * 743


def test_english_report_one_tenant_and_own_definition(store: list[str], tmp_path: Path) -> None:
    own = tmp_path / "own.yaml"
    own.write_text(
        "indicators:\n"
        "  - id: territory.mean_fill\n"
        "    title: {fr: Remplissage moyen, en: Mean fill level}\n"
        "    method: {fr: Moyenne des relevés., en: Mean of the readings.}\n"
        "    unit: ''\n"
        "    types: [WasteContainer]\n"
        "    attributes: [fillingLevel]\n"
        "    kind: mean\n", encoding="utf-8")
    out = tmp_path / "en"
    code = main(["indicators", *store, *WINDOWS, "--out", str(out), "--lang", "en", "--tenant", "ville-b",
                 "--definitions", str(own)])
    assert code == 0
    doc = json.loads((out / "indicators.json").read_text(encoding="utf-8"))
    assert doc["tenants"] == ["ville-b"]
    mine = _indicator(doc, "territory.mean_fill")["territory"]
    assert mine["baseline"]["value"] == pytest.approx((0.5 + 0.9 + 0.05) / 3)
    assert mine["period"]["value"] == pytest.approx((0.8 + 0.1 + 0.4 + 0.05) / 4)
    assert _indicator(doc, "lighting.energy")["territory"]["baseline"]["value"] is None
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<html lang="en">' in page and "Mean fill level" in page and "Evaluation indicators" in page


def test_bad_definitions_exit_2_with_a_pointer_before_any_io(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "indicators:\n"
        "  - id: air.x\n"
        "    title: {fr: x, en: x}\n"
        "    method: {fr: x}\n"
        "    unit: h\n"
        "    types: [AirQualityObserved]\n"
        "    attributes: [pm25]\n"
        "    kind: rolling_mean_above\n"
        "    params: {threshold: high, averaging_hours: 24}\n", encoding="utf-8")
    # no store at --data: the definitions are refused first
    code = main(["indicators", "--data", str(tmp_path / "nowhere"), *WINDOWS, "--out", str(tmp_path / "o"),
                 "--definitions", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert "/indicators/0/params/threshold" in err and "/indicators/0/method" in err
    assert not (tmp_path / "o").exists()
    bad.write_text("indicators: [\n", encoding="utf-8")
    assert main(["indicators", "--data", str(tmp_path), *WINDOWS, "--out", str(tmp_path / "o"),
                 "--definitions", str(bad)]) == 2
    assert "line" in capsys.readouterr().err


@pytest.mark.parametrize(("options", "message"), [
    (["--baseline", "2026-02-01/2026-01-01", "--period", "2026-02-01/2026-03-01"], "END must be later"),
    (["--baseline", "yesterday/2026-01-01", "--period", "2026-02-01/2026-03-01"], "--baseline START"),
    (["--baseline", "2026-01-01", "--period", "2026-02-01/2026-03-01"], "expected START/END"),
])
def test_bad_windows_exit_2(options: list[str], message: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["indicators", "--data", str(tmp_path), *options, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_no_store_unknown_tenant_and_empty_windows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["indicators", "--data", str(tmp_path), *WINDOWS, "--out", str(tmp_path / "o")]) == 2
    assert "no store at" in capsys.readouterr().err
    (tmp_path / "data").mkdir()
    asyncio.run(_fill(str(tmp_path / "data" / "store.sqlite")))
    data = ["--data", str(tmp_path / "data")]
    assert main(["indicators", *data, *WINDOWS, "--out", str(tmp_path / "o"), "--tenant", "ville-z"]) == 2
    assert "'ville-z': no history" in capsys.readouterr().err
    empty = ["--baseline", "2020-01-01/2020-02-01", "--period", "2020-02-01/2020-03-01"]
    assert main(["indicators", *data, *empty, "--out", str(tmp_path / "o")]) == 1
    doc = json.loads((tmp_path / "o" / "indicators.json").read_text(encoding="utf-8"))
    assert all(i["territory"]["period"]["value"] is None for i in doc["indicators"])
    assert "nothing was measured" in capsys.readouterr().err
