"""The ingestion half of the data path: emit → archive → translate → normalize → validate → outbox.

``Pipeline.emit`` is the callback every adapter transport receives. Messages that arrive in
the same event-loop turn are handled together in one SQLite transaction (group commit), and
each ``emit`` returns only after that commit: the message is then archived and its entities
are durably queued for every sink (or kept as dead letters). That return is the acknowledgement
transports rely on (MQTT ack, HTTP 2xx). A group is translated, validated and encoded before the
write lock is taken, so the lock (shared with the other processes of ``--workers``) is held for
the inserts only; while another process holds it, the loop goes on reading messages, which join
the group, instead of sleeping in SQLite's busy handler. A group that cannot commit is refused
as a whole (every message answered "retry later", nothing of it written). A redelivered message
(same source and idempotency key) is acknowledged without a second write. With
``dedup.database``, the keys are also claimed in a store shared by several instances before the
commit (:mod:`gateway.runtime.dedup_pg`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from gateway.contract import Adapter
from gateway.errors import TranslationError, Unavailable
from gateway.model import Entity, RawMessage
from gateway.runtime.archive import ArchiveEntry, RawArchive
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.dedup import SeenKey, SeenKeys, SharedClaims
from gateway.runtime.logging import correlation_id
from gateway.runtime.metrics import Metrics
from gateway.runtime.normalize import NormalizeError, normalize
from gateway.runtime.outbox import EncodedRow, Outbox, QueuedRow
from gateway.runtime.routing import Router, Unroutable
from gateway.runtime.validator import BatchValidator

log = logging.getLogger("jonction.pipeline")

MAX_GROUP = 512
"""Pending messages that start a commit at once (instead of at the end of the loop turn)."""
LOCK_RETRY_S = 0.001
"""How soon a group commit tries the write lock again when another process holds it."""
LOCK_WAIT_S = 5.0
"""How long a group waits for the write lock before its messages are refused (503: retry later)."""

# Correlation ids: unique per process start and cheap (uuid4 per message costs an urandom call).
_BOOT = uuid.uuid4().hex[:8] + "-"
_SEQ = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Route:
    """Send entities whose id (or the message's device id) matches a glob to another tenant."""

    tenant: str
    entity: str | None = None
    device: str | None = None

    def matches(self, raw: RawMessage, item: Entity) -> bool:
        """True when this route applies to ``item`` from ``raw``."""
        if self.entity is not None and not fnmatch.fnmatchcase(str(item.get("id", "")), self.entity):
            return False
        if self.device is not None:
            device = raw.metadata.get("device_id") or raw.metadata.get("device") or ""
            if not fnmatch.fnmatchcase(device, self.device):
                return False
        return self.entity is not None or self.device is not None


@dataclass(slots=True)
class SourceBinding:
    """A configured source: its adapter instance, default tenant and per-device routes."""

    name: str
    adapter_name: str
    adapter: Adapter
    tenant: str = ""
    routes: Sequence[Route] = ()
    router: Router | None = None

    def tenant_for(self, raw: RawMessage, item: Entity) -> str:
        """The tenant an entity goes to: first matching route, else its commune's (``routing``: raises
        Unroutable when none is found), else the message's tenant."""
        for route in self.routes:
            if route.matches(raw, item):
                return route.tenant
        if self.router is not None:
            return self.router.tenant(raw, item)
        return raw.tenant


@dataclass(frozen=True, slots=True)
class SinkRoute:
    """Which tenants a sink receives (None: all)."""

    name: str
    tenants: frozenset[str] | None = None

    def accepts(self, tenant: str) -> bool:
        """True when entities of ``tenant`` go to this sink."""
        return self.tenants is None or tenant in self.tenants


@dataclass(slots=True)
class Outcome:
    """What became of one message."""

    duplicate: bool = False
    queued: list[str] = field(default_factory=list)
    dead_letters: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Letter:
    """A dead letter prepared outside the transaction (written with its message, if it is fresh)."""

    stage: str
    reason: str
    pointer: str
    entity: Entity | None
    tenant: str


@dataclass(slots=True)
class _Message:
    """One message through the stages, prepared before the write lock is taken: what to write for it."""

    binding: SourceBinding
    raw: RawMessage
    corr: str
    received: float
    outcome: Outcome = field(default_factory=Outcome)
    rows: list[EncodedRow] = field(default_factory=list)
    """Its outbox rows, encoded."""
    letters: list[_Letter] = field(default_factory=list)
    sinks: set[str] = field(default_factory=set)
    """The sinks it queues entities for (woken after the commit)."""


@dataclass(slots=True)
class _Pending:
    raw: RawMessage
    future: asyncio.Future[Outcome]
    received: float
    corr: str
    msg: _Message | None = None
    """Set once translated, normalized and validated (before the transaction)."""


class Pipeline:
    """Turns raw messages into queued entities and dead letters, durably, with group commit.

    Two paths share the same stages (translate → normalize → validate → queue): *ingest*
    (``emit``/``submit``: live messages, deduplicated, archived, group-committed) and *replay*
    (``replay``: an archived or dead-lettered message again, on an operator's request).
    """

    def __init__(
        self,
        db: Database,
        archive: RawArchive,
        outbox: Outbox,
        deadletters: DeadLetters,
        seen: SeenKeys,
        metrics: Metrics,
        validator: BatchValidator,
        sinks: Sequence[SinkRoute],
        shared: SharedClaims | None = None,
    ) -> None:
        self.db = db
        self.archive = archive
        self.outbox = outbox
        self.deadletters = deadletters
        self.seen = seen
        self.metrics = metrics
        self.validate = validator
        self.sinks = list(sinks)
        self.shared = shared
        """Idempotency keys shared with other instances (``dedup.database``), claimed before each commit."""
        self._flusher: asyncio.Task[None] | None = None
        self.sources: dict[str, SourceBinding] = {}
        self._pending: list[_Pending] = []
        self._scheduled = False
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        self._locked_since: float | None = None
        """When the pending group first found the write lock held (loop time), None while it is free."""

    def add_source(self, binding: SourceBinding) -> None:
        """Register a source so that its messages can be emitted."""
        self.sources[binding.name] = binding

    # ------------------------------------------------------------------ emit

    async def emit(self, raw: RawMessage) -> None:
        """Accept one raw message; return once it is durably queued, dead-lettered or a duplicate."""
        await self.submit(raw)

    async def submit(self, raw: RawMessage) -> Outcome:
        """Like :meth:`emit`, returning what became of the message."""
        if self._closed:
            raise Unavailable("the gateway is shutting down")
        if raw.source not in self.sources:
            raise TranslationError(f"unknown source {raw.source!r}")
        if not self.outbox.has_room():
            raise Unavailable("outbox disk budget used up; retry later")
        loop = asyncio.get_running_loop()
        corr = raw.metadata.get("correlation_id") or correlation_id.get() or f"{_BOOT}{next(_SEQ):08x}"
        pending = _Pending(raw, loop.create_future(), time.time(), corr)
        self._pending.append(pending)
        if len(self._pending) >= MAX_GROUP:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await pending.future

    def _flush(self) -> None:
        """Commit what is pending in one transaction, if the write lock is free now; else retry soon.

        The messages are translated, normalized, validated and encoded first, outside the
        transaction: the write lock, which every worker process and the publishing parent take in
        turn, is held for the inserts alone. When another process holds it, this loop does not
        wait for it (SQLite's busy handler would sleep): it keeps reading requests, which join
        the group, and tries again on the next message or after ``LOCK_RETRY_S``.
        """
        self._scheduled = False
        if self.shared is not None:
            # The shared claim needs a round trip: one task commits group after group, and what
            # arrives meanwhile forms the next group.
            if self._pending and (self._flusher is None or self._flusher.done()):
                self._flusher = asyncio.get_running_loop().create_task(self._flush_shared(self.shared))
            return
        if not self._pending:
            return
        self._prepare(self._pending)
        try:
            tx = self.db.try_transaction()
        except Exception as exc:  # the database cannot be written at all: nothing was acknowledged
            batch, self._pending = self._pending, []
            self._locked_since = None
            self._failed(batch, exc)
            return
        if tx is None:
            self._wait_for_lock()
            return
        self._locked_since = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        batch, self._pending = self._pending, []
        self._commit_in(tx, batch, None)

    def _wait_for_lock(self) -> None:
        """Another connection writes: try again shortly, or give up on the group after ``LOCK_WAIT_S``."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._locked_since is None:
            self._locked_since = now
        elif now - self._locked_since > LOCK_WAIT_S:
            batch, self._pending = self._pending, []
            self._locked_since = None
            self._failed(batch, Unavailable(f"the gateway database stayed locked for {LOCK_WAIT_S:.0f}s"))
            return
        if self._retry is None:
            self._retry = loop.call_later(LOCK_RETRY_S, self._retry_flush)

    def _retry_flush(self) -> None:
        self._retry = None
        self._flush()

    def _commit_in(self, tx: AbstractContextManager[sqlite3.Connection], batch: list[_Pending],
                   won: set[int] | None) -> None:
        """Write ``batch`` in the transaction ``tx``, commit, then answer every message of it."""
        try:
            outcomes = self._commit(tx, batch, won)
        except Exception as exc:  # the whole group failed to commit: nothing was acknowledged
            self._failed(batch, exc)
            return
        self._acknowledge(batch, outcomes)

    async def _flush_shared(self, shared: SharedClaims) -> None:
        """Commit pending groups, each claimed in the shared store first (see gateway.runtime.dedup_pg)."""
        while self._pending:
            batch, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            outcomes: list[Outcome] | None = None
            try:
                self._prepare(batch)
                async with shared.claim([SeenKey(p.raw.source, p.raw.idempotency_key, p.received)
                                         for p in batch]) as won:
                    outcomes = self._commit(self.db.transaction(), batch, won)
            except Exception as exc:
                if outcomes is None:  # claim or local commit failed: rolled back, nothing acknowledged
                    self._failed(batch, exc)
                    continue
                # Durable in this outbox; only the claim's commit failed (a duplicate elsewhere, at worst).
                log.warning("%d messages accepted without a recorded shared claim: %s", len(batch), exc)
            except BaseException:  # cancelled: settle every waiting message before leaving
                if outcomes is None:
                    self._failed(batch, Unavailable("the gateway is shutting down"))
                else:
                    self._acknowledge(batch, outcomes)
                rest, self._pending = self._pending, []
                self._failed(rest, Unavailable("the gateway is shutting down"))
                raise
            self._acknowledge(batch, outcomes)

    def _prepare(self, batch: list[_Pending]) -> None:
        """Run the stages for the messages of ``batch`` not prepared yet (no database access)."""
        for p in batch:
            if p.msg is None:
                binding = self.sources[p.raw.source]
                msg = p.msg = _Message(binding, p.raw, p.corr, p.received)
                try:
                    produced = self._translate(msg)
                    if produced is not None:
                        self._queue(msg, self._validated(msg, self._normalized(msg, produced)), self.sinks)
                except Exception as exc:  # an entity JSON cannot encode: this message only, kept
                    msg = p.msg = _Message(binding, p.raw, p.corr, p.received)
                    self._dead(msg, "translation", f"adapter error: {type(exc).__name__}: {exc}", "")

    def _commit(self, tx: AbstractContextManager[sqlite3.Connection], batch: list[_Pending],
                won: set[int] | None) -> list[Outcome]:
        """One transaction: dedup keys, archive, dead letters, outbox rows; what became of each message.

        The messages are prepared already (:meth:`_prepare`); ``won``: the indexes this instance
        claimed in the shared store (None: no shared store).
        """
        touched: set[str] = set()
        fresh_messages: list[_Message] = []
        try:
            with tx as conn:
                fresh = self.seen.first_deliveries(
                    conn, [SeenKey(p.raw.source, p.raw.idempotency_key, p.received) for p in batch])
                if won is not None:
                    fresh &= won
                outcomes: list[Outcome] = []
                rows: list[EncodedRow] = []
                for i, p in enumerate(batch):
                    msg = p.msg
                    if i not in fresh or msg is None:
                        outcomes.append(Outcome(duplicate=True))
                        continue
                    self._write_letters(conn, msg)
                    rows += msg.rows
                    touched |= msg.sinks
                    fresh_messages.append(msg)
                    outcomes.append(msg.outcome)
                # One statement per group, not per message: the group commit's point.
                self.archive.append_many(conn, [ArchiveEntry(m.raw, m.corr) for m in fresh_messages])
                if rows:
                    self.outbox.insert(conn, rows)
        except Exception:
            self._recount()
            raise
        for i, p in enumerate(batch):
            if outcomes[i].duplicate:
                self._duplicate(p.raw, p.corr)
        for msg in fresh_messages:
            self._settle(msg, received=True)
        self.outbox.notify(touched)
        return outcomes

    def _failed(self, batch: list[_Pending], exc: BaseException) -> None:
        """Fail every message of a group that was not committed (the sources deliver them again)."""
        if isinstance(exc, Unavailable):
            error = exc  # the component that knows (the shared dedup store) logs it once, not per group
            log.debug("could not accept %d messages: %s", len(batch), exc)
        else:
            error = Unavailable(f"storage error: {exc}")
            log.error("could not commit %d messages", len(batch), exc_info=exc)
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)

    @staticmethod
    def _acknowledge(batch: list[_Pending], outcomes: list[Outcome]) -> None:
        for p, outcome in zip(batch, outcomes, strict=True):
            if not p.future.done():
                p.future.set_result(outcome)

    def _recount(self) -> None:
        """Re-read the byte counters after a rollback (they were advanced optimistically)."""
        try:
            self.archive.recount()
            self.outbox.recount()
        except Exception as exc:  # storage is failing already; the next commit will say so again
            log.debug("could not recount storage after a rollback: %s", exc)

    def _duplicate(self, raw: RawMessage, corr: str) -> None:
        self.metrics.duplicates.inc(source=raw.source)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("duplicate message dropped", extra={"correlation_id": corr, "source": raw.source,
                                                        "idempotency_key": raw.idempotency_key})

    async def flush(self) -> None:
        """Handle what is pending now (used at shutdown)."""
        self._flush()
        await asyncio.sleep(0)
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    def close(self) -> None:
        """Refuse new messages and commit what is pending (waiting for the write lock if it must)."""
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.shared is not None:
            self._flush()
            return
        batch, self._pending = self._pending, []
        if batch:
            self._prepare(batch)
            self._commit_in(self.db.transaction(), batch, None)

    async def aclose(self) -> None:
        """Refuse new messages, commit what is pending, and close the shared dedup store if any."""
        self.close()
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self.shared is not None:
            await self.shared.close()

    # ------------------------------------------------------------------ replay

    def replay(
        self,
        raw: RawMessage,
        corr: str,
        *,
        only_entity: str | None = None,
        only_sink: str | None = None,
        delete_letter: int | None = None,
    ) -> Outcome:
        """Translate an archived or dead-lettered message again (after a mapping fix) and queue it.

        The idempotency check is skipped on purpose: replay is an explicit request. Older
        observations still never overwrite newer ones (the publisher's observedAt guard).
        ``only_entity`` / ``only_sink`` narrow what is queued (a dead letter names one of each);
        ``delete_letter`` is dropped in the same transaction.
        """
        binding = self.sources.get(raw.source)
        if binding is None:
            raise TranslationError(f"source {raw.source!r} is not configured any more")
        sinks = self.sinks if only_sink is None else [s for s in self.sinks if s.name == only_sink]
        msg = _Message(binding, raw, corr, time.time())
        produced = self._translate(msg)
        if produced is not None:
            if only_entity is not None:
                produced = [e for e in produced if isinstance(e, dict) and e.get("id") == only_entity]
            self._queue(msg, self._validated(msg, self._normalized(msg, produced)), sinks)
        with self.db.transaction() as conn:
            self._write_letters(conn, msg)
            if msg.rows:
                self.outbox.insert(conn, msg.rows)
            if delete_letter is not None:
                self.deadletters.delete(conn, delete_letter)
        self._settle(msg, received=False)
        self.outbox.notify(msg.sinks)
        return msg.outcome

    # ------------------------------------------------------------------ the stages both paths share

    def _translate(self, msg: _Message) -> list[Entity] | None:
        """The adapter's entities, or None when the message became a dead letter."""
        try:
            return list(msg.binding.adapter.to_entities(msg.raw))
        except TranslationError as exc:
            self._dead(msg, "translation", exc.reason, exc.pointer)
        except Exception as exc:  # an adapter bug must not stop the pipeline; keep the message
            self._dead(msg, "translation", f"adapter error: {type(exc).__name__}: {exc}", "")
        return None

    def _normalized(self, msg: _Message, produced: list[Entity]) -> list[Entity]:
        """Normalized entities; what cannot be normalized becomes a dead letter."""
        normalized: list[Entity] = []
        for item in produced:
            if not isinstance(item, dict):
                self._dead(msg, "translation", "adapter produced a non-object entity", "")
                continue
            try:
                normalized.append(normalize(item))
            except NormalizeError as exc:
                self._dead(msg, "validation", exc.reason, exc.pointer, item)
            except Exception as exc:  # odd values normalize cannot read: a dead letter, not a crash
                self._dead(msg, "validation", f"cannot normalize: {type(exc).__name__}: {exc}", "", item)
        return normalized

    def _validated(self, msg: _Message, entities: list[Entity]) -> list[Entity]:
        """The entities that pass validation; each one that fails becomes a dead letter."""
        if not entities:
            return []
        try:
            verdicts = self.validate(entities)
        except Exception as exc:  # a validator crash on odd input: keep the message, not the group
            reason = f"validator error: {type(exc).__name__}: {exc}"
            verdicts = [[(reason, "")] for _ in entities]
        valid: list[Entity] = []
        for item, problems in zip(entities, verdicts, strict=True):
            if problems:
                self._dead(msg, "validation", "; ".join(r for r, _ in problems[:5]), problems[0][1], item)
            else:
                valid.append(item)
        return valid

    def _queue(self, msg: _Message, entities: list[Entity], sinks: Sequence[SinkRoute]) -> None:
        """One outbox row per valid entity and sink that takes its tenant, encoded (written with the message)."""
        raw, outcome = msg.raw, msg.outcome
        queued: list[QueuedRow] = []
        for item in entities:
            try:
                tenant = msg.binding.tenant_for(raw, item)
            except Unroutable as exc:  # this entity only: the rest of the message goes on
                self._dead(msg, "routing", exc.reason, exc.pointer, item)
                continue
            for sink in sinks:
                if sink.accepts(tenant):
                    queued.append(QueuedRow(sink.name, tenant, item, msg.corr, raw.source, msg.received))
                    msg.sinks.add(sink.name)
            outcome.queued.append(str(item["id"]))
        msg.rows = self.outbox.encoded(queued)

    def _dead(self, msg: _Message, stage: str, reason: str, pointer: str, item: Entity | None = None) -> None:
        """Keep the message as a dead letter of ``stage`` (with the entity it concerns, if any), written with it."""
        tenant = msg.raw.tenant
        if item is not None:
            with contextlib.suppress(Unroutable):  # an unroutable entity's letter stays with the message's tenant
                tenant = msg.binding.tenant_for(msg.raw, item)
            try:  # checked here, before the transaction: a letter that cannot be written would fail the group
                json.dumps(item)
            except (TypeError, ValueError) as exc:
                reason, item = f"{reason} (entity not kept: {exc})", None
        msg.letters.append(_Letter(stage, reason, pointer, item, tenant))

    def _write_letters(self, conn: sqlite3.Connection, msg: _Message) -> None:
        """Insert the message's dead letters in the caller's transaction."""
        raw = msg.raw
        for letter in msg.letters:
            msg.outcome.dead_letters.append(self.deadletters.add(
                conn, stage=letter.stage, adapter=msg.binding.adapter_name, raw=raw, reason=letter.reason,
                pointer=letter.pointer, corr=msg.corr, entity=letter.entity, tenant=letter.tenant))

    def _settle(self, msg: _Message, *, received: bool) -> None:
        """Count and log what became of a message once it is committed (a duplicate never gets here)."""
        raw = msg.raw
        if received:
            self.metrics.messages_in.inc(source=raw.source, adapter=msg.binding.adapter_name)
        for letter in msg.letters:
            self.metrics.dead_letters.inc(source=raw.source, stage=letter.stage)
            log.warning("dead letter: %s", letter.reason, extra={
                "correlation_id": msg.corr, "source": raw.source, "stage": letter.stage, "pointer": letter.pointer})
        if msg.outcome.queued:
            self.metrics.entities_in.inc(len(msg.outcome.queued), source=raw.source)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("message accepted", extra={"correlation_id": msg.corr, "source": raw.source,
                                                 "entities": len(msg.outcome.queued),
                                                 "dead_letters": len(msg.outcome.dead_letters)})

    # ------------------------------------------------------------------ operator requests

    def requeue(self, sink: str, tenant: str, item: Entity, corr: str, source: str, letter_id: int) -> None:
        """Queue an entity a sink rejected once more (dead letter of stage ``sink``) and drop the letter."""
        with self.db.transaction() as conn:
            self.outbox.add(conn, [QueuedRow(sink, tenant, item, corr, source, time.time())])
            self.deadletters.delete(conn, letter_id)
        self.outbox.notify([sink])

    def describe(self) -> Iterable[dict[str, Any]]:
        """Configured sources for the admin API."""
        for b in self.sources.values():
            yield {"name": b.name, "adapter": b.adapter_name, "tenant": b.tenant,
                   "routes": [{"tenant": r.tenant, "entity": r.entity, "device": r.device} for r in b.routes],
                   "routing": b.router.describe() if b.router is not None else None}
