"""Append-only raw archive, bounded by size and age, listable and replayable.

Every raw message is archived exactly as received, in the same transaction that queues its
entities, so what the outbox holds can always be traced back to the bytes a vendor sent.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from gateway.model import RawMessage
from gateway.runtime.db import Database


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    """One archived raw message and its archive id."""

    id: int
    raw: RawMessage
    correlation_id: str

    def summary(self) -> dict[str, Any]:
        """JSON-able view for the admin API (payload size, not the bytes)."""
        return {
            "id": self.id,
            "source": self.raw.source,
            "tenant": self.raw.tenant,
            "receivedAt": self.raw.received_at,
            "idempotencyKey": self.raw.idempotency_key,
            "contentType": self.raw.content_type,
            "size": len(self.raw.payload),
            "correlationId": self.correlation_id,
        }


def _row_to_message(row: tuple[Any, ...]) -> ArchivedMessage:
    rid, source, tenant, received_at, idem, ctype, meta, payload, corr = row
    raw = RawMessage(source, tenant, received_at, bytes(payload), idem, ctype, json.loads(meta))
    return ArchivedMessage(int(rid), raw, corr)


_COLUMNS = "id, source, tenant, received_at, idem, content_type, metadata, payload, corr"

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS archive(
  id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, tenant TEXT NOT NULL,
  received_at TEXT NOT NULL, at REAL NOT NULL, idem TEXT NOT NULL, content_type TEXT NOT NULL,
  metadata TEXT NOT NULL, payload BLOB NOT NULL, corr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS archive_source ON archive(source, id);
"""


class ArchiveEntry(NamedTuple):
    """A raw message to archive and the correlation id it was given."""

    raw: RawMessage
    corr: str


class RawArchive:
    """The ``archive`` table: append, prune by size and age, list, fetch for replay."""

    def __init__(self, db: Database, *, max_bytes: int, max_age_s: float) -> None:
        self.db = db
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        db.create(SCHEMA)
        self.bytes = self.stored_bytes()

    def stored_bytes(self) -> int:
        """Bytes of payload the archive holds, read from the table."""
        return int(self.db.conn.execute("SELECT COALESCE(SUM(length(payload)), 0) FROM archive").fetchone()[0])

    def recount(self) -> None:
        """Reset the byte counter from the table (after a rollback undid writes it had counted)."""
        self.bytes = self.stored_bytes()

    def count(self) -> int:
        """Number of archived messages."""
        return int(self.db.conn.execute("SELECT COUNT(*) FROM archive").fetchone()[0])

    def append(self, conn: sqlite3.Connection, raw: RawMessage, corr: str) -> int:
        """Insert ``raw`` inside the caller's transaction; return its archive id."""
        cur = conn.execute(
            "INSERT INTO archive(source, tenant, received_at, at, idem, content_type, metadata, payload, corr)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (raw.source, raw.tenant, raw.received_at, time.time(), raw.idempotency_key, raw.content_type,
             json.dumps(dict(raw.metadata)), raw.payload, corr),
        )
        self.bytes += len(raw.payload)
        return int(cur.lastrowid or 0)

    def append_many(self, conn: sqlite3.Connection, messages: Sequence[ArchiveEntry]) -> None:
        """Insert several messages in the caller's transaction."""
        now = time.time()
        conn.executemany(
            "INSERT INTO archive(source, tenant, received_at, at, idem, content_type, metadata, payload, corr)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            [(raw.source, raw.tenant, raw.received_at, now, raw.idempotency_key, raw.content_type,
              json.dumps(dict(raw.metadata)) if raw.metadata else "{}", raw.payload, corr)
             for raw, corr in messages],
        )
        self.bytes += sum(len(raw.payload) for raw, _ in messages)

    def prune(self) -> int:
        """Drop the oldest messages beyond the age limit or the size budget; return how many.

        Ids grow with time, so both cuts are an id: only the rows being dropped are read, never
        the whole archive (it may hold gigabytes).
        """
        removed = 0
        with self.db.transaction() as conn:
            row = conn.execute("SELECT id FROM archive WHERE at >= ? ORDER BY id LIMIT 1",
                               (time.time() - self.max_age_s,)).fetchone()
            first_kept = int(row[0]) if row else None
            if first_kept is None:
                last = conn.execute("SELECT MAX(id) FROM archive").fetchone()[0]
                first_kept = int(last) + 1 if last is not None else 0
            removed += self._drop_before(conn, first_kept)
            while self.bytes > self.max_bytes:
                rows = conn.execute("SELECT id, length(payload) FROM archive ORDER BY id LIMIT 1000").fetchall()
                if not rows:
                    break
                excess, cut = self.bytes - self.max_bytes, int(rows[-1][0]) + 1
                for rid, size in rows:
                    excess -= int(size)
                    if excess <= 0:
                        cut = int(rid) + 1
                        break
                removed += self._drop_before(conn, cut)
        return removed

    def _drop_before(self, conn: sqlite3.Connection, first_kept: int) -> int:
        freed, count = conn.execute("SELECT COALESCE(SUM(length(payload)), 0), COUNT(*) FROM archive WHERE id < ?",
                                    (first_kept,)).fetchone()
        if count:
            conn.execute("DELETE FROM archive WHERE id < ?", (first_kept,))
            self.bytes -= int(freed)
        return int(count)

    def list(
        self, *, source: str | None = None, tenant: str | None = None, after: int = 0, limit: int = 100
    ) -> list[ArchivedMessage]:
        """Archived messages with id > ``after``, oldest first, optionally of one source or tenant."""
        sql = f"SELECT {_COLUMNS} FROM archive WHERE id > ?"
        args: list[Any] = [after]
        if source:
            sql += " AND source = ?"
            args.append(source)
        if tenant is not None:
            sql += " AND tenant = ?"
            args.append(tenant)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [_row_to_message(r) for r in self.db.conn.execute(sql, args).fetchall()]

    def get(self, archive_id: int) -> ArchivedMessage | None:
        """One archived message by id."""
        row = self.db.conn.execute(f"SELECT {_COLUMNS} FROM archive WHERE id = ?", (archive_id,)).fetchone()
        return _row_to_message(row) if row else None

    def stats(self) -> dict[str, Any]:
        """Count, bytes and oldest receipt time."""
        count, oldest = self.db.conn.execute("SELECT COUNT(*), MIN(received_at) FROM archive").fetchone()
        return {"messages": int(count), "bytes": self.bytes, "oldestReceivedAt": oldest,
                "maxBytes": self.max_bytes, "maxAgeSeconds": self.max_age_s}
