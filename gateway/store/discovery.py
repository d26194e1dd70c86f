"""Discovery (§6.25-§6.28: /types, /attributes) and hosted @contexts (§6.29-§6.30: /jsonldContexts)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.store.api import (
    JSON,
    LD_JSON,
    NgsiContext,
    check_params,
    negotiate,
    ngsi_context,
    no_content,
    read_body,
    respond,
)
from gateway.store.base import QuerySpec, TypeInfo
from gateway.store.jsonld import Context, normalize_entries
from gateway.store.problems import NgsiError, bad_request, not_found

MAX_HOSTED_CONTEXTS = 1000
"""Bound on hosted @contexts (each up to the body limit): the disk is not an open buffer."""


def _details(request: web.Request) -> bool:
    value = request.query.get("details", "false")
    if value not in ("true", "false"):
        raise bad_request(f"details must be true or false, got {value!r}")
    return value == "true"


def _list_id(kind: str, names: list[str]) -> str:
    digest = hashlib.sha1("\n".join(names).encode(), usedforsecurity=False).hexdigest()[:16]
    return f"urn:ngsi-ld:{kind}:{digest}"


async def list_types(request: web.Request) -> web.Response:
    """GET /types: EntityTypeList, or EntityType details with ``details=true``."""
    check_params(request, ("details", "local"))
    ngsi = await ngsi_context(request)
    media = negotiate(request, (JSON, LD_JSON))
    ctx = ngsi.context()
    infos = await ngsi.storage.type_info(ngsi.tenant)
    if _details(request):
        body: Any = [
            {
                "id": iri,
                "type": "EntityType",
                "typeName": ctx.compact_iri(iri),
                "attributeNames": sorted(ctx.compact_iri(a) for a in info.attributes),
            }
            for iri, info in infos.items()
        ]
    else:
        names = sorted(ctx.compact_iri(i) for i in infos)
        body = {"id": _list_id("EntityTypeList", names), "type": "EntityTypeList", "typeList": names}
    return respond(ngsi, body, media=media)


async def type_details(request: web.Request) -> web.Response:
    """GET /types/{type}: EntityTypeInfo; 404 when no entity has the type."""
    check_params(request, ("local",))
    ngsi = await ngsi_context(request)
    media = negotiate(request, (JSON, LD_JSON))
    ctx = ngsi.context()
    iri = ctx.expand_term(request.match_info["type"])
    info = (await ngsi.storage.type_info(ngsi.tenant)).get(iri)
    if info is None:
        raise not_found(f"no entity of type {request.match_info['type']}")
    body = {
        "id": iri,
        "type": "EntityTypeInfo",
        "typeName": ctx.compact_iri(iri),
        "entityCount": info.count,
        "attributeDetails": [
            {"id": a, "type": "Attribute", "attributeName": ctx.compact_iri(a), "attributeTypes": sorted(kinds)}
            for a, kinds in sorted(info.attributes.items())
        ],
    }
    return respond(ngsi, body, media=media)


def _attributes(infos: Mapping[str, TypeInfo]) -> dict[str, tuple[set[str], set[str]]]:
    out: dict[str, tuple[set[str], set[str]]] = {}
    for type_iri, info in infos.items():
        for attr, kinds in info.attributes.items():
            entry = out.setdefault(attr, (set(), set()))
            entry[0].update(kinds)
            entry[1].add(type_iri)
    return out


def _attribute_body(ctx: Context, iri: str, kinds: set[str], types: set[str]) -> dict[str, Any]:
    return {
        "id": iri,
        "type": "Attribute",
        "attributeName": ctx.compact_iri(iri),
        "attributeTypes": sorted(kinds),
        "typeNames": sorted(ctx.compact_iri(t) for t in types),
    }


async def list_attributes(request: web.Request) -> web.Response:
    """GET /attributes: AttributeList, or Attribute details with ``details=true``."""
    check_params(request, ("details", "local"))
    ngsi = await ngsi_context(request)
    media = negotiate(request, (JSON, LD_JSON))
    ctx = ngsi.context()
    attrs = _attributes(await ngsi.storage.type_info(ngsi.tenant))
    if _details(request):
        # §5.7.9: the detailed list names each attribute and its types; attributeCount and
        # attributeTypes belong to the single-attribute answer (§5.7.10)
        body: Any = [
            {key: value for key, value in _attribute_body(ctx, iri, k, t).items() if key != "attributeTypes"}
            for iri, (k, t) in sorted(attrs.items())
        ]
    else:
        names = sorted(ctx.compact_iri(a) for a in attrs)
        body = {"id": _list_id("AttributeList", names), "type": "AttributeList", "attributeList": names}
    return respond(ngsi, body, media=media)


async def attribute_details(request: web.Request) -> web.Response:
    """GET /attributes/{attr}: Attribute; 404 when no entity has it."""
    check_params(request, ("local",))
    ngsi = await ngsi_context(request)
    media = negotiate(request, (JSON, LD_JSON))
    ctx = ngsi.context()
    iri = ctx.expand_term(request.match_info["attr"])
    found = _attributes(await ngsi.storage.type_info(ngsi.tenant)).get(iri)
    if found is None:
        raise not_found(f"no entity has the attribute {request.match_info['attr']}")
    body = _attribute_body(ctx, iri, *found)
    # attributeCount (§5.2.28): how many entities carry the attribute
    counted = await ngsi.storage.query(ngsi.tenant, QuerySpec(attrs=[iri], limit=0, count=True))
    body = {**body, "attributeCount": counted.count or 0}
    return respond(ngsi, body, media=media)


# --------------------------------------------------------------------------- hosted contexts


def _context_url(ngsi: NgsiContext, context_id: str) -> str:
    request = ngsi.request
    return f"{request.scheme}://{request.host}{ngsi.settings.base_path}/jsonldContexts/{context_id}"


async def add_context(request: web.Request) -> web.Response:
    """POST /jsonldContexts: host a context document; 201 with its Location."""
    check_params(request, ())
    ngsi = await ngsi_context(request, must_exist=False)
    body = await read_body(request, context_rules=False)
    data = body.data
    if not isinstance(data, Mapping) or "@context" not in data:
        raise bad_request("the body must be a JSON-LD context document ({\"@context\": ...})")
    # Build it once: a context that does not resolve is refused now, not at first use.
    ngsi.contexts.get(normalize_entries(data["@context"]))
    if len(ngsi.storage.hosted_contexts()) >= MAX_HOSTED_CONTEXTS:
        raise NgsiError("OperationNotSupported", f"this store hosts at most {MAX_HOSTED_CONTEXTS} @contexts; "
                        "delete unused ones first")
    context_id = uuid.uuid4().hex
    await ngsi.storage.put_context(context_id, {"@context": data["@context"]})
    response = web.Response(status=201)
    response.headers["Location"] = _context_url(ngsi, context_id)
    return response


async def list_contexts(request: web.Request) -> web.Response:
    """GET /jsonldContexts: the URLs of hosted contexts (``details=true`` for objects)."""
    check_params(request, ("details", "kind"))
    ngsi = await ngsi_context(request, must_exist=False)
    kind = request.query.get("kind", "hosted").lower()
    if kind not in ("hosted", "cached", "implicitlycreated"):
        raise bad_request(f"kind {request.query['kind']!r} is not one of Hosted, Cached, ImplicitlyCreated")
    hosted = ngsi.storage.hosted_contexts() if kind == "hosted" else {}
    if _details(request):
        body: Any = [{"URL": _context_url(ngsi, cid), "localId": cid, "kind": "Hosted"} for cid in sorted(hosted)]
    else:
        body = [_context_url(ngsi, cid) for cid in sorted(hosted)]
    return web.json_response(body)


async def get_context(request: web.Request) -> web.Response:
    """GET /jsonldContexts/{id}: the hosted context document."""
    check_params(request, ("details",))
    ngsi = await ngsi_context(request, must_exist=False)
    document = ngsi.storage.hosted_contexts().get(request.match_info["context_id"])
    if document is None:
        raise not_found(f"no hosted @context {request.match_info['context_id']}")
    if _details(request):
        cid = request.match_info["context_id"]
        return web.json_response({"URL": _context_url(ngsi, cid), "localId": cid, "kind": "Hosted"})
    return web.json_response(dict(document), content_type=LD_JSON)


async def delete_context(request: web.Request) -> web.Response:
    """DELETE /jsonldContexts/{id}: 204; 404 when unknown."""
    check_params(request, ("reload",))
    if "reload" in request.query:
        raise NgsiError("OperationNotSupported", "reload only applies to cached contexts, and none are cached")
    ngsi = await ngsi_context(request, must_exist=False)
    if not await ngsi.storage.delete_context(request.match_info["context_id"]):
        raise not_found(f"no hosted @context {request.match_info['context_id']}")
    return no_content()


def add_discovery_routes(app: web.Application) -> None:
    """Register /types, /attributes and /jsonldContexts."""
    r = app.router
    r.add_get("/types", list_types, allow_head=False)
    r.add_get("/types/{type}", type_details, allow_head=False)
    r.add_get("/attributes", list_attributes, allow_head=False)
    r.add_get("/attributes/{attr}", attribute_details, allow_head=False)
    r.add_post("/jsonldContexts", add_context)
    r.add_get("/jsonldContexts", list_contexts, allow_head=False)
    r.add_get("/jsonldContexts/{context_id}", get_context, allow_head=False)
    r.add_delete("/jsonldContexts/{context_id}", delete_context)
