"""Notifications across a notifier crash: two ``jonction store`` processes on one PostgreSQL database,
the one sending the notifications killed (SIGKILL) three times mid-stream.

Every change must reach the receiver; a change may come twice only in the same notification (same
id, same data: the one a dead notifier had sent but not yet recorded), so a receiver dropping known
ids sees each change exactly once.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.loopback import StoreProcess, receiving, start_store, stop_store, until_leads

SUBSCRIBERS = ("/a", "/b")


@dataclass
class Got:
    """The notifications a receiver got: (path, notification id, data) in arrival order."""

    port: int
    seen: list[tuple[str, str, list[dict[str, Any]]]] = field(default_factory=list)


@pytest.fixture
async def got() -> AsyncIterator[Got]:
    """A slow loopback receiver (so notifications are in flight when the notifier dies)."""
    rec = Got(free_port())

    async def handle(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        await asyncio.sleep(0.01)  # a receiver that takes its time: a backlog builds up
        rec.seen.append((request.path, body["id"], body["data"]))
        return web.Response(status=204)

    async with receiving(handle, rec.port):
        yield rec


def _sensor(n: int) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Sensor:{n}", "type": "Sensor", "temperature": {"type": "Property", "value": n}}


async def test_killing_the_notifier_loses_and_repeats_nothing(tmp_path: Path, postgres_url: str, got: Got) -> None:
    stores: list[StoreProcess] = []
    written: list[int] = []
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def write(store: StoreProcess, first: int, count: int = 1) -> None:
        """Create ``count`` sensors through one process (one by one, or as one batch of five)."""
        numbers = list(range(first, first + count))
        if count == 1:
            async with http.post(store.base + "/entities", json=_sensor(first)) as resp:
                assert resp.status == 201, await resp.text()
        else:
            body = [_sensor(n) for n in numbers]
            async with http.post(store.base + "/entityOperations/upsert", json=body) as resp:
                assert resp.status in (201, 204), await resp.text()
        written.extend(numbers)

    async def stream(start: int, count: int, through: list[StoreProcess]) -> int:
        """Writes alternating between processes, every seventh a batch of five; the next free number."""
        n = start
        for i in range(count):
            size = 5 if i % 7 == 6 else 1
            await write(through[i % len(through)], n, size)
            n += size
        return n

    async def kill_leader() -> None:
        leader = next(s for s in stores if s.leads() and s.proc.returncode is None)
        await stop_store(leader, signal.SIGKILL)  # no cleanup at all: the session dies with the socket
        stores.remove(leader)
        await until_leads(stores[0], within=30)  # the survivor takes over
        stores.append(await start_store(tmp_path / f"s{len(written)}", postgres_url))

    try:
        stores.append(await start_store(tmp_path / "s0", postgres_url))
        await until_leads(stores[0], within=30)
        stores.append(await start_store(tmp_path / "s1", postgres_url))
        for path in SUBSCRIBERS:
            body = {
                "type": "Subscription", "entities": [{"type": "Sensor"}],
                "notification": {
                    "endpoint": {"uri": f"http://127.0.0.1:{got.port}{path}", "accept": "application/json"},
                },
            }
            async with http.post(stores[0].base + "/subscriptions", json=body) as resp:
                assert resp.status == 201, await resp.text()

        n = await stream(0, 40, stores)
        # 1: right after a write through the notifier itself (notified at its commit, not yet recorded)
        leader = next(s for s in stores if s.leads())
        await write(leader, n)
        n += 1
        await kill_leader()
        n = await stream(n, 40, stores)
        # 2: right after a burst through the other process (read back from the change log)
        other = next(s for s in stores if not s.leads())
        n = await stream(n, 15, [other])
        await kill_leader()
        n = await stream(n, 40, stores)
        # 3: while a writer keeps writing through the survivor
        survivor = next(s for s in stores if not s.leads())
        writer = asyncio.ensure_future(stream(n, 40, [survivor]))
        for _ in range(6000):  # until the writer is well under way
            if len(written) >= n + 15:
                break
            await asyncio.sleep(0.01)
        await kill_leader()
        n = await writer
        n = await stream(n, 20, stores)

        expected = {f"urn:ngsi-ld:Sensor:{k}" for k in written}
        assert len(expected) == n == len(written)
        for _ in range(1200):  # up to 60 s on a loaded machine
            if all({d["id"] for p, _, data in got.seen if p == path for d in data} >= expected for path in SUBSCRIBERS):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # room for a late duplicate to show
    finally:
        await http.close()
        for store in stores:
            await stop_store(store)

    duplicates = 0
    for path in SUBSCRIBERS:
        seen = [(ident, data) for p, ident, data in got.seen if p == path]
        notified = {d["id"] for _, data in seen for d in data}
        assert not expected - notified, f"{path}: changes never notified: {sorted(expected - notified)}"
        by_id: dict[str, list[dict[str, Any]]] = {}
        carried_by: dict[str, set[str]] = {}
        for ident, data in seen:
            # a notification sent again is the same notification: same id, same changes
            assert by_id.setdefault(ident, data) == data, f"{path}: {ident} came twice with other data"
            for entity in data:
                carried_by.setdefault(entity["id"], set()).add(ident)
        repeated = {eid: ids for eid, ids in carried_by.items() if len(ids) > 1}
        assert not repeated, f"{path}: changes notified under several notification ids: {repeated}"
        duplicates += len(seen) - len(by_id)
    # at most the one notification in flight per subscription at each of the three crashes
    assert duplicates <= 3 * len(SUBSCRIBERS), duplicates
    print(f"{n} changes, 3 notifier crashes, {len(got.seen)} notifications, {duplicates} repeated (same id)")
