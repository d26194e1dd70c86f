"""The gateway's own SQLite database (WAL): raw archive, dedup keys, outbox, dead letters.

One connection, used from the event loop only. Every write happens in a short synchronous
transaction with no ``await`` inside, so the stages never interleave half-done work. WAL with
``synchronous=NORMAL`` survives a killed process (what ``kill -9`` tests); ``full`` also
survives a power cut, at the price of one fsync per commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS archive(
  id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL, tenant TEXT NOT NULL,
  received_at TEXT NOT NULL, at REAL NOT NULL, idem TEXT NOT NULL, content_type TEXT NOT NULL,
  metadata TEXT NOT NULL, payload BLOB NOT NULL, corr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS archive_source ON archive(source, id);
CREATE TABLE IF NOT EXISTS seen(
  source TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY(source, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
CREATE TABLE IF NOT EXISTS outbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL, tenant TEXT NOT NULL,
  entity_id TEXT NOT NULL, body TEXT NOT NULL, corr TEXT NOT NULL, source TEXT NOT NULL,
  received REAL NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_sink ON outbox(sink, id);
CREATE INDEX IF NOT EXISTS outbox_backlog ON outbox(sink, tenant, at);
CREATE TABLE IF NOT EXISTS deadletters(
  id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, stage TEXT NOT NULL, source TEXT NOT NULL,
  adapter TEXT NOT NULL, tenant TEXT NOT NULL, reason TEXT NOT NULL, pointer TEXT NOT NULL,
  entity_id TEXT, entity TEXT, sink TEXT, received_at TEXT NOT NULL, idem TEXT NOT NULL,
  content_type TEXT NOT NULL, metadata TEXT NOT NULL, payload BLOB NOT NULL, corr TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deadletters_source ON deadletters(source, id);
CREATE TABLE IF NOT EXISTS latest(
  sink TEXT NOT NULL, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, attr TEXT NOT NULL,
  observed REAL NOT NULL, PRIMARY KEY(sink, tenant, entity_id, attr)) WITHOUT ROWID;
"""


class Database:
    """A WAL-mode SQLite file with a transaction helper."""

    def __init__(self, path: Path, *, durability: str = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def ping(self) -> None:
        """Raise if the database cannot be read."""
        self.conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Checkpoint and close."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.conn.close()
