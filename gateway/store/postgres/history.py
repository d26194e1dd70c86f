"""Attribute history on PostgreSQL: one row per written attribute instance, partitioned by month.

Rows are written in the entity write's transaction (history and current state never disagree),
into ``history``, range-partitioned on ``ts`` (the instance's ``observedAt``, else its write time)
with one partition per calendar month, created on first use. Old months are dropped or archived
with ordinary PostgreSQL tools (``DETACH PARTITION``), without a long DELETE. Aggregations
(``aggregatedValues``, §4.5.19) run in SQL over ``date_bin`` buckets.

The temporal API does not read this table yet (it answers 501 on this backend); the rows follow
the SQLite history's content (kind, numeric projection, value, instanceId, other members) so
that reads and ``migrate-data`` can use them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from gateway.model import VALUE_KEY, VALUE_MEMBERS
from gateway.store import codec

HistoryRow = tuple[str, str, Sequence[str], str, Mapping[str, Any]]
"""(tenant, entity id, entity types, attribute IRI, instance) as the writer collects them."""

PARTITION_LOCK: Final = 0x6A6F6E6374_02
"""Advisory lock key held while creating a month partition (two processes may need the same one)."""

_SKIP: Final = frozenset({"type", "observedAt", "createdAt", "modifiedAt", "datasetId", "instanceId", *VALUE_MEMBERS})

_INSERT: Final = """
INSERT INTO history(tenant, entity_id, attr, dataset_id, ts, observed_at, modified_at, kind, num, value,
                    instance_id, extra)
SELECT $1, r.entity_id, r.attr, r.dataset_id, coalesce(r.observed_at, r.modified_at)::timestamptz,
       r.observed_at::timestamptz, r.modified_at::timestamptz, r.kind, r.num, r.value::jsonb, r.instance_id,
       r.extra::jsonb
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::float8[], $9::text[],
            $10::text[], $11::text[])
     AS r(entity_id, attr, dataset_id, observed_at, modified_at, kind, num, value, instance_id, extra)
"""
_ENTITIES: Final = """
INSERT INTO history_entities(tenant, entity_id, types)
SELECT $1, u.entity_id, ARRAY(SELECT jsonb_array_elements_text(u.types::jsonb))
FROM unnest($2::text[], $3::text[]) AS u(entity_id, types)
ON CONFLICT (tenant, entity_id) DO UPDATE SET types = excluded.types WHERE history_entities.types <> excluded.types
"""


def month_of(moment: datetime) -> tuple[int, int]:
    """(year, month) of an aware datetime, in UTC."""
    utc = moment.astimezone(UTC)
    return utc.year, utc.month


def partition_sql(year: int, month: int) -> str:
    """The statement creating the partition of one month (idempotent)."""
    start = f"{year:04d}-{month:02d}-01"
    end = f"{year + month // 12:04d}-{month % 12 + 1:02d}-01"
    return (
        f"CREATE TABLE IF NOT EXISTS history_y{year:04d}m{month:02d} PARTITION OF history "
        f"FOR VALUES FROM ('{start}') TO ('{end}')"
    )


def _moment(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Recorder:
    """Appends history rows; remembers the month partitions that exist (per storage)."""

    def __init__(self) -> None:
        self.months: set[tuple[int, int]] = set()

    def committed(self, months: Iterable[tuple[int, int]]) -> None:
        """Remember partitions a committed transaction created (a rolled-back one dropped them)."""
        self.months.update(months)

    async def record(
        self, conn: Any, tenant: str, rows: Iterable[HistoryRow], now: str
    ) -> tuple[int, set[tuple[int, int]]]:
        """Insert the rows of one tenant's batch (inside the write transaction).

        Returns how many rows, and the month partitions it created: report them with
        :meth:`committed` once the transaction committed.
        """
        cols: list[list[Any]] = [[] for _ in range(10)]
        types: dict[str, str] = {}
        months: set[tuple[int, int]] = set()
        fallback = _moment(now)
        for _, entity_id, entity_types, attr, inst in rows:
            kind = str(inst.get("type", "Property"))
            value = inst.get(VALUE_KEY.get(kind, "value"))
            observed = inst.get("observedAt") if isinstance(inst.get("observedAt"), str) else None
            modified = inst.get("modifiedAt") if isinstance(inst.get("modifiedAt"), str) else now
            moment = _moment(observed) or _moment(modified) or fallback
            if moment is not None:
                months.add(month_of(moment))
            number = None
            if kind == "Property" and isinstance(value, int | float):
                number = float(value)
                if not math.isfinite(number):
                    number = None
            dataset = inst.get("datasetId")
            extra = {k: v for k, v in inst.items() if k not in _SKIP}
            instance_id = inst.get("instanceId")
            for col, item in zip(cols, (
                entity_id, attr, dataset if isinstance(dataset, str) else "", observed, modified, kind, number,
                codec.dumps(value), instance_id if isinstance(instance_id, str) else None,
                codec.dumps(extra) if extra else None,
            ), strict=True):
                col.append(item)
            types.setdefault(entity_id, codec.dumps(list(entity_types)))
        if not cols[0]:
            return 0, set()
        missing = months - self.months
        if missing:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            for year, month in sorted(missing):
                await conn.execute(partition_sql(year, month))
        await conn.execute(_ENTITIES, tenant, list(types), list(types.values()))
        await conn.execute(_INSERT, tenant, *cols)
        return len(cols[0]), missing


@dataclass(frozen=True, slots=True)
class Bucket:
    """One aggregation period of one series."""

    entity_id: str
    start: datetime
    count: int
    distinct: int
    total: float | None
    avg: float | None
    minimum: Any
    maximum: Any
    stddev: float | None
    sumsq: float | None


async def aggregate(
    conn: Any,
    tenant: str,
    entity_ids: Sequence[str],
    attr: str,
    start: datetime,
    end: datetime,
    period: timedelta,
) -> list[Bucket]:
    """Aggregate one attribute of some entities over [start, end) in fixed periods, in SQL (§4.5.19).

    The partitions outside the window are never read (the planner prunes on ``ts``).
    """
    rows = await conn.fetch(
        """
        SELECT entity_id, date_bin($5::interval, ts, $3::timestamptz) AS b, count(*), count(DISTINCT value),
               sum(num), avg(num), min(num), max(num), stddev_pop(num), sum(num * num)
        FROM history
        WHERE tenant = $1 AND entity_id = ANY($2::text[]) AND attr = $6 AND dataset_id = ''
          AND ts >= $3 AND ts < $4
        GROUP BY entity_id, b ORDER BY entity_id, b
        """,
        tenant,
        list(entity_ids),
        start,
        end,
        period,
        attr,
    )
    return [Bucket(r[0], r[1], int(r[2]), int(r[3]), r[4], r[5], r[6], r[7], r[8], r[9]) for r in rows]
