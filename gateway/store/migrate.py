"""``jonction store migrate-data``: copy a territory between the SQLite store and PostgreSQL, verified.

Either direction (SQLite to PostgreSQL, or back). Copies every tenant's entities (stored documents
as they are: ids, types, system times), hosted @contexts, subscriptions, context source
registrations and the attribute history, then checks per tenant that the counts match and that
order-independent checksums of the entities (canonical JSON) and of the history (entity,
attribute, datasetId, time, kind) are equal on both sides. The source is only read (a PostgreSQL
source in one read-only snapshot), and a target already holding entities is refused.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import ConfigInvalid
from gateway.model import VALUE_KEY
from gateway.store import codec, history
from gateway.store.backends import describe, is_postgresql, sqlite_path
from gateway.store.records import Change, Doc, Mutation

_CHUNK = 2000
"""Entities per write transaction."""
_HISTORY_CHUNK = 20_000
_DOC_TABLES = ("subscriptions", "csource_registrations", "csource_subscriptions")
"""Tables of one JSON document per (tenant, id), copied unchanged from PostgreSQL to SQLite."""
"""History rows per write transaction."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class TenantReport:
    """What was copied for one tenant, and whether both sides agree."""

    entities: int = 0
    history: int = 0
    entity_sums: tuple[str, str] = ("", "")
    """(source, target) checksums of the entities."""
    history_sums: tuple[str, str] = ("", "")
    target_entities: int = 0
    target_history: int = 0

    @property
    def verified(self) -> bool:
        """True when counts and checksums match."""
        return (
            self.entities == self.target_entities
            and self.history == self.target_history
            and self.entity_sums[0] == self.entity_sums[1]
            and self.history_sums[0] == self.history_sums[1]
        )


@dataclass(slots=True)
class MigrationReport:
    """The whole copy: per tenant figures, contexts and subscriptions."""

    tenants: dict[str, TenantReport] = field(default_factory=dict)
    contexts: int = 0
    subscriptions: int = 0
    registrations: int = 0
    csource_subscriptions: int = 0

    @property
    def verified(self) -> bool:
        """True when every tenant verified."""
        return all(t.verified for t in self.tenants.values())

    def lines(self) -> list[str]:
        """A human summary, one line per tenant."""
        out = []
        for name, t in sorted(self.tenants.items()):
            state = "ok" if t.verified else "MISMATCH"
            out.append(
                f"tenant {name or '(default)'}: {t.entities} entities, {t.history} history instances, "
                f"checksums {t.entity_sums[0][:12]}/{t.history_sums[0][:12]}: {state}"
            )
        out.append(f"{self.contexts} hosted @contexts, {self.subscriptions} subscriptions, "
                   f"{self.registrations} context source registrations, "
                   f"{self.csource_subscriptions} context source subscriptions")
        return out


class _Sum:
    """An order-independent checksum: the sum of SHA-256 prefixes of the items, modulo 2**128."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, text: str) -> None:
        self.total = (self.total + int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")) % (1 << 128)

    def hex(self) -> str:
        return f"{self.total:032x}"


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _history_key(entity_id: str, attr: str, dataset: str, micros: int, kind: str) -> str:
    return "\x1e".join((entity_id, attr, dataset, str(micros), kind))


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _put(doc: Doc) -> Change:
    """A change that stores ``doc`` exactly as it is (no new system times, no history row)."""
    return Change(doc["id"], lambda current, now: Mutation(doc, "created"))


def _source(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ConfigInvalid(f"--from: no SQLite store at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return conn


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def _history_rows(conn: sqlite3.Connection, tenant: str) -> Iterator[tuple[str, list[str], str, dict[str, Any], int]]:
    """(entity id, types, attribute, expanded instance, row id) of one tenant's history, by series."""
    types: dict[str, list[str]] = {
        e: json.loads(t)
        for e, t in conn.execute("SELECT entity_id, types FROM history_entities WHERE tenant = ?", (tenant,))
    }
    cursor = conn.execute(
        "SELECT s.entity_id, s.attr, s.dataset_id, i.rowid, i.observed_at, i.modified_at, i.kind, i.value, "
        "i.instance_id, i.extra FROM history_series s JOIN history_instances i ON i.series_id = s.series_id "
        "WHERE s.tenant = ?",
        (tenant,),
    )
    for entity_id, attr, dataset, rowid, observed, modified, kind, value, instance_id, extra in cursor:
        inst: dict[str, Any] = json.loads(extra) if extra else {}
        inst["type"] = kind
        inst[VALUE_KEY.get(kind, "value")] = json.loads(value) if value is not None else None
        if observed is not None:
            inst["observedAt"] = history.from_micros(observed)
        inst["modifiedAt"] = history.from_micros(modified)
        if dataset:
            inst["datasetId"] = dataset
        inst["instanceId"] = instance_id or f"{history.INSTANCE_PREFIX}{rowid}"
        yield entity_id, types.get(entity_id, []), attr, inst, (observed if observed is not None else modified)


async def migrate_data(source: str | Path, target: str | Path) -> MigrationReport:
    """Copy the store at ``source`` into ``target`` (SQLite to PostgreSQL, or back) and verify the copy."""
    if is_postgresql(source) and not is_postgresql(target):
        return await _to_sqlite(str(source), sqlite_path(target))
    if is_postgresql(source):
        raise ConfigInvalid("--from and --to are both PostgreSQL databases: use pg_dump and pg_restore")
    if not is_postgresql(target):
        raise ConfigInvalid("--from and --to are both SQLite stores: copy the file (with the store stopped)")
    target = str(target)
    from gateway.store.postgres import PostgresStorage
    from gateway.store.postgres.history import Recorder

    conn = _source(sqlite_path(source))
    storage = PostgresStorage(target)
    await storage.start()
    report = MigrationReport()
    try:
        tenants = sorted({""} | {r[0] for r in conn.execute("SELECT name FROM tenants")})
        busy = [t for t in tenants if await storage.count_docs(t)]
        if busy:
            raise ConfigInvalid(
                f"--to {describe(target)} already holds entities of tenants {busy}: migrate into an empty database"
            )
        for cid, doc in conn.execute("SELECT id, doc FROM contexts"):
            await storage.put_context(cid, codec.loads(doc))
            report.contexts += 1
        for tenant in tenants:
            t = report.tenants[tenant] = TenantReport()
            source_sum = _Sum()
            batch: list[Change] = []
            for (text,) in conn.execute("SELECT doc FROM entities WHERE tenant = ? ORDER BY id", (tenant,)):
                doc = codec.loads(text)
                source_sum.add(_canonical(doc))
                batch.append(_put(doc))
                if len(batch) >= _CHUNK:
                    await storage.apply(tenant, batch, create_tenant=True)
                    batch = []
                t.entities += 1
            await storage.apply(tenant, batch, create_tenant=True)
            history_sum = _Sum()
            if _has_table(conn, "history_instances"):
                recorder = Recorder()
                rows: list[Any] = []
                for entity_id, types, attr, inst, micros in _history_rows(conn, tenant):
                    history_sum.add(_history_key(entity_id, attr, inst.get("datasetId", ""), micros, inst["type"]))
                    rows.append((tenant, entity_id, types, attr, inst))
                    if len(rows) >= _HISTORY_CHUNK:
                        t.history += await _write_history(storage, recorder, tenant, rows)
                        rows = []
                t.history += await _write_history(storage, recorder, tenant, rows)
            target_sum, target_history, t.target_entities, t.target_history = await _target_sums(storage, tenant)
            t.entity_sums = (source_sum.hex(), target_sum)
            t.history_sums = (history_sum.hex(), target_history)
        if _has_table(conn, "subscriptions"):
            records = storage.subscription_records()
            for tenant, sub_id, doc in conn.execute("SELECT tenant, id, doc FROM subscriptions"):
                await records.save(tenant, sub_id, doc)
                report.subscriptions += 1
        if _has_table(conn, "csource_registrations"):
            registrations = storage.registration_records()
            for tenant, reg_id, doc in conn.execute("SELECT tenant, id, doc FROM csource_registrations"):
                await registrations.create(tenant, reg_id, doc)
                report.registrations += 1
        if _has_table(conn, "csource_subscriptions"):
            csubs = storage.csource_subscription_records()
            for tenant, sub_id, doc in conn.execute("SELECT tenant, id, doc FROM csource_subscriptions"):
                await csubs.create(tenant, sub_id, doc)
                report.csource_subscriptions += 1
    finally:
        conn.close()
        await storage.close()
    return report


async def _write_history(storage: Any, recorder: Any, tenant: str, rows: list[Any]) -> int:
    if not rows:
        return 0
    async with storage._db().acquire() as pg, pg.transaction():
        written, months = await recorder.record(pg, tenant, rows, history.from_micros(history.now_micros()))
    recorder.committed(months)
    return int(written)


async def _target_sums(storage: Any, tenant: str) -> tuple[str, str, int, int]:
    """Checksums and counts of one tenant as PostgreSQL holds it."""
    entities = _Sum()
    count = 0
    history_sum = _Sum()
    instances = 0
    async with storage._db().acquire() as pg, pg.transaction():
        async for (text,) in pg.cursor("SELECT doc::text FROM entities WHERE tenant = $1", tenant):
            entities.add(_canonical(codec.loads(text)))
            count += 1
        async for entity_id, attr, dataset, ts, kind in pg.cursor(
            "SELECT entity_id, attr, dataset_id, ts, kind FROM history WHERE tenant = $1", tenant
        ):
            history_sum.add(_history_key(entity_id, attr, dataset, _micros(ts), kind))
            instances += 1
    return entities.hex(), history_sum.hex(), count, instances


async def _to_sqlite(source: str, path: Path) -> MigrationReport:
    """Copy the PostgreSQL database ``source`` into the SQLite store at ``path`` and verify the copy."""
    import asyncpg

    from gateway.store.backends import open_storage
    from gateway.store.postgres.migrations import applied
    from gateway.store.subscriptions import ensure_schema as subscriptions_schema

    report = MigrationReport()
    sums: dict[str, tuple[_Sum, _Sum]] = {}
    pg = await asyncpg.connect(source)
    try:
        async with pg.transaction(isolation="repeatable_read", readonly=True):
            if not await applied(pg):
                raise ConfigInvalid(f"--from {describe(source)} holds no jonction store (never migrated)")
            tenants = sorted({""} | {r[0] for r in await pg.fetch("SELECT name FROM tenants")})
            storage = await open_storage(path, gc_tuning=False)
            try:
                busy = [t for t in tenants if await storage.count(t)]
                if busy:
                    raise ConfigInvalid(
                        f"--to {describe(path)} already holds entities of tenants {busy}: migrate into an empty store"
                    )
                for cid, doc in await pg.fetch("SELECT id, doc::text FROM contexts ORDER BY id"):
                    await storage.put_context(cid, codec.loads(doc))
                    report.contexts += 1
                for tenant in tenants:
                    t = report.tenants[tenant] = TenantReport()
                    sums[tenant] = (_Sum(), _Sum())
                    batch: list[Change] = []
                    async for (text,) in pg.cursor(
                        "SELECT doc::text FROM entities WHERE tenant = $1 ORDER BY id", tenant
                    ):
                        doc = codec.loads(text)
                        sums[tenant][0].add(_canonical(doc))
                        batch.append(_put(doc))
                        if len(batch) >= _CHUNK:
                            await storage.apply(tenant, batch, create_tenant=True)
                            batch = []
                        t.entities += 1
                    await storage.apply(tenant, batch, create_tenant=True)
            finally:
                await storage.close()
            # the history and subscriptions go straight into the file, the storage closed
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                history.ensure_schema(conn)
                subscriptions_schema(conn)
                for tenant in tenants:
                    t = report.tenants[tenant]
                    types = {e: list(k) for e, k in await pg.fetch(
                        "SELECT entity_id, types FROM history_entities WHERE tenant = $1", tenant
                    )}
                    rows: list[history.HistoryRow] = []
                    async for row in pg.cursor(
                        "SELECT entity_id, attr, dataset_id, ts, observed_at, modified_at, kind, value::text, "
                        "instance_id, extra::text FROM history WHERE tenant = $1 ORDER BY entity_id, attr, dataset_id, "
                        "ts", tenant,
                    ):
                        entity_id, attr, dataset, ts, observed, modified, kind, value, instance_id, extra = row
                        sums[tenant][1].add(_history_key(entity_id, attr, dataset, _micros(ts), kind))
                        inst: dict[str, Any] = codec.loads(extra) if extra else {}
                        inst["type"] = kind
                        inst[VALUE_KEY.get(kind, "value")] = codec.loads(value) if value is not None else None
                        if observed is not None:
                            inst["observedAt"] = history.from_micros(_micros(observed))
                        inst["modifiedAt"] = history.from_micros(_micros(modified))
                        if dataset:
                            inst["datasetId"] = dataset
                        if instance_id:
                            inst["instanceId"] = instance_id
                        rows.append((tenant, entity_id, types.get(entity_id, []), attr, inst))
                        if len(rows) >= _HISTORY_CHUNK:
                            t.history += _write_sqlite_history(conn, rows)
                            rows = []
                    t.history += _write_sqlite_history(conn, rows)
                copied: dict[str, int] = {}
                for table in _DOC_TABLES:  # (tenant, id, doc) tables: copied as they are
                    docs = await pg.fetch(f"SELECT tenant, id, doc::text FROM {table} ORDER BY tenant, id")
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(f"INSERT INTO {table} (tenant, id, doc) VALUES (?, ?, ?)",
                                     [tuple(r) for r in docs])
                    conn.execute("COMMIT")
                    copied[table] = len(docs)
                report.subscriptions = copied["subscriptions"]
                report.registrations = copied["csource_registrations"]
                report.csource_subscriptions = copied["csource_subscriptions"]
            finally:
                conn.close()
    finally:
        await pg.close()
    check = _source(path)
    try:
        for tenant, t in report.tenants.items():
            entities, count, history_sum, instances = _sqlite_sums(check, tenant)
            t.target_entities, t.target_history = count, instances
            t.entity_sums = (sums[tenant][0].hex(), entities)
            t.history_sums = (sums[tenant][1].hex(), history_sum)
    finally:
        check.close()
    return report


def _write_sqlite_history(conn: sqlite3.Connection, rows: list[history.HistoryRow]) -> int:
    if not rows:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        written = history.record_many(conn, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return written


def _sqlite_sums(conn: sqlite3.Connection, tenant: str) -> tuple[str, int, str, int]:
    """Checksums and counts of one tenant as the SQLite store holds it."""
    entities = _Sum()
    count = 0
    for (text,) in conn.execute("SELECT doc FROM entities WHERE tenant = ?", (tenant,)):
        entities.add(_canonical(codec.loads(text)))
        count += 1
    history_sum = _Sum()
    instances = 0
    if _has_table(conn, "history_instances"):
        for entity_id, _, attr, inst, micros in _history_rows(conn, tenant):
            history_sum.add(_history_key(entity_id, attr, inst.get("datasetId", ""), micros, inst["type"]))
            instances += 1
    return entities.hex(), count, history_sum.hex(), instances
