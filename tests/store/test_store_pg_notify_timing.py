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
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
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

LEADS = "this process sends the notifications"
SENSOR = "urn:ngsi-ld:Sensor:1"
THROTTLING = 10.0
"""Seconds: long enough that a takeover (or a restart) and one write fit inside it on a loaded machine."""
INTERVAL = 8.0
"""timeInterval, seconds: a takeover (about 1-3 s) fits well inside it."""


@dataclass
class Store:
    """One ``jonction store`` process and the lines it printed."""

    proc: asyncio.subprocess.Process
    base: str
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def leads(self) -> bool:
        """True once the process logged that it holds the notifier lock."""
        return any(LEADS in line for line in self.lines)


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

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rec.port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


async def _start(folder: Path, url: str | None) -> Store:
    """Start a store on ``folder`` (SQLite) or on the PostgreSQL database ``url``; wait until it serves."""
    args = ["store", "--port", "0", "--data", str(folder)]
    if url is not None:
        args += ["--database", url]
    env = {k: v for k, v in os.environ.items() if k != "JONCTION_STORE_DATABASE"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line, "the store stopped: " + "".join(lines)
        lines.append(line)
        found = re.search(r"serving NGSI-LD at (http://127\.0\.0\.1:\d+/ngsi-ld/v1)", line)
        if found:
            break
    store = Store(proc, found[1], lines)

    async def follow() -> None:
        assert proc.stdout is not None
        while line := (await proc.stdout.readline()).decode():
            store.lines.append(line)

    store.reader = asyncio.get_running_loop().create_task(follow())
    return store


async def _stop(store: Store, sig: int = signal.SIGTERM) -> None:
    if store.proc.returncode is None:
        store.proc.send_signal(sig)
        await asyncio.wait_for(store.proc.wait(), 30)
    if store.reader is not None:
        store.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await store.reader


async def _until_leads(store: Store) -> None:
    for _ in range(1200):
        if store.leads():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no process took the notifier lock: " + "".join(store.lines))


async def _set(http: aiohttp.ClientSession, store: Store, value: int) -> None:
    async with http.patch(f"{store.base}/entities/{SENSOR}/attrs",
                          json={"temperature": {"type": "Property", "value": value}}) as resp:
        assert resp.status == 204, await resp.text()


async def _subscribe(http: aiohttp.ClientSession, store: Store, receiver: Receiver, **timing: float) -> str:
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


async def _until_recorded(http: aiohttp.ClientSession, store: Store, sub_id: str, note: Note) -> None:
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


async def test_throttling_holds_across_a_notifier_takeover(tmp_path: Path, postgres_url: str,
                                                          receiver: Receiver) -> None:
    stores: list[Store] = []
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    try:
        stores.append(await _start(tmp_path / "s0", postgres_url))
        await _until_leads(stores[0])
        stores.append(await _start(tmp_path / "s1", postgres_url))
        leader, other = stores
        sub_id = await _subscribe(http, other, receiver, throttling=THROTTLING)

        await _set(http, other, 1)
        await receiver.until(1)
        first = receiver.notes[0]
        await _until_recorded(http, other, sub_id, first)  # the survivor knows when the period began
        await _stop(leader, signal.SIGKILL)
        await _until_leads(other)

        await _set(http, other, 2)  # inside the period: the new notifier must not notify it
        if time.monotonic() - first.mono >= THROTTLING:
            pytest.skip("the takeover took longer than the throttling period: nothing to conclude")
        await asyncio.sleep(max(0.0, first.mono + THROTTLING + 1.5 - time.monotonic()))
        await _set(http, other, 3)  # after the period: notified
        await receiver.until(2)
        await asyncio.sleep(1.0)  # room for a late notification to show
    finally:
        await http.close()
        for store in stores:
            await _stop(store)
    assert receiver.values() == [1, 3]


async def test_time_interval_keeps_its_period_across_a_notifier_takeover(tmp_path: Path, postgres_url: str,
                                                                        receiver: Receiver) -> None:
    stores: list[Store] = []
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    try:
        stores.append(await _start(tmp_path / "s0", postgres_url))
        await _until_leads(stores[0])
        stores.append(await _start(tmp_path / "s1", postgres_url))
        leader, other = stores
        sub_id = await _subscribe(http, other, receiver, timeInterval=INTERVAL)

        await receiver.until(1)  # due at once after its creation
        last = receiver.notes[0]
        await _until_recorded(http, other, sub_id, last)
        await _stop(leader, signal.SIGKILL)
        await _until_leads(other)
        await receiver.until(3, limit=3 * INTERVAL + 30)
    finally:
        await http.close()
        for store in stores:
            await _stop(store)
    gaps = [b.mono - a.mono for a, b in zip(receiver.notes, receiver.notes[1:], strict=False)]
    # no burst at the takeover (the old notifier's notification began the period), and none skipped
    assert all(0.75 * INTERVAL <= gap <= INTERVAL + 20 for gap in gaps[:2]), gaps
    assert all(note.values == [0] for note in receiver.notes), [n.values for n in receiver.notes]


async def test_throttling_holds_across_a_sqlite_store_restart(tmp_path: Path, receiver: Receiver) -> None:
    store = await _start(tmp_path, None)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    try:
        await _subscribe(http, store, receiver, throttling=THROTTLING)
        await _set(http, store, 1)
        await receiver.until(1)
        first = receiver.notes[0]
        await _stop(store)
        store = await _start(tmp_path, None)

        await _set(http, store, 2)  # inside the period, though this process never notified
        if time.monotonic() - first.mono >= THROTTLING:
            pytest.skip("the restart took longer than the throttling period: nothing to conclude")
        await asyncio.sleep(max(0.0, first.mono + THROTTLING + 1.5 - time.monotonic()))
        await _set(http, store, 3)
        await receiver.until(2)
        await asyncio.sleep(1.0)
    finally:
        await http.close()
        await _stop(store)
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
