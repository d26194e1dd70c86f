"""Attribute history (the temporal evolution of entities) in the store's SQLite file.

Every attribute instance the store writes is appended here by the writer, inside its own write
transaction (so history and current state never disagree). Rows are narrow: one *series* row per
(tenant, entity, attribute, datasetId) and one instance row per write with integer microsecond
times, the attribute type, a numeric projection for SQL aggregation and the value as JSON.
Queries select series first, then walk the ``(series_id, observed_at)`` index per series.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from gateway.model import ENTITY_MEMBERS, VALUE_KEY, VALUE_MEMBERS
from gateway.store import codec
from gateway.store.patterns import compile_user_pattern
from gateway.store.problems import NgsiError, bad_request

if TYPE_CHECKING:
    from gateway.store.jsonld import Context

SCHEMA_SQL: Final = """
CREATE TABLE IF NOT EXISTS history_series (
    series_id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attr TEXT NOT NULL,
    dataset_id TEXT NOT NULL DEFAULT '',
    UNIQUE (tenant, entity_id, attr, dataset_id)
);
CREATE TABLE IF NOT EXISTS history_entities (
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    types TEXT NOT NULL,
    PRIMARY KEY (tenant, entity_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history_instances (
    series_id INTEGER NOT NULL,
    observed_at INTEGER,
    created_at INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    num REAL,
    value TEXT,
    instance_id TEXT,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS history_instances_by_time ON history_instances (series_id, observed_at);
"""
"""Tables of the attribute history; times are integer microseconds since the Unix epoch (UTC)."""

TIME_PROPERTIES: Final = {
    "observedAt": "observed_at", "createdAt": "created_at", "modifiedAt": "modified_at", "deletedAt": "created_at"
}
"""``timeproperty`` values → column (a deletion mark is created when the attribute is deleted)."""
DELETION_MARK: Final = "\x1f"
"""Prefix of the datasetId of the series holding deletion marks (§4.5.x deletedAt): they stay out
of ordinary reads at no cost (a range on the small series table) and are read for timeproperty=deletedAt."""
NULL_URN: Final = "urn:ngsi-ld:null"
SCOPE_IRI: Final = "https://uri.etsi.org/ngsi-ld/scope"
"""Attribute under which a deleted scope leaves its deletedAt mark (§4.18: scope reads like a Property)."""
AGGREGATION_METHODS: Final = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")
"""``aggrMethods`` supported (all of §4.5.19)."""
INSTANCE_PREFIX: Final = "urn:ngsi-ld:Instance:"
"""Prefix of generated instanceIds (the suffix is the row id, unique in the file)."""

_SKIP_MEMBERS: Final = frozenset(
    {"type", "observedAt", "createdAt", "modifiedAt", "datasetId", "instanceId", *VALUE_MEMBERS}
)
_ENTITY_MEMBERS: Final = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt", "@context"})
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")
_DUMPS: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Compact JSON text, as the history tables store it."""
    return _DUMPS(value)


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the history tables and index if they do not exist."""
    conn.executescript(SCHEMA_SQL)


class Database:
    """One dedicated thread with its own connection to the store's SQLite file.

    The temporal API and the subscriptions read and write their tables through it, off the
    event loop; WAL lets it read while the store's writer writes, and ``busy_timeout``
    serializes the rare writes with the store's own.
    """

    def __init__(self, path: Path, *, setup: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self.path = Path(path)
        self._setup = setup
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="store-history")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=FULL")
            if self._setup is not None:
                self._setup(conn)
            self._conn = conn
        return self._conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the database thread."""
        if self._closed:
            raise NgsiError("InternalError", "the store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(self._connection()))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside one write transaction on the database thread."""

        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self.read(run)

    async def close(self) -> None:
        """Finish pending work and close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True

        def shutdown() -> None:
            self._executor.shutdown(wait=True)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(None, shutdown)


# --------------------------------------------------------------------------- times


def to_micros(value: str | datetime) -> int:
    """Microseconds since the epoch for an RFC 3339 text (zone required) or an aware datetime."""
    if isinstance(value, str):
        moment = datetime.fromisoformat(value)  # Python 3.11 reads "Z" and offsets
    else:
        moment = value
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> str:
    """RFC 3339 UTC text (``Z``; milliseconds or microseconds only when needed)."""
    seconds, micro = divmod(micros, 1_000_000)
    base = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if micro == 0:
        return base + "Z"
    if micro % 1000 == 0:
        return f"{base}.{micro // 1000:03d}Z"
    return f"{base}.{micro:06d}Z"


def now_micros() -> int:
    """The current time in microseconds since the epoch."""
    return to_micros(datetime.now(UTC))


# --------------------------------------------------------------------------- writing

HistoryRow = tuple[str, str, "str | Sequence[str]", str, Mapping[str, Any]]
"""(tenant, entity id, entity type IRI(s), attribute IRI, expanded instance)."""


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


_NULL: Final = float("nan")
"""What the rows bind for SQL NULL: SQLite stores a NaN as NULL, and the sqlite3 module binds a float
directly, where a None goes through its adapter lookup first (0.3-0.4 µs each, and a typical row has
three: no instanceId, no metadata, no number or no observedAt)."""


class _RowMaker:
    """Turns instances into rows; caches what repeats within one batch (times, metadata, small values)."""

    def __init__(self) -> None:
        self.fallback = now_micros()
        self.times: dict[str, int] = {}
        self.extras: dict[tuple[tuple[str, Any], ...], str] = {}
        self.texts: dict[str, str] = {}

    def micros(self, text: str) -> int:
        found = self.times.get(text)
        if found is None:
            found = self.times[text] = to_micros(text)
        return found

    def extra(self, extra: dict[str, Any]) -> str | None:
        if not extra:
            return None
        try:
            key = tuple(extra.items())
            found = self.extras.get(key)
        except TypeError:  # unhashable members (sub-attributes): no caching, orjson (the stdlib took 3/4 of a row)
            return codec.dumps(extra)
        if found is None:
            found = self.extras[key] = codec.dumps(extra)
        return found

    def text(self, value: str) -> str:
        # enumerations ("on", "off", states) repeat across a batch: encode each once
        found = self.texts.get(value)
        if found is None:
            found = codec.dumps(value)
            if len(self.texts) < 4096:
                self.texts[value] = found
        return found

    def row(self, series_id: int, instance: Mapping[str, Any]) -> tuple[Any, ...]:
        """The ``history_instances`` values of one instance (``_NULL`` for SQL NULL)."""
        get = instance.get
        kind = get("type", "Property")
        if type(kind) is not str:
            kind = str(kind)
        value: Any = get(VALUE_KEY.get(kind, "value"))
        times = self.times
        # an instance's own creation is the moment it was written: its modifiedAt at write time
        modified = get("modifiedAt")
        if isinstance(modified, str):
            modified_us = times.get(modified)
            if modified_us is None:
                modified_us = self.micros(modified)
        else:
            modified_us = self.fallback
        observed = get("observedAt")
        observed_us: float | int = _NULL
        if isinstance(observed, str):
            found = times.get(observed)
            observed_us = self.micros(observed) if found is None else found
        number: float = _NULL
        value_type = type(value)
        if value_type is str:
            text = self.texts.get(value) or self.text(value)
        elif value_type is int or value_type is float:
            if math.isfinite(value):
                text = repr(value)
                if kind == "Property":
                    number = float(value)
            else:
                text = _DUMPS(value)
        elif value_type is dict or value_type is list:
            text = codec.dumps(value)
        else:
            # bool, None, and int or float subclasses: as the standard library writes them
            text = _DUMPS(value)
            if kind == "Property":
                numeric = _numeric(value)
                if numeric is not None:
                    number = numeric
        instance_id = get("instanceId")
        # most instances carry no metadata beyond the skipped members: one subset test in C, no dict built
        extra: str | float | None = _NULL
        if not instance.keys() <= _SKIP_MEMBERS:
            extra = self.extra({k: v for k, v in instance.items() if k not in _SKIP_MEMBERS}) or _NULL
        return (
            series_id,
            observed_us,
            modified_us,
            modified_us,
            kind,
            number,
            text,
            instance_id if isinstance(instance_id, str) else _NULL,
            extra,
        )


def record(
    conn: sqlite3.Connection,
    tenant: str,
    entity_id: str,
    entity_type: str | Sequence[str],
    attr_iri: str,
    instance: Mapping[str, Any],
) -> None:
    """Append one attribute instance to the history (call inside the writer's transaction)."""
    record_many(conn, [(tenant, entity_id, entity_type, attr_iri, instance)])


SeriesKey = tuple[str, str, str, str]
"""(tenant, entity id, attribute IRI, datasetId or "")."""
_CHUNK: Final = 500
"""Entity ids per ``IN (...)`` list (well below SQLite's limit on bound parameters)."""


def resolve_series(
    conn: sqlite3.Connection, keys: Iterable[SeriesKey], cache: WriteCache | None = None
) -> dict[SeriesKey, int]:
    """The series id of every key, creating the missing series (call inside a write transaction).

    One ``SELECT`` per tenant and 500 entities fetches the series of the batch's entities, and one
    ``executemany`` creates the new ones with ids taken after ``max(series_id)``: the write
    transaction holds SQLite's write lock, so no other connection can take those ids meanwhile.
    This replaced one SELECT (and one INSERT) per series, the larger part of the history's cost.
    With a ``cache`` (the store's writer), series already known skip the SELECT altogether.
    """
    series: dict[SeriesKey, int] = dict.fromkeys(keys, -1)
    known = cache.series if cache is not None else None
    by_tenant: dict[str, dict[str, None]] = {}
    for key in series:
        if known is not None:
            found = known.get(key)
            if found is not None:
                series[key] = found
                continue
        by_tenant.setdefault(key[0], {})[key[1]] = None
    for tenant, entity_ids in by_tenant.items():
        ids = list(entity_ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            sql = (
                "SELECT entity_id, attr, dataset_id, series_id FROM history_series "
                f"WHERE tenant=? AND entity_id IN ({','.join('?' * len(chunk))})"
            )
            for entity_id, attr, dataset, series_id in conn.execute(sql, (tenant, *chunk)):
                key = (tenant, entity_id, attr, dataset)
                if key in series:
                    series[key] = series_id
    missing = [key for key, series_id in series.items() if series_id < 0]
    if missing:
        top = conn.execute("SELECT max(series_id) FROM history_series").fetchone()[0]
        first = int(top or 0) + 1
        conn.executemany(
            "INSERT INTO history_series (series_id, tenant, entity_id, attr, dataset_id) VALUES (?, ?, ?, ?, ?)",
            [(first + i, *key) for i, key in enumerate(missing)],
        )
        for i, key in enumerate(missing):
            series[key] = first + i
    if cache is not None:
        cache.remember(series)
    return series


class WriteCache:
    """What one writing connection knows is stored: series ids and entity type lists of the history.

    The store's writer appends history for every write; looking the same series up again on every
    batch (one SELECT per batch, one upsert per entity into ``history_entities``) was a third of the
    history's cost. Only that connection's commits are trusted: :meth:`check` forgets everything
    when another connection committed (``PRAGMA data_version`` changed: the temporal API deleting a
    series, another process), and the writer calls :meth:`clear` when its own transaction rolls back.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.series: dict[SeriesKey, int] = {}
        self.types: dict[tuple[str, str], str] = {}
        self._version: int | None = None

    def check(self, conn: sqlite3.Connection) -> bool:
        """Forget everything if another connection committed since this one last looked; True if it did."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self.clear()
            self._version = version
            return True
        return False

    def clear(self) -> None:
        """Forget everything (a rollback, or another connection wrote)."""
        self.series.clear()
        self.types.clear()

    def remember(self, series: Mapping[SeriesKey, int]) -> None:
        """Keep series ids (bounded: past the limit, start over rather than grow)."""
        if len(self.series) + len(series) > self.limit:
            self.series.clear()
        self.series.update(series)

    def remember_types(self, types: Mapping[tuple[str, str], str]) -> None:
        """Keep the stored type list text of entities (bounded like the series)."""
        if len(self.types) + len(types) > self.limit:
            self.types.clear()
        self.types.update(types)


_INSERT_INSTANCES: Final = (
    "INSERT INTO history_instances (series_id, observed_at, created_at, modified_at, kind, num, value, "
    "instance_id, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def record_many(conn: sqlite3.Connection, rows: Iterable[HistoryRow], cache: WriteCache | None = None) -> int:
    """Append many instances with a few statements per batch; return how many were written.

    ``cache`` (the store's writer, inside its transaction; see :class:`WriteCache`) skips the
    lookups of series and entity types already known to be stored.
    """
    known: Mapping[SeriesKey, int] = cache.series if cache is not None else {}
    types_seen: dict[tuple[str, str], str] = {}
    type_texts: dict[str | tuple[str, ...], str] = {}  # the same few type lists repeat over a batch
    values: list[tuple[Any, ...]] = []
    unknown: list[tuple[int, SeriesKey]] = []
    """(position in ``values``, key) of the rows whose series id is looked up (or made) after the loop."""
    row = _RowMaker().row
    last_tenant: str | None = None
    last_entity: str | None = None
    # one pass: the rows of a known series are final at once (the runtime's steady state), the
    # others are completed after one lookup for all of them
    for tenant, entity_id, entity_type, attr_iri, instance in rows:
        dataset = instance.get("datasetId")
        key = (tenant, entity_id, attr_iri, dataset if type(dataset) is str else "")
        series_id = known.get(key)
        if series_id is None:
            unknown.append((len(values), key))
            series_id = 0
        values.append(row(series_id, instance))
        if entity_id is last_entity and tenant is last_tenant:
            continue  # an entity's instances come together: its types were seen with its first one
        last_tenant, last_entity = tenant, entity_id
        ek = (tenant, entity_id)
        if ek not in types_seen:
            tkey = entity_type if isinstance(entity_type, str) else tuple(entity_type)
            text = type_texts.get(tkey)
            if text is None:
                text = type_texts[tkey] = _DUMPS([tkey] if isinstance(tkey, str) else list(tkey))
            types_seen[ek] = text
    if not values:
        return 0
    if unknown:
        series = resolve_series(conn, dict.fromkeys(key for _, key in unknown), cache)
        for at, key in unknown:
            values[at] = (series[key], *values[at][1:])
    if cache is not None:
        stored = cache.types
        changed = {ek: text for ek, text in types_seen.items() if stored.get(ek) != text}
    else:
        changed = types_seen
    if changed:
        conn.executemany(
            "INSERT INTO history_entities (tenant, entity_id, types) VALUES (?, ?, ?) "
            "ON CONFLICT (tenant, entity_id) DO UPDATE SET types = excluded.types WHERE types != excluded.types",
            [(t, e, types) for (t, e), types in changed.items()],
        )
        if cache is not None:
            cache.remember_types(changed)
    conn.executemany(_INSERT_INSTANCES, values)
    return len(values)


_NULL_VALUES: Final[Mapping[str, Any]] = {
    "LanguageProperty": {"@none": NULL_URN},
    "ListProperty": [NULL_URN],
    "ListRelationship": [{"object": NULL_URN}],
}


def temporal_rows(
    ctx: Context, tenant: str, data: Mapping[str, Any], entity_id: str, types: list[str] | None, now: str
) -> tuple[list[str], list[HistoryRow]]:
    """Expand a compacted (temporal) entity fragment to history rows, every instance stamped ``now``.

    The temporal API's writes and the runtime's late readings (``Storage.append_history``) share it.
    """
    if types is None:
        if "type" not in data:
            raise bad_request("/type: the entity type is missing")
        types = ctx.expand_type(data["type"])
    rows: list[HistoryRow] = []
    for name, value in data.items():
        if name in ENTITY_MEMBERS:
            continue
        iri = ctx.expand_attr_name(name, f"/{name}")
        items = value if isinstance(value, list) and all(isinstance(v, Mapping) for v in value) else [value]
        for index, item in enumerate(items):
            (inst,) = ctx.expand_attribute(item, f"/{name}/{index}")
            inst = {**inst, "createdAt": now, "modifiedAt": now}
            rows.append((tenant, entity_id, types, iri, inst))
    if len(rows) > 100_000:
        raise NgsiError("PayloadTooLarge", "more than 100000 instances in one temporal write")
    return types, rows


def append_instances(conn: sqlite3.Connection, rows: Sequence[HistoryRow], cache: WriteCache | None = None) -> int:
    """Add instances to their series; one sent again for the same observedAt replaces the stored one."""
    forget_same_moments(conn, rows, cache)
    return record_many(conn, rows, cache)


def deletions(before: Mapping[str, Any], after: Mapping[str, Any] | None, now: str) -> list[tuple[str, dict[str, Any]]]:
    """Deletion marks for the attribute instances ``before`` has and ``after`` lost (None: entity deleted).

    Each mark is an instance whose value is ``urn:ngsi-ld:null`` with ``deletedAt`` (CIM 009 V1.9.1
    §4.5.x, §5.7.3 timeproperty=deletedAt), kept in a series of its own (see ``DELETION_MARK``).
    A deleted scope (§4.18) marks the ``scope`` Property with an empty scope list, its value once gone.
    """
    marks: list[tuple[str, dict[str, Any]]] = []
    if before.get("scope") and not (after or {}).get("scope"):
        marks.append((SCOPE_IRI, {
            "type": "Property", "value": [], "datasetId": DELETION_MARK, "deletedAt": now, "modifiedAt": now,
        }))
    for attr, insts in before.items():
        if not isinstance(insts, list) or attr in _ENTITY_MEMBERS:
            continue
        kept = after.get(attr) if after is not None else None
        if kept is not None and len(kept) == len(insts):
            continue  # the common case (updates): same attribute, same number of datasets
        kept_datasets = {i.get("datasetId") for i in kept or () if isinstance(i, Mapping)}
        for inst in insts:
            if not isinstance(inst, Mapping) or inst.get("datasetId") in kept_datasets:
                continue
            kind = str(inst.get("type", "Property"))
            dataset = inst.get("datasetId")
            marks.append((attr, {
                "type": kind,
                VALUE_KEY.get(kind, "value"): _NULL_VALUES.get(kind, NULL_URN),
                "datasetId": DELETION_MARK + (dataset if isinstance(dataset, str) else ""),
                "deletedAt": now,
                "modifiedAt": now,
            }))
    return marks


def forget_same_moments(conn: sqlite3.Connection, rows: Iterable[HistoryRow], cache: WriteCache | None = None) -> int:
    """Delete stored instances that the rows replace: same series and same ``observedAt``.

    Temporal writes (§5.6.11, §5.6.12) send a series of observations; sending an observation again
    corrects it instead of doubling it. Rows without observedAt replace nothing.
    """
    wanted: list[tuple[SeriesKey, int]] = []
    for tenant, entity_id, _, attr_iri, instance in rows:
        observed = instance.get("observedAt")
        if not isinstance(observed, str):
            continue
        dataset = instance.get("datasetId")
        key = (tenant, entity_id, attr_iri, dataset if isinstance(dataset, str) else "")
        wanted.append((key, to_micros(observed)))
    if not wanted:
        return 0
    series = resolve_series(conn, dict.fromkeys(k for k, _ in wanted), cache)
    before = conn.total_changes
    # one prepared statement for the whole batch (late readings arrive by the hundred)
    conn.executemany(
        "DELETE FROM history_instances WHERE series_id=? AND observed_at=?",
        [(series[key], moment) for key, moment in wanted],
    )
    return conn.total_changes - before


def delete_entity(conn: sqlite3.Connection, tenant: str, entity_id: str) -> bool:
    """Forget the whole temporal evolution of one entity; False when it had none."""
    ids = [r[0] for r in conn.execute(
        "SELECT series_id FROM history_series WHERE tenant=? AND entity_id=?", (tenant, entity_id)
    )]
    conn.executemany("DELETE FROM history_instances WHERE series_id=?", [(i,) for i in ids])
    conn.execute("DELETE FROM history_series WHERE tenant=? AND entity_id=?", (tenant, entity_id))
    gone = conn.execute("DELETE FROM history_entities WHERE tenant=? AND entity_id=?", (tenant, entity_id))
    return bool(gone.rowcount) or bool(ids)


def delete_attribute(
    conn: sqlite3.Connection, tenant: str, entity_id: str, attr_iri: str, dataset_id: str | None = None
) -> bool:
    """Forget the history of one attribute (one datasetId, or every one with None)."""
    sql = "SELECT series_id FROM history_series WHERE tenant=? AND entity_id=? AND attr=?"
    args: list[Any] = [tenant, entity_id, attr_iri]
    if dataset_id is not None:
        sql += " AND dataset_id=?"
        args.append(dataset_id)
    ids = [r[0] for r in conn.execute(sql, args)]
    conn.executemany("DELETE FROM history_instances WHERE series_id=?", [(i,) for i in ids])
    conn.executemany("DELETE FROM history_series WHERE series_id=?", [(i,) for i in ids])
    return bool(ids)


def prune(conn: sqlite3.Connection, before: int, *, tenant: str | None = None, batch: int = 50_000) -> int:
    """Delete instances written before ``before`` (µs since the epoch): the retention policy hook.

    Works in slices of ``batch`` rows so that a caller can run it in short transactions.
    """
    removed = 0
    while True:
        if tenant is None:
            cursor = conn.execute(
                "DELETE FROM history_instances WHERE rowid IN (SELECT rowid FROM history_instances "
                "WHERE created_at < ? LIMIT ?)",
                (before, batch),
            )
        else:
            cursor = conn.execute(
                "DELETE FROM history_instances WHERE rowid IN (SELECT i.rowid FROM history_instances i "
                "JOIN history_series s ON s.series_id = i.series_id WHERE s.tenant = ? AND i.created_at < ? LIMIT ?)",
                (tenant, before, batch),
            )
        removed += cursor.rowcount
        if cursor.rowcount < batch:
            return removed


def find_instance(conn: sqlite3.Connection, tenant: str, entity_id: str, attr_iri: str, instance_id: str) -> int | None:
    """The row id of one stored instance (by its own instanceId or a generated one), or None."""
    series = [r[0] for r in conn.execute(
        "SELECT series_id FROM history_series WHERE tenant=? AND entity_id=? AND attr=?", (tenant, entity_id, attr_iri)
    )]
    if not series:
        return None
    marks = ",".join("?" * len(series))
    suffix = instance_id[len(INSTANCE_PREFIX) :] if instance_id.startswith(INSTANCE_PREFIX) else ""
    if suffix.isdigit():
        row = conn.execute(
            f"SELECT rowid FROM history_instances WHERE rowid=? AND instance_id IS NULL AND series_id IN ({marks})",
            (int(suffix), *series),
        ).fetchone()
        if row is not None:
            return int(row[0])
    row = conn.execute(
        f"SELECT rowid FROM history_instances WHERE instance_id=? AND series_id IN ({marks})", (instance_id, *series)
    ).fetchone()
    return None if row is None else int(row[0])


def replace_instance(conn: sqlite3.Connection, rowid: int, instance: Mapping[str, Any]) -> None:
    """Overwrite one stored instance (its id and creation time stay)."""
    (series_id,) = conn.execute("SELECT series_id FROM history_instances WHERE rowid=?", (rowid,)).fetchone()
    row = _RowMaker().row(series_id, instance)
    conn.execute(
        "UPDATE history_instances SET observed_at=?, modified_at=?, kind=?, num=?, value=?, extra=? WHERE rowid=?",
        (row[1], row[3], row[4], row[5], row[6], row[8], rowid),
    )


def entity_types(conn: sqlite3.Connection, tenant: str, entity_id: str) -> list[str] | None:
    """The type IRIs recorded for an entity, or None when it has no history."""
    row = conn.execute(
        "SELECT types FROM history_entities WHERE tenant=? AND entity_id=?", (tenant, entity_id)
    ).fetchone()
    return None if row is None else list(json.loads(row[0]))


# --------------------------------------------------------------------------- reading


@dataclass(slots=True)
class TimeFilter:
    """``timerel``/``timeAt``/``endTimeAt``/``timeproperty`` turned into microsecond bounds."""

    column: str = "observed_at"
    start: int | None = None
    """Inclusive lower bound (after / between)."""
    end: int | None = None
    """Exclusive upper bound (before / between)."""

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE fragment (starting with AND) and its arguments."""
        parts: list[str] = []
        args: list[Any] = []
        if self.start is not None:
            parts.append(f" AND {self.column} >= ?")
            args.append(self.start)
        if self.end is not None:
            parts.append(f" AND {self.column} < ?")
            args.append(self.end)
        if self.column == "observed_at" and not parts:
            return "", []
        return "".join(parts), args


def time_filter(
    timerel: str | None, time_at: str | None, end_time_at: str | None, timeproperty: str | None = None
) -> TimeFilter:
    """Validate the temporal query parameters (§4.11, §6.18.3.2); raise BadRequestData."""
    prop = timeproperty or "observedAt"
    if prop not in TIME_PROPERTIES:
        raise bad_request(f"timeproperty {prop!r} is not one of {', '.join(TIME_PROPERTIES)}")
    result = TimeFilter(TIME_PROPERTIES[prop])
    if timerel is None:
        if time_at is not None or end_time_at is not None:
            raise bad_request("timeAt/endTimeAt given without timerel")
        return result
    if timerel not in ("before", "after", "between"):
        raise bad_request(f"timerel {timerel!r} is not one of before, after, between")
    if time_at is None:
        raise bad_request(f"timerel={timerel} needs timeAt")
    start = _parse_param_time(time_at, "timeAt")
    if timerel == "between":
        if end_time_at is None:
            raise bad_request("timerel=between needs endTimeAt")
        end = _parse_param_time(end_time_at, "endTimeAt")
        if end <= start:
            raise bad_request("endTimeAt must be later than timeAt")
        result.start, result.end = start, end
    elif timerel == "before":
        result.end = start
    else:
        result.start = start
    return result


def _parse_param_time(text: str, name: str) -> int:
    try:
        return to_micros(text)
    except ValueError:
        raise bad_request(f"{name} {text!r} is not an RFC 3339 date-time with a time zone") from None


@dataclass(slots=True)
class Instance:
    """One stored instance as read back."""

    attr: str
    dataset_id: str
    observed_at: int | None
    created_at: int
    modified_at: int
    kind: str
    value: Any
    instance_id: str
    extra: dict[str, Any] | None

    def expanded(self, *, sys_attrs: bool = False) -> dict[str, Any]:
        """The instance in the expanded normalized form (``instanceId`` included)."""
        out: dict[str, Any] = {"type": self.kind, VALUE_KEY.get(self.kind, "value"): self.value}
        if self.extra:
            out.update(self.extra)
        if self.observed_at is not None:
            out["observedAt"] = from_micros(self.observed_at)
        if self.dataset_id:
            out["datasetId"] = self.dataset_id
        out["instanceId"] = self.instance_id
        if sys_attrs:
            out["createdAt"] = from_micros(self.created_at)
            out["modifiedAt"] = from_micros(self.modified_at)
        return out


@dataclass(slots=True)
class Series:
    """One (entity, attribute, datasetId) series."""

    series_id: int
    entity_id: str
    attr: str
    dataset_id: str


@dataclass(slots=True)
class EntitySelector:
    """Which entities and attributes a temporal query reads."""

    tenant: str
    ids: Sequence[str] | None = None
    type_names: Sequence[str] | None = None
    """Type IRIs (and terms) a selected entity has one of: a prefilter for database backends."""
    id_pattern: str | None = None
    type_match: Callable[[Sequence[str]], bool] | None = None
    attrs: Sequence[str] | None = None
    dataset_ids: Sequence[str] | None = None
    """``@none`` selects the default instance."""
    deletions: bool = False
    """Read the deletion marks (timeproperty=deletedAt) instead of the instances."""


def marks_sql(deletions: bool, column: str = "dataset_id") -> str:
    """The datasetId range of deletion-mark series (or its complement)."""
    if deletions:
        return f" AND {column} >= char(31) AND {column} < char(32)"
    return f" AND ({column} < char(31) OR {column} >= char(32))"


def find_entities(conn: sqlite3.Connection, sel: EntitySelector) -> list[tuple[str, list[str]]]:
    """(entity id, type IRIs) of every entity with history matching the selector, by id."""
    sql = "SELECT entity_id, types FROM history_entities WHERE tenant=?"
    args: list[Any] = [sel.tenant]
    if sel.ids is not None:
        sql += f" AND entity_id IN ({','.join('?' * len(sel.ids))})"
        args.extend(sel.ids)
    sql += " ORDER BY entity_id"
    pattern = compile_user_pattern(sel.id_pattern, "idPattern") if sel.id_pattern else None
    out: list[tuple[str, list[str]]] = []
    for entity_id, types_json in conn.execute(sql, args):
        if pattern is not None and not pattern.search(entity_id):
            continue
        types = list(json.loads(types_json))
        if sel.type_match is not None and not sel.type_match(types):
            continue
        out.append((entity_id, types))
    if sel.attrs is not None:
        with_attrs = set(_entities_with_attrs(conn, sel.tenant, [e for e, _ in out], sel.attrs))
        out = [e for e in out if e[0] in with_attrs]
    return out


def _entities_with_attrs(conn: sqlite3.Connection, tenant: str, ids: Sequence[str], attrs: Sequence[str]) -> set[str]:
    found: set[str] = set()
    marks = ",".join("?" * len(attrs))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(
            r[0]
            for r in conn.execute(
                f"SELECT DISTINCT entity_id FROM history_series WHERE tenant=? AND attr IN ({marks}) "
                f"AND entity_id IN ({','.join('?' * len(chunk))})",
                [tenant, *attrs, *chunk],
            )
        )
    return found


def series_of(conn: sqlite3.Connection, sel: EntitySelector, entity_ids: Sequence[str]) -> list[Series]:
    """The series of these entities (restricted to the selector's attrs and datasetIds)."""
    out: list[Series] = []
    for start in range(0, len(entity_ids), 500):
        chunk = entity_ids[start : start + 500]
        sql = (
            "SELECT series_id, entity_id, attr, dataset_id FROM history_series WHERE tenant=? "
            f"AND entity_id IN ({','.join('?' * len(chunk))})"
        )
        args: list[Any] = [sel.tenant, *chunk]
        if sel.attrs is not None:
            sql += f" AND attr IN ({','.join('?' * len(sel.attrs))})"
            args.extend(sel.attrs)
        mark = DELETION_MARK if sel.deletions else ""
        if sel.dataset_ids is not None:
            wanted = [mark + ("" if d == "@none" else d) for d in sel.dataset_ids]
            sql += f" AND dataset_id IN ({','.join('?' * len(wanted))})"
            args.extend(wanted)
        else:
            sql += marks_sql(sel.deletions)
        for series_id, entity_id, attr, dataset in conn.execute(
            sql + " ORDER BY entity_id, attr, dataset_id", args
        ):
            out.append(Series(series_id, entity_id, attr, dataset[len(mark):]))
    return out


def _order_column(conn: sqlite3.Connection, series: Series, tf: TimeFilter) -> str:
    if tf.column != "observed_at" or tf.start is not None or tf.end is not None:
        return tf.column  # a bound on the column excludes NULLs, and the index gives the order
    # NULLs come first in the (series_id, observed_at) index, so this check is one seek
    has_null = conn.execute(
        "SELECT 1 FROM history_instances WHERE series_id=? AND observed_at IS NULL LIMIT 1", (series.series_id,)
    ).fetchone()
    if has_null is None:
        return "observed_at"  # the index gives the order (and ranges)
    # instances lacking observedAt still have a place in time: when they were written
    return "COALESCE(observed_at, created_at)"


def instances(
    conn: sqlite3.Connection,
    series: Series,
    tf: TimeFilter,
    *,
    last_n: int | None = None,
    limit: int | None = None,
) -> list[Instance]:
    """Instances of one series in time order (the last ``last_n`` only, when given)."""
    where, args = tf.sql()
    order = _order_column(conn, series, tf)
    sql = (
        "SELECT rowid, observed_at, created_at, modified_at, kind, value, instance_id, extra "
        f"FROM history_instances WHERE series_id=?{where}"
    )
    if last_n is not None:
        sql += f" ORDER BY {order} DESC, rowid DESC LIMIT ?"
        rows = list(conn.execute(sql, [series.series_id, *args, last_n]))
        rows.reverse()
    else:
        sql += f" ORDER BY {order}, rowid"
        if limit is not None:
            sql += " LIMIT ?"
            args = [*args, limit]
        rows = list(conn.execute(sql, [series.series_id, *args]))
    return [
        Instance(
            series.attr,
            series.dataset_id,
            observed,
            created,
            modified,
            kind,
            json.loads(value) if value is not None else None,
            instance_id or f"{INSTANCE_PREFIX}{rowid}",
            json.loads(extra) if extra else None,
        )
        for rowid, observed, created, modified, kind, value, instance_id, extra in rows
    ]


def time_span(conn: sqlite3.Connection, series: Series, tf: TimeFilter) -> tuple[int, int] | None:
    """(first, last) instance time of a series within the filter, or None when empty."""
    where, args = tf.sql()
    order = _order_column(conn, series, tf)
    row = conn.execute(
        f"SELECT MIN({order}), MAX({order}) FROM history_instances WHERE series_id=?{where}",
        [series.series_id, *args],
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


# --------------------------------------------------------------------------- aggregation


_DURATION = re.compile(
    r"^P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


@dataclass(frozen=True, slots=True)
class Duration:
    """An ISO 8601 duration: calendar part (months) and fixed part (microseconds)."""

    months: int = 0
    micros: int = 0

    @property
    def is_zero(self) -> bool:
        """P0D: one bucket over the whole requested interval."""
        return self.months == 0 and self.micros == 0

    def add(self, micros: int) -> int:
        """``micros`` plus this duration (calendar months add on the UTC calendar)."""
        if self.months:
            moment = _EPOCH + timedelta(microseconds=micros)
            month_index = moment.year * 12 + moment.month - 1 + self.months
            year, month = divmod(month_index, 12)
            day = min(moment.day, _days_in_month(year, month + 1))
            moment = moment.replace(year=year, month=month + 1, day=day)
            micros = to_micros(moment)
        return micros + self.micros


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (datetime(year, month + 1, 1) - datetime(year, month, 1)).days


def parse_duration(text: str) -> Duration:
    """Parse ``aggrPeriodDuration`` (e.g. PT1H, P1D, P1M, P0D); raise BadRequestData."""
    match = _DURATION.match(text or "")
    if match is None or text in ("P", "PT") or text.endswith("T"):
        raise bad_request(f"aggrPeriodDuration {text!r} is not an ISO 8601 duration (e.g. PT1H, P1D, P1M)")
    g = {k: v or "0" for k, v in match.groupdict().items()}
    months = int(g["y"]) * 12 + int(g["mo"])
    seconds = (
        int(g["w"]) * 7 * 86400 + int(g["d"]) * 86400 + int(g["h"]) * 3600 + int(g["mi"]) * 60 + float(g["s"])
    )
    return Duration(months, round(seconds * 1_000_000))


def parse_methods(text: str | None) -> list[str]:
    """Validate ``aggrMethods`` (comma-separated); raise BadRequestData."""
    if not text:
        raise bad_request("aggregatedValues needs aggrMethods (e.g. aggrMethods=avg,max)")
    methods = [m for m in text.split(",") if m]
    for method in methods:
        if method not in AGGREGATION_METHODS:
            raise bad_request(f"aggrMethods: {method!r} is not one of {', '.join(AGGREGATION_METHODS)}")
    return list(dict.fromkeys(methods))


@dataclass(slots=True)
class Bucket:
    """Running aggregates of one period."""

    start: int
    end: int
    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    numbers: int = 0
    low: Any = None
    high: Any = None
    distinct: int = 0

    def result(self, method: str) -> Any:
        """The value of one aggregation method (None when it does not apply)."""
        if method == "totalCount":
            return self.count
        if method == "distinctCount":
            return self.distinct
        if method == "min":
            return self.low
        if method == "max":
            return self.high
        if not self.numbers:
            return None
        if method == "sum":
            return self.total
        if method == "avg":
            return self.total / self.numbers
        if method == "sumsq":
            return self.squares
        if method == "stddev":
            mean = self.total / self.numbers
            return math.sqrt(max(0.0, self.squares / self.numbers - mean * mean))
        return None


def aggregate(
    conn: sqlite3.Connection,
    series: Series,
    tf: TimeFilter,
    period: Duration,
    *,
    origin: int | None = None,
    until: int | None = None,
    methods: Sequence[str] | None = None,
) -> list[Bucket]:
    """Aggregate one series over consecutive periods starting at ``origin`` (default: first instance).

    Everything is computed by SQLite over the time index: fixed periods (weeks and shorter) in
    one GROUP BY, calendar periods (months, years) and P0D with one range query per period.
    """
    span = time_span(conn, series, tf)
    if span is None:
        return []
    first, last = span
    start = origin if origin is not None else (tf.start if tf.start is not None else first)
    stop = until if until is not None else (tf.end if tf.end is not None else last + 1)
    stop = max(stop, start + 1)
    where, args = tf.sql()
    order = _order_column(conn, series, tf)
    if period.is_zero:
        return _aggregate_fixed(conn, series, where, args, order, start, stop, stop - start, methods)
    if period.months == 0:
        return _aggregate_fixed(conn, series, where, args, order, start, stop, period.micros, methods)
    out: list[Bucket] = []
    low = start
    periods = 0
    while low < stop and periods < 100_000:
        high = period.add(low)
        out.extend(_aggregate_fixed(conn, series, where, args, order, low, min(high, stop), high - low, methods))
        low = high
        periods += 1
    return out


_STRING_JSON: Final = "CASE WHEN num IS NULL AND value LIKE '\"%' THEN value END"


def _aggregate_fixed(
    conn: sqlite3.Connection,
    series: Series,
    where: str,
    args: list[Any],
    order: str,
    start: int,
    stop: int,
    step: int,
    methods: Sequence[str] | None = None,
) -> list[Bucket]:
    wanted = set(AGGREGATION_METHODS if methods is None else methods)
    # only what was asked is computed: COUNT(DISTINCT) and the string extremes cost as much as the rest
    distinct = "COUNT(DISTINCT value)" if "distinctCount" in wanted else "0"
    numeric = bool(wanted & {"sum", "avg", "stddev", "sumsq"})
    sums = "COUNT(num), SUM(num), SUM(num * num)" if numeric else "COUNT(num), 0, 0"
    extremes = bool(wanted & {"min", "max"})
    bounds = (
        f"MIN(num), MAX(num), MIN({_STRING_JSON}), MAX({_STRING_JSON})" if extremes else "NULL, NULL, NULL, NULL"
    )
    sql = (
        f"SELECT ({order} - ?) / ? AS b, COUNT(*), {distinct}, {sums}, {bounds} "
        f"FROM history_instances WHERE series_id=?{where} AND {order} >= ? AND {order} < ? GROUP BY b ORDER BY b"
    )
    out: list[Bucket] = []
    for b, count, n_distinct, numbers, total, squares, low, high, slow, shigh in conn.execute(
        sql, [start, step, series.series_id, *args, start, stop]
    ):
        bucket = Bucket(start + int(b) * step, start + (int(b) + 1) * step, count=int(count))
        bucket.distinct = int(n_distinct)
        bucket.numbers = int(numbers)
        bucket.total = float(total or 0.0)
        bucket.squares = float(squares or 0.0)
        if numbers:
            bucket.low, bucket.high = low, high
        elif slow is not None:
            bucket.low, bucket.high = json.loads(slow), json.loads(shigh)
        out.append(bucket)
    return out


def check_limit(value: str | None, name: str, maximum: int) -> int | None:
    """A positive integer query parameter (lastN, limit...) or None; raise BadRequestData."""
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise bad_request(f"{name} must be a positive integer, got {value!r}")
    number = int(value)
    if number > maximum:
        raise NgsiError("TooManyResults", f"{name}={number} exceeds the maximum of {maximum}")
    return number
