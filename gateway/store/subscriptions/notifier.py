"""The notifier: subscription registry, change dispatcher and delivery (ETSI GS CIM 009 V1.9.1 §5.8.6, §5.11).

The store calls our listener after each commit; the listener only queues the events, so the
write path never waits for matching or delivery. A background dispatcher matches events against
subscriptions, renders the notification and sends it (HTTP POST or MQTT publish) with bounded
exponential-backoff retries, one delivery at a time per subscription (so a receiver sees
notifications in commit order). ``timeInterval`` subscriptions are notified periodically with
every matching entity instead.

Where the changes come from a shared change log (PostgreSQL, several processes), the subscription
records are also a :class:`DeliveryLedger`: each change is held from its queueing until every
notification reporting it was answered (or given up), and each subscription's highest notified
change is recorded after each notification. A notifier taking over after a crash resends only what
was not recorded, with the same notification id (derived from the subscription and the changes'
positions), so a receiver can drop the one notification per subscription that may come twice.

Throttling (§5.2.12) and ``timeInterval`` are measured from ``lastNotification``, the wall-clock
instant the last notification of a subscription was answered (or given up), whichever process sent
it: the in-process monotonic clocks are set from it when a record is loaded (a restart) or followed
from another process, and a process becoming the notifier reads the records before it notifies. A
throttled or periodic subscription's record is saved as soon as each notification ends, before the
delivery is recorded (such a subscription notifies at most once per period: one write per period).
The guarantee: a throttled subscription is never notified twice within its throttling period, and a
periodic one never sooner than its interval after the last notification, across restarts and
takeovers, unless the notifier dies between a receiver's answer and that save (one database write):
the next notifier may then send once inside the period. A periodic subscription is notified again
about one interval after its last notification (plus one tick, plus the takeover delay when its
notifier dies). The wall clocks of the processes measure the period: skew between hosts shifts it,
and an instant in the future counts as now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol, runtime_checkable

import aiohttp
from aiohttp import web

from gateway import model
from gateway.store import jsonld
from gateway.store.base import ChangeEvent, Doc, QuerySpec, Storage, SubscriptionRecords
from gateway.store.history import Database
from gateway.store.join import Fetch
from gateway.store.problems import NgsiError
from gateway.store.subscriptions import delivery as senders
from gateway.store.subscriptions import rendering
from gateway.store.subscriptions.matching import selected, triggered
from gateway.store.subscriptions.parsing import (
    MAX_ENTITIES_PER_NOTIFICATION,
    MAX_SUBSCRIPTIONS_PER_TENANT,
    Subscription,
    build,
    ensure_schema,
    now,
)
from gateway.store.subscriptions.rendering import Change

log = logging.getLogger("jonction.store.subscriptions")

NEVER: Final = -1e18
"""The monotonic time of a notification never sent (Subscription.last_sent's default)."""


def monotonic_of(stamp: Any) -> float:
    """The monotonic time of a wall-clock DateTime text (``lastNotification``); NEVER when absent or invalid."""
    if not isinstance(stamp, str):
        return NEVER
    try:
        elapsed = (datetime.now(UTC) - model.parse_time(stamp)).total_seconds()
    except model.ModelError:
        return NEVER
    # a stamp ahead of this clock (skew between hosts) counts as now: the period is not stretched further
    return time.monotonic() - max(0.0, elapsed)


class SqliteSubscriptionRecords:
    """Subscriptions in the ``subscriptions`` table of the store's SQLite file (through a Database thread)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def load_all(self) -> list[tuple[str, str, str]]:
        """Every stored subscription as (tenant, id, JSON document)."""

        def run(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
            return list(conn.execute("SELECT tenant, id, doc FROM subscriptions"))

        return await self.db.read(run)

    async def save(self, tenant: str, sub_id: str, document: str) -> None:
        """Create or replace one subscription's document."""
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO subscriptions (tenant, id, doc) VALUES (?, ?, ?)", (tenant, sub_id, document)
            )
        )

    async def delete(self, tenant: str, sub_id: str) -> None:
        """Forget one subscription."""
        await self.db.write(
            lambda conn: conn.execute("DELETE FROM subscriptions WHERE tenant=? AND id=?", (tenant, sub_id))
        )

    async def close(self) -> None:
        """Close the Database thread and its connection."""
        await self.db.close()


@runtime_checkable
class DeliveryLedger(Protocol):
    """What a shared change log keeps of deliveries, so a notifier taking over loses and repeats nothing."""

    def hold(self, seqs: Iterable[int]) -> None:
        """Mark changes as being notified (the log keeps them until released)."""
        ...

    def release(self, seqs: Iterable[int]) -> None:
        """Undo one hold of each change."""
        ...

    def delivered_up_to(self, tenant: str, sub_id: str) -> int:
        """The highest change a subscription was notified of (0: none)."""
        ...

    async def delivered(self, tenant: str, sub_id: str, seq: int) -> None:
        """Record that a subscription was notified of its changes up to ``seq``."""
        ...


NOTIFICATION_IDS: Final = uuid.UUID("6a6f6e63-7469-6f6e-2d6e-6f7469667921")
"""Namespace of the notification ids derived from change-log positions (UUID v5)."""


def notification_id(tenant: str, sub_id: str, seqs: Sequence[int]) -> str:
    """The id of the notification of a subscription reporting these changes: the same whoever sends it."""
    name = json.dumps([tenant, sub_id, seqs[0], seqs[-1], len(seqs)], separators=(",", ":"))
    return f"urn:ngsi-ld:Notification:{uuid.uuid5(NOTIFICATION_IDS, name)}"


@dataclass(slots=True)
class Delivery:
    """One notification to send: a subscription and the entity changes it reports."""

    sub: Subscription
    changes: list[Change] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    """The change-log positions of the changes (empty when the store keeps no shared change log)."""


class Notifier:
    """Registry of subscriptions, change dispatcher and notification sender (HTTP and MQTT)."""

    retry_delays: tuple[float, ...] = (0.5, 2.0, 8.0)
    """Waits before each retry of a failed notification (bounded: then it is given up)."""
    timeout: float = 10.0
    """Seconds a receiver has to answer one notification."""
    queue_size: int = 10_000
    """Commits waiting for matching; beyond, events are dropped (and logged)."""
    tick: float = 1.0
    """How often periodic (timeInterval) subscriptions are checked, seconds."""
    max_pending: int = 100
    """Notifications waiting for one subscription; beyond (a dead or slow receiver), new ones are
    dropped and reported as failures, so memory stays bounded."""

    def __init__(self, storage: Storage, db: Database | SubscriptionRecords | None) -> None:
        self.storage = storage
        self.db: SubscriptionRecords | None = SqliteSubscriptionRecords(db) if isinstance(db, Database) else db
        self.subs: dict[tuple[str, str], Subscription] = {}
        self._queue: asyncio.Queue[Sequence[ChangeEvent]] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._pending: dict[tuple[str, str], int] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropped = 0
        self._stored: dict[tuple[str, str], Any] = {}
        """The last stored document of each subscription this process read or wrote."""
        self.shared = False
        """True when other processes share the subscriptions (followed every tick)."""
        self.ledger: DeliveryLedger | None = None
        """Where deliveries are recorded when the changes come from a shared change log."""
        self._notifying = False
        """True once this process, holding the notifier role, has read the records of the one before."""
        self._takeover = asyncio.Lock()

    # -- persistence -----------------------------------------------------------------

    async def load(self) -> None:
        """Read every stored subscription into memory."""
        if self.db is None:
            return
        for tenant, sub_id, doc in await self.db.load_all():
            stored = json.loads(doc)
            sub = self._rebuild(tenant, sub_id, stored)
            if sub is not None:
                adopt_clocks(sub, self.subs.get((tenant, sub_id)))
                self.subs[(tenant, sub_id)] = sub
                self._stored[(tenant, sub_id)] = stored

    def _rebuild(self, tenant: str, sub_id: str, stored: Mapping[str, Any]) -> Subscription | None:
        try:
            sub = build(
                {**stored["definition"], "id": sub_id},
                tenant,
                stored["context"],
                self.storage_contexts(),
                created_at=stored.get("createdAt"),
                stats=stored.get("stats"),
            )
        except NgsiError as exc:  # e.g. a hosted @context that is gone
            log.warning("subscription %s of tenant %r cannot be loaded: %s", sub_id, tenant, exc.detail)
            return None
        sub.modified_at = stored.get("modifiedAt", sub.modified_at)
        return sub

    async def sync(self) -> None:
        """Follow what other processes sharing the database did to subscriptions (created, changed, deleted)."""
        if self.db is None:
            return
        known = dict(self._stored)
        rows = await self.db.load_all()
        seen: set[tuple[str, str]] = set()
        for tenant, sub_id, doc in rows:
            key = (tenant, sub_id)
            seen.add(key)
            stored = json.loads(doc)
            if self._stored.get(key) is not known.get(key) or known.get(key) == stored:
                continue  # unchanged, or changed here meanwhile (this process's version is newer)
            sub = self._rebuild(tenant, sub_id, stored)
            if sub is None:
                continue
            adopt_clocks(sub, self.subs.get(key))
            self.subs[key] = sub
            self._stored[key] = stored
        for key in [k for k in known if k not in seen and self._stored.get(k) is known[k]]:
            self.subs.pop(key, None)
            self._stored.pop(key, None)
            self._locks.pop(key, None)

    async def follow_takeover(self) -> bool:
        """When this process has just become the notifier, read what the previous one saved first (True: read).

        The records it saved since this process last followed them carry the instants of its last
        notifications: throttling and timeInterval go on from those, not from this process's clocks.
        """
        if not self.shared:
            return False
        if not self.storage.delivers_notifications():
            self._notifying = False
            return False
        if self._notifying:
            return False
        async with self._takeover:  # the dispatcher and the periodic loop both wait for the one reading
            if self._notifying:
                return False
            try:
                await self.sync()
            except Exception:
                # notifying on this process's own (older) view beats not notifying at all
                log.exception("reading the subscriptions at takeover failed")
            self._notifying = True
            return True

    def storage_contexts(self) -> jsonld.ContextCache:
        """The store's context cache (resolves hosted contexts)."""
        cache = getattr(self.storage, "contexts", None)
        return cache if isinstance(cache, jsonld.ContextCache) else jsonld.ContextCache()

    async def save(self, sub: Subscription) -> None:
        """Persist one subscription (definition and delivery state)."""
        if self.db is None:
            return
        doc = json.dumps(sub.stored(), separators=(",", ":"))
        await self.db.save(sub.tenant, sub.id, doc)
        self._stored[(sub.tenant, sub.id)] = json.loads(doc)

    async def remove(self, tenant: str, sub_id: str) -> bool:
        """Delete a subscription; False when unknown."""
        sub = self.subs.pop((tenant, sub_id), None)
        self._locks.pop((tenant, sub_id), None)
        if self.db is not None:
            await self.db.delete(tenant, sub_id)
        self._stored.pop((tenant, sub_id), None)
        return sub is not None

    async def add(self, sub: Subscription) -> None:
        """Register and persist a new or changed subscription."""
        key = (sub.tenant, sub.id)
        if key not in self.subs and sum(1 for t, _ in self.subs if t == sub.tenant) >= MAX_SUBSCRIPTIONS_PER_TENANT:
            raise NgsiError("TooManyResults", f"a tenant may hold at most {MAX_SUBSCRIPTIONS_PER_TENANT} subscriptions")
        previous = self.subs.get(key)
        if previous is not None:
            sub.last_sent = previous.last_sent
        sub.next_due = time.monotonic()
        self.subs[key] = sub
        await self.save(sub)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Create the queue, the HTTP client and the background tasks."""
        self._queue = asyncio.Queue(self.queue_size)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._spawn(self._dispatch_loop())
        self._spawn(self._periodic_loop())

    async def stop(self) -> None:
        """Stop the background tasks (pending deliveries are abandoned) and close the client."""
        self._queue = None  # the store keeps its listeners: later events are ignored
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.flush()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # a rendering or sending bug must show in the log, not vanish with its task
            log.error("notification task failed", exc_info=task.exception())

    # -- the listener ------------------------------------------------------------------

    async def on_change(self, events: Sequence[ChangeEvent]) -> None:
        """The store's listener: queue the events and return at once."""
        if self._queue is None or (not self.subs and not self.shared):
            return
        seqs = _seqs(events)
        if self.ledger is not None:
            self.ledger.hold(seqs)  # until matched (then each delivery holds its own)
        try:
            self._queue.put_nowait(events)
        except asyncio.QueueFull:
            if self.ledger is not None:
                self.ledger.release(seqs)
            self._dropped += len(events)
            log.warning("notification queue full: %d change events dropped so far", self._dropped)

    async def _dispatch_loop(self) -> None:
        assert self._queue is not None
        while True:
            batches = [await self._queue.get()]
            while not self._queue.empty():
                batches.append(self._queue.get_nowait())
            synced = await self.follow_takeover()
            for events in batches:
                if self.shared and not synced and any(e.remote for e in events):
                    # A subscription made through another process is committed before any write its
                    # client makes next: reading the subscriptions after taking these events sees it.
                    # This process's own commits are matched at once, as a single process does (a
                    # subscription paused or resumed just after a write is judged as at the commit).
                    synced = True
                    try:
                        await self.sync()
                    except Exception:
                        log.exception("following the shared subscriptions failed")
                try:
                    self.dispatch(events)
                except Exception:  # one bad subscription or event must not stop notifications
                    log.exception("matching change events against subscriptions failed")
                finally:
                    if self.ledger is not None:
                        self.ledger.release(_seqs(events))

    def dispatch(self, events: Sequence[ChangeEvent]) -> None:
        """Match events against every subscription and schedule one delivery per subscription."""
        ledger = self.ledger
        for sub in list(self.subs.values()):
            # after a takeover, what the previous notifier recorded as sent is not sent again
            floor = 0 if ledger is None else ledger.delivered_up_to(sub.tenant, sub.id)
            hits = [e for e in events if (e.seq is None or e.seq > floor) and triggered(sub, e)]
            if not hits:
                continue
            if sub.throttling is not None:
                moment = time.monotonic()
                if moment - sub.last_sent < sub.throttling:
                    continue  # §5.2.12: within the throttling period, changes are not notified
                sub.last_sent = moment
            size = MAX_ENTITIES_PER_NOTIFICATION
            for start in range(0, len(hits), size):
                part = hits[start : start + size]
                delivery = Delivery(sub, [Change(e.before, e.after) for e in part], _seqs(part))
                if ledger is not None:
                    ledger.hold(delivery.seqs)
                self._spawn(self._deliver(delivery))

    async def flush(self) -> None:
        """Persist the delivery state of the subscriptions that notified since the last flush."""
        for key in list(self._dirty):
            sub = self.subs.get(key)
            if sub is None:
                self._dirty.discard(key)
                continue
            try:
                await self.save(sub)
            except Exception:  # the state is in memory; persisting it is best effort
                log.exception("saving the delivery state of %s failed", sub.id)
            # only once saved: a flush cancelled by shutdown leaves the rest for the final flush
            self._dirty.discard(key)

    async def _periodic_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            await self.flush()
            if self.shared:
                try:
                    await self.sync()
                except Exception:
                    log.exception("following the shared subscriptions failed")
            await self.follow_takeover()
            if not self.storage.delivers_notifications():
                continue  # another process sends the periodic notifications
            moment = time.monotonic()
            for sub in list(self.subs.values()):
                if sub.time_interval is None or sub.status != "active" or moment < sub.next_due:
                    continue
                sub.next_due = moment + sub.time_interval
                try:
                    docs = await self.matching_entities(sub)
                except Exception:
                    log.exception("periodic subscription %s: query failed", sub.id)
                    continue
                if docs:
                    sub.last_sent = moment
                    self._spawn(self._deliver(Delivery(sub, [Change(None, doc) for doc in docs])))

    async def matching_entities(self, sub: Subscription) -> list[Mapping[str, Any]]:
        """Every entity currently matching a subscription (for periodic notifications)."""
        if not await self.storage.tenant_exists(sub.tenant):
            return []
        spec = QuerySpec(
            types=sorted({iri for info in sub.entities for iri in info.iris}) or None,
            attrs=sub.watched,
            predicate=lambda doc: selected(sub, doc),
            limit=MAX_ENTITIES_PER_NOTIFICATION,
        )
        if sub.geo is not None:
            spec.bbox = sub.geo.bbox()
            spec.geoproperty = sub.geo_iri
        result = await self.storage.query(sub.tenant, spec)
        return list(result.docs)

    def _fetcher(self, tenant: str) -> Fetch:
        """Loads the entities a notification links to (join), from the subscription's tenant."""

        async def fetch(ids: Sequence[str]) -> Mapping[str, Doc]:
            result = await self.storage.query(tenant, QuerySpec(ids=list(ids), limit=len(ids)))
            return {str(d["id"]): d for d in result.docs}

        return fetch

    # -- delivery ------------------------------------------------------------------------

    async def _deliver(self, delivery: Delivery) -> None:
        sub = delivery.sub
        key = (sub.tenant, sub.id)
        if self._pending.get(key, 0) >= self.max_pending:
            sub.stats["timesFailed"] = int(sub.stats.get("timesFailed", 0)) + 1
            sub.stats["lastFailure"] = now()
            sub.stats["status"] = "failed"
            log.warning("subscription %s: %d notifications pending, one dropped", sub.id, self.max_pending)
            if self.ledger is not None:
                self.ledger.release(delivery.seqs)
            return
        self._pending[key] = self._pending.get(key, 0) + 1
        settled = False  # answered, given up or failed: not when cancelled (a stopping process)
        try:
            await self._deliver_now(delivery, key)
            settled = True
        except Exception:
            settled = True
            raise
        finally:
            left = self._pending.get(key, 1) - 1
            if left > 0:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)
            if settled and self.ledger is not None:
                self.ledger.release(delivery.seqs)  # recorded (or to be resent): the log may forget them

    async def _record(self, delivery: Delivery) -> None:
        """Record a finished delivery (before the subscription's next one starts)."""
        if self.ledger is None or not delivery.seqs:
            return
        try:
            await self.ledger.delivered(delivery.sub.tenant, delivery.sub.id, delivery.seqs[-1])
        except Exception as exc:  # the lock's session is gone: the next notifier resends it, same id
            log.warning("recording a delivery of %s failed (%s)", delivery.sub.id, exc)

    async def _deliver_now(self, delivery: Delivery, key: tuple[str, str]) -> None:
        sub = delivery.sub
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            ident = notification_id(sub.tenant, sub.id, delivery.seqs) if delivery.seqs else None
            body, headers = await rendering.notification(sub, delivery.changes, self._fetcher(sub.tenant), ident)
            mqtt = sub.endpoint.split(":", 1)[0].lower() in ("mqtt", "mqtts")
            if mqtt:
                payload = senders.mqtt_message(body, headers)
            else:
                payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            ok = False
            reason = ""
            for attempt in range(len(self.retry_delays) + 1):
                if attempt:
                    await asyncio.sleep(self.retry_delays[attempt - 1])
                    if key not in self.subs:
                        return  # deleted while we were retrying
                if mqtt:
                    ok, reason = await senders.publish(sub.endpoint, payload, sub.notifier_info, self.timeout)
                else:
                    ok, reason = await senders.post(self._session, sub.endpoint, payload, headers)
                if ok:
                    break
                if attempt == 0:
                    # §5.8.6: the failure is visible at once, not only once every retry is spent
                    sub.stats["lastFailure"] = now()
                    sub.stats["status"] = "failed"
            stamp = now()
            sub.stats["timesSent"] = int(sub.stats.get("timesSent", 0)) + 1
            sub.stats["lastNotification"] = stamp
            if ok:
                sub.stats["lastSuccess"] = stamp
                sub.stats["status"] = "ok"
            else:
                sub.stats["timesFailed"] = int(sub.stats.get("timesFailed", 0)) + 1
                sub.stats["lastFailure"] = stamp
                sub.stats["status"] = "failed"
                log.warning("notification of %s to %s failed: %s", sub.id, senders.redacted(sub.endpoint), reason)
            if key in self.subs and (sub.throttling is not None or sub.time_interval is not None):
                # Saved now, before the delivery is recorded: a notifier taking over (or a restart) then
                # knows when the period began. A crash between the two leaves the changes unrecorded but
                # throttled: not sent again, and the receiver has them. At most one write per period.
                try:
                    await self.save(sub)
                except Exception:
                    log.exception("saving the delivery state of %s failed", sub.id)
                    self._dirty.add(key)
            elif key in self.subs:
                # persisted by the periodic loop (at most one write per subscription per tick), so a
                # busy subscription does not compete with the store's writer once per notification
                self._dirty.add(key)
            # Still under the subscription's lock: at most one notification per subscription is ever
            # answered but not recorded (the one a crash now would have the next notifier send again).
            await self._record(delivery)


NOTIFIER_KEY: Final = web.AppKey("jonction.store.notifier", Notifier)
"""The app's Notifier (tests tune ``retry_delays`` and ``tick`` through it)."""


def subscription_context(app: web.Application) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx entry that loads subscriptions and runs the notifier."""

    async def run(_: web.Application) -> AsyncIterator[None]:
        notifier = app[NOTIFIER_KEY]
        notifier.db = notifier.storage.subscription_records()
        notifier.shared = notifier.db is not None
        notifier.ledger = notifier.db if isinstance(notifier.db, DeliveryLedger) else None
        path = getattr(notifier.storage, "path", None)
        if notifier.db is None and path is not None:
            notifier.db = SqliteSubscriptionRecords(Database(path, setup=ensure_schema))
        await notifier.load()
        await notifier.start()
        notifier.storage.add_listener(notifier.on_change)
        yield
        await notifier.stop()
        if notifier.db is not None:
            await notifier.db.close()

    return run


def adopt_clocks(sub: Subscription, previous: Subscription | None) -> None:
    """Set the in-process clocks of a subscription read from its record (a restart, another process's save).

    The later of the recorded ``lastNotification`` and this process's own last notification (the
    one before the record was read again) starts the throttling period and the periodic interval.
    """
    sub.last_sent = monotonic_of(sub.stats.get("lastNotification"))
    if previous is not None:
        sub.last_sent = max(sub.last_sent, previous.last_sent)
    if sub.time_interval is not None:
        sub.next_due = sub.last_sent + sub.time_interval
        if previous is not None and previous.time_interval == sub.time_interval:
            sub.next_due = max(sub.next_due, previous.next_due)


def _seqs(events: Iterable[ChangeEvent]) -> list[int]:
    """The change-log positions of events (those that have one)."""
    return [e.seq for e in events if e.seq is not None]
