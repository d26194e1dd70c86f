"""Attribute history: recording, time filters, lastN, datasetId and aggregation over a year of readings."""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.store import history
from gateway.store.history import EntitySelector, Series, TimeFilter
from gateway.store.problems import NgsiError

V = "https://example.org/v/"
TEMP = V + "temperature"
STATE = V + "state"
START = datetime(2023, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)
READINGS = 365 * 96  # one year of 15-minute readings


def reading(entity: int, i: int) -> float:
    """A deterministic, non-trivial value: a daily wave, a slow trend and an entity offset."""
    return round(10 * entity + 5 * math.sin(2 * math.pi * (i % 96) / 96) + i / 10_000, 4)


def stamp(i: int) -> str:
    return (START + i * STEP).strftime("%Y-%m-%dT%H:%M:%SZ")


def year_rows(entity: int) -> Iterator[tuple[str, str, list[str], str, dict[str, Any]]]:
    eid = f"urn:ngsi-ld:Sensor:{entity}"
    for i in range(READINGS):
        yield ("", eid, [V + "Sensor"], TEMP, {
            "type": "Property", "value": reading(entity, i), "observedAt": stamp(i), "unitCode": "CEL",
            "modifiedAt": "2024-01-01T00:00:00Z", "createdAt": "2024-01-01T00:00:00Z",
        })


@pytest.fixture(scope="module")
def year_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sqlite3.Connection]:
    path: Path = tmp_path_factory.mktemp("history") / "store.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    history.ensure_schema(conn)
    conn.execute("BEGIN")
    for entity in (1, 2, 3):
        assert history.record_many(conn, year_rows(entity)) == READINGS
    # a second, non-numeric attribute with a datasetId on entity 1, and another type
    for i in range(10):
        history.record(conn, "", "urn:ngsi-ld:Sensor:1", [V + "Sensor"], STATE, {
            "type": "Property", "value": "on" if i % 3 else "off", "observedAt": stamp(i * 4),
            "datasetId": "urn:ngsi-ld:Dataset:relay", "modifiedAt": stamp(i * 4),
        })
    history.record(conn, "", "urn:ngsi-ld:Building:9", [V + "Building", V + "Site"], V + "name",
                   {"type": "Property", "value": "Mairie", "modifiedAt": "2024-02-01T00:00:00Z"})
    history.record(conn, "commune-b", "urn:ngsi-ld:Sensor:1", V + "Sensor", TEMP,
                   {"type": "Property", "value": 99, "observedAt": "2023-06-01T00:00:00Z"})
    conn.execute("COMMIT")
    yield conn
    conn.close()


def temp_series(conn: sqlite3.Connection, entity: int, tenant: str = "") -> Series:
    sel = EntitySelector(tenant, attrs=[TEMP])
    (found,) = history.series_of(conn, sel, [f"urn:ngsi-ld:Sensor:{entity}"])
    return found


def test_instances_between_are_the_readings_of_that_window(year_db: sqlite3.Connection) -> None:
    tf = history.time_filter("between", "2023-03-01T00:00:00Z", "2023-03-02T00:00:00Z")
    got = history.instances(year_db, temp_series(year_db, 2), tf)
    first = (datetime(2023, 3, 1, tzinfo=UTC) - START) // STEP
    assert len(got) == 96
    assert [g.value for g in got] == [reading(2, i) for i in range(first, first + 96)]
    assert history.from_micros(got[0].observed_at or 0) == "2023-03-01T00:00:00Z"
    instance = got[0].expanded()
    assert instance["unitCode"] == "CEL" and instance["type"] == "Property"
    assert instance["instanceId"].startswith(history.INSTANCE_PREFIX)
    assert "createdAt" not in instance and "createdAt" in got[0].expanded(sys_attrs=True)


def test_before_and_after_split_the_year(year_db: sqlite3.Connection) -> None:
    series = temp_series(year_db, 1)
    middle = "2023-07-01T00:00:00Z"
    before = history.instances(year_db, series, history.time_filter("before", middle, None))
    after = history.instances(year_db, series, history.time_filter("after", middle, None))
    assert len(before) + len(after) == READINGS
    assert history.from_micros(before[-1].observed_at or 0) == "2023-06-30T23:45:00Z"
    assert history.from_micros(after[0].observed_at or 0) == middle


def test_last_n_returns_the_latest_in_time_order(year_db: sqlite3.Connection) -> None:
    got = history.instances(year_db, temp_series(year_db, 3), TimeFilter(), last_n=3)
    assert [g.value for g in got] == [reading(3, i) for i in range(READINGS - 3, READINGS)]
    bounded = history.instances(
        year_db, temp_series(year_db, 3), history.time_filter("before", "2023-01-02T00:00:00Z", None), last_n=2
    )
    assert [g.value for g in bounded] == [reading(3, 94), reading(3, 95)]


def test_timeproperty_modified_at(year_db: sqlite3.Connection) -> None:
    sel = EntitySelector("", attrs=[STATE])
    (state,) = history.series_of(year_db, sel, ["urn:ngsi-ld:Sensor:1"])
    assert state.dataset_id == "urn:ngsi-ld:Dataset:relay"
    tf = history.time_filter("after", stamp(20), None, "modifiedAt")
    assert [history.from_micros(g.modified_at) for g in history.instances(year_db, state, tf)] == [
        stamp(i * 4) for i in range(5, 10)
    ]


def test_dataset_selection(year_db: sqlite3.Connection) -> None:
    ids = ["urn:ngsi-ld:Sensor:1"]
    assert {s.attr for s in history.series_of(year_db, EntitySelector("", dataset_ids=["@none"]), ids)} == {TEMP}
    relay = EntitySelector("", dataset_ids=["urn:ngsi-ld:Dataset:relay"])
    assert {s.attr for s in history.series_of(year_db, relay, ids)} == {STATE}


def test_find_entities_by_type_pattern_attrs_and_tenant(year_db: sqlite3.Connection) -> None:
    def only(name: str) -> Any:
        return lambda types: V + name in types

    everything = history.find_entities(year_db, EntitySelector(""))
    assert [e for e, _ in everything] == [
        "urn:ngsi-ld:Building:9", "urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:2", "urn:ngsi-ld:Sensor:3"
    ]
    assert dict(everything)["urn:ngsi-ld:Building:9"] == [V + "Building", V + "Site"]
    sensors = history.find_entities(year_db, EntitySelector("", type_match=only("Sensor")))
    assert len(sensors) == 3
    assert [e for e, _ in history.find_entities(year_db, EntitySelector("", id_pattern=r".*:[23]"))] == [
        "urn:ngsi-ld:Sensor:2", "urn:ngsi-ld:Sensor:3"
    ]
    assert [e for e, _ in history.find_entities(year_db, EntitySelector("", attrs=[STATE]))] == [
        "urn:ngsi-ld:Sensor:1"
    ]
    assert [e for e, _ in history.find_entities(year_db, EntitySelector("commune-b"))] == ["urn:ngsi-ld:Sensor:1"]
    assert history.entity_types(year_db, "", "urn:ngsi-ld:Nope") is None


def expected_buckets(entity: int, key: Any) -> dict[Any, list[float]]:
    out: dict[Any, list[float]] = defaultdict(list)
    for i in range(READINGS):
        out[key(START + i * STEP)].append(reading(entity, i))
    return out


def test_daily_aggregation_matches_python(year_db: sqlite3.Connection) -> None:
    buckets = history.aggregate(year_db, temp_series(year_db, 2), TimeFilter(), history.parse_duration("P1D"))
    expected = expected_buckets(2, lambda t: t.date())
    assert len(buckets) == 365
    for bucket in buckets:
        values = expected[datetime.fromisoformat(history.from_micros(bucket.start)).date()]
        assert bucket.end - bucket.start == 86_400_000_000
        assert bucket.result("totalCount") == len(values) == 96
        assert bucket.result("min") == min(values) and bucket.result("max") == max(values)
        assert bucket.result("sum") == pytest.approx(sum(values))
        assert bucket.result("avg") == pytest.approx(statistics.fmean(values))
        assert bucket.result("sumsq") == pytest.approx(sum(v * v for v in values))
        assert bucket.result("stddev") == pytest.approx(statistics.pstdev(values), abs=1e-6)
        assert bucket.result("distinctCount") == len(set(values))


def test_monthly_aggregation_uses_calendar_months(year_db: sqlite3.Connection) -> None:
    tf = history.time_filter("between", "2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z")
    buckets = history.aggregate(year_db, temp_series(year_db, 1), tf, history.parse_duration("P1M"))
    expected = expected_buckets(1, lambda t: t.month)
    assert [history.from_micros(b.start)[:10] for b in buckets] == [f"2023-{m:02d}-01" for m in range(1, 13)]
    assert history.from_micros(buckets[1].end) == "2023-03-01T00:00:00Z"
    for month, bucket in enumerate(buckets, start=1):
        assert bucket.result("totalCount") == len(expected[month])
        assert bucket.result("avg") == pytest.approx(statistics.fmean(expected[month]))
        assert bucket.result("max") == max(expected[month])


def test_whole_range_aggregation_and_hourly_window(year_db: sqlite3.Connection) -> None:
    (whole,) = history.aggregate(year_db, temp_series(year_db, 3), TimeFilter(), history.parse_duration("P0D"))
    values = [reading(3, i) for i in range(READINGS)]
    assert whole.result("totalCount") == READINGS
    assert whole.result("avg") == pytest.approx(statistics.fmean(values))
    tf = history.time_filter("between", "2023-05-05T10:00:00Z", "2023-05-05T13:00:00Z")
    hourly = history.aggregate(year_db, temp_series(year_db, 3), tf, history.parse_duration("PT1H"))
    assert [history.from_micros(b.start) for b in hourly] == [
        "2023-05-05T10:00:00Z", "2023-05-05T11:00:00Z", "2023-05-05T12:00:00Z"
    ]
    assert all(b.result("totalCount") == 4 for b in hourly)


def test_string_series_aggregation(year_db: sqlite3.Connection) -> None:
    (state,) = history.series_of(year_db, EntitySelector("", attrs=[STATE]), ["urn:ngsi-ld:Sensor:1"])
    for period in ("P0D", "P1Y"):
        (bucket,) = history.aggregate(year_db, state, TimeFilter(), history.parse_duration(period))
        assert bucket.result("totalCount") == 10
        assert bucket.result("distinctCount") == 2
        assert (bucket.result("min"), bucket.result("max")) == ("off", "on")
        assert bucket.result("avg") is None and bucket.result("sum") is None


@pytest.mark.parametrize(
    ("text", "months", "seconds"),
    [("PT1H", 0, 3600), ("P1D", 0, 86400), ("P1W", 0, 7 * 86400), ("PT15M", 0, 900), ("PT0.5S", 0, 0.5),
     ("P1M", 1, 0), ("P1Y", 12, 0), ("P1Y2M3DT4H", 14, 3 * 86400 + 4 * 3600), ("P0D", 0, 0)],
)
def test_parse_duration(text: str, months: int, seconds: float) -> None:
    duration = history.parse_duration(text)
    assert duration.months == months and duration.micros == round(seconds * 1_000_000)


@pytest.mark.parametrize("bad", ["", "P", "PT", "1H", "PT1", "P1H", "PT1D", "P1DT"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(NgsiError) as caught:
        history.parse_duration(bad)
    assert caught.value.type == "BadRequestData"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("between", "2023-01-01T00:00:00Z", None), "needs endTimeAt"),
        (("before", None, None), "needs timeAt"),
        (("sometime", "2023-01-01T00:00:00Z", None), "timerel"),
        (("after", "yesterday", None), "timeAt"),
        (("after", "2023-01-01T00:00:00", None), "time zone"),
        (("between", "2023-01-02T00:00:00Z", "2023-01-01T00:00:00Z"), "later than"),
        ((None, "2023-01-01T00:00:00Z", None), "without timerel"),
    ],
)
def test_time_filter_errors(args: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(NgsiError) as caught:
        history.time_filter(*args)
    assert caught.value.type == "BadRequestData" and fragment in caught.value.detail


def test_time_filter_rejects_unknown_timeproperty() -> None:
    with pytest.raises(NgsiError):
        history.time_filter(None, None, None, "deletedAt!")


def test_methods_validation() -> None:
    assert history.parse_methods("avg,max,avg") == ["avg", "max"]
    with pytest.raises(NgsiError):
        history.parse_methods("median")
    with pytest.raises(NgsiError):
        history.parse_methods(None)


def test_delete_entity_and_attribute(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "h.sqlite", isolation_level=None)
    history.ensure_schema(conn)
    history.record_many(conn, list(year_rows(1))[:10])
    history.record(conn, "", "urn:ngsi-ld:Sensor:1", V + "Sensor", STATE, {"type": "Property", "value": "on"})
    assert history.delete_attribute(conn, "", "urn:ngsi-ld:Sensor:1", STATE)
    assert not history.delete_attribute(conn, "", "urn:ngsi-ld:Sensor:1", STATE)
    assert history.delete_entity(conn, "", "urn:ngsi-ld:Sensor:1")
    assert conn.execute("SELECT COUNT(*) FROM history_instances").fetchone()[0] == 0
    assert not history.delete_entity(conn, "", "urn:ngsi-ld:Sensor:1")


def test_times_round_trip() -> None:
    for text in ("2023-01-01T00:00:00Z", "2023-01-01T00:00:00.250Z", "1999-12-31T23:59:59.000001Z"):
        assert history.from_micros(history.to_micros(text)) == text
    assert history.from_micros(history.to_micros("2023-01-01T01:00:00+01:00")) == "2023-01-01T00:00:00Z"


def test_aggregation_of_only_the_methods_asked(year_db: sqlite3.Connection) -> None:
    period = history.parse_duration("P1M")
    (january, *_) = history.aggregate(year_db, temp_series(year_db, 1), TimeFilter(), period, methods=["totalCount"])
    assert january.result("totalCount") == 31 * 96
    assert january.result("min") is None and january.result("distinctCount") == 0
    (full, *_) = history.aggregate(year_db, temp_series(year_db, 1), TimeFilter(), period, methods=["min", "avg"])
    assert full.result("min") == min(reading(1, i) for i in range(31 * 96))


def test_prune_by_write_time(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "p.sqlite", isolation_level=None)
    history.ensure_schema(conn)
    for day in (1, 2, 3):
        stamp = f"2024-01-0{day}T00:00:00Z"
        for tenant in ("", "commune-b"):
            history.record(conn, tenant, "urn:ngsi-ld:Sensor:1", V + "Sensor", TEMP,
                           {"type": "Property", "value": day, "modifiedAt": stamp, "createdAt": stamp})
    cutoff = history.to_micros("2024-01-02T00:00:00Z")
    assert history.prune(conn, cutoff, tenant="commune-b", batch=1) == 1
    assert history.prune(conn, cutoff) == 1
    left = conn.execute("SELECT COUNT(*) FROM history_instances").fetchone()[0]
    assert left == 4


def _series_rows(conn: sqlite3.Connection) -> dict[tuple[str, str, str, str], int]:
    return {
        (t, e, a, d): sid
        for sid, t, e, a, d in conn.execute(
            "SELECT series_id, tenant, entity_id, attr, dataset_id FROM history_series"
        )
    }


def test_series_resolved_per_batch_across_tenants_datasets_and_deletions(tmp_path: Path) -> None:
    """One batch mixes known and new series over two tenants; every instance lands in its own series."""
    conn = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
    history.ensure_schema(conn)
    inst = {"type": "Property", "value": 1, "modifiedAt": "2024-01-01T00:00:00Z"}
    conn.execute("BEGIN")
    history.record_many(conn, [("", "urn:a", [V + "T"], TEMP, inst), ("t2", "urn:a", [V + "T"], TEMP, inst)])
    conn.execute("COMMIT")
    before = _series_rows(conn)
    assert len(before) == 2
    batch = [
        ("", "urn:a", [V + "T"], TEMP, {**inst, "value": 2}),  # known series
        ("", "urn:a", [V + "T"], TEMP, {**inst, "value": 3, "datasetId": "urn:ds:1"}),  # new: other datasetId
        ("t2", "urn:a", [V + "T"], STATE, {**inst, "value": "on"}),  # new attribute, other tenant
        ("t2", "urn:b", [V + "T"], TEMP, {**inst, "value": 4}),  # new entity
        ("t2", "urn:a", [V + "T"], TEMP, {**inst, "value": 5}),  # known series of the other tenant
    ]
    conn.execute("BEGIN")
    assert history.record_many(conn, batch) == 5
    conn.execute("COMMIT")
    after = _series_rows(conn)
    assert len(after) == 5 and len(set(after.values())) == 5
    assert all(after[key] == sid for key, sid in before.items())  # known series kept their id
    values = {
        key: [json.loads(v) for (v,) in conn.execute(
            "SELECT value FROM history_instances WHERE series_id=? ORDER BY rowid", (sid,)
        )]
        for key, sid in after.items()
    }
    assert values[("", "urn:a", TEMP, "")] == [1, 2]
    assert values[("", "urn:a", TEMP, "urn:ds:1")] == [3]
    assert values[("t2", "urn:a", STATE, "")] == ["on"]
    assert values[("t2", "urn:b", TEMP, "")] == [4]
    assert values[("t2", "urn:a", TEMP, "")] == [1, 5]
    # a rolled-back batch leaves no series behind; after a deletion, writing again starts a new series
    conn.execute("BEGIN")
    history.record_many(conn, [("", "urn:c", [V + "T"], TEMP, inst)])
    conn.execute("ROLLBACK")
    assert ("", "urn:c", TEMP, "") not in _series_rows(conn)
    conn.execute("BEGIN")
    assert history.delete_entity(conn, "t2", "urn:b")
    history.record_many(conn, [("t2", "urn:b", [V + "T"], TEMP, {**inst, "value": 6})])
    conn.execute("COMMIT")
    sid = _series_rows(conn)[("t2", "urn:b", TEMP, "")]
    rows = conn.execute("SELECT value FROM history_instances WHERE series_id=?", (sid,)).fetchall()
    assert [json.loads(v) for (v,) in rows] == [6]
    conn.close()
