"""The storage layer and its Python interface (the runtime's): durability, listeners, history, JSON-LD."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.store import ChangeEvent, open_storage
from gateway.store.base import Change, QuerySpec
from gateway.store.indexing import geo_boxes
from gateway.store.jsonld import Context, ContextCache
from gateway.store.problems import NgsiError, problem
from gateway.store.sqlite import SqliteStorage
from tests.store.conftest import LINK_JONCTION_H, StoreServer, streetlight

SDM_STREETLIGHT = "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"


async def test_python_upsert_get_count(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    try:
        result = await storage.upsert("", [streetlight(1), streetlight(2)])
        assert result.success == ["urn:ngsi-ld:Streetlight:1", "urn:ngsi-ld:Streetlight:2"]
        assert result.created == result.success and result.errors == []
        got = await storage.get("", "urn:ngsi-ld:Streetlight:1")
        assert got is not None and got["type"] == "Streetlight"
        assert got["powerState"]["value"] == "on"
        assert "createdAt" in got  # the Python interface returns system attributes
        assert await storage.count("") == 2
        assert await storage.count("", "Streetlight") == 2
        assert await storage.count("", "Device") == 0
        assert await storage.count("other") == 0
        assert await storage.get("", "urn:ngsi-ld:Streetlight:9") is None
    finally:
        await storage.close()


async def test_python_upsert_update_vs_replace(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    try:
        await storage.upsert("t", [streetlight(1, extra={"type": "Property", "value": 1})])
        await storage.upsert("t", [{"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "b": 2}])
        got = await storage.get("t", "urn:ngsi-ld:Streetlight:1")
        assert got is not None and got["extra"]["value"] == 1 and got["b"]["value"] == 2
        await storage.upsert("t", [{"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "b": 3}], mode="replace")
        got = await storage.get("t", "urn:ngsi-ld:Streetlight:1")
        assert got is not None and "extra" not in got
    finally:
        await storage.close()


async def test_python_upsert_reports_bad_entities(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    try:
        result = await storage.upsert("", [{"id": "nope", "type": "X"}, streetlight(1), {"type": "X"}])
        assert result.success == ["urn:ngsi-ld:Streetlight:1"]
        assert [e.entity_id for e in result.errors] == ["nope", ""]
        assert all(e.error.type == "BadRequestData" for e in result.errors)
    finally:
        await storage.close()


async def test_python_interface_context(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    try:
        await storage.upsert("", [streetlight(1)])  # jonction context by default
        doc = await storage.get_doc("", "urn:ngsi-ld:Streetlight:1")
        assert doc is not None and doc["type"] == [SDM_STREETLIGHT]
        core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
        got = await storage.get("", "urn:ngsi-ld:Streetlight:1", context=core)
        assert got is not None and got["type"] == SDM_STREETLIGHT
        await storage.upsert("", [streetlight(2)], context=[core])
        assert await storage.count("", "Streetlight") == 1
    finally:
        await storage.close()


async def test_restart_keeps_everything_acknowledged(store_settings: Any) -> None:
    srv = StoreServer(store_settings)
    await srv.start()
    try:
        r = await srv.post("/entityOperations/upsert", [streetlight(i) for i in range(200)], headers=LINK_JONCTION_H)
        assert r.status == 201
        await srv.patch("/entities/urn:ngsi-ld:Streetlight:7/attrs", {"powerState": "off"}, headers=LINK_JONCTION_H)
        await srv.delete("/entities/urn:ngsi-ld:Streetlight:8")
        await srv.post("/entities", streetlight(1), headers={"NGSILD-Tenant": "t2"})
        await srv.restart()
        r = await srv.get("/entities?type=Streetlight&count=true&limit=0", headers=LINK_JONCTION_H)
        assert r.headers["NGSILD-Results-Count"] == "199"
        got = await srv.get("/entities/urn:ngsi-ld:Streetlight:7?options=keyValues", headers=LINK_JONCTION_H)
        assert got.json["powerState"] == "off"
        assert (await srv.get("/entities/urn:ngsi-ld:Streetlight:8")).status == 404
        assert (await srv.get("/entities/urn:ngsi-ld:Streetlight:1", headers={"NGSILD-Tenant": "t2"})).status == 200
        near = await srv.get("/entities?type=Streetlight&georel=near;maxDistance==10&geometry=Point"
                             "&coordinates=[2.35,48.85]&count=true&limit=1", headers=LINK_JONCTION_H)
        assert near.headers["NGSILD-Results-Count"] == "199"
    finally:
        await srv.close()


async def test_wal_mode_and_file_location(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "sub" / "store.sqlite")
    await storage.upsert("", [streetlight(1)])
    await storage.close()
    conn = sqlite3.connect(tmp_path / "sub" / "store.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM entities").fetchone()[0] == 1
    finally:
        conn.close()


async def test_close_is_idempotent_and_blocks_use(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    await storage.close()
    await storage.close()
    with pytest.raises(NgsiError):
        await storage.get("", "urn:x:1")


async def test_listeners_get_events_after_commit(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    seen: list[ChangeEvent] = []

    async def listener(events: Sequence[ChangeEvent]) -> None:
        # The change is committed: a read sees it.
        for event in events:
            if event.after is not None:
                assert await storage.get_doc(event.tenant, event.entity_id) is not None
        seen.extend(events)

    async def broken(events: Sequence[ChangeEvent]) -> None:
        raise RuntimeError("listener bug")

    storage.add_listener(broken)
    storage.add_listener(listener)
    try:
        await storage.upsert("t", [streetlight(1)])
        await storage.upsert("t", [streetlight(1, powerState={"type": "Property", "value": "off"})])
        await storage.delete_entities("t", ["urn:ngsi-ld:Streetlight:1"])
        assert [(e.before is None, e.after is None) for e in seen] == [(True, False), (False, False), (False, True)]
        assert seen[0].entity_type == SDM_STREETLIGHT
        assert seen[1].before is not None and seen[1].after is not None
        key = "https://uri.etsi.org/ngsi-ld/default-context/powerState"
        key = next(k for k in seen[1].after if k.endswith("powerState"))
        assert seen[1].before[key][0]["value"] == "on" and seen[1].after[key][0]["value"] == "off"
        assert seen[1].after[key][0]["modifiedAt"]
    finally:
        await storage.close()


async def test_history_recorded_in_same_transaction(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    try:
        await storage.upsert("", [streetlight(1)])
        await storage.upsert("", [streetlight(1, powerState={"type": "Property", "value": "off"})])
    finally:
        await storage.close()
    conn = sqlite3.connect(tmp_path / "store.sqlite")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "history_instances" not in tables:
            pytest.skip("attribute history module not present")
        count = conn.execute("SELECT count(*) FROM history_instances").fetchone()[0]
        assert count == 4  # powerState twice, location twice (replace rewrites both)
    finally:
        conn.close()


async def test_apply_errors_do_not_abort_the_batch(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")

    def boom(current: Any, now: str) -> Any:
        raise ValueError("bug")

    def refuse(current: Any, now: str) -> Any:
        raise problem("BadRequestData", "no")

    try:
        await storage.upsert("", [streetlight(1)])
        results = await storage.apply("", [Change("urn:ngsi-ld:Streetlight:1", boom),
                                           Change("urn:ngsi-ld:Streetlight:1", refuse)])
        assert [r.error.type if r.error else None for r in results] == ["InternalError", "BadRequestData"]
        with pytest.raises(NgsiError) as info:
            await storage.apply("ghost", [])
        assert info.value.type == "NonexistentTenant"
    finally:
        await storage.close()


async def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite", durability="normal")
    try:
        async def writer(k: int) -> None:
            for i in range(5):
                await storage.upsert("", [streetlight(f"{k}-{i}-{j}") for j in range(20)])

        async def reader() -> None:
            for _ in range(10):
                await storage.query("", QuerySpec(limit=5))

        await asyncio.gather(*(writer(k) for k in range(4)), reader(), reader())
        assert await storage.count("") == 400
    finally:
        await storage.close()


async def test_query_spec_sql_and_python_paths(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    try:
        await storage.upsert("", [streetlight(f"{i:02d}") for i in range(30)])
        ctx = storage.contexts.get(["https://jonction.eu/ns/context/v1.jsonld"])
        t = [ctx.expand_term("Streetlight")]
        fast = await storage.query("", QuerySpec(types=t, limit=10, offset=25, count=True))
        assert [d["id"][-2:] for d in fast.docs] == ["25", "26", "27", "28", "29"]
        assert fast.count == 30 and fast.more is False
        slow = await storage.query("", QuerySpec(types=t, id_pattern="[05]$", limit=2, count=True))
        assert [d["id"][-2:] for d in slow.docs] == ["00", "05"] and slow.count == 6 and slow.more
        boxed = await storage.query("", QuerySpec(bbox=(2.0, 48.0, 3.0, 49.0), geoproperty="nope"))
        assert boxed.docs == []
    finally:
        await storage.close()


def test_geo_boxes() -> None:
    doc = {"id": "x", "type": ["T"], "loc": [
        {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [2, 3], [0, 0]]]}},
        {"type": "Property", "value": 1},
    ]}
    assert geo_boxes(doc) == [("loc", 0.0, 0.0, 2.0, 3.0)]


# --------------------------------------------------------------------------- JSON-LD


def test_context_expansion_and_compaction() -> None:
    ctx = Context([{"ex": "https://example.org/ns#", "speed": "ex:speed", "Car": "https://example.org/Car"}])
    assert ctx.expand_term("speed") == "https://example.org/ns#speed"
    assert ctx.expand_term("ex:other") == "https://example.org/ns#other"
    assert ctx.expand_term("unknown") == "https://uri.etsi.org/ngsi-ld/default-context/unknown"
    assert ctx.expand_term("https://abs.example/x") == "https://abs.example/x"
    assert ctx.expand_term("location") == "https://uri.etsi.org/ngsi-ld/location"
    assert ctx.compact_iri("https://example.org/ns#speed") == "speed"
    assert ctx.compact_iri("https://example.org/ns#other") == "ex:other"
    assert ctx.compact_iri("https://uri.etsi.org/ngsi-ld/default-context/unknown") == "unknown"
    assert ctx.compact_iri("https://uri.etsi.org/ngsi-ld/location") == "location"
    assert ctx.compact_iri("https://elsewhere.example/x") == "https://elsewhere.example/x"


def test_user_vocab() -> None:
    ctx = Context([{"@vocab": "https://example.org/v/"}])
    assert ctx.expand_term("anything") == "https://example.org/v/anything"
    assert ctx.compact_iri("https://example.org/v/anything") == "anything"


def test_core_context_wins_over_user_definitions() -> None:
    ctx = Context([{"location": "https://example.org/mine", "type": "https://example.org/t"}])
    assert ctx.expand_term("location") == "https://uri.etsi.org/ngsi-ld/location"


def test_unknown_context_iri_is_504() -> None:
    with pytest.raises(NgsiError) as info:
        Context(["https://example.org/ctx.jsonld"])
    assert info.value.type == "LdContextNotAvailable" and info.value.status == 504


def test_hosted_context_resolution() -> None:
    docs = {"https://h.example/ngsi-ld/v1/jsonldContexts/abc": {"@context": {"foo": "https://ex.org/foo"}}}
    cache = ContextCache(docs.get)
    ctx = cache.get(["https://h.example/ngsi-ld/v1/jsonldContexts/abc"])
    assert ctx.expand_term("foo") == "https://ex.org/foo"
    assert cache.get(["https://h.example/ngsi-ld/v1/jsonldContexts/abc"]) is ctx


def test_expand_then_compact_round_trip() -> None:
    ctx = Context(["https://jonction.eu/ns/context/v1.jsonld"])
    entity = streetlight(1, name={"type": "LanguageProperty", "languageMap": {"fr": "x"}},
                         refDevice={"type": "Relationship", "object": "urn:ngsi-ld:Device:1",
                                    "observedAt": "2026-01-01T00:00:00Z"})
    assert ctx.compact_entity(ctx.expand_entity(entity)) == entity


def test_storage_satisfies_protocol(tmp_path: Path) -> None:
    from gateway.store.base import Storage

    storage: Storage = SqliteStorage(tmp_path / "x.sqlite", "full")
    assert storage.contexts is not None


async def test_ensure_tenant(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    try:
        assert not await storage.tenant_exists("subs-only")
        await storage.ensure_tenant("subs-only")
        await storage.ensure_tenant("subs-only")
        assert await storage.tenant_exists("subs-only")
        assert "subs-only" in await storage.tenants()
    finally:
        await storage.close()
    reopened = await open_storage(tmp_path / "store.sqlite")
    try:
        assert await reopened.tenant_exists("subs-only")
    finally:
        await reopened.close()


async def test_geo_index_follows_updates_and_deletes(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    loc = "https://uri.etsi.org/ngsi-ld/location"

    def at(lon: float, lat: float) -> dict[str, Any]:
        return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}

    async def found(lon: float, lat: float) -> list[str]:
        spec = QuerySpec(bbox=(lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01), geoproperty=loc)
        return [d["id"] for d in (await storage.query("", spec)).docs]

    try:
        await storage.upsert("", [streetlight(1, location=at(2.0, 48.0))])
        await storage.upsert("", [streetlight(1, powerState={"type": "Property", "value": "off"},
                                              location=at(2.0, 48.0))])
        assert await found(2.0, 48.0) == ["urn:ngsi-ld:Streetlight:1"]
        await storage.upsert("", [streetlight(1, location=at(5.0, 45.0))])
        assert await found(2.0, 48.0) == []
        assert await found(5.0, 45.0) == ["urn:ngsi-ld:Streetlight:1"]
        await storage.delete_entities("", ["urn:ngsi-ld:Streetlight:1"])
        assert await found(5.0, 45.0) == []
    finally:
        await storage.close()
