"""Deliberately broken targets: each fails exactly the checks whose rule it breaks, and no other.

API breaks are a proxy in front of the embedded store that breaks one rule; data breaks are
entity files with one defect; quality breaks are a simulated vendor that misses its promise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.profile import load_profile
from conformance.reports import validate_report
from conformance.runner import run
from conformance.targets import EndpointTarget, FilesTarget
from tests.conformance.support import (
    KNOWN_STORE_DEVIATIONS,
    TOKEN,
    breaking_proxy,
    feeder,
    model_example,
    notification_relay,
    running_store,
)
from tests.conftest import free_port

FIXTURES = Path(__file__).parent / "fixtures"

API_BREAKS: dict[str | None, set[str]] = {
    None: set(),
    "error-type": {"L2-RET-016", "L3-UPD-003", "L3-APP-004", "L3-PAT-003", "L3-MRG-004", "L3-RPL-002",
                   "L3-DEL-002", "L3-DEL-003", "L3-DEL-005", "L4-SUB-006", "L4-SUB-008", "L5-TMP-010",
                   "L6-TEN-010", "L6-TEN-017"},
    "no-context-link": {"L2-RET-003", "L2-CTX-003", "L2-CTX-004", "L5-TMP-014"},
    "no-ld-context": {"L2-RET-006", "L2-CTX-005"},
    "tenant-echo": {"L6-TEN-001", "L6-TEN-002", "L6-TEN-003"},
    "tenant-leak": {"L6-TEN-010", "L6-TEN-011", "L6-TEN-017", "L6-TEN-018", "L6-TEN-019"},
    "batch-shape": {"L3-BAT-002", "L3-BAT-003", "L3-BAT-006", "L3-BAT-013", "L3-BAT-015", "L3-BAT-017",
                    "L3-BAT-019"},
    "keyvalues": {"L2-RET-008", "L2-RET-009", "L2-QRY-013"},
    "no-pagination-links": {"L2-PAG-002", "L2-PAG-003", "L2-PAG-004", "L2-PAG-011"},
    "count-missing": {"L2-CNT-001", "L2-CNT-002", "L2-CNT-003", "L2-CNT-004", "L2-PAG-007", "L6-TEN-016"},
    "accept-any-type": {"L3-CRE-012", "L3-UPD-005", "L3-BAT-018"},
    "ignore-unknown-parameters": {"L2-RET-018"},
    "no-406": {"L2-RET-019"},
    "missing-tenant-is-empty": {"L6-TEN-005", "L6-TEN-006", "L6-TEN-007", "L6-TEN-008", "L6-TEN-009"},
    "q-ignored": {"L2-QRY-004", "L2-QRY-005", "L2-QRY-006", "L2-QRY-007", "L2-QRY-008", "L2-QRY-009",
                  "L2-QRY-010", "L2-QRY-011", "L2-QRY-019", "L2-QRY-024"},
    "geo-ignored": {"L2-QRY-015", "L2-QRY-016", "L2-QRY-017", "L2-QRY-018"},
    "no-411": {"L3-CRE-014", "L3-BAT-020"},
    "merge-patch-refused": {"L3-MRG-003"},
    "conflict-hidden": {"L3-CRE-003", "L4-SUB-005"},
    "temporal-filters-ignored": {"L5-TMP-004", "L5-TMP-005", "L5-TMP-006", "L5-TMP-007", "L5-TMP-012",
                                 "L5-TMP-013"},
    "lastN-ignored": {"L5-TMP-009"},
    "open-writes": {"L6-AUT-001", "L6-AUT-002", "L6-AUT-005", "L6-AUT-006", "L6-AUT-007", "L6-AUT-008",
                    "L6-AUT-009", "L6-AUT-010", "L6-AUT-011", "L6-AUT-012"},
}
"""Break -> the checks it must fail (beyond what the store itself fails today)."""


def not_passed(report: dict[str, Any]) -> dict[str, str]:
    """Mandatory checks that did not pass, with their reasons."""
    return {r["id"]: f"{r['verdict']}: {r['reason']}" for r in report["results"]
            if r["status"] == "mandatory" and r["verdict"] != "pass"}


@pytest.mark.slow
@pytest.mark.parametrize("brk", list(API_BREAKS), ids=lambda b: b or "unbroken")
async def test_api_break_fails_exactly_its_checks(tmp_path: Path, brk: str | None) -> None:
    """The proxy breaks one rule; the run fails exactly the checks of that rule."""
    profile = load_profile(str(FIXTURES / "api-only.yaml"))
    async with running_store(tmp_path / "store") as store, breaking_proxy(store, brk) as url:
        report = await run(profile, EndpointTarget(url=url, token=TOKEN, token_source="test", allow_write=True))
    assert validate_report(report) == []
    got = not_passed(report)
    assert set(got) == API_BREAKS[brk] | KNOWN_STORE_DEVIATIONS, got
    assert all(v.startswith("fail") for k, v in got.items()), got
    assert report["run"]["cleanup"]["left"] == []


def _files(tmp_path: Path, entities: list[dict[str, Any]]) -> FilesTarget:
    path = tmp_path / "delivery.ndjson"
    path.write_text("\n".join(json.dumps(e) for e in entities) + "\n", encoding="utf-8")
    return FilesTarget([path])


def _delivery() -> list[dict[str, Any]]:
    return [model_example(m) for m in ("AirQualityObserved", "WasteContainer", "Streetlight", "ParkingSpot")]


def _break_units(ents: list[dict[str, Any]]) -> None:
    ents[0]["no2"]["unitCode"] = "GP"  # mg/m3 where the model says µg/m3: a factor of 1000


def _break_zone(ents: list[dict[str, Any]]) -> None:
    ents[0]["no2"]["observedAt"] = "2025-03-01T08:00:00"


def _break_crs(ents: list[dict[str, Any]]) -> None:
    ents[0]["location"]["value"]["coordinates"] = [842000.0, 6519000.0]


def _break_id(ents: list[dict[str, Any]]) -> None:
    ents[1]["id"] = "container 12"


def _break_relationship(ents: list[dict[str, Any]]) -> None:
    ents[2]["refJcDevice"] = {"type": "Relationship", "object": "lamp post 7"}


DATA_BREAKS: dict[str, tuple[Any, set[str]]] = {
    "unbroken": (lambda ents: None, set()),
    "units-wrong": (_break_units, {"L1-UNT-002"}),
    "observedAt-without-zone": (_break_zone, {"L1-TIM-001"}),
    "lambert-coordinates": (_break_crs, {"L1-GEO-002"}),
    "id-not-uri": (_break_id, {"L1-ENT-002"}),
    "relationship-not-uri": (_break_relationship, {"L1-ATT-002"}),
}


@pytest.mark.parametrize("name", list(DATA_BREAKS))
async def test_data_break_fails_exactly_its_check(tmp_path: Path, name: str) -> None:
    """One defect in delivered entity files fails the one L1 check of that rule."""
    breaker, expected = DATA_BREAKS[name]
    ents = _delivery()
    breaker(ents)
    profile = load_profile("fournisseur-donnees")
    report = await run(profile, _files(tmp_path, ents))
    assert validate_report(report) == []
    l1 = {r["id"]: r for r in report["results"] if r["level"] == "L1"}
    failed = {cid for cid, r in l1.items() if r["verdict"] == "fail"}
    assert failed == expected, {cid: l1[cid]["reason"] for cid in failed}
    assert not [r for r in l1.values() if r["verdict"] == "error"]
    ran = {cid for cid, r in l1.items() if r["verdict"] == "pass"} | failed
    assert {"L1-SDM-001", "L1-SDM-020", "L1-SDM-013", "L1-SDM-010"} <= ran


QUALITY_DECL = {"type": "JcTestSensor", "reporting_interval_seconds": 0.5, "latency_max_seconds": 3.0,
                "devices": 2, "ranges": {"level": {"min": 0, "max": 100}}}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "interval", "value", "expected"), [
    ("as-declared", 0.5, lambda k: 20.0 + k % 5, set()),
    ("reporting-slower-than-declared", 1.0, lambda k: 20.0 + k % 5, {"Q-INT-001"}),
    ("values-out-of-range", 0.5, lambda k: 250.0, {"Q-RNG-001"}),
])
async def test_quality_break_fails_exactly_its_check(tmp_path: Path, name: str, interval: float, value: Any,
                                                      expected: set[str]) -> None:
    """A vendor that misses one promise fails the Q check of that promise."""
    profile = load_profile(str(FIXTURES / "quality-only.yaml"))
    profile.quality.update({"window_seconds": 4.0, "poll_interval_seconds": 0.1, "declarations": [QUALITY_DECL]})
    async with running_store(tmp_path / "store") as url, feeder(url, etype="JcTestSensor", devices=2,
                                                                 interval=interval, value=value):
        report = await run(profile, EndpointTarget(url=url, token=TOKEN, token_source="test"))
    assert validate_report(report) == []
    q = {r["id"]: r for r in report["results"] if r["level"] == "Q"}
    assert {cid for cid, r in q.items() if r["verdict"] == "fail"} == expected, {c: r["reason"] for c, r in q.items()}
    measured = [r for r in q.values() if r["verdict"] not in ("skip", "not_applicable")]
    assert all(r["evidence"].get("measurements") for r in measured)


@pytest.mark.parametrize(("drop_tenant", "expected"), [(False, set()), (True, {"L4-NTF-005"})],
                         ids=["relayed", "relay-drops-tenant"])
async def test_notifications_through_a_public_callback_url(tmp_path: Path, drop_tenant: bool,
                                                           expected: set[str]) -> None:
    """Notifications reach the checker through its configured public URL; a lost tenant header fails L4-NTF-005."""
    profile = load_profile(str(FIXTURES / "api-only.yaml"))
    listen = free_port()
    async with running_store(tmp_path / "store") as url, notification_relay(listen, drop_tenant=drop_tenant) as pub:
        target = EndpointTarget(url=url, token=TOKEN, token_source="test", allow_write=True, callback_url=pub,
                                listen_port=listen)
        report = await run(profile, target, only={c for c in profile.selection() if c.startswith("L4-")})
    results = {r["id"]: r for r in report["results"]}
    assert {cid for cid, r in results.items() if r["verdict"] != "pass"} == expected
    sub = next(x for x in results["L4-NTF-001"]["evidence"]["exchanges"] if x["request"]["url"].endswith(
        "/subscriptions"))
    assert f'"uri": "{pub}/notify/n1"' in sub["request"]["body"]
    assert report["target"]["callback_url"] == pub


async def test_quality_window_that_cannot_see_the_interval_is_an_error_not_a_failure(tmp_path: Path) -> None:
    """Polling slower than half the declared interval would blame the vendor for the checker's blindness."""
    profile = load_profile(str(FIXTURES / "quality-only.yaml"))
    profile.quality.update({"window_seconds": 1.0, "poll_interval_seconds": 0.5, "declarations": [QUALITY_DECL]})
    async with running_store(tmp_path / "store") as url:
        report = await run(profile, EndpointTarget(url=url, token=TOKEN, token_source="test"))
    verdicts = {r["id"]: (r["verdict"], r["reason"]) for r in report["results"]}
    # Completeness was not promised (no completeness_min): not applicable, not an error.
    assert verdicts.pop("Q-CMP-001")[0] == "not_applicable"
    assert {v for v, _ in verdicts.values()} == {"error"}
    assert "poll at most every 0.25 s" in verdicts["Q-INT-001"][1]


def _series(every: float, *, readings: int = 12, value: float = 40.0) -> list[dict[str, Any]]:
    """Two devices' recorded readings, one every ``every`` seconds, as a vendor would deliver them."""
    from datetime import UTC, datetime, timedelta

    start = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
    out = []
    for k in range(readings):
        at = (start + timedelta(seconds=k * every)).isoformat().replace("+00:00", "Z")
        for dev in ("a", "b"):
            ent = model_example("WasteContainer")
            ent["id"] = f"urn:ngsi-ld:WasteContainer:jc-series-{dev}"
            for attr in ent.values():  # one reading: every measured attribute observed at its time
                if isinstance(attr, dict) and "observedAt" in attr:
                    attr["observedAt"] = at
            ent["fillingLevel"] = {"type": "Property", "value": value / 100, "unitCode": "C62", "observedAt": at}
            out.append(ent)
    return out


@pytest.mark.parametrize(("every", "value", "failing"), [
    (600, 40.0, set()),
    (1200, 40.0, {"Q-INT-001", "Q-CMP-001"}),
    (600, 250.0, {"Q-RNG-001"}),
], ids=["as-declared", "half-the-readings", "out-of-range"])
async def test_quality_measured_on_delivered_files(tmp_path: Path, every: float, value: float,
                                                   failing: set[str]) -> None:
    """A data-only vendor: the Q level is measured on the recorded series (freshness needs a live API)."""
    profile = load_profile("fournisseur-donnees")
    profile.quality["declarations"] = [{
        "type": "WasteContainer", "reporting_interval_seconds": 600, "completeness_min": 0.9, "devices": 2,
        "latency_max_seconds": 900, "ranges": {"fillingLevel": {"min": 0, "max": 1, "unit": "C62"}}}]
    report = await run(profile, _files(tmp_path, _series(every, value=value)))
    assert validate_report(report) == []
    verdicts = {r["id"]: r["verdict"] for r in report["results"] if r["level"] == "Q"}
    assert {cid for cid, v in verdicts.items() if v == "fail"} == failing, verdicts
    assert verdicts["Q-LAT-001"] == "not_applicable"  # freshness needs a live feed, not files
    l1 = {r["id"]: r["verdict"] for r in report["results"] if r["level"] == "L1"}
    assert l1["L1-ENT-003"] == "pass"  # a series of one id is not a duplicate
