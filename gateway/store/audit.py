"""Audit log of cross-tenant reads: who (principal) read what (tenant, path, query, how many entities), when.

Rows live in the store's own database, table ``sharing_audit`` (SQLite: created on first use;
PostgreSQL: migration 8). Every non-owner read of the store writes one (``readers.sharing_middleware``);
federated reads record the registration they went through with :func:`record` (``via``). Rows older
than the policy's ``audit_retention_days`` are pruned at write, at most once an hour. Query strings
are kept without any parameter that looks like a credential and with every known token masked:
tokens never reach the log. The owner reads the log at ``GET {base}/jonction/audit`` (global store
token only): ``since``, ``principal``, ``tenant``, ``limit``.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from gateway.store.base import Storage
from gateway.store.problems import NgsiError, bad_request

AUDIT_PATH: Final = "/jonction/audit"
DEFAULT_RETENTION_DAYS: Final = 365
"""How long audit rows are kept when no sharing policy says otherwise."""
"""Where the log is served, under the store's base path."""
MAX_ROWS: Final = 1000
"""Most rows in one answer."""
_PRUNE_EVERY_S: Final = 3600.0
_MAX_QUERY: Final = 2000
_SECRET_WORDS: Final = ("token", "secret", "password", "passwd", "apikey", "api_key", "key", "auth")

SQLITE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS sharing_audit(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    principal TEXT NOT NULL,
    tenant TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    status INTEGER NOT NULL,
    returned INTEGER NOT NULL,
    via TEXT
);
CREATE INDEX IF NOT EXISTS sharing_audit_at ON sharing_audit(at);
"""
"""The SQLite table (PostgreSQL: ``gateway.store.postgres.migrations``, version 8)."""

_ready: weakref.WeakSet[Any] = weakref.WeakSet()
"""SQLite storages whose file has the table (checked once per storage)."""
_pruned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
"""When each storage was last pruned (monotonic seconds)."""


def is_audit_path(path: str) -> bool:
    """True for the audit endpoint (its own access rule: the global store token)."""
    return path.rstrip("/").endswith(AUDIT_PATH)


def clean_query(query_string: str, secrets: Iterable[str] = ()) -> str:
    """The query string without credential-like parameters, known tokens masked, bounded in length."""
    known = [s for s in secrets if s]

    def masked(value: str) -> str:
        for secret in known:
            value = value.replace(secret, "***")
        return value

    kept = [(k, masked(v)) for k, v in parse_qsl(query_string, keep_blank_values=True)
            if not any(word in k.lower() for word in _SECRET_WORDS)]
    return urlencode(kept)[:_MAX_QUERY]


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _sqlite(storage: Storage) -> Any:
    from gateway.store.sqlite import SqliteStorage

    return storage if isinstance(storage, SqliteStorage) else None


async def record(
    storage: Storage, *, principal: str, tenant: str, path: str, query: str = "", returned: int = 0,
    method: str = "GET", status: int = 200, view: bool = False, via: str | None = None,
    retention_days: int = DEFAULT_RETENTION_DAYS, at: datetime | None = None,
) -> None:
    """Write one audit row (federation: ``via`` names the registration a read went through).

    ``query`` must already be cleaned (:func:`clean_query`); ``view`` marks a syndicat-view read;
    ``at`` defaults to now.
    """
    moment = at or datetime.now(UTC)
    row = (moment, principal, tenant, method, path, query[:_MAX_QUERY], int(status), int(returned),
           via if via is not None else ("view" if view else None))
    cutoff = _cutoff(storage, retention_days)
    sqlite = _sqlite(storage)
    if sqlite is not None:

        def run() -> None:
            conn = _ensure(sqlite)
            conn.execute("INSERT INTO sharing_audit(at, principal, tenant, method, path, query, status, returned, "
                         "via) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (_text(moment), *row[1:]))
            if cutoff is not None:
                conn.execute("DELETE FROM sharing_audit WHERE at < ?", (_text(cutoff),))

        await sqlite._write(run)
        return
    db = _postgres(storage)
    await db.execute("INSERT INTO sharing_audit(at, principal, tenant, method, path, query, status, returned, via) "
                     "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", *row)
    if cutoff is not None:
        await db.execute("DELETE FROM sharing_audit WHERE at < $1", cutoff)


def _ensure(sqlite: Any) -> Any:
    """The SQLite connection of this thread, the table created once per storage."""
    conn = sqlite._conn()
    if sqlite not in _ready:
        conn.executescript(SQLITE_SCHEMA)
        _ready.add(sqlite)
    return conn


def _postgres(storage: Storage) -> Any:
    db = getattr(storage, "_db", None)
    if db is None:
        raise NgsiError("NotImplemented", "the audit log is not implemented on this store backend")
    return db()


def _cutoff(storage: Storage, retention_days: int) -> datetime | None:
    """The oldest time kept when a prune is due (at most once an hour per storage), else None."""
    now = time.monotonic()
    last = _pruned.get(storage)
    if last is not None and now - last < _PRUNE_EVERY_S:
        return None
    _pruned[storage] = now
    return datetime.fromtimestamp(time.time() - retention_days * 86400.0, UTC)


def prune_now(storage: Storage) -> None:
    """Make the next :func:`record` prune (tests, and after a policy reload)."""
    _pruned.pop(storage, None)


async def search(
    storage: Storage, *, since: datetime | None = None, principal: str | None = None, tenant: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Audit rows, newest first."""
    columns = ("at", "principal", "tenant", "method", "path", "query", "status", "returned", "via")
    sqlite = _sqlite(storage)
    filters: list[tuple[str, Any]] = [(c, v) for c, v in (("at", since), ("principal", principal),
                                                          ("tenant", tenant)) if v is not None]
    if sqlite is not None:

        def run() -> list[tuple[Any, ...]]:
            conn = _ensure(sqlite)
            where = " AND ".join(f"{c} >= ?" if c == "at" else f"{c} = ?" for c, _ in filters) or "1"
            values = [_text(v) if isinstance(v, datetime) else v for _, v in filters]
            return list(conn.execute(f"SELECT {', '.join(columns)} FROM sharing_audit WHERE {where} "
                                     "ORDER BY seq DESC LIMIT ?", [*values, limit]))

        rows = await sqlite._write(run)
    else:
        parts = []
        args: list[Any] = []
        for column, value in filters:
            args.append(value)
            parts.append(f"{column} >= ${len(args)}" if column == "at" else f"{column} = ${len(args)}")
        args.append(limit)
        select = ", ".join(c if c != "at" else "to_char(at AT TIME ZONE 'UTC', "
                           "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" for c in columns)
        rows = await _postgres(storage).fetch(
            f"SELECT {select} FROM sharing_audit WHERE {' AND '.join(parts) or 'true'} ORDER BY seq DESC "
            f"LIMIT ${len(args)}", *args)
    return [dict(zip(columns, tuple(r), strict=True)) for r in rows]


def _since(query: Mapping[str, str]) -> datetime | None:
    since = query.get("since")
    if since is None:
        return None
    try:
        moment = datetime.fromisoformat(since.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise bad_request(f"since: {since!r} is not a date-time (RFC 3339)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def add_audit_routes(app: web.Application) -> None:
    """``GET {base}/jonction/audit``: the audit log, for a global store token only."""
    from gateway.store import http
    from gateway.store.security import token_matches
    from gateway.store.settings import SETTINGS_KEY, STORAGE_KEY

    async def handler(request: web.Request) -> web.Response:
        http.check_params(request, ("since", "principal", "tenant", "limit"))
        settings = request.config_dict[SETTINGS_KEY]
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or not token_matches(token.strip(), settings.tokens):
            raise NgsiError("Unauthorized", "the audit log needs a store token valid for every tenant", 401,
                            title="Unauthorized")
        limit = http.int_param(request, "limit", 100)
        if not 1 <= limit <= MAX_ROWS:
            raise bad_request(f"limit must be between 1 and {MAX_ROWS}")
        tenant = request.query.get("tenant")
        rows = await search(request.config_dict[STORAGE_KEY], since=_since(request.query),
                            principal=request.query.get("principal"),
                            tenant="" if tenant == "-" else tenant, limit=limit)
        return web.json_response(rows)

    app.router.add_get(AUDIT_PATH, handler, allow_head=False)
