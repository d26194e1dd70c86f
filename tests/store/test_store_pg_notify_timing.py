"""Throttling and timeInterval across a notifier takeover (PostgreSQL) and a store restart (SQLite).

Real ``jonction store`` processes and a loopback receiver. The period a subscription keeps is
measured from its last notification, whichever process sent it: the process taking over the
notifier lock (after SIGKILL of the one holding it) and a restarted SQLite store go on with it.
The assertions are on which changes get notified and in what order; the one bound on arrival gaps
(periodic subscriptions) is generous on both sides. A last test checks, without processes, how a
recorded lastNotification sets the clocks of a subscription read from its record.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import model
from gateway.store.subscriptions.notifier import NEVER, adopt_clocks, monotonic_of
from gateway.store.subscriptions.parsing import Subscription
from tests.conftest import free_port
from tests.loopback import StoreProcess, receiving, start_store, stop_store, until_leads

SENSOR = "urn:ngsi-ld:Sensor:1"
THROTTLING = 10.0
"""Seconds: long enough that a takeover (or a restart) and one write fit inside it on a loaded machine."""
INTERVAL = 8.0
"""timeInterval, seconds: a takeover (about 1-3 s) fits well inside it."""


@dataclass
class Note:
    """One notification as the receiver got it."""

    wall: datetime
    """When it arrived (the notifier stamps lastNotification after the answer, so later)."""
    mono: float
    values: list[Any]
    """The temperature of each entity it carries."""


@dataclass
class Receiver:
    """A loopback HTTP receiver keeping every notification, in arrival order."""

    port: int
    notes: list[Note] = field(default_factory=list)

    def values(self) -> list[Any]:
        """Every notified temperature, in arrival order."""
        return [v for note in self.notes for v in note.values]

    async def until(self, count: int, limit: float = 60.0) -> None:
        """Wait until ``count`` notifications arrived (at most ``limit`` seconds)."""
        deadline = time.monotonic() + limit
        while len(self.notes) < count:
            assert time.monotonic() < deadline, f"only {len(self.notes)} notifications, {count} awaited"
            await asyncio.sleep(0.05)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """The receiver, serving on loopback for the test."""
    rec = Receiver(free_port())

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        rec.notes.append(Note(
            datetime.now(UTC), time.monotonic(), [e.get("temperature", {}).get("value") for e in body["data"]],
        ))
        return web.Response(status=204)

    async with receiving(handle, rec.port):
        yield rec


async def _set(http: aiohttp.ClientSession, store: StoreProcess, value: int) -> None:
    async with http.patch(f"{store.base}/entities/{SENSOR}/attrs",
                          json={"temperature": {"type": "Property", "value": value}}) as resp:
        assert resp.status == 204, await resp.text()


async def _subscribe(http: aiohttp.ClientSession, store: StoreProcess, receiver: Receiver, **timing: float) -> str:
    """Create the sensor (value 0, before the subscription) and a subscription to it; the subscription id."""
    entity = {"id": SENSOR, "type": "Sensor", "temperature": {"type": "Property", "value": 0}}
    async with http.post(store.base + "/entities", json=entity) as resp:
        assert resp.status == 201, await resp.text()
    body: dict[str, Any] = {
        "type": "Subscription", "entities": [{"type": "Sensor"}], **timing,
        "notification": {"endpoint": {"uri": f"http://127.0.0.1:{receiver.port}/n", "accept": "application/json"}},
    }
    if "throttling" in timing:
        body["watchedAttributes"] = ["temperature"]
    async with http.post(store.base + "/subscriptions", json=body) as resp:
        assert resp.status == 201, await resp.text()
        return str(resp.headers["Location"]).rsplit("/", 1)[-1]


async def _until_recorded(http: aiohttp.ClientSession, store: StoreProcess, sub_id: str, note: Note) -> None:
    """Wait until ``store`` shows a lastNotification of ``note`` (saved, and read back by that process)."""
    for _ in range(1200):
        async with http.get(f"{store.base}/subscriptions/{sub_id}") as resp:
            assert resp.status == 200, await resp.text()
            stamp = (await resp.json())["notification"].get("lastNotification")
        # stamped after the receiver answered: the one of an earlier notification is older than this
        if stamp is not None and (model.parse_time(stamp) - note.wall).total_seconds() > -0.5:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"lastNotification of {sub_id} never reached {note.wall}")


def _client() -> aiohttp.ClientSession:
    """A client opening a connection per request (a killed store leaves no pooled connection behind)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


@asynccontextmanager
async def _after_a_takeover(tmp_path: Path, url: str, receiver: Receiver, *, write_first: bool,
                            **timing: float) -> AsyncIterator[tuple[aiohttp.ClientSession, StoreProcess, Note]]:
    """Two stores on one database; a subscription made through the one not notifying, its first
    notification (after writing value 1 when ``write_first``) recorded, then the notifier killed and
    taken over by the other. Yields the client, the survivor, and that first notification."""
    stores: list[StoreProcess] = []
    http = _client()
    try:
        stores.append(await start_store(tmp_path / "s0", url))
        await until_leads(stores[0])
        stores.append(await start_store(tmp_path / "s1", url))
        leader, other = stores
        sub_id = await _subscribe(http, other, receiver, **timing)
        if write_first:
            await _set(http, other, 1)
        await receiver.until(1)  # a periodic subscription is due at once after its creation
        first = receiver.notes[0]
        await _until_recorded(http, other, sub_id, first)  # the survivor knows when the period began
        await stop_store(leader, signal.SIGKILL)
        await until_leads(other)
        yield http, other, first
    finally:
        await http.close()
        for store in stores:
            await stop_store(store)


async def _write_across_the_period(http: aiohttp.ClientSession, store: StoreProcess, receiver: Receiver,
                                   first: Note, what: str) -> None:
    """Value 2 inside the throttling period ``first`` began, value 3 after it; wait for the notification of 3."""
    await _set(http, store, 2)  # inside the period: not notified, though this process never notified
    if time.monotonic() - first.mono >= THROTTLING:
        pytest.skip(f"the {what} took longer than the throttling period: nothing to conclude")
    await asyncio.sleep(max(0.0, first.mono + THROTTLING + 1.5 - time.monotonic()))
    await _set(http, store, 3)  # after the period: notified
    await receiver.until(2)
    await asyncio.sleep(1.0)  # room for a late notification to show


async def test_throttling_holds_across_a_notifier_takeover(tmp_path: Path, postgres_url: str,
                                                          receiver: Receiver) -> None:
    async with _after_a_takeover(tmp_path, postgres_url, receiver, write_first=True,
                                 throttling=THROTTLING) as (http, survivor, first):
        await _write_across_the_period(http, survivor, receiver, first, "takeover")
    assert receiver.values() == [1, 3]


async def test_time_interval_keeps_its_period_across_a_notifier_takeover(tmp_path: Path, postgres_url: str,
                                                                        receiver: Receiver) -> None:
    async with _after_a_takeover(tmp_path, postgres_url, receiver, write_first=False, timeInterval=INTERVAL):
        await receiver.until(3, limit=3 * INTERVAL + 30)
    gaps = [b.mono - a.mono for a, b in zip(receiver.notes, receiver.notes[1:], strict=False)]
    # no burst at the takeover (the old notifier's notification began the period), and none skipped
    assert all(0.75 * INTERVAL <= gap <= INTERVAL + 20 for gap in gaps[:2]), gaps
    assert all(note.values == [0] for note in receiver.notes), [n.values for n in receiver.notes]


async def test_throttling_holds_across_a_sqlite_store_restart(tmp_path: Path, receiver: Receiver) -> None:
    store = await start_store(tmp_path, None)
    http = _client()
    try:
        await _subscribe(http, store, receiver, throttling=THROTTLING)
        await _set(http, store, 1)
        await receiver.until(1)
        first = receiver.notes[0]
        await stop_store(store)
        store = await start_store(tmp_path, None)
        await _write_across_the_period(http, store, receiver, first, "restart")
    finally:
        await http.close()
        await stop_store(store)
    assert receiver.values() == [1, 3]


def _timed(stats: dict[str, Any], *, throttling: float | None = None,
           time_interval: float | None = None) -> Subscription:
    return Subscription(id="urn:ngsi-ld:Subscription:t", tenant="", context=[], definition={}, stats=stats,
                        throttling=throttling, time_interval=time_interval)


def test_a_recorded_notification_sets_the_clocks_of_a_loaded_subscription() -> None:
    ago = model.format_time(datetime.now(UTC) - timedelta(seconds=30))
    ahead = model.format_time(datetime.now(UTC) + timedelta(hours=1))  # another host's clock, skewed
    before = time.monotonic()
    assert monotonic_of(None) == NEVER
    assert monotonic_of("yesterday") == NEVER
    assert monotonic_of(ago) < before - 29
    assert before <= monotonic_of(ahead) <= time.monotonic()  # counts as now, not an hour of silence

    throttled = _timed({"lastNotification": ago}, throttling=60)
    adopt_clocks(throttled, None)
    assert throttled.last_sent < before - 29
    newer = _timed({"lastNotification": ago}, throttling=60)
    newer_own = _timed({}, throttling=60)
    newer_own.last_sent = time.monotonic()  # this process notified since that record was saved
    adopt_clocks(newer, newer_own)
    assert newer.last_sent == newer_own.last_sent

    periodic = _timed({"lastNotification": ago}, time_interval=60)
    adopt_clocks(periodic, None)
    assert periodic.next_due == periodic.last_sent + 60  # due 30 s from now, not at once
    never = _timed({}, time_interval=60)
    adopt_clocks(never, None)
    assert never.next_due < before  # never notified: due at once
