"""Open a store backend from a database URL: ``sqlite:///path`` (the embedded default) or ``postgresql://…``.

Nothing else in the store names a backend: the runtime, ``jonction store`` and the tests call
:func:`open_storage` (or :func:`create_storage` for an app that starts it in its own lifecycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from gateway.errors import ConfigInvalid
from gateway.store.base import Storage, tune_gc
from gateway.store.urls import describe, is_postgresql, sqlite_path

__all__ = ["create_storage", "describe", "is_postgresql", "open_storage", "sqlite_path"]


def create_storage(url: str | Path, *, durability: Literal["full", "normal"] = "full") -> Storage:
    """A backend for ``url``, not yet started (``await storage.start()`` opens it)."""
    if is_postgresql(url):
        try:
            from gateway.store.postgres import PostgresStorage
        except ImportError as exc:
            if exc.name != "asyncpg":
                raise
            raise ConfigInvalid(
                f"database {describe(url)}: the PostgreSQL backend needs asyncpg (pip install 'jonction[postgresql]')"
            ) from None

        return PostgresStorage(str(url))
    from gateway.store.sqlite import SqliteStorage

    return SqliteStorage(sqlite_path(url), durability)


async def open_storage(
    url: str | Path, *, durability: Literal["full", "normal"] = "full", gc_tuning: bool = True
) -> Storage:
    """Open (creating tables and applying migrations if needed) the store at ``url``.

    ``url`` is ``sqlite:///<data>/store.sqlite`` (or a plain path: the embedded default) or
    ``postgresql://user@host:port/db``. ``gc_tuning`` applies :func:`tune_gc` (process-wide).
    """
    if gc_tuning:
        tune_gc()
    storage = create_storage(url, durability=durability)
    await storage.start()
    return storage
