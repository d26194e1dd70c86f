"""Read the attribute history of the embedded store, one entity and window at a time, on either backend.

SQLite is read through :mod:`gateway.store.history` on a read-only connection to the file (the
store may be running); PostgreSQL through the backend's ``Storage.history_slice``, one entity per
read (a window too large for one read is halved). Memory holds one entity's attributes for one
window, whatever the size of the territory. Only instances with an observedAt are read: the time
a value was written is not the time it was measured.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.errors import ConfigInvalid
from gateway.indicators.primitives import Point
from gateway.store import history
from gateway.store.problems import NgsiError

_BOOLEANS = ("true", "false")
"""JSON texts whose numeric projection (1.0, 0.0) is not the value."""


class HistoryReader(Protocol):
    """What the indicators need from a store."""

    async def tenants(self) -> list[str]:
        """Every tenant with attribute history."""
        ...

    async def entities(self, tenant: str, type_iris: Sequence[str]) -> list[tuple[str, list[str]]]:
        """(entity id, type IRIs) of the entities with history having one of ``type_iris``, by id."""
        ...

    async def series(
        self, tenant: str, entity_id: str, attrs: Sequence[str], start: int, end: int
    ) -> dict[str, list[Point]]:
        """Attribute IRI → (observedAt µs, value) in ``[start, end)``, in time order (default instances)."""
        ...

    async def close(self) -> None:
        """Release the store."""
        ...


class SqliteReader:
    """The history tables of a SQLite store file, opened read-only."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ConfigInvalid(f"no store at {path} (give --data DIR holding store.sqlite, or --database URL)")
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        has = self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'history_instances'").fetchone()
        self._empty = has is None

    async def tenants(self) -> list[str]:
        """Every tenant with attribute history."""
        if self._empty:
            return []
        return sorted(r[0] for r in self._conn.execute("SELECT DISTINCT tenant FROM history_entities"))

    async def entities(self, tenant: str, type_iris: Sequence[str]) -> list[tuple[str, list[str]]]:
        """(entity id, type IRIs) of the entities with history having one of ``type_iris``, by id."""
        if self._empty:
            return []
        wanted = set(type_iris)
        selector = history.EntitySelector(tenant, type_match=lambda types: not wanted.isdisjoint(types))
        return history.find_entities(self._conn, selector)

    async def series(
        self, tenant: str, entity_id: str, attrs: Sequence[str], start: int, end: int
    ) -> dict[str, list[Point]]:
        """Attribute IRI → (observedAt µs, value) in ``[start, end)``, in time order (default instances)."""
        selector = history.EntitySelector(tenant, attrs=list(attrs), dataset_ids=["@none"])
        where, args = history.TimeFilter("observed_at", start, end).sql()
        out: dict[str, list[Point]] = {}
        for series in history.series_of(self._conn, selector, [entity_id]):
            # The store's numeric projection (num) spares a JSON parse per reading; booleans, text and
            # structured values are parsed from their JSON.
            rows = self._conn.execute(
                f"SELECT observed_at, num, value FROM history_instances WHERE series_id=?{where} "
                "ORDER BY observed_at, rowid", [series.series_id, *args])
            points: list[Point] = [
                (observed, num if num is not None and value not in _BOOLEANS else
                 (json.loads(value) if value is not None else None))
                for observed, num, value in rows
            ]
            if points:
                out[series.attr] = points
        return out

    async def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class StorageReader:
    """Any backend implementing ``history_slice`` (PostgreSQL)."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    async def tenants(self) -> list[str]:
        """Every tenant with attribute history (history-only writes create no tenant row, so ask the history)."""
        rows = await self._storage._db().fetch("SELECT DISTINCT tenant FROM history_entities ORDER BY tenant")
        return [str(r[0]) for r in rows]

    async def entities(self, tenant: str, type_iris: Sequence[str]) -> list[tuple[str, list[str]]]:
        """(entity id, type IRIs) of the entities with history having one of ``type_iris``, by id."""
        # an empty window: the slice lists the entities and reads no instance
        found = await self._storage.history_slice(tenant, None, 0, 0, types=list(type_iris))
        if found is None:
            return []
        wanted = set(type_iris)
        out = [(entity_id, list(json.loads(types))) for _, entity_id, types in found.entities]
        return sorted((e, t) for e, t in out if not wanted.isdisjoint(t))

    async def series(
        self, tenant: str, entity_id: str, attrs: Sequence[str], start: int, end: int
    ) -> dict[str, list[Point]]:
        """Attribute IRI → (observedAt µs, value) in ``[start, end)``, in time order (default instances)."""
        out: dict[str, list[Point]] = {}
        await self._read(tenant, entity_id, set(attrs), start, end, out)
        return out

    async def _read(self, tenant: str, entity_id: str, attrs: set[str], start: int, end: int,
                    out: dict[str, list[Point]]) -> None:
        try:
            found = await self._storage.history_slice(tenant, [entity_id], start, end)
        except NgsiError as exc:
            if exc.type != "TooComplexQuery" or end - start < 2_000_000:
                raise
            middle = start + (end - start) // 2  # too many instances for one read: two halves, in order
            await self._read(tenant, entity_id, attrs, start, middle, out)
            await self._read(tenant, entity_id, attrs, middle, end, out)
            return
        if found is None:
            return
        wanted = {sid: attr for sid, _, _, attr, dataset in found.series if attr in attrs and not dataset}
        for sid, observed, _, _, _, _, value, _, _ in found.instances:
            if sid in wanted and observed is not None:
                out.setdefault(wanted[sid], []).append((observed, json.loads(value) if value is not None else None))

    async def close(self) -> None:
        """Close the storage."""
        await self._storage.close()


async def open_reader(data_dir: Path, database: str | None) -> HistoryReader:
    """A reader of the store in ``data_dir`` (SQLite), or of ``database`` (a sqlite:/// or postgresql:// URL)."""
    from gateway.store.backends import create_storage, is_postgresql, sqlite_path

    if database is None:
        return SqliteReader(data_dir / "store.sqlite")
    if not is_postgresql(database):
        return SqliteReader(sqlite_path(database))
    storage = create_storage(database)
    await storage.start()
    return StorageReader(storage)
