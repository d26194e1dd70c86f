"""The ingestion half of the data path: emit → archive → translate → normalize → validate → outbox.

``Pipeline.emit`` is the callback every adapter transport receives. Messages that arrive in
the same event-loop turn are handled together in one SQLite transaction (group commit), and
each ``emit`` returns only after that commit: the message is then archived and its entities
are durably queued for every sink (or kept as dead letters). That return is the acknowledgement
transports rely on (MQTT ack, HTTP 2xx). A redelivered message (same source and idempotency
key) is acknowledged without a second write.
"""

from __future__ import annotations

import asyncio
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
from gateway.runtime.archive import RawArchive
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.logging import correlation_id
from gateway.runtime.metrics import Metrics
from gateway.runtime.normalize import NormalizeError, normalize
from gateway.runtime.outbox import Outbox
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

    def tenant_for(self, raw: RawMessage, item: Entity) -> str:
        """The tenant an entity goes to: first matching route, else the message's tenant."""
        for route in self.routes:
            if route.matches(raw, item):
                return route.tenant
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
    archive_id: int = 0
    queued: list[str] = field(default_factory=list)
    dead_letters: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    raw: RawMessage
    future: asyncio.Future[Outcome]
    received: float
    corr: str


class Pipeline:
    """Turns raw messages into queued entities and dead letters, durably, with group commit."""

    def __init__(
        self,
        db: Database,
        archive: RawArchive,
        outbox: Outbox,
        deadletters: DeadLetters,
        metrics: Metrics,
        validator: BatchValidator,
        sinks: Sequence[SinkRoute],
        *,
        dedup_max_age_s: float = 86400.0,
    ) -> None:
        self.db = db
        self.archive = archive
        self.outbox = outbox
        self.deadletters = deadletters
        self.metrics = metrics
        self.validate = validator
        self.sinks = list(sinks)
        self.sources: dict[str, SourceBinding] = {}
        self.dedup_max_age_s = dedup_max_age_s
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
        batch, self._pending = self._pending, []
        if not batch:
            return
        touched: set[str] = set()
        try:
            with self.db.transaction() as conn:
                rows: list[tuple[str, str, Entity, str, str, float]] = []
                archived: list[tuple[RawMessage, str]] = []
                fresh = self._first_deliveries(conn, batch)
                outcomes = [self._process(conn, p.raw, p.corr, p.received, touched, rows=rows, archived=archived,
                                          dedup=False) if i in fresh else self._duplicate(p.raw, p.corr)
                            for i, p in enumerate(batch)]
                # One statement per group, not per message: the group commit's point.
                self.archive.append_many(conn, archived)
                if rows:
                    self.outbox.add(conn, rows)
        except Exception as exc:  # the whole group failed to commit: nothing was acknowledged
            log.error("could not commit %d messages", len(batch), exc_info=exc)
            self._recount()
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(Unavailable(f"storage error: {exc}"))
            return
        self.outbox.notify(touched)
        for p, outcome in zip(batch, outcomes, strict=True):
            if not p.future.done():
                p.future.set_result(outcome)

    def _recount(self) -> None:
        """Re-read the byte counters after a rollback (they were advanced optimistically)."""
        try:
            conn = self.db.conn
            self.archive.bytes = int(conn.execute("SELECT COALESCE(SUM(length(payload)), 0) FROM archive")
                                     .fetchone()[0])
            self.outbox.bytes = int(conn.execute("SELECT COALESCE(SUM(length(body)), 0) FROM outbox").fetchone()[0])
        except Exception as exc:  # storage is failing already; the next commit will say so again
            log.debug("could not recount storage after a rollback: %s", exc)

    def _first_deliveries(self, conn: sqlite3.Connection, batch: Sequence[_Pending]) -> set[int]:
        """Indexes of the messages seen for the first time; records their keys (one query per source).

        Checking keys in bulk matters: each SQLite statement hands the GIL back and forth, and
        per-message statements would make the store's writer thread a convoy for this loop.
        """
        by_source: dict[str, list[int]] = {}
        for index, p in enumerate(batch):
            by_source.setdefault(p.raw.source, []).append(index)
        fresh: set[int] = set()
        new_keys: list[tuple[str, str, float]] = []
        for source, indexes in by_source.items():
            keys = list({batch[i].raw.idempotency_key for i in indexes})
            known = {row[0] for row in conn.execute(
                f"SELECT key FROM seen WHERE source = ? AND key IN ({','.join('?' * len(keys))})",
                [source, *keys])}
            for i in indexes:
                key = batch[i].raw.idempotency_key
                if key not in known:
                    known.add(key)
                    fresh.add(i)
                    new_keys.append((source, key, batch[i].received))
        conn.executemany("INSERT INTO seen(source, key, at) VALUES (?,?,?)", new_keys)
        return fresh

    def _duplicate(self, raw: RawMessage, corr: str) -> Outcome:
        self.metrics.duplicates.inc(source=raw.source)
        log.debug("duplicate message dropped", extra={"correlation_id": corr, "source": raw.source,
                                                    "idempotency_key": raw.idempotency_key})
        return Outcome(duplicate=True)

    async def flush(self) -> None:
        """Handle what is pending now (used at shutdown)."""
        self._flush()
        await asyncio.sleep(0)

    def close(self) -> None:
        """Refuse new messages and commit what is pending."""
        self._flush()
        self._closed = True

    # ------------------------------------------------------------------ processing

    def _process(
        self,
        conn: sqlite3.Connection,
        raw: RawMessage,
        corr: str,
        received: float,
        touched: set[str],
        *,
        dedup: bool = True,
        archive: bool = True,
        only_entity: str | None = None,
        only_sink: str | None = None,
        rows: list[tuple[str, str, Entity, str, str, float]] | None = None,
        archived: list[tuple[RawMessage, str]] | None = None,
    ) -> Outcome:
        binding = self.sources[raw.source]
        outcome = Outcome()
        if dedup:
            cur = conn.execute("INSERT OR IGNORE INTO seen(source, key, at) VALUES (?,?,?)",
                               (raw.source, raw.idempotency_key, received))
            if cur.rowcount == 0:
                return self._duplicate(raw, corr)
        if archive:
            if archived is not None:
                archived.append((raw, corr))
            else:
                outcome.archive_id = self.archive.append(conn, raw, corr)
            self.metrics.messages_in.inc(source=raw.source, adapter=binding.adapter_name)
        try:
            produced = list(binding.adapter.to_entities(raw))
        except TranslationError as exc:
            outcome.dead_letters.append(self._dead(conn, "translation", binding, raw, exc.reason, exc.pointer, corr))
            return outcome
        except Exception as exc:  # an adapter bug must not stop the pipeline; keep the message
            reason = f"adapter error: {type(exc).__name__}: {exc}"
            outcome.dead_letters.append(self._dead(conn, "translation", binding, raw, reason, "", corr))
            return outcome
        if only_entity is not None:
            produced = [e for e in produced if isinstance(e, dict) and e.get("id") == only_entity]
        valid: list[Entity] = []
        for item in produced:
            if not isinstance(item, dict):
                outcome.dead_letters.append(
                    self._dead(conn, "translation", binding, raw, "adapter produced a non-object entity", "", corr))
                continue
            try:
                valid.append(normalize(item))
            except NormalizeError as exc:
                outcome.dead_letters.append(
                    self._dead(conn, "validation", binding, raw, exc.reason, exc.pointer, corr, item))
            except Exception as exc:  # odd values normalize cannot read: a dead letter, not a crash
                outcome.dead_letters.append(self._dead(conn, "validation", binding, raw,
                                                       f"cannot normalize: {type(exc).__name__}: {exc}", "",
                                                       corr, item))
        try:
            verdicts = self.validate(valid) if valid else []
        except Exception as exc:  # a validator crash on odd input: keep the message, not the group
            reason = f"validator error: {type(exc).__name__}: {exc}"
            verdicts = [[(reason, "")] for _ in valid]
        deferred = rows is not None
        rows = rows if rows is not None else []
        for item, problems in zip(valid, verdicts, strict=True):
            if problems:
                reason = "; ".join(r for r, _ in problems[:5])
                outcome.dead_letters.append(
                    self._dead(conn, "validation", binding, raw, reason, problems[0][1], corr, item))
                continue
            tenant = binding.tenant_for(raw, item)
            for sink in self.sinks:
                if sink.accepts(tenant) and (only_sink is None or sink.name == only_sink):
                    rows.append((sink.name, tenant, item, corr, raw.source, received))
                    touched.add(sink.name)
            outcome.queued.append(str(item["id"]))
        if outcome.queued:
            self.metrics.entities_in.inc(len(outcome.queued), source=raw.source)
        if rows and not deferred:
            self.outbox.add(conn, rows)
        log.debug("message accepted", extra={"correlation_id": corr, "source": raw.source,
                                             "entities": len(outcome.queued),
                                             "dead_letters": len(outcome.dead_letters)})
        return outcome

    def _dead(
        self,
        conn: sqlite3.Connection,
        stage: str,
        binding: SourceBinding,
        raw: RawMessage,
        reason: str,
        pointer: str,
        corr: str,
        item: Entity | None = None,
    ) -> int:
        self.metrics.dead_letters.inc(source=raw.source, stage=stage)
        log.warning("dead letter: %s", reason, extra={"correlation_id": corr, "source": raw.source,
                                                      "stage": stage, "pointer": pointer})
        tenant = binding.tenant_for(raw, item) if item is not None else raw.tenant
        return self.deadletters.add(conn, stage=stage, adapter=binding.adapter_name, raw=raw, reason=reason,
                                    pointer=pointer, corr=corr, entity=item, tenant=tenant)

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
        """
        if raw.source not in self.sources:
            raise TranslationError(f"source {raw.source!r} is not configured any more")
        touched: set[str] = set()
        with self.db.transaction() as conn:
            outcome = self._process(conn, raw, corr, time.time(), touched, dedup=False, archive=False,
                                    only_entity=only_entity, only_sink=only_sink)
            if delete_letter is not None:
                self.deadletters.delete(conn, delete_letter)
        self.outbox.notify(touched)
        return outcome

    def requeue(self, sink: str, tenant: str, item: Entity, corr: str, source: str, letter_id: int) -> None:
        """Queue an entity a sink rejected once more (dead letter of stage ``sink``) and drop the letter."""
        with self.db.transaction() as conn:
            self.outbox.add(conn, [(sink, tenant, item, corr, source, time.time())])
            self.deadletters.delete(conn, letter_id)
        self.outbox.notify([sink])

    def prune_dedup(self) -> int:
        """Forget idempotency keys older than the dedup window."""
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM seen WHERE at < ?", (time.time() - self.dedup_max_age_s,)).rowcount

    def describe(self) -> Iterable[dict[str, Any]]:
        """Configured sources for the admin API."""
        for b in self.sources.values():
            yield {"name": b.name, "adapter": b.adapter_name, "tenant": b.tenant,
                   "routes": [{"tenant": r.tenant, "entity": r.entity, "device": r.device} for r in b.routes]}
