"""PostgreSQL batch writes: the stored-document cache follows every other writer, and a batch written in parts
(reads and writes pipelined on one connection) stays one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from gateway.store.postgres import PostgresStorage
from gateway.store.problems import NgsiError
from tests.store.conftest import streetlight

TENANT = "commune"


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[PostgresStorage, PostgresStorage]]:
    """Two stores on one database, as two store processes."""
    one, two = PostgresStorage(postgres_url), PostgresStorage(postgres_url)
    await one.start()
    await two.start()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


def _level(n: int | str, value: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight",
            "illuminanceLevel": {"type": "Property", "value": value}}


async def _history_count(url: str, entity: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM history WHERE entity_id = $1", entity))
    finally:
        await conn.close()


async def test_a_cached_document_yields_to_another_process_s_write(
    pair: tuple[PostgresStorage, PostgresStorage],
) -> None:
    """An update through one store merges into what the other store wrote since, not into its cached copy."""
    one, two = pair
    assert not (await one.upsert(TENANT, [streetlight(1)])).errors  # one caches its version
    assert not (await two.upsert(TENANT, [_level(1, 40)])).errors  # two reads, adds an attribute
    switch_off = {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight",
                  "powerState": {"type": "Property", "value": "off"}}
    assert not (await one.upsert(TENANT, [switch_off])).errors
    entity = await one.get(TENANT, "urn:ngsi-ld:Streetlight:1")
    assert entity is not None
    assert entity["illuminanceLevel"]["value"] == 40, "the other store's attribute was lost"
    assert entity["powerState"]["value"] == "off"
    seen_by_two = await two.get(TENANT, "urn:ngsi-ld:Streetlight:1")
    assert seen_by_two == entity


async def test_an_entity_deleted_elsewhere_is_created_again(pair: tuple[PostgresStorage, PostgresStorage]) -> None:
    """A cached entity that another process deleted is a creation, with only what the new write says."""
    one, two = pair
    assert not (await one.upsert(TENANT, [streetlight(2, illuminanceLevel={"type": "Property", "value": 5})])).errors
    deleted = await two.delete_entities(TENANT, ["urn:ngsi-ld:Streetlight:2"])
    assert deleted.success == ["urn:ngsi-ld:Streetlight:2"]
    again = await one.upsert(TENANT, [_level(2, 6)])
    assert again.created == ["urn:ngsi-ld:Streetlight:2"]
    entity = await one.get(TENANT, "urn:ngsi-ld:Streetlight:2")
    assert entity is not None and "powerState" not in entity and entity["illuminanceLevel"]["value"] == 6


async def test_a_failed_batch_leaves_no_trace_in_table_history_or_cache(
    pair: tuple[PostgresStorage, PostgresStorage], postgres_url: str
) -> None:
    """A batch whose third part the database refuses rolls back the parts already written, and the next
    write merges into the committed documents."""
    one, _ = pair
    lights = [_level(f"r{i:04d}", i) for i in range(700)]
    assert not (await one.upsert(TENANT, lights)).errors
    first = "urn:ngsi-ld:Streetlight:r0000"
    rows_before = await _history_count(postgres_url, first)
    bad = [_level(f"r{i:04d}", i + 1000) for i in range(700)]
    bad[650]["illuminanceLevel"]["unitCode"] = "P1\u0000"  # PostgreSQL cannot keep U+0000: refused at its part
    with pytest.raises(NgsiError) as refused:
        await one.upsert(TENANT, bad)
    assert refused.value.type == "BadRequestData"
    doc = await one.get(TENANT, first)
    assert doc is not None and doc["illuminanceLevel"]["value"] == 0
    assert await _history_count(postgres_url, first) == rows_before
    more = [{"id": first, "type": "Streetlight", "powerState": {"type": "Property", "value": "on"}}]
    assert not (await one.upsert(TENANT, more)).errors
    doc = await one.get(TENANT, first)
    assert doc is not None and doc["illuminanceLevel"]["value"] == 0 and doc["powerState"]["value"] == "on"


@pytest.mark.parametrize("budget", [0, 3_000, 64 * 2**20], ids=["no-cache", "tiny-cache", "default-size"])
async def test_a_batch_in_several_parts_applies_every_change_in_order(postgres_url: str, budget: int) -> None:
    """Ids repeated across the parts of one batch see each other's changes; history gets every instance."""
    storage = PostgresStorage(postgres_url, doc_cache_bytes=budget)
    await storage.start()
    try:
        first = [_level(f"p{i:04d}", 0) for i in range(600)]
        assert len((await storage.upsert(TENANT, first)).created) == 600
        # each id twice in one batch, 600 entities apart: the second write lands on the first
        batch = [_level(f"p{i:04d}", 1) for i in range(600)]
        batch += [{"id": f"urn:ngsi-ld:Streetlight:p{i:04d}", "type": "Streetlight",
                   "powerState": {"type": "Property", "value": "on" if i % 2 else "off"}} for i in range(600)]
        result = await storage.upsert(TENANT, batch)
        assert not result.errors and len(result.success) == 1200 and not result.created
        for i in (0, 249, 250, 599):
            entity = await storage.get(TENANT, f"urn:ngsi-ld:Streetlight:p{i:04d}")
            assert entity is not None
            assert entity["illuminanceLevel"]["value"] == 1
            assert entity["powerState"]["value"] == ("on" if i % 2 else "off")
        assert await _history_count(postgres_url, "urn:ngsi-ld:Streetlight:p0599") == 3
        assert storage._docs_size <= budget
        again = await storage.upsert(TENANT, [_level("p0001", 2)])
        assert not again.errors
        entity = await storage.get(TENANT, "urn:ngsi-ld:Streetlight:p0001")
        assert entity is not None and entity["powerState"]["value"] == "on"
    finally:
        await storage.close()


async def test_concurrent_batches_of_two_tenants_share_a_small_cache(postgres_url: str) -> None:
    """Two tenants written at once through one store, with a cache too small for both, keep every write."""
    storage = PostgresStorage(postgres_url, doc_cache_bytes=1_000_000)
    await storage.start()
    try:
        for value in range(1, 7):
            results = await asyncio.gather(*(
                storage.upsert(tenant, [_level(f"c{i:04d}", value) for i in range(600)]) for tenant in ("a", "b")
            ))
            assert all(not r.errors and len(r.success) == 600 for r in results)
        for tenant in ("a", "b"):
            for i in (0, 333, 599):
                entity = await storage.get(tenant, f"urn:ngsi-ld:Streetlight:c{i:04d}")
                assert entity is not None and entity["illuminanceLevel"]["value"] == 6
        assert 0 < storage._docs_size <= 1_000_000
    finally:
        await storage.close()
