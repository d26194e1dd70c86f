"""A killed ``jonction run --workers 2`` worker's counters: the parent's figures never go back.

A real gateway with two workers sharing an NGSI v2 notification listener (SO_REUSEPORT). Once the
parent shows every message counted, the busier worker is killed with SIGKILL; its restarted
process counts from zero, and the parent must show the old process's counts plus the new one's.
/metrics is read all along, the kill and the restart included: no per-worker series, and no sum,
may ever decrease, and at the end the sums equal what was sent. The source's ``messages`` and
``restarts`` in /admin/sources, read alongside, never decrease either, and end at what was sent.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.runtime.support import eventually
from tests.runtime.test_workers import Gateway, _port_open, gateway, ngsi_source, post_each

pytestmark = pytest.mark.slow

COUNTERS = ("jonction_messages_received_total", "jonction_entities_accepted_total")
"""Each notification carries one entity: both count one per message sent."""


async def _figures(gw: Gateway) -> dict[str, dict[str, float]]:
    """Counter name → ``worker`` label → value, for the shared source."""
    return {name: await gw.counter(name, source="orion") for name in COUNTERS}


async def _source(gw: Gateway) -> tuple[int, int]:
    """The shared source's ``messages`` and ``restarts`` in /admin/sources."""
    found = next(s for s in (await gw.get("/admin/sources"))["sources"] if s["name"] == "orion")
    return int(found["messages"]), int(found["restarts"])


async def _watch(gw: Gateway, samples: list[dict[str, dict[str, float]]], sources: list[tuple[int, int]],
                 stop: asyncio.Event) -> None:
    """Read /metrics and /admin/sources until ``stop``, keeping every reading."""
    while not stop.is_set():
        samples.append(await _figures(gw))
        sources.append(await _source(gw))
        await asyncio.sleep(0.05)


def _never_decreased(samples: list[dict[str, dict[str, float]]]) -> None:
    for name in COUNTERS:
        last: dict[str, float] = {}
        last_sum = 0.0
        for n, sample in enumerate(samples):
            series = sample[name]
            for worker, previous in last.items():
                assert series.get(worker, 0.0) >= previous, (
                    f"{name}{{worker={worker}}} went back from {previous} to {series.get(worker)} at reading {n}")
            total = sum(series.values())
            assert total >= last_sum, f"sum of {name} went back from {last_sum} to {total} at reading {n}"
            last, last_sum = series, total


async def test_killed_worker_counters_never_go_back(tmp_path: Path) -> None:
    notify_port = free_port()
    async with gateway(tmp_path, [ngsi_source(notify_port)]) as gw:
        await eventually(lambda: _port_open(notify_port), what="shared listener")
        first = 60
        await asyncio.gather(*(post_each(notify_port, range(k * 20, (k + 1) * 20)) for k in range(first // 20)))

        async def all_counted(want: int) -> Any:
            found = await _figures(gw)
            return found if all(sum(found[n].values()) == want for n in COUNTERS) else None

        # Past one report: the parent shows every message of this round before the kill.
        before = await eventually(lambda: all_counted(first), within=30, what=f"{first} messages counted")

        async def source_counted(want: int) -> Any:
            found = await _source(gw)
            return found if found[0] == want else None

        # The source's count rides on the half-second report: the victim's last one holds all it received.
        sources = [await eventually(lambda: source_counted(first), within=30, what=f"{first} source messages")]
        received = before["jonction_messages_received_total"]
        victim = max(received, key=lambda w: received[w])
        assert victim in ("0", "1") and received[victim] > 0, received
        workers = (await gw.get("/admin/workers"))["workers"]
        old_pid = workers[int(victim)]["pid"]

        samples = [before]
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch(gw, samples, sources, stop))
        try:
            os.kill(old_pid, signal.SIGKILL)

            async def restarted() -> Any:
                w = (await gw.get("/admin/workers"))["workers"][int(victim)]
                return w if w["pid"] != old_pid and w["ready"] and w["restarts"] == 1 else None
            await eventually(restarted, within=60, what=f"worker {victim} restarted")
            await eventually(lambda: _port_open(notify_port), what="shared listener after the restart")

            # Enough messages, each on its own connection, that the new process takes some.
            second = 120
            await asyncio.gather(*(post_each(notify_port, range(first + k * 30, first + (k + 1) * 30))
                                   for k in range(second // 30)))

            async def new_process_counted() -> Any:
                w = (await gw.get("/admin/workers"))["workers"][int(victim)]
                return w["sources"].get("orion", {}).get("messages", 0) > 0
            await eventually(new_process_counted, within=30, what=f"the new worker {victim} received messages")
            after = await eventually(lambda: all_counted(first + second), within=30,
                                     what=f"{first + second} messages counted")
            sources.append(await eventually(lambda: source_counted(first + second), within=30,
                                            what=f"{first + second} source messages"))
        finally:
            stop.set()
            await watcher
        samples.append(after)
        _never_decreased(samples)
        for n, (earlier, later) in enumerate(itertools.pairwise(sources)):
            assert later[0] >= earlier[0] and later[1] >= earlier[1], (
                f"/admin/sources (messages, restarts) went back from {earlier} to {later} at reading {n + 1}")
        for name in COUNTERS:
            assert set(after[name]) == {"0", "1"}, after[name]
            assert sum(after[name].values()) == first + second, (name, after[name])
            # The victim's series holds its old process's count plus what the new one received.
            assert after[name][victim] > before[name][victim], (name, before[name], after[name])
        assert "exited with code -9" in gw.log.read_text()
        assert await gw.stop() == 0
