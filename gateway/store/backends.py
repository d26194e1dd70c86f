"""Open a store backend from a database URL: ``sqlite:///path`` (the embedded default) or ``postgresql://…``.

Nothing else in the store names a backend: the runtime, ``jonction store`` and the tests call
:func:`open_storage` (or :func:`create_storage` for an app that starts it in its own lifecycle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from gateway.errors import ConfigInvalid
from gateway.store.base import Storage, tune_gc

SQLITE_FILE = "store.sqlite"
"""The SQLite file's name inside a data directory."""


def is_postgresql(url: str | Path | None) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return isinstance(url, str) and url.split(":", 1)[0] in ("postgresql", "postgres")


def sqlite_path(url: str | Path) -> Path:
    """The file of a ``sqlite:///path`` URL (``sqlite:////abs`` or ``sqlite:///rel``), or a plain path."""
    if isinstance(url, Path):
        return url
    if url.startswith("sqlite:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigInvalid(f"database {url!r}: a sqlite URL names a local file (sqlite:///path)")
        path = unquote(parts.path)
        # sqlite:///rel/store.sqlite → "/rel/store.sqlite" is relative, sqlite:////abs → "//abs"
        return Path(path[1:]) if path.startswith("/") else Path(path)
    if "://" in url:
        raise ConfigInvalid(f"database {url!r}: expected sqlite:///path or postgresql://…")
    return Path(url)


def describe(url: str | Path) -> str:
    """The URL without its password, for logs and messages."""
    if not is_postgresql(url):
        return f"sqlite:///{sqlite_path(url)}"
    parts = urlsplit(str(url))
    if parts.password is None:
        return str(url)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


def create_storage(url: str | Path, *, durability: Literal["full", "normal"] = "full") -> Storage:
    """A backend for ``url``, not yet started (``await storage.start()`` opens it)."""
    if is_postgresql(url):
        from gateway.store.postgres import PostgresStorage  # optional extra: asyncpg

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
