"""Idempotency keys shared by several gateway instances, on a real PostgreSQL (``dedup.database``).

The claims themselves (expiry, one winner among concurrent claims, release on error or on a
dropped connection, no deadlock between overlapping groups), the config key, and two gateway
applications on one database receiving the same messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigInvalid, Unavailable
from gateway.runtime.dedup import SeenKey
from gateway.runtime.state import RUNTIME
from tests.conftest import free_port
from tests.runtime.support import FakeAdapter, RecordingBroker, config, eventually, running

asyncpg = pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")

from gateway.runtime.dedup_pg import ClaimNotRecorded, PostgresClaims  # noqa: E402  # needs asyncpg


def keys(*names: str, at: float = 1000.0, source: str = "lora") -> list[SeenKey]:
    return [SeenKey(source, name, at) for name in names]


@pytest.fixture
async def claims(postgres_url: str) -> AsyncIterator[PostgresClaims]:
    c = PostgresClaims(postgres_url, max_age_s=100.0, prune_every_s=1e9)  # pruned by the tests only
    await c.open()
    yield c
    await c.close()


@pytest.fixture
async def other(postgres_url: str) -> AsyncIterator[PostgresClaims]:
    """A second instance's claims: its own connections to the same database."""
    c = PostgresClaims(postgres_url, max_age_s=100.0, prune_every_s=1e9)
    yield c
    await c.close()


async def claim(c: PostgresClaims, deliveries: list[SeenKey]) -> set[int]:
    async with c.claim(deliveries) as won:
        return won


async def test_a_key_is_won_once_until_it_expires(claims: PostgresClaims) -> None:
    # Both copies of a key repeated inside one group are reported won: the local dedup, in the same
    # commit, keeps the first copy only.
    assert await claim(claims, keys("up:1", "up:2", "up:1")) == {0, 1, 2}
    assert await claim(claims, keys("up:1", "up:3", at=1050.0)) == {1}
    assert await claim(claims, keys("up:1", "up:2", at=1099.0)) == set()  # 99 s old: still remembered
    assert await claim(claims, keys("up:1", at=1101.0)) == {0}  # 101 s old: expired, claimed again
    assert await claim(claims, keys("up:1", at=1102.0)) == set()
    # another source's key of the same name is another key
    assert await claim(claims, keys("up:1", at=1102.0, source="other")) == {0}
    assert await claims.prune(now=1151.0) == 2  # up:2 (1000) and up:3 (1050); up:1 was renewed at 1101
    assert await claims.count() == 2


async def test_concurrent_claims_of_one_key_have_one_winner(claims: PostgresClaims, other: PostgresClaims,
                                                            postgres_url: str) -> None:
    holding, release = asyncio.Event(), asyncio.Event()

    async def first() -> set[int]:
        async with claims.claim(keys("up:7")) as won:
            holding.set()
            await release.wait()  # the local commit would happen here
            return won

    a = asyncio.create_task(first())
    await holding.wait()
    b = asyncio.create_task(claim(other, keys("up:7")))
    await waiting_on_a_lock(postgres_url)  # the second claim waits for the first to settle
    release.set()
    assert await a == {0}
    assert await b == set()


async def test_a_claim_whose_local_commit_fails_is_released(claims: PostgresClaims, other: PostgresClaims,
                                                            postgres_url: str) -> None:
    holding, release = asyncio.Event(), asyncio.Event()

    async def failing() -> None:
        async with claims.claim(keys("up:8")) as won:
            assert won == {0}
            holding.set()
            await release.wait()
            raise OSError("disk full")  # the local SQLite commit failed: nothing acknowledged

    a = asyncio.create_task(failing())
    await holding.wait()
    b = asyncio.create_task(claim(other, keys("up:8")))
    await waiting_on_a_lock(postgres_url)
    release.set()
    with pytest.raises(OSError):
        await a
    assert await b == {0}  # the redelivered message is claimed afresh: not lost


async def test_a_claim_whose_holder_dies_is_released(claims: PostgresClaims, other: PostgresClaims,
                                                     postgres_url: str) -> None:
    holding, release = asyncio.Event(), asyncio.Event()

    async def dying() -> None:
        async with claims.claim(keys("up:9")):
            holding.set()
            await release.wait()

    a = asyncio.create_task(dying())
    await holding.wait()
    b = asyncio.create_task(claim(other, keys("up:9")))
    await waiting_on_a_lock(postgres_url)
    # The holder's connection drops (its process was killed): PostgreSQL aborts its transaction.
    admin = await asyncpg.connect(postgres_url)
    try:
        ended = await admin.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE application_name = 'jonction dedup' AND state = 'idle in transaction'")
    finally:
        await admin.close()
    assert ended == 1
    assert await b == {0}
    release.set()
    with pytest.raises(ClaimNotRecorded):  # had it lived, its claim was not recorded: it says so
        await a


async def test_overlapping_groups_from_two_instances_win_each_key_once(claims: PostgresClaims,
                                                                      other: PostgresClaims) -> None:
    names = [f"up:{n}" for n in range(300)]
    rng = random.Random(16)
    groups: list[tuple[PostgresClaims, list[SeenKey]]] = []
    for instance in (claims, other):
        for _ in range(12):
            groups.append((instance, keys(*rng.sample(names, 60))))
    results = await asyncio.gather(*(claim(c, g) for c, g in groups))
    wins = Counter(g[i].key for (_, g), won in zip(groups, results, strict=True) for i in won)
    offered = {d.key for _, g in groups for d in g}
    assert set(wins) == offered
    assert set(wins.values()) == {1}


async def test_an_unreachable_database_refuses_without_naming_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    url = f"postgresql://jonction:s3cret-dedup-pw@127.0.0.1:{free_port()}/nowhere"
    c = PostgresClaims(url)
    caplog.set_level(logging.WARNING, logger="jonction.dedup")
    try:
        with pytest.raises(Unavailable) as err:
            await claim(c, keys("up:1"))
        with pytest.raises(Unavailable):
            await claim(c, keys("up:1"))
    finally:
        await c.close()
    assert "s3cret-dedup-pw" not in str(err.value)
    assert "127.0.0.1" in str(err.value)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # "unavailable" once, not once per message
    assert "s3cret-dedup-pw" not in warnings[0]


async def waiting_on_a_lock(url: str) -> None:
    """Until a dedup connection waits on a row lock (the second claim is blocked, not done)."""
    admin = await asyncpg.connect(url)
    try:
        await eventually(lambda: admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'jonction dedup' "
            "AND wait_event_type = 'Lock'"), what="a claim waiting on another's lock")
    finally:
        await admin.close()


# ---------------------------------------------------------------------------- config


def test_config_reads_the_database_and_its_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pg-password"
    secret.write_text("file-secret-pw\n")
    cfg = config(tmp_path, dedup={"database": "postgresql://gw@db.example:5432/jonction",
                                  "password_file": str(secret), "max_age": "2h"})
    assert cfg.dedup_database == "postgresql://gw@db.example:5432/jonction"
    assert cfg.dedup_password == "file-secret-pw"
    assert cfg.dedup_max_age_s == 7200
    assert config(tmp_path).dedup_database is None  # default: each instance remembers its own keys


def test_config_refuses_a_database_that_is_not_postgresql(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as err:
        config(tmp_path, dedup={"database": "mysql://gw:hunter2-pw@db/jonction", "password_env": "NOPE_UNSET_16"})
    problems = "\n".join(err.value.problems)
    assert "/dedup/database" in problems
    assert "hunter2-pw" not in problems  # a password in the URL is masked before any message quotes it


# ---------------------------------------------------------------------------- two gateways


def two_gateways(tmp_path: Path, url: str, broker: RecordingBroker) -> list[Any]:
    """Two instances of one gateway (same source name), own data folders, one shared key store."""
    return [config(tmp_path / name, embedded_store={"enabled": False},
                   sinks=[{"name": "city", "url": broker.url}], dedup={"database": url},
                   sources=[{"name": "bins", "adapter": "fake", "tenant": "", "config": {"name": name}}])
            for name in ("a", "b")]


async def test_two_gateways_write_a_message_reaching_both_once(tmp_path: Path, postgres_url: str) -> None:
    FakeAdapter.instances.clear()
    broker = RecordingBroker()
    await broker.start()
    cfg_a, cfg_b = two_gateways(tmp_path, postgres_url, broker)
    try:
        async with running(cfg_a) as (_, app_a), running(cfg_b) as (_, app_b):
            a, b = FakeAdapter.instances["a"], FakeAdapter.instances["b"]
            docs = [{"id": f"up-{n}", "device": f"bin-{n % 10}", "fill": n % 100,
                     "at": f"2026-01-01T10:{n // 60:02d}:{n % 60:02d}Z"} for n in range(180)]
            # Each uplink heard by two LoRaWAN gateways, one copy to each instance: the first 60
            # reach A first, the next 60 reach B first, the last 60 reach both at the same time.
            await asyncio.gather(*(a.send(d) for d in docs[:60]), *(b.send(d) for d in docs[60:120]))
            await asyncio.gather(*(b.send(d) for d in docs[:60]), *(a.send(d) for d in docs[60:120]))
            await asyncio.gather(*(x.send(d) for d in docs[120:] for x in (a, b)))
            # A redelivery to either instance later is still a duplicate.
            await asyncio.gather(a.send(docs[0]), b.send(docs[100]))
            rts = [app_a[RUNTIME], app_b[RUNTIME]]
            await eventually(lambda: all(rt.outbox.depth("city") == 0 for rt in rts), what="outboxes drained")
            accepted = [rt.metrics.messages_in.get(source="bins", adapter="fake") for rt in rts]
            duplicates = [rt.metrics.duplicates.get(source="bins") for rt in rts]
    finally:
        await broker.stop()
    sent = Counter((i, json.dumps(item["fillingLevel"], sort_keys=True))
                   for r in broker.requests for i, item in zip(r["ids"], r["body"], strict=True)
                   if "fillingLevel" in item)
    assert len(sent) == 180  # every reading reached the broker ...
    assert set(sent.values()) == {1}  # ... once
    assert sum(accepted) == 180 and sum(duplicates) == 182
    assert all(n > 0 for n in accepted)  # both instances did part of the work


async def test_a_gateway_whose_shared_store_is_down_refuses_messages(tmp_path: Path) -> None:
    FakeAdapter.instances.clear()
    cfg = config(tmp_path, dedup={"database": f"postgresql://jonction@127.0.0.1:{free_port()}/nowhere"})
    async with running(cfg) as (_, app):
        rt = app[RUNTIME]
        with pytest.raises(Unavailable, match="dedup database"):  # no ack: the source delivers it again
            await FakeAdapter.instances["bins"].send({"id": "up-1", "device": "bin-1", "fill": 5})
        assert rt.outbox.depth("embedded") == 0
        assert rt.metrics.messages_in.get(source="bins", adapter="fake") == 0
        assert rt.seen.count() == 0  # not even remembered locally: the next delivery is claimed afresh
