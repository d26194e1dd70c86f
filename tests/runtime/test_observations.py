"""No observation lost to batching: every reading of a device reaches a sink's history, in order.

Three readings of one device committed together (one group commit, so one publisher fetch)
must all land in the temporal history of the embedded store and of a remote jonction store;
``latest_only`` merges them into one write again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.runtime.app import EMBEDDED
from gateway.runtime.state import RUNTIME
from tests.runtime.support import FakeAdapter, RecordingBroker, config, eventually, running
from tests.runtime.test_remote_store import RemoteStore

BIN = "urn:ngsi-ld:WasteContainer:bin-1"
READINGS = [(20, "2026-01-01T10:00:00Z"), (35, "2026-01-01T10:05:00Z"), (50, "2026-01-01T10:10:00Z")]
WINDOW = {"timerel": "between", "timeAt": "2026-01-01T00:00:00Z", "endTimeAt": "2026-01-02T00:00:00Z",
          "attrs": "fillingLevel"}
LINK = {"Link": '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; '
                'type="application/ld+json"'}


async def _send_readings(device: str = "bin-1") -> None:
    """The three readings in one event-loop turn: one group commit, read by the publisher at once."""
    adapter = FakeAdapter.instances["bins"]
    await adapter.ready()
    await asyncio.gather(*(adapter.send({"id": f"{device}-{i}", "device": device, "fill": fill, "at": at})
                           for i, (fill, at) in enumerate(READINGS)))


async def _history(base: str, entity_id: str = BIN) -> list[tuple[float, str]]:
    """(value, observedAt) of every fillingLevel instance a store's temporal API holds."""
    async with aiohttp.ClientSession() as http, http.get(
            f"{base}/ngsi-ld/v1/temporal/entities/{entity_id}", params=WINDOW, headers=LINK) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    instances = body["fillingLevel"]
    instances = instances if isinstance(instances, list) else [instances]
    return sorted((i["value"], i["observedAt"]) for i in instances)


def _record_batches(app: Any, sink: str) -> list[list[dict[str, Any]]]:
    """Wrap one sink's ``upsert`` so that the test sees every batch it is given."""
    publisher = app[RUNTIME].publishers[sink]
    batches: list[list[dict[str, Any]]] = []
    upsert = publisher.sink.upsert

    async def recording(tenant: str, entities: Any, corr: str) -> Any:
        batches.append([dict(e) for e in entities])
        return await upsert(tenant, entities, corr)

    publisher.sink.upsert = recording
    return batches


def _fills(batches: list[list[dict[str, Any]]], entity_id: str = BIN) -> list[list[float]]:
    return [[e["fillingLevel"]["value"] for e in batch if e["id"] == entity_id] for batch in batches]


EXPECTED = [(fill / 100, at) for fill, at in READINGS]


async def test_three_readings_in_one_batch_reach_the_embedded_history_in_order(tmp_path: Path) -> None:
    async with running(config(tmp_path, publisher={"linger": 0.3})) as (base, app):
        rt = app[RUNTIME]
        batches = _record_batches(app, EMBEDDED)
        await _send_readings()
        await _send_readings("bin-2")
        await eventually(lambda: rt.outbox is not None and rt.outbox.depth(EMBEDDED) == 0, what="drain")
        assert await _history(base) == EXPECTED
        assert await _history(base, "urn:ngsi-ld:WasteContainer:bin-2") == EXPECTED
        # All three in one upsert, in the order they were received (the store applies them in turn).
        assert [f for f in _fills(batches) if f] == [[0.2, 0.35, 0.5]]
        stored = await rt.embedded_store.get("", BIN)
        assert stored is not None and stored["fillingLevel"]["value"] == 0.5


async def test_latest_only_restores_coalescing_in_the_embedded_store(tmp_path: Path) -> None:
    cfg = config(tmp_path, publisher={"linger": 0.3}, embedded_store={"latest_only": True})
    async with running(cfg) as (base, app):
        rt = app[RUNTIME]
        batches = _record_batches(app, EMBEDDED)
        await _send_readings()
        await eventually(lambda: rt.outbox is not None and rt.outbox.depth(EMBEDDED) == 0, what="drain")
        assert _fills(batches) == [[0.5]]  # one merged upsert
        assert await _history(base) == EXPECTED[-1:]


@pytest.mark.parametrize("latest_only", [False, True])
async def test_remote_store_history_gets_every_reading_unless_latest_only(tmp_path: Path, latest_only: bool) -> None:
    remote = RemoteStore(tmp_path / "remote")
    await remote.start()
    cfg = config(tmp_path, publisher={"linger": 0.3}, embedded_store={"enabled": False},
                 sinks=[{"name": "remote", "url": remote.url, "profile": "jonction", "latest_only": latest_only}])
    try:
        async with running(cfg) as (_, app):
            rt = app[RUNTIME]
            batches = _record_batches(app, "remote")
            await _send_readings()
            await eventually(lambda: rt.outbox is not None and rt.outbox.depth("remote") == 0, what="drain")
            assert await _history(remote.url) == (EXPECTED[-1:] if latest_only else EXPECTED)
            assert _fills(batches) == ([[0.5]] if latest_only else [[0.2], [0.35], [0.5]])
    finally:
        await remote.stop()


async def test_a_reading_waiting_for_a_retry_holds_the_later_ones_back(tmp_path: Path) -> None:
    broker = RecordingBroker()
    broker.fail_ids = {BIN: 1}  # the first reading gets a 207 once
    await broker.start()
    cfg = config(tmp_path, publisher={"linger": 0.3, "backoff_initial": 0.05}, embedded_store={"enabled": False},
                 sinks=[{"name": "city", "url": broker.url, "profile": "generic"}])
    try:
        async with running(cfg) as (_, app):
            rt = app[RUNTIME]
            await _send_readings()
            await eventually(lambda: rt.outbox is not None and rt.outbox.depth("city") == 0, what="drain")
            sent = [e["fillingLevel"]["value"] for r in broker.requests for e in r["body"] if e["id"] == BIN]
            # The failed first reading is sent again before the second and third ones.
            assert sent == [0.2, 0.2, 0.35, 0.5]
            assert broker.state[""][BIN]["fillingLevel"]["value"] == 0.5
            assert rt.metrics.stale_dropped.get(sink="city") == 0
    finally:
        await broker.stop()
