"""The runtime's write path: a reading sent again is not a new observation; the history writer's cache stays right.

The embedded store skips an update-mode upsert (the runtime's interface) whose every attribute
instance is already stored as sent, ``observedAt`` included: no rewrite, no history instance, no
change event. Anything else (a new observedAt, ``1`` instead of ``1.0``, a new type) is written.
The SQLite writer remembers the history series it wrote; another connection deleting them must
not leave it writing into series that no longer exist.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.store import history, jsonld, open_storage
from gateway.store.app import StoreSettings
from gateway.store.base import Storage
from gateway.store.records import Change
from tests.store.conftest import jonction_iri, recorded_changes

STORE_BACKENDS = ("sqlite", "postgresql")

W1 = "urn:ngsi-ld:WasteContainer:w1"


def _container(level: Any, observed: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": W1,
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": level, "unitCode": "C62", "observedAt": observed},
        "status": {"type": "Property", "value": "ok", "observedAt": observed},
        "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:d1"},
        **extra,
    }


@dataclass
class Opened:
    """A storage the test writes through and its SQLite file (None on PostgreSQL)."""

    storage: Storage
    path: Path | None

    async def history_count(self, attr_iri: str, entity_id: str = W1) -> int:
        """Instances of one attribute in the history (the SQLite file's tables, or the backend's slice)."""
        sliced = await self.storage.history_slice("", [entity_id], None, None)
        if sliced is not None:
            series = {sid for sid, _, eid, attr, ds in sliced.series
                      if eid == entity_id and attr == attr_iri and not ds}
            return len([row for row in sliced.instances if row[0] in series])
        assert self.path is not None
        conn = sqlite3.connect(self.path)
        try:
            return int(conn.execute(
                "SELECT count(*) FROM history_instances i JOIN history_series s ON s.series_id = i.series_id "
                "WHERE s.entity_id = ? AND s.attr = ? AND s.dataset_id = ''", (entity_id, attr_iri)).fetchone()[0])
        finally:
            conn.close()


@asynccontextmanager
async def _opened(target: str | Path) -> AsyncIterator[Opened]:
    """The storage at ``target`` (a PostgreSQL URL or a SQLite file), closed at the end."""
    storage = await open_storage(target)
    try:
        yield Opened(storage, target if isinstance(target, Path) else None)
    finally:
        await storage.close()


@pytest.fixture
async def store(store_settings: StoreSettings, tmp_path: Path) -> AsyncIterator[Opened]:
    """The backend under test (every test asking for it runs on SQLite and on PostgreSQL)."""
    async with _opened(store_settings.database or tmp_path / "s.sqlite") as opened:
        yield opened


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Opened]:
    """A SQLite store, for what only its file shows."""
    async with _opened(tmp_path / "s.sqlite") as opened:
        yield opened


async def test_a_reading_sent_again_writes_nothing_and_notifies_nothing(store: Opened) -> None:
    """Same content and observedAt: unchanged (modifiedAt kept, no history, no event); a new observedAt is written."""
    storage, events = store.storage, recorded_changes(store.storage)
    level = jonction_iri("fillingLevel")
    assert not (await storage.upsert("", [_container(0.5, "2026-03-04T07:00:00Z")])).errors
    stored = await storage.get_doc("", W1)
    assert stored is not None and len(events) == 1
    result = await storage.upsert("", [_container(0.5, "2026-03-04T07:00:00Z")])
    assert result.success == [W1] and not result.errors and not result.created
    again = await storage.get_doc("", W1)
    assert again == stored  # modifiedAt included: nothing was rewritten
    assert len(events) == 1
    assert await store.history_count(level) == 1
    # the same value observed again later is a new observation
    assert not (await storage.upsert("", [_container(0.5, "2026-03-04T07:05:00Z")])).errors
    assert len(events) == 2
    assert await store.history_count(level) == 2
    later = await storage.get_doc("", W1)
    assert later is not None and later[level][0]["observedAt"] == "2026-03-04T07:05:00Z"


async def test_what_differs_only_in_json_type_or_adds_something_is_written(store: Opened) -> None:
    """1 after 1.0, a new type, a new attribute or sub-attribute: each is an update with its history."""
    storage = store.storage
    level = jonction_iri("fillingLevel")
    when = "2026-03-04T07:00:00Z"
    assert not (await storage.upsert("", [_container(1.0, when)])).errors
    assert not (await storage.upsert("", [_container(1, when)])).errors
    doc = await storage.get_doc("", W1)
    assert doc is not None and type(doc[level][0]["value"]) is int
    assert await store.history_count(level) == 2
    typed = {**_container(1, when), "type": ["WasteContainer", "Asset"]}
    assert not (await storage.upsert("", [typed])).errors
    doc = await storage.get_doc("", W1)
    assert doc is not None and jonction_iri("Asset") in doc["type"]
    added = _container(1, when, temperature={"type": "Property", "value": 12})
    assert not (await storage.upsert("", [added])).errors
    doc = await storage.get_doc("", W1)
    assert doc is not None and jonction_iri("temperature") in doc
    nested = _container(1, when)
    nested["status"]["reason"] = {"type": "Property", "value": "lid open"}
    assert not (await storage.upsert("", [nested])).errors
    doc = await storage.get_doc("", W1)
    assert doc is not None and jonction_iri("reason") in doc[jonction_iri("status")][0]
    assert await store.history_count(jonction_iri("status")) == 5  # every write above rewrote it


async def test_the_api_upsert_still_rewrites_identical_content(store: Opened) -> None:
    """POST /entityOperations/upsert semantics are untouched: the same content again is an update (modifiedAt)."""
    from gateway.store import operations as ops

    storage = store.storage
    ctx = storage.contexts.get([jsonld.jonction_context_iri()])
    doc = ctx.expand_entity(_container(0.5, "2026-03-04T07:00:00Z"))
    await storage.apply("", [Change(doc["id"], ops.upsert(doc, "update"))], create_tenant=True)
    first = await storage.get_doc("", doc["id"])
    results = await storage.apply("", [Change(doc["id"], ops.upsert(doc, "update"))])
    assert results[0].outcome == "updated"
    assert await store.history_count(jonction_iri("fillingLevel"), doc["id"]) == 2
    second = await storage.get_doc("", doc["id"])
    assert first is not None and second is not None and second["id"] == first["id"]


async def test_history_deleted_by_another_connection_is_written_again(sqlite_store: Opened) -> None:
    """The writer's remembered series go stale when another connection deletes them: it must notice."""
    storage, path = sqlite_store.storage, sqlite_store.path
    assert path is not None
    level = jonction_iri("fillingLevel")
    assert not (await storage.upsert("", [_container(0.1, "2026-03-04T07:00:00Z")])).errors
    other = history.Database(path)
    try:
        assert await other.write(lambda conn: history.delete_entity(conn, "", W1))
    finally:
        await other.close()
    assert await sqlite_store.history_count(level) == 0
    assert not (await storage.upsert("", [_container(0.2, "2026-03-04T07:01:00Z")])).errors
    assert await sqlite_store.history_count(level) == 1
    conn = sqlite3.connect(path)
    try:
        orphans = conn.execute("SELECT count(*) FROM history_instances WHERE series_id NOT IN "
                               "(SELECT series_id FROM history_series)").fetchone()[0]
        types = conn.execute("SELECT types FROM history_entities WHERE entity_id = ?", (W1,)).fetchone()
    finally:
        conn.close()
    assert orphans == 0 and types is not None


async def test_late_readings_sent_twice_are_kept_once(sqlite_store: Opened) -> None:
    """append_history replaces an instance sent again for the same observedAt (one DELETE batch per write)."""
    storage = sqlite_store.storage
    assert not (await storage.upsert("", [_container(0.9, "2026-03-04T08:00:00Z")])).errors
    late = [_container(0.3 + n / 10, f"2026-03-04T07:0{n}:00Z") for n in range(3)]
    for _ in range(2):
        assert not (await storage.append_history("", late)).errors
    assert await sqlite_store.history_count(jonction_iri("fillingLevel")) == 4
