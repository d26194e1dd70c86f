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
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Final

BUSY_TIMEOUT_MS: Final = 5000
"""How long a blocking write waits for another connection's write lock (SQLite's busy handler)."""
_SQLITE_BUSY: Final = 5


class Database:
    """A WAL-mode SQLite file with a transaction helper."""

    def __init__(self, path: Path, *, durability: str = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def leave_checkpoints(self) -> None:
        """Never checkpoint the WAL from this connection: another process's connection does it.

        A checkpoint copies the WAL into the database file and syncs it, inside the ``COMMIT``
        that crosses the threshold; a worker of ``--workers`` would hold its acknowledgements (and
        its event loop) for that. The publishing parent commits steadily and checkpoints for all.
        """
        self.conn.execute("PRAGMA wal_autocheckpoint=0")

    def create(self, schema: str) -> None:
        """Create a component's tables and indexes if they do not exist (``CREATE ... IF NOT EXISTS``)."""
        self.conn.executescript(schema)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error)."""
        self.conn.execute("BEGIN IMMEDIATE")
        with self._finish() as conn:
            yield conn

    def try_transaction(self) -> AbstractContextManager[sqlite3.Connection] | None:
        """A transaction begun now, or None when another connection holds the write lock.

        It never waits: SQLite's busy handler sleeps in steps of milliseconds and would stall the
        caller's event loop while another process (a worker of ``--workers``, the publishing
        parent) writes. The caller retries later and meanwhile keeps serving its sources.
        """
        conn = self.conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_BUSY:
                return None
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return self._finish()

    @contextmanager
    def _finish(self) -> Iterator[sqlite3.Connection]:
        """``COMMIT`` the transaction begun (``ROLLBACK`` on error)."""
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT may leave the transaction open (SQLITE_BUSY does): end it, so that
            # the next transaction can begin.
            if self.conn.in_transaction:
                with suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    def ping(self) -> None:
        """Raise if the database cannot be read."""
        self.conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Checkpoint and close."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self.conn.close()
