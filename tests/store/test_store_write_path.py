"""The runtime's write path: a reading sent again is not a new observation; the history writer's cache stays right.

The embedded store skips an update-mode upsert (the runtime's interface) whose every attribute
instance is already stored as sent, ``observedAt`` included: no rewrite, no history instance, no
change event. Anything else (a new observedAt, ``1`` instead of ``1.0``, a new type) is written.
The SQLite writer remembers the history series it wrote; another connection deleting them must
not leave it writing into series that no longer exist.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.store import history, jsonld, open_storage
from gateway.store.app import StoreSettings
from gateway.store.base import ChangeEvent, Storage
from gateway.store.records import Change

STORE_BACKENDS = ("sqlite", "postgresql")


def _iri(term: str) -> str:
    return jsonld.ContextCache().get([jsonld.jonction_context_iri()]).expand_term(term)


def _container(level: Any, observed: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "urn:ngsi-ld:WasteContainer:w1",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": level, "unitCode": "C62", "observedAt": observed},
        "status": {"type": "Property", "value": "ok", "observedAt": observed},
        "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:d1"},
        **extra,
    }


async def _history_count(storage: Storage, path: Path | None, entity_id: str, attr_iri: str) -> int:
    """Instances of one attribute in the history (the SQLite file's tables, or the backend's slice)."""
    sliced = await storage.history_slice("", [entity_id], None, None)
    if sliced is not None:
        series = {sid for sid, _, eid, attr, ds in sliced.series if eid == entity_id and attr == attr_iri and not ds}
        return len([row for row in sliced.instances if row[0] in series])
    assert path is not None
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(
            "SELECT count(*) FROM history_instances i JOIN history_series s ON s.series_id = i.series_id "
            "WHERE s.entity_id = ? AND s.attr = ? AND s.dataset_id = ''", (entity_id, attr_iri)).fetchone()[0])
    finally:
        conn.close()


async def test_a_reading_sent_again_writes_nothing_and_notifies_nothing(
    store_backend: str, tmp_path: Path, store_settings: StoreSettings
) -> None:
    """Same content and observedAt: unchanged (modifiedAt kept, no history, no event); a new observedAt is written."""
    path = None if store_settings.database else tmp_path / "s.sqlite"
    storage = await open_storage(store_settings.database or tmp_path / "s.sqlite")
    events: list[ChangeEvent] = []

    async def listen(batch: Sequence[ChangeEvent]) -> None:
        events.extend(batch)

    storage.add_listener(listen)
    level = _iri("fillingLevel")
    try:
        first = _container(0.5, "2026-03-04T07:00:00Z")
        assert not (await storage.upsert("", [first])).errors
        stored = await storage.get_doc("", first["id"])
        assert stored is not None and len(events) == 1
        result = await storage.upsert("", [_container(0.5, "2026-03-04T07:00:00Z")])
        assert result.success == [first["id"]] and not result.errors and not result.created
        again = await storage.get_doc("", first["id"])
        assert again == stored  # modifiedAt included: nothing was rewritten
        assert len(events) == 1
        assert await _history_count(storage, path, first["id"], level) == 1
        # the same value observed again later is a new observation
        assert not (await storage.upsert("", [_container(0.5, "2026-03-04T07:05:00Z")])).errors
        assert len(events) == 2
        assert await _history_count(storage, path, first["id"], level) == 2
        later = await storage.get_doc("", first["id"])
        assert later is not None and later[level][0]["observedAt"] == "2026-03-04T07:05:00Z"
    finally:
        await storage.close()


async def test_what_differs_only_in_json_type_or_adds_something_is_written(
    store_backend: str, tmp_path: Path, store_settings: StoreSettings
) -> None:
    """1 after 1.0, a new type, a new attribute or sub-attribute: each is an update with its history."""
    path = None if store_settings.database else tmp_path / "s.sqlite"
    storage = await open_storage(store_settings.database or tmp_path / "s.sqlite")
    level = _iri("fillingLevel")
    when = "2026-03-04T07:00:00Z"
    try:
        assert not (await storage.upsert("", [_container(1.0, when)])).errors
        assert not (await storage.upsert("", [_container(1, when)])).errors
        doc = await storage.get_doc("", "urn:ngsi-ld:WasteContainer:w1")
        assert doc is not None and type(doc[level][0]["value"]) is int
        assert await _history_count(storage, path, doc["id"], level) == 2
        typed = {**_container(1, when), "type": ["WasteContainer", "Asset"]}
        assert not (await storage.upsert("", [typed])).errors
        doc = await storage.get_doc("", doc["id"])
        assert doc is not None and _iri("Asset") in doc["type"]
        added = _container(1, when, temperature={"type": "Property", "value": 12})
        assert not (await storage.upsert("", [added])).errors
        doc = await storage.get_doc("", doc["id"])
        assert doc is not None and _iri("temperature") in doc
        nested = _container(1, when)
        nested["status"]["reason"] = {"type": "Property", "value": "lid open"}
        assert not (await storage.upsert("", [nested])).errors
        doc = await storage.get_doc("", doc["id"])
        assert doc is not None and _iri("reason") in doc[_iri("status")][0]
        assert await _history_count(storage, path, doc["id"], _iri("status")) == 5  # every write above rewrote it
    finally:
        await storage.close()


async def test_the_api_upsert_still_rewrites_identical_content(
    store_backend: str, tmp_path: Path, store_settings: StoreSettings
) -> None:
    """POST /entityOperations/upsert semantics are untouched: the same content again is an update (modifiedAt)."""
    from gateway.store import operations as ops

    path = None if store_settings.database else tmp_path / "s.sqlite"
    storage = await open_storage(store_settings.database or tmp_path / "s.sqlite")
    try:
        ctx = storage.contexts.get([jsonld.jonction_context_iri()])
        doc = ctx.expand_entity(_container(0.5, "2026-03-04T07:00:00Z"))
        await storage.apply("", [Change(doc["id"], ops.upsert(doc, "update"))], create_tenant=True)
        first = await storage.get_doc("", doc["id"])
        results = await storage.apply("", [Change(doc["id"], ops.upsert(doc, "update"))])
        assert results[0].outcome == "updated"
        assert await _history_count(storage, path, doc["id"], _iri("fillingLevel")) == 2
        second = await storage.get_doc("", doc["id"])
        assert first is not None and second is not None and second["id"] == first["id"]
    finally:
        await storage.close()


async def test_history_deleted_by_another_connection_is_written_again(tmp_path: Path) -> None:
    """The writer's remembered series go stale when another connection deletes them: it must notice."""
    path = tmp_path / "s.sqlite"
    storage = await open_storage(path)
    level = _iri("fillingLevel")
    try:
        assert not (await storage.upsert("", [_container(0.1, "2026-03-04T07:00:00Z")])).errors
        other = history.Database(path)
        try:
            assert await other.write(lambda conn: history.delete_entity(conn, "", "urn:ngsi-ld:WasteContainer:w1"))
        finally:
            await other.close()
        assert await _history_count(storage, path, "urn:ngsi-ld:WasteContainer:w1", level) == 0
        assert not (await storage.upsert("", [_container(0.2, "2026-03-04T07:01:00Z")])).errors
        assert await _history_count(storage, path, "urn:ngsi-ld:WasteContainer:w1", level) == 1
        conn = sqlite3.connect(path)
        try:
            orphans = conn.execute("SELECT count(*) FROM history_instances WHERE series_id NOT IN "
                                   "(SELECT series_id FROM history_series)").fetchone()[0]
            types = conn.execute("SELECT types FROM history_entities WHERE entity_id = ?",
                                 ("urn:ngsi-ld:WasteContainer:w1",)).fetchone()
        finally:
            conn.close()
        assert orphans == 0 and types is not None
    finally:
        await storage.close()


async def test_late_readings_sent_twice_are_kept_once(tmp_path: Path) -> None:
    """append_history replaces an instance sent again for the same observedAt (one DELETE batch per write)."""
    path = tmp_path / "s.sqlite"
    storage = await open_storage(path)
    level = _iri("fillingLevel")
    try:
        assert not (await storage.upsert("", [_container(0.9, "2026-03-04T08:00:00Z")])).errors
        late = [_container(0.3 + n / 10, f"2026-03-04T07:0{n}:00Z") for n in range(3)]
        for _ in range(2):
            assert not (await storage.append_history("", late)).errors
        assert await _history_count(storage, path, "urn:ngsi-ld:WasteContainer:w1", level) == 4
    finally:
        await storage.close()
