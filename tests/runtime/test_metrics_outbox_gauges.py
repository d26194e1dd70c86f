"""The outbox gauges of ``/metrics`` (backlog and oldest age) share one status query, at most a second old.

A gateway whose remote sink is unreachable keeps what it accepts in the outbox: the gauges must
show that backlog per sink and tenant, as the outbox's own fresh figure says, while a scrape
costs one status query at most (counted on the gateway database's connection) and scrapes in
quick succession share it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp

from gateway.runtime.state import RUNTIME
from tests.conftest import free_port
from tests.runtime.support import FakeAdapter, config, eventually, running

STATUS_SQL = "GROUP BY sink, tenant"
"""What the outbox status query (and no other) says."""


def _series(text: str, name: str) -> dict[tuple[str, str], float]:
    """(sink, tenant) → value of one gauge in a Prometheus text document."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            out[(labels["sink"], labels["tenant"])] = float(line.rsplit(" ", 1)[1])
    return out


async def _scrape(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


async def test_outbox_gauges_show_the_backlog_with_one_query_per_scrape(tmp_path: Path) -> None:
    FakeAdapter.instances.clear()
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: everything waits in the outbox
    cfg = config(tmp_path, embedded_store={"enabled": False},
                 sinks=[{"name": "city", "url": nowhere, "profile": "generic"}])
    async with running(cfg) as (base, app), aiohttp.ClientSession() as http:
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        for i in range(10):
            await adapter.send({"id": f"m{i}", "device": f"bin-{i}", "fill": i, "at": "2026-01-01T10:00:00Z"})
        for i in range(4):
            await adapter.send({"id": f"l{i}", "device": f"lat-{i}", "fill": i, "at": "2026-01-01T10:00:00Z"},
                               tenant="lattes")
        want = {("city", ""): 10.0, ("city", "lattes"): 4.0}
        assert {(r.sink, r.tenant): float(r.entities) for r in rt.outbox.status()} == want

        statements: list[str] = []
        rt.db.conn.set_trace_callback(statements.append)
        try:
            text = await _scrape(http, base)
            assert sum(STATUS_SQL in s for s in statements) <= 1, "both gauges share one status query"
            assert _series(text, "jonction_outbox_entities") == want
            ages = _series(text, "jonction_outbox_oldest_age_seconds")
            assert set(ages) == set(want) and all(age >= 0 for age in ages.values())

            statements.clear()
            scrapes = 20
            for _ in range(scrapes):
                assert _series(await _scrape(http, base), "jonction_outbox_entities") == want
            queries = sum(STATUS_SQL in s for s in statements)
            assert queries < scrapes, f"{queries} status queries for {scrapes} scrapes in a row: none shared"
        finally:
            rt.db.conn.set_trace_callback(None)

        # More waiting: the gauges follow within their short cache.
        for i in range(10, 15):
            await adapter.send({"id": f"m{i}", "device": f"bin-{i}", "fill": i, "at": "2026-01-01T10:00:00Z"})

        async def followed() -> Any:
            found = _series(await _scrape(http, base), "jonction_outbox_entities")
            return found if found == {("city", ""): 15.0, ("city", "lattes"): 4.0} else None
        await eventually(followed, within=10, what="the new backlog in /metrics")
