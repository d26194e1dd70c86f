"""Group commit while other processes write the same SQLite file (``jonction run --workers``).

The pipeline translates, validates and encodes a group before it takes the write lock, never
waits for the lock inside SQLite (the event loop keeps serving), and answers every message of a
group together: all acknowledged after the commit, or all refused when it fails. Real SQLite
files, a second connection as "the other process", real aiohttp listeners and real processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import Unavailable
from gateway.model import RawMessage, epoch_time
from gateway.runtime import pipeline as pipeline_module
from gateway.runtime.pipeline import SinkRoute
from tests.conftest import free_port
from tests.runtime.support import FakeAdapter, OtherConnection, PipelineParts, eventually
from tests.runtime.test_workers import _port_open, gateway, ngsi_source, notification


class Parts(PipelineParts):
    """A pipeline over a real database file, and a second connection to it (another process's)."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, [SinkRoute("a")], max_bytes=1 << 24)
        self.other = OtherConnection(tmp / "gateway.sqlite")

    def count(self, table: str) -> int:
        return self.other.count(table)

    def close(self) -> None:
        self.other.close()
        super().close()


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    p = Parts(tmp_path)
    yield p
    p.close()


def raw(device: str, fill: float | None, key: str) -> RawMessage:
    doc: dict[str, object] = {"device": device} if fill is None else {"device": device, "fill": fill}
    return RawMessage("bins", "", epoch_time(time.time()), json.dumps(doc).encode(), key)


async def test_a_held_write_lock_grows_the_group_and_never_blocks_the_loop(parts: Parts) -> None:
    parts.other.execute("BEGIN IMMEDIATE")  # another process writes, and takes its time
    first = [asyncio.create_task(parts.pipeline.submit(raw(f"d{i}", 40, f"k{i}"))) for i in range(30)]
    turns = 0
    for _ in range(50):  # the loop goes on turning: nothing waits inside SQLite
        await asyncio.sleep(0)
        turns += 1
    later = [asyncio.create_task(parts.pipeline.submit(raw(f"d{i}", 40, f"k{i}"))) for i in range(30, 60)]
    await asyncio.sleep(0.02)
    assert turns == 50
    assert not any(t.done() for t in first + later), "acknowledged before any commit"
    assert parts.count("archive") == 0
    parts.other.execute("COMMIT")
    outcomes = await asyncio.gather(*first, *later)
    assert all(o.queued and not o.duplicate for o in outcomes)
    assert parts.count("archive") == 60 and parts.count("outbox") == 60 and parts.count("seen") == 60
    assert parts.outbox.bytes == parts.outbox.stored_bytes() and parts.archive.bytes == parts.archive.stored_bytes()
    assert parts.metrics.messages_in.values and sum(parts.metrics.messages_in.values.values()) == 60


async def test_a_lock_held_too_long_refuses_the_whole_group_and_writes_nothing(
        parts: Parts, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_module, "LOCK_WAIT_S", 0.05)
    parts.other.execute("BEGIN IMMEDIATE")
    results = await asyncio.gather(*(parts.pipeline.submit(raw(f"d{i}", 40, f"k{i}")) for i in range(20)),
                                   return_exceptions=True)
    assert all(isinstance(r, Unavailable) and "locked" in str(r) for r in results), results
    parts.other.execute("COMMIT")
    assert parts.count("archive") == 0 and parts.count("seen") == 0 and parts.count("outbox") == 0
    # Refused, not remembered: the source's redelivery is accepted as a first delivery.
    again = await parts.pipeline.submit(raw("d0", 40, "k0"))
    assert not again.duplicate and again.queued == ["urn:ngsi-ld:WasteContainer:d0"]


async def test_a_failing_commit_refuses_every_message_of_the_group(parts: Parts) -> None:
    # A real SQLite failure inside the transaction: the outbox refuses inserts for a while.
    parts.other.execute("CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
    results = await asyncio.gather(*(parts.pipeline.submit(raw(f"d{i}", 40, f"k{i}")) for i in range(25)),
                                   return_exceptions=True)
    assert all(isinstance(r, Unavailable) and "disk says no" in str(r) for r in results), results
    assert parts.count("archive") == 0 and parts.count("seen") == 0  # rolled back together
    assert parts.outbox.bytes == parts.outbox.stored_bytes() == 0
    parts.other.execute("DROP TRIGGER refuse")
    outcomes = await asyncio.gather(*(parts.pipeline.submit(raw(f"d{i}", 40, f"k{i}")) for i in range(25)))
    assert not any(o.duplicate for o in outcomes) and parts.count("outbox") == 25


async def test_dead_letters_prepared_before_the_lock_are_written_once(parts: Parts) -> None:
    FakeAdapter.DIVISOR = 1.0  # a percentage sent as is: the schema refuses it (maximum 1)
    parts.other.execute("BEGIN IMMEDIATE")
    tasks = [asyncio.create_task(parts.pipeline.submit(raw("bad", 40, "same"))) for _ in range(3)]
    tasks.append(asyncio.create_task(parts.pipeline.submit(raw("nofill", None, "other"))))
    await asyncio.sleep(0.01)
    parts.other.execute("COMMIT")
    outcomes = await asyncio.gather(*tasks)
    # One delivery of "same" is written with its dead letter; its two redeliveries are duplicates.
    assert [o.duplicate for o in outcomes] == [False, True, True, False]
    assert len(outcomes[0].dead_letters) == 1 and outcomes[1].dead_letters == [] == outcomes[2].dead_letters
    letters = parts.letters.list()
    assert sorted(d.stage for d in letters) == ["translation", "validation"]
    assert {d.raw.idempotency_key for d in letters} == {"same", "other"}
    assert sum(parts.metrics.dead_letters.values.values()) == 2
    assert sum(parts.metrics.duplicates.values.values()) == 2


async def test_an_entity_json_cannot_encode_is_a_dead_letter_of_its_message_only(parts: Parts) -> None:
    adapter = FakeAdapter.instances["bins"]
    original = adapter.to_entities

    def to_entities(message: RawMessage) -> list[dict[str, object]]:
        out = original(message)
        if message.idempotency_key == "odd":
            out[0]["fillingLevel"]["value"] = {1.5}  # type: ignore[index]  # a set: no JSON for it
        return out

    adapter.to_entities = to_entities  # type: ignore[method-assign,assignment]
    odd, fine = await asyncio.gather(parts.pipeline.submit(raw("d1", 40, "odd")),
                                     parts.pipeline.submit(raw("d2", 40, "fine")))
    assert odd.queued == [] and len(odd.dead_letters) == 1 and fine.queued == ["urn:ngsi-ld:WasteContainer:d2"]
    assert parts.count("outbox") == 1 and parts.count("archive") == 2


# ---------------------------------------------------------------------------- real processes


@pytest.mark.slow
async def test_two_workers_under_concurrent_load_then_killed_lose_nothing_acknowledged(tmp_path: Path) -> None:
    notify_port = free_port()
    async with gateway(tmp_path, [ngsi_source(notify_port)]) as gw:
        await eventually(lambda: _port_open(notify_port), what="shared listener")
        acked: list[int] = []
        refused: list[int] = []

        async def post_many(indexes: range) -> None:
            # Keep-alive connections, several in flight: the workers' groups and locks interleave.
            async with aiohttp.ClientSession() as http:
                for i in indexes:
                    async with http.post(f"http://127.0.0.1:{notify_port}/v2/notify", json=notification(i)) as resp:
                        (acked if resp.status == 200 else refused).append(i)

        await asyncio.gather(*(post_many(range(k * 40, (k + 1) * 40)) for k in range(10)))
        assert len(acked) == 400 and refused == []
        assert gw.archived() == 400, "every 2xx was answered after its commit"
        for worker in (await gw.get("/admin/workers"))["workers"]:
            os.kill(worker["pid"], signal.SIGKILL)  # nothing they acknowledged may depend on them now

        async def all_stored() -> bool:
            return await gw.count("WasteContainer") == 400
        await eventually(all_stored, within=60, what="400 entities in the embedded store")
        assert await gw.stop() == 0
