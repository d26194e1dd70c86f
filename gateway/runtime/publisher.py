"""Publisher: drains one sink's outbox in batch upserts, without loss or regression.

* Entities from many devices are grouped per tenant into batches of the sink's size, after a
  short linger so that a burst becomes one request.
* Every observation is delivered: when one entity has several readings in the rows read
  together, its k-th reading goes in the k-th round of batches, sent only after the round
  before it, so a broker that keeps history (and the embedded store's temporal API) records
  each reading, in order. A reading waiting for a retry holds the entity's later readings back.
  A sink configured ``latest_only`` instead merges an entity's readings into one upsert (fewer
  requests, for brokers without history). A sink that applies a batch in array order and keeps
  every change's history (``ordered_batches``: the embedded store) takes all rounds in one
  upsert instead, each reading in its own place: the same observations, in far fewer calls.
* The outbox bookkeeping (removing delivered rows) never waits on the event loop for the write
  lock that the worker processes of ``--workers`` hold in turn: it tries, yields to the loop and
  tries again shortly (see :meth:`Publisher._transaction`).
* A 207 answer retries only the entities that failed, each with its own exponential backoff;
  an entity that keeps failing (or fails permanently) becomes a dead letter of stage ``sink``.
* A sink that is down makes the whole batch wait in the outbox; after repeated failures a
  circuit breaker opens (no request for a cool-down), then lets one batch probe the sink.
* An older observation never overwrites a newer one: per sink, tenant, entity and attribute,
  the last ``observedAt`` written is remembered (on disk). An older attribute (a late reading:
  a network server flushing a backlog, or two workers committing one device out of order) goes
  to the sink's temporal history only when the sink can do that (the embedded store; a remote
  broker with ``late_readings: temporal``), and its row leaves the outbox only once both its
  current-state part and its late part are written; another sink drops it (counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final

from gateway.model import ENTITY_MEMBERS, Entity, ModelError, RawMessage, parse_time
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.logging import correlation_id
from gateway.runtime.metrics import Metrics
from gateway.runtime.outbox import Outbox, OutboxRow
from gateway.runtime.sinks import Sink, SinkRejected, SinkResult, SinkUnavailable, history_of

log = logging.getLogger("jonction.publisher")

LATEST_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS latest(
  sink TEXT NOT NULL, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, attr TEXT NOT NULL,
  observed REAL NOT NULL, PRIMARY KEY(sink, tenant, entity_id, attr)) WITHOUT ROWID;
"""
"""The publishers' table: the newest observedAt each sink has committed, per entity attribute."""


@dataclass(slots=True)
class PublisherSettings:
    """Batching, retry and circuit-breaker knobs (config ``publisher``)."""

    batch_size: int = 500
    linger_s: float = 0.02
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 10.0
    max_attempts: int = 8


LOCK_RETRY_S: Final = 0.001
"""First pause before trying the outbox write lock again (doubled up to ``LOCK_RETRY_MAX_S``)."""
LOCK_RETRY_MAX_S: Final = 0.008
LOCK_WAIT_S: Final = 5.0
"""How long the publisher keeps trying for the write lock before the round fails (and is retried)."""


class OutboxLocked(sqlite3.OperationalError):
    """The gateway database stayed locked by other connections for ``LOCK_WAIT_S``."""


_UNPARSED: Any = object()
"""Marks a time not yet in the batch's cache of parsed ``observedAt`` texts."""


_NEVER: Final = float("-inf")
_NO_TIMES: Final[dict[str, float]] = {}
"""What the sink holds of an entity it never received (read only)."""


def _observed(attr: Any, stamps: dict[str, float | None]) -> float | None:
    """The newest ``observedAt`` of an attribute's instances, as epoch seconds (None when none is valid).

    ``stamps`` caches parsed times for one batch: an entity's attributes usually share one
    ``observedAt``, so each distinct text is parsed once instead of once per attribute.
    """
    newest: float | None = None
    for instance in attr if isinstance(attr, list) else (attr,):
        if isinstance(instance, dict):
            text = instance.get("observedAt")
            if isinstance(text, str):
                moment = stamps.get(text, _UNPARSED)
                if moment is _UNPARSED:
                    try:
                        moment = parse_time(text).timestamp()
                    except ModelError:
                        moment = None
                    stamps[text] = moment
                if moment is None:
                    continue
                newest = moment if newest is None or moment > newest else newest
    return newest


class Publisher:
    """One sink's delivery loop."""

    def __init__(
        self,
        sink: Sink,
        db: Database,
        outbox: Outbox,
        deadletters: DeadLetters,
        metrics: Metrics,
        settings: PublisherSettings,
        *,
        latest_only: bool = False,
    ) -> None:
        self.sink = sink
        self.guarded = bool(getattr(sink, "guards_observed", False))
        """The sink checks ``observedAt`` itself (the embedded store, in its write transaction, for every
        gateway instance sharing it): no per-attribute record here, no late part split off."""
        self.history = history_of(sink)
        self.latest_only = latest_only
        self.in_order = False
        """All rounds in one upsert, rows in outbox order (the sink applies and records each in turn);
        decided again for each fetch, from the sink's ``ordered_batches``."""
        self.db = db
        self.outbox = outbox
        self.deadletters = deadletters
        self.metrics = metrics
        self.settings = settings
        self.batch_size = max(1, min(settings.batch_size, sink.max_batch))
        self.cursor = 0
        self.retries: list[tuple[float, int, OutboxRow]] = []
        self.in_retry: set[int] = set()
        self.held: dict[tuple[str, str], tuple[int, float]] = {}
        """Entities with readings waiting in ``retries``: (tenant, id) → (rows waiting, last due time)."""
        self.attempts: dict[int, int] = {}
        self.state = "closed"
        self.failures = 0
        self.open_until = 0.0
        self.last_error: str | None = None
        self.published = 0
        self.draining = False
        self.idle = asyncio.Event()
        self.latest: dict[tuple[str, str], dict[str, float]] = {}
        self.on_published: Callable[[sqlite3.Connection, str, list[tuple[str, str, str]]], None] | None = None
        """Called in the commit's transaction with (entity id, type, source) of what was published."""
        db.create(LATEST_SCHEMA)
        if self.guarded:
            db.conn.execute("DELETE FROM latest WHERE sink = ?", (sink.name,))  # kept by the sink now
        for tenant, entity_id, attr, observed in db.conn.execute(
            "SELECT tenant, entity_id, attr, observed FROM latest WHERE sink = ?", (sink.name,)
        ):
            self.latest.setdefault((tenant, entity_id), {})[attr] = float(observed)

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Deliver forever (cancel to stop)."""
        event = self.outbox.event(self.sink.name)
        while True:
            now = time.monotonic()
            if self.state == "open":
                if now < self.open_until:
                    await self._wait(event, self.open_until - now, wake_on_event=False)
                    continue
                self.state = "half-open"
            event.clear()
            due = self._due(now)
            room = self.batch_size * 4 - len(due)
            fresh = self._fetch(room) if room > 0 else []
            if fresh and len(fresh) < self.batch_size and not due and not self.draining and self.settings.linger_s:
                await asyncio.sleep(self.settings.linger_s)
                fresh += self._fetch(room - len(fresh))
            if not due and not fresh:
                self.idle.set()
                wait = self.retries[0][0] - now if self.retries else None
                await self._wait(event, wait)
                continue
            self.idle.clear()
            if self.state == "half-open":
                # Probe the sink with one small batch before letting the backlog through.
                probe = (due + fresh)[: self.batch_size]
                rest = (due + fresh)[self.batch_size:]
                self._rewind([r for r in rest if r.id not in self.in_retry], [r for r in rest if r.id in self.in_retry])
                rows = probe
            else:
                rows = due + fresh
            try:
                await self._publish(rows)
            except SinkUnavailable as exc:
                await self._on_unavailable(exc)
            except Exception as exc:  # a bug or a storage error must not end delivery for good
                log.error("publisher %s failed; retrying", self.sink.name, exc_info=exc,
                          extra={"sink": self.sink.name})
                self._rewind([r for r in rows if r.id not in self.attempts],
                             [r for r in rows if r.id in self.attempts])
                await self._on_unavailable(SinkUnavailable(f"internal error: {type(exc).__name__}"))

    def _fetch(self, limit: int) -> list[OutboxRow]:
        rows = self.outbox.fetch(self.sink.name, self.cursor, limit)
        if rows:
            self.cursor = rows[-1].id
        return [r for r in rows if r.id not in self.in_retry]

    def _due(self, now: float) -> list[OutboxRow]:
        out: list[OutboxRow] = []
        while self.retries and self.retries[0][0] <= now and len(out) < self.batch_size * 4:
            _, _, row = heapq.heappop(self.retries)
            self.in_retry.discard(row.id)
            self._release(row)
            out.append(row)
        return out

    async def _wait(self, event: asyncio.Event, delay: float | None, *, wake_on_event: bool = True) -> None:
        if not wake_on_event:
            await asyncio.sleep(max(0.0, delay or 0.0))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=None if delay is None else max(0.0, delay))

    def _rewind(self, fresh: Sequence[OutboxRow], retried: Sequence[OutboxRow]) -> None:
        """Put rows not delivered back: fresh ones are read again from disk, retried ones re-queued."""
        if fresh:
            self.cursor = min(self.cursor, min(r.id for r in fresh) - 1)
        for row in retried:
            self._schedule(row, time.monotonic())

    def _schedule(self, row: OutboxRow, at: float) -> None:
        if row.id not in self.in_retry:
            self.in_retry.add(row.id)
            heapq.heappush(self.retries, (at, row.id, row))
            key = (row.tenant, row.entity_id)
            waiting, until = self.held.get(key, (0, at))
            self.held[key] = (waiting + 1, max(until, at))

    def _release(self, row: OutboxRow) -> None:
        key = (row.tenant, row.entity_id)
        waiting, until = self.held.get(key, (1, 0.0))
        if waiting <= 1:
            self.held.pop(key, None)
        else:
            self.held[key] = (waiting - 1, until)

    def _hold_back(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        """Rows free to send now; later readings of an entity waiting for a retry queue up behind it.

        The retry heap is ordered by (due time, row id), so a reading scheduled at its entity's
        last due time leaves the heap after the readings before it.
        """
        if self.latest_only or not self.held:
            return rows
        free: list[OutboxRow] = []
        for row in rows:
            hold = self.held.get((row.tenant, row.entity_id))
            if hold is None:
                free.append(row)
            else:
                self._schedule(row, hold[1])
        return free

    async def _on_unavailable(self, exc: SinkUnavailable) -> None:
        self.failures += 1
        self.last_error = str(exc)
        self.metrics.publish_errors.inc(sink=self.sink.name)
        if self.state != "open" and (self.failures >= self.settings.breaker_threshold or self.state == "half-open"):
            if self.state != "half-open":
                log.warning("sink %s unavailable, circuit open: %s", self.sink.name, exc,
                            extra={"sink": self.sink.name})
            self.state = "open"
            self.open_until = time.monotonic() + self.settings.breaker_cooldown_s
            return
        delay = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * 2 ** (self.failures - 1))
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    def _on_success(self) -> None:
        if self.failures or self.state != "closed":
            if self.state != "closed" or self.failures >= self.settings.breaker_threshold:
                log.warning("sink %s recovered", self.sink.name, extra={"sink": self.sink.name})
            self.failures = 0
            self.state = "closed"
            self.last_error = None

    # ------------------------------------------------------------------ batches

    async def _publish(self, rows: list[OutboxRow]) -> None:
        # Asked at every fetch: the embedded store stops taking one upsert per fetch while it has
        # subscriptions (it notifies once per entity and upsert; subscribers get every reading).
        self.in_order = bool(getattr(self.sink, "ordered_batches", False)) and not self.latest_only
        by_tenant: dict[str, list[OutboxRow]] = {}
        for row in sorted(rows, key=lambda r: r.id):
            by_tenant.setdefault(row.tenant, []).append(row)
        batches: list[tuple[int, str, list[OutboxRow]]] = []
        for tenant, tenant_rows in by_tenant.items():
            if self.latest_only:
                batches.extend((0, tenant, b) for b in self._coalesced(tenant_rows))
            elif self.in_order:
                # Rows in outbox order: each entity's readings already follow one another, and
                # the sink applies them in turn, one history instance each.
                size = self.batch_size
                batches.extend((0, tenant, tenant_rows[i:i + size]) for i in range(0, len(tenant_rows), size))
            else:
                batches.extend((k, tenant, b) for k, b in self._rounds(tenant_rows))
        # Round k of every tenant before round k + 1: an entity's readings go out in order.
        batches.sort(key=lambda b: (b[0], b[2][0].id))
        for index, (_, tenant, batch_rows) in enumerate(batches):
            try:
                ready = self._hold_back(batch_rows)
                if ready:
                    await self._send(tenant, ready)
            except SinkUnavailable:
                pending = [r for _, _, rs in batches[index:] for r in rs if r.id not in self.in_retry]
                retried = [r for r in pending if r.id in self.attempts]
                self._rewind([r for r in pending if r.id not in self.attempts], retried)
                raise

    def _coalesced(self, rows: list[OutboxRow]) -> list[list[OutboxRow]]:
        """Batches of up to ``batch_size`` entities; an entity's rows share one batch (merged in ``_send``)."""
        batches: list[list[OutboxRow]] = []
        current: list[OutboxRow] = []
        ids: set[str] = set()
        for row in rows:
            if row.entity_id not in ids and len(ids) >= self.batch_size:
                batches.append(current)
                current, ids = [], set()
            current.append(row)
            ids.add(row.entity_id)
        if current:
            batches.append(current)
        return batches

    def _rounds(self, rows: list[OutboxRow]) -> list[tuple[int, list[OutboxRow]]]:
        """(round, batch) pairs: round k holds each entity's k-th row, cut into ``batch_size`` batches."""
        rounds: list[list[OutboxRow]] = []
        count: dict[str, int] = {}
        for row in rows:
            k = count.get(row.entity_id, 0)
            count[row.entity_id] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(row)
        return [(k, members[i:i + self.batch_size])
                for k, members in enumerate(rounds) for i in range(0, len(members), self.batch_size)]

    def _merge(self, tenant: str, rows: Sequence[OutboxRow]) -> tuple[
            list[Entity], dict[str, list[OutboxRow]], list[OutboxRow], dict[str, dict[str, float]],
            list[tuple[OutboxRow, Entity]]]:
        """Coalesce rows of one tenant by entity id, setting aside attributes older than the sink holds.

        The older ones come back as (row, fragment) pairs for the sink's history when it keeps one;
        otherwise they are dropped. With ``in_order`` each row stays its own entity, in row order
        (an entity appears once per reading); a reading older than one before it in the rows is late.
        """
        late: list[tuple[OutboxRow, Entity]] = []
        merged: dict[str, Entity] = {}
        in_order: list[Entity] | None = [] if self.in_order else None
        seen_times: dict[str, dict[str, float]] = {}
        owners: dict[str, list[OutboxRow]] = {}
        empty: list[OutboxRow] = []
        stamps: dict[str, float | None] = {}
        for row in rows:
            item = row.entity()
            entity_id = row.entity_id
            # A sink that checks observedAt itself (``guarded``) gets every row whole, in order.
            if not self.guarded and not self._keep_newer(tenant, row, item, seen_times, stamps, late):
                empty.append(row)  # everything in it was older than what the sink holds
                continue
            if in_order is not None:
                in_order.append(item)
            elif (target := merged.get(entity_id)) is None:
                merged[entity_id] = item
            else:
                target.update({k: v for k, v in item.items() if k not in ("id", "type")})
            owners.setdefault(entity_id, []).append(row)
        return (list(merged.values()) if in_order is None else in_order), owners, empty, seen_times, late

    def _keep_newer(self, tenant: str, row: OutboxRow, item: Entity, seen_times: dict[str, dict[str, float]],
                    stamps: dict[str, float | None], late: list[tuple[OutboxRow, Entity]]) -> bool:
        """Take out of ``item`` the attributes older than the sink holds (into ``late``, or dropped);
        False when nothing of the row is left to send."""
        entity_id = row.entity_id
        known = self.latest.get((tenant, entity_id)) or _NO_TIMES
        times = seen_times.get(entity_id)
        if times is None:
            times = seen_times[entity_id] = {}
        kept = 0
        for name in [n for n in item if n not in ENTITY_MEMBERS]:
            observed = _observed(item[name], stamps)
            if observed is not None:
                newest = known.get(name, _NEVER)
                earlier = times.get(name, _NEVER)
                if observed < newest or observed < earlier:
                    value = item.pop(name)
                    if self.history is None:
                        self.metrics.stale_dropped.inc(sink=self.sink.name)
                    elif late and late[-1][0] is row:
                        late[-1][1][name] = value
                    else:
                        late.append((row, {"id": entity_id, "type": item.get("type"), name: value}))
                    continue
                times[name] = observed
            kept += 1
        # what is kept stays in ``item``; with nothing kept, a row that had attributes has nothing left
        return kept > 0 or not any(n not in ENTITY_MEMBERS for n in row.entity())

    async def _send(self, tenant: str, rows: Sequence[OutboxRow], *, late_done: bool = False) -> None:
        entities, owners, empty, times, late = self._merge(tenant, rows)
        if late and not late_done:
            # The late part first: a row leaves the outbox only once both of its parts are written.
            # An entity whose late part failed waits whole (retry or dead letter); sent again, its
            # late instances replace those of the same observedAt, so nothing is doubled.
            failed = await self._send_late(tenant, late)
            if failed:
                waiting = {eid: [r for r in rows if r.entity_id == eid] for eid in failed}
                entities = [e for e in entities if e["id"] not in failed]
                empty = [r for r in empty if r.entity_id not in failed]
                for eid in failed:
                    owners.pop(eid, None)
                    times.pop(eid, None)
                await self._retry_failed(tenant, waiting, failed)
        if empty:
            with await self._transaction() as conn:
                self.outbox.remove(conn, empty)
            self._forget(empty)
        if not entities:
            return
        corr = rows[0].corr if len(rows) == 1 else "b-" + uuid.uuid4().hex[:12]
        token = correlation_id.set(corr)
        try:
            started = time.perf_counter()
            try:
                result = await self.sink.upsert(tenant, entities, corr)
            except SinkRejected as exc:
                if len(owners) > 1:
                    # One bad entity must not sink the batch: try each one alone.
                    for owned in owners.values():
                        await self._send(tenant, owned, late_done=True)
                    return
                await self._dead_letter(tenant, owners, {entities[0]["id"]: (str(exc), True)})
                return
            elapsed = time.perf_counter() - started
            self.metrics.publish_latency.observe(elapsed, sink=self.sink.name)
            self._on_success()
            done_ids = [i for i in owners if i not in result.failed]
            done_rows = [r for i in done_ids for r in owners[i]]
            now = time.time()
            if result.late:
                self.metrics.late_to_history.inc(result.late, sink=self.sink.name)
            with await self._transaction() as conn:
                self.outbox.remove(conn, done_rows)
                updates = []
                for entity_id in done_ids:
                    known = self.latest.setdefault((tenant, entity_id), {})
                    for name, observed in times.get(entity_id, {}).items():
                        if observed >= known.get(name, float("-inf")):
                            known[name] = observed
                            updates.append((self.sink.name, tenant, entity_id, name, observed))
                conn.executemany("INSERT OR REPLACE INTO latest(sink, tenant, entity_id, attr, observed)"
                                 " VALUES (?,?,?,?,?)", updates)
                if self.on_published is not None:
                    kinds = {e["id"]: str(e.get("type", "")) for e in entities}
                    self.on_published(conn, tenant, [(i, kinds[i], owners[i][0].source) for i in done_ids])
            self._forget(done_rows)
            # Readings delivered: one per row, as many as rounds would have sent (merged: one per entity).
            delivered = len(done_rows) if self.in_order else len(done_ids)
            self.published += delivered
            self.metrics.entities_out.inc(delivered, sink=self.sink.name)
            for row in done_rows:
                self.metrics.end_to_end.observe(max(0.0, now - row.received), sink=self.sink.name)
            log.debug("batch published", extra={
                "sink": self.sink.name, "tenant": tenant, "entities": len(done_ids),
                "failed": len(result.failed), "correlation_ids": sorted({r.corr for r in rows}),
                "seconds": round(elapsed, 4)})
            if result.failed:
                await self._retry_failed(tenant, owners, result.failed)
        finally:
            correlation_id.reset(token)

    async def _send_late(self, tenant: str, late: list[tuple[OutboxRow, Entity]]) -> dict[str, tuple[str, bool]]:
        """Add late readings to the sink's history; the entities that failed (SinkUnavailable propagates)."""
        assert self.history is not None
        fragments = [fragment for _, fragment in late]
        corr = late[0][0].corr if len(late) == 1 else "l-" + uuid.uuid4().hex[:12]
        try:
            result: SinkResult = await self.history.append_history(tenant, fragments, corr)
        except SinkRejected as exc:
            result = SinkResult({str(f["id"]): (str(exc), True) for f in fragments})
        self._on_success()
        written = sum(len(f) - 2 for f in fragments if f["id"] not in result.failed)
        if written:
            self.metrics.late_to_history.inc(written, sink=self.sink.name)
        return result.failed

    async def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction on the gateway database, begun without blocking the event loop.

        The worker processes of ``--workers`` take the same write lock for their group commits;
        waiting in SQLite's busy handler would stop this whole process (sources, admin API, the
        store's writes) meanwhile. Instead: try, and while another connection holds the lock,
        sleep on the loop (1 ms, doubling up to 8 ms) and try again; after ``LOCK_WAIT_S`` raise
        :class:`OutboxLocked` (the rows stay in the outbox and are delivered again). Use it as
        ``with await self._transaction() as conn:`` with no ``await`` inside.
        """
        tx = self.db.try_transaction()
        if tx is not None:
            return tx
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT_S
        pause = LOCK_RETRY_S
        while True:
            await asyncio.sleep(pause)
            tx = self.db.try_transaction()
            if tx is not None:
                return tx
            if loop.time() >= deadline:
                raise OutboxLocked(f"the gateway database stayed locked for {LOCK_WAIT_S:.0f}s")
            pause = min(pause * 2, LOCK_RETRY_MAX_S)

    def _forget(self, rows: Sequence[OutboxRow]) -> None:
        for row in rows:
            self.attempts.pop(row.id, None)

    async def _retry_failed(self, tenant: str, owners: dict[str, list[OutboxRow]],
                            failed: dict[str, tuple[str, bool]]) -> None:
        give_up: dict[str, tuple[str, bool]] = {}
        now = time.monotonic()
        for entity_id, (reason, permanent) in failed.items():
            owned = owners.get(entity_id)
            if not owned:
                continue
            attempts = max(self.attempts.get(r.id, 0) for r in owned) + 1
            if permanent or attempts >= self.settings.max_attempts:
                give_up[entity_id] = (reason, permanent)
                continue
            delay = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * 2 ** (attempts - 1))
            for row in owned:
                self.attempts[row.id] = attempts
                self._schedule(row, now + delay)
            log.info("entity %s refused by %s (attempt %d), will retry: %s", entity_id, self.sink.name,
                     attempts, reason, extra={"sink": self.sink.name, "tenant": tenant})
        if give_up:
            await self._dead_letter(tenant, owners, give_up)

    async def _dead_letter(self, tenant: str, owners: dict[str, list[OutboxRow]],
                           failed: dict[str, tuple[str, bool]]) -> None:
        with await self._transaction() as conn:
            for entity_id, (reason, _permanent) in failed.items():
                rows = owners.get(entity_id, [])
                if not rows:
                    continue
                last = rows[-1]
                raw = RawMessage(last.source, tenant, time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                     time.gmtime(last.received)),
                                 last.body.encode(), f"outbox:{last.id}", "application/ld+json")
                self.deadletters.add(conn, stage="sink", adapter="", raw=raw, reason=reason, pointer="",
                                     corr=last.corr, entity=last.entity(), sink=self.sink.name, tenant=tenant)
                self.metrics.dead_letters.inc(source=last.source, stage="sink")
                log.warning("entity %s rejected by %s: %s", entity_id, self.sink.name, reason,
                            extra={"sink": self.sink.name, "tenant": tenant, "correlation_id": last.corr})
                self.outbox.remove(conn, rows)
                self._forget(rows)

    # ------------------------------------------------------------------ status

    async def drain(self, within: float) -> bool:
        """Publish what is queued without lingering; True if the outbox emptied within ``within`` seconds."""
        self.draining = True
        self.outbox.event(self.sink.name).set()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.idle.is_set() and not self.retries and self.outbox.depth(self.sink.name) == 0:
                return True
            await asyncio.sleep(0.02)
        return False

    def describe(self) -> dict[str, Any]:
        """State for the admin API and readiness."""
        return {"name": self.sink.name, "kind": self.sink.kind, "circuit": self.state,
                "consecutiveFailures": self.failures, "lastError": self.last_error,
                "published": self.published, "retrying": len(self.retries), "batchSize": self.batch_size}
