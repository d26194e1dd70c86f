"""aggregatedValues computed in PostgreSQL give the answers the SQLite history gives, on the same data.

Two stores run side by side (one on SQLite, one on a real PostgreSQL), receive the same temporal
writes, and answer the same matrix of aggregated reads: every aggrMethod, fixed, calendar and P0D
periods, aligned and unaligned windows, open-ended timerels, datasetIds, paging and counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")

from gateway.store.postgres import PostgresStorage  # noqa: E402  (after the skip: the backend imports asyncpg)
from gateway.store.records import AggregationQuery  # noqa: E402
from gateway.store.settings import StoreSettings  # noqa: E402
from tests.store.conftest import StoreServer  # noqa: E402

METER = "urn:ngsi-ld:Meter:"
VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
ORIGIN = datetime(2024, 1, 30, 22, 10, tzinfo=UTC)
"""The first reading: two days before a month's end, so that P1M periods meet a short February."""
STATES = ("on", "off", "idle", "éteint")
METHODS = "totalCount,distinctCount,sum,avg,min,max,stddev,sumsq"
COMPOSABLE = "totalCount,sum,avg,min,max,stddev,sumsq"
"""The methods a daily roll-up can answer (distinctCount cannot be summed over days)."""


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def meter(n: int, readings: int) -> dict[str, Any]:
    """A temporal entity: temperature every 5 h 17 min, a state string, a relationship, a second dataset."""
    temperature: list[dict[str, Any]] = []
    state: list[dict[str, Any]] = []
    feeds: list[dict[str, Any]] = []
    for i in range(readings):
        moment = stamp(ORIGIN + timedelta(minutes=317 * i + 13 * n))
        value = ((i * 7 + n * 3) % 41) / 2  # halves: sums are exact in both databases
        temperature.append({"type": "Property", "value": value, "observedAt": moment, "unitCode": "CEL"})
        if i % 3 == 0:
            temperature.append({"type": "Property", "value": value * 2, "observedAt": moment, "datasetId": "urn:x:raw"})
        state.append({"type": "Property", "value": STATES[(i + n) % len(STATES)], "observedAt": moment})
        if i % 5 == 0:
            feeds.append({"type": "Relationship", "object": f"urn:ngsi-ld:Line:{i % 3}", "observedAt": moment})
    return {"id": f"{METER}{n}", "type": "Meter", "temperature": temperature, "state": state, "feeds": feeds}


@pytest.fixture
async def stores(tmp_path: Path, postgres_url: str) -> AsyncIterator[tuple[StoreServer, StoreServer]]:
    """A SQLite store and a PostgreSQL store holding the same temporal entities."""
    settings = StoreSettings(data_dir=tmp_path / "sqlite")
    lite = StoreServer(settings)
    pg = StoreServer(replace(settings, data_dir=tmp_path / "pg", database=postgres_url))
    await lite.start()
    await pg.start()
    try:
        for n in range(1, 5):
            for srv in (lite, pg):
                reply = await srv.post("/temporal/entities", meter(n, 300 + 20 * n))
                assert reply.status == 201, reply.raw
        yield lite, pg
    finally:
        await pg.close()
        await lite.close()


WINDOWS: list[dict[str, str]] = [
    {"timerel": "between", "timeAt": "2024-01-01T00:00:00Z", "endTimeAt": "2025-01-01T00:00:00Z"},
    {"timerel": "between", "timeAt": "2024-01-31T07:07:00Z", "endTimeAt": "2024-03-15T13:00:00Z"},
    {"timerel": "after", "timeAt": "2024-02-10T00:00:00Z"},
    {"timerel": "before", "timeAt": "2024-02-20T05:00:00Z"},
    {},
]
PERIODS = ["P0D", "PT1H", "PT7M", "P1D", "P1W", "P1M", "P1Y", "P1MT12H"]


async def both(lite: StoreServer, pg: StoreServer, path: str, params: dict[str, str]) -> tuple[Any, Any]:
    """The same read on both stores: (status, headers that matter, body) of each."""
    out = []
    for srv in (lite, pg):
        reply = await srv.get(path, params=params)
        count = reply.headers.get("NGSILD-Results-Count")
        out.append((reply.status, count, reply.json))
    return out[0], out[1]


async def test_every_method_period_and_window_agrees(stores: tuple[StoreServer, StoreServer]) -> None:
    lite, pg = stores
    differences = []
    # without distinctCount the PostgreSQL store reads whole past days from its daily roll-up
    for methods in (METHODS, COMPOSABLE):
        for window in WINDOWS:
            for period in PERIODS:
                params = {
                    **window, "type": "Meter", "attrs": "temperature,state,feeds", "options": "aggregatedValues",
                    "aggrMethods": methods, "aggrPeriodDuration": period, "count": "true", "limit": "10",
                }
                a, b = await both(lite, pg, "/temporal/entities", params)
                assert a[0] == 200, (params, a)
                if a != b:
                    differences.append((methods, window, period, a, b))
    assert not differences, differences[0]


async def test_answers_have_the_expected_shape(stores: tuple[StoreServer, StoreServer]) -> None:
    """Not only alike: the PostgreSQL answer holds the buckets the data implies."""
    _, pg = stores
    params = {
        "timerel": "between", "timeAt": "2024-02-01T00:00:00Z", "endTimeAt": "2024-02-03T00:00:00Z",
        "attrs": "state,temperature", "options": "aggregatedValues", "aggrMethods": "totalCount,min,max,distinctCount",
        "aggrPeriodDuration": "P1D",
    }
    reply = await pg.get(f"{'/temporal/entities/'}{METER}1", params=params)
    assert reply.status == 200, reply.raw
    state = reply.json["state"]
    days = [row[1:] for row in state["totalCount"]]
    assert days == [["2024-02-01T00:00:00Z", "2024-02-02T00:00:00Z"], ["2024-02-02T00:00:00Z", "2024-02-03T00:00:00Z"]]
    low, high = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 2, 3, tzinfo=UTC)
    expected = sum(1 for i in range(320) if low <= ORIGIN + timedelta(minutes=317 * i + 13) < high)
    assert sum(row[0] for row in state["totalCount"]) == expected == 9
    assert {row[0] for row in state["min"]} <= set(STATES) and {row[0] for row in state["max"]} == {"éteint"}
    assert all(1 <= row[0] <= 4 for row in state["distinctCount"])
    # two datasets of temperature: the default one and urn:x:raw
    assert {item.get("datasetId") for item in reply.json["temperature"]} == {None, "urn:x:raw"}


async def test_paging_datasets_and_retrieval_agree(stores: tuple[StoreServer, StoreServer]) -> None:
    lite, pg = stores
    base = {"options": "aggregatedValues", "aggrMethods": METHODS, "aggrPeriodDuration": "P1W"}
    cases: list[tuple[str, dict[str, str]]] = [
        ("/temporal/entities", {**base, "type": "Meter", "limit": "2", "offset": "1", "count": "true",
                                "attrs": "temperature"}),
        ("/temporal/entities", {**base, "type": "Meter", "datasetId": "urn:x:raw", "attrs": "temperature"}),
        ("/temporal/entities", {**base, "type": "Meter", "datasetId": "@none", "attrs": "temperature",
                                "lastN": "3"}),
        ("/temporal/entities", {**base, "idPattern": ".*:[13]$", "attrs": "state", "pick": "id,state"}),
        ("/temporal/entities", {**base, "type": "Meter", "attrs": "temperature", "timerel": "after",
                                "timeAt": "2030-01-01T00:00:00Z"}),
        (f"/temporal/entities/{METER}2", {**base, "attrs": "temperature,feeds", "timerel": "between",
                                          "timeAt": "2024-02-01T00:00:00Z", "endTimeAt": "2024-04-01T00:00:00Z"}),
        (f"/temporal/entities/{METER}3", {**base, "aggrPeriodDuration": "P0D", "attrs": "state"}),
        (f"/temporal/entities/{METER}9", {**base, "attrs": "state"}),
        ("/temporal/entities", {**base, "type": "Meter", "aggrPeriodDuration": "PT1S", "attrs": "temperature"}),
    ]
    for path, params in cases:
        a, b = await both(lite, pg, path, params)
        assert a == b, (path, params, a, b)
    # the last case is refused alike (too many periods)
    assert a[0] == 403 and a[2]["type"] == "https://uri.etsi.org/ngsi-ld/errors/TooComplexQuery", a


async def test_storage_aggregates_without_loading_instances(postgres_url: str) -> None:
    """The protocol method hands back each series' span and its periods, not its instances."""
    storage = PostgresStorage(postgres_url)
    await storage.start()
    try:
        writes = storage.history_writes()
        rows = [
            ("t", f"{METER}1", [VOCAB + "Meter"], VOCAB + "level",
             {"type": "Property", "value": float(i), "observedAt": stamp(ORIGIN + timedelta(hours=i))})
            for i in range(48)
        ]
        assert await writes.write("t", f"{METER}1", [VOCAB + "Meter"], rows)
        start = int(ORIGIN.timestamp() * 1_000_000)
        found = await writes.aggregate(AggregationQuery(
            "t", None, None, [VOCAB + "level"], [""], False, "observed_at", start, start + 48 * 3_600_000_000,
            0, 86_400_000_000, ["avg", "totalCount"],
        ))
        assert len(found.slice.series) == 1 and len(found.slice.instances) == 2  # first and last only
        (sid, *_), = found.slice.series
        buckets = found.buckets[sid]
        assert [(b[2], b[5]) for b in buckets] == [(24, float(sum(range(24)))), (24, float(sum(range(24, 48))))]
        assert buckets[0][0] == start and buckets[1][1] == start + 2 * 86_400_000_000
    finally:
        await storage.close()


YEAR = {"timerel": "between", "timeAt": "2024-01-01T00:00:00Z", "endTimeAt": "2025-01-01T00:00:00Z"}


async def test_the_roll_up_is_read_and_every_write_outdates_its_day(
    stores: tuple[StoreServer, StoreServer], postgres_url: str
) -> None:
    lite, pg = stores
    path = f"/temporal/entities/{METER}1"
    params = {**YEAR, "attrs": "temperature,state", "options": "aggregatedValues", "aggrMethods": COMPOSABLE,
              "aggrPeriodDuration": "P1D"}
    a, b = await both(lite, pg, path, params)
    assert a == b and a[0] == 200
    db = await asyncpg.connect(postgres_url)
    try:
        assert await db.fetchval("SELECT count(*) FROM history_daily") > 0
        assert await db.fetchval("SELECT count(*) FROM history_daily_state WHERE built IS DISTINCT FROM version") == 0
        # a roll-up row altered by hand shows in the answer: the days are read from it
        await db.execute("UPDATE history_daily SET n = n + 1000 WHERE day = '2024-02-05'")
        _, tampered = await both(lite, pg, path, params)
        assert tampered != b
        # a write into that day makes it read from the history again (and rebuilt)
        late = {"temperature": {"type": "Property", "value": 7.5, "observedAt": "2024-02-05T12:00:00Z"}}
        for srv in (lite, pg):
            reply = await srv.post(f"{path}/attrs", late)
            assert reply.status == 204, reply.raw
        a, b = await both(lite, pg, path, params)
        assert a == b and a != (200, None, {})

        # deleting an instance, replacing one, deleting an attribute: each outdates its days
        window = {"timerel": "between", "timeAt": "2024-02-10T00:00:00Z", "endTimeAt": "2024-02-11T00:00:00Z"}
        for srv in (lite, pg):
            reply = await srv.get(path, params={**window, "attrs": "temperature"})
            first, second = reply.json["temperature"][:2]
            reply = await srv.delete(f"{path}/attrs/temperature/{first['instanceId']}")
            assert reply.status == 204, reply.raw
            patch = {"temperature": {"type": "Property", "value": 99.5, "observedAt": "2024-02-12T03:00:00Z"}}
            reply = await srv.patch(f"{path}/attrs/temperature/{second['instanceId']}", patch)
            assert reply.status == 204, reply.raw
        a, b = await both(lite, pg, path, params)
        assert a == b
        (default,) = [t for t in b[2]["temperature"] if "datasetId" not in t]
        assert [row[0] for row in default["max"] if row[1] == "2024-02-12T00:00:00Z"] == [99.5]
        for srv in (lite, pg):
            assert (await srv.delete(f"{path}/attrs/state")).status == 204
        a, b = await both(lite, pg, path, params)
        assert a == b and "state" not in b[2]
        # an ordinary entity update with a past observedAt goes through the store's batch writer
        for srv in (lite, pg):
            reply = await srv.patch(f"/entities/{METER}1/attrs", {
                "temperature": {"type": "Property", "value": 1000.0, "observedAt": "2024-03-01T08:00:00Z"}})
            assert reply.status == 204, reply.raw
        a, b = await both(lite, pg, path, params)
        assert a == b
        (default,) = [t for t in b[2]["temperature"] if "datasetId" not in t]
        assert max(row[0] for row in default["max"]) == 1000.0
        assert await db.fetchval("SELECT count(*) FROM history_daily_state WHERE built IS DISTINCT FROM version") == 0
    finally:
        await db.close()
