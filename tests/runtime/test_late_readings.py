"""No observation lost to a late reading: an older reading goes to the sink's history only.

A device's readings committed out of order (the newer one first, then an older one: a network
server flushing a backlog, or two workers) leave the newer current state in the store and both
readings in its temporal history, on SQLite and on PostgreSQL. A sink without history-only
writes (a remote broker unless `late_readings: temporal`) still drops the older reading and counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.runtime.app import EMBEDDED
from gateway.runtime.state import RUNTIME
from gateway.store.base import ChangeEvent, StorageBase
from tests.runtime.support import FakeAdapter, RecordingBroker, config, eventually, running
from tests.runtime.test_observations import BIN, _history
from tests.runtime.test_remote_store import RemoteStore

NEWER = (50, "2026-01-01T10:10:00Z")
OLDER = (20, "2026-01-01T10:00:00Z")


async def _send_out_of_order(app: Any, sink: str) -> None:
    """The newer reading, delivered; then the older one, committed after it."""
    rt = app[RUNTIME]
    adapter = FakeAdapter.instances["bins"]
    await adapter.ready()
    for i, (fill, at) in enumerate((NEWER, OLDER)):
        await adapter.send({"id": f"bin-1-{i}", "device": "bin-1", "fill": fill, "at": at})
        await eventually(lambda: rt.outbox is not None and rt.outbox.depth(sink) == 0 and
                         rt.publishers[sink].idle.is_set(), what="drain")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``embedded_store`` block: SQLite in the data directory, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return {"database": request.getfixturevalue("postgres_url")}
    return {}


async def test_an_older_reading_reaches_the_embedded_history_not_the_current_state(
        tmp_path: Path, store: dict[str, Any]) -> None:
    async with running(config(tmp_path, embedded_store=store)) as (base, app):
        rt = app[RUNTIME]
        storage = rt.embedded_store
        assert isinstance(storage, StorageBase)
        changed: list[list[Any]] = []

        async def listen(events: Sequence[ChangeEvent]) -> None:
            changed.extend([inst.get("observedAt") for name, insts in (e.after or {}).items()
                            if name.endswith("fillingLevel") for inst in insts] for e in events)

        storage.add_listener(listen)
        await _send_out_of_order(app, EMBEDDED)
        # What subscriptions hear of: the newer fillingLevel only. The older row's fillingLevel goes to
        # the history; its location (no observedAt) equals the stored one, so the store changes nothing
        # and notifies nothing for it; never the older fillingLevel.
        assert changed == [[NEWER[1]]]
        stored = await rt.embedded_store.get("", BIN)
        assert stored is not None and stored["fillingLevel"]["value"] == 0.5
        assert stored["fillingLevel"]["observedAt"] == NEWER[1]
        assert await _history(base) == [(0.2, OLDER[1]), (0.5, NEWER[1])]
        assert rt.metrics.late_to_history.get(sink=EMBEDDED) == 1
        assert rt.metrics.stale_dropped.get(sink=EMBEDDED) == 0
        assert rt.outbox is not None and rt.outbox.depth(EMBEDDED) == 0


async def test_the_same_late_reading_sent_again_is_not_doubled(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as (base, app):
        rt = app[RUNTIME]
        await _send_out_of_order(app, EMBEDDED)
        adapter = FakeAdapter.instances["bins"]
        # Redelivered under another message id (a network server flushing its backlog again).
        await adapter.send({"id": "bin-1-again", "device": "bin-1", "fill": OLDER[0], "at": OLDER[1]})
        await eventually(lambda: rt.outbox is not None and rt.outbox.depth(EMBEDDED) == 0 and
                         rt.publishers[EMBEDDED].idle.is_set(), what="drain")
        assert await _history(base) == [(0.2, OLDER[1]), (0.5, NEWER[1])]
        assert rt.metrics.late_to_history.get(sink=EMBEDDED) == 2


async def test_a_sink_without_history_writes_still_drops_and_counts(tmp_path: Path) -> None:
    broker = RecordingBroker()
    await broker.start()
    cfg = config(tmp_path, embedded_store={"enabled": False},
                 sinks=[{"name": "city", "url": broker.url, "profile": "generic"}])
    try:
        async with running(cfg) as (_, app):
            rt = app[RUNTIME]
            await _send_out_of_order(app, "city")
            sent = [e["fillingLevel"]["value"] for r in broker.requests for e in r["body"]
                    if e["id"] == BIN and "fillingLevel" in e]
            assert sent == [0.5]
            assert broker.state[""][BIN]["fillingLevel"]["value"] == 0.5
            assert rt.metrics.stale_dropped.get(sink="city") == 1
            assert rt.metrics.late_to_history.get(sink="city") == 0
    finally:
        await broker.stop()


@pytest.mark.parametrize("late_readings", ["temporal", "drop"])
async def test_a_remote_store_gets_the_older_reading_in_its_history_when_asked(
        tmp_path: Path, late_readings: str) -> None:
    remote = RemoteStore(tmp_path / "remote")
    await remote.start()
    cfg = config(tmp_path, embedded_store={"enabled": False},
                 sinks=[{"name": "remote", "url": remote.url, "profile": "jonction",
                         "late_readings": late_readings}])
    try:
        async with running(cfg) as (_, app):
            rt = app[RUNTIME]
            await _send_out_of_order(app, "remote")
            current = await remote.entities("")
            assert current[BIN]["fillingLevel"]["value"] == 0.5
            if late_readings == "temporal":
                assert await _history(remote.url) == [(0.2, OLDER[1]), (0.5, NEWER[1])]
                assert rt.metrics.late_to_history.get(sink="remote") == 1
                assert rt.metrics.stale_dropped.get(sink="remote") == 0
            else:
                assert await _history(remote.url) == [(0.5, NEWER[1])]
                assert rt.metrics.stale_dropped.get(sink="remote") == 1
    finally:
        await remote.stop()
