"""Batch entity operations (§6.14-§6.19, §5.6.7-§5.6.10, §5.2.16) and the POST query (§6.23).

Every batch runs in ONE storage transaction, in array order (duplicates see each other);
entities that do not expand are reported as BadRequestData with their ``entityId``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from aiohttp import web

from gateway import model
from gateway.store import operations as ops
from gateway.store.api import QueryParams, run_query
from gateway.store.base import BatchError, BatchResult, Change, Doc, Mutator
from gateway.store.http import (
    GEO_JSON,
    JSON,
    LD_JSON,
    Body,
    NgsiContext,
    check_params,
    negotiate,
    ngsi_context,
    no_content,
    read_body,
    respond,
)
from gateway.store.problems import NgsiError, bad_request
from gateway.store.representation import parse_options


def _items(ngsi: NgsiContext, body: Body) -> list[Any]:
    if not isinstance(body.data, list):
        raise bad_request("the body of a batch operation must be a JSON array")
    if not body.data:
        raise bad_request("the batch is empty")
    if len(body.data) > ngsi.settings.max_batch:
        raise bad_request(f"more than {ngsi.settings.max_batch} entities in one batch")
    return body.data


def _expand_all(
    ngsi: NgsiContext, body: Body, *, partial: bool = False
) -> tuple[list[tuple[int, Doc]], dict[int, BatchError]]:
    docs: list[tuple[int, Doc]] = []
    errors: dict[int, BatchError] = {}
    for index, item in enumerate(_items(ngsi, body)):
        entity_id = item.get("id", "") if isinstance(item, Mapping) else ""
        try:
            if not isinstance(item, Mapping):
                raise bad_request(f"/{index}: each entity must be a JSON object")
            if body.content_type == JSON and "@context" in item:
                raise bad_request(f"/{index}: with Content-Type application/json the @context must come in a "
                                  "Link header, not in the entity")
            ctx = body.context_for(ngsi, item)
            data = {k: v for k, v in item.items() if k != "@context"} if "@context" in item else item
            if partial and not model.is_uri(data.get("id")):
                raise bad_request(f"/{index}/id: entity id {data.get('id')!r} is missing or not a URI")
            docs.append((index, ctx.expand_entity(data, partial=partial)))
        except NgsiError as exc:
            errors[index] = BatchError(str(entity_id), exc)
    return docs, errors


async def _run(
    ngsi: NgsiContext,
    docs: Sequence[tuple[int, Doc]],
    early: Mapping[int, BatchError],
    make: Callable[[Doc], Mutator],
    *,
    create_tenant: bool,
    partial_is_error: bool = False,
) -> BatchResult:
    changes = [Change(doc["id"], make(doc)) for _, doc in docs]
    results = await ngsi.storage.apply(ngsi.tenant, changes, create_tenant=create_tenant) if changes else []
    out = BatchResult()
    by_index = dict(zip((i for i, _ in docs), results, strict=True))
    for index in sorted([*by_index, *early]):
        if index in early:
            out.errors.append(early[index])
            continue
        r = by_index[index]
        if r.error is not None:
            out.errors.append(BatchError(r.entity_id, r.error))
        elif partial_is_error and r.not_updated:
            # §5.6.9: an entity whose attributes were not all updated (noOverwrite on an existing
            # one, Null on an absent one) is reported in errors, with what was left untouched.
            reasons = "; ".join(f"{name}: {reason}" for name, reason in r.not_updated)
            out.errors.append(BatchError(r.entity_id, bad_request(f"attributes not updated: {reasons}")))
        else:
            out.success.append(r.entity_id)
            if r.outcome == "created":
                out.created.append(r.entity_id)
    return out


def _multi(ngsi: NgsiContext, result: BatchResult) -> web.Response:
    return respond(ngsi, result.to_json(), status=207)


async def batch_create(request: web.Request) -> web.Response:
    """POST /entityOperations/create: 201 with the ids, or 207 BatchOperationResult."""
    check_params(request, ())
    ngsi = await ngsi_context(request, must_exist=False)
    body = await read_body(request, item_contexts=True)
    docs, early = _expand_all(ngsi, body)
    result = await _run(ngsi, docs, early, ops.create, create_tenant=True)
    if result.errors:
        return _multi(ngsi, result)
    return respond(ngsi, result.success, status=201)


async def batch_upsert(request: web.Request) -> web.Response:
    """POST /entityOperations/upsert (``options=replace|update``): 201 (ids created), 204 (all updated), 207."""
    check_params(request, ("options",))
    ngsi = await ngsi_context(request, must_exist=False)
    _, _, others = parse_options(request.query.get("options"), None, allowed=frozenset({"replace", "update"}))
    if len(others) > 1:
        raise bad_request("options: replace and update cannot be combined")
    mode: Literal["update", "replace"] = "update" if "update" in others else "replace"
    body = await read_body(request, item_contexts=True)
    docs, early = _expand_all(ngsi, body)
    result = await _run(ngsi, docs, early, lambda d: ops.upsert(d, mode), create_tenant=True)
    if result.errors:
        return _multi(ngsi, result)
    if not result.created:
        return no_content()
    # §6.15.3.1: 201 with the ids of the entities created (those updated are not listed).
    return respond(ngsi, list(dict.fromkeys(result.created)), status=201)


async def batch_update(request: web.Request) -> web.Response:
    """POST /entityOperations/update (``options=noOverwrite``): 204 or 207."""
    check_params(request, ("options",))
    ngsi = await ngsi_context(request)
    _, _, others = parse_options(request.query.get("options"), None, allowed=frozenset({"noOverwrite"}))
    body = await read_body(request, item_contexts=True)
    docs, early = _expand_all(ngsi, body, partial=True)
    no_overwrite = "noOverwrite" in others
    result = await _run(
        ngsi, docs, early, lambda d: ops.update_attrs(d, no_overwrite=no_overwrite, strict=False), create_tenant=False,
        partial_is_error=True,
    )
    return _multi(ngsi, result) if result.errors else no_content()


async def batch_merge(request: web.Request) -> web.Response:
    """POST /entityOperations/merge: 204 or 207."""
    check_params(request, ())
    ngsi = await ngsi_context(request)
    body = await read_body(request, item_contexts=True)
    docs, early = _expand_all(ngsi, body, partial=True)
    result = await _run(ngsi, docs, early, ops.merge, create_tenant=False)
    return _multi(ngsi, result) if result.errors else no_content()


async def batch_delete(request: web.Request) -> web.Response:
    """POST /entityOperations/delete (array of ids): 204 or 207."""
    check_params(request, ())
    ngsi = await ngsi_context(request)
    body = await read_body(request)
    docs: list[tuple[int, Doc]] = []
    early: dict[int, BatchError] = {}
    for index, item in enumerate(_items(ngsi, body)):
        if isinstance(item, str) and model.is_uri(item):
            docs.append((index, {"id": item}))
        else:
            early[index] = BatchError(str(item), bad_request(f"/{index}: {item!r} is not an entity id (URI)"))
    result = await _run(ngsi, docs, early, lambda d: ops.delete(), create_tenant=False)
    return _multi(ngsi, result) if result.errors else no_content()


_QUERY_KEYS = frozenset({"type", "id", "entities", "attrs", "pick", "omit", "q", "geoQ", "scopeQ", "lang",
                         "@context", "temporalQ", "csf", "datasetId", "join", "joinLevel", "geometryProperty"})


async def batch_query(request: web.Request) -> web.Response:
    """POST /entityOperations/query (§6.23.3.1): a Query body, answered like GET /entities."""
    check_params(request, ("limit", "offset", "count", "options", "format", "lang", "local", "geometryProperty"))
    ngsi = await ngsi_context(request)
    media = negotiate(request, (JSON, LD_JSON, GEO_JSON))
    body = await read_body(request)
    data = body.data
    if not isinstance(data, Mapping):
        raise bad_request("the body must be a Query object")
    unknown = set(data) - _QUERY_KEYS
    if unknown:
        raise bad_request(f"unknown Query member(s): {', '.join(sorted(unknown))}")
    if data.get("type", "Query") != "Query":
        raise bad_request("the Query type member must be 'Query'")
    if "temporalQ" in data or "csf" in data:
        raise NgsiError("NotImplemented", "temporalQ and csf are not supported in POST /entityOperations/query")
    ctx = body.context_for(ngsi)
    qp = QueryParams(local=request.query.get("local") == "true")
    selectors = data.get("entities")
    if selectors is not None:
        _selectors(qp, selectors)
    for key in ("attrs",):
        if key in data:
            value = data[key]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad_request(f"{key} must be an array of attribute names")
            qp.attrs = value
    for key, attr in (("q", "q"), ("scopeQ", "scope_q")):
        if key in data:
            if not isinstance(data[key], str):
                raise bad_request(f"{key} must be a string")
            setattr(qp, attr, data[key])
    geo_q = data.get("geoQ")
    if geo_q is not None:
        if not isinstance(geo_q, Mapping):
            raise bad_request("geoQ must be an object")
        qp.georel = geo_q.get("georel")
        qp.geometry = geo_q.get("geometry")
        coords = geo_q.get("coordinates")
        qp.coordinates = coords if isinstance(coords, list | str) else None
        qp.geoproperty = geo_q.get("geoproperty")
    render_params: dict[str, Any] = dict(request.query)
    for key in ("join", "joinLevel"):
        if key in data:
            render_params[key] = data[key]
    if isinstance(data.get("geometryProperty"), str):
        render_params["geometryProperty"] = data["geometryProperty"]
    for key in ("pick", "omit", "lang", "datasetId"):
        if key in data:
            value = data[key]
            render_params[key] = ",".join(value) if isinstance(value, list) else str(value)
    if qp.attrs is not None:
        render_params["attrs"] = ",".join(qp.attrs)
    return await run_query(ngsi, ctx, qp, render_params, media)


def _selectors(qp: QueryParams, selectors: Any) -> None:
    """EntitySelector list → ids / type expression / idPattern (an OR of selectors)."""
    if not isinstance(selectors, list) or not selectors:
        raise bad_request("entities must be a non-empty array of EntitySelector")
    types: list[str] = []
    ids: list[str] = []
    patterns: list[str] = []
    for index, sel in enumerate(selectors):
        if not isinstance(sel, Mapping) or not isinstance(sel.get("type"), str):
            raise bad_request(f"entities/{index}: an EntitySelector needs a type")
        types.append(sel["type"])
        if "id" in sel:
            ids.append(str(sel["id"]))
        if "idPattern" in sel:
            patterns.append(str(sel["idPattern"]))
    mixed = (ids and len(ids) != len(selectors)) or (patterns and len(patterns) != len(selectors))
    if mixed and len(selectors) > 1:
        raise NgsiError("NotImplemented", "EntitySelectors mixing id/idPattern with type-only selectors")
    qp.types = "|".join(f"({t})" if any(c in t for c in ",;|()") else t for t in dict.fromkeys(types))
    if ids:
        qp.ids = ids
    if patterns:
        qp.id_pattern = "|".join(f"(?:{p})" for p in patterns) if len(patterns) > 1 else patterns[0]


def add_batch_routes(app: web.Application) -> None:
    """Register the /entityOperations routes."""
    r = app.router
    r.add_post("/entityOperations/create", batch_create)
    r.add_post("/entityOperations/upsert", batch_upsert)
    r.add_post("/entityOperations/update", batch_update)
    r.add_post("/entityOperations/delete", batch_delete)
    r.add_post("/entityOperations/merge", batch_merge)
    r.add_post("/entityOperations/query", batch_query)
