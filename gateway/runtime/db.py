"""The gateway's own SQLite database (WAL), shared by the components that keep state in it.

Each component owns its table and creates it (:meth:`Database.create`): the raw archive
(``archive``), the idempotency keys (``seen``), the outbox (``outbox``), the dead letters
(``deadletters``) and the publishers' last observation times (``latest``). No component reads
another's table; it asks that component.

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


class Database:
    """A WAL-mode SQLite file with a transaction helper."""

    def __init__(self, path: Path, *, durability: str = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self.conn.execute("PRAGMA busy_timeout=5000")

    def create(self, schema: str) -> None:
        """Create a component's tables and indexes if they do not exist (``CREATE ... IF NOT EXISTS``)."""
        self.conn.executescript(schema)

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
