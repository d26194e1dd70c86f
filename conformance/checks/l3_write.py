"""L3 — API write and batch: create, update, append, merge, replace, delete, batch shapes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from conformance.checks.common import (
    attrs_of,
    bare_status,
    expect,
    json_object,
    problem,
    status,
    value_of,
)
from conformance.context import CORE_CONTEXT, ERRORS, GEO_JSON, JSON, LD_JSON, MERGE_PATCH, UNREACHABLE_CONTEXT
from conformance.context import RunContext as Ctx
from conformance.http import Response
from conformance.registry import add, check

W = ("api", "write")


def _ent(ctx: Ctx, label: str, value: float = 1.0) -> dict[str, Any]:
    return {
        "id": ctx.uid(label),
        "type": ctx.probe_type,
        "temperature": {"type": "Property", "value": value, "unitCode": "CEL",
                        "observedAt": "2024-02-01T08:00:00Z"},
        "name": {"type": "Property", "value": label},
    }


async def _fresh(ctx: Ctx, label: str, value: float = 1.0) -> dict[str, Any]:
    ent = _ent(ctx, label, value)
    await ctx.create_ok(ent)
    return ent


async def _read(ctx: Ctx, eid: str) -> dict[str, Any]:
    return json_object(await ctx.api("GET", f"/entities/{eid}"))


# ------------------------------------------------------------------------------ create


@check("L3-CRE-001", "Create an entity", needs=W,
       sends="POST /entities with a valid entity (application/json)",
       expects="201 Created",
       explain="A vendor's system must be able to publish a new object.")
async def _cre_ok(ctx: Ctx) -> str | None:
    status(await ctx.create(_ent(ctx, "c1")), 201)
    return None


@check("L3-CRE-002", "Creation answers with the Location of the entity", needs=W,
       sends="POST /entities",
       expects="a Location header ending with /ngsi-ld/v1/entities/{id}",
       explain="The client learns where the new object lives.")
async def _cre_location(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "c2")
    resp = await ctx.create(ent)
    status(resp, 201)
    loc = resp.header("Location") or ""
    expect(loc.endswith(f"/ngsi-ld/v1/entities/{ent['id']}"), f"Location {loc!r}")
    return None


@check("L3-CRE-003", "Creating an existing entity: 409 AlreadyExists", needs=W,
       sends="POST /entities twice with the same id",
       expects="409 with a ProblemDetails of type AlreadyExists",
       explain="An existing object is never silently overwritten by a creation.")
async def _cre_dup(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "c3")
    problem(await ctx.create(ent), 409, "AlreadyExists")
    return None


@check("L3-CRE-004", "Create with application/ld+json and @context in the body", needs=W,
       sends="POST /entities, Content-Type application/ld+json, body with @context",
       expects="201 Created",
       explain="Linked-data publishers send their vocabulary inside the document.")
async def _cre_ld(ctx: Ctx) -> str | None:
    ent = {**_ent(ctx, "c4"), "@context": CORE_CONTEXT}
    status(await ctx.create(ent, ctype=LD_JSON), 201)
    return None


async def _refused(ctx: Ctx, ent: dict[str, Any], code: int, *names: str, **kw: Any) -> None:
    ctx.track(str(ent.get("id", "")))
    resp = await ctx.api("POST", "/entities", body=ent, **kw)
    problem(resp, code, *names)


@check("L3-CRE-005", "application/ld+json without @context: 400 BadRequestData", needs=W,
       sends="POST /entities, Content-Type application/ld+json, no @context in the body",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="A JSON-LD document without its vocabulary is ambiguous and is refused.")
async def _cre_ld_noctx(ctx: Ctx) -> str | None:
    await _refused(ctx, _ent(ctx, "c5"), 400, "BadRequestData", ctype=LD_JSON)
    return None


@check("L3-CRE-006", "application/json with @context in the body: 400 BadRequestData", needs=W,
       sends="POST /entities, Content-Type application/json, body with @context",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="In plain JSON the vocabulary belongs in the Link header; mixing both is refused.")
async def _cre_json_ctx(ctx: Ctx) -> str | None:
    await _refused(ctx, {**_ent(ctx, "c6"), "@context": CORE_CONTEXT}, 400, "BadRequestData")
    return None


@check("L3-CRE-007", "application/ld+json with a Link header too: 400 BadRequestData", needs=W,
       sends="POST /entities, application/ld+json with @context and a context Link header",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="Two vocabularies for one document are contradictory and refused.")
async def _cre_ld_link(ctx: Ctx) -> str | None:
    await _refused(ctx, {**_ent(ctx, "c7"), "@context": CORE_CONTEXT}, 400, "BadRequestData",
                   ctype=LD_JSON, link=CORE_CONTEXT)
    return None


@check("L3-CRE-008", "A body that is not JSON: 400 InvalidRequest", needs=W,
       sends="POST /entities with the bytes '{not json'",
       expects="400 with a ProblemDetails of type InvalidRequest",
       explain="Syntax errors are reported as such.")
async def _cre_notjson(ctx: Ctx) -> str | None:
    problem(await ctx.api("POST", "/entities", raw=b"{not json"), 400, "InvalidRequest")
    return None


def _table_refusal(
    cid: str, title: str, sends: str, explain: str, build: Callable[[Ctx], Any], *names: str
) -> None:
    async def run(ctx: Ctx) -> str | None:
        body = build(ctx)
        if isinstance(body, dict) and "id" in body:
            ctx.track(str(body["id"]))
        problem(await ctx.api("POST", "/entities", body=body), 400, *names)
        return None

    add(cid, title, run, needs=W, sends=sends, explain=explain,
        expects=f"400 with a ProblemDetails of type {' or '.join(names)}")


_table_refusal("L3-CRE-009", "An entity without id: 400 BadRequestData", "POST /entities with no id",
               "Every object must be identifiable.",
               lambda c: {k: v for k, v in _ent(c, "c9").items() if k != "id"}, "BadRequestData")
_table_refusal("L3-CRE-010", "An id that is not a URI: 400 BadRequestData",
               "POST /entities with id 'container 12'", "Identifiers are URIs so they are unique worldwide.",
               lambda c: {**_ent(c, "c10"), "id": "container 12"}, "BadRequestData")
_table_refusal("L3-CRE-011", "An entity without type: 400 BadRequestData", "POST /entities with no type",
               "The type says which data model applies; it cannot be missing.",
               lambda c: {k: v for k, v in _ent(c, "c11").items() if k != "type"}, "BadRequestData")
_table_refusal("L3-CRE-015", "A Property without value: 400 BadRequestData",
               'POST /entities with {"type": "Property"} and no value',
               "An attribute without a value carries no information and hides errors.",
               lambda c: {**_ent(c, "c15"), "temperature": {"type": "Property", "unitCode": "CEL"}},
               "BadRequestData")
_table_refusal("L3-CRE-016", "A Relationship whose object is not a URI: 400 BadRequestData",
               'POST /entities with a Relationship {"object": "not a uri"}',
               "Links between objects must point at identifiers.",
               lambda c: {**_ent(c, "c16"), "refDevice": {"type": "Relationship", "object": "not a uri"}},
               "BadRequestData")
_table_refusal("L3-CRE-017", "A GeoProperty that is not GeoJSON: 400 BadRequestData",
               'POST /entities with location {"type": "GeoProperty", "value": {"type": "Point"}}',
               "A broken geometry would break every map.",
               lambda c: {**_ent(c, "c17"), "location": {"type": "GeoProperty", "value": {"type": "Point"}}},
               "BadRequestData")
_table_refusal("L3-CRE-018", "A JSON array instead of an entity: 400", "POST /entities with [ {...} ]",
               "Batch operations have their own endpoints; the single create refuses arrays.",
               lambda c: [_ent(c, "c18")], "BadRequestData", "InvalidRequest")


def _media(cid: str, title: str, sends: str, explain: str, code: int,
           send: Callable[[Ctx], Awaitable[Response]]) -> None:
    async def run(ctx: Ctx) -> str | None:
        bare_status(await send(ctx), code)
        return None

    add(cid, title, run, needs=W, sends=sends, expects=f"{code}", explain=explain)


def _post_as(ctype: str | None, label: str, *, chunked: bool = False, path: str = "/entities",
             batch: bool = False) -> Callable[[Ctx], Awaitable[Response]]:
    async def send(ctx: Ctx) -> Response:
        ent = _ent(ctx, label)
        ctx.track(ent["id"])
        body = json.dumps([ent] if batch else ent).encode()
        return await ctx.api("POST", path, raw=body, ctype=ctype, chunked=chunked)

    return send


_media("L3-CRE-012", "Content-Type text/plain: 415", "POST /entities with Content-Type text/plain",
       "Only JSON and JSON-LD are accepted; anything else is refused before it is read.", 415,
       _post_as("text/plain", "c12"))
_media("L3-CRE-013", "No Content-Type: 415", "POST /entities with a body and no Content-Type",
       "The server must know what it receives.", 415, _post_as(None, "c13"))
_media("L3-CRE-014", "No Content-Length: 411", "POST /entities sent chunked, without Content-Length",
       "The size of a write is known before it is accepted (protection against oversized bodies).", 411,
       _post_as(JSON, "c14", chunked=True))
_media("L3-CRE-022", "Content-Type application/geo+json on a write: 415",
       "POST /entities with Content-Type application/geo+json",
       "GeoJSON is an output format for retrieval only.", 415, _post_as(GEO_JSON, "c22"))
_media("L3-CRE-023", "Content-Type merge-patch+json on POST: 415",
       "POST /entities with Content-Type application/merge-patch+json",
       "The merge-patch media type is for PATCH requests only.", 415, _post_as(MERGE_PATCH, "c23"))
_media("L3-BAT-018", "Batch with Content-Type text/plain: 415",
       "POST /entityOperations/create with Content-Type text/plain",
       "Batch writes obey the same media type rules.", 415,
       _post_as("text/plain", "b18", path="/entityOperations/create", batch=True))
_media("L3-BAT-020", "Batch without Content-Length: 411",
       "POST /entityOperations/create sent chunked",
       "Batch writes obey the same size rule.", 411,
       _post_as(JSON, "b20", path="/entityOperations/create", batch=True, chunked=True))
_media("L3-UPD-005", "PATCH attrs with Content-Type text/plain: 415",
       "PATCH /entities/{id}/attrs with Content-Type text/plain",
       "Updates obey the same media type rules.", 415,
       lambda c: _patch_plain(c))


async def _patch_plain(ctx: Ctx) -> Response:
    ent = await _fresh(ctx, "u5")
    return await ctx.api("PATCH", f"/entities/{ent['id']}/attrs", raw=b'{"name": {"type": "Property", '
                         b'"value": "x"}}', ctype="text/plain")


@check("L3-CRE-019", "What is written is read back unchanged", needs=W,
       sends="POST /entities with values, a unit, a time, a relationship and two datasetId instances",
       expects="GET returns the same values, unitCode, observedAt, object and both instances",
       explain="No silent change: units, times and links survive storage exactly.")
async def _cre_roundtrip(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "c19", 21.25)
    ent["refDevice"] = {"type": "Relationship", "object": ctx.uid("dev", "Device")}
    ent["level"] = [
        {"type": "Property", "value": 3, "datasetId": "urn:ngsi-ld:Dataset:jc-a"},
        {"type": "Property", "value": 4, "datasetId": "urn:ngsi-ld:Dataset:jc-b"},
    ]
    await ctx.create_ok(ent)
    got = await _read(ctx, ent["id"])
    for name in ("temperature", "name", "refDevice"):
        expect(got.get(name) == ent[name], f"{name} read back as {got.get(name)!r}, written {ent[name]!r}")
    level = got.get("level")
    expect(isinstance(level, list) and sorted(json.dumps(x, sort_keys=True) for x in level)
           == sorted(json.dumps(x, sort_keys=True) for x in ent["level"]),
           f"multi-instance attribute read back as {level!r}")
    return None


@check("L3-CRE-020", "Create with a context that cannot be obtained: 504 LdContextNotAvailable", needs=W,
       sends="POST /entities (application/json) with a Link header to a context nothing serves",
       expects="504 with a ProblemDetails of type LdContextNotAvailable, and nothing created",
       explain="Data must never be stored with names whose meaning is unknown.")
async def _cre_ctx_unavailable(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "c20")
    ctx.track(ent["id"])
    problem(await ctx.api("POST", "/entities", body=ent, link=UNREACHABLE_CONTEXT), 504, "LdContextNotAvailable")
    status(await ctx.api("GET", f"/entities/{ent['id']}"), 404)
    return None


@check("L3-CRE-021", "Create with a Link header naming the core context", needs=W,
       sends="POST /entities (application/json) with Link: <core context>",
       expects="201 Created",
       explain="Stating the core vocabulary explicitly is always allowed.")
async def _cre_link_core(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "c21")
    ctx.track(ent["id"])
    status(await ctx.api("POST", "/entities", body=ent, link=CORE_CONTEXT), 201)
    return None


@check("L3-CTX-001", "Terms of an inline @context are expanded on write", needs=W,
       sends='POST /entities (ld+json) with @context [{"jcTerm": "https://example.org/jc#jcTerm"}, core]',
       expects="GET without context shows the attribute under its full IRI https://example.org/jc#jcTerm",
       explain="Names mean what the publisher's vocabulary says, not what the reader guesses.")
async def _ctx_expand(ctx: Ctx) -> str | None:
    ent = {**_ent(ctx, "x1"), "jcTerm": {"type": "Property", "value": 7},
           "@context": [{"jcTerm": "https://example.org/jc#jcTerm"}, CORE_CONTEXT]}
    ctx.track(ent["id"])
    status(await ctx.api("POST", "/entities", body=ent, ctype=LD_JSON), 201)
    got = await _read(ctx, ent["id"])
    expect("https://example.org/jc#jcTerm" in got, f"attribute names read back: {sorted(attrs_of(got))}")
    expect("jcTerm" not in got, "the term was stored under its short name, losing its vocabulary")
    return None


@check("L3-CTX-002", "The core context always wins", needs=W,
       sends='POST /entities (ld+json) with @context [{"location": "https://example.org/jc#location"}]',
       expects="GET without context shows the attribute as the core 'location'",
       explain="Core names (location, observedAt...) cannot be redefined by a publisher.")
async def _ctx_core_wins(ctx: Ctx) -> str | None:
    ent = {**_ent(ctx, "x2"),
           "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]}},
           "@context": [{"location": "https://example.org/jc#location"}, CORE_CONTEXT]}
    ctx.track(ent["id"])
    status(await ctx.api("POST", "/entities", body=ent, ctype=LD_JSON), 201)
    got = await _read(ctx, ent["id"])
    expect("location" in got and "https://example.org/jc#location" not in got,
           f"attribute names read back: {sorted(attrs_of(got))}")
    return None


# ------------------------------------------------------------------------------ update / append / partial


@check("L3-UPD-001", "Update attributes", needs=W,
       sends="PATCH /entities/{id}/attrs with a new value of an existing attribute",
       expects="204 No Content",
       explain="Measurements are refreshed in place.")
async def _upd_ok(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "u1")
    status(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs",
                         body={"temperature": {"type": "Property", "value": 30.5}}), 204)
    return None


@check("L3-UPD-002", "An update is visible", needs=W,
       sends="PATCH /entities/{id}/attrs then GET /entities/{id}",
       expects="the new value",
       explain="Readers see the latest value immediately after an update.")
async def _upd_visible(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "u2")
    status(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs",
                         body={"temperature": {"type": "Property", "value": 30.5}}), 204)
    got = await _read(ctx, ent["id"])
    expect(value_of(got, "temperature") == 30.5, f"temperature is {value_of(got, 'temperature')!r}")
    return None


@check("L3-UPD-003", "Update attributes of an unknown entity: 404 ResourceNotFound", needs=W,
       sends="PATCH /entities/{unknown id}/attrs",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="Updates never create objects by accident.")
async def _upd_unknown(ctx: Ctx) -> str | None:
    eid = ctx.uid("u3-absent")
    ctx.track(eid)
    problem(await ctx.api("PATCH", f"/entities/{eid}/attrs",
                          body={"temperature": {"type": "Property", "value": 1}}), 404, "ResourceNotFound")
    return None


def _term(name: Any) -> Any:
    """The last segment of an attribute IRI (``…/default-context/jcAbsent`` → ``jcAbsent``), else the name."""
    return name.rsplit("/", 1)[-1].rsplit("#", 1)[-1] if isinstance(name, str) else name


@check("L3-UPD-004", "Updating an attribute the entity lacks: 207 with notUpdated", needs=W,
       sends="PATCH /entities/{id}/attrs with one existing and one absent attribute",
       expects="207 with an UpdateResult listing the absent attribute in notUpdated",
       explain="Partial success is reported attribute by attribute, so nothing is lost unnoticed.")
async def _upd_partial(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "u4")
    body = json_object(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs", body={
        "temperature": {"type": "Property", "value": 2.0}, "jcAbsent": {"type": "Property", "value": 1}}), 207)
    # Names may come as terms or, as §6.3.6 has it for 207 bodies, as full IRIs.
    names = [_term(n.get("attributeName")) for n in body.get("notUpdated", []) if isinstance(n, dict)]
    expect("jcAbsent" in names, f"notUpdated is {body.get('notUpdated')!r}")
    expect("temperature" in [_term(n) for n in body.get("updated") or []], f"updated is {body.get('updated')!r}")
    return None


@check("L3-UPD-006", "PATCH with a body that is not JSON: 400 InvalidRequest", needs=W,
       sends="PATCH /entities/{id}/attrs with '{not json'",
       expects="400 with a ProblemDetails of type InvalidRequest",
       explain="Syntax errors are reported as such on every write.")
async def _upd_notjson(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "u6")
    problem(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs", raw=b"{not json"), 400, "InvalidRequest")
    return None


@check("L3-APP-001", "Append an attribute", needs=W,
       sends="POST /entities/{id}/attrs with a new attribute",
       expects="204 No Content",
       explain="New measurements can be added to an existing object.")
async def _app_ok(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "a1")
    status(await ctx.api("POST", f"/entities/{ent['id']}/attrs",
                         body={"humidity": {"type": "Property", "value": 55}}), 204)
    return None


@check("L3-APP-002", "An appended attribute is visible", needs=W,
       sends="POST /entities/{id}/attrs then GET",
       expects="the new attribute with its value, the old ones kept",
       explain="Appending adds without removing.")
async def _app_visible(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "a2")
    status(await ctx.api("POST", f"/entities/{ent['id']}/attrs",
                         body={"humidity": {"type": "Property", "value": 55}}), 204)
    got = await _read(ctx, ent["id"])
    expect(value_of(got, "humidity") == 55, f"humidity is {value_of(got, 'humidity')!r}")
    expect(value_of(got, "temperature") == 1.0, "temperature was lost by the append")
    return None


@check("L3-APP-003", "options=noOverwrite keeps existing values", needs=W,
       sends="POST /entities/{id}/attrs?options=noOverwrite with an existing attribute",
       expects="204 or 207, and the stored value unchanged",
       explain="A careful publisher can add without ever overwriting.")
async def _app_nooverwrite(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "a3")
    resp = await ctx.api("POST", f"/entities/{ent['id']}/attrs", params={"options": "noOverwrite"},
                         body={"temperature": {"type": "Property", "value": 99}})
    status(resp, 204, 207)
    got = await _read(ctx, ent["id"])
    expect(value_of(got, "temperature") == 1.0, f"temperature overwritten: {value_of(got, 'temperature')!r}")
    return None


@check("L3-APP-004", "Append to an unknown entity: 404 ResourceNotFound", needs=W,
       sends="POST /entities/{unknown id}/attrs",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="Appends never create objects by accident.")
async def _app_unknown(ctx: Ctx) -> str | None:
    eid = ctx.uid("a4-absent")
    ctx.track(eid)
    problem(await ctx.api("POST", f"/entities/{eid}/attrs",
                          body={"humidity": {"type": "Property", "value": 1}}), 404, "ResourceNotFound")
    return None


@check("L3-PAT-001", "Partial update of one attribute", needs=W,
       sends="PATCH /entities/{id}/attrs/temperature with a new value",
       expects="204 No Content and the new value",
       explain="The lightest possible update, used by devices on every reading.")
async def _pat_ok(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "pa1")
    status(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs/temperature",
                         body={"type": "Property", "value": 12.0}), 204)
    got = await _read(ctx, ent["id"])
    expect(value_of(got, "temperature") == 12.0, f"temperature is {value_of(got, 'temperature')!r}")
    return None


@check("L3-PAT-002", "Partial update keeps what it does not name", needs=W,
       sends="PATCH /entities/{id}/attrs/temperature with a value only",
       expects="the unitCode of the attribute is kept",
       explain="Updating a value must not strip its unit.")
async def _pat_keeps(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "pa2")
    status(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs/temperature", body={"value": 13.0}), 204)
    got = await _read(ctx, ent["id"])
    attr = got.get("temperature") or {}
    expect(attr.get("value") == 13.0 and attr.get("unitCode") == "CEL", f"temperature is {attr!r}")
    return None


@check("L3-PAT-003", "Partial update of an unknown attribute: 404 ResourceNotFound", needs=W,
       sends="PATCH /entities/{id}/attrs/jcAbsent",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="Updating something that does not exist is an error, not a creation.")
async def _pat_unknown(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "pa3")
    problem(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs/jcAbsent", body={"value": 1}), 404,
            "ResourceNotFound")
    return None


# ------------------------------------------------------------------------------ merge / replace / delete


@check("L3-MRG-001", "Merge an entity", needs=W,
       sends="PATCH /entities/{id} with one changed attribute",
       expects="204 No Content",
       explain="Merging updates several attributes at once.")
async def _mrg_ok(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "m1")
    status(await ctx.api("PATCH", f"/entities/{ent['id']}",
                         body={"temperature": {"type": "Property", "value": 5.0}}), 204)
    return None


@check("L3-MRG-002", "Merge changes what it names and keeps the rest", needs=W,
       sends="PATCH /entities/{id} then GET",
       expects="the new value, other attributes unchanged",
       explain="A merge never drops attributes it does not mention.")
async def _mrg_keeps(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "m2")
    status(await ctx.api("PATCH", f"/entities/{ent['id']}",
                         body={"temperature": {"type": "Property", "value": 5.0}}), 204)
    got = await _read(ctx, ent["id"])
    expect(value_of(got, "temperature") == 5.0, f"temperature is {value_of(got, 'temperature')!r}")
    expect(value_of(got, "name") == "m2", "name was lost by the merge")
    return None


@check("L3-MRG-003", "Merge accepts application/merge-patch+json", needs=W,
       sends="PATCH /entities/{id} with Content-Type application/merge-patch+json",
       expects="204 No Content",
       explain="PATCH requests may use the standard merge-patch media type.")
async def _mrg_mergepatch(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "m3")
    status(await ctx.api("PATCH", f"/entities/{ent['id']}", ctype=MERGE_PATCH,
                         body={"temperature": {"type": "Property", "value": 6.0}}), 204)
    return None


@check("L3-MRG-004", "Merge of an unknown entity: 404 ResourceNotFound", needs=W,
       sends="PATCH /entities/{unknown id}",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="A merge never creates an object.")
async def _mrg_unknown(ctx: Ctx) -> str | None:
    eid = ctx.uid("m4-absent")
    ctx.track(eid)
    problem(await ctx.api("PATCH", f"/entities/{eid}", body={"name": {"type": "Property", "value": "x"}}),
            404, "ResourceNotFound")
    return None


@check("L3-RPL-001", "Replace an entity", needs=W,
       sends="PUT /entities/{id} with a different set of attributes",
       expects="204, the new attributes present and the old ones gone",
       explain="Replacement is how a vendor republishes a complete object.")
async def _rpl_ok(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "r1")
    status(await ctx.api("PUT", f"/entities/{ent['id']}", body={
        "id": ent["id"], "type": ent["type"], "humidity": {"type": "Property", "value": 40}}), 204)
    got = await _read(ctx, ent["id"])
    expect(value_of(got, "humidity") == 40, "the new attribute is missing")
    expect("temperature" not in got, "an old attribute survived the replacement")
    return None


@check("L3-RPL-002", "Replace an unknown entity: 404 ResourceNotFound", needs=W,
       sends="PUT /entities/{unknown id}",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="Replacement never creates an object.")
async def _rpl_unknown(ctx: Ctx) -> str | None:
    eid = ctx.uid("r2-absent")
    ctx.track(eid)
    problem(await ctx.api("PUT", f"/entities/{eid}", body={"id": eid, "type": ctx.probe_type}),
            404, "ResourceNotFound")
    return None


@check("L3-DEL-001", "Delete an entity", needs=W,
       sends="DELETE /entities/{id}",
       expects="204 No Content",
       explain="Objects that are removed from the field are removed from the platform.")
async def _del_ok(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "d1")
    status(await ctx.api("DELETE", f"/entities/{ent['id']}"), 204)
    return None


@check("L3-DEL-002", "A deleted entity is gone", needs=W,
       sends="DELETE /entities/{id} then GET",
       expects="404 ResourceNotFound",
       explain="Deletion is effective immediately.")
async def _del_gone(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "d2")
    status(await ctx.api("DELETE", f"/entities/{ent['id']}"), 204)
    problem(await ctx.api("GET", f"/entities/{ent['id']}"), 404, "ResourceNotFound")
    return None


@check("L3-DEL-003", "Delete an unknown entity: 404 ResourceNotFound", needs=W,
       sends="DELETE /entities/{unknown id}",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="Deleting nothing is reported.")
async def _del_unknown(ctx: Ctx) -> str | None:
    problem(await ctx.api("DELETE", f"/entities/{ctx.uid('d3-absent')}"), 404, "ResourceNotFound")
    return None


@check("L3-DEL-004", "Delete one attribute", needs=W,
       sends="DELETE /entities/{id}/attrs/name then GET",
       expects="204, the attribute gone, the others kept",
       explain="A field that no longer applies can be removed alone.")
async def _del_attr(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "d4")
    status(await ctx.api("DELETE", f"/entities/{ent['id']}/attrs/name"), 204)
    got = await _read(ctx, ent["id"])
    expect("name" not in got and "temperature" in got, f"attributes after delete: {sorted(attrs_of(got))}")
    return None


@check("L3-DEL-005", "Delete an unknown attribute: 404 ResourceNotFound", needs=W,
       sends="DELETE /entities/{id}/attrs/jcAbsent",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="Deleting nothing is reported.")
async def _del_attr_unknown(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "d5")
    problem(await ctx.api("DELETE", f"/entities/{ent['id']}/attrs/jcAbsent"), 404, "ResourceNotFound")
    return None


# ------------------------------------------------------------------------------ batch


async def _batch(ctx: Ctx, op: str, body: Any, **kw: Any) -> Response:
    if isinstance(body, list):
        for item in body:
            if isinstance(item, dict) and "id" in item:
                ctx.track(str(item["id"]))
            elif isinstance(item, str):
                ctx.track(item)
    return await ctx.api("POST", f"/entityOperations/{op}", body=body, **kw)


def _errors_of(body: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for err in body.get("errors") or []:
        if isinstance(err, dict) and isinstance(err.get("error"), dict):
            out[str(err.get("entityId"))] = str(err["error"].get("type", "")).removeprefix(ERRORS)
    return out


@check("L3-BAT-001", "Batch create: 201 with the list of ids", needs=W,
       sends="POST /entityOperations/create with two new entities",
       expects="201 and a JSON array holding both ids",
       explain="Publishing many objects in one request is how gateways stay efficient.")
async def _bat_create(ctx: Ctx) -> str | None:
    batch = [_ent(ctx, "b1a"), _ent(ctx, "b1b")]
    resp = await _batch(ctx, "create", batch)
    status(resp, 201)
    body = resp.json()
    expect(isinstance(body, list) and sorted(body) == sorted(e["id"] for e in batch), f"body {body!r}")
    return None


async def _create_with_existing(ctx: Ctx, label: str) -> tuple[Response, str, str]:
    old = await _fresh(ctx, f"{label}old")
    new = _ent(ctx, f"{label}new")
    return await _batch(ctx, "create", [old, new]), old["id"], new["id"]


@check("L3-BAT-002", "Batch create with one failure: 207 with success and errors", needs=W,
       sends="POST /entityOperations/create with one existing and one new entity",
       expects='207 with a JSON object {"success": [...], "errors": [...]}',
       explain="Partial failures are reported precisely, so the sender retries only what failed.")
async def _bat_207(ctx: Ctx) -> str | None:
    resp, _, _ = await _create_with_existing(ctx, "b2")
    body = json_object(resp, 207)
    expect(isinstance(body.get("success"), list) and isinstance(body.get("errors"), list),
           f"207 body members: {sorted(body)}")
    return None


@check("L3-BAT-003", "207 errors name the entity and carry a ProblemDetails", needs=W,
       sends="POST /entityOperations/create with one existing and one new entity",
       expects='errors = [{"entityId": <existing id>, "error": {"type": ".../AlreadyExists", ...}}]',
       explain="Each failure says which object failed and why.")
async def _bat_errors(ctx: Ctx) -> str | None:
    resp, old, _ = await _create_with_existing(ctx, "b3")
    errs = _errors_of(json_object(resp, 207))
    expect(errs.get(old) == "AlreadyExists", f"errors {errs!r}")
    return None


@check("L3-BAT-004", "207 bodies are application/json", needs=W,
       sends="POST /entityOperations/create with one existing and one new entity",
       expects="Content-Type application/json",
       explain="Batch results use full names in plain JSON, as the standard requires.")
async def _bat_ctype(ctx: Ctx) -> str | None:
    resp, _, _ = await _create_with_existing(ctx, "b4")
    status(resp, 207)
    expect(resp.content_type == JSON, f"Content-Type {resp.content_type!r}")
    return None


@check("L3-BAT-019", "207 success lists exactly what was created", needs=W,
       sends="POST /entityOperations/create with one existing and one new entity",
       expects="success = [<new id>]",
       explain="The sender must know which objects now exist.")
async def _bat_success(ctx: Ctx) -> str | None:
    resp, _, new = await _create_with_existing(ctx, "b19")
    body = json_object(resp, 207)
    expect(body.get("success") == [new], f"success {body.get('success')!r}, expected [{new!r}]")
    return None


@check("L3-BAT-005", "Batch body that is not an array: 400 BadRequestData", needs=W,
       sends="POST /entityOperations/create with a single JSON object",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="Batch endpoints take arrays; anything else is refused clearly.")
async def _bat_notarray(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "b5")
    ctx.track(ent["id"])
    problem(await ctx.api("POST", "/entityOperations/create", body=ent), 400, "BadRequestData")
    return None


@check("L3-BAT-006", "Batch create with one invalid entity: 207, the valid one created", needs=W,
       sends="POST /entityOperations/create with a valid entity and one whose Relationship is broken",
       expects="207, the broken one in errors with BadRequestData, the valid one in success",
       explain="One bad record must not block the others.")
async def _bat_invalid(ctx: Ctx) -> str | None:
    good, bad = _ent(ctx, "b6good"), _ent(ctx, "b6bad")
    bad["refDevice"] = {"type": "Relationship", "object": "not a uri"}
    body = json_object(await _batch(ctx, "create", [good, bad]), 207)
    expect(body.get("success") == [good["id"]], f"success {body.get('success')!r}")
    expect(_errors_of(body).get(bad["id"]) == "BadRequestData", f"errors {_errors_of(body)!r}")
    return None


@check("L3-BAT-007", "Batch upsert of new entities: 201 with ids", needs=W,
       sends="POST /entityOperations/upsert with two new entities",
       expects="201 and a JSON array holding both ids",
       explain="Upsert is what gateways use: create or update in one call.")
async def _bat_upsert_new(ctx: Ctx) -> str | None:
    batch = [_ent(ctx, "b7a"), _ent(ctx, "b7b")]
    resp = await _batch(ctx, "upsert", batch)
    status(resp, 201)
    body = resp.json()
    expect(isinstance(body, list) and sorted(body) == sorted(e["id"] for e in batch), f"body {body!r}")
    return None


@check("L3-BAT-008", "Batch upsert of existing entities: 204", needs=W,
       sends="POST /entityOperations/upsert with two existing entities",
       expects="204 No Content",
       explain="Updating only is answered without a body.")
async def _bat_upsert_existing(ctx: Ctx) -> str | None:
    a, b = await _fresh(ctx, "b8a"), await _fresh(ctx, "b8b")
    status(await _batch(ctx, "upsert", [a, b]), 204)
    return None


@check("L3-BAT-009", "Batch upsert mixing new and existing: 201 with the new id", needs=W,
       sends="POST /entityOperations/upsert with one existing and one new entity",
       expects="201 and a JSON array containing the new id",
       explain="The sender learns which objects were created.")
async def _bat_upsert_mixed(ctx: Ctx) -> str | None:
    old = await _fresh(ctx, "b9old")
    new = _ent(ctx, "b9new")
    resp = await _batch(ctx, "upsert", [old, new])
    status(resp, 201)
    body = resp.json()
    expect(isinstance(body, list) and new["id"] in body, f"body {body!r}")
    return None


@check("L3-BAT-010", "Batch upsert replaces by default", needs=W,
       sends="POST /entityOperations/upsert with an existing entity lacking one attribute",
       expects="the missing attribute is gone afterwards",
       explain="Default upsert republishes the whole object.")
async def _bat_upsert_replace(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "b10")
    status(await _batch(ctx, "upsert", [{"id": ent["id"], "type": ent["type"],
                                          "name": {"type": "Property", "value": "new"}}]), 204)
    got = await _read(ctx, ent["id"])
    expect("temperature" not in got and value_of(got, "name") == "new", f"after upsert: {sorted(attrs_of(got))}")
    return None


@check("L3-BAT-011", "Batch upsert with options=update keeps other attributes", needs=W,
       sends="POST /entityOperations/upsert?options=update with one attribute",
       expects="that attribute updated, the others kept",
       explain="Gateways can refresh some figures without resending everything.")
async def _bat_upsert_update(ctx: Ctx) -> str | None:
    ent = await _fresh(ctx, "b11")
    status(await _batch(ctx, "upsert", [{"id": ent["id"], "type": ent["type"],
                                          "name": {"type": "Property", "value": "new"}}],
                        params={"options": "update"}), 204)
    got = await _read(ctx, ent["id"])
    expect(value_of(got, "name") == "new" and value_of(got, "temperature") == 1.0, f"after upsert: {got!r}")
    return None


@check("L3-BAT-012", "Batch update: 204", needs=W,
       sends="POST /entityOperations/update with two existing entities",
       expects="204 and the new values stored",
       explain="Bulk updates succeed as a whole when every object exists.")
async def _bat_update(ctx: Ctx) -> str | None:
    a, b = await _fresh(ctx, "b12a"), await _fresh(ctx, "b12b")
    upd = [{"id": x["id"], "type": x["type"], "temperature": {"type": "Property", "value": 8.0}} for x in (a, b)]
    status(await _batch(ctx, "update", upd), 204)
    got = await _read(ctx, b["id"])
    expect(value_of(got, "temperature") == 8.0, f"temperature is {value_of(got, 'temperature')!r}")
    return None


@check("L3-BAT-013", "Batch update with an unknown entity: 207 ResourceNotFound", needs=W,
       sends="POST /entityOperations/update with one existing and one unknown entity",
       expects="207 with errors[entityId=<unknown>].error.type ResourceNotFound",
       explain="Bulk updates report the objects that do not exist.")
async def _bat_update_unknown(ctx: Ctx) -> str | None:
    a = await _fresh(ctx, "b13")
    missing = _ent(ctx, "b13absent")
    body = json_object(await _batch(ctx, "update", [a, missing]), 207)
    expect(_errors_of(body).get(missing["id"]) == "ResourceNotFound", f"errors {_errors_of(body)!r}")
    return None


@check("L3-BAT-014", "Batch delete: 204 and gone", needs=W,
       sends="POST /entityOperations/delete with two existing ids",
       expects="204, and both return 404 afterwards",
       explain="Bulk removal works and is effective.")
async def _bat_delete(ctx: Ctx) -> str | None:
    a, b = await _fresh(ctx, "b14a"), await _fresh(ctx, "b14b")
    status(await _batch(ctx, "delete", [a["id"], b["id"]]), 204)
    status(await ctx.api("GET", f"/entities/{a['id']}"), 404)
    return None


@check("L3-BAT-015", "Batch delete with an unknown id: 207 ResourceNotFound", needs=W,
       sends="POST /entityOperations/delete with one existing and one unknown id",
       expects="207 with the unknown id in errors (ResourceNotFound) and the other in success",
       explain="Bulk removal reports what could not be removed.")
async def _bat_delete_unknown(ctx: Ctx) -> str | None:
    a = await _fresh(ctx, "b15")
    missing = ctx.uid("b15absent")
    body = json_object(await _batch(ctx, "delete", [a["id"], missing]), 207)
    expect(_errors_of(body).get(missing) == "ResourceNotFound", f"errors {_errors_of(body)!r}")
    expect(body.get("success") == [a["id"]], f"success {body.get('success')!r}")
    return None


@check("L3-BAT-016", "Duplicates in an upsert batch are applied in order", needs=W,
       sends="POST /entityOperations/upsert with the same id twice, values 1 then 2",
       expects="the stored value is 2",
       explain="Readings sent together keep their order; the last one wins.")
async def _bat_order(ctx: Ctx) -> str | None:
    first, second = _ent(ctx, "b16", 1.0), _ent(ctx, "b16", 2.0)
    status(await _batch(ctx, "upsert", [first, second]), 201, 204)
    got = await _read(ctx, first["id"])
    expect(value_of(got, "temperature") == 2.0, f"temperature is {value_of(got, 'temperature')!r}, expected 2.0")
    return None


@check("L3-BAT-017", "Duplicates in a create batch: the second is AlreadyExists", needs=W,
       sends="POST /entityOperations/create with the same new id twice",
       expects="207, the id once in success and once in errors with AlreadyExists",
       explain="Processing in array order makes duplicates predictable.")
async def _bat_create_dup(ctx: Ctx) -> str | None:
    a = _ent(ctx, "b17", 1.0)
    body = json_object(await _batch(ctx, "create", [a, _ent(ctx, "b17", 2.0)]), 207)
    expect(body.get("success") == [a["id"]], f"success {body.get('success')!r}")
    expect(_errors_of(body).get(a["id"]) == "AlreadyExists", f"errors {_errors_of(body)!r}")
    got = await _read(ctx, a["id"])
    expect(value_of(got, "temperature") == 1.0, "the second duplicate overwrote the first")
    return None
