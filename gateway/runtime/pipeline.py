"""The ingestion half of the data path: emit → archive → translate → normalize → validate → outbox.

``Pipeline.emit`` is the callback every adapter transport receives. Messages that arrive in
the same event-loop turn are handled together in one SQLite transaction (group commit), and
each ``emit`` returns only after that commit: the message is then archived and its entities
are durably queued for every sink (or kept as dead letters). That return is the acknowledgement
transports rely on (MQTT ack, HTTP 2xx). A redelivered message (same source and idempotency
key) is acknowledged without a second write. With ``dedup.database``, the keys are also claimed
in a store shared by several instances before the commit (:mod:`gateway.runtime.dedup_pg`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import logging
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
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
from gateway.runtime.outbox import Outbox, QueuedRow
from gateway.runtime.routing import Router, Unroutable
from gateway.runtime.validator import BatchValidator

log = logging.getLogger("jonction.pipeline")

MAX_GROUP = 512
"""Most messages handled in one transaction; bounds the time the loop is held."""

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
class _Pending:
    raw: RawMessage
    future: asyncio.Future[Outcome]
    received: float
    corr: str


@dataclass(slots=True)
class _Message:
    """One message going through the stages inside a transaction, and what became of it so far."""

    conn: sqlite3.Connection
    binding: SourceBinding
    raw: RawMessage
    corr: str
    received: float
    outcome: Outcome = field(default_factory=Outcome)


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
        self._scheduled = False
        if self.shared is not None:
            # The shared claim needs a round trip: one task commits group after group, and what
            # arrives meanwhile forms the next group.
            if self._pending and (self._flusher is None or self._flusher.done()):
                self._flusher = asyncio.get_running_loop().create_task(self._flush_shared(self.shared))
            return
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            outcomes = self._commit(batch, None)
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
                async with shared.claim([SeenKey(p.raw.source, p.raw.idempotency_key, p.received)
                                         for p in batch]) as won:
                    outcomes = self._commit(batch, won)
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

    def _commit(self, batch: list[_Pending], won: set[int] | None) -> list[Outcome]:
        """One transaction: dedup keys, archive, translation, outbox rows; what became of each message.

        ``won``: the indexes this instance claimed in the shared store (None: no shared store).
        """
        touched: set[str] = set()
        try:
            with self.db.transaction() as conn:
                rows: list[QueuedRow] = []
                fresh = self.seen.first_deliveries(
                    conn, [SeenKey(p.raw.source, p.raw.idempotency_key, p.received) for p in batch])
                if won is not None:
                    fresh &= won
                outcomes = [self._ingest(_Message(conn, self.sources[p.raw.source], p.raw, p.corr, p.received),
                                         rows, touched)
                            if i in fresh else self._duplicate(p.raw, p.corr)
                            for i, p in enumerate(batch)]
                # One statement per group, not per message: the group commit's point.
                self.archive.append_many(conn, [ArchiveEntry(p.raw, p.corr) for i, p in enumerate(batch)
                                                if i in fresh])
                if rows:
                    self.outbox.add(conn, rows)
        except Exception:
            self._recount()
            raise
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

    def _duplicate(self, raw: RawMessage, corr: str) -> Outcome:
        self.metrics.duplicates.inc(source=raw.source)
        log.debug("duplicate message dropped", extra={"correlation_id": corr, "source": raw.source,
                                                    "idempotency_key": raw.idempotency_key})
        return Outcome(duplicate=True)

    async def flush(self) -> None:
        """Handle what is pending now (used at shutdown)."""
        self._flush()
        await asyncio.sleep(0)
        if self._flusher is not None:
            await asyncio.shield(self._flusher)

    def close(self) -> None:
        """Refuse new messages and commit what is pending (see :meth:`aclose` with a shared store)."""
        self._flush()
        self._closed = True

    async def aclose(self) -> None:
        """Refuse new messages, commit what is pending, and close the shared dedup store if any."""
        self.close()
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self.shared is not None:
            await self.shared.close()

    # ------------------------------------------------------------------ the two paths

    def _ingest(self, msg: _Message, rows: list[QueuedRow], touched: set[str]) -> Outcome:
        """A live message seen for the first time (the caller writes its archive entry)."""
        self.metrics.messages_in.inc(source=msg.raw.source, adapter=msg.binding.adapter_name)
        produced = self._translate(msg)
        if produced is not None:
            self._queue(msg, self._validated(msg, self._normalized(msg, produced)), self.sinks, rows, touched)
        return msg.outcome

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
        rows: list[QueuedRow] = []
        touched: set[str] = set()
        with self.db.transaction() as conn:
            msg = _Message(conn, binding, raw, corr, time.time())
            produced = self._translate(msg)
            if produced is not None:
                if only_entity is not None:
                    produced = [e for e in produced if isinstance(e, dict) and e.get("id") == only_entity]
                self._queue(msg, self._validated(msg, self._normalized(msg, produced)), sinks, rows, touched)
            if rows:
                self.outbox.add(conn, rows)
            if delete_letter is not None:
                self.deadletters.delete(conn, delete_letter)
        self.outbox.notify(touched)
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

    def _queue(
        self, msg: _Message, entities: list[Entity], sinks: Sequence[SinkRoute], rows: list[QueuedRow],
        touched: set[str],
    ) -> None:
        """One outbox row per valid entity and sink that takes its tenant (written by the caller)."""
        raw, outcome = msg.raw, msg.outcome
        for item in entities:
            try:
                tenant = msg.binding.tenant_for(raw, item)
            except Unroutable as exc:  # this entity only: the rest of the message goes on
                self._dead(msg, "routing", exc.reason, exc.pointer, item)
                continue
            for sink in sinks:
                if sink.accepts(tenant):
                    rows.append(QueuedRow(sink.name, tenant, item, msg.corr, raw.source, msg.received))
                    touched.add(sink.name)
            outcome.queued.append(str(item["id"]))
        if outcome.queued:
            self.metrics.entities_in.inc(len(outcome.queued), source=raw.source)
        log.debug("message accepted", extra={"correlation_id": msg.corr, "source": raw.source,
                                             "entities": len(outcome.queued),
                                             "dead_letters": len(outcome.dead_letters)})

    def _dead(self, msg: _Message, stage: str, reason: str, pointer: str, item: Entity | None = None) -> None:
        """Keep the message as a dead letter of ``stage`` (with the entity it concerns, if any)."""
        raw = msg.raw
        self.metrics.dead_letters.inc(source=raw.source, stage=stage)
        log.warning("dead letter: %s", reason, extra={"correlation_id": msg.corr, "source": raw.source,
                                                      "stage": stage, "pointer": pointer})
        tenant = raw.tenant
        if item is not None:
            with contextlib.suppress(Unroutable):  # an unroutable entity's letter stays with the message's tenant
                tenant = msg.binding.tenant_for(raw, item)
        msg.outcome.dead_letters.append(self.deadletters.add(
            msg.conn, stage=stage, adapter=msg.binding.adapter_name, raw=raw, reason=reason, pointer=pointer,
            corr=msg.corr, entity=item, tenant=tenant))

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
