"""The PostgreSQL/PostGIS implementation of :class:`gateway.store.base.Storage` (asyncpg).

Entities are JSONB documents in one ``entities`` table keyed by (tenant, id), beside their type
IRIs (``types``, GIN), an attribute summary (``attrs``, GIN: attribute existence and discovery)
and, in ``geo``, the bounding box of every GeoProperty instance (``box``, GiST, read by index-only scans).
A batch is ONE transaction that holds a per-tenant advisory lock, so several store processes on
one database write a tenant in turn and read each other's writes.

Every written attribute instance is appended to ``history`` (partitioned by month) in the same
transaction; the temporal API reads it through :meth:`PostgresStorage.history_slice` and writes it
through :class:`~gateway.store.postgres.history.PostgresHistoryWrites`. Subscriptions persist in
``subscriptions``; the process holding the notifier's advisory lock notifies every process's
writes (it follows the change log), and another takes over when it dies.

Delivery across a takeover: the change log is trimmed only below the lowest change whose
notifications are still being sent (its watermark, ``notifier_cursor`` 'notifier'), and each
subscription's highest delivered change is recorded after each notification, on the session that
holds the lock (``notifier_cursor`` 'sub:[tenant, id]'). The next notifier resumes from the
watermark and skips what each subscription already got; a notification keeps the id derived from
its changes' positions, so the one re-sent after a crash between a receiver's answer and that
record carries the id the receiver already saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
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
from gateway.store.postgres.history import (
    HistoryBatch,
    HistoryRow,
    PostgresHistoryWrites,
    Recorder,
    array_literal,
    build_stale_days,
    history_slice,
    instance_row,
)
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
DOC_CACHE_BYTES: Final = 128 * 2**20
"""Default memory budget of the stored-document cache (JSON text of the entities this process wrote or read;
about 95,000 entities of 1 kB)."""
_ENTRY_BYTES: Final = 250
"""Memory of a cache entry beside its text and id (key tuple, ordered-dict slot, version tuple; measured)."""
_XID_HORIZON: Final = 2**30
"""Transactions after which a cache entry is not trusted (xmin is 32 bits and wraps around)."""
_LOCK_AND_XID = (
    "SELECT pg_advisory_xact_lock(hashtext($1)), pg_current_xact_id()::text::bigint, "
    "set_config('plan_cache_mode', 'force_generic_plan', true)"
)
"""The tenant's lock, the transaction's id (the xmin of the rows it writes), and generic plans for the
write statements (the pool asks for custom plans, for queries): planned once per connection, not at every
part (planning a read of 250 ids took 0.28 ms, its generic plan 0.04 ms; same plan, index probes)."""
_READ = """
SELECT id, xmin::text::bigint, CASE WHEN id || chr(31) || xmin::text = ANY($3::text[]) THEN NULL ELSE doc::text END
FROM entities WHERE tenant = $1 AND id = ANY($2::text[])
"""
"""The stored documents of a batch's ids, except those the cache holds in the version stored (same xmin):
their text neither leaves the server (jsonb output, transfer) nor is decoded by the driver."""

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
INSERT INTO geo(tenant, id, attr, k, bbox)
SELECT $1, b.id, b.attr, b.k, box(point(b.minlon, b.minlat), point(b.maxlon, b.maxlat))
FROM unnest($2::text[], $3::text[], $4::int[], $5::float8[], $6::float8[], $7::float8[], $8::float8[])
     AS b(id, attr, k, minlon, minlat, maxlon, maxlat)
"""


_PART: Final = 250
"""Entities per statement of a batch's reads and writes: the database runs one part while Python
prepares the next (one connection, one transaction), instead of each waiting for the other."""
_FORGET_SAME_MOMENTS: Final = """
DELETE FROM history h USING unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(entity_id, attr, dataset, at)
WHERE h.tenant = $1 AND h.entity_id = u.entity_id AND h.attr = u.attr AND h.dataset_id = u.dataset
  AND h.observed_at = u.at::timestamptz
"""
"""Delete the history instances that late readings replace (``Mutation.late``): same series, same observedAt."""


def _now() -> str:
    return model.format_time(datetime.now(UTC))


class _Pipe:
    """The statements of one transaction, each started while Python computes what follows (one at a time)."""

    def __init__(self) -> None:
        self._task: asyncio.Future[Any] | None = None

    async def send(self, work: Awaitable[Any]) -> None:
        """Wait for the statements in flight, then start ``work`` and return while it runs."""
        await self.wait()
        self._task = asyncio.ensure_future(work)
        await asyncio.sleep(0)  # the task sends its statement now; the server runs it while the caller computes

    async def wait(self) -> Any:
        """The result of the work in flight (None when there is none)."""
        task, self._task = self._task, None
        return None if task is None else await task

    async def drain(self) -> None:
        """After an error: let the work in flight end, so that the transaction can roll back on its connection."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(Exception):
                await task


@dataclass(slots=True)
class _Rows:
    """The rows of one part of a batch's entity writes, as the set-based statements take them."""

    deletes: list[str] = field(default_factory=list)
    new: tuple[list[str], list[str], list[str], list[str]] = field(default_factory=lambda: ([], [], [], []))
    changed: tuple[list[str], list[str], list[str], list[str]] = field(default_factory=lambda: ([], [], [], []))
    regeo: list[str] = field(default_factory=list)
    boxes: list[tuple[str, str, int, float, float, float, float]] = field(default_factory=list)


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
        await self.storage._db().execute("DELETE FROM notifier_cursor WHERE name = $1", _sub_cursor(tenant, sub_id))

    async def close(self) -> None:
        """Nothing to release: the pool belongs to the storage."""

    # The delivery ledger (see gateway.store.subscriptions.notifier.DeliveryLedger).

    def hold(self, seqs: Iterable[int]) -> None:
        """Mark changes as being notified: the change log is kept from the lowest held one."""
        self.storage._hold(seqs)

    def release(self, seqs: Iterable[int]) -> None:
        """Undo one :meth:`hold` of each change."""
        self.storage._release(seqs)

    def delivered_up_to(self, tenant: str, sub_id: str) -> int:
        """The highest change a subscription was notified of (0: none recorded)."""
        return self.storage._delivered.get((tenant, sub_id), 0)

    async def delivered(self, tenant: str, sub_id: str, seq: int) -> None:
        """Record that a subscription was notified of every change up to ``seq`` (in order)."""
        await self.storage._record_delivery(tenant, sub_id, seq)


class PostgresStorage(StorageBase):
    """The store on PostgreSQL 15+ with PostGIS 3 (``postgresql://user@host:port/database``)."""

    def __init__(self, url: str, *, pool_size: int = 4, doc_cache_bytes: int = DOC_CACHE_BYTES) -> None:
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
        self.max_held = 20_000
        """Changes being notified beyond which the change log is not read further (back pressure)."""
        self._held: dict[int, int] = {}
        """Change-log positions being notified (how many holds each): the log is trimmed below the lowest."""
        self._delivered: dict[tuple[str, str], int] = {}
        """(tenant, subscription id) -> highest change-log position notified (loaded at takeover)."""
        self._lease: Any = None
        """The connection holding the notifier lock (delivery records are written through it)."""
        self._lease_lock = asyncio.Lock()
        """One statement at a time on the lease connection."""
        self._feed_lock = asyncio.Lock()
        """One reader of the change log at a time: its rows reach the listeners once each, in seq order."""
        self._read = 0
        """The last change-log position fed to the listeners."""
        self._own: dict[int, ChangeEvent] = {}
        """This process's own logged events (by change-log position) until the change-log reader feeds them."""
        self.rollup_chunk_days = 7
        """Days the background roll-up builder builds at a time (one tenant, one month at most)."""
        self.rollup_pause = 1.0
        """Seconds the builder rests between two chunks (it yields to the store's own work)."""
        self.rollup_interval = 60.0
        """Seconds between two passes of the builder once every closed day is built."""
        self.rollup_days_built = 0
        """Roll-up days the background builder of this process built."""
        self.rollup_passes = 0
        """Complete passes of the background builder (every closed day looked at once)."""
        self.doc_cache_bytes = doc_cache_bytes
        self._docs: OrderedDict[tuple[str, str], tuple[int, int, str]] = OrderedDict()
        """(tenant, id) → (xmin of the row version, 64-bit xid when cached, JSON text), least recently used first.
        A row keeps its xmin until rewritten, so an entry whose xmin the row still has holds its current
        document, whichever process wrote it or wrote since (a rolled-back write leaves the old xmin)."""
        self._docs_size = 0

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
        own: list[int] = []
        try:
            results, events, local = await self._apply_logged(tenant, changes, own)
        except BaseException:
            for seq in own:  # rolled back: these positions never were
                self._own.pop(seq, None)
            raise
        if own:
            # Fed with everything committed before them, in commit order: a subscription's notifications
            # then follow the log, which is what their delivery is recorded against.
            await self._pump(own[-1])
        elif local:
            await self._notify(events)
        return results

    async def _apply_logged(
        self, tenant: str, changes: Sequence[Change], own: list[int]
    ) -> tuple[list[ChangeResult], list[ChangeEvent], bool]:
        pipe = _Pipe()
        async with self._db().acquire() as conn, conn.transaction():
            try:
                # one writer per tenant across processes: the read-modify-write below stays consistent
                xid = int((await conn.fetchrow(_LOCK_AND_XID, _TENANT_LOCK + tenant))[1])
                if tenant not in self._tenants:
                    await conn.execute("INSERT INTO tenants(name) VALUES($1) ON CONFLICT DO NOTHING", tenant)
                results, events, touched, originals, state, written, late = await self._apply_in(
                    conn, pipe, tenant, changes, xid
                )
                # same transaction: history and current state never disagree
                batch = HistoryBatch(tenant, _now())
                ids = list(touched)
                parts = [ids[i : i + _PART] for i in range(0, len(ids), _PART)] or [[]]
                share = -(-len(written) // len(parts))
                texts: dict[str, str | None] = {}
                for k, part in enumerate(parts):
                    rows = self._entity_rows(part, originals, state, texts)
                    await pipe.send(self._write_rows(conn, tenant, rows))
                    batch.add(written[k * share : (k + 1) * share])  # while the database writes the part
                await pipe.wait()
                months: set[tuple[int, int]] = set()
                if batch.records:
                    _, months = await self._history.write(conn, batch)
                if late:
                    months |= await self._write_late(conn, tenant, late)
                # The notifying process notifies its own writes at once (as a single process would, before
                # its client's next request); the change log carries the others' writes to it.
                local = self._leader
                if events and await conn.fetchval(
                    "SELECT EXISTS(SELECT 1 FROM subscriptions WHERE tenant = $1)", tenant
                ):
                    events = await self._log_changes(conn, events, local)
                    if local:
                        # the change-log reader takes these from memory rather than reading their documents back
                        for event in events:
                            if event.seq is not None:
                                self._own[event.seq] = event
                                own.append(event.seq)
                        own.sort()
            except BaseException:
                await pipe.drain()
                raise
        self._tenants.add(tenant)
        self._history.committed(months)
        self._remember(tenant, xid, texts)
        return results, events, local

    async def _log_changes(self, conn: Any, events: Sequence[ChangeEvent], local: bool) -> list[ChangeEvent]:
        """Append the commit's events for the notifying process (whichever process that is); them with their seq."""
        # Held until commit: appends commit in seq order, so the reader's cursor never skips one.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", CHANGE_LOG_LOCK)
        rows = await conn.fetch(
            "INSERT INTO change_log(tenant, entity_id, entity_type, before, after, notified_by) "
            "SELECT $1, u.id, u.type, u.before::jsonb, u.after::jsonb, $6 "
            "FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, type, before, after) "
            "RETURNING entity_id, seq",
            events[0].tenant,
            [e.entity_id for e in events],
            [e.entity_type for e in events],
            [None if e.before is None else codec.dumps(e.before) for e in events],
            [None if e.after is None else codec.dumps(e.after) for e in events],
            self._origin if local else None,
        )
        seqs = {r[0]: int(r[1]) for r in rows}  # one event per entity in a commit
        return [dataclasses.replace(e, seq=seqs[e.entity_id]) for e in events]

    # ------------------------------------------------------------------ notifications

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback`` with the committed events of every process, while this one holds the notifier lock."""
        super().add_listener(callback)
        if self._feed is None and not self._closed:
            self._feed = asyncio.get_running_loop().create_task(self._follow_changes())

    def delivers_notifications(self) -> bool:
        """True while this process holds the notifier's advisory lock (it alone sends notifications)."""
        return self._leader

    def _hold(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            self._held[seq] = self._held.get(seq, 0) + 1

    def _release(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            left = self._held.get(seq, 0) - 1
            if left > 0:
                self._held[seq] = left
            else:
                self._held.pop(seq, None)

    async def _record_delivery(self, tenant: str, sub_id: str, seq: int) -> None:
        """Record a subscription's highest notified change, through the session holding the notifier lock."""
        key = (tenant, sub_id)
        if seq <= self._delivered.get(key, 0):
            return
        self._delivered[key] = seq
        lease = self._lease
        if lease is None:
            return  # the lock was lost: the next notifier resumes from the watermark
        # On the lock's own session: the record commits only while this process still holds the lock.
        async with self._lease_lock:
            await lease.execute(
                "INSERT INTO notifier_cursor(name, seq) VALUES($1, $2) "
                "ON CONFLICT (name) DO UPDATE SET seq = greatest(notifier_cursor.seq, excluded.seq)",
                _sub_cursor(tenant, sub_id),
                seq,
            )

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
                cursor = 0
                delivered: dict[tuple[str, str], int] = {}
                for name, seq in await conn.fetch("SELECT name, seq FROM notifier_cursor"):
                    if name == "notifier":
                        cursor = int(seq)
                    elif name.startswith("sub:"):
                        tenant, sub_id = json.loads(name[4:])
                        delivered[(tenant, sub_id)] = int(seq)
                self._delivered = delivered
                self._own.clear()  # those of an earlier turn are read back from the log with the rest
                self._read = cursor  # before anything reads the log through the lease
                self._lease = conn
                self._leader = True
                log.info("store: this process sends the notifications (it holds the notifier lock)")
                # the same lock elects the one roll-up builder among the processes
                builder = asyncio.get_running_loop().create_task(self._build_rollups())
                try:
                    await self._feed_changes(conn, cursor)
                finally:
                    builder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await builder
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("store: following the change log failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                self._leader = False
                self._lease = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(conn.close(timeout=2))

    async def build_rollups(self) -> int:
        """Build the daily roll-up of every out-of-date closed day now (an imported history); how many days."""
        built = 0
        after: tuple[str, date] | None = None
        while True:
            count, after = await build_stale_days(self._db(), after, self.rollup_chunk_days)
            built += count
            if after is None:
                return built

    async def _build_rollups(self) -> None:
        """Keep the daily roll-up of closed days built ahead of the reads, a small chunk at a time."""
        after: tuple[str, date] | None = None
        while True:
            try:
                built, after = await build_stale_days(self._db(), after, self.rollup_chunk_days)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, NgsiError) as exc:
                log.warning("store: building the history roll-up failed (%s); retrying", exc)
                built, after = 0, None
            self.rollup_days_built += built
            if after is None:
                self.rollup_passes += 1
                await asyncio.sleep(self.rollup_interval)
            else:
                await asyncio.sleep(self.rollup_pause)

    async def _feed_changes(self, conn: Any, cursor: int) -> None:
        """Feed the change log past ``cursor`` to the listeners; trim it below what is still being notified."""
        saved = cursor
        while True:
            fed = await self._pump(None) if len(self._held) < self.max_held else 0
            # every change up to the lowest one still held has been notified (or given up)
            mark = min(self._read, min(self._held) - 1) if self._held else self._read
            if mark > saved:
                async with self._lease_lock, conn.transaction():
                    await conn.execute(
                        "INSERT INTO notifier_cursor(name, seq) VALUES('notifier', $1) "
                        "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                        mark,
                    )
                    await conn.execute("DELETE FROM change_log WHERE seq <= $1", mark)
                saved = mark
            if not fed:
                await asyncio.sleep(self.poll_interval)

    async def _pump(self, upto: int | None) -> int:
        """Feed the listeners the change log's next rows (through ``upto`` at least, when given); how many."""
        fed = 0
        async with self._feed_lock:
            while upto is None or self._read < upto:
                lease = self._lease
                if lease is None:
                    break  # not the notifier any more: the next one reads them
                async with self._lease_lock:
                    rows = await lease.fetch(_READ_LOG.format(where="seq > $1", limit="LIMIT 1000"), self._read,
                                             self._origin)
                    if len(rows) == 1000:
                        # a commit is never split: its notifications (and their ids) are the same whoever sends them
                        rows.extend(await lease.fetch(
                            _READ_LOG.format(where="seq > $1 AND xid = $3", limit=""),
                            int(rows[-1][0]), self._origin, rows[-1][1],
                        ))
                    # own rows come without their documents (kept in memory), unless this process lost them
                    lost = [int(r[0]) for r in rows if r[7] and int(r[0]) not in self._own]
                    if lost:
                        rows = [
                            *(r for r in rows if not (r[7] and int(r[0]) not in self._own)),
                            *await lease.fetch(_READ_LOG.format(where="seq = ANY($1::bigint[])", limit=""), lost, ""),
                        ]
                        rows.sort(key=lambda r: int(r[0]))
                if not rows:
                    break
                for group in _commits(rows, self._own):
                    seqs = [e.seq for e in group if e.seq is not None]
                    self._hold(seqs)  # the listeners hold them on their own before returning
                    try:
                        await self._notify(group)
                    finally:
                        self._release(seqs)
                self._read = int(rows[-1][0])
                fed += len(rows)
                if upto is None:
                    break
        return fed

    def _remember(self, tenant: str, xid: int, texts: Mapping[str, str | None]) -> None:
        """Cache the documents a committed transaction wrote (None: deleted)."""
        xmin = xid & 0xFFFFFFFF
        self._remember_versions(tenant, {
            eid: None if text is None else (xmin, xid, text) for eid, text in texts.items()
        })

    def _remember_versions(self, tenant: str, entries: Mapping[str, tuple[int, int, str] | None]) -> None:
        """Cache (xmin, xid when seen, JSON text) per id (None forgets it), within the memory budget."""
        docs = self._docs
        budget = self.doc_cache_bytes
        for eid, entry in entries.items():
            old = docs.pop((tenant, eid), None)
            if old is not None:
                self._docs_size -= len(old[2]) + len(eid) + _ENTRY_BYTES
            if entry is not None and (cost := len(entry[2]) + len(eid) + _ENTRY_BYTES) <= budget:
                docs[tenant, eid] = entry
                self._docs_size += cost
        while self._docs_size > budget:
            (_, eid), (_, _, text) = docs.popitem(last=False)
            self._docs_size -= len(text) + len(eid) + _ENTRY_BYTES

    async def _read_docs(self, conn: Any, tenant: str, ids: Sequence[str], xid: int) -> dict[str, Doc]:
        """The stored documents of ``ids`` (those that exist), from the cache where it holds their version."""
        docs = self._docs
        hits: dict[str, str] = {}
        known: list[str] = []
        for eid in ids:
            entry = docs.get((tenant, eid))
            if entry is not None and xid - entry[1] < _XID_HORIZON:
                hits[eid] = entry[2]
                known.append(f"{eid}\x1f{entry[0]}")
        rows = await conn.fetch(_READ, tenant, ids, known)
        loads = codec.loads
        out: dict[str, Doc] = {}
        fresh: dict[str, tuple[int, int, str]] = {}
        for eid, xmin, text in rows:
            if text is None:
                text = hits[eid]
                if (tenant, eid) in docs:  # another tenant's batch may have evicted it meanwhile
                    docs.move_to_end((tenant, eid))
            else:
                fresh[eid] = (int(xmin), xid, text)  # a committed version: valid whatever this batch does
            out[eid] = loads(text)
        # gone from the table (another process deleted them): forgotten
        stale: dict[str, tuple[int, int, str] | None] = {eid: None for eid in hits if eid not in out}
        if self.doc_cache_bytes:
            stale.update(fresh)
        if stale:
            self._remember_versions(tenant, stale)
        return out

    async def _apply_in(self, conn: Any, pipe: _Pipe, tenant: str, changes: Sequence[Change], xid: int) -> tuple[
        list[ChangeResult], list[ChangeEvent], dict[str, None], dict[str, Doc], dict[str, Doc | None], list[HistoryRow],
        list[HistoryRow],
    ]:
        ids = list(dict.fromkeys(c.entity_id for c in changes))
        # Read in parts: the database reads part k + 1 while the changes of part k are computed.
        parts = [ids[i : i + _PART] for i in range(0, len(ids), _PART)]
        part_of = {eid: k for k, part in enumerate(parts) for eid in part} if len(parts) > 1 else {}
        ready = 0
        # The mutators copy their input, so the originals stay valid for the index diff and events.
        originals: dict[str, Doc] = {}
        if parts:
            await pipe.send(self._read_docs(conn, tenant, parts[0], xid))
        state: dict[str, Doc | None] = {}
        touched: dict[str, None] = {}
        results: list[ChangeResult] = []
        written: list[HistoryRow] = []
        late: list[HistoryRow] = []  # history only (Mutation.late)
        now = _now()
        for change in changes:
            eid = change.entity_id
            while ready <= part_of.get(eid, 0):  # ids come in first-appearance order: the next part at most
                got = await pipe.wait()
                originals.update(got)
                state.update(got)
                ready += 1
                if ready < len(parts):
                    await pipe.send(self._read_docs(conn, tenant, parts[ready], xid))
            try:
                mutation = change.mutate(state.get(eid), now)
            except NgsiError as exc:
                results.append(ChangeResult(eid, error=exc))
                continue
            except Exception:  # a bug in one change must not lose the others
                log.exception("store: change on %s failed", eid)
                results.append(ChangeResult(eid, error=NgsiError("InternalError", "unexpected error")))
                continue
            if mutation.late and mutation.doc is not None:
                late.extend((tenant, eid, mutation.doc["type"], attr, inst) for attr, inst in mutation.late)
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
            results.append(ChangeResult(eid, mutation.outcome, not_updated=mutation.not_updated,
                                        late=len(mutation.late)))
        events: list[ChangeEvent] = []
        for eid in touched:
            before = originals.get(eid)
            after = state.get(eid)
            if before is None and after is None:
                continue
            etype = (after or before or {}).get("type", [""])[0]
            events.append(ChangeEvent(tenant, eid, etype, before, after))
        return results, events, touched, originals, state, written, late

    async def _write_late(self, conn: Any, tenant: str, rows: Sequence[HistoryRow]) -> set[tuple[int, int]]:
        """Append late readings after the batch's own rows, each replacing the instance of its observedAt.

        What ``PostgresHistoryWrites.write`` (``append_history``) does: a late reading sent again
        corrects the stored one instead of doubling it. Returns the month partitions created.
        """
        now = _now()
        keys = [(row[1], row[3], *instance_row(row[4], now)[:2]) for row in rows]
        await conn.execute(_FORGET_SAME_MOMENTS, tenant, *[list(column) for column in zip(*keys, strict=True)])
        batch = HistoryBatch(tenant, now)
        batch.add(rows)
        _, months = await self._history.write(conn, batch)
        return months

    @staticmethod
    def _entity_rows(
        ids: Sequence[str], originals: Mapping[str, Doc], state: Mapping[str, Doc | None], texts: dict[str, str | None]
    ) -> _Rows:
        """The rows writing the final state of some touched entities; their JSON text (None: deleted) into ``texts``."""
        rows = _Rows()
        dumps = codec.dumps
        for eid in ids:
            doc = state.get(eid)
            old = originals.get(eid)
            if doc is None:
                if old is not None:
                    rows.deletes.append(eid)
                texts[eid] = None
                continue
            # new ids go by INSERT, existing ones by UPDATE: no speculative insertion for an update
            into = rows.new if old is None else rows.changed
            into[0].append(eid)
            into[1].append(dumps(attr_summary(doc)))
            text = texts[eid] = dumps(doc)
            into[2].append(text)
            into[3].append(array_literal(doc["type"]))
            if old is not None and geo_values(old) == geo_values(doc):
                continue  # same geometries (the usual telemetry update): the boxes stay
            if old is not None:
                rows.regeo.append(eid)
            rows.boxes.extend(
                (eid, attr, k, minlon, minlat, maxlon, maxlat)
                for k, (attr, minlon, minlat, maxlon, maxlat) in enumerate(geo_boxes(doc))
            )
        return rows

    @staticmethod
    async def _write_rows(conn: Any, tenant: str, rows: _Rows) -> None:
        """Write one part of a batch's entities with a few set-based statements."""
        if rows.deletes:
            await conn.execute("DELETE FROM entities WHERE tenant = $1 AND id = ANY($2::text[])", tenant, rows.deletes)
            # no foreign key cascades (migration 6): the boxes go with their entity
            await conn.execute("DELETE FROM geo WHERE tenant = $1 AND id = ANY($2::text[])", tenant, rows.deletes)
        if rows.new[0]:
            await conn.execute(_UPSERT, tenant, *rows.new)
        if rows.changed[0]:
            # the tenant's advisory lock is held since the read: every one of these rows is still there
            await conn.execute(_UPDATE, tenant, *rows.changed)
        if rows.regeo:
            await conn.execute("DELETE FROM geo WHERE tenant = $1 AND id = ANY($2::text[])", tenant, rows.regeo)
        if rows.boxes:
            columns = list(zip(*rows.boxes, strict=True))
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


_READ_LOG: Final = """
SELECT seq, xid, tenant, entity_id, entity_type, CASE WHEN mine THEN NULL ELSE before::text END,
       CASE WHEN mine THEN NULL ELSE after::text END, mine
FROM (SELECT *, notified_by IS NOT DISTINCT FROM $2 AS mine FROM change_log WHERE {where} ORDER BY seq {limit}) AS c
ORDER BY seq
"""
"""Change-log rows past a position; those this process wrote ($2: its origin) without their documents."""


def _commits(rows: Sequence[Any], own: dict[int, ChangeEvent]) -> list[list[ChangeEvent]]:
    """Change-log rows as events grouped by commit (as a single process's listeners get them).

    This process's own rows are taken (and removed) from ``own``, the events as committed.
    """
    groups: list[list[ChangeEvent]] = []
    last: Any = None
    for seq, xid, tenant, entity_id, entity_type, before, after, mine in rows:
        if xid != last:
            groups.append([])
            last = xid
        event = own.pop(int(seq), None) if mine else None
        if event is not None:
            groups[-1].append(event)
            continue
        groups[-1].append(ChangeEvent(
            tenant, entity_id, entity_type,
            None if before is None else codec.loads(before), None if after is None else codec.loads(after),
            remote=True,
            seq=int(seq),
        ))
    return groups


def _sub_cursor(tenant: str, sub_id: str) -> str:
    """The ``notifier_cursor`` name of one subscription's delivery record."""
    return "sub:" + json.dumps([tenant, sub_id], separators=(",", ":"))
