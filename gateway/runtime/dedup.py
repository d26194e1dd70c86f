"""Idempotency keys: which ``(source, key)`` pairs the gateway has already accepted, for a while.

A redelivered message (an MQTT retry, a webhook resent after a timeout) carries the key of the
first delivery: it is acknowledged again without a second write. Keys older than the dedup
window are forgotten.

Two scopes. :class:`SeenKeys` is this instance's memory, in the gateway's SQLite database and in
the same transaction as the archive and outbox rows: a redelivery to the same instance. A
:class:`SharedClaims` (``dedup.database``; :mod:`gateway.runtime.dedup_pg`) is the memory of
several instances on one feed (an MQTT ``$share`` group, an HTTP load balancer): the same uplink
heard by two LoRaWAN gateways and reaching two instances is accepted by one of them only. The
pipeline asks both; a message is written when both see it for the first time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Final, NamedTuple, Protocol

from gateway.errors import ConfigInvalid
from gateway.runtime.db import Database

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS seen(
  source TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY(source, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
"""


class SeenKey(NamedTuple):
    """The idempotency key of one delivery, and when it was received (epoch seconds)."""

    source: str
    key: str
    received: float


class SeenKeys:
    """The ``seen`` table."""

    def __init__(self, db: Database, *, max_age_s: float) -> None:
        self.db = db
        self.max_age_s = max_age_s
        db.create(SCHEMA)

    def first_deliveries(self, conn: sqlite3.Connection, deliveries: Sequence[SeenKey]) -> set[int]:
        """Indexes of the deliveries seen for the first time; records their keys (one query per source).

        Checking keys in bulk matters: each SQLite statement hands the GIL back and forth, and
        per-message statements would make the store's writer thread a convoy for this loop.
        """
        by_source: dict[str, list[int]] = {}
        for index, delivery in enumerate(deliveries):
            by_source.setdefault(delivery.source, []).append(index)
        fresh: set[int] = set()
        new_keys: list[SeenKey] = []
        for source, indexes in by_source.items():
            keys = list({deliveries[i].key for i in indexes})
            known = {row[0] for row in conn.execute(
                f"SELECT key FROM seen WHERE source = ? AND key IN ({','.join('?' * len(keys))})",
                [source, *keys])}
            for i in indexes:
                key = deliveries[i].key
                if key not in known:
                    known.add(key)
                    fresh.add(i)
                    new_keys.append(deliveries[i])
        conn.executemany("INSERT INTO seen(source, key, at) VALUES (?,?,?)", new_keys)
        return fresh

    def prune(self) -> int:
        """Forget keys older than the dedup window; return how many."""
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM seen WHERE at < ?", (time.time() - self.max_age_s,)).rowcount

    def count(self) -> int:
        """Number of keys remembered."""
        return int(self.db.conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0])


class SharedClaims(Protocol):
    """Idempotency keys several gateway instances share (a database all of them reach)."""

    def claim(self, deliveries: Sequence[SeenKey]) -> AbstractAsyncContextManager[set[int]]:
        """Claim the keys of ``deliveries``; yields the indexes this instance won.

        The claim is provisional inside the ``async with`` block and becomes final when the
        block exits normally; an exception in the block (the local commit failed) releases it.
        Raises :class:`~gateway.errors.Unavailable` when the shared store cannot be reached.
        """
        ...

    async def open(self) -> None:
        """Connect now (Unavailable when the store cannot be reached; claims retry later)."""
        ...

    async def close(self) -> None:
        """Release the connections (idempotent)."""
        ...


def shared_claims(url: str, *, password: str | None, max_age_s: float) -> SharedClaims:
    """The shared store of keys at ``url`` (``dedup.database``), not yet connected."""
    try:
        from gateway.runtime.dedup_pg import PostgresClaims
    except ImportError as exc:
        if exc.name != "asyncpg":
            raise
        raise ConfigInvalid("dedup.database needs asyncpg", [
            "/dedup/database: the shared dedup store needs asyncpg (pip install 'jonction[postgresql]')"]) from None
    return PostgresClaims(url, password=password, max_age_s=max_age_s)
