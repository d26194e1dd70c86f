"""Commands back to the field: NGSI-LD writes of commandable attributes become durable device commands.

NGSI-LD (CIM 009 V1.9.1) has no standard "command", so jonction uses the plain attribute write, the
way FIWARE IoT Agents do: ``PATCH /entities/{id}/attrs`` (update), ``POST /entities/{id}/attrs``
(append: the attribute need not exist yet), ``PATCH /entities/{id}/attrs/{attr}`` or
``POST /entityOperations/update`` on the embedded store. A 207 commands only what was written.
A write is a *command* when the source that produced the entity (recorded when its entities are
published) runs an adapter offering the :class:`~gateway.contract.CommandTarget` capability and
that adapter lists the attribute for the entity's type. Then:

* the write is stored as usual, and one row per commanded attribute is committed to the
  ``commands`` table of the gateway database *before* the 2xx goes back to the client;
* a dispatcher hands each pending command to the adapter; a ``failed`` answer with ``retry`` is
  retried with exponential backoff (the target down), across restarts (the row is on disk);
* its state is written back on the entity as the Property ``<attribute>Command`` (value
  ``pending`` | ``sent`` | ``acknowledged`` | ``failed``, sub-properties ``commandId``,
  ``requestedValue``, ``detail``, ``attempts``, ``observedAt``) and listed by
  ``GET /admin/commands?entity=&status=&tenant=``.

A write of an attribute that some running adapter can command for that entity type, on an entity
whose own source cannot command it (another adapter, or an entity no source produced), is refused
with 422 ``OperationNotSupported`` naming the attribute, the whole request unwritten (a batch
included): it is never silently lost. Any other
attribute is an ordinary write. Authorisation is the store's: the store's write auth runs for the
request, and the command's tenant is the request's ``NGSILD-Tenant``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from gateway.contract import Adapter, CommandAcknowledgements, CommandTarget
from gateway.runtime.db import Database
from gateway.store.base import Storage
from gateway.store.http import BODY_KEY, TENANT_HEADER
from gateway.store.security import token_matches
from gateway.store.settings import SETTINGS_KEY

log = logging.getLogger("jonction.runtime.commands")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS commands(
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, entity_id TEXT NOT NULL, entity_type TEXT NOT NULL,
  attribute TEXT NOT NULL, value TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
  issued_at TEXT NOT NULL, issued REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS commands_due ON commands(status, next_at);
CREATE INDEX IF NOT EXISTS commands_entity ON commands(tenant, entity_id);
CREATE TABLE IF NOT EXISTS entity_sources(
  tenant TEXT NOT NULL, entity_id TEXT NOT NULL, entity_type TEXT NOT NULL, source TEXT NOT NULL,
  PRIMARY KEY(tenant, entity_id));
"""

STATUSES: Final = ("pending", "sent", "acknowledged", "failed")
SUFFIX: Final = "Command"
"""The status Property of attribute ``a`` is ``a + SUFFIX`` (``dimmingLevelCommand``)."""
MAX_COMMAND_BYTES: Final = 64 * 1024
_SKIP: Final = frozenset({"id", "type", "@context", "scope", "createdAt", "modifiedAt"})
_ENTITY_PREFIX: Final = "/ngsi-ld/v1/entities/"
_BATCH_UPDATE: Final = "/ngsi-ld/v1/entityOperations/update"

SourceLookup = Callable[[], Mapping[str, Any]]
"""Returns the running sources by name (each with an ``.adapter``)."""


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def _value(fragment: Any) -> Any:
    """The value an attribute fragment carries (normalized ``{"value"|"object": …}`` or concise)."""
    if isinstance(fragment, Mapping):
        for key in ("value", "object", "languageMap", "valueList"):
            if key in fragment:
                return fragment[key]
    return fragment


class Commands:
    """The commands table, the NGSI-LD write interception and the dispatcher."""

    def __init__(self, db: Database, storage: Storage, sources: SourceLookup, *,
                 backoff_initial: float = 0.2, backoff_max: float = 30.0, max_age_s: float = 86400.0,
                 send_timeout_s: float = 15.0, context: str | None = None) -> None:
        self.db = db
        self.storage = storage
        self.sources = sources
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_age_s = max_age_s
        self.send_timeout_s = send_timeout_s
        self.context = context
        self.wake = asyncio.Event()
        self._bound: set[int] = set()
        self._writes: set[asyncio.Task[None]] = set()
        self._tail: asyncio.Task[None] | None = None
        db.create(SCHEMA)

    # ------------------------------------------------------------------ entity → source

    def record_sources(self, conn: sqlite3.Connection, tenant: str, items: Iterable[tuple[str, str, str]]) -> None:
        """Remember which source produced each (entity id, type) published (inside the publisher's transaction)."""
        conn.executemany(
            "INSERT INTO entity_sources(tenant, entity_id, entity_type, source) VALUES (?,?,?,?)"
            " ON CONFLICT(tenant, entity_id) DO UPDATE SET entity_type = excluded.entity_type,"
            " source = excluded.source WHERE entity_type != excluded.entity_type OR source != excluded.source",
            [(tenant, eid, etype, src) for eid, etype, src in items])

    def origin(self, tenant: str, entity_id: str) -> tuple[str, str] | None:
        """(entity type, source name) of an entity a source produced, or None."""
        row = self.db.conn.execute("SELECT entity_type, source FROM entity_sources WHERE tenant = ? AND entity_id = ?",
                                   (tenant, entity_id)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def _target(self, source: str) -> CommandTarget | None:
        sup = self.sources().get(source)
        adapter: Adapter | None = getattr(sup, "adapter", None)
        return adapter if isinstance(adapter, CommandTarget) else None

    def _commandable_anywhere(self, entity_type: str) -> set[str]:
        found: set[str] = set()
        for sup in self.sources().values():
            adapter = getattr(sup, "adapter", None)
            if isinstance(adapter, CommandTarget):
                found.update(adapter.command_attributes().get(entity_type, ()))
        return found

    # ------------------------------------------------------------------ interception

    def plan(self, tenant: str, entity_id: str, attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The commands an attribute write means; ValueError naming the attribute when it must be refused."""
        origin = self.origin(tenant, entity_id)
        names = [n for n in attrs if n not in _SKIP and not n.endswith(SUFFIX)]
        if not names:
            return []
        if origin is None:
            # No source produced it: only refuse names that are commands for some entity type.
            anywhere = set().union(*(a.command_attributes().get(t, ()) for a in self._targets()
                                     for t in a.command_attributes()))
            refused = [n for n in names if n in anywhere]
            if refused:
                raise ValueError(f"attribute {refused[0]!r} of {entity_id} is a command, but no source of this "
                                 "gateway produced the entity, so no adapter can send it to the field")
            return []
        entity_type, source = origin
        target = self._target(source)
        own = set(target.command_attributes().get(entity_type, ())) if target is not None else set()
        anywhere = self._commandable_anywhere(entity_type)
        commands = []
        for name in names:
            if name in own:
                value = _value(attrs[name])
                commands.append({"tenant": tenant, "entity_id": entity_id, "entity_type": entity_type,
                                 "attribute": name, "value": value, "source": source})
            elif name in anywhere:
                why = ("is not running" if source not in self.sources() else "cannot command it")
                raise ValueError(f"attribute {name!r} of {entity_type} {entity_id} is a command, but the entity's "
                                 f"source {source!r} {why}")
        return commands

    def _targets(self) -> list[CommandTarget]:
        return [a for a in (getattr(s, "adapter", None) for s in self.sources().values())
                if isinstance(a, CommandTarget)]

    def enqueue(self, planned: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Commit the planned commands (one transaction); older pending ones of the same attribute are superseded."""
        now = time.time()
        made = []
        with self.db.transaction() as conn:
            for cmd in planned:
                cid = str(uuid.uuid4())
                body = json.dumps(cmd["value"], ensure_ascii=False)
                if len(body) > MAX_COMMAND_BYTES:
                    raise ValueError(f"attribute {cmd['attribute']!r}: command value over {MAX_COMMAND_BYTES} bytes")
                conn.execute(
                    "UPDATE commands SET status = 'failed', detail = ?, updated = ? WHERE tenant = ? AND entity_id = ?"
                    " AND attribute = ? AND status = 'pending'",
                    (f"superseded by command {cid}", now, cmd["tenant"], cmd["entity_id"], cmd["attribute"]))
                conn.execute(
                    "INSERT INTO commands(id, tenant, entity_id, entity_type, attribute, value, source, status,"
                    " next_at, issued_at, issued, updated) VALUES (?,?,?,?,?,?,?,'pending',?,?,?,?)",
                    (cid, cmd["tenant"], cmd["entity_id"], cmd["entity_type"], cmd["attribute"], body,
                     cmd["source"], now, _utc(now), now, now))
                made.append({**cmd, "id": cid, "issued_at": _utc(now)})
        self.wake.set()
        return made

    async def intercept(self, request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Around the embedded store's attribute writes (a gateway middleware calls it; see the module docstring)."""
        writes = await _writes_of(request)
        if not writes:
            return await handler(request)
        tenant = request.headers.get(TENANT_HEADER, "")
        try:
            planned = {eid: self.plan(tenant, eid, attrs) for eid, attrs in writes.items()}
        except ValueError as exc:
            if not _authorised(request, tenant):
                return await handler(request)  # the store's own auth answers 401
            return _problem(422, "OperationNotSupported", "Operation not supported", str(exc))
        response = await handler(request)
        if response.status not in (200, 201, 204, 207) or not any(planned.values()):
            return response
        kept = [c for cmds in planned.values() for c in cmds]
        if response.status == 207:
            kept = _partial(response, kept)
        made = self.enqueue(kept)
        for cmd in made:
            log.info("command queued", extra={"command": cmd["id"], "tenant": tenant, "entity": cmd["entity_id"],
                                              "attribute": cmd["attribute"], "source": cmd["source"]})
            self._write_status(cmd, "pending", "", 0)
        return response

    # ------------------------------------------------------------------ dispatcher

    async def run(self) -> None:
        """Send due commands forever; wakes on a new command, an acknowledgement or the next retry time."""
        while True:
            self._bind_reports()
            now = time.time()
            due = self.db.conn.execute(
                "SELECT id, tenant, entity_id, entity_type, attribute, value, source, attempts, issued_at, issued"
                " FROM commands WHERE status = 'pending' AND next_at <= ? ORDER BY issued LIMIT 100", (now,)
            ).fetchall()
            for row in due:
                await self._attempt(row)
            nxt = self.db.conn.execute("SELECT MIN(next_at) FROM commands WHERE status = 'pending'").fetchone()[0]
            delay = 1.0 if nxt is None else max(0.0, min(1.0, float(nxt) - time.time()))
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    def _bind_reports(self) -> None:
        for sup in self.sources().values():
            adapter = getattr(sup, "adapter", None)
            if isinstance(adapter, CommandAcknowledgements) and id(adapter) not in self._bound:
                adapter.bind_command_reports(self.report)
                self._bound.add(id(adapter))

    async def _attempt(self, row: Sequence[Any]) -> None:
        cid, tenant, eid, etype, attr, value, source, attempts, issued_at, issued = row
        cmd = {"id": cid, "tenant": tenant, "entity_id": eid, "entity_type": etype, "attribute": attr,
               "value": json.loads(value), "issued_at": issued_at}
        attempts = int(attempts) + 1
        if time.time() - float(issued) > self.max_age_s:
            self._set(cmd, "failed", f"not delivered within {self.max_age_s:.0f} s", attempts - 1)
            return
        target = self._target(source)
        if target is None:
            result: Mapping[str, Any] = {"status": "failed", "retry": True,
                                         "detail": f"source {source!r} is not running"}
        else:
            try:
                result = await asyncio.wait_for(target.send_command(cmd), self.send_timeout_s)
            except Exception as exc:  # an adapter bug or a hang must not stop the dispatcher
                result = {"status": "failed", "retry": True, "detail": f"{type(exc).__name__}: {exc}"}
        status = str(result.get("status"))
        detail = str(result.get("detail", ""))[:500]
        if status in ("sent", "acknowledged"):
            self._set(cmd, status, detail, attempts)
        elif result.get("retry"):
            delay = min(self.backoff_max, self.backoff_initial * 2 ** (attempts - 1))
            with self.db.transaction() as conn:
                conn.execute("UPDATE commands SET attempts = ?, detail = ?, next_at = ?, updated = ? WHERE id = ?"
                             " AND status = 'pending'", (attempts, detail, time.time() + delay, time.time(), cid))
            if attempts == 1:
                log.warning("command %s not delivered, retrying: %s", cid, detail, extra={"command": cid})
                self._write_status(cmd, "pending", detail, attempts)
        else:
            self._set(cmd, "failed", detail or "refused by the target", attempts)

    def _set(self, cmd: Mapping[str, Any], status: str, detail: str, attempts: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE commands SET status = ?, detail = ?, attempts = ?, updated = ? WHERE id = ?",
                         (status, detail, attempts, time.time(), cmd["id"]))
        level = logging.WARNING if status == "failed" else logging.INFO
        log.log(level, "command %s %s", cmd["id"], status, extra={"command": cmd["id"], "detail": detail})
        self._write_status(cmd, status, detail, attempts)

    def report(self, command_id: str, result: Mapping[str, Any]) -> None:
        """An adapter's field acknowledgement (``acknowledged`` or ``failed``) of a command it sent."""
        row = self.db.conn.execute(
            "SELECT id, tenant, entity_id, entity_type, attribute, value, attempts, status FROM commands WHERE id = ?",
            (command_id,)).fetchone()
        status = str(result.get("status"))
        if row is None or row[7] in ("acknowledged", "failed") or status not in ("acknowledged", "failed"):
            return
        cmd = {"id": row[0], "tenant": row[1], "entity_id": row[2], "entity_type": row[3], "attribute": row[4],
               "value": json.loads(row[5])}
        self._set(cmd, status, str(result.get("detail", ""))[:500], int(row[6]))

    # ------------------------------------------------------------------ visibility

    def _write_status(self, cmd: Mapping[str, Any], status: str, detail: str, attempts: int) -> None:
        """Write ``<attribute>Command`` on the entity (in the background: the dispatcher never waits for the store)."""
        now = _utc(time.time())
        attr = {"type": "Property", "value": status, "observedAt": now,
                "commandId": {"type": "Property", "value": cmd["id"]},
                "requestedValue": {"type": "Property", "value": cmd["value"]},
                "attempts": {"type": "Property", "value": attempts}}
        if detail:
            attr["detail"] = {"type": "Property", "value": detail}
        entity = {"id": cmd["entity_id"], "type": cmd["entity_type"], f"{cmd['attribute']}{SUFFIX}": attr}

        previous = self._tail

        async def write() -> None:
            if previous is not None:
                # One after the other: a late "pending" must never overwrite the "sent" that followed it.
                await asyncio.wait([previous])
            try:
                await self.storage.upsert(str(cmd["tenant"]), [entity], context=self.context, mode="update")
            except Exception as exc:  # the table keeps the truth; the entity catches up on the next change
                log.warning("command %s: status not written on the entity: %s", cmd["id"], exc)

        task = asyncio.get_running_loop().create_task(write())
        self._tail = task
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def settle(self) -> None:
        """Wait for the status writes in flight (shutdown)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def prune(self, keep_s: float = 30 * 86400.0) -> int:
        """Forget finished commands (acknowledged, failed) older than ``keep_s``; the count removed."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM commands WHERE status IN ('acknowledged', 'failed') AND updated < ?",
                               (time.time() - keep_s,))
        return int(cur.rowcount)

    def listing(self, *, tenant: str | None = None, entity: str | None = None, status: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
        """Commands, newest first, filtered."""
        where, args = [], []
        for column, value in (("tenant", tenant), ("entity_id", entity), ("status", status)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = ("SELECT id, tenant, entity_id, entity_type, attribute, value, source, status, detail, attempts,"
               " issued_at, updated FROM commands" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY issued DESC LIMIT ?")
        rows = self.db.conn.execute(sql, (*args, max(1, min(limit, 1000)))).fetchall()
        return [{"id": r[0], "tenant": r[1], "entityId": r[2], "entityType": r[3], "attribute": r[4],
                 "value": json.loads(r[5]), "source": r[6], "status": r[7], "detail": r[8], "attempts": r[9],
                 "issuedAt": r[10], "updatedAt": _utc(float(r[11]))} for r in rows]


def _partial(response: web.StreamResponse, planned: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The planned commands whose write succeeded, from a 207 (batch ``success``, or the attributes not
    in ``notUpdated``, whose names the store gives expanded)."""
    body = response.body if isinstance(response, web.Response) else None
    try:
        doc = json.loads(bytes(body)) if isinstance(body, bytes | bytearray) else None
    except ValueError:
        doc = None
    if not isinstance(doc, Mapping):
        return []
    if "success" in doc:
        ok = set(doc.get("success") or ())
        return [c for c in planned if c["entity_id"] in ok]
    failed = [str(f.get("attributeName", "")) for f in doc.get("notUpdated") or () if isinstance(f, Mapping)]

    def refused(name: str) -> bool:
        return any(f == name or f.endswith(("/" + name, "#" + name, ":" + name)) for f in failed)

    return [c for c in planned if not refused(str(c["attribute"]))]


async def _writes_of(request: web.Request) -> dict[str, dict[str, Any]]:
    """Entity id → attribute fragments written, for the store writes that may be commands ({} otherwise)."""
    path = request.path
    if request.method in ("PATCH", "POST") and path.startswith(_ENTITY_PREFIX) and "/attrs" in path:
        entity_id, _, rest = path[len(_ENTITY_PREFIX):].partition("/attrs")
        if request.method == "POST" and rest not in ("", "/"):
            return {}
        body = await _json(request)
        if rest in ("", "/"):
            return {entity_id: dict(body)} if isinstance(body, Mapping) else {}
        attr = rest.lstrip("/")
        return {entity_id: {attr: body}} if attr and "/" not in attr else {}
    if request.method == "POST" and path.rstrip("/") == _BATCH_UPDATE:
        body = await _json(request)
        if isinstance(body, list):
            return {str(e["id"]): dict(e) for e in body if isinstance(e, Mapping) and isinstance(e.get("id"), str)}
    return {}


async def _json(request: web.Request) -> Any:
    """The write's JSON body, read once and left for the store's handler (None: the store answers the error)."""
    settings = next((app[SETTINGS_KEY] for app in request.match_info.apps if SETTINGS_KEY in app), None)
    length = request.content_length
    if settings is None or length is None or length > settings.max_body_bytes or request.content_type not in (
            "application/json", "application/ld+json"):
        return None  # the store answers 411, 413 or 415 itself
    try:
        raw = request.get(BODY_KEY) or await request.content.readexactly(length)
    except Exception:  # IncompleteReadError, connection reset: the store reports the short body
        return None
    request[BODY_KEY] = raw
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None  # the store answers its own 400


def _authorised(request: web.Request, tenant: str) -> bool:
    """Whether the store's write auth would let this request through (so a refusal never leaks to strangers)."""
    settings = next((app[SETTINGS_KEY] for app in request.match_info.apps if SETTINGS_KEY in app), None)
    if settings is None or not settings.requires_auth:
        return True
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    accepted = settings.tokens | settings.tenant_tokens.get(tenant, frozenset())
    return scheme.lower() == "bearer" and bool(token.strip()) and token_matches(token.strip(), accepted)


def _problem(status: int, kind: str, title: str, detail: str) -> web.Response:
    body = {"type": f"https://uri.etsi.org/ngsi-ld/errors/{kind}", "title": title, "status": status, "detail": detail}
    return web.json_response(body, status=status, content_type="application/problem+json")


def listing_response(commands: Commands | None, query: Mapping[str, str]) -> web.Response:
    """``GET /admin/commands?entity=&status=&tenant=&limit=``: the command log, newest first."""
    if commands is None:
        return _problem(404, "ResourceNotFound", "Not found", "commands need the embedded store")
    status = query.get("status")
    if status is not None and status not in STATUSES:
        return _problem(400, "BadRequestData", "Bad request", f"status: one of {', '.join(STATUSES)}")
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        return _problem(400, "BadRequestData", "Bad request", "limit: an integer")
    items = commands.listing(tenant=query.get("tenant"), entity=query.get("entity"), status=status, limit=limit)
    return web.json_response({"commands": items})
