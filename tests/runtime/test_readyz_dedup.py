"""``/readyz`` reports the idempotency keys shared with other instances (``dedup.database``).

A real PostgreSQL: the gateway is ready while the claims store answers, not ready (503, the check
named ``dedup``) while its database refuses connections, and ready again once it accepts them.
The outage is made on the server itself: the database stops allowing connections and the
gateway's open ones are ended, as a restart or a failover would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.errors import Unavailable
from tests.conftest import free_port
from tests.runtime.support import FakeAdapter, config, eventually, running

asyncpg = pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")

from gateway.runtime.dedup_pg import PostgresClaims  # noqa: E402  # needs asyncpg


async def _readyz(base: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as resp:
        return resp.status, await resp.json()


async def _allow_connections(url: str, allowed: bool) -> None:
    """Let the database of ``url`` accept connections or not; refusing ends the gateway's open ones."""
    server, database = url.rsplit("/", 1)
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        await admin.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    finally:
        await admin.close()


async def test_readyz_follows_the_shared_dedup_database(tmp_path: Path, postgres_url: str) -> None:
    FakeAdapter.instances.clear()
    cfg = config(tmp_path, dedup={"database": postgres_url})
    async with running(cfg) as (base, _app):
        status, body = await _readyz(base)
        assert status == 200, body
        assert body["checks"]["dedup"] == {"status": "ok"}
        await FakeAdapter.instances["bins"].send({"id": "up-1", "device": "bin-1", "fill": 5})

        await _allow_connections(postgres_url, False)
        try:
            status, body = await _readyz(base)
            assert status == 503, body
            assert body["status"] == "not-ready"
            dedup = body["checks"]["dedup"]
            assert dedup["status"] == "failed" and "dedup database" in dedup["error"], dedup
            assert body["checks"]["storage"] == {"status": "ok"}, "only the shared store is down"
            # What readiness says is what the sources meet: messages are refused meanwhile.
            with pytest.raises(Unavailable, match="dedup database"):
                await FakeAdapter.instances["bins"].send({"id": "up-2", "device": "bin-1", "fill": 6})
        finally:
            await _allow_connections(postgres_url, True)

        async def ready_again() -> Any:
            status, body = await _readyz(base)
            return body if status == 200 else None
        body = await eventually(ready_again, within=20, what="ready again once the database accepts connections")
        assert body["checks"]["dedup"] == {"status": "ok"}

        async def accepted() -> bool:
            # A claim on a connection the server ended is refused once, as a source's retry would see.
            try:
                await FakeAdapter.instances["bins"].send({"id": "up-2", "device": "bin-1", "fill": 6})
            except Unavailable:
                return False
            return True
        await eventually(accepted, within=20, what="messages accepted again")


async def test_readyz_is_503_when_the_shared_dedup_database_never_answered(tmp_path: Path) -> None:
    FakeAdapter.instances.clear()
    url = f"postgresql://jonction:n0t-in-readyz@127.0.0.1:{free_port()}/nowhere"
    async with running(config(tmp_path, dedup={"database": url})) as (base, _app):
        status, body = await _readyz(base)
    assert status == 503, body
    dedup = body["checks"]["dedup"]
    assert dedup["status"] == "failed" and "127.0.0.1" in dedup["error"], dedup
    assert "n0t-in-readyz" not in str(body), "the password stays out of the answer"


async def test_readyz_has_no_dedup_check_without_a_shared_database(tmp_path: Path) -> None:
    FakeAdapter.instances.clear()
    async with running(config(tmp_path)) as (base, _app):
        status, body = await _readyz(base)
    assert status == 200, body
    assert "dedup" not in body["checks"]


async def test_check_after_close_says_closed(postgres_url: str) -> None:
    claims = PostgresClaims(postgres_url)
    await claims.check()  # connects on its own when nothing is open yet
    await claims.close()
    with pytest.raises(Unavailable, match="closed"):
        await claims.check()
