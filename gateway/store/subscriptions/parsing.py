"""Subscription parsing and validation (ETSI GS CIM 009 V1.9.1 §5.2.12, §5.2.14, §5.2.15, §5.8.1).

:func:`build` turns a subscription body into a :class:`Subscription` (types and attribute names
expanded with the creation @context), raising BadRequestData that names the offending member.
"""

from __future__ import annotations

import importlib.util
import re
import sqlite3
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from gateway import model
from gateway.store import jsonld
from gateway.store.geo import GeoQuery, parse_geo_query
from gateway.store.join import JoinMode, parse_join
from gateway.store.patterns import Matcher, compile_user_pattern
from gateway.store.problems import NgsiError, bad_request
from gateway.store.query import QExpr, ScopeExpr, TypeExpr, TypeName, parse_q, parse_scope_q, parse_type_expression
from gateway.store.representation import Form

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
DEFAULT_TRIGGERS: Final = ("attributeCreated", "attributeUpdated")
"""§5.2.12: the triggers of a subscription that names none (a new entity creates its attributes)."""
FORMATS: Final[Mapping[str, Form]] = {
    "normalized": "normalized", "keyValues": "keyValues", "simplified": "keyValues", "concise": "concise",
}
"""notification.format values → the representation (§5.2.14: simplified is keyValues)."""
ACCEPTS: Final = frozenset({"application/json", "application/ld+json"})
SCHEMES: Final = frozenset({"http", "https", "mqtt", "mqtts"})
"""Endpoint URI schemes notifications can be delivered to (§5.2.15, MQTT binding §5.8.6)."""
MQTT_VERSIONS: Final = frozenset({"mqtt3.1.1", "mqtt5.0"})
MQTT_QOS: Final = frozenset({"0", "1", "2"})
MAX_SUBSCRIPTIONS_PER_TENANT: Final = 1000
MAX_ENTITIES_PER_NOTIFICATION: Final = 1000
_MEMBERS: Final = frozenset(
    {
        "id", "type", "subscriptionName", "description", "entities", "watchedAttributes", "notificationTrigger",
        "timeInterval", "q", "geoQ", "csf", "scopeQ", "lang", "isActive", "notification", "expiresAt",
        "throttling", "temporalQ", "@context", "jsonldContext", "status", "createdAt", "modifiedAt",
        "datasetId", "expandValues", "local",
    }
)
_READ_ONLY: Final = frozenset({"status", "createdAt", "modifiedAt"})
_NOTIFICATION_MEMBERS: Final = frozenset(
    {
        "attributes", "format", "endpoint", "sysAttrs", "showChanges", "status", "timesSent", "timesFailed",
        "lastNotification", "lastFailure", "lastSuccess", "pick", "omit", "join", "joinLevel",
    }
)
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_PERCENT: Final = re.compile(r"%[0-9A-Fa-f]{2}")
LINK_REL: Final = "http://www.w3.org/ns/json-ld#context"
STATS: Final = ("timesSent", "timesFailed", "lastNotification", "lastFailure", "lastSuccess")


def now() -> str:
    """The current time as an NGSI-LD DateTime text."""
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
    triggers: frozenset[str] = frozenset(DEFAULT_TRIGGERS)
    time_interval: float | None = None
    throttling: float | None = None
    q: QExpr | None = None
    scope_q: ScopeExpr | None = None
    geo: GeoQuery | None = None
    geo_iri: str | None = None
    attributes: list[str] | None = None
    pick_members: frozenset[str] | None = None
    """With notification.pick: which of id/type/scope stay (attribute IRIs go to ``attributes``)."""
    omit: frozenset[str] = frozenset()
    """notification.omit: attribute IRIs and entity members left out of notifications."""
    dataset_ids: frozenset[str] | None = None
    """datasetId: the attribute instances notified (``@none`` is the default instance)."""
    show_changes: bool = False
    join: tuple[JoinMode, int] | None = None
    """notification.join / joinLevel (§5.2.14, §4.5.23): linked entities notified with each entity."""
    format: Form = "normalized"
    sys_attrs: bool = False
    endpoint: str = ""
    accept: str = "application/json"
    receiver_info: list[tuple[str, str]] = field(default_factory=list)
    notifier_info: dict[str, str] = field(default_factory=dict)
    """notifierInfo key → value (MQTT-Version, MQTT-QoS for mqtt endpoints)."""
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

    def to_json(self, ctx: jsonld.Context, *, sys_attrs: bool = True) -> dict[str, Any]:
        """The subscription as the API shows it, terms compacted with the request's context.

        createdAt and modifiedAt are system-generated: shown only with ``sysAttrs`` (§4.8).
        """
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
        if self.attributes is not None and "pick" not in notification:
            notification["attributes"] = [ctx.compact_iri(a) for a in self.attributes]
        notification["format"] = self.format
        for name in STATS:
            if self.stats.get(name) is not None:
                notification[name] = self.stats[name]
        if "status" in self.stats:
            notification["status"] = self.stats["status"]
        out["notification"] = notification
        out.setdefault("notificationTrigger", list(DEFAULT_TRIGGERS))
        out["status"] = self.status
        if sys_attrs:
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


REDACTED: Final = "***"
"""What readers see in place of a secret (an endpoint password, an Authorization header value)."""
_SECRET_KEY: Final = re.compile(r"auth|token|secret|passw|pwd|api[-_]?key|cookie|credential|signature", re.IGNORECASE)
"""receiverInfo/notifierInfo keys whose values are credentials (Authorization, X-Api-Key, X-Auth-Token...)."""


def redact_uri(uri: str) -> str:
    """``mqtt://user:pass@host/topic`` → ``mqtt://user:***@host/topic`` (a URI without a password as is)."""
    parts = urlsplit(uri)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{REDACTED}@{host}").geturl()


def secret_key(key: str) -> bool:
    """True when a receiverInfo/notifierInfo key names a credential."""
    return _SECRET_KEY.search(key) is not None


def redacted_view(shown: Mapping[str, Any]) -> dict[str, Any]:
    """A subscription as readers get it: the endpoint's password and credential headers masked.

    Only responses are redacted; the stored subscription (and so every delivery) keeps the values.
    """
    out = dict(shown)
    notification = out.get("notification")
    if not isinstance(notification, Mapping) or not isinstance(notification.get("endpoint"), Mapping):
        return out
    endpoint = dict(notification["endpoint"])
    if isinstance(endpoint.get("uri"), str):
        endpoint["uri"] = redact_uri(endpoint["uri"])
    for name in ("receiverInfo", "notifierInfo"):
        items = endpoint.get(name)
        if isinstance(items, list):
            endpoint[name] = [
                {**item, "value": REDACTED}
                if isinstance(item, Mapping) and isinstance(item.get("key"), str) and secret_key(item["key"])
                else item
                for item in items
            ]
    out["notification"] = {**notification, "endpoint": endpoint}
    return out


def unredacted(fragment: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH fragment with masked values sent back as read (``***``) replaced by the stored ones.

    A client that reads a subscription and sends its endpoint back unchanged must not overwrite the
    real password or token with the mask.
    """
    out = dict(fragment)
    new_n, old_n = out.get("notification"), stored.get("notification")
    if not isinstance(new_n, Mapping) or not isinstance(old_n, Mapping):
        return out
    new_e, old_e = new_n.get("endpoint"), old_n.get("endpoint")
    if not isinstance(new_e, Mapping) or not isinstance(old_e, Mapping):
        return out
    endpoint = dict(new_e)
    old_uri = old_e.get("uri")
    if isinstance(old_uri, str) and endpoint.get("uri") == redact_uri(old_uri) != old_uri:
        endpoint["uri"] = old_uri
    for name in ("receiverInfo", "notifierInfo"):
        items, old_items = endpoint.get(name), old_e.get(name)
        if not isinstance(items, list) or not isinstance(old_items, list):
            continue
        known = {i.get("key"): i.get("value") for i in old_items if isinstance(i, Mapping)}
        endpoint[name] = [
            {**item, "value": known[item.get("key")]}
            if isinstance(item, Mapping) and item.get("value") == REDACTED and item.get("key") in known
            else item
            for item in items
        ]
    out["notification"] = {**new_n, "endpoint": endpoint}
    return out


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
    # an id that is present must be a URI: an empty one is an error, not a request to mint one
    sub_id = body["id"] if "id" in body else f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"
    if not isinstance(sub_id, str) or not model.is_uri(sub_id):
        raise _fail("/id", f"{sub_id!r} is not a URI")
    ctx = contexts.get(list(context))
    stamp = now()
    for name in ("subscriptionName", "description", "lang", "jsonldContext"):
        if name in body and not isinstance(body[name], str):
            raise _fail(f"/{name}", "must be a string")
    definition = {k: v for k, v in body.items() if k not in _READ_ONLY and k not in ("@context", "id", "type")}
    sub = Subscription(
        id=sub_id,
        tenant=tenant,
        context=list(context),
        definition=definition,
        created_at=created_at or stamp,
        modified_at=stamp,
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
        text = body["q"]
        if _PERCENT.search(text):
            # lenient: some clients percent-encode q as they would in a URL (name=="a%20b")
            text = unquote(text)
        sub.q = parse_q(text)
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
    if "datasetId" in body:
        sub.dataset_ids = frozenset(_string_list(body["datasetId"], "/datasetId"))
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


def _join(value: Mapping[str, Any]) -> tuple[JoinMode, int] | None:
    """notification.join (flat, inline or @none) and joinLevel (a JSON integer ≥ 1), validated."""
    join, level = value.get("join"), value.get("joinLevel")
    if "join" in value and not isinstance(join, str):
        raise _fail("/notification/join", "must be one of flat, inline, @none")
    if "joinLevel" in value and (isinstance(level, bool) or not isinstance(level, int)):
        # a JSON body carries a number; a query-string form ("2") is not a NotificationParams value
        raise _fail("/notification/joinLevel", "must be an integer greater than 0")
    try:
        return parse_join(join, level)
    except NgsiError as exc:
        if exc.type != "BadRequestData":
            raise
        name = "joinLevel" if "joinLevel" in exc.detail else "join"
        raise _fail(f"/notification/{name}", exc.detail) from None


def _notification(sub: Subscription, value: Any, ctx: jsonld.Context) -> None:
    if not isinstance(value, Mapping):
        raise _fail("/notification", "is required (an object with an endpoint)")
    extra = sorted(set(value) - _NOTIFICATION_MEMBERS)
    if extra:
        raise _fail(f"/notification/{extra[0]}", "is not a member of NotificationParams")
    if "attributes" in value:
        sub.attributes = [ctx.expand_term(a) for a in _string_list(value["attributes"], "/notification/attributes")]
    pick = _string_list(value["pick"], "/notification/pick") if "pick" in value else None
    omit = _string_list(value["omit"], "/notification/omit") if "omit" in value else None
    if pick is not None and (sub.attributes is not None or omit is not None):
        raise _fail("/notification/pick", "cannot be combined with attributes or omit (§4.21)")
    if omit is not None and sub.attributes is not None:
        raise _fail("/notification/omit", "cannot be combined with attributes (§4.21)")
    members = ("id", "type", "scope")
    if pick is not None:
        sub.pick_members = frozenset(p for p in pick if p in members)
        sub.attributes = [ctx.expand_term(p) for p in pick if p not in members]
    if omit is not None:
        sub.omit = frozenset(o if o in members else ctx.expand_term(o) for o in omit)
    show_changes = value.get("showChanges", False)
    if not isinstance(show_changes, bool):
        raise _fail("/notification/showChanges", "must be true or false")
    sub.show_changes = show_changes
    sub.join = _join(value)
    fmt = value.get("format", "normalized")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise _fail("/notification/format", f"{fmt!r} is not one of {', '.join(sorted(FORMATS))}")
    sub.format = FORMATS[fmt]
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
    extra = sorted(set(endpoint) - {"uri", "accept", "receiverInfo", "notifierInfo"})
    if extra:
        raise _fail(f"/notification/endpoint/{extra[0]}", "is not a member of Endpoint")
    scheme = str(uri).split(":", 1)[0].lower()
    if scheme not in SCHEMES:
        raise NgsiError(
            "NotImplemented",
            f"/notification/endpoint/uri: {scheme} endpoints are not supported (http, https, mqtt and mqtts are)",
        )
    if scheme.startswith("mqtt"):
        if importlib.util.find_spec("aiomqtt") is None:
            raise NgsiError("NotImplemented", "/notification/endpoint/uri: MQTT needs the mqtt extra (aiomqtt)")
        parts = urlsplit(str(uri))
        if not parts.hostname or not unquote(parts.path).lstrip("/"):
            raise _fail("/notification/endpoint/uri", "an MQTT endpoint is mqtt[s]://[user[:password]@]host[:port]/topic")
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
    for key, header in sub.receiver_info:
        # they become HTTP headers (or MQTT metadata): a token name, a value without line breaks
        if not _HEADER_NAME.fullmatch(key) or any(c in header for c in "\r\n\0"):
            raise _fail("/notification/endpoint/receiverInfo", f"{key!r} is not a valid header name and value")
    notifier = endpoint.get("notifierInfo", [])
    if not isinstance(notifier, list) or not all(
        isinstance(i, Mapping) and isinstance(i.get("key"), str) and isinstance(i.get("value"), str | int)
        for i in notifier
    ):
        raise _fail("/notification/endpoint/notifierInfo", "must be an array of {key, value} strings")
    sub.notifier_info = {str(i["key"]): str(i["value"]) for i in notifier}
    version = sub.notifier_info.get("MQTT-Version")
    if version is not None and version not in MQTT_VERSIONS:
        raise _fail("/notification/endpoint/notifierInfo", f"MQTT-Version {version!r} is not one of mqtt3.1.1, mqtt5.0")
    qos = sub.notifier_info.get("MQTT-QoS")
    if qos is not None and qos not in MQTT_QOS:
        raise _fail("/notification/endpoint/notifierInfo", f"MQTT-QoS {qos!r} is not one of 0, 1, 2")


