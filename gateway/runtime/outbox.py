"""Durable outbox: entities waiting for each sink, per tenant, within a disk budget.

Rows are written in the same transaction as the raw archive entry and the dedup key, so a
message is acknowledged to its source only once its entities are on disk. A publisher reads
them in order, deletes them once its sink has committed them, and never loses one on a crash.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

import orjson

from gateway.model import Entity
from gateway.runtime.db import Database


def encode(entity: Entity | list[Entity]) -> str:
    """The entity (or list) as compact JSON, the same value ``json.dumps`` writes (with orjson when it can).

    orjson is several times faster but writes NaN and infinities as ``null`` and refuses some
    values the standard encoder accepts (non-string keys, very large integers, lone surrogates):
    a body with a ``null`` in it, or a refusal, goes through the standard encoder instead, so the
    entity read back from the queue is the same.
    """
    try:
        body = orjson.dumps(entity, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS)
    except TypeError:
        body = b"null"
    if b"null" in body:
        return json.dumps(entity, separators=(",", ":"), ensure_ascii=False)
    return body.decode()


@dataclass(slots=True)
class OutboxRow:
    """One entity queued for one sink."""

    id: int
    sink: str
    tenant: str
    entity_id: str
    body: str
    corr: str
    source: str
    received: float
    at: float

    def entity(self) -> Entity:
        """The queued entity."""
        # orjson reads a row several times faster; bodies it refuses (NaN, integers beyond
        # 64 bits, which json.dumps writes) are still read by the standard parser.
        try:
            value: Entity = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            value = json.loads(self.body)
        return value


class QueuedRow(NamedTuple):
    """One entity to queue for one sink (what :meth:`Outbox.add` writes)."""

    sink: str
    tenant: str
    entity: Entity
    corr: str
    source: str
    received: float


EncodedRow = tuple[str, str, str, str, str, str, float, float]
"""One outbox row ready to insert: sink, tenant, entity id, body, correlation id, source, received, queued at."""

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, tenant TEXT NOT NULL,
  entity_id TEXT NOT NULL, body TEXT NOT NULL, corr TEXT NOT NULL, source TEXT NOT NULL,
  received REAL NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_sink ON outbox(sink, id);
CREATE INDEX IF NOT EXISTS outbox_backlog ON outbox(sink, tenant, at);
"""


STATUS_CACHE_S: Final = 1.0
"""How old a backlog figure ``/metrics`` shows may be (:meth:`Outbox.status`)."""


class Backlog(NamedTuple):
    """What waits for one sink and tenant."""

    sink: str
    tenant: str
    entities: int
    oldest_age_s: float
    """Age of the oldest entity waiting, in seconds."""

    def to_json(self) -> dict[str, str | int | float]:
        """JSON-able view for the admin API."""
        return {"sink": self.sink, "tenant": self.tenant, "entities": self.entities,
                "oldestAgeSeconds": self.oldest_age_s}


class OutboxFull(Exception):
    """The outbox disk budget is used up; the source must retry later."""


class Outbox:
    """The ``outbox`` table plus one wake-up event per sink."""

    def __init__(self, db: Database, *, max_bytes: int) -> None:
        self.db = db
        self.max_bytes = max_bytes
        db.create(SCHEMA)
        self.bytes = self.stored_bytes()
        self.events: dict[str, asyncio.Event] = {}
        self.on_commit: Callable[[list[str]], None] | None = None
        """Called by :meth:`notify` with the sinks woken (a worker process tells the publishing parent)."""
        self._status: tuple[float, list[Backlog]] | None = None
        """The last :meth:`status` answer and when (monotonic clock) it was read."""

    def stored_bytes(self) -> int:
        """Bytes of entity bodies the outbox holds, read from the table."""
        return int(self.db.conn.execute("SELECT COALESCE(SUM(length(body)), 0) FROM outbox").fetchone()[0])

    def recount(self) -> None:
        """Reset the byte counter from the table (after a rollback undid writes it had counted)."""
        self.bytes = self.stored_bytes()

    def event(self, sink: str) -> asyncio.Event:
        """The event set whenever rows are added for ``sink``."""
        ev = self.events.get(sink)
        if ev is None:
            ev = self.events[sink] = asyncio.Event()
        return ev

    def has_room(self, extra: int = 0) -> bool:
        """True while the outbox is under its disk budget."""
        return self.bytes + extra <= self.max_bytes

    def add(
        self,
        conn: sqlite3.Connection,
        rows: Iterable[QueuedRow],
    ) -> int:
        """Insert rows in the caller's transaction."""
        return self.insert(conn, self.encoded(rows))

    @staticmethod
    def encoded(rows: Iterable[QueuedRow]) -> list[EncodedRow]:
        """The rows as :meth:`insert` writes them (entities encoded; done before the write lock is taken)."""
        now = time.time()
        params: list[EncodedRow] = []
        bodies: dict[int, str] = {}
        for sink, tenant, ent, corr, source, received in rows:
            # One encoding per entity, not one per sink: the pipeline queues the same object for each.
            body = bodies.get(id(ent))
            if body is None:
                body = bodies[id(ent)] = encode(ent)
            params.append((sink, tenant, str(ent.get("id", "")), body, corr, source, received, now))
        return params

    def insert(self, conn: sqlite3.Connection, params: Sequence[EncodedRow]) -> int:
        """Insert encoded rows (:meth:`encoded`) in the caller's transaction."""
        conn.executemany(
            "INSERT INTO outbox(sink, tenant, entity_id, body, corr, source, received, at)"
            " VALUES (?,?,?,?,?,?,?,?)",
            params,
        )
        self.bytes += sum(len(p[3]) for p in params)
        return len(params)

    def notify(self, sinks: Iterable[str]) -> None:
        """Wake the publishers of ``sinks`` (call after commit)."""
        woken = list(sinks)
        for sink in woken:
            self.event(sink).set()
        if self.on_commit is not None:
            self.on_commit(woken)

    def fetch(self, sink: str, after: int, limit: int) -> list[OutboxRow]:
        """Rows for ``sink`` with id > ``after``, oldest first."""
        rows = self.db.conn.execute(
            "SELECT id, sink, tenant, entity_id, body, corr, source, received, at FROM outbox"
            " WHERE sink = ? AND id > ? ORDER BY id LIMIT ?",
            (sink, after, limit),
        ).fetchall()
        return [OutboxRow(*r) for r in rows]

    def remove(self, conn: sqlite3.Connection, rows: Iterable[OutboxRow]) -> int:
        """Delete delivered (or dead-lettered) rows in the caller's transaction."""
        ids = []
        for row in rows:
            ids.append((row.id,))
            self.bytes -= len(row.body)
        conn.executemany("DELETE FROM outbox WHERE id = ?", ids)
        return len(ids)

    def status(self, max_age_s: float = 0.0) -> list[Backlog]:
        """Backlog per sink and tenant: entities and oldest age in seconds.

        Answered from the ``outbox_backlog`` index alone, but that still reads one index entry
        per waiting entity. ``max_age_s`` accepts an answer that old: ``/metrics`` passes
        :data:`STATUS_CACHE_S`, so that its gauges (backlog and age) share one query per scrape,
        and a scraper polling many times a second costs one query a second at most, the figures
        then up to that old. The admin API and the console ask afresh (the default).
        """
        now = time.monotonic()
        cached = self._status
        if cached is not None and now - cached[0] <= max_age_s:
            return cached[1]
        wall = time.time()
        rows = self.db.conn.execute(
            "SELECT sink, tenant, COUNT(*), MIN(at) FROM outbox GROUP BY sink, tenant ORDER BY sink, tenant"
        ).fetchall()
        status = [Backlog(s, t, int(n), round(max(0.0, wall - float(oldest)), 3) if oldest is not None else 0.0)
                  for s, t, n, oldest in rows]
        self._status = (now, status)
        return status

    def depth(self, sink: str) -> int:
        """Number of rows queued for ``sink``."""
        return int(self.db.conn.execute("SELECT COUNT(*) FROM outbox WHERE sink = ?", (sink,)).fetchone()[0])
