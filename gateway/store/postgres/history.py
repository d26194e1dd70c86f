"""Attribute history on PostgreSQL: one row per written attribute instance, partitioned by month.

Rows are written in the entity write's transaction (history and current state never disagree),
into ``history``, range-partitioned on ``ts`` (the instance's ``observedAt``, else its write time)
with one partition per calendar month, created on first use. Old months are dropped or archived
with ordinary PostgreSQL tools (``DETACH PARTITION``), without a long DELETE. Aggregations
(``aggregatedValues``, §4.5.19) run in SQL (:func:`aggregate_history`, the SQLite history's period
rules), whole past days read from a daily roll-up (``history_daily``) kept valid by a per-day
version every writer bumps in its transaction (:func:`refresh_rollup` rebuilds the days it lost,
at the read, or ahead of it: :func:`build_stale_days`, run in the background by the notifying
process and once by ``jonction store --build-rollups``).

The rows follow the SQLite history's content (kind, numeric projection, value, instanceId, other
members): the temporal API reads a slice of them (:func:`history_slice`) with the same code as the
SQLite history, and writes them through :class:`PostgresHistoryWrites`.
"""

from __future__ import annotations

import bisect
import calendar
import math
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from gateway.model import VALUE_KEY, VALUE_MEMBERS
from gateway.store import codec
from gateway.store.problems import NgsiError
from gateway.store.records import AggregateBucket, AggregationQuery, HistoryAggregates, HistorySlice

HistoryRow = tuple[str, str, Sequence[str], str, Mapping[str, Any]]
"""(tenant, entity id, entity types, attribute IRI, instance) as the writer collects them."""

PARTITION_LOCK: Final = 0x6A6F6E6374_02
"""Advisory lock key held while creating a month partition (two processes may need the same one)."""

_SKIP: Final = frozenset({"type", "observedAt", "createdAt", "modifiedAt", "datasetId", "instanceId", *VALUE_MEMBERS})

_COLUMNS: Final = (
    "tenant", "entity_id", "attr", "dataset_id", "ts", "observed_at", "created_at", "modified_at", "kind", "num",
    "value", "instance_id", "extra",
)
_BUMP: Final = """
INSERT INTO history_daily_state AS s (tenant, day, version) SELECT $1, unnest($2::date[]), 1
ON CONFLICT (tenant, day) DO UPDATE SET version = s.version + 1
"""
_BUILD: Final = """
INSERT INTO pg_temp.jonction_daily_build
SELECT $1, entity_id, attr, dataset_id, (observed_at AT TIME ZONE 'UTC')::date, count(*), count(num), sum(num),
       sum(num * num), min(num), max(num),
       min(value::text COLLATE "C") FILTER (WHERE num IS NULL AND jsonb_typeof(value) = 'string'),
       max(value::text COLLATE "C") FILTER (WHERE num IS NULL AND jsonb_typeof(value) = 'string'),
       min(observed_at), max(observed_at)
FROM history
WHERE tenant = $1 AND ts >= $2 AND ts < $3 AND observed_at >= $2 AND observed_at < $3
  AND NOT starts_with(dataset_id, chr(31))
GROUP BY 2, 3, 4, 5
"""
TENANT_LOCK: Final = "jonction.tenant:"
"""Prefix of the per-tenant transaction advisory lock (hashed) every history writer holds."""
_ENTITIES: Final = """
INSERT INTO history_entities(tenant, entity_id, types)
SELECT $1, u.entity_id, u.types::text[]
FROM unnest($2::text[], $3::text[]) AS u(entity_id, types)
WHERE (SELECT h.types FROM history_entities h WHERE h.tenant = $1 AND h.entity_id = u.entity_id)
      IS DISTINCT FROM u.types::text[]
ON CONFLICT (tenant, entity_id) DO UPDATE SET types = excluded.types WHERE history_entities.types <> excluded.types
"""
"""The entities of a batch with their types. Rows already right are filtered out first: even when its WHERE
is false, ON CONFLICT DO UPDATE locks, so writes, the existing row, and every telemetry batch names again
every entity it touched (about 7 us per entity; every writer of history holds the tenant's lock). A scalar
subquery, not NOT EXISTS: that one is planned as an anti-join reading the whole table at every batch."""


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


def array_literal(items: Iterable[str]) -> str:
    """A PostgreSQL text[] literal, every element quoted: cheaper to cast than a JSON array to unpack."""
    return "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "}"


def instance_row(inst: Mapping[str, Any], now: str) -> tuple[Any, ...]:
    """(datasetId, observedAt, modifiedAt, kind, number, JSON value, instanceId, JSON extra) of an instance."""
    kind = str(inst.get("type", "Property"))
    value = inst.get(VALUE_KEY.get(kind, "value"))
    observed = inst.get("observedAt") if isinstance(inst.get("observedAt"), str) else None
    modified = inst.get("modifiedAt") if isinstance(inst.get("modifiedAt"), str) else now
    number = None
    if kind == "Property" and isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number):
            number = None
    dataset = inst.get("datasetId")
    extra = {k: v for k, v in inst.items() if k not in _SKIP}
    instance_id = inst.get("instanceId")
    return (
        dataset if isinstance(dataset, str) else "", observed, modified, kind, number, codec.dumps(value),
        instance_id if isinstance(instance_id, str) else None, codec.dumps(extra) if extra else None,
    )


class Recorder:
    """Appends history rows; remembers the month partitions that exist (per storage)."""

    def __init__(self) -> None:
        self.months: set[tuple[int, int]] = set()
        self.built_on_read = 0
        """Roll-up days an aggregation read had to build itself (none once the builder keeps up)."""

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
        batch = HistoryBatch(tenant, now)
        batch.add(rows)
        return await self.write(conn, batch)

    async def write(self, conn: Any, batch: HistoryBatch) -> tuple[int, set[tuple[int, int]]]:
        """Insert the rows of a prepared batch (inside the write transaction); as :meth:`record`."""
        records = batch.records
        if not records:
            return 0, set()
        tenant = batch.tenant
        missing = batch.months - self.months
        if missing:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            for year, month in sorted(missing):
                await conn.execute(partition_sql(year, month))
        types = batch.types
        await conn.execute(_ENTITIES, tenant, list(types), list(types.values()))
        # binary COPY: no per-row casts, JSON parsed once, ids made here (no gen_random_uuid per row)
        await conn.copy_records_to_table("history", records=records, columns=_COLUMNS)
        if batch.days:
            await conn.execute(_BUMP, tenant, sorted(batch.days))  # those days of the roll-up are out of date
        return len(records), missing


class HistoryBatch:
    """The COPY records of one tenant's batch, prepared in parts (a writer prepares one while the database
    runs the previous statement), then written by :meth:`Recorder.write`."""

    def __init__(self, tenant: str, now: str) -> None:
        self.tenant = tenant
        self.now = now
        self.records: list[tuple[Any, ...]] = []
        self.types: dict[str, str] = {}
        self.months: set[tuple[int, int]] = set()
        self.days: set[date] = set()
        # A batch repeats its timestamps (one write time, shared observedAt): parse each text once,
        # and file its month (and, for an observedAt, its day) once.
        # (two caches: an observedAt text also marks its day of the roll-up, a modifiedAt text does not)
        self._moments: dict[str, tuple[datetime | None, tuple[int, int] | None]] = {}
        self._observed: dict[str, tuple[datetime | None, tuple[int, int] | None]] = {}
        self._fallback = _moment(now)
        # one random UUID per batch, its last 48 bits counting: unique, and no urandom call per row
        self._prefix = "urn:ngsi-ld:Instance:" + str(uuid.uuid4())[:24]
        self._serial = random.getrandbits(40)

    def add(self, rows: Iterable[HistoryRow]) -> None:
        """Prepare the COPY records of some rows (appended to the batch's)."""
        tenant = self.tenant
        now = self.now
        records = self.records
        types = self.types
        months = self.months
        days = self.days
        moments = self._moments
        observed_moments = self._observed
        fallback = self._fallback
        prefix = self._prefix
        serial = self._serial
        dumps = codec.dumps
        append = records.append
        # the fields of instance_row, inlined: three rows per entity make the call and tuple count
        for _, entity_id, entity_types, attr, inst in rows:
            get = inst.get
            kind = get("type", "Property")
            if type(kind) is not str:
                kind = str(kind)
            value = get(VALUE_KEY.get(kind, "value"))
            observed_text = get("observedAt")
            modified_text = get("modifiedAt")
            if not isinstance(modified_text, str):
                modified_text = now
            number = None
            if kind == "Property" and isinstance(value, int | float):
                number = float(value)
                if not math.isfinite(number):
                    number = None
            dataset = get("datasetId")
            instance_id = get("instanceId")
            extra = {k: v for k, v in inst.items() if k not in _SKIP}
            observed: datetime | None = None
            observed_month: tuple[int, int] | None = None
            if isinstance(observed_text, str):
                known = observed_moments.get(observed_text)
                if known is None:
                    parsed = _moment(observed_text)
                    if parsed is not None:
                        days.add(parsed.astimezone(UTC).date())
                    known = observed_moments[observed_text] = (parsed, None if parsed is None else month_of(parsed))
                observed, observed_month = known
            known = moments.get(modified_text)
            if known is None:
                parsed = _moment(modified_text)
                known = moments[modified_text] = (parsed, None if parsed is None else month_of(parsed))
            modified, modified_month = known
            if observed is not None and observed_month is not None:
                moment, bucket = observed, observed_month
            elif modified is not None and modified_month is not None:
                moment, bucket = modified, modified_month
            elif fallback is not None:
                moment, bucket = fallback, month_of(fallback)
            else:
                raise NgsiError("InternalError", f"no time to file the history of {entity_id} {attr} under")
            months.add(bucket)
            written = modified or fallback
            append((
                tenant, entity_id, attr, dataset if isinstance(dataset, str) else "", moment, observed,
                written, written, kind, number, dumps(value),
                instance_id if isinstance(instance_id, str) and instance_id
                else f"{prefix}{serial + len(records):012x}",
                dumps(extra) if extra else None,
            ))
            if entity_id not in types:
                types[entity_id] = array_literal(entity_types)


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
    *,
    distinct: bool = False,
) -> list[Bucket]:
    """Aggregate one attribute of some entities over [start, end) in fixed periods, in SQL (§4.5.19).

    The partitions outside the window are never read (the planner prunes on ``ts``); ``distinct``
    adds distinctCount, which sorts every value and is the costly one.
    """
    distinct_sql = "count(DISTINCT value)" if distinct else "0"
    rows = await conn.fetch(
        f"""
        SELECT entity_id, date_bin($5::interval, ts, $3::timestamptz) AS b, count(*), {distinct_sql},
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


MAX_SLICE_ROWS: Final = 1_000_000
"""Most history rows one temporal read may gather (beyond: TooComplexQuery, narrow the window)."""


def micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _moment_of(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


async def history_slice(
    conn: Any, tenant: str, entity_ids: Sequence[str] | None, start: int | None, end: int | None,
    types: Sequence[str] | None = None,
) -> HistorySlice:
    """The rows of some entities' history in the SQLite history tables' shape (see HistorySlice)."""
    where = ["tenant = $1"]
    args: list[Any] = [tenant]
    if entity_ids is not None:
        args.append(list(entity_ids))
        where.append(f"entity_id = ANY(${len(args)}::text[])")
    if types is not None:
        args.append(list(types))
        where.append(
            f"entity_id IN (SELECT entity_id FROM history_entities WHERE tenant = $1 AND types && ${len(args)})"
        )
    out = HistorySlice()
    for entity_id, known in await conn.fetch(
        f"SELECT entity_id, types FROM history_entities WHERE {' AND '.join(where)}", *args
    ):
        out.entities.append((tenant, entity_id, codec.dumps(list(known))))
    if start is not None:
        args.append(_moment_of(start))
        where.append(f"ts >= ${len(args)}")
    if end is not None:
        args.append(_moment_of(end))
        where.append(f"ts < ${len(args)}")
    rows = await conn.fetch(
        "SELECT entity_id, attr, dataset_id, observed_at, created_at, modified_at, kind, num, value::text, "
        f"instance_id, extra::text FROM history WHERE {' AND '.join(where)} ORDER BY entity_id, attr, dataset_id, ts "
        f"LIMIT {MAX_SLICE_ROWS + 1}",
        *args,
    )
    if len(rows) > MAX_SLICE_ROWS:
        raise NgsiError("TooComplexQuery", f"more than {MAX_SLICE_ROWS} history instances: narrow the time window")
    series: dict[tuple[str, str, str], int] = {}
    for entity_id, attr, dataset, observed, created, modified, kind, num, value, instance_id, extra in rows:
        key = (entity_id, attr, dataset)
        sid = series.get(key)
        if sid is None:
            sid = series[key] = len(series) + 1
            out.series.append((sid, tenant, entity_id, attr, dataset))
        out.instances.append((
            sid, None if observed is None else micros(observed), micros(created), micros(modified), kind, num, value,
            instance_id, extra,
        ))
    return out


MAX_PERIODS: Final = 100_000
"""Most aggregation periods per series (the temporal API refuses more with TooComplexQuery)."""
DAY: Final = 86_400_000_000
"""One day in µs: the grain of the roll-up."""
MAX_ROLLUP_DAYS: Final = 40_000
MAX_RUNS: Final = 64
"""Beyond this many separate runs of roll-up days (dirty days in between), the raw history is read."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = "(extract(epoch FROM {}) * 1000000)::bigint"
"""A timestamptz as µs since the epoch, computed once per period rather than in Python."""


def _month_bounds(start: int, stop: int, months: int, extra: int) -> list[int]:
    """Period starts from ``start`` by a calendar period until one reaches ``stop`` (µs).

    Each start adds the period to the previous one, clamping the day to the month's length, as the
    SQLite history does (Jan 31 + P1M is Feb 28, then Mar 28...).
    """
    bounds = [start]
    while bounds[-1] < stop and len(bounds) <= MAX_PERIODS:
        moment = _moment_of(bounds[-1])
        index = moment.year * 12 + moment.month - 1 + months
        year, month = divmod(index, 12)
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        bounds.append(micros(moment.replace(year=year, month=month + 1, day=day)) + extra)
    return bounds


@dataclass(slots=True)
class _Series:
    """One series being aggregated: its period grid and what the buckets found."""

    key: tuple[str, str, str]
    origin: int
    stop: int
    bounds: list[int] | None = None
    """Period starts of a calendar period (None: fixed periods of ``step``)."""
    step: int = 0
    first: int | None = None
    last: int | None = None
    buckets: list[AggregateBucket] = field(default_factory=list)


async def aggregate_history(conn: Any, query: AggregationQuery) -> HistoryAggregates:
    """``aggregatedValues`` computed in SQL, one GROUP BY over the window (§4.5.19).

    The periods follow the SQLite history's rules (see :class:`AggregationQuery`). When they start
    at a common moment (``timeAt`` given) one statement groups every series; otherwise a first
    statement finds each series' span, and the second joins each series to its own grid. Strings
    order by their JSON text in byte order and numbers by value, as in SQLite.
    """
    tenant = query.tenant
    where = ["h.tenant = $1"]
    args: list[Any] = [tenant]
    times: list[str] = []

    def arg(value: Any, cast: str = "") -> str:
        args.append(value)
        return f"${len(args)}{cast}"

    entity_where = ["tenant = $1"]
    if query.entity_ids is not None:
        ref = arg(list(query.entity_ids), "::text[]")
        where.append(f"h.entity_id = ANY({ref})")
        entity_where.append(f"entity_id = ANY({ref})")
    if query.types is not None:
        ref = arg(list(query.types), "::text[]")
        cond = f"entity_id IN (SELECT entity_id FROM history_entities WHERE tenant = $1 AND types && {ref})"
        where.append("h." + cond)
        entity_where.append(cond)
    if query.attrs is not None:
        where.append(f"h.attr = ANY({arg(list(query.attrs), '::text[]')})")
    if query.dataset_ids is not None:
        where.append(f"h.dataset_id = ANY({arg(list(query.dataset_ids), '::text[]')})")
    else:
        where.append(("" if query.deletions else "NOT ") + "starts_with(h.dataset_id, chr(31))")
    bounded = query.start is not None or query.end is not None
    if query.column == "observed_at":
        # the SQLite history orders unbounded reads by observedAt, else by the time of writing
        moment = "h.observed_at" if bounded else "coalesce(h.observed_at, h.created_at)"
    else:
        moment = f"h.{query.column}"
    filters = list(where)  # the series conditions (the roll-up has the same columns)
    if query.start is not None:
        ref = arg(_moment_of(query.start))
        times.append(f"{moment} >= {ref}")
        filters.append(f"h.last_at >= {ref}")  # true of every roll-up day read; the parameter is used
        if query.column == "observed_at":
            times.append(f"h.ts >= {ref}")  # ts is observedAt when there is one: partitions pruned
    if query.end is not None:
        ref = arg(_moment_of(query.end))
        times.append(f"{moment} < {ref}")
        filters.append(f"h.first_at < {ref}")
        if query.column == "observed_at":
            times.append(f"h.ts < {ref}")
    where.extend(times)
    out = HistoryAggregates(HistorySlice())
    for entity_id, known in await conn.fetch(
        f"SELECT entity_id, types FROM history_entities WHERE {' AND '.join(entity_where)} ORDER BY entity_id",
        *args[: 1 + (query.entity_ids is not None) + (query.types is not None)],
    ):
        out.slice.entities.append((tenant, entity_id, codec.dumps(list(known))))
    zero = query.months == 0 and query.micros == 0
    calendar_period = query.months != 0
    shared = _shared(query)
    series: dict[tuple[str, str, str], _Series] = {}
    stop = query.end if query.end is not None else 0
    if not shared:
        rows = await conn.fetch(
            f"SELECT h.entity_id, h.attr, h.dataset_id, min({moment}), max({moment}) FROM history h "
            f"WHERE {' AND '.join(where)} GROUP BY 1, 2, 3",
            *args,
        )
        for entity_id, attr, dataset, first, last in rows:
            low, high = micros(first), micros(last)
            origin = query.start if query.start is not None else low
            stop = max(query.end if query.end is not None else high + 1, origin + 1)
            spanned = series[(entity_id, attr, dataset)] = _Series((entity_id, attr, dataset), origin, stop)
            spanned.first, spanned.last = low, high
    methods = set(query.methods)
    distinct = "count(DISTINCT h.value::text)" if "distinctCount" in methods else "0"
    strings = "h.num IS NULL AND jsonb_typeof(h.value) = 'string'"
    extremes = (
        f"min(h.num), max(h.num), min(h.value::text COLLATE \"C\") FILTER (WHERE {strings}), "
        f"max(h.value::text COLLATE \"C\") FILTER (WHERE {strings})"
        if methods & {"min", "max"} else "NULL::float8, NULL::float8, NULL::text, NULL::text"
    )
    head = (
        f"SELECT h.entity_id, h.attr, h.dataset_id, {{bucket}} AS b, count(*), {distinct}, count(h.num), "
        f"sum(h.num), sum(h.num * h.num), {extremes}, {_US.format(f'min({moment})')}, "
        f"{_US.format(f'max({moment})')} FROM history h"
    )
    if shared:
        assert query.start is not None
        origin = query.start
        grid: list[int] | None = None
        if calendar_period:
            grid = _month_bounds(origin, stop, query.months, query.micros)
            grid_ref = arg([_moment_of(b) for b in grid], "::timestamptz[]")
            bucket = "width_bucket({t}, " + grid_ref + ")"
        elif zero:
            bucket = "0"
        else:
            bucket = _US.format(
                f"date_bin({arg(timedelta(microseconds=query.micros))}, {{t}}, {arg(_moment_of(origin))})"
            )
        runs = await _usable_days(conn, query, grid) if _rolls_up(query) else []
        raw_where, raw_args = where, args
        if runs:
            # the raw history outside the roll-up's days (each query binds only the parameters it names)
            raw_args = list(args)
            spans = []
            for gap_low, gap_high in _gaps(query.start, query.end, runs):
                raw_args.append(_moment_of(gap_low))
                spans.append(f"(h.ts >= ${len(raw_args)}")
                if gap_high is not None:
                    raw_args.append(_moment_of(gap_high))
                    spans[-1] += f" AND h.ts < ${len(raw_args)}"
                spans[-1] += ")"
            raw_where = [*where, "(" + (" OR ".join(spans) or "false") + ")"]
        sql = (f"{head.format(bucket=bucket.format(t=moment))} WHERE {' AND '.join(raw_where)} "
               "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4")
        rows = await conn.fetch(sql, *raw_args)
        if runs:
            day_start = "(h.day::timestamp AT TIME ZONE 'UTC')"
            roll_args = [*args, [_date_of(low) for low, _ in runs], [_date_of(high) for _, high in runs]]
            sql = (
                f"SELECT h.entity_id, h.attr, h.dataset_id, {bucket.format(t=day_start)} AS b, sum(h.n), 0, "
                "sum(h.numbers), sum(h.total), sum(h.squares), min(h.low), max(h.high), min(h.slow), max(h.shigh), "
                f"{_US.format('min(h.first_at)')}, {_US.format('max(h.last_at)')} FROM history_daily h "
                f"JOIN unnest(${len(args) + 1}::date[], ${len(args) + 2}::date[]) AS r(low, high) "
                f"ON h.day >= r.low AND h.day < r.high WHERE {' AND '.join(filters)} "
                "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
            )
            rolled = await conn.fetch(sql, *roll_args)
            rows = _merged(rows, rolled) if rows else rolled
        for row in rows:
            key = (row[0], row[1], row[2])
            item = series.get(key)
            if item is None:
                item = series[key] = _Series(key, origin, stop, grid, query.micros)
            _add_bucket(item, row, zero)
    elif series:
        keys = sorted(series)
        grid_all: list[int] = []
        lows: list[int] = []
        highs: list[int] = []
        steps: list[timedelta] = []
        for key in keys:
            item = series[key]
            if calendar_period:
                item.bounds = _month_bounds(item.origin, item.stop, query.months, query.micros)
                lows.append(len(grid_all) + 1)
                grid_all.extend(item.bounds)
                highs.append(len(grid_all))
            item.step = item.stop - item.origin if zero else query.micros
            steps.append(timedelta(microseconds=max(item.step, 1)))
        too_many = {k for k in keys if not calendar_period and (series[k].stop - series[k].origin)
                    // max(series[k].step, 1) > MAX_PERIODS}
        params = (
            f"unnest({arg([k[0] for k in keys], '::text[]')}, {arg([k[1] for k in keys], '::text[]')}, "
            f"{arg([k[2] for k in keys], '::text[]')}, "
            f"{arg([_moment_of(series[k].origin) for k in keys], '::timestamptz[]')}, "
            f"{arg([_moment_of(series[k].stop) for k in keys], '::timestamptz[]')}, "
            f"{arg(steps, '::interval[]')}, {arg(lows or [0] * len(keys), '::int[]')}, "
            f"{arg(highs or [0] * len(keys), '::int[]')}, {arg([k in too_many for k in keys], '::bool[]')}) "
            "AS p(e, a, d, origin, stop, step, lo, hi, skip)"
        )
        if calendar_period:
            bucket = f"width_bucket({moment}, ({arg([_moment_of(b) for b in grid_all], '::timestamptz[]')})[p.lo:p.hi])"
        elif zero:
            bucket = "0"
        else:
            bucket = _US.format(f"date_bin(p.step, {moment}, p.origin)")
        sql = (
            f"{head.format(bucket=bucket)} JOIN {params} ON h.entity_id = p.e AND h.attr = p.a AND h.dataset_id = p.d "
            f"WHERE {' AND '.join(where)} AND NOT p.skip AND {moment} >= p.origin AND {moment} < p.stop "
            "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        )
        for row in await conn.fetch(sql, *args):
            _add_bucket(series[(row[0], row[1], row[2])], row, zero)
    await _fill_slice(conn, tenant, moment, series, out)
    return out


async def _bump(conn: Any, tenant: str, moments: Sequence[datetime | None]) -> None:
    """Mark the roll-up days of these observedAt times out of date (inside the writing transaction)."""
    days = sorted({m.astimezone(UTC).date() for m in moments if m is not None})
    if days:
        await conn.execute(_BUMP, tenant, days)


def _shared(query: AggregationQuery) -> bool:
    """Whether every series' periods start at ``timeAt`` (one statement groups them all)."""
    zero = query.months == 0 and query.micros == 0
    if query.start is None or (query.end is None and (zero or query.months != 0)):
        return False
    # too many periods: the spans only (the temporal API refuses the read)
    return query.months != 0 or zero or query.end is None or (
        (query.end - query.start) // max(query.micros, 1) <= MAX_PERIODS
    )


def _rolls_up(query: AggregationQuery) -> bool:
    """Whether the daily roll-up can serve this read: observedAt windows, methods composable from sums."""
    return (
        query.column == "observed_at" and _shared(query) and "distinctCount" not in query.methods
        and not query.deletions
    )


def _date_of(value: int) -> date:
    return (_EPOCH + timedelta(microseconds=value)).date()


def _merged(rows: Sequence[Any], rolled: Sequence[Any]) -> list[Any]:
    """The periods of the raw history and of the roll-up (both sorted), those of both combined."""
    grouped: dict[tuple[Any, ...], Any] = {tuple(r[:4]): r for r in rows}
    for row in rolled:
        found = grouped.get(tuple(row[:4]))
        grouped[tuple(row[:4])] = row if found is None else _combine(found, row)
    return [grouped[k] for k in sorted(grouped)]


def _combine(row: Sequence[Any], other: Sequence[Any]) -> list[Any]:
    """Two partial aggregates of one period (raw rows and roll-up days) as one."""

    def plus(a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else a + b

    def low(a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else min(a, b)

    def high(a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else max(a, b)

    return [
        *row[:4], row[4] + other[4], 0, row[6] + other[6], plus(row[7], other[7]), plus(row[8], other[8]),
        low(row[9], other[9]), high(row[10], other[10]), low(row[11], other[11]), high(row[12], other[12]),
        low(row[13], other[13]), high(row[14], other[14]),
    ]


async def _usable_days(conn: Any, query: AggregationQuery, grid: Sequence[int] | None) -> list[tuple[int, int]]:
    """Runs [start, end) (µs, whole UTC days) the roll-up serves: inside the window and one period, up to date."""
    assert query.start is not None
    first = -(-query.start // DAY) * DAY
    end = query.end
    if end is None:
        newest = await conn.fetchval("SELECT max(day) FROM history_daily_state WHERE tenant = $1", query.tenant)
        if newest is None:
            return []
        end = micros(datetime(newest.year, newest.month, newest.day, tzinfo=UTC)) + DAY
    last = end // DAY * DAY
    if last - first < DAY or (last - first) // DAY > MAX_ROLLUP_DAYS:
        return []
    dirty = {
        micros(datetime(d.year, d.month, d.day, tzinfo=UTC))
        for (d,) in await conn.fetch(
            "SELECT day FROM history_daily_state WHERE tenant = $1 AND day >= $2 AND day < $3 "
            "AND built IS DISTINCT FROM version",
            query.tenant, _date_of(first), _date_of(last),
        )
    }
    runs: list[tuple[int, int]] = []
    for day in range(first, last, DAY):
        if day in dirty:
            continue
        if grid is not None:
            if bisect.bisect_right(grid, day) != bisect.bisect_right(grid, day + DAY - 1):
                continue
        elif query.micros and (day - query.start) // query.micros != (day + DAY - 1 - query.start) // query.micros:
            continue
        if runs and runs[-1][1] == day:
            runs[-1] = (runs[-1][0], day + DAY)
        else:
            runs.append((day, day + DAY))
    return runs if len(runs) <= MAX_RUNS else []


def _gaps(start: int | None, end: int | None, runs: Sequence[tuple[int, int]]) -> list[tuple[int, int | None]]:
    """The parts of [start, end) outside the runs (read from the raw history)."""
    assert start is not None
    gaps: list[tuple[int, int | None]] = []
    low = start
    for run_start, run_end in runs:
        if run_start > low:
            gaps.append((low, run_start))
        low = run_end
    if end is None or low < end:
        gaps.append((low, end))
    return gaps


def _add_bucket(item: _Series, row: Sequence[Any], zero: bool) -> None:
    """Append one row of the GROUP BY to its series (period bounds, aggregates, span)."""
    b = row[3]
    if zero:
        start, end = item.origin, item.stop
    elif item.bounds is not None:
        if not 1 <= int(b) < len(item.bounds):
            return  # beyond the last of the MAX_PERIODS periods, as the SQLite history stops there
        start, end = item.bounds[int(b) - 1], item.bounds[int(b)]
    else:
        start = int(b)
        end = start + item.step
    count, n_distinct, numbers, total, squares, low, high, slow, shigh = row[4:13]
    if numbers:
        low_value, high_value = low, high
    elif slow is not None:
        low_value, high_value = codec.loads(slow), codec.loads(shigh)
    else:
        low_value = high_value = None
    item.buckets.append((
        start, end, int(count), int(n_distinct), int(numbers), float(total or 0.0), float(squares or 0.0),
        low_value, high_value,
    ))
    first, last = int(row[13]), int(row[14])
    item.first = first if item.first is None else min(item.first, first)
    item.last = last if item.last is None else max(item.last, last)


async def _fill_slice(
    conn: Any, tenant: str, moment: str, series: Mapping[tuple[str, str, str], _Series], out: HistoryAggregates,
) -> None:
    """Each series' first and last instance in the window, with the attribute type of the last."""
    keys = sorted(k for k, item in series.items() if item.last is not None)
    if not keys:
        return
    # the newest instance's type: one index probe per series (observedAt is ts when present)
    probe = "h.ts = p.last AND h.observed_at = p.last" if moment == "h.observed_at" else f"{moment} = p.last"
    kinds = await conn.fetch(
        "SELECT (SELECT h.kind FROM history h WHERE h.tenant = $1 AND h.entity_id = p.e AND h.attr = p.a "
        f"AND h.dataset_id = p.d AND {probe} ORDER BY h.created_at DESC LIMIT 1) "
        "FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[]) WITH ORDINALITY AS p(e, a, d, last, n) "
        "ORDER BY p.n",
        tenant, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
        [_moment_of(series[k].last or 0) for k in keys],
    )
    for sid, (key, (kind,)) in enumerate(zip(keys, kinds, strict=True), start=1):
        item = series[key]
        out.slice.series.append((sid, tenant, *key))
        for at in (item.first, item.last):
            out.slice.instances.append((sid, at, at, at, kind or "Property", None, "null", None, None))
        out.buckets[sid] = item.buckets


async def refresh_rollup(pool: Any, tenant: str, start: int, end: int | None) -> int:
    """Build the daily roll-up of the past days of [start, end) written since; return how many days.

    One month at a time: its days are aggregated from a snapshot, then stored under the tenant's
    lock, only those whose write count did not move meanwhile (a day written during the build
    stays read from the history itself, and is built next time).
    """
    today = datetime.now(UTC).date()
    high = today if end is None else min(today, _date_of(end - 1) + timedelta(days=1))
    dirty = [
        r[0] for r in await pool.fetch(
            "SELECT day FROM history_daily_state WHERE tenant = $1 AND day >= $2 AND day < $3 "
            "AND built IS DISTINCT FROM version ORDER BY day",
            tenant, _date_of(start), high,
        )
    ]
    chunks: dict[tuple[int, int], list[date]] = {}
    for day in dirty:
        chunks.setdefault((day.year, day.month), []).append(day)
    built = 0
    for chunk in chunks.values():
        low_at = datetime(chunk[0].year, chunk[0].month, chunk[0].day, tzinfo=UTC)
        high_at = datetime(chunk[-1].year, chunk[-1].month, chunk[-1].day, tzinfo=UTC) + timedelta(days=1)
        async with pool.acquire() as conn:
            # the month is aggregated into a temporary table of this session (writable in a read-only
            # snapshot), then copied under the lock: the rows never travel through Python
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS jonction_daily_build (LIKE history_daily); "
                "TRUNCATE pg_temp.jonction_daily_build"
            )
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                versions = dict(await conn.fetch(
                    "SELECT day, version FROM history_daily_state WHERE tenant = $1 AND day = ANY($2::date[])",
                    tenant, chunk,
                ))
                # every day from the first to the last out-of-date one (those up to date are not copied);
                # a month holds tens of thousands of (series, day) groups: hashed in memory, not spilled
                await conn.execute("SET LOCAL work_mem = '64MB'")
                await conn.execute(_BUILD, tenant, low_at, high_at)
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TENANT_LOCK + tenant)
                current = dict(await conn.fetch(
                    "SELECT day, version FROM history_daily_state WHERE tenant = $1 AND day = ANY($2::date[]) "
                    "FOR UPDATE", tenant, chunk,
                ))
                done = [d for d in chunk if d in versions and current.get(d) == versions[d]]
                if not done:
                    continue
                await conn.execute(
                    "DELETE FROM history_daily WHERE tenant = $1 AND day = ANY($2::date[])", tenant, done
                )
                await conn.execute(
                    "INSERT INTO history_daily SELECT * FROM pg_temp.jonction_daily_build WHERE day = ANY($1::date[])",
                    done,
                )
                await conn.execute(
                    "UPDATE history_daily_state SET built = version WHERE tenant = $1 AND day = ANY($2::date[])",
                    tenant, done,
                )
                built += len(done)
    return built


async def build_stale_days(
    pool: Any, after: tuple[str, date] | None, days: int
) -> tuple[int, tuple[str, date] | None]:
    """Build the roll-up of the next out-of-date closed days (before today) past ``after``, in (tenant, day) order.

    At most ``days`` days of one tenant and one month per call, so each build is short. Returns the
    days built and where the next call goes on from (None once the last such day was passed).
    """
    today = datetime.now(UTC).date()
    stale = "built IS DISTINCT FROM version AND day < $1"
    if after is None:
        rows = await pool.fetch(
            f"SELECT tenant, day FROM history_daily_state WHERE {stale} ORDER BY tenant, day LIMIT $2", today, days
        )
    else:
        rows = await pool.fetch(
            f"SELECT tenant, day FROM history_daily_state WHERE {stale} AND (tenant, day) > ($3, $4) "
            "ORDER BY tenant, day LIMIT $2",
            today, days, after[0], after[1],
        )
    if not rows:
        return 0, None
    tenant, first = rows[0][0], rows[0][1]
    chunk = [r[1] for r in rows if r[0] == tenant and (r[1].year, r[1].month) == (first.year, first.month)]
    start = micros(datetime(first.year, first.month, first.day, tzinfo=UTC))
    last = chunk[-1]
    end = micros(datetime(last.year, last.month, last.day, tzinfo=UTC)) + DAY
    # a day written meanwhile stays out of date (refresh_rollup checks its version): a later pass builds it
    return await refresh_rollup(pool, tenant, start, end), (tenant, last)


class PostgresHistoryWrites:
    """Temporal writes on the ``history`` table (the protocol ``gateway.store.records.HistoryWrites``)."""

    def __init__(self, pool: Any, recorder: Recorder) -> None:
        self.pool = pool
        self.recorder = recorder

    async def aggregate(self, query: AggregationQuery) -> HistoryAggregates:
        """``aggregatedValues`` computed in SQL over one consistent snapshot (§4.5.19).

        Past days the daily roll-up can serve are brought up to date first (the first long read of
        a tenant builds them; later ones read a row per series and day instead of every instance).
        """
        if _rolls_up(query):
            assert query.start is not None
            self.recorder.built_on_read += await refresh_rollup(self.pool, query.tenant, query.start, query.end)
        async with self.pool.acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            return await aggregate_history(conn, query)

    async def entity_types(self, tenant: str, entity_id: str) -> list[str] | None:
        """The type IRIs recorded for an entity, or None when it has no history."""
        types = await self.pool.fetchval(
            "SELECT types FROM history_entities WHERE tenant = $1 AND entity_id = $2", tenant, entity_id
        )
        return None if types is None else list(types)

    async def write(
        self, tenant: str, entity_id: str, types: list[str], rows: Sequence[tuple[str, str, Any, str, Any]]
    ) -> bool:
        """Add instances, replacing those of the same series and observedAt; True when the entity was new."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TENANT_LOCK + tenant)
            known = await conn.fetchval(
                "SELECT types FROM history_entities WHERE tenant = $1 AND entity_id = $2 FOR UPDATE", tenant, entity_id
            )
            merged = list(types) if known is None else [*known, *(t for t in types if t not in known)]
            await conn.execute(
                "INSERT INTO history_entities(tenant, entity_id, types) VALUES($1, $2, $3) "
                "ON CONFLICT (tenant, entity_id) DO UPDATE SET types = excluded.types",
                tenant, entity_id, merged,
            )
            again = [(r[3], instance_row(r[4], now)) for r in rows if isinstance(r[4].get("observedAt"), str)]
            if again:
                await conn.execute(
                    "DELETE FROM history h USING unnest($3::text[], $4::text[], $5::text[]) AS u(attr, dataset, at) "
                    "WHERE h.tenant = $1 AND h.entity_id = $2 AND h.attr = u.attr AND h.dataset_id = u.dataset "
                    "AND h.observed_at = u.at::timestamptz",
                    tenant, entity_id, [a for a, _ in again], [r[0] for _, r in again], [r[1] for _, r in again],
                )
            _, months = await self.recorder.record(
                conn, tenant, [(t, e, merged, a, i) for t, e, _, a, i in rows], now
            )
        self.recorder.committed(months)
        return known is None

    async def delete(self, tenant: str, entity_id: str, attr: str | None = None, dataset_id: str | None = None,
                     *, every_dataset: bool = False) -> bool:
        """Forget an entity's history, or one attribute's; False when there was none."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TENANT_LOCK + tenant)
            # whole series go: their roll-up rows go with them (the days' other series stay valid)
            series = ["tenant = $1", "entity_id = $2"]
            keys: list[Any] = [tenant, entity_id]
            if attr is not None:
                series.append("attr = $3")
                keys.append(attr)
                if not every_dataset:
                    series.append("dataset_id = $4")
                    keys.append(dataset_id or "")
            await conn.execute(f"DELETE FROM history_daily WHERE {' AND '.join(series)}", *keys)
            if attr is None:
                gone = await conn.execute("DELETE FROM history WHERE tenant = $1 AND entity_id = $2", tenant, entity_id)
                known = await conn.execute(
                    "DELETE FROM history_entities WHERE tenant = $1 AND entity_id = $2", tenant, entity_id
                )
                return bool(gone != "DELETE 0" or known != "DELETE 0")
            if every_dataset:
                gone = await conn.execute(
                    "DELETE FROM history WHERE tenant = $1 AND entity_id = $2 AND attr = $3", tenant, entity_id, attr
                )
            else:
                gone = await conn.execute(
                    "DELETE FROM history WHERE tenant = $1 AND entity_id = $2 AND attr = $3 AND dataset_id = $4",
                    tenant, entity_id, attr, dataset_id or "",
                )
            return bool(gone != "DELETE 0")

    async def delete_instance(self, tenant: str, entity_id: str, attr: str, instance_id: str) -> bool:
        """Forget one instance; False when unknown."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TENANT_LOCK + tenant)
            gone = await conn.fetch(
                "DELETE FROM history WHERE tenant = $1 AND entity_id = $2 AND attr = $3 AND instance_id = $4 "
                "RETURNING observed_at",
                tenant, entity_id, attr, instance_id,
            )
            await _bump(conn, tenant, [r[0] for r in gone])
        return bool(gone)

    async def replace_instance(
        self, tenant: str, entity_id: str, attr: str, instance_id: str, instance: Mapping[str, Any]
    ) -> bool:
        """Overwrite one instance (its id and creation time stay); False when unknown."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        _, observed, modified, kind, number, value, _, extra = instance_row(instance, now)
        moment = _moment(observed) or _moment(modified)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", TENANT_LOCK + tenant)
            before = await conn.fetch(
                "SELECT observed_at FROM history WHERE tenant = $1 AND entity_id = $2 AND attr = $3 "
                "AND instance_id = $4", tenant, entity_id, attr, instance_id,
            )
            await _bump(conn, tenant, [r[0] for r in before] + [_moment(observed)])
            if moment is not None and month_of(moment) not in self.recorder.months:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
                await conn.execute(partition_sql(*month_of(moment)))
            done = await conn.execute(
                "UPDATE history SET ts = coalesce($5::text::timestamptz, $6::text::timestamptz), "
                "observed_at = $5::text::timestamptz, modified_at = $6::text::timestamptz, kind = $7, num = $8, "
                "value = $9::text::jsonb, extra = $10::text::jsonb "
                "WHERE tenant = $1 AND entity_id = $2 AND attr = $3 AND instance_id = $4",
                tenant, entity_id, attr, instance_id, observed, modified, kind, number, value, extra,
            )
        return bool(done != "UPDATE 0")
