"""The PostgreSQL/PostGIS implementation of :class:`gateway.store.base.Storage` (asyncpg).

Entities are JSONB documents in one ``entities`` table keyed by (tenant, id), beside their type
IRIs (``types``, GIN), an attribute summary (``attrs``, GIN: attribute existence and discovery)
and, in ``geo``, the bounding box of every GeoProperty instance as a PostGIS polygon (GiST).
A batch is ONE transaction that holds a per-tenant advisory lock, so several store processes on
one database write a tenant in turn and read each other's writes.

Every written attribute instance is appended to ``history`` (partitioned by month) in the same
transaction; the temporal API reads it through :meth:`PostgresStorage.history_slice` and writes it
through :class:`~gateway.store.postgres.history.PostgresHistoryWrites`. Subscriptions persist in
``subscriptions``; the process holding the notifier's advisory lock notifies every process's
writes (it follows the change log), and another takes over when it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg

from gateway import model
from gateway.errors import Unavailable
from gateway.store import codec, history, jsonld
from gateway.store.base import StorageBase
from gateway.store.indexing import SortKey, attr_summary, geo_boxes, geo_values
from gateway.store.patterns import compile_user_pattern
from gateway.store.postgres import migrations
from gateway.store.postgres.compile import Where, compile_spec
from gateway.store.postgres.history import HistoryRow, PostgresHistoryWrites, Recorder, array_literal, history_slice
from gateway.store.problems import NgsiError
from gateway.store.records import (
    DEFAULT_TENANT,
    Change,
    ChangeEvent,
    ChangeResult,
    Doc,
    HistorySlice,
    HistoryWrites,
    Listener,
    QueryResult,
    QuerySpec,
    SubscriptionRecords,
    TypeInfo,
)
from gateway.store.urls import describe

log = logging.getLogger("jonction.store")

NOTIFIER_LOCK: Final = 0x6A6F6E6374_03
"""Session advisory lock of the process that sends notifications (released when its connection ends)."""
CHANGE_LOG_LOCK: Final = 0x6A6F6E6374_04
"""Transaction advisory lock serializing appends to the change log (seq order = commit order)."""
_SCAN_CHUNK = 500
"""Rows fetched per round trip when Python decides (keyset pagination on id)."""
_FIRST_CHUNK_MIN = 32
"""Fewest rows the first round trip asks for (a page's worth, plus what the Python test may reject)."""
_TENANT_LOCK = "jonction.tenant:"
"""Prefix of the per-tenant advisory lock key (hashed with hashtext)."""

_UPSERT = """
INSERT INTO entities(tenant, id, type, types, attrs, doc)
SELECT $1, u.id, (u.types::text[])[1], u.types::text[], u.attrs::jsonb, u.doc::jsonb
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, attrs, doc, types)
ON CONFLICT (tenant, id) DO UPDATE
SET type = excluded.type, types = excluded.types, attrs = excluded.attrs, doc = excluded.doc
"""
_UPDATE = """
UPDATE entities AS e
SET type = (u.types::text[])[1], types = u.types::text[], attrs = u.attrs::jsonb, doc = u.doc::jsonb
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, attrs, doc, types)
WHERE e.tenant = $1 AND e.id = u.id
"""
_ADD_BOXES = """
INSERT INTO geo(tenant, id, attr, k, geom)
SELECT $1, b.id, b.attr, b.k, ST_MakeEnvelope(b.minlon, b.minlat, b.maxlon, b.maxlat, 4326)
FROM unnest($2::text[], $3::text[], $4::int[], $5::float8[], $6::float8[], $7::float8[], $8::float8[])
     AS b(id, attr, k, minlon, minlat, maxlon, maxlat)
"""


def _now() -> str:
    return model.format_time(datetime.now(UTC))


class PostgresSubscriptionRecords:
    """Subscriptions in the ``subscriptions`` table, through the storage's connection pool."""

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage

    async def load_all(self) -> list[tuple[str, str, str]]:
        """Every stored subscription as (tenant, id, JSON document)."""
        rows = await self.storage._db().fetch("SELECT tenant, id, doc::text FROM subscriptions")
        return [(r[0], r[1], r[2]) for r in rows]

    async def save(self, tenant: str, sub_id: str, document: str) -> None:
        """Create or replace one subscription's document."""
        await self.storage._db().execute(
            "INSERT INTO subscriptions(tenant, id, doc) VALUES($1, $2, $3::jsonb) "
            "ON CONFLICT (tenant, id) DO UPDATE SET doc = excluded.doc",
            tenant,
            sub_id,
            document,
        )

    async def delete(self, tenant: str, sub_id: str) -> None:
        """Forget one subscription."""
        await self.storage._db().execute("DELETE FROM subscriptions WHERE tenant = $1 AND id = $2", tenant, sub_id)

    async def close(self) -> None:
        """Nothing to release: the pool belongs to the storage."""


class PostgresStorage(StorageBase):
    """The store on PostgreSQL 15+ with PostGIS 3 (``postgresql://user@host:port/database``)."""

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        super().__init__()
        self.url = url
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._tenants: set[str] = {DEFAULT_TENANT}
        self._closed = False
        self._history = Recorder()
        self._feed: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self.context_refresh = 2.0
        """Seconds between checks for @contexts hosted (or deleted) through another process."""
        self._leader = False
        self._origin = uuid.uuid4().hex
        """This storage's name in the change log (the rows it notified itself are skipped when read back)."""
        self.takeover_interval = 1.0
        """Seconds between attempts to take the notifier lock (the takeover delay when its holder dies)."""
        self.poll_interval = 0.1
        """Seconds between reads of the change log while it is empty."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, apply the missing migrations, load tenants and hosted contexts (idempotent)."""
        if self._pool is not None:
            return
        try:
            # Custom plans: a generic plan cannot see which types or attributes a query names, and
            # would sort a whole tenant where an ordered index scan stops after one page.
            pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self.pool_size,
                server_settings={"plan_cache_mode": "force_custom_plan", "application_name": "jonction store"},
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise Unavailable(f"cannot connect to PostgreSQL at {describe(self.url)}: {exc}") from None
        assert pool is not None
        try:
            async with pool.acquire() as conn:
                await migrations.migrate(conn)
                self._tenants.update(r[0] for r in await conn.fetch("SELECT name FROM tenants"))
                for cid, doc in await conn.fetch("SELECT id, doc::text FROM contexts"):
                    self._hosted[cid] = codec.loads(doc)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._follower = asyncio.get_running_loop().create_task(self._follow_contexts())
        # Warm up the bundled contexts now rather than in the first request.
        self._contexts.get([])
        self._contexts.get([jsonld.jonction_context_iri()])

    async def close(self) -> None:
        """Close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for task in (self._feed, self._follower):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pool is not None:
            await self._pool.close()

    def _db(self) -> asyncpg.Pool:
        if self._closed or self._pool is None:
            raise NgsiError("InternalError", "the store is closed" if self._closed else "the store is not started")
        return self._pool

    # ------------------------------------------------------------------ contexts

    async def put_context(self, context_id: str, document: Mapping[str, Any]) -> None:
        """Host a JSON-LD context document under ``context_id`` (persisted)."""
        doc = dict(document)
        await self._db().execute(
            "INSERT INTO contexts(id, doc) VALUES($1, $2::jsonb) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
            context_id,
            codec.dumps(doc),
        )
        self._hosted[context_id] = doc
        self._contexts.clear()

    async def delete_context(self, context_id: str) -> bool:
        """Stop hosting a context; False when unknown."""
        status = await self._db().execute("DELETE FROM contexts WHERE id = $1", context_id)
        self._hosted.pop(context_id, None)
        self._contexts.clear()
        return bool(status != "DELETE 0")

    def subscription_records(self) -> SubscriptionRecords:
        """Subscriptions in the ``subscriptions`` table of this database."""
        return PostgresSubscriptionRecords(self)

    async def _follow_contexts(self) -> None:
        """Reload the hosted contexts when another process sharing the database changed them."""
        seen: str | None = None
        while True:
            await asyncio.sleep(self.context_refresh)
            try:
                digest = await self._db().fetchval(
                    "SELECT coalesce(md5(string_agg(id || ':' || md5(doc::text), ',' ORDER BY id)), '') FROM contexts"
                )
                if seen is not None and digest != seen:
                    rows = await self._db().fetch("SELECT id, doc::text FROM contexts")
                    self._hosted = {cid: codec.loads(doc) for cid, doc in rows}
                    self._contexts.clear()
                seen = digest
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, NgsiError) as exc:
                log.warning("store: following the hosted @contexts failed (%s)", exc)

    async def history_slice(
        self, tenant: str, entity_ids: Sequence[str] | None, start: int | None, end: int | None,
        *, types: Sequence[str] | None = None,
    ) -> HistorySlice:
        """The history of some entities within [start, end) (µs), for the temporal API's reads."""
        async with self._db().acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            return await history_slice(conn, tenant, entity_ids, start, end, types)

    def history_writes(self) -> HistoryWrites:
        """Temporal writes on this database's history."""
        return PostgresHistoryWrites(self._db(), self._history)

    # ------------------------------------------------------------------ tenants

    async def tenants(self) -> list[str]:
        """Every tenant that exists (the default one included)."""
        rows = await self._db().fetch("SELECT name FROM tenants")
        self._tenants.update(r[0] for r in rows)
        return sorted(self._tenants)

    async def tenant_exists(self, tenant: str) -> bool:
        """True when the tenant exists (another process may have created it)."""
        if tenant in self._tenants:
            return True
        if await self._db().fetchval("SELECT 1 FROM tenants WHERE name = $1", tenant):
            self._tenants.add(tenant)
            return True
        return False

    # ------------------------------------------------------------------ writes

    async def apply(
        self, tenant: str, changes: Sequence[Change], *, create_tenant: bool = False
    ) -> list[ChangeResult]:
        """Apply changes in array order in ONE transaction; per-change errors do not abort."""
        if not create_tenant and not await self.tenant_exists(tenant):
            raise NgsiError("NonexistentTenant", f"tenant {tenant!r} does not exist")
        try:
            return await self._apply_tx(tenant, changes)
        except asyncpg.exceptions.UntranslatableCharacterError:
            # PostgreSQL text and jsonb cannot hold U+0000; SQLite can: say so instead of a 500
            raise NgsiError(
                "BadRequestData", "the batch holds a string with the character U+0000, which this store cannot keep"
            ) from None

    async def _apply_tx(self, tenant: str, changes: Sequence[Change]) -> list[ChangeResult]:
        async with self._db().acquire() as conn, conn.transaction():
            # one writer per tenant across processes: the read-modify-write below stays consistent
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _TENANT_LOCK + tenant)
            if tenant not in self._tenants:
                await conn.execute("INSERT INTO tenants(name) VALUES($1) ON CONFLICT DO NOTHING", tenant)
            results, events, touched, originals, state, written = await self._apply_in(conn, tenant, changes)
            await self._store_many(conn, tenant, touched, originals, state)
            months: set[tuple[int, int]] = set()
            if written:
                # same transaction: history and current state never disagree
                _, months = await self._history.record(conn, tenant, written, _now())
            # The notifying process notifies its own writes at once (as a single process would, before
            # its client's next request); the change log carries the others' writes to it.
            local = self._leader
            if events and await conn.fetchval("SELECT EXISTS(SELECT 1 FROM subscriptions WHERE tenant = $1)", tenant):
                await self._log_changes(conn, events, local)
        self._tenants.add(tenant)
        self._history.committed(months)
        if local:
            await self._notify(events)
        return results

    async def _log_changes(self, conn: Any, events: Sequence[ChangeEvent], local: bool) -> None:
        """Append the commit's events for the notifying process (whichever process that is)."""
        # Held until commit: appends commit in seq order, so the reader's cursor never skips one.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CHANGE_LOG_LOCK)
        await conn.execute(
            "INSERT INTO change_log(tenant, entity_id, entity_type, before, after, notified_by) "
            "SELECT $1, u.id, u.type, u.before::jsonb, u.after::jsonb, $6 "
            "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, type, before, after)",
            events[0].tenant,
            [e.entity_id for e in events],
            [e.entity_type for e in events],
            [None if e.before is None else codec.dumps(e.before) for e in events],
            [None if e.after is None else codec.dumps(e.after) for e in events],
            self._origin if local else None,
        )

    # ------------------------------------------------------------------ notifications

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback`` with the committed events of every process, while this one holds the notifier lock."""
        super().add_listener(callback)
        if self._feed is None and not self._closed:
            self._feed = asyncio.get_running_loop().create_task(self._follow_changes())

    def delivers_notifications(self) -> bool:
        """True while this process holds the notifier's advisory lock (it alone sends notifications)."""
        return self._leader

    async def _follow_changes(self) -> None:
        """Take the notifier lock when free (another process died or closed), then feed the change log."""
        while not self._closed:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self.url)
                while True:  # polled: a lock released by a dead session signals nothing to wait on
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", NOTIFIER_LOCK):
                        break
                    await asyncio.sleep(self.takeover_interval)
                self._leader = True
                log.info("store: this process sends the notifications (it holds the notifier lock)")
                cursor = int(await conn.fetchval("SELECT seq FROM notifier_cursor WHERE name = 'notifier'") or 0)
                while True:
                    rows = await conn.fetch(
                        "SELECT seq, xid, tenant, entity_id, entity_type, before::text, after::text, "
                        "notified_by IS NOT DISTINCT FROM $2 FROM change_log WHERE seq > $1 ORDER BY seq LIMIT 1000",
                        cursor,
                        self._origin,
                    )
                    if not rows:
                        await asyncio.sleep(self.poll_interval)
                        continue
                    for group in _commits(rows):
                        await self._notify(group)
                    cursor = int(rows[-1][0])
                    await conn.execute(
                        "INSERT INTO notifier_cursor(name, seq) VALUES('notifier', $1) "
                        "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                        cursor,
                    )
                    await conn.execute("DELETE FROM change_log WHERE seq <= $1", cursor)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("store: following the change log failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                self._leader = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))

    async def _apply_in(self, conn: Any, tenant: str, changes: Sequence[Change]) -> tuple[
        list[ChangeResult], list[ChangeEvent], dict[str, None], dict[str, Doc], dict[str, Doc | None], list[HistoryRow]
    ]:
        ids = list(dict.fromkeys(c.entity_id for c in changes))
        rows = await conn.fetch(
            "SELECT id, doc::text FROM entities WHERE tenant = $1 AND id = ANY($2::text[])", tenant, ids
        )
        # The mutators copy their input, so the originals stay valid for the index diff and events.
        originals: dict[str, Doc] = {eid: codec.loads(doc) for eid, doc in rows}
        state: dict[str, Doc | None] = dict(originals)
        touched: dict[str, None] = {}
        results: list[ChangeResult] = []
        written: list[HistoryRow] = []
        now = _now()
        for change in changes:
            eid = change.entity_id
            try:
                mutation = change.mutate(state.get(eid), now)
            except NgsiError as exc:
                results.append(ChangeResult(eid, error=exc))
                continue
            except Exception:  # a bug in one change must not lose the others
                log.exception("store: change on %s failed", eid)
                results.append(ChangeResult(eid, error=NgsiError("InternalError", "unexpected error")))
                continue
            if mutation.outcome != "unchanged":
                before = state.get(eid)
                state[eid] = mutation.doc
                touched[eid] = None
                if mutation.written and mutation.doc is not None:
                    types = mutation.doc["type"]
                    written.extend((tenant, eid, types, attr, inst) for attr, inst in mutation.written)
                if before is not None:
                    # deleted attributes leave a deletedAt mark in their temporal evolution
                    gone = history.deletions(before, mutation.doc, now)
                    written.extend((tenant, eid, before["type"], attr, inst) for attr, inst in gone)
            results.append(ChangeResult(eid, mutation.outcome, not_updated=mutation.not_updated))
        events: list[ChangeEvent] = []
        for eid in touched:
            before = originals.get(eid)
            after = state.get(eid)
            if before is None and after is None:
                continue
            etype = (after or before or {}).get("type", [""])[0]
            events.append(ChangeEvent(tenant, eid, etype, before, after))
        return results, events, touched, originals, state, written

    async def _store_many(
        self,
        conn: Any,
        tenant: str,
        touched: Mapping[str, None],
        originals: Mapping[str, Doc],
        state: Mapping[str, Doc | None],
    ) -> None:
        """Write the final state of every touched entity with a few set-based statements."""
        deletes: list[str] = []
        up_ids: list[str] = []
        up_attrs: list[str] = []
        up_docs: list[str] = []
        up_types: list[str] = []
        ch_ids: list[str] = []
        ch_attrs: list[str] = []
        ch_docs: list[str] = []
        ch_types: list[str] = []
        regeo: list[str] = []
        boxes: list[tuple[str, str, int, float, float, float, float]] = []
        for eid in touched:
            doc = state.get(eid)
            old = originals.get(eid)
            if doc is None:
                if old is not None:
                    deletes.append(eid)
                continue
            # new ids go by INSERT, existing ones by UPDATE: no speculative insertion for an update
            into = (up_ids, up_attrs, up_docs, up_types) if old is None else (ch_ids, ch_attrs, ch_docs, ch_types)
            into[0].append(eid)
            into[1].append(codec.dumps(attr_summary(doc)))
            into[2].append(codec.dumps(doc))
            into[3].append(array_literal(doc["type"]))
            if old is not None and geo_values(old) == geo_values(doc):
                continue  # same geometries (the usual telemetry update): the boxes stay
            if old is not None:
                regeo.append(eid)
            boxes.extend(
                (eid, attr, k, minlon, minlat, maxlon, maxlat)
                for k, (attr, minlon, minlat, maxlon, maxlat) in enumerate(geo_boxes(doc))
            )
        if deletes:
            await conn.execute("DELETE FROM entities WHERE tenant = $1 AND id = ANY($2::text[])", tenant, deletes)
            # no foreign key cascades (migration 6): the boxes go with their entity
            await conn.execute("DELETE FROM geo WHERE tenant = $1 AND id = ANY($2::text[])", tenant, deletes)
        if up_ids:
            await conn.execute(_UPSERT, tenant, up_ids, up_attrs, up_docs, up_types)
        if ch_ids:
            # the tenant's advisory lock is held since the read: every one of these rows is still there
            await conn.execute(_UPDATE, tenant, ch_ids, ch_attrs, ch_docs, ch_types)
        if regeo:
            await conn.execute("DELETE FROM geo WHERE tenant = $1 AND id = ANY($2::text[])", tenant, regeo)
        if boxes:
            columns = list(zip(*boxes, strict=True))
            await conn.execute(_ADD_BOXES, tenant, *[list(c) for c in columns])

    # ------------------------------------------------------------------ reads

    async def get_doc(self, tenant: str, entity_id: str) -> Doc | None:
        """The stored document of an entity, or None."""
        text = await self._db().fetchval(
            "SELECT doc::text FROM entities WHERE tenant = $1 AND id = $2", tenant, entity_id
        )
        return None if text is None else dict(codec.loads(text))

    async def count_docs(self, tenant: str, type_iri: str | None = None) -> int:
        """Number of stored entities (of one type IRI)."""
        if type_iri is None:
            n = await self._db().fetchval("SELECT count(*) FROM entities WHERE tenant = $1", tenant)
        else:
            n = await self._db().fetchval(
                "SELECT count(*) FROM entities WHERE tenant = $1 AND types && ARRAY[$2::text]", tenant, type_iri
            )
        return int(n)

    async def query(self, tenant: str, spec: QuerySpec) -> QueryResult:
        """One page of the entities matching ``spec``, ordered by id unless sorted."""
        where = compile_spec(tenant, spec)
        db = self._db()
        if not spec.needs_python():
            n = len(where.params)
            rows = await db.fetch(
                f"SELECT e.doc::text FROM {where.source()} WHERE {where.sql()} "
                f"ORDER BY e.id LIMIT ${n + 1} OFFSET ${n + 2}",
                *where.params,
                spec.limit + 1,
                spec.offset,
            )
            docs = [codec.loads(r[0]) for r in rows[: spec.limit]]
            count = None
            if spec.count:
                count = int(await db.fetchval(
                    f"SELECT count(*) FROM {where.source()} WHERE {where.sql()}", *where.params
                ))
            return QueryResult(docs, count, len(rows) > spec.limit)
        matches = self._filtered(db, where, spec)
        if spec.sort_key is not None:
            all_docs = [d async for d in matches]
            key = spec.sort_key
            all_docs.sort(key=lambda d: (SortKey(key(d)), d["id"]), reverse=spec.sort_reverse)
            end = spec.offset + spec.limit
            return QueryResult(all_docs[spec.offset : end], len(all_docs) if spec.count else None, len(all_docs) > end)
        page: list[Doc] = []
        total = 0
        more = False
        stop = spec.offset + spec.limit
        async for doc in matches:
            if spec.offset <= total < stop:
                page.append(doc)
            elif total >= stop:
                more = True
                if not spec.count:
                    break
            total += 1
        return QueryResult(page, total if spec.count else None, more)

    async def _filtered(self, db: asyncpg.Pool, where: Where, spec: QuerySpec) -> Any:
        """The candidates in id order (keyset pages), kept when the Python tests hold."""
        pattern = compile_user_pattern(spec.id_pattern, "idPattern") if spec.id_pattern is not None else None
        params = where.params
        n = len(params)
        sql = (
            f"SELECT e.id, e.doc::text FROM {where.source(f'${n + 1}')} WHERE {where.sql()} AND e.id > ${n + 1} "
            f"ORDER BY e.id LIMIT ${n + 2}"
        )
        # The first round trip asks for about one page: the database evaluates (and sorts) only the
        # candidates it returns, so a page of a large area does not cost the whole area. Later ones,
        # and scans that need every match (count, orderBy), go by full chunks.
        chunk = _first_chunk(spec)
        last = ""
        while True:
            rows = await db.fetch(sql, *params, last, chunk)
            for eid, text in rows:
                if pattern is not None and not pattern.search(eid):
                    continue
                doc = codec.loads(text)
                if spec.type_match is not None and not spec.type_match(doc["type"]):
                    continue
                if spec.predicate is not None and not spec.predicate(doc):
                    continue
                yield doc
            if len(rows) < chunk:
                return
            last = rows[-1][0]
            chunk = _SCAN_CHUNK

    async def type_info(self, tenant: str) -> dict[str, TypeInfo]:
        """Entity type IRI → discovery facts, for one tenant (aggregated in SQL)."""
        db = self._db()
        counts = {
            t: int(n)
            for t, n in await db.fetch(
                "SELECT t, count(*) FROM entities e, unnest(e.types) t WHERE e.tenant = $1 GROUP BY t", tenant
            )
        }
        attrs: dict[str, dict[str, set[str]]] = {t: {} for t in counts}
        for t, name, kind in await db.fetch(
            "SELECT DISTINCT t, a.key, k FROM entities e, unnest(e.types) t, jsonb_each(e.attrs) a, "
            "jsonb_array_elements_text(a.value) k WHERE e.tenant = $1",
            tenant,
        ):
            attrs[t].setdefault(name, set()).add(kind)
        return {t: TypeInfo(counts[t], {a: frozenset(k) for a, k in attrs[t].items()}) for t in sorted(counts)}


    # ------------------------------------------------------------------ context source registrations

    def registration_records(self) -> PostgresRegistrationRecords:
        """Context source registrations in the ``csource_registrations`` table of this database."""
        return PostgresRegistrationRecords(self)

    def csource_subscription_records(self) -> PostgresRegistrationRecords:
        """Context source registration subscriptions (CIM 009 §5.11), same shape, their own table."""
        return PostgresRegistrationRecords(self, "csource_subscriptions")


class PostgresRegistrationRecords:
    """Context source registrations (CIM 009 §5.9) in the ``csource_registrations`` table (or another of that shape)."""

    def __init__(self, storage: PostgresStorage, table: str = "csource_registrations") -> None:
        self.storage = storage
        self.table = table  # one of two constants above, never user input

    async def load(self, tenant: str) -> list[str]:
        """Every registration of a tenant, as JSON documents."""
        rows = await self.storage._db().fetch(
            f"SELECT doc::text FROM {self.table} WHERE tenant = $1 ORDER BY id", tenant
        )
        return [r[0] for r in rows]

    async def get(self, tenant: str, reg_id: str) -> str | None:
        """One registration's JSON document, or None."""
        value = await self.storage._db().fetchval(
            f"SELECT doc::text FROM {self.table} WHERE tenant = $1 AND id = $2", tenant, reg_id
        )
        return None if value is None else str(value)

    async def create(self, tenant: str, reg_id: str, document: str) -> bool:
        """Store a new registration; False when one with that id exists."""
        status = await self.storage._db().execute(
            f"INSERT INTO {self.table}(tenant, id, doc) VALUES($1, $2, $3::jsonb) ON CONFLICT DO NOTHING",
            tenant, reg_id, document,
        )
        return bool(status != "INSERT 0 0")

    async def replace(self, tenant: str, reg_id: str, document: str) -> bool:
        """Replace a registration's document; False when unknown."""
        status = await self.storage._db().execute(
            f"UPDATE {self.table} SET doc = $3::jsonb WHERE tenant = $1 AND id = $2", tenant, reg_id, document
        )
        return bool(status != "UPDATE 0")

    async def delete(self, tenant: str, reg_id: str) -> bool:
        """Forget a registration; False when unknown."""
        status = await self.storage._db().execute(
            f"DELETE FROM {self.table} WHERE tenant = $1 AND id = $2", tenant, reg_id
        )
        return bool(status != "DELETE 0")


def _first_chunk(spec: QuerySpec) -> int:
    """Rows of the first keyset round trip of a query Python decides: a page plus a margin for rejects."""
    if spec.count or spec.sort_key is not None:
        return _SCAN_CHUNK
    wanted = spec.offset + spec.limit + 1  # one more tells whether a next page exists
    return min(_SCAN_CHUNK, max(_FIRST_CHUNK_MIN, wanted + wanted // 2))


def _commits(rows: Sequence[Any]) -> list[list[ChangeEvent]]:
    """Change-log rows as events grouped by commit (as a single process's listeners get them)."""
    groups: list[list[ChangeEvent]] = []
    last: Any = None
    for _, xid, tenant, entity_id, entity_type, before, after, mine in rows:
        if mine:
            continue  # notified at commit by this process
        if xid != last:
            groups.append([])
            last = xid
        groups[-1].append(ChangeEvent(
            tenant, entity_id, entity_type,
            None if before is None else codec.loads(before), None if after is None else codec.loads(after),
            remote=True,
        ))
    return groups
