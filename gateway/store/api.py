"""The entity endpoints of the store (ETSI GS CIM 009 V1.9.1 §5.6, §5.7, §6.4-§6.7).

Create, retrieve, query, update, append, merge, replace and delete entities and attributes, Purge
Entities, and the query-parameter parsing they share with batch and temporal queries. The HTTP rules
common to every endpoint (media types, @context, ProblemDetails, paging) are in
:mod:`gateway.store.http`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from gateway import model
from gateway.store import geo as geo_mod
from gateway.store import join as join_mod
from gateway.store import operations as ops
from gateway.store import patterns
from gateway.store import query as query_mod
from gateway.store.base import Change, Doc, QuerySpec
from gateway.store.http import (
    COUNT_HEADER,
    GEO_JSON,
    JSON,
    LD_JSON,
    Body,
    NgsiContext,
    bool_param,
    check_params,
    entity_url,
    negotiate,
    ngsi_context,
    no_content,
    page_links,
    paging,
    read_body,
    respond,
    split_list,
)
from gateway.store.jsonld import Context
from gateway.store.problems import NgsiError, bad_request, invalid_request, not_found
from gateway.store.representation import (
    RenderOptions,
    omitted,
    parse_options,
    parse_projection,
    render,
    render_feature,
    selection_from_pick,
)

log = logging.getLogger("jonction.store.api")

# --------------------------------------------------------------------------- parameters


def _expand_names(ctx: Context, names: Sequence[str] | None, what: str, limit: int) -> frozenset[str] | None:
    if names is None:
        return None
    if len(names) > limit:
        raise NgsiError("TooComplexQuery", f"{what}: more than {limit} names")
    return frozenset(ctx.expand_attr_name(n, what) for n in names)


def render_options(ngsi: NgsiContext, ctx: Context, params: Mapping[str, Any]) -> RenderOptions:
    """attrs / pick / omit / options / format / lang / datasetId → RenderOptions."""
    # options=count is the FIWARE clients' spelling of count=true (FiLiP, ngsildclient): accepted, see paging()
    form, sys_attrs, _ = parse_options(params.get("options"), params.get("format"), unknown=invalid_request,
                                       allowed=frozenset({"count"}))
    attrs = split_list(params.get("attrs"))
    pick_text = params.get("pick")
    omit_text = params.get("omit")
    if pick_text is not None and omit_text is not None:
        raise bad_request("pick and omit cannot be combined")
    if attrs is not None and (pick_text is not None or omit_text is not None):
        raise bad_request("attrs cannot be combined with pick or omit (§4.21)")
    limit = ngsi.settings.max_ids
    pick = parse_projection(pick_text, "pick") if pick_text is not None else None
    omit = parse_projection(omit_text, "omit") if omit_text is not None else None
    keep_members = None
    omit_set: frozenset[str] = frozenset()
    expanded_attrs = _expand_names(ctx, attrs, "attrs", limit)
    if pick is not None:
        selection = selection_from_pick(pick, lambda n: ctx.expand_attr_name(n, "pick"))
        keep_members = selection["keep_members"]
        expanded_attrs = selection["attrs"]
    if omit is not None:
        omit_set = omitted(omit, lambda n: ctx.expand_attr_name(n, "omit"))
    lang = params.get("lang")
    if lang is not None and (not lang or len(lang) > 100):
        raise bad_request("lang must be a language tag")
    dataset_ids = split_list(params.get("datasetId"))
    return RenderOptions(
        form=form,
        sys_attrs=sys_attrs,
        attrs=expanded_attrs,
        keep_members=keep_members,
        omit=omit_set,
        lang=lang,
        dataset_ids=frozenset(dataset_ids) if dataset_ids is not None else None,
        pick=pick,
        omit_tree=omit,
    )


def _check_id_pattern(ngsi: NgsiContext, pattern: str) -> str:
    """Validate an idPattern for the RE2 engine the store matches it with (§4.9 regex, searched)."""
    if len(pattern) > ngsi.settings.max_id_pattern:
        raise NgsiError("TooComplexQuery", f"idPattern longer than {ngsi.settings.max_id_pattern} characters")
    patterns.compile_user_pattern(pattern, "idPattern")
    return pattern


@dataclass(slots=True)
class QueryParams:
    """The filter part of a query, as strings, from GET parameters or a POST Query body."""

    ids: list[str] | None = None
    types: str | None = None
    id_pattern: str | None = None
    attrs: list[str] | None = None
    q: str | None = None
    scope_q: str | None = None
    georel: str | None = None
    geometry: str | None = None
    coordinates: Any = None
    geoproperty: str | None = None
    order_by: str | None = None
    local: bool = False

    def any_filter(self) -> bool:
        """True when at least one selector is given (id and idPattern included; Purge Entities needs one)."""
        return any(
            v is not None for v in (self.ids, self.types, self.id_pattern, self.attrs, self.q, self.scope_q,
                                    self.georel)
        )

    def query_restriction(self) -> bool:
        """True when one of the restrictions §6.4.3.2 requires of a query is given: type, attrs, q, a
        geo-query (or scopeQ). Entity ids or an idPattern alone do not make a query (ETSI 019_03_05)."""
        return any(v is not None for v in (self.types, self.attrs, self.q, self.scope_q, self.georel))


def build_query(ngsi: NgsiContext, ctx: Context, qp: QueryParams, *, limit: int, offset: int, count: bool) -> QuerySpec:
    """Turn query parameters into a QuerySpec (SQL prefilters + exact Python predicate)."""
    settings = ngsi.settings
    spec = QuerySpec(limit=limit, offset=offset, count=count)
    expand = ctx.expand_term
    predicates: list[Callable[[Doc], bool]] = []
    if qp.ids is not None:
        if len(qp.ids) > settings.max_ids:
            raise NgsiError("TooComplexQuery", f"id: more than {settings.max_ids} ids")
        for i in qp.ids:
            if not model.is_uri(i):
                raise bad_request(f"id: {i!r} is not a URI")
        spec.ids = qp.ids
    if qp.types is not None:
        texpr = query_mod.parse_type_expression(qp.types)
        names = texpr.types()
        if len(names) > settings.max_ids:
            raise NgsiError("TooComplexQuery", f"type: more than {settings.max_ids} names")
        spec.types = sorted({expand(n) for n in names})
        if not texpr.is_simple():
            spec.type_match = lambda types: texpr.matches(types, expand)
    if qp.id_pattern is not None:
        spec.id_pattern = _check_id_pattern(ngsi, qp.id_pattern)
    if qp.attrs is not None:
        reserved = sorted({"id", "type"}.intersection(qp.attrs))
        if reserved:
            raise bad_request(f"attrs: {', '.join(reserved)} are entity members, not attribute names")
        spec.attrs = sorted(_expand_names(ctx, qp.attrs, "attrs", settings.max_ids) or ())
    if qp.q is not None:
        qexpr = query_mod.parse_q(qp.q)
        predicates.append(lambda doc: qexpr.evaluate(doc, expand))
        spec.number_filters = _number_filters(qexpr, expand)
    if qp.scope_q is not None:
        sexpr = query_mod.parse_scope_q(qp.scope_q)
        predicates.append(lambda doc: sexpr.matches(doc.get("scope")))
    if qp.georel is not None or qp.geometry is not None or qp.coordinates is not None:
        gq = geo_mod.parse_geo_query(qp.georel, qp.geometry, qp.coordinates, qp.geoproperty or "location")
        if len(gq.shape.vertices()) > settings.max_geo_vertices:
            raise NgsiError("TooComplexQuery", f"geometry with more than {settings.max_geo_vertices} positions")
        geo_iri = expand(gq.geoproperty)
        box = gq.bbox()
        if box is not None:
            spec.bbox = box
            spec.geoproperty = geo_iri

        near_point = (
            gq.georel == "near" and gq.geometry == "Point" and gq.max_distance is not None and len(gq.shape.points) == 1
        )
        ref = gq.shape.points[0] if near_point else (0.0, 0.0)
        limit_m = gq.max_distance or 0.0

        def geo_match(doc: Doc) -> bool:
            for inst in doc.get(geo_iri) or ():
                if inst.get("type") != "GeoProperty":
                    continue
                value = inst.get("value")
                if near_point and type(value) is dict and value.get("type") == "Point":
                    # Point to point (the common near query): great-circle distance directly.
                    coords = value.get("coordinates")
                    if isinstance(coords, list) and len(coords) >= 2:
                        if geo_mod.haversine((float(coords[0]), float(coords[1])), ref) <= limit_m:
                            return True
                        continue
                if gq.matches(value):
                    return True
            return False

        # The geo test first: the box prefilter let through candidates it mostly rejects cheaply.
        predicates.insert(0, geo_match)
    elif qp.geoproperty is not None:
        raise bad_request("geoproperty given without georel, geometry and coordinates")
    if predicates:
        spec.predicate = (lambda doc: all(p(doc) for p in predicates)) if len(predicates) > 1 else predicates[0]
    if qp.order_by is not None:
        spec.sort_key, spec.sort_reverse = _order_by(ctx, qp.order_by)
    return spec


def _number_filters(qexpr: query_mod.QExpr, expand: Callable[[str], str]) -> list[tuple[str, str, tuple[float, ...]]]:
    """SQL-able prefilters from the numeric comparisons that every match must satisfy (top-level AND)."""
    root = qexpr.root
    terms = [root] if isinstance(root, query_mod.Term) else list(root.parts) if root.op == ";" else []
    out: list[tuple[str, str, tuple[float, ...]]] = []
    for term in terms:
        if not isinstance(term, query_mod.Term) or term.path.sub or term.path.trail:
            continue
        iri = expand(term.path.attr)
        if '"' in iri or "\\" in iri:
            continue
        if term.op in (">", ">=", "<", "<=") and len(term.values) == 1 and term.values[0].kind == "number":
            out.append((iri, term.op, (term.values[0].value,)))
        elif term.op == "==" and term.range is not None:
            low, high = term.range
            if low.kind == "number" and high.kind == "number":
                out.append((iri, "..", (low.value, high.value)))
        elif term.op == "==" and term.values and all(v.kind == "number" for v in term.values):
            out.append((iri, "==", tuple(v.value for v in term.values)))
    return out


_ORDER_MEMBERS: Final = frozenset({"id", "type", "createdAt", "modifiedAt", "scope"})


def _order_by(ctx: Context, text: str) -> tuple[Callable[[Doc], Any], bool]:
    """``orderBy`` (§4.23): ``path[;asc|;desc]`` items separated by commas, where a path is an entity
    member (id, type, createdAt...) or ``attr[.sub...]`` (a sub-attribute or an attribute's
    createdAt/observedAt...). Sorts on the first instance's value; missing values sort first."""
    items: list[tuple[Callable[[Doc], Any], bool]] = []
    for item in text.split(","):
        path, _, direction = item.partition(";")
        if direction not in ("", "asc", "desc") or not path or len(items) >= 16:
            raise bad_request(f"orderBy {text!r}: expected <attribute>[;asc|;desc] items separated by commas")
        items.append((_order_getter(ctx, path), direction == "desc"))
    if len(items) == 1 and not items[0][1]:
        return items[0][0], False
    if len(items) == 1:
        return items[0][0], True

    def key(doc: Doc) -> Any:
        return query_mod.OrderKey(tuple((query_mod.sort_rank(get(doc)), desc) for get, desc in items))

    return key, False


def _order_getter(ctx: Context, path: str) -> Callable[[Doc], Any]:
    if path in _ORDER_MEMBERS:
        if path == "type":
            return lambda doc: ctx.compact_iri(doc["type"][0]) if doc.get("type") else None
        return lambda doc: doc.get(path)
    head, *subs = path.split(".")
    if not head or any(not s for s in subs):
        raise bad_request(f"orderBy: {path!r} is not an attribute path")
    iri = ctx.expand_attr_name(head, "orderBy")
    sub_keys = [s if s in query_mod.META_MEMBERS else ctx.expand_attr_name(s, "orderBy") for s in subs]

    def get(doc: Doc) -> Any:
        insts = doc.get(iri)
        node: Any = insts[0] if insts else None
        for index, sub in enumerate(sub_keys):
            if not isinstance(node, Mapping):
                return None
            node = node.get(sub)
            if isinstance(node, list):
                node = node[0] if node else None
            if sub in query_mod.META_MEMBERS and index == len(sub_keys) - 1:
                return node
        return query_mod.attribute_target(node) if node is not None else None

    return get


# --------------------------------------------------------------------------- entities


_QUERY_PARAMS: Final = frozenset(
    {"id", "type", "idPattern", "attrs", "pick", "omit", "q", "scopeQ", "georel", "geometry", "coordinates",
     "geoproperty", "geometryProperty", "lang", "limit", "offset", "count", "options", "format", "datasetId",
     "orderBy", "local", "join", "joinLevel"}
)
_RETRIEVE_PARAMS: Final = frozenset(
    {"attrs", "pick", "omit", "options", "format", "lang", "geometryProperty", "datasetId", "type", "local", "join",
     "joinLevel"}
)


def _entity_id(request: web.Request) -> str:
    entity_id = request.match_info["entity_id"]
    if not model.is_uri(entity_id):
        raise bad_request(f"entity id {entity_id!r} is not a URI")
    return entity_id


async def create_entity(request: web.Request) -> web.Response:
    """POST /entities (§6.4.3.1): 201 with Location; AlreadyExists 409."""
    check_params(request, ())
    ngsi = await ngsi_context(request, must_exist=False)
    body = await read_body(request)
    if not isinstance(body.data, Mapping):
        # JSON of the wrong shape (an array, a number) is not an entity at all: the request
        # itself is malformed (§5.5.2 InvalidRequest), unlike an object with wrong content.
        raise invalid_request("the body must be one entity (a JSON object)")
    ctx = body.context_for(ngsi)
    doc = ctx.expand_entity({k: v for k, v in body.data.items() if k != "@context"})
    result = await ngsi.storage.create_entities(ngsi.tenant, [doc])
    if result.errors:
        raise result.errors[0].error
    response = web.Response(status=201)
    response.headers["Location"] = entity_url(ngsi, doc["id"])
    return response


async def retrieve_entity(request: web.Request) -> web.Response:
    """GET /entities/{id} (§6.5.3.1)."""
    check_params(request, _RETRIEVE_PARAMS)
    ngsi = await ngsi_context(request)
    media = negotiate(request, (JSON, LD_JSON, GEO_JSON))
    entity_id = _entity_id(request)
    ctx = ngsi.context()
    opts = render_options(ngsi, ctx, request.query)
    joining = join_mod.parse_join(request.query.get("join"), request.query.get("joinLevel"))
    doc = await ngsi.storage.get_doc(ngsi.tenant, entity_id)
    if doc is None:
        raise not_found(f"entity {entity_id} does not exist")
    wanted_type = request.query.get("type")
    if wanted_type is not None:
        texpr = query_mod.parse_type_expression(wanted_type)
        if not texpr.matches(doc["type"], ctx.expand_term):
            raise not_found(f"entity {entity_id} is not of type {wanted_type}")
    if "attrs" in request.query and opts.attrs is not None and not opts.attrs.intersection(doc):
        # §5.7.1: an entity that has none of the requested attributes is not found
        raise not_found(f"entity {entity_id} has none of the attributes {request.query['attrs']}")
    if media == GEO_JSON:
        geometry = ctx.expand_term(request.query.get("geometryProperty", "location"))
        feature = render_feature(doc, ctx, opts, geometry)
        context_value = ctx.as_json()
        # §6.3.15: a GeoJSON answer carries the @context in its body
        feature["@context"] = context_value if isinstance(context_value, list) else [context_value]
        return respond(ngsi, feature, media=GEO_JSON)
    if joining is not None:
        entities = await join_mod.join_entities([doc], ctx, opts, _fetcher(ngsi), *joining)
        if not _has_members(entities[0]):
            raise not_found(f"nothing of entity {entity_id} is left after pick/omit")
        body: Any = entities[0] if joining[0] == "inline" or len(entities) == 1 else entities
        return respond(ngsi, body, media=media)
    rendered = render(doc, ctx, opts)
    if not _has_members(rendered):
        # §4.21: pick/omit that leave nothing of the entity answer ResourceNotFound
        raise not_found(f"nothing of entity {entity_id} is left after pick/omit")
    return respond(ngsi, rendered, media=media)


def _has_members(entity: Mapping[str, Any]) -> bool:
    return any(k != "@context" for k in entity)


def _fetcher(ngsi: NgsiContext) -> join_mod.Fetch:
    """The join fetch function over this request's tenant."""

    async def fetch(ids: Sequence[str]) -> Mapping[str, Doc]:
        result = await ngsi.storage.query(ngsi.tenant, QuerySpec(ids=list(ids), limit=len(ids)))
        return {d["id"]: d for d in result.docs}

    return fetch


async def query_entities(request: web.Request) -> web.Response:
    """GET /entities (§6.4.3.2)."""
    check_params(request, _QUERY_PARAMS)
    ngsi = await ngsi_context(request)
    media = negotiate(request, (JSON, LD_JSON, GEO_JSON))
    ctx = ngsi.context()
    query = request.query
    qp = QueryParams(
        ids=split_list(query.get("id")),
        types=query.get("type"),
        id_pattern=query.get("idPattern"),
        attrs=split_list(query.get("attrs")),
        q=query.get("q"),
        scope_q=query.get("scopeQ"),
        georel=query.get("georel"),
        geometry=query.get("geometry"),
        coordinates=query.get("coordinates"),
        geoproperty=query.get("geoproperty"),
        order_by=query.get("orderBy"),
        local=bool_param(request, "local"),
    )
    return await run_query(ngsi, ctx, qp, query, media)


async def run_query(
    ngsi: NgsiContext, ctx: Context, qp: QueryParams, render_params: Mapping[str, Any], media: str
) -> web.Response:
    """Shared by GET /entities and POST /entityOperations/query."""
    if not qp.query_restriction() and not qp.local and not ngsi.settings.allow_unfiltered_queries:
        # a strict deployment refuses to list a whole tenant; by default it is paginated like any query
        raise bad_request("unfiltered query: give at least one of type, attrs, q, scopeQ or a geo-query "
                          "(or local=true); id and idPattern alone are not enough (§6.4.3.2)")
    limit, offset, count = paging(ngsi)
    opts = render_options(ngsi, ctx, render_params)
    joining = join_mod.parse_join(render_params.get("join"), render_params.get("joinLevel"))
    spec = build_query(ngsi, ctx, qp, limit=limit, offset=offset, count=count)
    result = await ngsi.storage.query(ngsi.tenant, spec)
    headers = {COUNT_HEADER: str(result.count)} if result.count is not None else {}
    links = page_links(ngsi, limit, offset, result.more)
    if media == GEO_JSON:
        geometry = ctx.expand_term(str(render_params.get("geometryProperty", "location")))
        features = [render_feature(d, ctx, opts, geometry) for d in result.docs]
        # §6.3.15: a GeoJSON answer carries the @context in its body
        collection = {"type": "FeatureCollection", "features": features, "@context": ctx.as_json()}
        return respond(ngsi, collection, media=GEO_JSON, headers=headers, links=links)
    if joining is not None:
        entities = await join_mod.join_entities(result.docs, ctx, opts, _fetcher(ngsi), *joining)
    else:
        entities = [render(d, ctx, opts) for d in result.docs]
    if opts.pick is not None or opts.omit:
        # §4.21: an entity with nothing left after pick/omit is not part of the answer
        entities = [e for e in entities if _has_members(e)]
    return respond(ngsi, entities, media=media, headers=headers, links=links)


def _fragment(ngsi: NgsiContext, body: Body, entity_id: str) -> Doc:
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be a JSON object")
    ctx = body.context_for(ngsi)
    data = {k: v for k, v in body.data.items() if k != "@context"}
    given = data.pop("id", None)
    if given is not None and given != entity_id:
        raise bad_request(f"/id: {given!r} does not match the entity id in the path {entity_id!r}")
    fragment = ctx.expand_entity(data, partial=True)
    fragment["id"] = entity_id
    return fragment


async def _apply_one(ngsi: NgsiContext, change: Change) -> Any:
    results = await ngsi.storage.apply(ngsi.tenant, [change])
    result = results[0]
    if result.error is not None:
        raise result.error
    return result


def _update_result(ngsi: NgsiContext, fragment: Doc, not_updated: list[tuple[str, str]]) -> web.Response:
    # A 207 body is plain JSON whose attribute names are full IRIs (§6.3.6): the client's @context
    # may not even define the names it got wrong.
    failed = {name for name, _ in not_updated}
    body = {
        "updated": [n for n in ops.attr_names(fragment) if n not in failed],
        "notUpdated": [{"attributeName": n, "reason": reason} for n, reason in not_updated],
    }
    return respond(ngsi, body, status=207)


async def update_attrs(request: web.Request) -> web.Response:
    """PATCH /entities/{id}/attrs (§6.6.3.3): 204, or 207 with the attributes not updated."""
    check_params(request, ())
    ngsi = await ngsi_context(request)
    entity_id = _entity_id(request)
    body = await read_body(request, merge_patch=True)
    fragment = _fragment(ngsi, body, entity_id)
    body.context_for(ngsi)  # refuses a body whose @context is missing or unknown (400)
    result = await _apply_one(ngsi, Change(entity_id, ops.update_attrs(fragment, strict=True)))
    if result.not_updated:
        return _update_result(ngsi, fragment, result.not_updated)
    return no_content()


async def append_attrs(request: web.Request) -> web.Response:
    """POST /entities/{id}/attrs (§6.6.3.1), ``options=noOverwrite``: 204 or 207."""
    check_params(request, ("options",))
    ngsi = await ngsi_context(request)
    _, _, others = parse_options(request.query.get("options"), None, allowed=frozenset({"noOverwrite"}))
    entity_id = _entity_id(request)
    body = await read_body(request)
    fragment = _fragment(ngsi, body, entity_id)
    body.context_for(ngsi)  # refuses a body whose @context is missing or unknown (400)
    mutator = ops.update_attrs(fragment, no_overwrite="noOverwrite" in others, strict=False)
    result = await _apply_one(ngsi, Change(entity_id, mutator))
    if result.not_updated:
        return _update_result(ngsi, fragment, result.not_updated)
    return no_content()


async def merge_entity(request: web.Request) -> web.Response:
    """PATCH /entities/{id} (§6.5.3.4): merge-patch, ``urn:ngsi-ld:null`` deletes; 204."""
    check_params(request, ("options", "format", "observedAt", "lang"))
    ngsi = await ngsi_context(request)
    entity_id = _entity_id(request)
    body = await read_body(request, merge_patch=True)
    fragment = _fragment(ngsi, body, entity_id)
    await _apply_one(ngsi, Change(entity_id, ops.merge(fragment)))
    return no_content()


async def replace_entity(request: web.Request) -> web.Response:
    """PUT /entities/{id} (§6.5.3.3): replace every attribute; 204."""
    check_params(request, ("options", "format"))
    ngsi = await ngsi_context(request)
    entity_id = _entity_id(request)
    body = await read_body(request)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be a JSON object")
    ctx = body.context_for(ngsi)
    data = {k: v for k, v in body.data.items() if k != "@context"}
    if data.get("id", entity_id) != entity_id:
        raise bad_request(f"/id: {data['id']!r} does not match the entity id in the path {entity_id!r}")
    data["id"] = entity_id
    if "type" not in data:
        current = await ngsi.storage.get_doc(ngsi.tenant, entity_id)
        if current is None:
            raise not_found(f"entity {entity_id} does not exist")
        doc = ctx.expand_entity({**data, "type": "Thing"})
        doc["type"] = current["type"]
    else:
        doc = ctx.expand_entity(data)
    await _apply_one(ngsi, Change(entity_id, ops.replace(doc)))
    return no_content()


async def delete_entity(request: web.Request) -> web.Response:
    """DELETE /entities/{id} (§6.5.3.2): 204; 404."""
    check_params(request, ("type",))
    ngsi = await ngsi_context(request)
    entity_id = _entity_id(request)
    await _apply_one(ngsi, Change(entity_id, ops.delete()))
    return no_content()


_NOT_ATTRIBUTES: Final = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt", "@context"})


def _attr_iri(ctx: Context, request: web.Request, *, allow_scope: bool = False) -> str:
    """The attrId of the path expanded with the request's @context (the body's one for ld+json)."""
    name = request.match_info["attr"]
    if name in _NOT_ATTRIBUTES and not (allow_scope and name == "scope"):
        raise bad_request(f"attrId: {name!r} is an entity member, not an attribute")
    return ctx.expand_attr_name(name, "attrId")


async def delete_attr(request: web.Request) -> web.Response:
    """DELETE /entities/{id}/attrs/{attr} (§6.7.3.2), ``datasetId`` or ``deleteAll=true``; 204."""
    check_params(request, ("datasetId", "deleteAll"))
    ngsi = await ngsi_context(request)
    entity_id = _entity_id(request)
    dataset_id = request.query.get("datasetId")
    delete_all = bool_param(request, "deleteAll")
    if dataset_id is not None and delete_all:
        raise bad_request("datasetId and deleteAll=true cannot be combined")
    if dataset_id is not None and not model.is_uri(dataset_id):
        raise bad_request(f"datasetId {dataset_id!r} is not a URI")
    if request.match_info["attr"] == "scope":
        mutator = ops.delete_scope()  # scope is an entity member that §4.18 lets one delete like this
    else:
        mutator = ops.delete_attr(_attr_iri(ngsi.context(), request), dataset_id=dataset_id, delete_all=delete_all)
    await _apply_one(ngsi, Change(entity_id, mutator))
    return no_content()


def _attr_body(ngsi: NgsiContext, body: Body, *, fragment: bool) -> tuple[Context, dict[str, Any]]:
    """The request's @context and the attribute of the body (a whole instance, or a fragment)."""
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be a JSON object (one attribute)")
    ctx = body.context_for(ngsi)
    data = {k: v for k, v in body.data.items() if k != "@context"}
    if fragment:
        return ctx, ctx.expand_attribute_fragment(data)
    return ctx, ctx.expand_attribute(data, "", partial=True)[0]


async def patch_attr(request: web.Request) -> web.Response:
    """PATCH /entities/{id}/attrs/{attr} (§6.7.3.1): partial attribute update; 204."""
    check_params(request, ())
    ngsi = await ngsi_context(request)
    entity_id = _entity_id(request)
    body = await read_body(request, merge_patch=True)
    ctx, inst = _attr_body(ngsi, body, fragment=True)
    iri = _attr_iri(ctx, request)
    await _apply_one(ngsi, Change(entity_id, ops.patch_attr(iri, inst)))
    return no_content()


async def replace_attr(request: web.Request) -> web.Response:
    """PUT /entities/{id}/attrs/{attr} (§6.7.3.3): replace one attribute; 204."""
    check_params(request, ())
    ngsi = await ngsi_context(request)
    entity_id = _entity_id(request)
    body = await read_body(request)
    ctx, inst = _attr_body(ngsi, body, fragment=False)
    iri = _attr_iri(ctx, request)
    if ops.is_null(inst):
        raise bad_request("urn:ngsi-ld:null is not a valid value for a replacement")
    await _apply_one(ngsi, Change(entity_id, ops.replace_attr(iri, inst)))
    return no_content()


_PURGE_PARAMS: Final = frozenset(
    {"id", "type", "idPattern", "q", "scopeQ", "georel", "geometry", "coordinates", "geoproperty", "keep", "drop",
     "local"}
)
_PURGE_PAGE: Final = 500


async def purge_entities(request: web.Request) -> web.Response:
    """DELETE /entities (§6.4.3.3, Purge Entities §5.6.21): delete every match, or ``keep``/``drop`` attributes.

    A selector is required (BadRequestData otherwise); ``local=true`` alone selects every entity
    of the tenant. The matches are collected first, then written in batches of one transaction.
    """
    check_params(request, _PURGE_PARAMS)
    ngsi = await ngsi_context(request)
    query = request.query
    qp = QueryParams(
        ids=split_list(query.get("id")),
        types=query.get("type"),
        id_pattern=query.get("idPattern"),
        q=query.get("q"),
        scope_q=query.get("scopeQ"),
        georel=query.get("georel"),
        geometry=query.get("geometry"),
        coordinates=query.get("coordinates"),
        geoproperty=query.get("geoproperty"),
        local=bool_param(request, "local"),
    )
    if not qp.any_filter() and not qp.local:
        raise bad_request("Purge Entities needs a selector: id, type, idPattern, q, scopeQ, a geo-query or local=true")
    keep_names, drop_names = split_list(query.get("keep")), split_list(query.get("drop"))
    if keep_names is not None and drop_names is not None:
        raise bad_request("keep and drop cannot be combined")
    ctx = ngsi.context()
    limit = ngsi.settings.max_ids
    keep = _expand_names(ctx, keep_names, "keep", limit)
    drop = _expand_names(ctx, drop_names, "drop", limit)
    ids: list[str] = []
    offset = 0
    while True:
        spec = build_query(ngsi, ctx, qp, limit=_PURGE_PAGE, offset=offset, count=False)
        page = await ngsi.storage.query(ngsi.tenant, spec)
        ids.extend(doc["id"] for doc in page.docs)
        if not page.more:
            break
        offset += _PURGE_PAGE
    mutator = ops.purge(keep=keep, drop=drop)
    for start in range(0, len(ids), _PURGE_PAGE):
        await ngsi.storage.apply(ngsi.tenant, [Change(i, mutator) for i in ids[start : start + _PURGE_PAGE]])
    return no_content()


async def missing_entity_id(request: web.Request) -> web.Response:
    """PATCH/PUT /entities without an entity id: the request lacks its target (BadRequestData, not 405)."""
    raise bad_request(f"{request.method} {request.path}: the entity id is missing from the path")


def add_entity_routes(app: web.Application) -> None:
    """Register the /entities routes."""
    r = app.router
    r.add_post("/entities", create_entity)
    r.add_get("/entities", query_entities, allow_head=False)
    r.add_delete("/entities", purge_entities)
    r.add_patch("/entities", missing_entity_id)
    r.add_put("/entities", missing_entity_id)
    r.add_get("/entities/{entity_id}", retrieve_entity, allow_head=False)
    r.add_patch("/entities/{entity_id}", merge_entity)
    r.add_put("/entities/{entity_id}", replace_entity)
    r.add_delete("/entities/{entity_id}", delete_entity)
    r.add_post("/entities/{entity_id}/attrs", append_attrs)
    r.add_patch("/entities/{entity_id}/attrs", update_attrs)
    r.add_patch("/entities/{entity_id}/attrs/{attr}", patch_attr)
    r.add_put("/entities/{entity_id}/attrs/{attr}", replace_attr)
    r.add_delete("/entities/{entity_id}/attrs/{attr}", delete_attr)
