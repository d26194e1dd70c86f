"""The SQLite writer's cache of parsed documents never writes over a state it did not see.

The writer keeps the documents it committed last, so a telemetry update does not parse its entity
again. Whatever another connection commits, or a transaction that rolls back, must make it read the
stored document again: an update built on a stale document would silently drop attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.store import history, jsonld, open_storage
from gateway.store import sqlite as sqlite_backend
from gateway.store.sqlite import SqliteStorage

ID = "urn:ngsi-ld:WasteContainer:w1"


def _iri(term: str) -> str:
    return jsonld.ContextCache().get([jsonld.jonction_context_iri()]).expand_term(term)


def _reading(entity_id: str = ID, **attrs: Any) -> dict[str, Any]:
    return {"id": entity_id, "type": "WasteContainer",
            **{name: {"type": "Property", "value": value} for name, value in attrs.items()}}


async def _value(storage: SqliteStorage, attr: str, entity_id: str = ID) -> Any:
    doc = await storage.get_doc("", entity_id)
    assert doc is not None
    instances = doc.get(_iri(attr))
    return None if instances is None else instances[0]["value"]


async def test_another_connections_commit_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    writer = await open_storage(path)
    other = await open_storage(path)
    assert isinstance(writer, SqliteStorage) and isinstance(other, SqliteStorage)
    try:
        assert not (await writer.upsert("", [_reading(fillingLevel=0.1)])).errors
        assert writer._docs  # the writer remembers what it committed
        # Another store process (or a maintenance command) adds an attribute to the same entity.
        assert not (await other.upsert("", [_reading(temperature=12.5)])).errors
        assert not (await writer.upsert("", [_reading(fillingLevel=0.2)])).errors
        assert await _value(writer, "fillingLevel") == 0.2
        assert await _value(writer, "temperature") == 12.5, "the update was built on a stale document"
    finally:
        await other.close()
        await writer.close()


async def test_a_rolled_back_batch_leaves_nothing_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = await open_storage(tmp_path / "s.sqlite")
    assert isinstance(storage, SqliteStorage)
    try:
        assert not (await storage.upsert("", [_reading(fillingLevel=0.1, status="ok")])).errors
        real = history.record_many

        def failing(*args: Any, **kwargs: Any) -> int:
            raise RuntimeError("disk full")

        monkeypatch.setattr(history, "record_many", failing)
        with pytest.raises(RuntimeError):
            await storage.upsert("", [_reading(fillingLevel=0.9)])
        monkeypatch.setattr(history, "record_many", real)
        assert await _value(storage, "fillingLevel") == 0.1
        # The next write starts from the committed document, not from the rolled-back one.
        assert not (await storage.upsert("", [_reading(status="full")])).errors
        assert await _value(storage, "fillingLevel") == 0.1
        assert await _value(storage, "status") == "full"
    finally:
        await storage.close()


async def test_the_cache_is_bounded_and_an_evicted_entity_is_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_backend, "_DOC_CACHE", 5)
    storage = await open_storage(tmp_path / "s.sqlite")
    assert isinstance(storage, SqliteStorage)
    ids = [f"urn:ngsi-ld:WasteContainer:c{i}" for i in range(20)]
    try:
        assert not (await storage.upsert("", [_reading(i, fillingLevel=0.1, status="ok") for i in ids])).errors
        assert len(storage._docs) == 5
        for round_ in range(2):
            result = await storage.upsert("", [_reading(i, fillingLevel=0.2 + round_) for i in ids])
            assert not result.errors and len(storage._docs) == 5
        for entity_id in ids:
            assert await _value(storage, "fillingLevel", entity_id) == 1.2
            assert await _value(storage, "status", entity_id) == "ok"
    finally:
        await storage.close()
