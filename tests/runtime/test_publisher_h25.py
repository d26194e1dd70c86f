"""The publisher under ``--workers``: one upsert per fetch into the embedded store, no loop stall on the lock.

* The embedded store applies a batch in array order and records each change's history, so all
  the readings of one fetch go in one upsert, in outbox order, and every one of them reaches the
  temporal history (readings equal but for their ``observedAt`` included); remote brokers keep
  one round per reading.
* The outbox bookkeeping never waits inside SQLite for the write lock another connection (a
  worker process) holds: the event loop keeps turning, the delivered rows stay in the outbox
  until the lock is free, then leave it; nothing fails meanwhile.

Real parts: a real gateway app on loopback, SQLite files on disk, a second connection as the
other process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.runtime import publisher as publisher_module
from gateway.runtime.app import EMBEDDED
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.metrics import Metrics
from gateway.runtime.outbox import Outbox, QueuedRow
from gateway.runtime.publisher import Publisher, PublisherSettings
from gateway.runtime.sinks import EmbeddedSink
from gateway.runtime.state import RUNTIME, Runtime
from gateway.store.sqlite import SqliteStorage
from tests.loopback import receiving
from tests.runtime.support import FakeAdapter, config, eventually, running
from tests.runtime.test_observations import LINK, _history, _record_batches

BIN = "urn:ngsi-ld:WasteContainer:bin-1"
TIMES = ["2026-01-01T10:00:00Z", "2026-01-01T10:05:00Z", "2026-01-01T10:10:00Z"]


async def _send(readings: Sequence[tuple[str, float, str]]) -> None:
    """Readings (device, fill, observedAt) in one event-loop turn: one group commit, one publisher fetch."""
    adapter = FakeAdapter.instances["bins"]
    await adapter.ready()
    await asyncio.gather(*(adapter.send({"id": f"{device}-{i}", "device": device, "fill": fill, "at": at})
                           for i, (device, fill, at) in enumerate(readings)))


def _gateway(tmp_path: Path) -> AbstractAsyncContextManager[tuple[str, web.Application]]:
    """A gateway whose publisher lingers long enough that one fetch takes every reading sent together."""
    return running(config(tmp_path, publisher={"linger": 0.3}))


async def _drained(rt: Runtime) -> None:
    await eventually(lambda: rt.outbox is not None and rt.outbox.depth(EMBEDDED) == 0, what="drain")


@pytest.mark.parametrize("fills", [[20, 35, 50], [40, 40, 40]], ids=["changing", "same-value"])
async def test_every_reading_of_one_fetch_goes_in_one_embedded_upsert_and_reaches_the_history(
        tmp_path: Path, fills: list[int]) -> None:
    async with _gateway(tmp_path) as (base, app):
        rt = app[RUNTIME]
        sink = rt.publishers[EMBEDDED].sink
        assert isinstance(sink, EmbeddedSink) and sink.ordered_batches  # no subscription
        batches = _record_batches(app, EMBEDDED)
        await _send([("bin-1", fill, at) for fill, at in zip(fills, TIMES, strict=True)]
                    + [("bin-2", 10, TIMES[0])])
        await _drained(rt)
        # One upsert: the three readings in the order received (the other device's alongside).
        assert [[(e["id"], e["fillingLevel"]["observedAt"]) for e in batch] for batch in batches] == [
            [(BIN, TIMES[0]), (BIN, TIMES[1]), (BIN, TIMES[2]), ("urn:ngsi-ld:WasteContainer:bin-2", TIMES[0])]]
        # Each one is an observation of its own, even when only observedAt differs: none is skipped.
        assert await _history(base) == [(fill / 100, at) for fill, at in zip(fills, TIMES, strict=True)]
        stored = await rt.embedded_store.get("", BIN)
        assert stored is not None
        assert (stored["fillingLevel"]["value"], stored["fillingLevel"]["observedAt"]) == (fills[-1] / 100, TIMES[-1])
        assert rt.metrics.entities_out.get(sink=EMBEDDED) == 4


async def test_a_redelivered_reading_in_the_same_upsert_adds_no_second_instance(tmp_path: Path) -> None:
    async with _gateway(tmp_path) as (base, app):
        rt = app[RUNTIME]
        # The same reading under two message ids (two gateways heard it), then a newer one.
        await _send([("bin-1", 20, TIMES[0]), ("bin-1", 20, TIMES[0]), ("bin-1", 35, TIMES[1])])
        await _drained(rt)
        assert await _history(base) == [(0.2, TIMES[0]), (0.35, TIMES[1])]
        stored = await rt.embedded_store.get("", BIN)
        assert stored is not None and stored["fillingLevel"]["value"] == 0.35


async def test_an_older_reading_after_a_newer_one_in_the_same_fetch_goes_to_history_only(tmp_path: Path) -> None:
    async with _gateway(tmp_path) as (base, app):
        rt = app[RUNTIME]
        await _send([("bin-1", 50, TIMES[2]), ("bin-1", 20, TIMES[0])])
        await _drained(rt)
        assert await _history(base) == [(0.2, TIMES[0]), (0.5, TIMES[2])]
        stored = await rt.embedded_store.get("", BIN)
        assert stored is not None and stored["fillingLevel"]["value"] == 0.5  # the late one did not overwrite it


class Parts:
    """A publisher into a real embedded store, over a gateway database a second connection also writes."""

    def __init__(self, tmp: Path, store: SqliteStorage) -> None:
        self.db = Database(tmp / "gateway.sqlite")
        self.outbox = Outbox(self.db, max_bytes=1 << 24)
        self.metrics = Metrics()
        self.store = store
        self.publisher = Publisher(EmbeddedSink(EMBEDDED, store), self.db, self.outbox, DeadLetters(self.db),
                                   self.metrics, PublisherSettings(linger_s=0.0))
        self.other = sqlite3.connect(str(tmp / "gateway.sqlite"), isolation_level=None)

    def queue(self, fills: list[float]) -> None:
        entities = [{"id": BIN, "type": "WasteContainer",
                     "fillingLevel": {"type": "Property", "value": fill, "observedAt": at}}
                    for fill, at in zip(fills, TIMES, strict=False)]
        with self.db.transaction() as conn:
            self.outbox.add(conn, [QueuedRow(EMBEDDED, "", e, "c", "bins", 0.0) for e in entities])

    def depth(self) -> int:
        return int(self.other.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    @asynccontextmanager
    async def publishing(self) -> AsyncIterator[None]:
        """The publisher's loop, running until the block ends."""
        task = asyncio.create_task(self.publisher.run())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def parts(tmp_path: Path) -> Any:
    store = await SqliteStorage.open(tmp_path / "store.sqlite")
    p = Parts(tmp_path, store)
    yield p
    if p.other.in_transaction:
        p.other.execute("ROLLBACK")
    p.other.close()
    p.db.close()
    await store.close()


async def _stored_fill(store: SqliteStorage) -> Any:
    entity = await store.get("", BIN)
    return None if entity is None else entity["fillingLevel"]["value"]


async def test_a_held_outbox_lock_never_stalls_the_loop_and_delivered_rows_leave_once_it_is_free(parts: Parts) -> None:
    parts.queue([0.2, 0.35, 0.5])
    parts.other.execute("BEGIN IMMEDIATE")  # a worker process commits its group, and takes its time
    async with parts.publishing():
        await eventually(lambda: _stored_fill(parts.store), what="the upsert")
        assert await _stored_fill(parts.store) == 0.5
        turns = 0
        for _ in range(200):  # the loop keeps turning while the publisher waits for the lock
            await asyncio.sleep(0)
            turns += 1
        await asyncio.sleep(0.05)
        assert turns == 200
        # Acknowledged by the sink but not yet removed: the rows stay until the removal commits.
        assert parts.depth() == 3
        parts.other.execute("COMMIT")
        await eventually(lambda: parts.depth() == 0, what="the removal")
        assert parts.outbox.bytes == 0
        assert parts.publisher.published == 3  # three readings delivered
        assert parts.metrics.publish_errors.get(sink=EMBEDDED) == 0  # no lock timeout, no retry


async def test_a_lock_held_too_long_fails_the_round_and_the_rows_are_delivered_again(
        parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "LOCK_WAIT_S", 0.05)
    parts.queue([0.2])
    parts.other.execute("BEGIN IMMEDIATE")
    async with parts.publishing():
        await eventually(lambda: parts.metrics.publish_errors.get(sink=EMBEDDED) >= 1, what="the lock timeout")
        assert parts.depth() == 1  # not removed: nothing is lost
        parts.other.execute("COMMIT")
        await eventually(lambda: parts.depth() == 0, what="the removal after the retry")
        assert await _stored_fill(parts.store) == 0.2


async def test_with_a_subscription_each_reading_keeps_its_own_upsert_and_is_notified(tmp_path: Path) -> None:
    """The store notifies once per entity and upsert: while subscribed, one fetch's readings go in rounds."""
    heard: list[Any] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        heard.extend(e["fillingLevel"] for e in body["data"] if e["id"] == BIN)
        return web.Response(status=204)

    async with receiving(receive, path="/notify") as port, _gateway(tmp_path) as (base, app):
        rt = app[RUNTIME]
        sink = rt.publishers[EMBEDDED].sink
        assert isinstance(sink, EmbeddedSink) and sink.ordered_batches
        subscription = {
            "id": "urn:ngsi-ld:Subscription:bins", "type": "Subscription",
            "entities": [{"type": "WasteContainer"}], "watchedAttributes": ["fillingLevel"],
            "notification": {"endpoint": {"uri": f"http://127.0.0.1:{port}/notify"}, "format": "keyValues"},
        }
        async with aiohttp.ClientSession() as http, http.post(
                f"{base}/ngsi-ld/v1/subscriptions", json=subscription,
                headers=LINK,
        ) as resp:
            assert resp.status == 201, await resp.text()
        assert not sink.ordered_batches
        batches = _record_batches(app, EMBEDDED)
        await _send([("bin-1", fill, at) for fill, at in zip([20, 35, 50], TIMES, strict=True)])
        await _drained(rt)
        # Three rounds (each reading its own upsert), so three notifications, in order.
        assert [[e["fillingLevel"]["observedAt"] for e in batch] for batch in batches] == [[t] for t in TIMES]
        await eventually(lambda: len(heard) >= 3, what="three notifications")
        assert heard == [0.2, 0.35, 0.5]
        assert await _history(base) == [(0.2, TIMES[0]), (0.35, TIMES[1]), (0.5, TIMES[2])]
