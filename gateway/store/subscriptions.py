"""NGSI-LD subscriptions and notifications (ETSI GS CIM 009 V1.9.1 §5.2.12, §5.8, §5.11).

Subscriptions live in the store's SQLite file (table ``subscriptions``, tenant-scoped) and in
memory for matching. The store calls our listener after each commit; the listener only queues
the events, so the write path never waits for matching or delivery. A background dispatcher
matches events against subscriptions (type, id/idPattern, watchedAttributes, q, scopeQ, geoQ,
notificationTrigger), renders the entities with the subscription's @context and format, and
POSTs a Notification to the endpoint with bounded exponential-backoff retries, one delivery at
a time per subscription (so a receiver sees notifications in commit order). ``timeInterval``
subscriptions are notified periodically with every matching entity instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from aiohttp import web

from gateway import model
from gateway.store import api, jsonld
from gateway.store.base import ChangeEvent, QuerySpec, Storage
from gateway.store.geo import GeoQuery, parse_geo_query
from gateway.store.history import Database
from gateway.store.patterns import Matcher, compile_user_pattern
from gateway.store.problems import NgsiError, bad_request
from gateway.store.query import QExpr, ScopeExpr, TypeExpr, TypeName, parse_q, parse_scope_q, parse_type_expression
from gateway.store.representation import RenderOptions, render

log = logging.getLogger("jonction.store.subscriptions")

SCHEMA_SQL: Final = """
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
"""
"""The subscriptions table: one JSON document per subscription (definition + delivery state)."""

TRIGGERS: Final = frozenset(
    {"entityCreated", "entityUpdated", "entityDeleted", "attributeCreated", "attributeUpdated", "attributeDeleted"}
)
DEFAULT_TRIGGERS: Final = frozenset({"entityCreated", "entityUpdated", "attributeCreated", "attributeUpdated"})
"""§5.2.12: the triggers of a subscription that names none (deletions are opt-in)."""
FORMATS: Final = frozenset({"normalized", "keyValues", "concise"})
ACCEPTS: Final = frozenset({"application/json", "application/ld+json"})
MAX_SUBSCRIPTIONS_PER_TENANT: Final = 1000
MAX_ENTITIES_PER_NOTIFICATION: Final = 1000
_MEMBERS: Final = frozenset(
    {
        "id", "type", "subscriptionName", "description", "entities", "watchedAttributes", "notificationTrigger",
        "timeInterval", "q", "geoQ", "csf", "scopeQ", "lang", "isActive", "notification", "expiresAt",
        "throttling", "temporalQ", "@context", "jsonldContext", "status", "createdAt", "modifiedAt",
    }
)
_READ_ONLY: Final = frozenset({"status", "createdAt", "modifiedAt"})
_NOTIFICATION_MEMBERS: Final = frozenset(
    {
        "attributes", "format", "endpoint", "sysAttrs", "showChanges", "status", "timesSent", "timesFailed",
        "lastNotification", "lastFailure", "lastSuccess",
    }
)
LINK_REL: Final = "http://www.w3.org/ns/json-ld#context"
_STATS: Final = ("timesSent", "timesFailed", "lastNotification", "lastFailure", "lastSuccess")


def _now() -> str:
    return model.format_time(datetime.now(UTC))


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the subscriptions table if it does not exist."""
    conn.executescript(SCHEMA_SQL)


# --------------------------------------------------------------------------- the subscription


@dataclass(slots=True)
class EntityInfo:
    """One member of ``entities``: a type IRI and optionally an id or an id pattern."""

    type: str
    """The type IRI, or the text of a type expression (``A,B``, ``(A;B)|C``) when ``expression`` is set."""
    id: str | None = None
    id_pattern: str | None = None
    pattern: Matcher | None = None
    expression: TypeExpr | None = None
    expand: Callable[[str], str] | None = None
    iris: frozenset[str] = frozenset()
    """Every type IRI the selector names (the storage prefilter)."""

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """True when the stored document is selected."""
        types = doc.get("type") or []
        if self.expression is not None and self.expand is not None:
            if not self.expression.matches(types, self.expand):
                return False
        elif self.type not in types:
            return False
        if self.id is not None and doc.get("id") != self.id:
            return False
        return not (self.pattern is not None and not self.pattern.search(str(doc.get("id"))))


@dataclass(slots=True)
class Subscription:
    """A validated subscription: its definition (types and attributes expanded) and delivery state."""

    id: str
    tenant: str
    context: list[jsonld.ContextEntry]
    """The @context the subscription was created with: terms in q and in notifications use it."""
    definition: dict[str, Any]
    """The members as sent (compacted terms), minus @context and read-only members."""
    entities: list[EntityInfo] = field(default_factory=list)
    watched: list[str] | None = None
    triggers: frozenset[str] = DEFAULT_TRIGGERS
    time_interval: float | None = None
    throttling: float | None = None
    q: QExpr | None = None
    scope_q: ScopeExpr | None = None
    geo: GeoQuery | None = None
    geo_iri: str | None = None
    attributes: list[str] | None = None
    format: str = "normalized"
    sys_attrs: bool = False
    endpoint: str = ""
    accept: str = "application/json"
    receiver_info: list[tuple[str, str]] = field(default_factory=list)
    is_active: bool = True
    expires_at: str | None = None
    created_at: str = ""
    modified_at: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    ctx: jsonld.Context | None = None
    """The creation @context: expands the terms of the subscription (q, attributes...)."""
    notify_ctx: jsonld.Context | None = None
    """The @context notifications are compacted with (``jsonldContext`` when given)."""
    notify_link: str = ""
    """The IRI put in the notifications' Link header (application/json)."""
    last_sent: float = -1e18
    """Monotonic time of the last notification, for throttling (not persisted)."""
    next_due: float = 0.0
    """Monotonic time the next periodic notification is due (timeInterval subscriptions)."""

    @property
    def status(self) -> str:
        """active, paused or expired (§5.2.12, read-only)."""
        # compared as instants: RFC 3339 texts with and without fractions do not sort as strings
        if self.expires_at is not None and model.parse_time(self.expires_at) <= datetime.now(UTC):
            return "expired"
        return "active" if self.is_active else "paused"

    def to_json(self, ctx: jsonld.Context) -> dict[str, Any]:
        """The subscription as the API shows it, terms compacted with the request's context."""
        out = dict(self.definition)
        out["id"] = self.id
        out["type"] = "Subscription"
        if self.entities:
            entities = []
            for info in self.entities:
                item: dict[str, Any] = {"type": info.type if info.expression else ctx.compact_iri(info.type)}
                if info.id is not None:
                    item["id"] = info.id
                if info.id_pattern is not None:
                    item["idPattern"] = info.id_pattern
                entities.append(item)
            out["entities"] = entities
        if self.watched is not None:
            out["watchedAttributes"] = [ctx.compact_iri(a) for a in self.watched]
        if self.geo is not None and self.geo_iri is not None and "geoQ" in out:
            out["geoQ"] = {**out["geoQ"], "geoproperty": ctx.compact_iri(self.geo_iri)}
        notification = dict(out.get("notification") or {})
        if self.attributes is not None:
            notification["attributes"] = [ctx.compact_iri(a) for a in self.attributes]
        notification["format"] = self.format
        for name in _STATS:
            if self.stats.get(name) is not None:
                notification[name] = self.stats[name]
        if "status" in self.stats:
            notification["status"] = self.stats["status"]
        out["notification"] = notification
        out["isActive"] = self.is_active
        out["status"] = self.status
        out["createdAt"] = self.created_at
        out["modifiedAt"] = self.modified_at
        return out

    def stored(self) -> dict[str, Any]:
        """What the subscriptions table keeps."""
        return {
            "definition": self.definition,
            "context": self.context,
            "createdAt": self.created_at,
            "modifiedAt": self.modified_at,
            "stats": self.stats,
        }


def _fail(pointer: str, message: str) -> NgsiError:
    return bad_request(f"{pointer}: {message}")


def _positive_number(value: Any, pointer: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _fail(pointer, "must be a number greater than 0 (seconds)")
    return float(value)


def _string_list(value: Any, pointer: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(pointer, "must be a non-empty array of names")
    return list(dict.fromkeys(value))


def build(
    body: Mapping[str, Any],
    tenant: str,
    context: Sequence[jsonld.ContextEntry],
    contexts: jsonld.ContextCache,
    *,
    created_at: str | None = None,
    stats: Mapping[str, Any] | None = None,
) -> Subscription:
    """Validate a subscription (§5.2.12) and build it; raise BadRequestData naming the member."""
    if not isinstance(body, Mapping):
        raise bad_request("the subscription must be a JSON object")
    unknown = sorted(set(body) - _MEMBERS)
    if unknown:
        raise _fail(f"/{unknown[0]}", "is not a member of a Subscription")
    if body.get("type", "Subscription") != "Subscription":
        raise _fail("/type", "must be 'Subscription'")
    sub_id = body.get("id") or f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"
    if not model.is_uri(sub_id):
        raise _fail("/id", f"{sub_id!r} is not a URI")
    ctx = contexts.get(list(context))
    now = _now()
    for name in ("subscriptionName", "description", "lang", "jsonldContext"):
        if name in body and not isinstance(body[name], str):
            raise _fail(f"/{name}", "must be a string")
    definition = {k: v for k, v in body.items() if k not in _READ_ONLY and k not in ("@context", "id", "type")}
    sub = Subscription(
        id=sub_id,
        tenant=tenant,
        context=list(context),
        definition=definition,
        created_at=created_at or now,
        modified_at=now,
        stats=dict(stats or {}),
        ctx=ctx,
    )
    entities = body.get("entities")
    if entities is not None:
        if not isinstance(entities, list) or not entities:
            raise _fail("/entities", "must be a non-empty array of EntitySelectors")
        for i, item in enumerate(entities):
            where = f"/entities/{i}"
            if not isinstance(item, Mapping):
                raise _fail(where, "must be an object with type (and id or idPattern)")
            extra = sorted(set(item) - {"type", "id", "idPattern"})
            if extra:
                raise _fail(f"{where}/{extra[0]}", "is not a member of an EntitySelector")
            entity_type = item.get("type")
            if not isinstance(entity_type, str) or not entity_type:
                raise _fail(f"{where}/type", "an EntitySelector needs a type")
            entity_id = item.get("id")
            if entity_id is not None and not model.is_uri(entity_id):
                raise _fail(f"{where}/id", f"{entity_id!r} is not a URI")
            id_pattern = item.get("idPattern")
            pattern = None
            if id_pattern is not None:
                if not isinstance(id_pattern, str) or len(id_pattern) > 256:
                    raise _fail(f"{where}/idPattern", "must be a regular expression of at most 256 characters")
                # RE2, linear time: this pattern runs on every write the subscription watches
                pattern = compile_user_pattern(id_pattern, f"{where}/idPattern")
            texpr = parse_type_expression(entity_type)
            if isinstance(texpr.root, TypeName):
                iri = ctx.expand_term(entity_type)
                sub.entities.append(EntityInfo(iri, entity_id, id_pattern, pattern, iris=frozenset([iri])))
            else:
                sub.entities.append(EntityInfo(
                    entity_type, entity_id, id_pattern, pattern, texpr, ctx.expand_term,
                    frozenset(ctx.expand_term(t) for t in texpr.types()),
                ))
    if "watchedAttributes" in body:
        sub.watched = [ctx.expand_term(a) for a in _string_list(body["watchedAttributes"], "/watchedAttributes")]
    if not sub.entities and sub.watched is None:
        raise bad_request("a subscription needs entities or watchedAttributes (or both)")
    if "notificationTrigger" in body:
        triggers = _string_list(body["notificationTrigger"], "/notificationTrigger")
        bad = [t for t in triggers if t not in TRIGGERS]
        if bad:
            raise _fail("/notificationTrigger", f"{bad[0]!r} is not one of {', '.join(sorted(TRIGGERS))}")
        sub.triggers = frozenset(triggers)
    if "timeInterval" in body:
        sub.time_interval = _positive_number(body["timeInterval"], "/timeInterval")
        if sub.watched is not None:
            raise bad_request("timeInterval and watchedAttributes cannot be combined")
    if "throttling" in body:
        sub.throttling = _positive_number(body["throttling"], "/throttling")
        if sub.time_interval is not None:
            raise bad_request("timeInterval and throttling cannot be combined")
    if "q" in body:
        if not isinstance(body["q"], str):
            raise _fail("/q", "must be a string")
        sub.q = parse_q(body["q"])
    if "scopeQ" in body:
        if not isinstance(body["scopeQ"], str):
            raise _fail("/scopeQ", "must be a string")
        sub.scope_q = parse_scope_q(body["scopeQ"])
    if "geoQ" in body:
        geo_q = body["geoQ"]
        if not isinstance(geo_q, Mapping):
            raise _fail("/geoQ", "must be an object with geometry, coordinates and georel")
        coordinates = geo_q.get("coordinates")
        sub.geo = parse_geo_query(
            geo_q.get("georel"),
            geo_q.get("geometry"),
            coordinates if isinstance(coordinates, str | list) else None,
            geo_q.get("geoproperty") or "location",
        )
        sub.geo_iri = ctx.expand_term(sub.geo.geoproperty)
    for name in ("temporalQ", "csf"):
        if name in body:
            raise NgsiError("NotImplemented", f"/{name}: not supported by this store")
    if "isActive" in body:
        if not isinstance(body["isActive"], bool):
            raise _fail("/isActive", "must be true or false")
        sub.is_active = body["isActive"]
    if "expiresAt" in body:
        try:
            sub.expires_at = model.utc_time(body["expiresAt"])
        except (model.ModelError, TypeError):
            raise _fail("/expiresAt", "must be an RFC 3339 date-time with a time zone") from None
    _notification(sub, body.get("notification"), ctx)
    _notification_context(sub, body.get("jsonldContext"), contexts)
    return sub


def _notification_context(sub: Subscription, jsonld_context: Any, contexts: jsonld.ContextCache) -> None:
    """Pick the @context notifications use, so that the Link header always names it."""
    if jsonld_context is not None:
        if not model.is_uri(jsonld_context):
            raise _fail("/jsonldContext", f"{jsonld_context!r} is not a URI")
        sub.notify_ctx = contexts.get([jsonld_context])
        sub.notify_link = str(jsonld_context)
    elif len(sub.context) == 1 and isinstance(sub.context[0], str):
        sub.notify_ctx, sub.notify_link = sub.ctx, sub.context[0]
    elif not sub.context or sub.accept == "application/ld+json":
        # no context (core only), or an inline one that travels in the notification body
        sub.notify_ctx, sub.notify_link = sub.ctx, jsonld.core_context_iri()
    else:
        # an inline context cannot be linked: compact with the core context (full IRIs) instead
        sub.notify_ctx, sub.notify_link = contexts.get([]), jsonld.core_context_iri()


def _notification(sub: Subscription, value: Any, ctx: jsonld.Context) -> None:
    if not isinstance(value, Mapping):
        raise _fail("/notification", "is required (an object with an endpoint)")
    extra = sorted(set(value) - _NOTIFICATION_MEMBERS)
    if extra:
        raise _fail(f"/notification/{extra[0]}", "is not a member of NotificationParams")
    if "attributes" in value:
        sub.attributes = [ctx.expand_term(a) for a in _string_list(value["attributes"], "/notification/attributes")]
    fmt = value.get("format", "normalized")
    if fmt not in FORMATS:
        raise _fail("/notification/format", f"{fmt!r} is not one of {', '.join(sorted(FORMATS))}")
    sub.format = str(fmt)
    sys_attrs = value.get("sysAttrs", False)
    if not isinstance(sys_attrs, bool):
        raise _fail("/notification/sysAttrs", "must be true or false")
    sub.sys_attrs = sys_attrs
    endpoint = value.get("endpoint")
    if not isinstance(endpoint, Mapping):
        raise _fail("/notification/endpoint", "is required (an object with a uri)")
    uri = endpoint.get("uri")
    if not model.is_uri(uri):
        raise _fail("/notification/endpoint/uri", f"{uri!r} is not a URI")
    scheme = str(uri).split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise NgsiError(
            "NotImplemented", f"/notification/endpoint/uri: {scheme} endpoints are not supported (http and https are)"
        )
    sub.endpoint = str(uri)
    accept = endpoint.get("accept", "application/json")
    if accept not in ACCEPTS:
        raise _fail("/notification/endpoint/accept", f"{accept!r} is not one of {', '.join(sorted(ACCEPTS))}")
    sub.accept = str(accept)
    info = endpoint.get("receiverInfo", [])
    if not isinstance(info, list) or not all(
        isinstance(i, Mapping) and isinstance(i.get("key"), str) and isinstance(i.get("value"), str) for i in info
    ):
        raise _fail("/notification/endpoint/receiverInfo", "must be an array of {key, value} strings")
    sub.receiver_info = [(str(i["key"]), str(i["value"])) for i in info]
    if "notifierInfo" in endpoint:
        raise NgsiError("NotImplemented", "/notification/endpoint/notifierInfo: not supported by this store")


# --------------------------------------------------------------------------- matching


def _without_created(insts: Any) -> Any:
    # modifiedAt stays in the comparison: an attribute written again with the same value is an
    # update (the store stamps it), as NGSI-LD brokers notify it
    if not isinstance(insts, list):
        return insts
    return [{k: v for k, v in i.items() if k != "createdAt"} for i in insts]


def _changed_attrs(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> tuple[set[str], set[str], set[str]]:
    """(created, updated, deleted) attribute IRIs between two stored documents."""
    skip = {"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"}
    old = {k: v for k, v in (before or {}).items() if k not in skip}
    new = {k: v for k, v in (after or {}).items() if k not in skip}
    created = set(new) - set(old)
    deleted = set(old) - set(new)
    updated = {k for k in set(new) & set(old) if _without_created(new[k]) != _without_created(old[k])}
    if before is not None and after is not None and before.get("scope") != after.get("scope"):
        updated.add("scope")
    return created, updated, deleted


def _selected(sub: Subscription, doc: Mapping[str, Any]) -> bool:
    """Entity selection and filters (not the trigger): entities, q, scopeQ, geoQ."""
    if sub.entities and not any(info.matches(doc) for info in sub.entities):
        return False
    ctx = sub.ctx
    assert ctx is not None
    if sub.q is not None and not sub.q.evaluate(doc, ctx.expand_term):
        return False
    if sub.scope_q is not None and not sub.scope_q.matches(doc.get("scope")):
        return False
    if sub.geo is not None:
        insts = doc.get(sub.geo_iri or "") or []
        if not any(isinstance(i, Mapping) and sub.geo.matches(i.get("value")) for i in insts):
            return False
    return True


def triggered(sub: Subscription, event: ChangeEvent) -> bool:
    """True when this committed change must be notified to ``sub`` (§5.11)."""
    if sub.time_interval is not None or sub.status != "active" or event.tenant != sub.tenant:
        return False
    before, after = event.before, event.after
    if after is None:
        if "entityDeleted" not in sub.triggers or before is None:
            return False
        return _selected(sub, before)
    if not _selected(sub, after):
        return False
    if before is None:
        if "entityCreated" not in sub.triggers and "attributeCreated" not in sub.triggers:
            return False
        return sub.watched is None or any(a in after for a in sub.watched)
    created, updated, deleted = _changed_attrs(before, after)
    relevant: set[str] = set()
    if "attributeCreated" in sub.triggers or "entityUpdated" in sub.triggers:
        relevant |= created
    if "attributeUpdated" in sub.triggers or "entityUpdated" in sub.triggers:
        relevant |= updated
    if "attributeDeleted" in sub.triggers or "entityUpdated" in sub.triggers:
        relevant |= deleted
    if sub.watched is None:
        return bool(relevant)
    return any(a in relevant for a in sub.watched)


# --------------------------------------------------------------------------- the notifier


@dataclass(slots=True)
class _Delivery:
    sub: Subscription
    docs: list[Mapping[str, Any]]
    deleted: list[Mapping[str, Any]] = field(default_factory=list)
    before: list[Mapping[str, Any] | None] = field(default_factory=list)
    """The previous state of each of ``docs`` (for showChanges), when known."""


class Notifier:
    """Registry of subscriptions, change dispatcher and HTTP notification sender."""

    retry_delays: tuple[float, ...] = (0.5, 2.0, 8.0)
    """Waits before each retry of a failed notification (bounded: then it is given up)."""
    timeout: float = 10.0
    """Seconds a receiver has to answer one notification."""
    queue_size: int = 10_000
    """Commits waiting for matching; beyond, events are dropped (and logged)."""
    tick: float = 1.0
    """How often periodic (timeInterval) subscriptions are checked, seconds."""
    max_pending: int = 100
    """Notifications waiting for one subscription; beyond (a dead or slow receiver), new ones are
    dropped and reported as failures, so memory stays bounded."""

    def __init__(self, storage: Storage, db: Database | None) -> None:
        self.storage = storage
        self.db = db
        self.subs: dict[tuple[str, str], Subscription] = {}
        self._queue: asyncio.Queue[Sequence[ChangeEvent]] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._pending: dict[tuple[str, str], int] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropped = 0

    # -- persistence -----------------------------------------------------------------

    async def load(self) -> None:
        """Read every stored subscription into memory."""
        if self.db is None:
            return

        def run(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
            return list(conn.execute("SELECT tenant, id, doc FROM subscriptions"))

        for tenant, sub_id, doc in await self.db.read(run):
            stored = json.loads(doc)
            try:
                sub = build(
                    {**stored["definition"], "id": sub_id},
                    tenant,
                    stored["context"],
                    self.storage_contexts(),
                    created_at=stored.get("createdAt"),
                    stats=stored.get("stats"),
                )
            except NgsiError as exc:  # e.g. a hosted @context that is gone
                log.warning("subscription %s of tenant %r cannot be loaded: %s", sub_id, tenant, exc.detail)
                continue
            sub.modified_at = stored.get("modifiedAt", sub.modified_at)
            self.subs[(tenant, sub_id)] = sub

    def storage_contexts(self) -> jsonld.ContextCache:
        """The store's context cache (resolves hosted contexts)."""
        cache = getattr(self.storage, "contexts", None)
        return cache if isinstance(cache, jsonld.ContextCache) else jsonld.ContextCache()

    async def save(self, sub: Subscription) -> None:
        """Persist one subscription (definition and delivery state)."""
        if self.db is None:
            return
        doc = json.dumps(sub.stored(), separators=(",", ":"))
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO subscriptions (tenant, id, doc) VALUES (?, ?, ?)", (sub.tenant, sub.id, doc)
            )
        )

    async def remove(self, tenant: str, sub_id: str) -> bool:
        """Delete a subscription; False when unknown."""
        sub = self.subs.pop((tenant, sub_id), None)
        self._locks.pop((tenant, sub_id), None)
        if self.db is not None:
            await self.db.write(
                lambda conn: conn.execute("DELETE FROM subscriptions WHERE tenant=? AND id=?", (tenant, sub_id))
            )
        return sub is not None

    async def add(self, sub: Subscription) -> None:
        """Register and persist a new or changed subscription."""
        key = (sub.tenant, sub.id)
        if key not in self.subs and sum(1 for t, _ in self.subs if t == sub.tenant) >= MAX_SUBSCRIPTIONS_PER_TENANT:
            raise NgsiError("TooManyResults", f"a tenant may hold at most {MAX_SUBSCRIPTIONS_PER_TENANT} subscriptions")
        previous = self.subs.get(key)
        if previous is not None:
            sub.last_sent = previous.last_sent
        sub.next_due = time.monotonic()
        self.subs[key] = sub
        await self.save(sub)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Create the queue, the HTTP client and the background tasks."""
        self._queue = asyncio.Queue(self.queue_size)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._spawn(self._dispatch_loop())
        self._spawn(self._periodic_loop())

    async def stop(self) -> None:
        """Stop the background tasks (pending deliveries are abandoned) and close the client."""
        self._queue = None  # the store keeps its listeners: later events are ignored
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.flush()

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the listener ------------------------------------------------------------------

    async def on_change(self, events: Sequence[ChangeEvent]) -> None:
        """The store's listener: queue the events and return at once."""
        if self._queue is None or not self.subs:
            return
        try:
            self._queue.put_nowait(events)
        except asyncio.QueueFull:
            self._dropped += len(events)
            log.warning("notification queue full: %d change events dropped so far", self._dropped)

    async def _dispatch_loop(self) -> None:
        assert self._queue is not None
        while True:
            events = await self._queue.get()
            try:
                self.dispatch(events)
            except Exception:  # one bad subscription or event must not stop notifications
                log.exception("matching change events against subscriptions failed")

    def dispatch(self, events: Sequence[ChangeEvent]) -> None:
        """Match events against every subscription and schedule one delivery per subscription."""
        for sub in list(self.subs.values()):
            docs: list[Mapping[str, Any]] = []
            before: list[Mapping[str, Any] | None] = []
            deleted: list[Mapping[str, Any]] = []
            for event in events:
                if not triggered(sub, event):
                    continue
                if event.after is None and event.before is not None:
                    deleted.append(event.before)
                elif event.after is not None:
                    docs.append(event.after)
                    before.append(event.before)
            if not docs and not deleted:
                continue
            if sub.throttling is not None:
                now = time.monotonic()
                if now - sub.last_sent < sub.throttling:
                    continue  # §5.2.12: within the throttling period, changes are not notified
                sub.last_sent = now
            size = MAX_ENTITIES_PER_NOTIFICATION
            for start in range(0, max(len(docs), 1), size):
                chunk_deleted = deleted[:size] if start == 0 else []
                self._spawn(self._deliver(
                    _Delivery(sub, docs[start : start + size], chunk_deleted, before[start : start + size])
                ))
            for start in range(size, len(deleted), size):
                self._spawn(self._deliver(_Delivery(sub, [], deleted[start : start + size])))

    async def flush(self) -> None:
        """Persist the delivery state of the subscriptions that notified since the last flush."""
        for key in list(self._dirty):
            sub = self.subs.get(key)
            if sub is None:
                self._dirty.discard(key)
                continue
            try:
                await self.save(sub)
            except Exception:  # the state is in memory; persisting it is best effort
                log.exception("saving the delivery state of %s failed", sub.id)
            # only once saved: a flush cancelled by shutdown leaves the rest for the final flush
            self._dirty.discard(key)

    async def _periodic_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            await self.flush()
            now = time.monotonic()
            for sub in list(self.subs.values()):
                if sub.time_interval is None or sub.status != "active" or now < sub.next_due:
                    continue
                sub.next_due = now + sub.time_interval
                try:
                    docs = await self.matching_entities(sub)
                except Exception:
                    log.exception("periodic subscription %s: query failed", sub.id)
                    continue
                if docs:
                    self._spawn(self._deliver(_Delivery(sub, docs)))

    async def matching_entities(self, sub: Subscription) -> list[Mapping[str, Any]]:
        """Every entity currently matching a subscription (for periodic notifications)."""
        if not await self.storage.tenant_exists(sub.tenant):
            return []
        spec = QuerySpec(
            types=sorted({iri for info in sub.entities for iri in info.iris}) or None,
            attrs=sub.watched,
            predicate=lambda doc: _selected(sub, doc),
            limit=MAX_ENTITIES_PER_NOTIFICATION,
        )
        if sub.geo is not None:
            spec.bbox = sub.geo.bbox()
            spec.geoproperty = sub.geo_iri
        result = await self.storage.query(sub.tenant, spec)
        return list(result.docs)

    # -- delivery ------------------------------------------------------------------------

    def render(
        self,
        sub: Subscription,
        docs: Sequence[Mapping[str, Any]],
        before: Sequence[Mapping[str, Any] | None] = (),
    ) -> list[dict[str, Any]]:
        """The entities of a notification, in the subscription's format and @context."""
        if before and (sub.definition.get("notification") or {}).get("showChanges") is True:
            docs = [_with_previous(doc, old) for doc, old in zip(docs, before, strict=False)]
        ctx = sub.notify_ctx
        assert ctx is not None
        opts = RenderOptions(
            form="keyValues" if sub.format == "keyValues" else "concise" if sub.format == "concise" else "normalized",
            sys_attrs=sub.sys_attrs,
            attrs=frozenset(sub.attributes) if sub.attributes is not None else None,
            lang=sub.definition["lang"] if isinstance(sub.definition.get("lang"), str) else None,
        )
        return [render(doc, ctx, opts) for doc in docs]

    def notification(self, sub: Subscription, delivery: _Delivery) -> tuple[dict[str, Any], dict[str, str]]:
        """(Notification body, HTTP headers) for one delivery."""
        ctx = sub.notify_ctx
        assert ctx is not None
        data = self.render(sub, delivery.docs, delivery.before)
        for doc in delivery.deleted:
            types = [ctx.compact_iri(t) for t in doc.get("type", [])]
            data.append({"id": doc["id"], "type": types[0] if len(types) == 1 else types, "deletedAt": _now()})
        body: dict[str, Any] = {
            "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
            "type": "Notification",
            "subscriptionId": sub.id,
            "notifiedAt": _now(),
            "data": data,
        }
        headers = {"Content-Type": sub.accept}
        if sub.accept == "application/ld+json":
            body["@context"] = ctx.as_json()
        else:
            headers["Link"] = f'<{sub.notify_link}>; rel="{LINK_REL}"; type="application/ld+json"'
        if sub.tenant:
            headers["NGSILD-Tenant"] = sub.tenant
        for key, value in sub.receiver_info:
            headers[key] = value
        return body, headers

    async def _deliver(self, delivery: _Delivery) -> None:
        sub = delivery.sub
        key = (sub.tenant, sub.id)
        if self._pending.get(key, 0) >= self.max_pending:
            sub.stats["timesFailed"] = int(sub.stats.get("timesFailed", 0)) + 1
            sub.stats["lastFailure"] = _now()
            sub.stats["status"] = "failed"
            log.warning("subscription %s: %d notifications pending, one dropped", sub.id, self.max_pending)
            return
        self._pending[key] = self._pending.get(key, 0) + 1
        try:
            await self._deliver_now(delivery, key)
        finally:
            left = self._pending.get(key, 1) - 1
            if left > 0:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)

    async def _deliver_now(self, delivery: _Delivery, key: tuple[str, str]) -> None:
        sub = delivery.sub
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            body, headers = self.notification(sub, delivery)
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            ok = False
            reason = ""
            for attempt in range(len(self.retry_delays) + 1):
                if attempt:
                    await asyncio.sleep(self.retry_delays[attempt - 1])
                    if key not in self.subs:
                        return  # deleted while we were retrying
                ok, reason = await self._post(sub.endpoint, payload, headers)
                if ok:
                    break
            stamp = _now()
            sub.stats["timesSent"] = int(sub.stats.get("timesSent", 0)) + 1
            sub.stats["lastNotification"] = stamp
            if ok:
                sub.stats["lastSuccess"] = stamp
                sub.stats["status"] = "ok"
            else:
                sub.stats["timesFailed"] = int(sub.stats.get("timesFailed", 0)) + 1
                sub.stats["lastFailure"] = stamp
                sub.stats["status"] = "failed"
                log.warning("notification of %s to %s failed: %s", sub.id, sub.endpoint, reason)
            if key in self.subs:
                # persisted by the periodic loop (at most one write per subscription per tick), so a
                # busy subscription does not compete with the store's writer once per notification
                self._dirty.add(key)

    async def _post(self, url: str, payload: bytes, headers: Mapping[str, str]) -> tuple[bool, str]:
        if self._session is None:
            return False, "the notifier is stopped"
        try:
            async with self._session.post(url, data=payload, headers=dict(headers)) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return True, ""
                return False, f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return False, type(exc).__name__


_PREVIOUS: Final = {"value": "previousValue", "object": "previousObject"}
"""The previous-value members the entity model knows (Property, GeoProperty and Relationship)."""


def _with_previous(doc: Mapping[str, Any], old: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """showChanges: each changed instance carries the value it had before (previousValue...)."""
    if old is None:
        return doc
    out = dict(doc)
    for name, insts in doc.items():
        previous = old.get(name)
        if name in ("id", "type", "scope", "createdAt", "modifiedAt") or not isinstance(insts, list):
            continue
        if not isinstance(previous, list):
            continue
        by_dataset = {p.get("datasetId"): p for p in previous if isinstance(p, Mapping)}
        changed = []
        for inst in insts:
            prior = by_dataset.get(inst.get("datasetId"))
            extra = {}
            if prior is not None:
                for member, label in _PREVIOUS.items():
                    if member in prior and prior.get(member) != inst.get(member):
                        extra[label] = prior[member]
            changed.append({**inst, **extra} if extra else inst)
        out[name] = changed
    return out


NOTIFIER_KEY: Final = web.AppKey("jonction.store.notifier", Notifier)
"""The app's Notifier (tests tune ``retry_delays`` and ``tick`` through it)."""


def subscription_context(app: web.Application) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup_ctx entry that loads subscriptions and runs the notifier."""

    async def run(_: web.Application) -> AsyncIterator[None]:
        notifier = app[NOTIFIER_KEY]
        path = getattr(notifier.storage, "path", None)
        if path is not None:
            notifier.db = Database(path, setup=ensure_schema)
        await notifier.load()
        await notifier.start()
        notifier.storage.add_listener(notifier.on_change)
        yield
        await notifier.stop()
        if notifier.db is not None:
            await notifier.db.close()

    return run


# --------------------------------------------------------------------------- HTTP API (§6.10, §6.11)


_LIST_PARAMS: Final = frozenset({"limit", "offset", "count"})


def _sub_id(request: web.Request) -> str:
    sub_id = request.match_info["subscription_id"]
    if not model.is_uri(sub_id):
        raise bad_request(f"subscription id {sub_id!r} is not a URI")
    return sub_id


def _sub_url(ngsi: api.NgsiContext, sub_id: str) -> str:
    return f"{ngsi.settings.base_path}/subscriptions/{quote(sub_id, safe=':@!$&()*+,;=-._~')}"


def _body_context(ngsi: api.NgsiContext, body: api.Body) -> list[jsonld.ContextEntry] | None:
    """The @context entries a subscription body carries (ld+json body or Link), None when absent."""
    if body.content_type == api.LD_JSON:
        if not isinstance(body.data, Mapping) or "@context" not in body.data:
            raise bad_request("with Content-Type application/ld+json the @context must be in the body")
        entries = jsonld.normalize_entries(body.data["@context"])
        ngsi.contexts.get(entries)  # fail now (LdContextNotAvailable) rather than at notification time
        return entries
    if body.link:
        ngsi.contexts.get([body.link])
        return [body.link]
    return None


async def _tenant_known(ngsi: api.NgsiContext, notifier: Notifier) -> None:
    if await ngsi.storage.tenant_exists(ngsi.tenant):
        return
    if any(t == ngsi.tenant for t, _ in notifier.subs):
        return
    raise NgsiError("NonexistentTenant", f"tenant {ngsi.tenant!r} does not exist")


def _lookup(notifier: Notifier, ngsi: api.NgsiContext, sub_id: str) -> Subscription:
    sub = notifier.subs.get((ngsi.tenant, sub_id))
    if sub is None:
        raise NgsiError("ResourceNotFound", f"subscription {sub_id} does not exist")
    return sub


async def create_subscription(request: web.Request) -> web.Response:
    """POST /subscriptions (§6.10.3.1): 201 with Location; AlreadyExists 409."""
    api.check_params(request, ())
    ngsi = await api.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    body = await api.read_body(request)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be one subscription (a JSON object)")
    entries = _body_context(ngsi, body) or []
    sub = build(body.data, ngsi.tenant, entries, ngsi.contexts)
    if (ngsi.tenant, sub.id) in notifier.subs:
        raise NgsiError("AlreadyExists", f"subscription {sub.id} already exists")
    await notifier.add(sub)
    response = web.Response(status=201)
    response.headers["Location"] = _sub_url(ngsi, sub.id)
    return response


async def list_subscriptions(request: web.Request) -> web.Response:
    """GET /subscriptions (§6.10.3.2), paginated, sorted by creation time then id."""
    api.check_params(request, _LIST_PARAMS)
    ngsi = await api.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    await _tenant_known(ngsi, notifier)
    media = api.negotiate(request)
    limit, offset, count = api.paging(ngsi)
    ctx = ngsi.context()
    subs = sorted(
        (s for (t, _), s in notifier.subs.items() if t == ngsi.tenant),
        key=lambda s: (model.parse_time(s.created_at), s.id),  # instants: texts with fractions mis-sort
    )
    page = subs[offset : offset + limit]
    headers = {api.COUNT_HEADER: str(len(subs))} if count else {}
    links = api.page_links(ngsi, limit, offset, offset + limit < len(subs))
    return api.respond(ngsi, [s.to_json(ctx) for s in page], media=media, headers=headers, links=links)


async def retrieve_subscription(request: web.Request) -> web.Response:
    """GET /subscriptions/{id} (§6.11.3.1)."""
    api.check_params(request, ())
    ngsi = await api.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    media = api.negotiate(request)
    sub = _lookup(notifier, ngsi, _sub_id(request))
    return api.respond(ngsi, sub.to_json(ngsi.context()), media=media)


async def update_subscription(request: web.Request) -> web.Response:
    """PATCH /subscriptions/{id} (§6.11.3.2): members of the fragment replace the stored ones."""
    api.check_params(request, ())
    ngsi = await api.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    sub_id = _sub_id(request)
    body = await api.read_body(request, merge_patch=True)  # §6.3.4 media checks (415) come first
    sub = _lookup(notifier, ngsi, sub_id)
    if not isinstance(body.data, Mapping) or not body.data:
        raise bad_request("the body must be a non-empty JSON object (a subscription fragment)")
    fragment = {k: v for k, v in body.data.items() if k != "@context"}
    if fragment.get("id", sub_id) != sub_id:
        raise bad_request("/id: the subscription id cannot be changed")
    given = _body_context(ngsi, body)
    entries = given if given is not None else sub.context
    # bring the stored members into the fragment's @context, then let the fragment win
    current = sub.to_json(ngsi.contexts.get(entries))
    for name in ("status", "createdAt", "modifiedAt"):
        current.pop(name, None)
    notification = {k: v for k, v in current.get("notification", {}).items() if k not in (*_STATS, "status")}
    if isinstance(fragment.get("notification"), Mapping):
        fragment["notification"] = {**notification, **fragment["notification"]}
    merged = {**current, **fragment}
    updated = build(merged, ngsi.tenant, entries, ngsi.contexts, created_at=sub.created_at, stats=sub.stats)
    await notifier.add(updated)
    return api.no_content()


async def delete_subscription(request: web.Request) -> web.Response:
    """DELETE /subscriptions/{id} (§6.11.3.3)."""
    api.check_params(request, ())
    ngsi = await api.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    sub_id = _sub_id(request)
    _lookup(notifier, ngsi, sub_id)
    await notifier.remove(ngsi.tenant, sub_id)
    return api.no_content()


def setup_subscriptions(app: web.Application, storage: Storage) -> None:
    """Add the /subscriptions routes, the notifier and its background tasks to the store app."""
    app[NOTIFIER_KEY] = Notifier(storage, None)
    app.cleanup_ctx.append(subscription_context(app))
    r = app.router
    r.add_post("/subscriptions", create_subscription)
    r.add_get("/subscriptions", list_subscriptions, allow_head=False)
    r.add_get("/subscriptions/{subscription_id}", retrieve_subscription, allow_head=False)
    r.add_patch("/subscriptions/{subscription_id}", update_subscription)
    r.add_delete("/subscriptions/{subscription_id}", delete_subscription)
