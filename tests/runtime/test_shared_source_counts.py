"""A shared source's ``messages`` and ``restarts`` (``/admin/sources`` under ``--workers``) never go back.

Each worker process reports its own counts, from zero; the parent keeps, per worker index, what
the index's earlier processes counted. Hand-made reports, in the order the pool passes them on
(``take`` on each report, ``retire`` when a process exited, ``merge`` after either); the same path
end to end, a worker killed and restarted, is in test_worker_counters_restart.py.
"""

from __future__ import annotations

from typing import Any

from gateway.model import RawMessage
from gateway.runtime.workers import SharedSource
from tests.runtime.support import FakeAdapter


async def _no_emit(raw: RawMessage) -> None:
    raise AssertionError("a shared source never emits in the parent")


def _report(messages: int, restarts: int = 0, state: str = "running") -> dict[str, Any]:
    return {"state": state, "messages": messages, "restarts": restarts, "lastError": None}


def _source() -> SharedSource:
    return SharedSource("orion", "fake", FakeAdapter({"name": "orion"}), _no_emit)


def test_a_restarted_worker_adds_to_what_its_old_process_counted() -> None:
    src = _source()
    src.take(0, _report(30, restarts=1))
    src.take(1, _report(20))
    src.merge([_report(30, restarts=1), _report(20)])
    assert (src.status.messages, src.status.restarts, src.status.state) == (50, 1, "running")

    src.retire(0)  # worker 0 died: its process's 30 messages and 1 restart stay counted
    src.merge([_report(20), {"state": "unavailable", "lastError": "a worker is restarting"}])
    assert (src.status.messages, src.status.restarts, src.status.state) == (50, 1, "unavailable")
    assert src.status.last_error == "a worker is restarting"

    src.take(0, _report(0))  # the new process counts from zero
    src.merge([_report(0), _report(20)])
    assert (src.status.messages, src.status.restarts, src.status.state) == (50, 1, "running")
    src.take(0, _report(7, restarts=2))
    src.take(1, _report(25))
    src.merge([_report(7, restarts=2), _report(25)])
    assert (src.status.messages, src.status.restarts) == (30 + 7 + 25, 1 + 2)

    src.retire(0)  # and again: each process of index 0 adds what it counted
    src.take(0, _report(4))
    src.merge([_report(4), _report(25)])
    assert (src.status.messages, src.status.restarts) == (30 + 7 + 4 + 25, 3)


def test_a_new_source_instance_counts_from_zero() -> None:
    """An operator's restart makes a new SharedSource, as one process makes a new Supervised: no base carried."""
    old = _source()
    old.take(0, _report(12))
    old.retire(0)
    old.merge([])
    assert old.status.messages == 12
    new = _source()
    new.take(0, _report(1))
    new.merge([_report(1)])
    assert new.status.messages == 1
