"""L2 — API read: retrieve, query, representations, pagination, count, @context, errors."""

from __future__ import annotations

import re
from typing import Any

from conformance.checks.common import (
    ATTRIBUTE_TYPES,
    attrs_of,
    context_links,
    distance_m,
    expect,
    ids,
    is_normalized,
    json_list,
    json_object,
    number_attr,
    point_of,
    problem,
    q_literal,
    rel_link,
    resolve,
    scalar_attr,
    status,
    value_of,
)
from conformance.context import (
    CORE_CONTEXT,
    GEO_JSON,
    JSON,
    LD_JSON,
    UNREACHABLE_CONTEXT,
    ReadSet,
    RunContext,
)
from conformance.http import Response
from conformance.registry import Fail, Skip, check

# ------------------------------------------------------------------------------------ helpers


async def _first(ctx: RunContext) -> tuple[ReadSet, dict[str, Any]]:
    rs = await ctx.read_set()
    return rs, rs.entities[0]


async def _get(ctx: RunContext, ent: dict[str, Any], **kw: Any) -> Response:
    return await ctx.api("GET", f"/entities/{ent['id']}", **kw)


async def _query(ctx: RunContext, params: dict[str, str], **kw: Any) -> Response:
    return await ctx.api("GET", "/entities", params=params, **kw)


def _need(rs: ReadSet, n: int) -> None:
    if len(rs.entities) < n:
        raise Skip(f"needs at least {n} entities of type {rs.type}; the target has {len(rs.entities)}")


# ------------------------------------------------------------------------------------ retrieve


@check("L2-RET-001", "Retrieve an entity by its id",
       sends="GET /ngsi-ld/v1/entities/{id} of an entity known to exist",
       expects="200 with the entity, same id and type",
       explain="Any application must be able to read one object (a container, a lamp post) by its identifier.")
async def _ret_by_id(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    body = json_object(await _get(ctx, e))
    expect(body.get("id") == e["id"], f"id {body.get('id')!r} instead of {e['id']!r}")
    expect(body.get("type") == e["type"], f"type {body.get('type')!r} instead of {e['type']!r}")
    return None


@check("L2-RET-002", "No Accept header gives application/json",
       sends="GET /entities/{id} with no Accept header",
       expects="Content-Type application/json",
       explain="A client that does not ask for a format gets plain JSON, which every tool can read.")
async def _ret_default_json(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    resp = await _get(ctx, e)
    status(resp, 200)
    expect(resp.content_type == JSON, f"Content-Type {resp.content_type!r} instead of application/json")
    return None


@check("L2-RET-003", "application/json responses carry the @context Link header",
       sends="GET /entities/{id} with Accept: application/json",
       expects='a Link header with rel="http://www.w3.org/ns/json-ld#context"',
       explain="Plain JSON has no room for the vocabulary; the Link header says which vocabulary the names use.")
async def _ret_link_header(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    resp = await _get(ctx, e, accept=JSON)
    status(resp, 200)
    expect(context_links(resp), "no Link header with the JSON-LD context relation")
    return None


@check("L2-RET-004", "application/json bodies carry no @context",
       sends="GET /entities/{id} with Accept: application/json",
       expects="a body without an @context member",
       explain="In plain JSON the vocabulary travels in the Link header, never in the body.")
async def _ret_no_body_context(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    body = json_object(await _get(ctx, e, accept=JSON))
    expect("@context" not in body, "the application/json body has an @context member")
    return None


@check("L2-RET-005", "Accept application/ld+json is honoured",
       sends="GET /entities/{id} with Accept: application/ld+json",
       expects="Content-Type application/ld+json",
       explain="Linked-data clients ask for JSON-LD and must get it.")
async def _ret_ld_ctype(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    resp = await _get(ctx, e, accept=LD_JSON)
    status(resp, 200)
    expect(resp.content_type == LD_JSON, f"Content-Type {resp.content_type!r} instead of application/ld+json")
    return None


@check("L2-RET-006", "application/ld+json bodies carry @context",
       sends="GET /entities/{id} with Accept: application/ld+json",
       expects="an @context member in the body",
       explain="A JSON-LD document must carry its vocabulary inside itself.")
async def _ret_ld_context(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    body = json_object(await _get(ctx, e, accept=LD_JSON))
    expect("@context" in body, "the application/ld+json body has no @context")
    return None


@check("L2-RET-007", "attrs limits the attributes returned",
       sends="GET /entities/{id}?attrs=<one attribute>",
       expects="200 with that attribute only (plus id and type)",
       explain="Applications ask for just the figures they need, which saves bandwidth on large objects.")
async def _ret_attrs(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    names = sorted(attrs_of(e))
    if len(names) < 2:
        raise Skip("the entity has fewer than two attributes")
    body = json_object(await _get(ctx, e, params={"attrs": names[0]}))
    got = sorted(attrs_of(body))
    expect(got == [names[0]], f"attributes {got} returned for attrs={names[0]}")
    return None


async def _key_values(ctx: RunContext, params: dict[str, str]) -> None:
    _, e = await _first(ctx)
    name, value = number_attr(e)
    body = json_object(await _get(ctx, e, params=params))
    expect(body.get(name) == value, f"{name} is {body.get(name)!r} in keyValues, expected the bare value {value!r}")
    nested = [k for k, v in attrs_of(body).items() if isinstance(v, dict) and v.get("type") in ATTRIBUTE_TYPES]
    expect(not nested, f"attributes still in normalized form: {nested}")


@check("L2-RET-008", "options=keyValues returns simplified values",
       sends="GET /entities/{id}?options=keyValues",
       expects="each attribute as its bare value",
       explain="The simplified form is what most dashboards and open-data portals consume.")
async def _ret_kv(ctx: RunContext) -> str | None:
    await _key_values(ctx, {"options": "keyValues"})
    return None


@check("L2-RET-009", "format=simplified returns simplified values",
       sends="GET /entities/{id}?format=simplified",
       expects="each attribute as its bare value",
       explain="NGSI-LD 1.9 names the simplified form with the format parameter; both spellings must work.")
async def _ret_simplified(ctx: RunContext) -> str | None:
    await _key_values(ctx, {"format": "simplified"})
    return None


async def _concise(ctx: RunContext, params: dict[str, str]) -> None:
    _, e = await _first(ctx)
    name, value = number_attr(e)
    body = json_object(await _get(ctx, e, params=params))
    typed = [k for k, v in attrs_of(body).items()
             if isinstance(v, dict) and v.get("type") in ATTRIBUTE_TYPES]
    expect(not typed, f"attributes still carry their NGSI-LD type in concise form: {typed}")
    got = body.get(name)
    got_value = got.get("value") if isinstance(got, dict) else got
    expect(got_value == value, f"{name} is {got!r} in concise form; the value {value!r} is lost")
    if isinstance(e[name], dict) and "unitCode" in e[name]:
        expect(isinstance(got, dict) and got.get("unitCode") == e[name]["unitCode"],
               f"{name} lost its unitCode in concise form (concise is lossless)")


@check("L2-RET-010", "options=concise returns the concise form",
       sends="GET /entities/{id}?options=concise",
       expects="attributes without their type member, values and units kept",
       explain="The concise form is shorter but must lose nothing, not even units.")
async def _ret_concise(ctx: RunContext) -> str | None:
    await _concise(ctx, {"options": "concise"})
    return None


@check("L2-RET-011", "format=concise returns the concise form",
       sends="GET /entities/{id}?format=concise",
       expects="attributes without their type member, values and units kept",
       explain="Same as the options spelling, with the format parameter of NGSI-LD 1.9.")
async def _ret_format_concise(ctx: RunContext) -> str | None:
    await _concise(ctx, {"format": "concise"})
    return None


@check("L2-RET-012", "options=normalized returns the normalized form",
       sends="GET /entities/{id}?options=normalized",
       expects="every attribute as an object with its NGSI-LD type",
       explain="The full form keeps units, times and relationships, which data exchange relies on.")
async def _ret_normalized(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    bad = is_normalized(json_object(await _get(ctx, e, params={"options": "normalized"})))
    expect(not bad, f"attributes not in normalized form: {bad}")
    return None


@check("L2-RET-013", "The default representation is normalized",
       sends="GET /entities/{id} with no options",
       expects="every attribute as an object with its NGSI-LD type",
       explain="Without options the API must return the full form, so nothing is silently dropped.")
async def _ret_default_normalized(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    bad = is_normalized(json_object(await _get(ctx, e)))
    expect(not bad, f"attributes not in normalized form: {bad}")
    return None


@check("L2-RET-014", "options=sysAttrs adds createdAt and modifiedAt",
       sends="GET /entities/{id}?options=sysAttrs",
       expects="createdAt and modifiedAt on the entity",
       explain="System times tell an auditor when a record was created and last changed.")
async def _ret_sysattrs(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    body = json_object(await _get(ctx, e, params={"options": "sysAttrs"}))
    missing = [k for k in ("createdAt", "modifiedAt") if k not in body]
    expect(not missing, f"missing {missing} with options=sysAttrs")
    return None


@check("L2-RET-015", "Accept application/geo+json gives a GeoJSON Feature",
       sends="GET /entities/{id} with Accept: application/geo+json",
       expects="Content-Type application/geo+json, a Feature whose geometry is the entity's location",
       explain="GIS tools (QGIS, web maps) read GeoJSON directly, without any conversion step.")
async def _ret_geojson(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    point = point_of(e)
    resp = await _get(ctx, e, accept=GEO_JSON)
    body = json_object(resp)
    expect(resp.content_type == GEO_JSON, f"Content-Type {resp.content_type!r} instead of application/geo+json")
    expect(body.get("type") == "Feature", f"GeoJSON type {body.get('type')!r} instead of Feature")
    geom = body.get("geometry")
    expect(isinstance(geom, dict) and geom.get("coordinates", [None, None])[:2] == list(point),
           f"geometry {geom!r} is not the entity's location {list(point)}")
    return None


@check("L2-RET-016", "Unknown entity: 404 ResourceNotFound",
       sends="GET /entities/{id} for an id that does not exist",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="A clear, standard error lets client software tell 'absent' from 'broken'.")
async def _ret_unknown(ctx: RunContext) -> str | None:
    problem(await ctx.api("GET", f"/entities/{ctx.uid('absent')}"), 404, "ResourceNotFound")
    return None


@check("L2-RET-017", "An id that is not a URI: 400 BadRequestData",
       sends="GET /entities/not-a-uri",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="Identifiers are URIs in NGSI-LD; anything else is refused with a precise reason.")
async def _ret_bad_id(ctx: RunContext) -> str | None:
    problem(await ctx.api("GET", "/entities/not-a-uri"), 400, "BadRequestData")
    return None


@check("L2-RET-018", "An unknown query parameter: 400 InvalidRequest",
       sends="GET /entities/{id}?jcUnknownParameter=1",
       expects="400 with a ProblemDetails of type InvalidRequest",
       explain="A misspelt parameter must not be ignored silently: the client would trust a wrong answer.")
async def _ret_unknown_param(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    problem(await _get(ctx, e, params={"jcUnknownParameter": "1"}), 400, "InvalidRequest")
    return None


@check("L2-RET-019", "An unacceptable Accept: 406",
       sends="GET /entities/{id} with Accept: text/csv",
       expects="406 Not Acceptable",
       explain="The API says plainly when it cannot produce the format asked for.")
async def _ret_406(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    status(await _get(ctx, e, accept="text/csv"), 406)
    return None


@check("L2-RET-020", "Accept */* is served",
       sends="GET /entities/{id} with Accept: */*",
       expects="200 with application/json or application/ld+json",
       explain="Browsers and generic tools send */*; they must get the data.")
async def _ret_any(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    resp = await _get(ctx, e, accept="*/*")
    status(resp, 200)
    expect(resp.content_type in (JSON, LD_JSON), f"Content-Type {resp.content_type!r}")
    return None


@check("L2-RET-021", "Retrieve and query return the same entity",
       sends="GET /entities/{id} and GET /entities?type=T&id={id}",
       expects="identical attributes, values, units and times in both answers",
       explain="Two ways of reading the same object must never disagree.")
async def _ret_same(ctx: RunContext) -> str | None:
    rs, e = await _first(ctx)
    one = json_object(await _get(ctx, e))
    listed = json_list(await _query(ctx, {"type": rs.type, "id": e["id"]}))
    expect(len(listed) == 1, f"query by id returned {len(listed)} entities")
    expect(attrs_of(one) == attrs_of(listed[0]), "retrieve and query disagree on the attributes")
    if rs.seeded:
        sent = ctx.probe(1)
        for name in ("temperature", "name", "location", "refDevice"):
            expect(one.get(name) == sent[name], f"{name} read back as {one.get(name)!r}, written {sent[name]!r}")
    return None


# ------------------------------------------------------------------------------------ query


@check("L2-QRY-001", "Query by type",
       sends="GET /entities?type=T",
       expects="200, only entities of type T, including a known one",
       explain="Listing all objects of one kind (all containers, all lamp posts) is the most common request.")
async def _qry_type(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    got = json_list(await _query(ctx, {"type": rs.type, "limit": "100"}))
    wrong = [x.get("id") for x in got if x.get("type") != rs.type]
    expect(not wrong, f"entities of another type returned: {wrong[:5]}")
    if rs.seeded:
        expect(sorted(ids(got)) == sorted(ids(rs.entities)), "the query does not return exactly the probes")
    return None


@check("L2-QRY-002", "Query by a list of ids",
       sends="GET /entities?type=T&id=<id1>,<id2>",
       expects="exactly those two entities",
       explain="Applications fetch several known objects in one call.")
async def _qry_ids(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    _need(rs, 2)
    wanted = ids(rs.entities[:2])
    got = json_list(await _query(ctx, {"type": rs.type, "id": ",".join(wanted)}))
    expect(sorted(ids(got)) == sorted(wanted), f"got {ids(got)} for id={wanted}")
    return None


@check("L2-QRY-003", "Query by idPattern",
       sends="GET /entities?type=T&idPattern=<regular expression>",
       expects="only entities whose id matches, including the known one",
       explain="Operators select families of objects by naming convention.")
async def _qry_idpattern(ctx: RunContext) -> str | None:
    rs, e = await _first(ctx)
    pattern = "^" + re.escape(str(e["id"]))[:-1] + ".*" if rs.seeded else "^" + re.escape(str(e["id"])) + "$"
    got = json_list(await _query(ctx, {"type": rs.type, "idPattern": pattern}))
    expect(e["id"] in ids(got), f"{e['id']} missing for idPattern={pattern}")
    bad = [i for i in ids(got) if not re.search(pattern, i)]
    expect(not bad, f"ids not matching the pattern: {bad[:5]}")
    return None


async def _q(ctx: RunContext, q: str, *, must: list[str], must_not: tuple[str, ...] = (),
             ok: Any = None) -> list[dict[str, Any]]:
    rs = await ctx.read_set()
    got = json_list(await _query(ctx, {"type": rs.type, "q": q, "limit": "100"}))
    found = ids(got)
    for i in must:
        expect(i in found, f"{i} missing from the result of q={q}")
    for i in must_not:
        expect(i not in found, f"{i} wrongly returned for q={q}")
    if ok is not None:
        bad = [x.get("id") for x in got if not ok(x)]
        expect(not bad, f"entities not satisfying q={q}: {bad[:5]}")
        if len(got) < 100:
            # Every known entity that satisfies the filter must be found: an answer that is merely
            # "not wrong" (e.g. always empty) does not pass.
            missing = [k.get("id") for k in rs.entities if ok(k) and k.get("id") not in found]
            expect(not missing, f"entities satisfying q={q} missing from the result: {missing[:5]}")
    return got


@check("L2-QRY-004", "q: numeric equality",
       sends="GET /entities?type=T&q=<attr>==<value>",
       expects="the known entity, and only entities with that value",
       explain="Filtering on a measured value (e.g. a fill level) is basic to any dashboard.")
async def _qry_eq(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    name, v = number_attr(e)
    await _q(ctx, f"{name}=={q_literal(v)}", must=[e["id"]], ok=lambda x: value_of(x, name) == v)
    return None


@check("L2-QRY-005", "q: greater than",
       sends="GET /entities?type=T&q=<attr>><value>",
       expects="only entities with a larger value; the known entity excluded",
       explain="Thresholds (containers more than 80 % full) are how operators find what needs action.")
async def _qry_gt(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    name, v = number_attr(e)
    await _q(ctx, f"{name}>{q_literal(v)}", must=[], must_not=(e["id"],),
             ok=lambda x: isinstance(value_of(x, name), int | float) and value_of(x, name) > v)
    return None


@check("L2-QRY-006", "q: less than or equal",
       sends="GET /entities?type=T&q=<attr><=<value>",
       expects="the known entity, only entities with a value not larger",
       explain="Range filters are needed in both directions.")
async def _qry_le(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    name, v = number_attr(e)
    await _q(ctx, f"{name}<={q_literal(v)}", must=[e["id"]],
             ok=lambda x: isinstance(value_of(x, name), int | float) and value_of(x, name) <= v)
    return None


@check("L2-QRY-007", "q: text equality with a quoted string",
       sends='GET /entities?type=T&q=<attr>=="<text>"',
       expects="the known entity, only entities with that text",
       explain="Filtering on a status or a name is everyday use.")
async def _qry_str(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    name, v = scalar_attr(e, str)
    await _q(ctx, f"{name}=={q_literal(v)}", must=[e["id"]], ok=lambda x: value_of(x, name) == v)
    return None


@check("L2-QRY-008", "q: AND with ';'",
       sends="GET /entities?type=T&q=<a>==<x>;<b>==<y>",
       expects="the known entity, only entities satisfying both terms",
       explain="Combined conditions narrow a selection.")
async def _qry_and(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    n, v = number_attr(e)
    s, w = scalar_attr(e, str)
    await _q(ctx, f"{n}=={q_literal(v)};{s}=={q_literal(w)}", must=[e["id"]],
             ok=lambda x: value_of(x, n) == v and value_of(x, s) == w)
    return None


@check("L2-QRY-009", "q: OR with '|'",
       sends="GET /entities?type=T&q=<a>==<x>|<a>==<y>",
       expects="both known entities, only entities satisfying one term",
       explain="Alternatives (this status or that one) must be expressible in one request.")
async def _qry_or(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    _need(rs, 2)
    e0, e1 = rs.entities[0], rs.entities[1]
    n, v0 = number_attr(e0)
    v1 = value_of(e1, n)
    if not isinstance(v1, int | float):
        raise Skip(f"the second entity has no numeric {n}")
    await _q(ctx, f"{n}=={q_literal(v0)}|{n}=={q_literal(v1)}", must=[e0["id"], e1["id"]],
             ok=lambda x: value_of(x, n) in (v0, v1))
    return None


@check("L2-QRY-010", "q: not equal",
       sends="GET /entities?type=T&q=<attr>!=<value>",
       expects="the known entity excluded; no returned entity has that value",
       explain="Exclusions are part of the query language.")
async def _qry_ne(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    n, v = number_attr(e)
    await _q(ctx, f"{n}!={q_literal(v)}", must=[], must_not=(e["id"],), ok=lambda x: value_of(x, n) != v)
    return None


@check("L2-QRY-011", "q on an attribute nobody has returns nothing",
       sends="GET /entities?type=T&q=jcNoSuchAttribute==1",
       expects="200 with an empty array",
       explain="A filter on a missing attribute matches nothing; it must not match everything.")
async def _qry_missing(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    got = json_list(await _query(ctx, {"type": rs.type, "q": "jcNoSuchAttribute==1"}))
    expect(got == [], f"{len(got)} entities returned")
    return None


@check("L2-QRY-012", "attrs on a query limits the attributes",
       sends="GET /entities?type=T&attrs=<one attribute>",
       expects="every returned entity has no other attribute",
       explain="Light answers for large lists.")
async def _qry_attrs(ctx: RunContext) -> str | None:
    rs, e = await _first(ctx)
    name = sorted(attrs_of(e))[0]
    got = json_list(await _query(ctx, {"type": rs.type, "attrs": name, "limit": "100"}))
    expect(e["id"] in ids(got), f"{e['id']} missing for attrs={name}")
    bad = [x.get("id") for x in got if set(attrs_of(x)) - {name}]
    expect(not bad, f"entities with other attributes: {bad[:5]}")
    return None


@check("L2-QRY-013", "options=keyValues on a query",
       sends="GET /entities?type=T&options=keyValues",
       expects="simplified values in every returned entity",
       explain="Lists are mostly consumed in the simplified form.")
async def _qry_kv(ctx: RunContext) -> str | None:
    rs, e = await _first(ctx)
    n, v = number_attr(e)
    got = json_list(await _query(ctx, {"type": rs.type, "id": e["id"], "options": "keyValues"}))
    expect(len(got) == 1 and got[0].get(n) == v, f"{n} is not the bare value {v!r} in keyValues")
    return None


@check("L2-QRY-014", "options=concise on a query",
       sends="GET /entities?type=T&options=concise",
       expects="no attribute carries its NGSI-LD type",
       explain="The concise form is valid for lists too.")
async def _qry_concise(ctx: RunContext) -> str | None:
    rs, e = await _first(ctx)
    got = json_list(await _query(ctx, {"type": rs.type, "id": e["id"], "options": "concise"}))
    expect(len(got) == 1, f"{len(got)} entities for one id")
    typed = [k for k, v in attrs_of(got[0]).items() if isinstance(v, dict) and v.get("type") in ATTRIBUTE_TYPES]
    expect(not typed, f"attributes still typed: {typed}")
    return None


@check("L2-QRY-015", "geoQ: near with maxDistance",
       sends="GET /entities?type=T&georel=near;maxDistance==100&geometry=Point&coordinates=[lon,lat]",
       expects="the entity at that point; nothing farther than 100 m",
       explain="Asking what lies within 100 m of a place is the basic question of a territory's map.")
async def _qry_near(ctx: RunContext) -> str | None:
    rs, e = await _first(ctx)
    p = point_of(e)
    got = json_list(await _query(ctx, {"type": rs.type, "georel": "near;maxDistance==100", "geometry": "Point",
                                       "coordinates": f"[{p[0]},{p[1]}]", "limit": "100"}))
    expect(e["id"] in ids(got), f"{e['id']} missing although it is at the point")
    far = [x.get("id") for x in got if _dist(x, p) > 100.5]
    expect(not far, f"entities farther than 100 m returned: {far[:5]}")
    near = [k.get("id") for k in rs.entities if _dist(k, p) < 99.5 and k.get("id") not in ids(got)]
    expect(not near or len(got) >= 100, f"entities within 100 m missing: {near[:5]}")
    return None


def _dist(ent: dict[str, Any], p: tuple[float, float]) -> float:
    try:
        return distance_m(point_of(ent), p)
    except Skip:
        return float("inf")


def _box(p: tuple[float, float], d: float = 0.002) -> list[list[float]]:
    return [[p[0] - d, p[1] - d], [p[0] + d, p[1] - d], [p[0] + d, p[1] + d], [p[0] - d, p[1] + d],
            [p[0] - d, p[1] - d]]


def _inside(ent: dict[str, Any], p: tuple[float, float], d: float = 0.002) -> bool:
    try:
        q = point_of(ent)
    except Skip:
        return False
    return abs(q[0] - p[0]) <= d + 1e-9 and abs(q[1] - p[1]) <= d + 1e-9


async def _geo_box(ctx: RunContext, georel: str) -> None:
    rs, e = await _first(ctx)
    p = point_of(e)
    coords = "[[" + ",".join(f"[{x},{y}]" for x, y in _box(p)) + "]]"
    got = json_list(await _query(ctx, {"type": rs.type, "georel": georel, "geometry": "Polygon",
                                       "coordinates": coords, "limit": "100"}))
    expect(e["id"] in ids(got), f"{e['id']} missing although its point is inside the polygon")
    out = [x.get("id") for x in got if not _inside(x, p)]
    expect(not out, f"entities outside the polygon returned: {out[:5]}")
    inside = [k.get("id") for k in rs.entities if _inside(k, p, 0.0019) and k.get("id") not in ids(got)]
    expect(not inside or len(got) >= 100, f"entities inside the polygon missing: {inside[:5]}")


@check("L2-QRY-016", "geoQ: within a polygon",
       sends="GET /entities?type=T&georel=within&geometry=Polygon&coordinates=<small box>",
       expects="the entity inside; nothing outside the box",
       explain="Selecting objects inside a district or a commune boundary.")
async def _qry_within(ctx: RunContext) -> str | None:
    await _geo_box(ctx, "within")
    return None


@check("L2-QRY-017", "geoQ: intersects a polygon",
       sends="GET /entities?type=T&georel=intersects&geometry=Polygon&coordinates=<small box>",
       expects="the entity inside; nothing outside the box",
       explain="Intersection is how lines and areas (roads, parks) are selected by zone.")
async def _qry_intersects(ctx: RunContext) -> str | None:
    await _geo_box(ctx, "intersects")
    return None


@check("L2-QRY-018", "An invalid georel: 400 BadRequestData",
       sends="GET /entities?type=T&georel=closeTo&geometry=Point&coordinates=[2,48]",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="Unknown geographic operators are refused, not guessed.")
async def _qry_bad_georel(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    problem(await _query(ctx, {"type": rs.type, "georel": "closeTo", "geometry": "Point",
                               "coordinates": "[2,48]"}), 400, "BadRequestData")
    return None


@check("L2-QRY-019", "A malformed q: 400",
       sends="GET /entities?type=T&q=temperature==",
       expects="400 with a ProblemDetails of type BadRequestData or InvalidRequest",
       explain="A broken filter is an error, never an empty or a full list.")
async def _qry_bad_q(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    problem(await _query(ctx, {"type": rs.type, "q": "temperature=="}), 400, "BadRequestData", "InvalidRequest")
    return None


@check("L2-QRY-020", "A query without any filter: 400 BadRequestData",
       sends="GET /entities with neither type, id, attrs, q nor geoQ",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="An unbounded query over the whole territory is refused, as the standard requires.")
async def _qry_unbounded(ctx: RunContext) -> str | None:
    problem(await ctx.api("GET", "/entities"), 400, "BadRequestData")
    return None


@check("L2-QRY-021", "Accept application/geo+json on a query gives a FeatureCollection",
       sends="GET /entities?type=T with Accept: application/geo+json",
       expects="Content-Type application/geo+json and a FeatureCollection of Features",
       explain="A whole layer can be opened in a GIS.")
async def _qry_geojson(ctx: RunContext) -> str | None:
    rs, e = await _first(ctx)
    resp = await _query(ctx, {"type": rs.type, "limit": "100"}, accept=GEO_JSON)
    body = json_object(resp)
    expect(resp.content_type == GEO_JSON, f"Content-Type {resp.content_type!r}")
    expect(body.get("type") == "FeatureCollection", f"type {body.get('type')!r} instead of FeatureCollection")
    feats = body.get("features")
    expect(isinstance(feats, list) and all(isinstance(f, dict) and f.get("type") == "Feature" for f in feats),
           "features is not a list of Feature objects")
    expect(e["id"] in [f.get("id") for f in feats or []], f"{e['id']} is not among the features")
    return None


@check("L2-QRY-022", "A query that matches nothing: 200 and an empty array",
       sends="GET /entities?type=JcNoSuchType",
       expects="200 with []",
       explain="An empty result is a normal answer, not an error.")
async def _qry_empty(ctx: RunContext) -> str | None:
    got = json_list(await _query(ctx, {"type": f"JcNoSuchType{ctx.run_id}"}))
    expect(got == [], f"{len(got)} entities for a type nobody uses")
    return None


@check("L2-QRY-023", "Query by a list of types",
       sends="GET /entities?type=T,JcOther",
       expects="the entities of T are returned",
       explain="Several kinds of objects can be listed together.")
async def _qry_types(ctx: RunContext) -> str | None:
    rs, e = await _first(ctx)
    got = json_list(await _query(ctx, {"type": f"{rs.type},JcOther{ctx.run_id}", "limit": "100"}))
    expect(e["id"] in ids(got), f"{e['id']} missing")
    return None


@check("L2-QRY-024", "q: pattern match with ~=",
       sends='GET /entities?type=T&q=<attr>~="<regular expression>"',
       expects="the known entity, only entities whose text matches",
       explain="Text search on names and addresses.")
async def _qry_pattern(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    s, w = scalar_attr(e, str)
    # A real expression (anchors and a character class) that matches the known text exactly.
    pattern = "^" + re.escape(w[:-1]) + "[" + re.escape(w[-1]) + "]$"
    await _q(ctx, f"{s}~={q_literal(pattern)}", must=[e["id"]],
             ok=lambda x: isinstance(value_of(x, s), str) and re.search(pattern, value_of(x, s)) is not None)
    return None


@check("L2-QRY-025", "Query by attrs alone",
       sends="GET /entities?attrs=<attribute>&limit=20",
       expects="200; every returned entity has that attribute",
       explain="Selecting everything that measures a given quantity, whatever its type.")
async def _qry_attrs_only(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    n, _ = number_attr(e)
    got = json_list(await _query(ctx, {"attrs": n, "limit": "20"}))
    expect(got, f"nothing returned for attrs={n} although {e['id']} has it")
    bad = [x.get("id") for x in got if n not in x]
    expect(not bad, f"entities without {n}: {bad[:5]}")
    return None


# ------------------------------------------------------------------------------------ pagination


async def _page(ctx: RunContext, limit: int, offset: int = 0, **extra: str) -> Response:
    rs = await ctx.read_set()
    params = {"type": rs.type, "limit": str(limit), "offset": str(offset), **extra}
    return await _query(ctx, params)


@check("L2-PAG-001", "limit bounds the page size",
       sends="GET /entities?type=T&limit=2",
       expects="exactly 2 entities when more exist",
       explain="Paging keeps answers small on territories with thousands of objects.")
async def _pag_limit(ctx: RunContext) -> str | None:
    _need(await ctx.read_set(), 3)
    got = json_list(await _page(ctx, 2))
    expect(len(got) == 2, f"{len(got)} entities with limit=2")
    return None


@check("L2-PAG-002", "A page with more to come links rel=\"next\"",
       sends="GET /entities?type=T&limit=2",
       expects='a Link header with rel="next"',
       explain="Clients follow the next link instead of computing offsets.")
async def _pag_next(ctx: RunContext) -> str | None:
    _need(await ctx.read_set(), 3)
    resp = await _page(ctx, 2)
    status(resp, 200)
    expect(rel_link(resp, "next"), 'no Link with rel="next" although more entities exist')
    return None


@check("L2-PAG-003", "Following next gives the next page",
       sends="GET the URL of the next link",
       expects="200 with entities not on the first page",
       explain="The next link must lead somewhere new, or a client loops or misses data.")
async def _pag_follow(ctx: RunContext) -> str | None:
    _need(await ctx.read_set(), 3)
    first = await _page(ctx, 2)
    page1 = json_list(first)
    nxt = rel_link(first, "next")
    if not nxt:
        raise Fail('no Link with rel="next" to follow')
    page2 = json_list(await ctx.api("GET", resolve(ctx, nxt)))
    expect(page2, "the next page is empty")
    overlap = set(ids(page1)) & set(ids(page2))
    expect(not overlap, f"entities on both pages: {sorted(overlap)}")
    return None


@check("L2-PAG-004", "A later page links rel=\"prev\"",
       sends="GET /entities?type=T&limit=2&offset=2",
       expects='a Link header with rel="prev"',
       explain="Interfaces page backwards as well as forwards.")
async def _pag_prev(ctx: RunContext) -> str | None:
    _need(await ctx.read_set(), 3)
    resp = await _page(ctx, 2, 2)
    status(resp, 200)
    expect(rel_link(resp, "prev"), 'no Link with rel="prev" on the second page')
    return None


@check("L2-PAG-005", "The last page has no next link",
       sends="GET /entities?type=T&limit=2&offset=<total-1>",
       expects='no Link with rel="next"',
       explain="A next link on the last page sends clients into empty requests.")
async def _pag_last(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    _need(rs, 3)
    resp = await _page(ctx, 2, rs.total - 1)
    status(resp, 200)
    expect(not rel_link(resp, "next"), 'a Link with rel="next" on the last page')
    return None


@check("L2-PAG-006", "offset skips entities in a stable order",
       sends="GET /entities?type=T&limit=3 then ?limit=2&offset=1",
       expects="the second page starts with the second entity of the first",
       explain="A stable order is what makes paging trustworthy.")
async def _pag_offset(ctx: RunContext) -> str | None:
    _need(await ctx.read_set(), 3)
    a = json_list(await _page(ctx, 3))
    b = json_list(await _page(ctx, 2, 1))
    expect(ids(a)[1:3] == ids(b), f"offset=1 gave {ids(b)}, expected {ids(a)[1:3]}")
    return None


@check("L2-PAG-007", "limit=0 with count=true returns the count only",
       sends="GET /entities?type=T&limit=0&count=true",
       expects="200, an empty array and the NGSILD-Results-Count header",
       explain="Counting without downloading is how dashboards show totals.")
async def _pag_zero(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    resp = await _page(ctx, 0, count="true")
    got = json_list(resp)
    expect(got == [], f"{len(got)} entities with limit=0")
    expect(resp.header("NGSILD-Results-Count") == str(rs.total) or not rs.seeded,
           f"NGSILD-Results-Count is {resp.header('NGSILD-Results-Count')!r}, expected {rs.total}")
    expect(resp.header("NGSILD-Results-Count") is not None, "no NGSILD-Results-Count header")
    return None


@check("L2-PAG-008", "limit=0 without count=true: 400 BadRequestData",
       sends="GET /entities?type=T&limit=0",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="A page of nothing is only meaningful when the count is asked for.")
async def _pag_zero_nocount(ctx: RunContext) -> str | None:
    problem(await _page(ctx, 0), 400, "BadRequestData")
    return None


@check("L2-PAG-009", "A negative limit: 400 BadRequestData",
       sends="GET /entities?type=T&limit=-1",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="Invalid paging values are refused clearly.")
async def _pag_negative(ctx: RunContext) -> str | None:
    problem(await _page(ctx, -1), 400, "BadRequestData")
    return None


@check("L2-PAG-010", "A non-numeric limit: 400 BadRequestData",
       sends="GET /entities?type=T&limit=abc",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="Invalid paging values are refused clearly.")
async def _pag_nonnumeric(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    problem(await _query(ctx, {"type": rs.type, "limit": "abc"}), 400, "BadRequestData")
    return None


@check("L2-PAG-011", "Walking every page yields every entity once",
       sends="GET /entities?type=T&limit=2, then each next link",
       expects="all entities of the type, none twice",
       explain="Harvesting (open data, backups) depends on complete, duplicate-free paging.")
async def _pag_walk(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    _need(rs, 3)
    resp = await _page(ctx, 2)
    seen: list[str] = []
    for _ in range(60):
        page = ids(json_list(resp))
        expect(not set(page) & set(seen), f"the next link led back to entities already seen: {page}")
        seen.extend(page)
        nxt = rel_link(resp, "next")
        if not nxt:
            break
        resp = await ctx.api("GET", resolve(ctx, nxt))
    else:
        raise Skip("more than 60 pages; not walked to the end")
    expect(len(seen) == len(set(seen)), "an entity appears on two pages")
    expect(len(seen) == rs.total, f"{len(seen)} entities over all pages, expected {rs.total}")
    return None


@check("L2-PAG-012", "An offset past the end gives an empty page",
       sends="GET /entities?type=T&limit=2&offset=<total+10>",
       expects="200 with []",
       explain="Reading beyond the end is not an error.")
async def _pag_beyond(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    got = json_list(await _page(ctx, 2, rs.total + 10))
    expect(got == [], f"{len(got)} entities past the end")
    return None


# ------------------------------------------------------------------------------------ count


@check("L2-CNT-001", "count=true sends NGSILD-Results-Count",
       sends="GET /entities?type=T&count=true",
       expects="an NGSILD-Results-Count header holding an integer",
       explain="The total number of matching objects is needed for any report.")
async def _cnt_header(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    resp = await _query(ctx, {"type": rs.type, "count": "true"})
    status(resp, 200)
    value = resp.header("NGSILD-Results-Count")
    expect(value is not None and value.strip().isdigit(), f"NGSILD-Results-Count is {value!r}")
    return None


@check("L2-CNT-002", "The count equals the number of matching entities",
       sends="GET /entities?type=T&count=true&limit=100",
       expects="NGSILD-Results-Count equal to the number of entities of the type",
       explain="A wrong total misleads every statistic built on it.")
async def _cnt_value(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    resp = await _query(ctx, {"type": rs.type, "count": "true", "limit": "100"})
    got = json_list(resp)
    value = resp.header("NGSILD-Results-Count")
    expected = rs.total if rs.seeded else len(got)
    if not rs.seeded and len(got) == 100:
        raise Skip("more than 100 entities: the count cannot be compared with one page")
    expect(value == str(expected), f"NGSILD-Results-Count is {value!r}, expected {expected}")
    return None


@check("L2-CNT-003", "The count is the total, not the page size",
       sends="GET /entities?type=T&count=true&limit=2",
       expects="NGSILD-Results-Count equal to the total",
       explain="Paging must not change the total shown to users.")
async def _cnt_paged(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    _need(rs, 3)
    resp = await _page(ctx, 2, count="true")
    json_list(resp)
    value = resp.header("NGSILD-Results-Count")
    expect(value == str(rs.total), f"NGSILD-Results-Count is {value!r}, expected {rs.total}")
    return None


@check("L2-CNT-004", "The count follows the filter",
       sends="GET /entities?type=T&q=<attr>==<value>&count=true",
       expects="NGSILD-Results-Count equal to the number of entities returned",
       explain="Counts of filtered selections (how many lamps are off) must be right.")
async def _cnt_filtered(ctx: RunContext) -> str | None:
    rs, e = await _first(ctx)
    s, w = scalar_attr(e, str)
    resp = await _query(ctx, {"type": rs.type, "q": f"{s}=={q_literal(w)}", "count": "true", "limit": "100"})
    got = json_list(resp)
    value = resp.header("NGSILD-Results-Count")
    expect(value == str(len(got)), f"NGSILD-Results-Count is {value!r} for {len(got)} matching entities")
    return None


# ------------------------------------------------------------------------------------ @context


@check("L2-CTX-001", "A Link header naming the core context is accepted",
       sends="GET /entities?type=T with Link: <core context>",
       expects="200",
       explain="Clients may always state the core vocabulary explicitly.")
async def _ctx_core(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    status(await _query(ctx, {"type": rs.type}, link=CORE_CONTEXT), 200)
    return None


@check("L2-CTX-002", "A context that cannot be obtained: 504 LdContextNotAvailable",
       sends="GET /entities?type=T with a Link header to a context nothing serves",
       expects="504 with a ProblemDetails of type LdContextNotAvailable",
       explain="If the vocabulary cannot be resolved the API must say so, not answer with wrong names.")
async def _ctx_unavailable(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    problem(await _query(ctx, {"type": rs.type}, link=UNREACHABLE_CONTEXT), 504, "LdContextNotAvailable")
    return None


@check("L2-CTX-003", "The context Link header is well formed",
       sends="GET /entities/{id} with Accept: application/json",
       expects='one Link with an absolute URI, rel=".../json-ld#context" and type="application/ld+json"',
       explain="A malformed Link header makes the vocabulary unreadable for JSON-LD tools.")
async def _ctx_link_form(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    resp = await _get(ctx, e, accept=JSON)
    status(resp, 200)
    links = context_links(resp)
    expect(len(links) == 1, f"{len(links)} context Link headers")
    uri, params = links[0]
    expect(re.match(r"^https?://", uri), f"context URI {uri!r} is not absolute")
    expect(params.get("type") == LD_JSON, f"Link type is {params.get('type')!r}, expected application/ld+json")
    return None


@check("L2-CTX-004", "The response uses the request's own context",
       sends="GET /entities/{id} with Link: <core context>",
       expects="the response's context Link names the same context",
       explain="Names are compacted with the vocabulary the client asked for, so they mean what it expects.")
async def _ctx_echo(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    resp = await _get(ctx, e, link=CORE_CONTEXT, accept=JSON)
    status(resp, 200)
    links = [u for u, _ in context_links(resp)]
    expect(links == [CORE_CONTEXT], f"context Link {links} instead of the request's {CORE_CONTEXT}")
    return None


@check("L2-CTX-005", "The JSON-LD body names the core context by default",
       sends="GET /entities/{id} with Accept: application/ld+json and no Link",
       expects="@context is (or contains) the NGSI-LD core context",
       explain="Without a client context, names are those of the core vocabulary.")
async def _ctx_body_core(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    body = json_object(await _get(ctx, e, accept=LD_JSON))
    c = body.get("@context")
    items = c if isinstance(c, list) else [c]
    expect(any(isinstance(i, str) and "ngsi-ld-core-context" in i for i in items),
           f"@context {c!r} does not name the core context")
    return None


# ------------------------------------------------------------------------------------ errors


@check("L2-ERR-001", "Errors are sent as application/json",
       sends="GET /entities/{unknown id}",
       expects="Content-Type application/json on the 404",
       explain="Errors are read by programs; they use one plain format.")
async def _err_ctype(ctx: RunContext) -> str | None:
    resp = await ctx.api("GET", f"/entities/{ctx.uid('absent')}")
    status(resp, 404)
    expect(resp.content_type == JSON, f"error Content-Type {resp.content_type!r}")
    return None


@check("L2-ERR-002", "ProblemDetails carry type, title and detail",
       sends="GET /entities/{unknown id}",
       expects="a JSON object with string members type, title and detail",
       explain="Operators need a human-readable reason as well as a machine-readable type.")
async def _err_members(ctx: RunContext) -> str | None:
    body = json_object(await ctx.api("GET", f"/entities/{ctx.uid('absent')}"), 404)
    missing = [k for k in ("type", "title", "detail") if not isinstance(body.get(k), str)]
    expect(not missing, f"ProblemDetails without {missing}")
    return None


@check("L2-ERR-003", "Errors stay application/json when JSON-LD is asked for",
       sends="GET /entities/{unknown id} with Accept: application/ld+json",
       expects="404 with Content-Type application/json",
       explain="The standard fixes one format for errors whatever the client accepts.")
async def _err_ctype_ld(ctx: RunContext) -> str | None:
    resp = await ctx.api("GET", f"/entities/{ctx.uid('absent')}", accept=LD_JSON)
    status(resp, 404)
    expect(resp.content_type == JSON, f"error Content-Type {resp.content_type!r}")
    return None


# ------------------------------------------------------------------------------------ types


@check("L2-TYP-001", "Available entity types are listed",
       sends="GET /ngsi-ld/v1/types",
       expects="200, an EntityTypeList whose typeList contains T",
       explain="Discovering what a platform holds is the first step of any reuse.")
async def _typ_list(ctx: RunContext) -> str | None:
    rs = await ctx.read_set()
    body = json_object(await ctx.api("GET", "/types"))
    expect(body.get("type") == "EntityTypeList", f"type {body.get('type')!r} instead of EntityTypeList")
    expect(rs.type in (body.get("typeList") or []), f"{rs.type} not in typeList")
    return None


@check("L2-TYP-002", "Available attributes are listed",
       sends="GET /ngsi-ld/v1/attributes",
       expects="200, an AttributeList whose attributeList contains a known attribute",
       explain="Discovering which quantities are measured across the platform.")
async def _typ_attrs(ctx: RunContext) -> str | None:
    _, e = await _first(ctx)
    name = sorted(attrs_of(e))[0]
    body = json_object(await ctx.api("GET", "/attributes"))
    expect(body.get("type") == "AttributeList", f"type {body.get('type')!r} instead of AttributeList")
    expect(name in (body.get("attributeList") or []), f"{name} not in attributeList")
    return None

