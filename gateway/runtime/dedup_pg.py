"""Idempotency keys shared by several gateway instances, in PostgreSQL (``dedup.database``).

Several ``jonction run`` instances on one feed (an MQTT ``$share`` group, instances behind an
HTTP load balancer) each keep their own outbox. The same LoRaWAN uplink heard by two LoRaWAN
gateways may reach both instances; one of them must write it, and only one. Each instance claims
the keys of a group of messages in one table, ``jonction_dedup(source, key, at)``, with
``INSERT … ON CONFLICT DO NOTHING``-style semantics: the rows it inserted are the messages it won.

Why PostgreSQL and not NATS JetStream: a territory that runs several instances already runs
PostgreSQL for the store (``embedded_store.database``), so the shared keys cost one table, not one
more engine to install, secure, monitor and back up; and a PostgreSQL transaction gives the
claim-then-commit protocol below for free.

**The protocol, and why a crash loses nothing.** For each group of messages the pipeline

1. opens a PostgreSQL transaction and inserts the group's keys (sorted, so that two instances
   claiming overlapping groups lock rows in the same order and never deadlock). The rows it
   inserted are *provisional*: uncommitted, and locked;
2. writes the messages it won (and only those) to its local SQLite database — archive, local
   ``seen`` keys, outbox rows — and commits that;
3. commits the PostgreSQL transaction;
4. acknowledges every message of the group (PUBACK, HTTP 2xx): the won ones are durable in its
   outbox, the lost ones are durable in the outbox of the instance that won them.

Another instance claiming a key held provisionally waits on the row lock until step 3 (then it
sees the key taken: a duplicate) or until the holder rolls back or dies (then it inserts the key
and wins). So:

* a crash (or an error) before step 2's commit rolls the claim back — PostgreSQL aborts the
  transaction of a connection that drops — and nothing was acknowledged: the message is
  delivered again (to this or another instance) and claimed afresh. No loss.
* a crash between step 2 and step 3 leaves the message in this instance's outbox (published
  when it restarts) with its claim rolled back: a copy delivered to another instance is written
  there too. That window is one round trip long; the cost is a duplicate, never a loss.
* committing the claim first and the outbox second would turn that window into a loss (a key
  taken by a message that no outbox holds), which is why the order is this one.
* if step 3 fails (the connection broke after the local commit) the messages are durable here
  and are acknowledged; again at worst a duplicate.

A claim that waits longer than ``lock_timeout`` (an instance stalled while holding rows) fails
the group with :class:`~gateway.errors.Unavailable`: nothing is acknowledged and the sources
deliver again; ``idle_in_transaction_session_timeout`` makes PostgreSQL end a transaction its
holder has abandoned. While PostgreSQL cannot be reached, messages are refused the same way
(they wait at the MQTT broker or the HTTP client), rather than accepted without the check.

Keys expire like the local ones: a key older than ``dedup.max_age`` is claimable again (the
claim compares times, so expiry does not depend on pruning), and each instance deletes expired
rows about once a minute. Times are the receiving instance's clock (epoch seconds); skew between
instances matters only at the edge of a window counted in hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import asyncpg

from gateway.errors import Unavailable
from gateway.runtime.dedup import SeenKey
from gateway.store.urls import describe

log = logging.getLogger("jonction.dedup")

SCHEMA_LOCK: Final = 0x6A6F6E6374_10
"""Advisory lock held while creating the table (two instances starting together)."""

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jonction_dedup(
    source text NOT NULL,
    key text NOT NULL,
    at double precision NOT NULL,
    PRIMARY KEY (source, key));
CREATE INDEX IF NOT EXISTS jonction_dedup_at ON jonction_dedup(at);
COMMENT ON TABLE jonction_dedup IS 'jonction shared idempotency keys, layout 1';
"""
"""The table, apart from the store's migrations: it may live in the store's database or another."""

_CLAIM: Final = """
INSERT INTO jonction_dedup AS d (source, key, at)
SELECT u.source, u.key, u.at FROM unnest($1::text[], $2::text[], $3::float8[]) AS u(source, key, at)
ORDER BY u.source, u.key
ON CONFLICT (source, key) DO UPDATE SET at = excluded.at WHERE d.at < $4
RETURNING source, key
"""
# ON CONFLICT … DO UPDATE … WHERE: an expired key is claimed again (its row updated, and returned);
# a live one is left alone and not returned.

PRUNE_EVERY_S: Final = 60.0
CHECK_TIMEOUT_S: Final = 2.0
"""How long :meth:`PostgresClaims.check` (``/readyz``) waits for the database before calling it down."""

_ERRORS: Final = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_CHECK_ERRORS: Final = (*_ERRORS, asyncpg.exceptions.InternalClientError)
"""What a check turns into Unavailable: the pool's own state errors too (seen while it replaces dropped connections)."""
_CONTENDED: Final = (asyncpg.exceptions.LockNotAvailableError, asyncpg.exceptions.DeadlockDetectedError)
"""A claim that waited on another instance's provisional keys: the database itself is fine."""


class PostgresClaims:
    """Claims of idempotency keys in a PostgreSQL table shared by the gateway instances of one feed."""

    def __init__(self, url: str, *, password: str | None = None, max_age_s: float = 86400.0,
                 lock_timeout_s: float = 10.0, idle_timeout_s: float = 60.0,
                 prune_every_s: float = PRUNE_EVERY_S) -> None:
        self.url = url
        self.password = password
        self.max_age_s = max_age_s
        self.lock_timeout_s = lock_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.prune_every_s = prune_every_s
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._unavailable = False
        self._closed = False
        self._next_prune = 0.0
        self._pruner: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ connection

    async def open(self) -> None:
        """Connect and create the table if needed; Unavailable when PostgreSQL cannot be reached."""
        await self._ready()

    async def _ready(self) -> asyncpg.Pool:
        if self._closed:
            raise Unavailable("the shared dedup store is closed")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                self._pool = await self._connect()
        return self._pool

    async def _connect(self) -> asyncpg.Pool:
        settings = {"application_name": "jonction dedup",
                    "lock_timeout": f"{int(self.lock_timeout_s * 1000)}ms",
                    "idle_in_transaction_session_timeout": f"{int(self.idle_timeout_s * 1000)}ms"}
        try:
            pool = await asyncpg.create_pool(self.url, password=self.password, min_size=1, max_size=2,
                                             command_timeout=self.lock_timeout_s * 3, server_settings=settings)
            assert pool is not None
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                    await conn.execute(SCHEMA)
            except BaseException:
                await pool.close()
                raise
        except _ERRORS as exc:
            raise self._down(exc) from None
        return pool

    def _down(self, exc: BaseException) -> Unavailable:
        """The error to raise, logged once until the database answers again."""
        reason = f"dedup database {describe(self.url)} unavailable: {type(exc).__name__}: {exc}"
        if not self._unavailable:
            self._unavailable = True
            log.warning("%s; messages are refused (the sources deliver them again) until it answers", reason)
        return Unavailable(reason)

    async def check(self, timeout_s: float = CHECK_TIMEOUT_S) -> None:
        """Raise Unavailable unless the database answers ``SELECT 1`` within ``timeout_s`` (for ``/readyz``).

        It connects first when no pool is open yet (the database was down when the gateway
        started). A connection the server dropped since the last use fails the first query; the
        pool replaces it, so one more try within the same bound tells a dropped connection from
        a database that is down.
        """
        try:
            async with asyncio.timeout(timeout_s):
                pool = await self._ready()
                try:
                    await pool.fetchval("SELECT 1")
                except _CHECK_ERRORS:
                    await pool.fetchval("SELECT 1")
        except _CHECK_ERRORS as exc:  # TimeoutError included
            raise self._down(exc) from None
        self._recovered()

    def _recovered(self) -> None:
        if self._unavailable:
            self._unavailable = False
            log.info("dedup database %s recovered", describe(self.url))

    async def close(self) -> None:
        """Close the connections (idempotent)."""
        self._closed = True
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pruner
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # ------------------------------------------------------------------ claims

    @contextlib.asynccontextmanager
    async def claim(self, deliveries: Sequence[SeenKey]) -> AsyncIterator[set[int]]:
        """Claim the keys of ``deliveries`` in one transaction; yields the indexes won (see the module).

        The claim is final when the block exits normally, released when it raises.
        """
        first: dict[tuple[str, str], float] = {}
        for d in deliveries:
            first.setdefault((d.source, d.key), d.received)
        pairs = sorted(first)
        if not pairs:
            yield set()
            return
        now = max(d.received for d in deliveries)
        pool = await self._ready()
        try:
            conn = await pool.acquire()
        except _ERRORS as exc:
            raise self._down(exc) from None
        try:
            transaction = conn.transaction()
            try:
                await transaction.start()
                rows = await conn.fetch(_CLAIM, [p[0] for p in pairs], [p[1] for p in pairs],
                                        [first[p] for p in pairs], now - self.max_age_s)
            except _CONTENDED as exc:
                with contextlib.suppress(*_ERRORS):
                    await transaction.rollback()
                raise Unavailable(f"dedup: keys held by another instance for too long ({exc})") from None
            except _ERRORS as exc:
                with contextlib.suppress(*_ERRORS):
                    await transaction.rollback()
                raise self._down(exc) from None
            won = {(r[0], r[1]) for r in rows}
            try:
                yield {i for i, d in enumerate(deliveries) if (d.source, d.key) in won}
            except BaseException:
                with contextlib.suppress(*_ERRORS):
                    await transaction.rollback()
                raise
            try:
                await transaction.commit()
            except _ERRORS as exc:
                # The local commit is done: the caller treats this as "claim not recorded" (see module).
                raise ClaimNotRecorded(f"dedup database {describe(self.url)}: {type(exc).__name__}: {exc}") from None
        finally:
            with contextlib.suppress(*_ERRORS):
                await pool.release(conn)
        self._recovered()
        self._schedule_prune(now)

    # ------------------------------------------------------------------ expiry

    def _schedule_prune(self, now: float) -> None:
        if now < self._next_prune or (self._pruner is not None and not self._pruner.done()):
            return
        self._next_prune = now + self.prune_every_s
        self._pruner = asyncio.get_running_loop().create_task(self._prune_quietly(now), name="dedup prune")

    async def _prune_quietly(self, now: float) -> None:
        try:
            await self.prune(now)
        except Exception as exc:  # pruning is housekeeping: the claim compares times anyway
            log.debug("dedup prune failed: %s", exc)

    async def prune(self, now: float | None = None) -> int:
        """Delete keys older than the window; return how many."""
        pool = await self._ready()
        cutoff = (time.time() if now is None else now) - self.max_age_s
        result: str = await pool.execute("DELETE FROM jonction_dedup WHERE at < $1", cutoff)
        return int(result.rsplit(" ", 1)[-1])

    async def count(self) -> int:
        """Number of keys in the table (all instances)."""
        pool = await self._ready()
        value: Any = await pool.fetchval("SELECT count(*) FROM jonction_dedup")
        return int(value)


class ClaimNotRecorded(Unavailable):
    """The claim's commit failed after the block succeeded: the messages are durable locally."""

