"""The daily roll-up of closed days is built ahead of the reads (PostgreSQL).

The process holding the notifier lock builds out-of-date past days in the background, a few at a
time; ``jonction store --build-rollups`` builds them all at once. Afterwards a long aggregation read
builds nothing itself, reads the roll-up, and answers what the raw history gives.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")

from gateway.cli import main as cli_main  # noqa: E402
from gateway.store.postgres import PostgresStorage  # noqa: E402  (after the skip: the backend imports asyncpg)
from gateway.store.postgres.history import aggregate_history  # noqa: E402
from gateway.store.records import AggregationQuery, ChangeEvent, HistoryAggregates  # noqa: E402

VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
METER = "urn:ngsi-ld:Meter:"
ORIGIN = datetime(2024, 1, 20, tzinfo=UTC)
DAYS = 45
"""Forty-five days from 20 January: across a month's end, so a build chunk never spans two months."""
DAY_US = 86_400_000_000


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


async def _write(storage: PostgresStorage, n: int, hours: Sequence[int], value: float | None = None) -> None:
    """Readings of one meter, at these hours after ORIGIN (halves: sums are exact)."""
    rows = [
        ("t", f"{METER}{n}", [VOCAB + "Meter"], VOCAB + "level", {
            "type": "Property", "value": value if value is not None else ((h * 7 + n) % 41) / 2,
            "observedAt": (ORIGIN + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
        for h in hours
    ]
    await storage.history_writes().write("t", f"{METER}{n}", [VOCAB + "Meter"], rows)


def _query(period_us: int = DAY_US) -> AggregationQuery:
    return AggregationQuery(
        "t", None, None, [VOCAB + "level"], [""], False, "observed_at",
        _us(ORIGIN), _us(ORIGIN) + DAYS * DAY_US, 0, period_us, ["totalCount", "sum", "avg", "min", "max", "stddev"],
    )


async def _raw(url: str, query: AggregationQuery) -> HistoryAggregates:
    """The answer computed from the history alone (while no day of the roll-up is up to date)."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            return await aggregate_history(conn, query)
    finally:
        await conn.close()


def _same(a: HistoryAggregates, b: HistoryAggregates) -> bool:
    """Equal series and periods (sums of squares may differ in the last bits by the order of addition)."""
    if (a.slice.series, a.slice.instances, a.buckets.keys()) != (b.slice.series, b.slice.instances, b.buckets.keys()):
        return False
    for sid, buckets in a.buckets.items():
        other = b.buckets[sid]
        if len(buckets) != len(other):
            return False
        for x, y in zip(buckets, other, strict=True):
            if x[:5] != y[:5] or x[7:] != y[7:] or x[5] != y[5] or not math.isclose(x[6], y[6], rel_tol=1e-12):
                return False
    return True


async def _stale(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM history_daily_state WHERE built IS DISTINCT FROM version AND day < current_date"
        ))
    finally:
        await conn.close()


async def _passes(storage: PostgresStorage, count: int) -> None:
    for _ in range(1200):  # up to 60 s on a loaded machine
        if storage.rollup_passes >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the roll-up builder made {storage.rollup_passes} passes, expected {count}")


async def _nothing(events: Sequence[ChangeEvent]) -> None:
    """A change listener (it makes the storage compete for the notifier lock)."""


async def test_the_notifying_process_builds_closed_days_before_anyone_reads_them(postgres_url: str) -> None:
    first = PostgresStorage(postgres_url)
    second = PostgresStorage(postgres_url)
    for storage in (first, second):
        storage.rollup_pause = 0.0
        storage.rollup_interval = 0.1
        storage.rollup_chunk_days = 4
        storage.takeover_interval = 0.2
    await first.start()
    await second.start()
    try:
        for n in range(1, 4):
            await _write(first, n, range(0, DAYS * 24, 5))
        assert await _stale(postgres_url) == DAYS  # every written day: built by nobody yet
        raw = await _raw(postgres_url, _query())
        raw_weekly = await _raw(postgres_url, _query(7 * DAY_US))
        assert sum(b[2] for buckets in raw.buckets.values() for b in buckets) == 3 * len(range(0, DAYS * 24, 5))

        first.add_listener(_nothing)
        await _passes(first, 1)
        second.add_listener(_nothing)  # it waits for the lock: it builds nothing
        await _passes(first, first.rollup_passes + 2)
        assert await _stale(postgres_url) == 0
        assert first.rollup_days_built == DAYS
        assert (second.rollup_passes, second.rollup_days_built) == (0, 0)

        writes = first.history_writes()
        answer = await writes.aggregate(_query())
        weekly = await writes.aggregate(_query(7 * DAY_US))
        assert first._history.built_on_read == 0  # the reads built nothing: the days were ready
        assert _same(answer, raw) and _same(weekly, raw_weekly)

        # the answer is read from the roll-up: a roll-up row changed by hand shows in it
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute("UPDATE history_daily SET n = n + 1000 WHERE day = '2024-02-05' AND entity_id = $1",
                               f"{METER}1")
            tampered = await writes.aggregate(_query())
            assert sum(b[2] for bs in tampered.buckets.values() for b in bs) == sum(
                b[2] for bs in raw.buckets.values() for b in bs) + 1000
        finally:
            await conn.close()

        # a late reading into a closed day outdates it; the builder's next pass builds it again
        await _write(first, 2, [24 * 16 + 3], value=99.5)  # 2024-02-05
        assert await _stale(postgres_url) == 1
        raw = await _raw(postgres_url, _query())
        await _passes(first, first.rollup_passes + 2)
        assert await _stale(postgres_url) == 0
        assert first.rollup_days_built == DAYS + 1
        answer = await writes.aggregate(_query())
        assert first._history.built_on_read == 0
        assert _same(answer, raw)
        assert max(b[8] for bs in answer.buckets.values() for b in bs) == 99.5

        # the notifier lock changes hands: so does the building
        await first.close()
        await _write(second, 3, [24 * 30 + 1])
        await _passes(second, 2)
        assert await _stale(postgres_url) == 0
        assert second.rollup_days_built == 1
    finally:
        await first.close()
        await second.close()


async def test_build_rollups_builds_an_imported_history_once(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = PostgresStorage(postgres_url)
    await storage.start()
    try:
        await _write(storage, 1, range(0, 10 * 24, 7))
    finally:
        await storage.close()
    assert await _stale(postgres_url) == 10
    assert await asyncio.to_thread(cli_main, ["store", "--database", postgres_url, "--build-rollups"]) == 0
    assert "10 roll-up days built" in capsys.readouterr().out
    assert await _stale(postgres_url) == 0
    assert await asyncio.to_thread(cli_main, ["store", "--database", postgres_url, "--build-rollups"]) == 0
    assert "0 roll-up days built" in capsys.readouterr().out


def test_build_rollups_needs_postgresql(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["store", "--data", str(tmp_path), "--build-rollups"]) != 0
    assert "--build-rollups needs a PostgreSQL database" in capsys.readouterr().err
