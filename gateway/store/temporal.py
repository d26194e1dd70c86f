"""The NGSI-LD temporal API (ETSI GS CIM 009 V1.9.1 §5.6.11 to §5.7.4, §6.18 to §6.24, §4.5.7 to §4.5.19).

Reads the attribute history the store records on every write (``gateway.store.history``) and
renders it as the temporal representation: normalized (arrays of instances), temporalValues
(``values: [[v, t], ...]``) or aggregatedValues (``avg: [[v, start, end], ...]``). Temporal writes
(POST /temporal/entities...) add instances to the history only; they do not touch current state.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from gateway import model
from gateway.store import api, history
from gateway.store.base import Storage
from gateway.store.history import Database, EntitySelector, Instance, Series, TimeFilter
from gateway.store.jsonld import Context
from gateway.store.patterns import compile_user_pattern
from gateway.store.problems import NgsiError, bad_request, not_found
from gateway.store.query import QExpr, parse_q, parse_type_expression

MAX_INSTANCES: Final = 10_000
"""Most instances per attribute in one answer; beyond, 206 with a Content-Range (§6.3.10.3)."""
MAX_RESPONSE_INSTANCES: Final = 200_000
"""Most instances in one answer, all entities together (bounds memory for wide type queries)."""
MAX_LAST_N: Final = 10_000
MAX_BUCKETS: Final = 100_000
"""Most aggregation periods per attribute (e.g. PT1M over ten years is refused)."""
_VALUES_KEY: Final[Mapping[str, str]] = {
    "Property": "values",
    "GeoProperty": "values",
    "Relationship": "objects",
    "LanguageProperty": "languageMaps",
    "VocabProperty": "vocabs",
    "ListProperty": "valueLists",
    "ListRelationship": "objectLists",
    "JsonProperty": "jsons",
}
_TIME_PARAMS: Final = ("timerel", "timeAt", "endTimeAt", "timeproperty")
_READ_PARAMS: Final = frozenset(
    {*_TIME_PARAMS, "attrs", "options", "format", "lastN", "aggrMethods", "aggrPeriodDuration", "datasetId",
     "local"}
)
_QUERY_PARAMS: Final = frozenset({*_READ_PARAMS, "id", "type", "idPattern", "q", "limit", "offset", "count"})
_GEO_PARAMS: Final = frozenset({"georel", "geometry", "coordinates", "geoproperty", "scopeQ", "lang"})

class DatabaseHolder:
    """Set up with the app, filled once the app starts (its state cannot change after)."""

    db: Database | None = None


DB_KEY: Final = web.AppKey("jonction.store.temporal_db", DatabaseHolder)
"""The temporal API's own connection to the store file."""


# --------------------------------------------------------------------------- parameters


@dataclass(slots=True)
class TemporalRequest:
    """Everything a temporal read needs, validated."""

    selector: EntitySelector
    tf: TimeFilter
    representation: str = "normalized"
    """normalized, temporalValues or aggregatedValues."""
    sys_attrs: bool = False
    last_n: int | None = None
    methods: list[str] = field(default_factory=list)
    period: history.Duration = field(default_factory=history.Duration)
    q: QExpr | None = None
    time_property: str = "observedAt"


def _representation(options: str | None, fmt: str | None) -> tuple[str, bool]:
    representation: str | None = None
    sys_attrs = False
    for item in (options or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item in ("temporalValues", "aggregatedValues", "normalized"):
            if representation is not None and representation != item:
                raise bad_request(f"options: {representation} and {item} cannot be combined")
            representation = item
        elif item == "sysAttrs":
            sys_attrs = True
        elif item in ("keyValues", "concise", "simplified"):
            representation = _same(representation, "temporalValues")
        else:
            raise bad_request(f"options: unknown or unsupported option {item!r} for the temporal API")
    if fmt is not None:
        chosen = {"normalized": "normalized", "temporalValues": "temporalValues", "simplified": "temporalValues",
                  "aggregatedValues": "aggregatedValues"}.get(fmt)
        if chosen is None:
            raise bad_request(f"format: {fmt!r} is not one of normalized, temporalValues, aggregatedValues")
        representation = _same(representation, chosen)
    return representation or "normalized", sys_attrs


def _same(current: str | None, chosen: str) -> str:
    if current is not None and current != chosen:
        raise bad_request(f"the temporal representations {current} and {chosen} cannot be combined")
    return chosen


def _read_request(
    ngsi: api.NgsiContext, ctx: Context, params: Mapping[str, Any], temporal_q: Mapping[str, Any] | None = None
) -> TemporalRequest:
    source = temporal_q if temporal_q is not None else params
    tf = history.time_filter(
        _opt_str(source, "timerel"), _opt_str(source, "timeAt"), _opt_str(source, "endTimeAt"),
        _opt_str(source, "timeproperty"),
    )
    representation, sys_attrs = _representation(_opt_str(params, "options"), _opt_str(params, "format"))
    req = TemporalRequest(EntitySelector(ngsi.tenant), tf, representation, sys_attrs)
    req.time_property = _opt_str(source, "timeproperty") or "observedAt"
    req.last_n = history.check_limit(_opt_str(params, "lastN"), "lastN", MAX_LAST_N)
    if representation == "aggregatedValues":
        req.methods = history.parse_methods(_opt_str(params, "aggrMethods"))
        req.period = history.parse_duration(_opt_str(params, "aggrPeriodDuration") or "P0D")
    elif "aggrMethods" in params or "aggrPeriodDuration" in params:
        raise bad_request("aggrMethods and aggrPeriodDuration need options=aggregatedValues")
    attrs = params.get("attrs")
    if isinstance(attrs, str):
        attrs = [a.strip() for a in attrs.split(",") if a.strip()]
    if attrs is not None:
        if not isinstance(attrs, list) or not all(isinstance(a, str) for a in attrs):
            raise bad_request("attrs must be a list of attribute names")
        if len(attrs) > ngsi.settings.max_ids:
            raise NgsiError("TooComplexQuery", f"attrs: more than {ngsi.settings.max_ids} names")
        req.selector.attrs = sorted({ctx.expand_attr_name(a, "attrs") for a in attrs})
    dataset_ids = _opt_str(params, "datasetId")
    if dataset_ids is not None:
        req.selector.dataset_ids = [d for d in dataset_ids.split(",") if d]
    return req


def _opt_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    return value


def _check_geo(params: Mapping[str, Any]) -> None:
    for name in _GEO_PARAMS:
        if name in params:
            raise NgsiError("NotImplemented", f"{name} is not supported by this store's temporal API")


def _entity_filters(ngsi: api.NgsiContext, ctx: Context, req: TemporalRequest, params: Mapping[str, Any]) -> None:
    ids = params.get("id")
    if isinstance(ids, str):
        ids = [i for i in ids.split(",") if i]
    if ids is not None:
        if len(ids) > ngsi.settings.max_ids:
            raise NgsiError("TooComplexQuery", f"id: more than {ngsi.settings.max_ids} ids")
        for entity_id in ids:
            if not model.is_uri(entity_id):
                raise bad_request(f"id: {entity_id!r} is not a URI")
        req.selector.ids = list(ids)
    types = _opt_str(params, "type")
    if types is not None:
        texpr = parse_type_expression(types)
        expand = ctx.expand_term
        req.selector.type_match = lambda found: texpr.matches(found, expand)
    pattern = _opt_str(params, "idPattern")
    if pattern is not None:
        if len(pattern) > ngsi.settings.max_id_pattern:
            raise NgsiError("TooComplexQuery", "idPattern too long")
        compile_user_pattern(pattern, "idPattern")  # RE2 syntax, linear time
        req.selector.id_pattern = pattern
    q = _opt_str(params, "q")
    if q is not None:
        req.q = parse_q(q)


# --------------------------------------------------------------------------- reading


@dataclass(slots=True)
class _Page:
    entities: list[dict[str, Any]]
    total: int
    partial: tuple[int, int] | None = None
    """(first, last) times actually returned when an attribute was cut at MAX_INSTANCES."""


def _read_entities(
    conn: sqlite3.Connection,
    req: TemporalRequest,
    ctx: Context,
    *,
    limit: int | None,
    offset: int,
    expand: Callable[[str], str],
) -> _Page:
    found = history.find_entities(conn, req.selector)
    if req.q is not None:
        q = req.q
        kept = []
        # only the attributes the query names are read; a term holds when any instance in the
        # window satisfies it (the entity "matched q at some time in the interval")
        q_attrs = sorted({expand(a) for a in q.attributes()})
        for entity_id, types in found:
            doc: dict[str, Any] = {"id": entity_id, "type": types}
            for series in history.series_of(conn, EntitySelector(req.selector.tenant, attrs=q_attrs), [entity_id]):
                insts = history.instances(conn, series, req.tf, limit=MAX_INSTANCES)
                doc.setdefault(series.attr, []).extend(i.expanded() for i in insts)
            if q.evaluate(doc, expand):
                kept.append((entity_id, types))
        found = kept
    total = len(found)
    page = found[offset:] if limit is None else found[offset : offset + limit]
    series_by_entity: dict[str, list[Series]] = {}
    for series in history.series_of(conn, req.selector, [e for e, _ in page]):
        series_by_entity.setdefault(series.entity_id, []).append(series)
    out = []
    state = _Budget(MAX_RESPONSE_INSTANCES)
    for entity_id, types in page:
        out.append(_render_entity(conn, req, ctx, entity_id, types, series_by_entity.get(entity_id, []), state))
    partial = None
    if state.cut and state.first is not None and state.last is not None:
        partial = (state.first, state.last)
    return _Page(out, total, partial)


@dataclass(slots=True)
class _Budget:
    """Instances left for this answer, and the time span of what was returned."""

    left: int
    first: int | None = None
    last: int | None = None
    cut: bool = False

    def saw(self, insts: Sequence[Instance], time_property: str) -> None:
        if not insts:
            return
        low, high = _moment(insts[0], time_property), _moment(insts[-1], time_property)
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)


def _moment(inst: Instance, time_property: str) -> int:
    if time_property == "createdAt":
        return inst.created_at
    if time_property == "modifiedAt":
        return inst.modified_at
    return inst.observed_at if inst.observed_at is not None else inst.created_at


def _render_entity(
    conn: sqlite3.Connection,
    req: TemporalRequest,
    ctx: Context,
    entity_id: str,
    types: Sequence[str],
    series_list: Sequence[Series],
    budget: _Budget,
) -> dict[str, Any]:
    compact_types = [ctx.compact_iri(t) for t in types]
    entity: dict[str, Any] = {"id": entity_id, "type": compact_types[0] if len(compact_types) == 1 else compact_types}
    for series in series_list:
        name = ctx.compact_iri(series.attr)
        if req.representation == "aggregatedValues":
            item = _aggregated(conn, req, series)
            if item is not None:
                entity.setdefault(name, []).append(item)
            continue
        cap = min(MAX_INSTANCES, budget.left)
        if cap <= 0:
            budget.cut = True  # the answer is full: later attributes are left for the next request
            continue
        last_n = min(req.last_n, cap) if req.last_n is not None else None
        insts = history.instances(conn, series, req.tf, last_n=last_n, limit=None if last_n else cap + 1)
        if not insts:
            continue
        if last_n is None and len(insts) > cap:
            insts = insts[:cap]
            budget.cut = True
        budget.left -= len(insts)
        budget.saw(insts, req.time_property)
        if req.representation == "temporalValues":
            entity.setdefault(name, []).append(_temporal_values(ctx, series, insts, req.time_property))
        else:
            entity.setdefault(name, []).extend(
                ctx.compact_instance(i.expanded(sys_attrs=req.sys_attrs)) for i in insts
            )
    for key, value in list(entity.items()):
        # one dataset: the attribute is one object in the simplified forms; normalized stays an array
        if key not in ("id", "type") and req.representation != "normalized" and len(value) == 1:
            entity[key] = value[0]
    return entity


def _temporal_values(ctx: Context, series: Series, insts: Sequence[Instance], time_property: str) -> dict[str, Any]:
    kind = insts[-1].kind
    out: dict[str, Any] = {"type": kind}
    values = []
    for inst in insts:
        value = inst.value
        if kind == "VocabProperty":
            value = ctx.compact_iri(value) if isinstance(value, str) else [ctx.compact_iri(v) for v in value]
        values.append([value, history.from_micros(_moment(inst, time_property))])
    out[_VALUES_KEY.get(kind, "values")] = values
    if series.dataset_id:
        out["datasetId"] = series.dataset_id
    return out


def _aggregated(conn: sqlite3.Connection, req: TemporalRequest, series: Series) -> dict[str, Any] | None:
    span = history.time_span(conn, series, req.tf)
    if span is None:
        return None
    period = req.period
    if not period.is_zero and period.months == 0:
        start = req.tf.start if req.tf.start is not None else span[0]
        stop = req.tf.end if req.tf.end is not None else span[1] + 1
        if (stop - start) // max(period.micros, 1) > MAX_BUCKETS:
            raise NgsiError("TooComplexQuery", f"more than {MAX_BUCKETS} aggregation periods per attribute")
    buckets = history.aggregate(conn, series, req.tf, period, methods=req.methods)
    kind_row = conn.execute(
        "SELECT kind FROM history_instances WHERE series_id=? ORDER BY rowid DESC LIMIT 1", (series.series_id,)
    ).fetchone()
    out: dict[str, Any] = {"type": kind_row[0] if kind_row else "Property"}
    for method in req.methods:
        out[method] = [
            [b.result(method), history.from_micros(b.start), history.from_micros(b.end)] for b in buckets
        ]
    if series.dataset_id:
        out["datasetId"] = series.dataset_id
    return out


# --------------------------------------------------------------------------- handlers


def _db(request: web.Request) -> Database:
    holder = request.config_dict.get(DB_KEY)
    db = holder.db if holder is not None else None
    if db is None:
        raise NgsiError("NotImplemented", "the temporal API needs the SQLite store")
    return db


async def _known_tenant(ngsi: api.NgsiContext, db: Database) -> None:
    if await ngsi.storage.tenant_exists(ngsi.tenant):
        return
    tenant = ngsi.tenant

    def run(conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT 1 FROM history_entities WHERE tenant=? LIMIT 1", (tenant,)).fetchone() is not None

    if not await db.read(run):
        raise NgsiError("NonexistentTenant", f"tenant {ngsi.tenant!r} does not exist")


def _content_range(page: _Page) -> dict[str, str]:
    if page.partial is None:
        return {}
    first, last = page.partial
    return {"Content-Range": f"date-time {history.from_micros(first)}-{history.from_micros(last)}/{MAX_INSTANCES}"}


async def _query(
    request: web.Request, ngsi: api.NgsiContext, ctx: Context, req: TemporalRequest, media: str
) -> web.Response:
    db = _db(request)
    await _known_tenant(ngsi, db)
    limit, offset, count = api.paging(ngsi)
    page = await db.read(
        lambda conn: _read_entities(conn, req, ctx, limit=limit, offset=offset, expand=ctx.expand_term)
    )
    headers = {api.COUNT_HEADER: str(page.total)} if count else {}
    headers.update(_content_range(page))
    links = api.page_links(ngsi, limit, offset, offset + limit < page.total)
    response = api.respond(ngsi, page.entities, media=media, headers=headers, links=links)
    if page.partial is not None:
        response.set_status(206)
    return response


async def query_temporal(request: web.Request) -> web.Response:
    """GET /temporal/entities (§6.18.3.2)."""
    _check_geo(request.query)
    api.check_params(request, _QUERY_PARAMS)
    ngsi = await api.ngsi_context(request, must_exist=False)
    media = api.negotiate(request)
    ctx = ngsi.context()
    req = _read_request(ngsi, ctx, request.query)
    _entity_filters(ngsi, ctx, req, request.query)
    return await _query(request, ngsi, ctx, req, media)


async def query_temporal_post(request: web.Request) -> web.Response:
    """POST /temporal/entityOperations/query (§6.24.3.1): a Query body with temporalQ."""
    api.check_params(request, {"limit", "offset", "count", "options", "format", "lastN", "aggrMethods",
                               "aggrPeriodDuration", "local"})
    ngsi = await api.ngsi_context(request, must_exist=False)
    media = api.negotiate(request)
    body = await api.read_body(request)
    data = body.data
    if not isinstance(data, Mapping) or data.get("type") != "Query":
        raise bad_request("the body must be a Query object (type 'Query')")
    known = {"type", "entities", "attrs", "q", "temporalQ", "@context", "geoQ", "scopeQ", "lang", "csf"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise bad_request(f"/{unknown[0]}: is not a member of a Query")
    for name in ("geoQ", "scopeQ", "lang", "csf"):
        if name in data:
            raise NgsiError("NotImplemented", f"/{name} is not supported by this store's temporal API")
    ctx = body.context_for(ngsi)
    temporal_q = data.get("temporalQ") or {}
    if not isinstance(temporal_q, Mapping):
        raise bad_request("/temporalQ must be an object")
    params: dict[str, Any] = dict(request.query)
    if "attrs" in data:
        params["attrs"] = data["attrs"]
    req = _read_request(ngsi, ctx, params, temporal_q)
    filters: dict[str, Any] = {}
    if "q" in data:
        filters["q"] = data["q"]
    entities = data.get("entities")
    if entities is not None:
        if not isinstance(entities, list) or len(entities) != 1 or not isinstance(entities[0], Mapping):
            raise NgsiError("NotImplemented", "/entities: exactly one EntitySelector is supported")
        selector = entities[0]
        if "type" in selector:
            filters["type"] = selector["type"]
        if "id" in selector:
            filters["id"] = [selector["id"]]
        if "idPattern" in selector:
            filters["idPattern"] = selector["idPattern"]
    _entity_filters(ngsi, ctx, req, filters)
    return await _query(request, ngsi, ctx, req, media)


def _entity_id(request: web.Request) -> str:
    entity_id = request.match_info["entity_id"]
    if not model.is_uri(entity_id):
        raise bad_request(f"entity id {entity_id!r} is not a URI")
    return entity_id


async def retrieve_temporal(request: web.Request) -> web.Response:
    """GET /temporal/entities/{id} (§6.19.3.1)."""
    _check_geo(request.query)
    api.check_params(request, _READ_PARAMS | {"type"})
    ngsi = await api.ngsi_context(request, must_exist=False)
    media = api.negotiate(request)
    db = _db(request)
    await _known_tenant(ngsi, db)
    ctx = ngsi.context()
    req = _read_request(ngsi, ctx, request.query)
    entity_id = _entity_id(request)
    req.selector.ids = [entity_id]
    _entity_filters(ngsi, ctx, req, {"type": request.query["type"]} if "type" in request.query else {})
    page = await db.read(
        lambda conn: _read_entities(conn, req, ctx, limit=None, offset=0, expand=ctx.expand_term)
    )
    if not page.entities:
        raise not_found(f"entity {entity_id} has no temporal evolution here")
    response = api.respond(ngsi, page.entities[0], media=media, headers=_content_range(page))
    if page.partial is not None:
        response.set_status(206)
    return response


def _temporal_rows(
    ctx: Context, tenant: str, data: Mapping[str, Any], entity_id: str, types: list[str] | None, now: str
) -> tuple[list[str], list[history.HistoryRow]]:
    """Expand a temporal entity fragment to history rows (every instance stamped ``now``)."""
    if types is None:
        if "type" not in data:
            raise bad_request("/type: the entity type is missing")
        types = ctx.expand_type(data["type"])
    rows: list[history.HistoryRow] = []
    for name, value in data.items():
        if name in model.ENTITY_MEMBERS:
            continue
        iri = ctx.expand_attr_name(name, f"/{name}")
        items = value if isinstance(value, list) and all(isinstance(v, Mapping) for v in value) else [value]
        for index, item in enumerate(items):
            (inst,) = ctx.expand_attribute(item, f"/{name}/{index}")
            inst = {**inst, "createdAt": now, "modifiedAt": now}
            rows.append((tenant, entity_id, types, iri, inst))
    if len(rows) > 100_000:
        raise NgsiError("PayloadTooLarge", "more than 100000 instances in one temporal write")
    return types, rows


async def create_temporal(request: web.Request) -> web.Response:
    """POST /temporal/entities (§6.18.3.1): 201 when new, 204 when instances were added."""
    api.check_params(request, ())
    ngsi = await api.ngsi_context(request, must_exist=False)
    db = _db(request)
    body = await api.read_body(request)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be one temporal entity (a JSON object)")
    ctx = body.context_for(ngsi)
    data = {k: v for k, v in body.data.items() if k != "@context"}
    entity_id = data.get("id")
    if not model.is_uri(entity_id):
        raise bad_request(f"/id: entity id {entity_id!r} is missing or not a URI")
    now = _now()
    types, rows = _temporal_rows(ctx, ngsi.tenant, data, str(entity_id), None, now)
    tenant = ngsi.tenant

    def run(conn: sqlite3.Connection) -> bool:
        existed = history.entity_types(conn, tenant, str(entity_id))
        if existed is not None:
            merged = existed + [t for t in types if t not in existed]
            rows[:] = [(t, e, merged, a, i) for t, e, _, a, i in rows]
            if not rows:
                conn.execute("UPDATE history_entities SET types=? WHERE tenant=? AND entity_id=?",
                             (history.dumps(merged), tenant, entity_id))
        elif not rows:
            conn.execute("INSERT INTO history_entities (tenant, entity_id, types) VALUES (?, ?, ?)",
                         (tenant, entity_id, history.dumps(types)))
        history.record_many(conn, rows)
        return existed is None

    created = await db.write(run)
    if not created:
        return api.no_content()
    response = web.Response(status=201)
    response.headers["Location"] = (
        f"{ngsi.settings.base_path}/temporal/entities/{quote(str(entity_id), safe=':@!$&()*+,;=-._~')}"
    )
    return response


async def append_temporal_attrs(request: web.Request) -> web.Response:
    """POST /temporal/entities/{id}/attrs (§6.20.3.1): add instances; 204."""
    api.check_params(request, ())
    ngsi = await api.ngsi_context(request, must_exist=False)
    db = _db(request)
    entity_id = _entity_id(request)
    body = await api.read_body(request)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be a JSON object of attributes")
    ctx = body.context_for(ngsi)
    data = {k: v for k, v in body.data.items() if k not in ("@context", "id", "type")}
    tenant = ngsi.tenant
    now = _now()

    def run(conn: sqlite3.Connection) -> None:
        types = history.entity_types(conn, tenant, entity_id)
        if types is None:
            raise not_found(f"entity {entity_id} has no temporal evolution here")
        _, rows = _temporal_rows(ctx, tenant, data, entity_id, types, now)
        history.record_many(conn, rows)

    await db.write(run)
    return api.no_content()


async def delete_temporal(request: web.Request) -> web.Response:
    """DELETE /temporal/entities/{id} (§6.19.3.2): forget the whole temporal evolution."""
    api.check_params(request, ())
    ngsi = await api.ngsi_context(request, must_exist=False)
    db = _db(request)
    entity_id = _entity_id(request)
    tenant = ngsi.tenant
    if not await db.write(lambda conn: history.delete_entity(conn, tenant, entity_id)):
        raise not_found(f"entity {entity_id} has no temporal evolution here")
    return api.no_content()


async def delete_temporal_attr(request: web.Request) -> web.Response:
    """DELETE /temporal/entities/{id}/attrs/{attr} (§6.21.3.1), with datasetId or deleteAll."""
    api.check_params(request, ("datasetId", "deleteAll"))
    ngsi = await api.ngsi_context(request, must_exist=False)
    db = _db(request)
    entity_id = _entity_id(request)
    iri = ngsi.context().expand_attr_name(request.match_info["attr"], "attrId")
    delete_all = request.query.get("deleteAll", "false") == "true"
    dataset = request.query.get("datasetId")
    if delete_all and dataset is not None:
        raise bad_request("datasetId and deleteAll cannot be combined")
    tenant = ngsi.tenant
    target = None if delete_all else (dataset or "")
    if not await db.write(lambda conn: history.delete_attribute(conn, tenant, entity_id, iri, target)):
        raise not_found(f"attribute {request.match_info['attr']} of {entity_id} has no temporal evolution here")
    return api.no_content()


async def delete_temporal_instance(request: web.Request) -> web.Response:
    """DELETE /temporal/entities/{id}/attrs/{attr}/{instanceId} (§6.22.3.2)."""
    api.check_params(request, ())
    ngsi = await api.ngsi_context(request, must_exist=False)
    db = _db(request)
    entity_id = _entity_id(request)
    iri = ngsi.context().expand_attr_name(request.match_info["attr"], "attrId")
    instance_id = request.match_info["instance_id"]
    tenant = ngsi.tenant

    def run(conn: sqlite3.Connection) -> bool:
        rowid = history.find_instance(conn, tenant, entity_id, iri, instance_id)
        if rowid is None:
            return False
        conn.execute("DELETE FROM history_instances WHERE rowid=?", (rowid,))
        return True

    if not await db.write(run):
        raise not_found(f"instance {instance_id} of {request.match_info['attr']} does not exist")
    return api.no_content()


async def patch_temporal_instance(request: web.Request) -> web.Response:
    """PATCH /temporal/entities/{id}/attrs/{attr}/{instanceId} (§6.22.3.1): replace one instance."""
    api.check_params(request, ())
    ngsi = await api.ngsi_context(request, must_exist=False)
    db = _db(request)
    entity_id = _entity_id(request)
    body = await api.read_body(request, merge_patch=True)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be a JSON object holding the attribute")
    ctx = body.context_for(ngsi)
    name = request.match_info["attr"]
    iri = ctx.expand_attr_name(name, "attrId")
    data = {k: v for k, v in body.data.items() if k != "@context"}
    fragment = data.get(name, data)
    (instance,) = ctx.expand_attribute(fragment, f"/{name}")
    instance_id = request.match_info["instance_id"]
    tenant = ngsi.tenant
    instance = {**instance, "modifiedAt": _now()}

    def run(conn: sqlite3.Connection) -> bool:
        rowid = history.find_instance(conn, tenant, entity_id, iri, instance_id)
        if rowid is None:
            return False
        history.replace_instance(conn, rowid, instance)
        return True

    if not await db.write(run):
        raise not_found(f"instance {instance_id} of {name} does not exist")
    return api.no_content()


def _now() -> str:
    return history.from_micros(history.now_micros())


def setup_temporal(app: web.Application, storage: Storage) -> None:
    """Add the /temporal routes; the history tables are read through a connection of our own."""

    holder = DatabaseHolder()
    app[DB_KEY] = holder

    async def database(_: web.Application) -> AsyncIterator[None]:
        path = getattr(storage, "path", None)
        holder.db = Database(path, setup=history.ensure_schema) if path is not None else None
        yield
        if holder.db is not None:
            await holder.db.close()
            holder.db = None

    app.cleanup_ctx.append(database)
    r = app.router
    r.add_get("/temporal/entities", query_temporal, allow_head=False)
    r.add_post("/temporal/entities", create_temporal)
    r.add_get("/temporal/entities/{entity_id}", retrieve_temporal, allow_head=False)
    r.add_delete("/temporal/entities/{entity_id}", delete_temporal)
    r.add_post("/temporal/entities/{entity_id}/attrs", append_temporal_attrs)
    r.add_delete("/temporal/entities/{entity_id}/attrs/{attr}", delete_temporal_attr)
    r.add_patch("/temporal/entities/{entity_id}/attrs/{attr}/{instance_id}", patch_temporal_instance)
    r.add_delete("/temporal/entities/{entity_id}/attrs/{attr}/{instance_id}", delete_temporal_instance)
    r.add_post("/temporal/entityOperations/query", query_temporal_post)
