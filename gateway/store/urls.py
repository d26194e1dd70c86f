"""Database URLs of the store: ``sqlite:///path`` (the embedded default) and ``postgresql://…``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway.errors import ConfigInvalid


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
