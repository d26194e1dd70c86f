"""The /csourceRegistrations HTTP API (ETSI GS CIM 009 V1.9.1 §5.9, §5.10, §6.8, §6.9).

Registrations are stored (on the storage's backend) and discoverable; every change is told to the
context source registration subscriptions (:mod:`gateway.store.csource_subscriptions`), and
:mod:`gateway.store.federation` forwards entity operations to the registered sources.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, cast
from urllib.parse import quote

from aiohttp import web

from gateway import model
from gateway.store import codec, csource_subscriptions, geo, http, jsonld
from gateway.store.patterns import Matcher, compile_user_pattern
from gateway.store.problems import NgsiError, bad_request
from gateway.store.records import RegistrationRecords
from gateway.store.settings import STORAGE_KEY
from gateway.store.subscriptions.parsing import REDACTED, secret_key

_TYPE: Final = "ContextSourceRegistration"
_MODES: Final = frozenset({"inclusive", "exclusive", "redirect", "auxiliary"})
_GEO: Final = ("location", "observationSpace", "operationSpace")
_INTERVALS: Final = ("observationInterval", "managementInterval")
_SYSTEM: Final = ("createdAt", "modifiedAt")
_STATUS: Final = ("status", "timesSent", "timesFailed", "lastSuccess", "lastFailure")
_KNOWN: Final = frozenset({
    "id", "type", "registrationName", "description", "information", "tenant", *_INTERVALS, *_GEO,
    "expiresAt", "endpoint", "contextSourceInfo", "scope", "mode", "operations", "refreshRate",
    "management", *_SYSTEM, *_STATUS,
})
_LIST_PARAMS: Final = frozenset({
    "id", "type", "idPattern", "attrs", "q", "csf", "georel", "geometry", "coordinates", "geoproperty",
    "timerel", "timeAt", "endTimeAt", "timeproperty", "limit", "offset", "count", "options",
})
_MAX_IDS: Final = 100
"""Ids and types a discovery query may name (a size limit on input)."""


# ------------------------------------------------------------------ parsing and rendering


def _fail(pointer: str, message: str) -> NgsiError:
    return bad_request(f"{pointer}: {message}")


def _time(value: Any, pointer: str) -> str:
    if not isinstance(value, str):
        raise _fail(pointer, "must be a DateTime string")
    try:
        return model.utc_time(value)
    except (model.ModelError, ValueError) as exc:
        raise _fail(pointer, f"is not a valid DateTime ({exc})") from None


def _names(value: Any, pointer: str, ctx: jsonld.Context) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(pointer, "must be a non-empty array of attribute names")
    return [ctx.expand_term(v) for v in value]


def _entity_info(value: Any, pointer: str, ctx: jsonld.Context) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(pointer, "must be an EntityInfo object")
    unknown = sorted(set(value) - {"id", "idPattern", "type"})
    if unknown:
        raise _fail(f"{pointer}/{unknown[0]}", "is not a member of EntityInfo")
    if "type" not in value:
        raise _fail(f"{pointer}/type", "is mandatory")
    out: dict[str, Any] = {"type": ctx.expand_type(value["type"], f"{pointer}/type")}
    if "id" in value:
        if not model.is_uri(value["id"]):
            raise _fail(f"{pointer}/id", "must be a URI")
        out["id"] = value["id"]
    if "idPattern" in value:
        pattern = value["idPattern"]
        if not isinstance(pattern, str):
            raise _fail(f"{pointer}/idPattern", "must be a string")
        compile_user_pattern(pattern, f"{pointer}/idPattern")  # RE2: linear time when matched later
        out["idPattern"] = pattern
    return out


def _information(value: Any, ctx: jsonld.Context) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _fail("/information", "must be a non-empty array of RegistrationInfo")
    out = []
    for i, item in enumerate(value):
        pointer = f"/information/{i}"
        if not isinstance(item, Mapping):
            raise _fail(pointer, "must be a RegistrationInfo object")
        unknown = sorted(set(item) - {"entities", "propertyNames", "relationshipNames"})
        if unknown:
            raise _fail(f"{pointer}/{unknown[0]}", "is not a member of RegistrationInfo")
        if not item:
            raise _fail(pointer, "needs entities, propertyNames or relationshipNames")
        info: dict[str, Any] = {}
        if "entities" in item:
            entities = item["entities"]
            if not isinstance(entities, list) or not entities:
                raise _fail(f"{pointer}/entities", "must be a non-empty array of EntityInfo")
            info["entities"] = [_entity_info(e, f"{pointer}/entities/{j}", ctx) for j, e in enumerate(entities)]
        for key in ("propertyNames", "relationshipNames"):
            if key in item:
                info[key] = _names(item[key], f"{pointer}/{key}", ctx)
        out.append(info)
    return out


def _interval(value: Any, pointer: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or "startAt" not in value:
        raise _fail(pointer, "must be a TimeInterval with startAt")
    out = {"startAt": _time(value["startAt"], f"{pointer}/startAt")}
    if "endAt" in value:
        out["endAt"] = _time(value["endAt"], f"{pointer}/endAt")
    return out


def parse(body: Mapping[str, Any], ctx: jsonld.Context, *, created_at: str, reg_id: str | None = None) -> dict[
    str, Any
]:
    """Validate a CSourceRegistration (§5.2.9) and return its stored form (expanded names)."""
    if "type" not in body:
        raise _fail("/type", "is mandatory")
    if body["type"] != _TYPE:
        raise _fail("/type", f"must be {_TYPE!r}")
    given_id = body.get("id", reg_id)
    if given_id is None:
        given_id = f"urn:ngsi-ld:ContextSourceRegistration:{uuid.uuid4()}"
    if not model.is_uri(given_id):
        raise _fail("/id", "must be a URI")
    if reg_id is not None and given_id != reg_id:
        raise _fail("/id", "the registration id cannot be changed")
    if "information" not in body:
        raise _fail("/information", "is mandatory")
    if "endpoint" not in body:
        raise _fail("/endpoint", "is mandatory")
    if not model.is_uri(body["endpoint"]):
        raise _fail("/endpoint", "must be a URI")
    doc: dict[str, Any] = {
        "id": given_id, "type": _TYPE, "information": _information(body["information"], ctx),
        "endpoint": body["endpoint"],
    }
    mode = body.get("mode", "inclusive")
    if mode not in _MODES:
        raise _fail("/mode", f"must be one of {sorted(_MODES)}")
    doc["mode"] = mode
    operations = body.get("operations", ["federationOps"])
    if not isinstance(operations, list) or not operations or not all(isinstance(o, str) for o in operations):
        raise _fail("/operations", "must be a non-empty array of strings")
    doc["operations"] = operations
    for key in ("registrationName", "description", "tenant"):
        if key in body:
            if not isinstance(body[key], str) or not body[key]:
                raise _fail(f"/{key}", "must be a non-empty string")
            doc[key] = body[key]
    if "expiresAt" in body:
        doc["expiresAt"] = _time(body["expiresAt"], "/expiresAt")
    for key in _INTERVALS:
        if key in body:
            doc[key] = _interval(body[key], f"/{key}")
    for key in _GEO:
        if key in body:
            try:
                shape = geo.geojson_shape(body[key])
            except NgsiError as exc:
                raise _fail(f"/{key}", exc.detail) from None
            if shape is None:
                raise _fail(f"/{key}", "must be a GeoJSON geometry")
            doc[key] = body[key]
    if "refreshRate" in body:
        if not isinstance(body["refreshRate"], str):
            raise _fail("/refreshRate", "must be a duration string")
        doc["refreshRate"] = body["refreshRate"]
    for key in ("contextSourceInfo", "management"):
        if key in body:
            doc[key] = body[key]
    if "scope" in body:
        scope = body["scope"]
        if not (isinstance(scope, str) or (isinstance(scope, list) and all(isinstance(s, str) for s in scope))):
            raise _fail("/scope", "must be a string or an array of strings")
        doc["scope"] = scope
    extra = {}
    for key, value in body.items():
        if key in _KNOWN or key == "@context":
            continue
        # additional members (§5.2.9: "Registration Properties") are kept under their expanded name
        extra[ctx.expand_term(key)] = value
    if extra:
        doc["extra"] = extra
    doc["createdAt"] = created_at
    doc["modifiedAt"] = created_at
    return doc


def render(doc: Mapping[str, Any], ctx: jsonld.Context, *, sys_attrs: bool = False) -> dict[str, Any]:
    """The registration as a client sees it, names compacted with ``ctx``."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "information":
            out[key] = [_render_info(i, ctx) for i in value]
        elif key == "extra":
            out.update({ctx.compact_iri(k): v for k, v in value.items()})
        elif key in _SYSTEM:
            if sys_attrs:
                out[key] = value
        else:
            out[key] = value
    return out


def redacted(shown: Mapping[str, Any]) -> dict[str, Any]:
    """A registration as readers get it: credential values of ``contextSourceInfo`` masked.

    They are headers of the requests forwarded to the source (a neighbour's bearer token travels this
    way); only responses and notifications are redacted, the stored registration keeps them.
    """
    out = dict(shown)
    info = out.get("contextSourceInfo")
    if isinstance(info, list):
        out["contextSourceInfo"] = [
            {**item, "value": REDACTED}
            if isinstance(item, Mapping) and isinstance(item.get("key"), str) and secret_key(item["key"]) else item
            for item in info
        ]
    return out


def _unredacted(fragment: dict[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """A PATCH fragment whose masked values (sent back as read) are replaced by the stored ones."""
    new, old = fragment.get("contextSourceInfo"), stored.get("contextSourceInfo")
    if isinstance(new, list) and isinstance(old, list):
        known = {i.get("key"): i.get("value") for i in old if isinstance(i, Mapping)}
        fragment["contextSourceInfo"] = [
            {**i, "value": known[i.get("key")]}
            if isinstance(i, Mapping) and i.get("value") == REDACTED and i.get("key") in known else i
            for i in new
        ]
    return fragment


def _render_info(info: Mapping[str, Any], ctx: jsonld.Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "entities" in info:
        entities = []
        for e in info["entities"]:
            shown = dict(e)
            types = [ctx.compact_iri(t) for t in e["type"]]
            shown["type"] = types[0] if len(types) == 1 else types
            entities.append(shown)
        out["entities"] = entities
    for key in ("propertyNames", "relationshipNames"):
        if key in info:
            out[key] = [ctx.compact_iri(n) for n in info[key]]
    return out


def _expired(doc: Mapping[str, Any]) -> bool:
    expires = doc.get("expiresAt")
    return expires is not None and model.parse_time(expires) <= datetime.now(UTC)


# ------------------------------------------------------------------ discovery (§5.10.2, §5.12)


def _entity_matches(
    e: Mapping[str, Any], types: set[str] | None, ids: set[str] | None, pattern: Matcher | None
) -> bool:
    if types is not None and not types.intersection(e["type"]):
        return False
    if ids is not None:
        if "id" in e and e["id"] not in ids:
            return False
        if "id" not in e and "idPattern" in e and not any(compile_user_pattern(e["idPattern"]).search(i) for i in ids):
            return False
    if pattern is not None:
        if "id" in e and not pattern.search(e["id"]):
            return False
    return True


def _info_matches(
    info: Mapping[str, Any], types: set[str] | None, ids: set[str] | None, pattern: Matcher | None,
    attrs: set[str] | None,
) -> bool:
    if types is not None or ids is not None or pattern is not None:
        entities = info.get("entities")
        # a RegistrationInfo without entities holds its attributes for entities of any type and id
        if entities and not any(_entity_matches(e, types, ids, pattern) for e in entities):
            return False
    if attrs is not None:
        names = [*info.get("propertyNames", ()), *info.get("relationshipNames", ())]
        if names and not attrs.intersection(names):
            return False
    return True


def _time_filter(request: web.Request) -> tuple[str, datetime, datetime | None, str] | None:
    timerel = request.query.get("timerel")
    if timerel is None:
        return None
    if timerel not in ("before", "after", "between"):
        raise bad_request(f"timerel: {timerel!r} is not before, after or between")
    try:
        at = model.parse_time(model.utc_time(request.query.get("timeAt", "")))
        end_text = request.query.get("endTimeAt")
        end = model.parse_time(model.utc_time(end_text)) if end_text else None
    except (model.ModelError, ValueError):
        raise bad_request("timeAt/endTimeAt: not a valid DateTime") from None
    if timerel == "between" and end is None:
        raise bad_request("endTimeAt is mandatory with timerel=between")
    prop = request.query.get("timeproperty", "observedAt")
    interval = "managementInterval" if prop in ("createdAt", "modifiedAt") else "observationInterval"
    return timerel, at, end, interval


def _time_matches(doc: Mapping[str, Any], tq: tuple[str, datetime, datetime | None, str]) -> bool:
    timerel, at, end, key = tq
    interval = doc.get(key)
    if interval is None:
        return False
    start = model.parse_time(interval["startAt"])
    stop = model.parse_time(interval["endAt"]) if "endAt" in interval else None
    if timerel == "before":
        return start < at
    if timerel == "after":
        return stop is None or stop > at
    assert end is not None
    return start < end and (stop is None or stop > at)


_Q_TERM: Final = re.compile(r'^([A-Za-z_][\w.]*)(==|!=)(.+)$')


def _q_filter(text: str | None) -> list[tuple[str, str, str]] | None:
    """A registration query (``q``/``csf``): ``member==value`` terms joined with ``;``."""
    if text is None:
        return None
    terms = []
    for part in text.split(";"):
        m = _Q_TERM.match(part.strip())
        if m is None:
            raise bad_request(f"q: {part!r} is not a supported registration query term (member==value)")
        terms.append((m.group(1), m.group(2), m.group(3).strip('"')))
    return terms


def _q_matches(doc: Mapping[str, Any], terms: list[tuple[str, str, str]], ctx: jsonld.Context) -> bool:
    extra = doc.get("extra", {})
    for name, op, value in terms:
        stored = doc.get(name, extra.get(ctx.expand_term(name)))
        if isinstance(stored, Mapping) and "value" in stored:
            stored = stored["value"]
        equal = stored is not None and str(stored) == value
        if equal != (op == "=="):
            return False
    return True


# ------------------------------------------------------------------ handlers


def _records(request: web.Request) -> RegistrationRecords:
    storage = request.config_dict[STORAGE_KEY]
    factory = getattr(storage, "registration_records", None)
    if factory is None:
        raise NgsiError("OperationNotSupported", "this storage backend does not keep context source registrations")
    return cast(RegistrationRecords, factory())


def _reg_id(request: web.Request) -> str:
    reg_id = request.match_info["registration_id"]
    if not model.is_uri(reg_id):
        raise bad_request(f"registration id {reg_id!r} is not a URI")
    return reg_id


def _url(ngsi: http.NgsiContext, reg_id: str) -> str:
    return f"{ngsi.settings.base_path}/csourceRegistrations/{quote(reg_id, safe=':@!$&()*+,;=-._~')}"


def _sys_attrs(request: web.Request) -> bool:
    given = {o.strip() for o in request.query.get("options", "").split(",") if o.strip()}
    unknown = sorted(given - {"sysAttrs", "count"})
    if unknown:
        raise bad_request(f"options: {unknown[0]!r} is not supported here")
    return "sysAttrs" in given


def _now() -> str:
    return model.format_time(datetime.now(UTC))


async def create_registration(request: web.Request) -> web.Response:
    """POST /csourceRegistrations (§6.8.3.1): 201 with Location; AlreadyExists 409."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    body = await http.read_body(request)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be one context source registration (a JSON object)")
    doc = parse(body.data, body.context_for(ngsi), created_at=_now())
    if "expiresAt" in doc and _expired(doc):
        raise _fail("/expiresAt", "must be a DateTime in the future")
    await ngsi.storage.ensure_tenant(ngsi.tenant)
    if not await _records(request).create(ngsi.tenant, doc["id"], codec.dumps(doc)):
        raise NgsiError("AlreadyExists", f"context source registration {doc['id']} already exists")
    await csource_subscriptions.registration_changed(request, ngsi.tenant, None, doc)
    response = web.Response(status=201)
    response.headers["Location"] = _url(ngsi, doc["id"])
    return response


async def _lookup(request: web.Request, ngsi: http.NgsiContext, reg_id: str) -> dict[str, Any]:
    text = await _records(request).get(ngsi.tenant, reg_id)
    if text is None:
        raise NgsiError("ResourceNotFound", f"context source registration {reg_id} does not exist")
    return cast(dict[str, Any], codec.loads(text))


async def retrieve_registration(request: web.Request) -> web.Response:
    """GET /csourceRegistrations/{id} (§6.9.3.1)."""
    http.check_params(request, ("options",))
    sys_attrs = _sys_attrs(request)
    ngsi = await http.ngsi_context(request)
    media = http.negotiate(request)
    doc = await _lookup(request, ngsi, _reg_id(request))
    return http.respond(ngsi, redacted(render(doc, ngsi.context(), sys_attrs=sys_attrs)), media=media)


def _ids(value: str | None, name: str) -> set[str] | None:
    items = http.split_list(value)
    if items is None:
        return None
    if len(items) > _MAX_IDS:
        raise NgsiError("TooComplexQuery", f"{name}: more than {_MAX_IDS} items")
    return set(items)


async def query_registrations(request: web.Request) -> web.Response:
    """GET /csourceRegistrations (§6.8.3.2): discovery by type, id, idPattern, attrs, q/csf, geoQ, timeQ."""
    http.check_params(request, _LIST_PARAMS)
    sys_attrs = _sys_attrs(request)
    ngsi = await http.ngsi_context(request)
    media = http.negotiate(request)
    limit, offset, count = http.paging(ngsi)
    ctx = ngsi.context()
    q = request.query
    ids = _ids(q.get("id"), "id")
    if ids is not None and not all(model.is_uri(i) for i in ids):
        raise bad_request("id: every id must be a URI")
    raw_types = _ids(q.get("type"), "type")
    types = None if raw_types is None else {ctx.expand_term(t) for t in raw_types}
    raw_attrs = _ids(q.get("attrs"), "attrs")
    attrs = None if raw_attrs is None else {ctx.expand_term(a) for a in raw_attrs}
    pattern = compile_user_pattern(q["idPattern"], "idPattern") if "idPattern" in q else None
    terms = _q_filter(q.get("q"))
    csf = _q_filter(q.get("csf"))
    geo_query = None
    if any(k in q for k in ("georel", "geometry", "coordinates")):
        geo_query = geo.parse_geo_query(q.get("georel"), q.get("geometry"), q.get("coordinates"),
                                        q.get("geoproperty") or "location")
    tq = _time_filter(request)
    if (types, ids, pattern, attrs, terms, csf, geo_query, tq) == (None,) * 8:
        # §5.10.2: discovery names at least entity types, ids or attributes, or a filter
        raise bad_request("a registration query needs type, id, idPattern, attrs, q, csf, geoQ or timeQ")
    found = []
    for text in await _records(request).load(ngsi.tenant):
        doc = codec.loads(text)
        if _expired(doc):
            continue
        if (types is not None or ids is not None or pattern is not None or attrs is not None) and not any(
            _info_matches(i, types, ids, pattern, attrs) for i in doc["information"]
        ):
            continue
        if terms is not None and not _q_matches(doc, terms, ctx):
            continue
        if csf is not None and not _q_matches(doc, csf, ctx):
            continue
        if geo_query is not None:
            geometry = doc.get(geo_query.geoproperty)
            if geometry is None or not geo_query.matches(geometry):
                continue
        if tq is not None and not _time_matches(doc, tq):
            continue
        found.append(doc)
    page = found[offset : offset + limit]
    headers = {http.COUNT_HEADER: str(len(found))} if count or "count" in q.get("options", "") else {}
    links = http.page_links(ngsi, limit, offset, offset + limit < len(found))
    shown = [redacted(render(d, ctx, sys_attrs=sys_attrs)) for d in page]
    return http.respond(ngsi, shown, media=media, headers=headers, links=links)


async def update_registration(request: web.Request) -> web.Response:
    """PATCH /csourceRegistrations/{id} (§6.9.3.2): members of the fragment replace the stored ones."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request)
    reg_id = _reg_id(request)
    body = await http.read_body(request, merge_patch=True)
    if not isinstance(body.data, Mapping) or not body.data:
        raise bad_request("the body must be a non-empty JSON object (a registration fragment)")
    ctx = body.context_for(ngsi)
    doc = await _lookup(request, ngsi, reg_id)
    current = render(doc, ctx)
    current.pop("status", None)
    fragment = _unredacted({k: v for k, v in body.data.items() if k != "@context"}, doc)
    if "type" in fragment and fragment["type"] != _TYPE:
        raise _fail("/type", f"must be {_TYPE!r}")
    merged = {k: v for k, v in {**current, **fragment}.items() if v is not None}
    updated = parse(merged, ctx, created_at=doc["createdAt"], reg_id=reg_id)
    updated["modifiedAt"] = _now()
    if "expiresAt" in fragment and _expired(updated):
        raise _fail("/expiresAt", "must be a DateTime in the future")
    if not await _records(request).replace(ngsi.tenant, reg_id, codec.dumps(updated)):
        raise NgsiError("ResourceNotFound", f"context source registration {reg_id} does not exist")
    await csource_subscriptions.registration_changed(request, ngsi.tenant, doc, updated)
    return http.no_content()


async def delete_registration(request: web.Request) -> web.Response:
    """DELETE /csourceRegistrations/{id} (§6.9.3.3)."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request)
    reg_id = _reg_id(request)
    before = await _records(request).get(ngsi.tenant, reg_id)
    if not await _records(request).delete(ngsi.tenant, reg_id):
        raise NgsiError("ResourceNotFound", f"context source registration {reg_id} does not exist")
    if before is not None:
        await csource_subscriptions.registration_changed(request, ngsi.tenant, codec.loads(before), None)
    return http.no_content()


def add_registration_routes(app: web.Application) -> None:
    """Register the /csourceRegistrations routes."""
    r = app.router
    r.add_post("/csourceRegistrations", create_registration)
    r.add_get("/csourceRegistrations", query_registrations, allow_head=False)
    r.add_get("/csourceRegistrations/{registration_id}", retrieve_registration, allow_head=False)
    r.add_patch("/csourceRegistrations/{registration_id}", update_registration)
    r.add_delete("/csourceRegistrations/{registration_id}", delete_registration)

