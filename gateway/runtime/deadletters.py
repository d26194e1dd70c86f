"""Dead letters: what could not be translated, validated or written, kept with its reason.

Each one keeps the raw payload, the adapter and source, the tenant, a reason and a JSON
pointer, so that an operator can list them, read them, fix a mapping and replay them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Final

from gateway.model import Entity, RawMessage
from gateway.runtime.db import Database

STAGES = ("translation", "validation", "routing", "sink", "intervention")
"""Where in the pipeline a dead letter was made."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter."""

    id: int
    at: float
    stage: str
    adapter: str
    reason: str
    pointer: str
    raw: RawMessage
    correlation_id: str
    entity_id: str | None = None
    entity: Entity | None = None
    sink: str | None = None

    def to_json(self, *, with_payload: bool = False) -> dict[str, Any]:
        """JSON-able view for the admin API."""
        doc: dict[str, Any] = {
            "id": self.id,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
            "stage": self.stage,
            "source": self.raw.source,
            "adapter": self.adapter,
            "tenant": self.raw.tenant,
            "reason": self.reason,
            "pointer": self.pointer,
            "entityId": self.entity_id,
            "sink": self.sink,
            "receivedAt": self.raw.received_at,
            "idempotencyKey": self.raw.idempotency_key,
            "correlationId": self.correlation_id,
        }
        if with_payload:
            try:
                doc["payload"] = json.loads(self.raw.payload)
            except ValueError:
                doc["payload"] = self.raw.payload.decode("utf-8", "replace")
            doc["contentType"] = self.raw.content_type
            doc["metadata"] = dict(self.raw.metadata)
            doc["entity"] = self.entity
        return doc


SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS deadletters(
  id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, stage TEXT NOT NULL, source TEXT NOT NULL,
  adapter TEXT NOT NULL, tenant TEXT NOT NULL, reason TEXT NOT NULL, pointer TEXT NOT NULL,
  entity_id TEXT, entity TEXT, sink TEXT, received_at TEXT NOT NULL, idem TEXT NOT NULL,
  content_type TEXT NOT NULL, metadata TEXT NOT NULL, payload BLOB NOT NULL, corr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deadletters_source ON deadletters(source, id);
"""

_COLUMNS = ("id, at, stage, adapter, reason, pointer, source, tenant, received_at, idem, content_type,"
            " metadata, payload, corr, entity_id, entity, sink")


def _row(row: tuple[Any, ...]) -> DeadLetter:
    (rid, at, stage, adapter, reason, pointer, source, tenant, received_at, idem, ctype, meta, payload,
     corr, entity_id, entity, sink) = row
    raw = RawMessage(source, tenant, received_at, bytes(payload), idem, ctype, json.loads(meta))
    return DeadLetter(int(rid), float(at), stage, adapter, reason, pointer, raw, corr, entity_id,
                      json.loads(entity) if entity else None, sink)


class DeadLetters:
    """The ``deadletters`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.create(SCHEMA)

    def add(
        self,
        conn: sqlite3.Connection,
        *,
        stage: str,
        adapter: str,
        raw: RawMessage,
        reason: str,
        pointer: str,
        corr: str,
        entity: Entity | None = None,
        sink: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """Record one dead letter inside the caller's transaction."""
        entity_id = entity.get("id") if isinstance(entity, dict) else None
        cur = conn.execute(
            "INSERT INTO deadletters(at, stage, source, adapter, tenant, reason, pointer, entity_id, entity,"
            " sink, received_at, idem, content_type, metadata, payload, corr)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (time.time(), stage, raw.source, adapter, raw.tenant if tenant is None else tenant,
             reason[:4000], pointer, entity_id if isinstance(entity_id, str) else None,
             json.dumps(entity) if entity is not None else None, sink, raw.received_at,
             raw.idempotency_key, raw.content_type, json.dumps(dict(raw.metadata)), raw.payload, corr),
        )
        return int(cur.lastrowid or 0)

    def list(
        self,
        *,
        source: str | None = None,
        tenant: str | None = None,
        stage: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Dead letters with id > ``after``, oldest first, filtered."""
        sql = f"SELECT {_COLUMNS} FROM deadletters WHERE id > ?"
        args: list[Any] = [after]
        for column, value in (("source", source), ("tenant", tenant), ("stage", stage)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [_row(r) for r in self.db.conn.execute(sql, args).fetchall()]

    def get(self, letter_id: int) -> DeadLetter | None:
        """One dead letter by id."""
        row = self.db.conn.execute(f"SELECT {_COLUMNS} FROM deadletters WHERE id = ?", (letter_id,)).fetchone()
        return _row(row) if row else None

    def delete(self, conn: sqlite3.Connection, letter_id: int) -> bool:
        """Remove one dead letter inside the caller's transaction; False if it did not exist."""
        return conn.execute("DELETE FROM deadletters WHERE id = ?", (letter_id,)).rowcount > 0

    def discard(self, letter_id: int) -> bool:
        """Remove one dead letter in a transaction of its own; False if it did not exist."""
        with self.db.transaction() as conn:
            return self.delete(conn, letter_id)

    def count(self) -> dict[tuple[str, str], int]:
        """Number of dead letters per (source, stage)."""
        rows = self.db.conn.execute("SELECT source, stage, COUNT(*) FROM deadletters GROUP BY source, stage")
        return {(s, st): int(n) for s, st, n in rows.fetchall()}
