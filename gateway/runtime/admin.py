"""Admin API under ``/admin/``: sources, sinks, outbox, dead letters and raw archive.

Every answer is JSON; errors are RFC 9457 problem details. The OpenAPI 3.1 description is
served at ``/admin/openapi.json``. Authentication is enforced by the app's middleware;
:func:`cross_site_guard` refuses cross-site calls (``Host``, ``Origin``, non-JSON bodies), with or
without a token.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.contract import DeviceProvisioning
from gateway.crosssite import HostPolicy, json_content_type, refusal, simple_content_type
from gateway.errors import ConfigInvalid, JonctionError
from gateway.problems import problem_error, problem_response, write_problem
from gateway.runtime.logging import redact
from gateway.runtime.state import RUNTIME, Runtime

MAX_LIMIT: Final = 1000
MAX_DEVICE_BYTES: Final = 64 * 1024
"""Largest body of a device added through the admin API."""


def problem(status: int, title: str, detail: str) -> web.Response:
    """An RFC 9457 problem-details response (secrets masked in ``detail``)."""
    return problem_response(status, title, redact(detail))


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_WRITES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _has_body(request: web.Request) -> bool:
    length = request.content_length
    return (length is not None and length > 0) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def cross_site_guard(policy: HostPolicy) -> Middleware:
    """Middleware refusing (403) admin calls a web page could make from the operator's browser.

    Every ``/admin/`` request must name this server in ``Host`` (against DNS rebinding) and carry no
    ``Origin`` of another site; a write carrying a body must be JSON, and a write never carries the
    form or text types browsers send cross-site without a preflight. Applies on loopback, with or
    without a token: a token-less loopback gateway would otherwise be driven by any web page.
    """

    @web.middleware
    async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith("/admin/"):
            return await handler(request)
        reason = refusal(policy, host=request.headers.get("Host"), origin=request.headers.get("Origin"),
                         scheme=request.scheme, fetch_site=request.headers.get("Sec-Fetch-Site"))
        if reason is None and request.method in _WRITES:
            ctype = request.headers.get("Content-Type")
            if simple_content_type(ctype) or (_has_body(request) and not json_content_type(ctype)):
                reason = "admin requests with a body must be JSON (Content-Type: application/json)"
        if reason is not None:
            return problem(403, "Forbidden", reason)
        return await handler(request)

    return guard


def _int(request: web.Request, name: str, default: int, *, maximum: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise problem_error(400, "Bad Request", f"query parameter {name!r} must be an integer") from None
    if value < 0:
        value = 0
    return min(value, maximum) if maximum is not None else value


def _rt(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


async def sources(request: web.Request) -> web.Response:
    """Configured sources and their supervision state."""
    rt = _rt(request)
    pipeline = rt.pipeline
    configured = {d["name"]: d for d in pipeline.describe()}
    out = []
    for name, desc in configured.items():
        sup = rt.sources.get(name)
        out.append({**desc, **(sup.status.to_json() if sup else {"state": "disabled"}),
                    "devices": sup is not None and isinstance(sup.adapter, DeviceProvisioning)})
    return web.json_response({"sources": out})


async def restart_source(request: web.Request) -> web.Response:
    """Restart one source with a fresh adapter instance (after editing its mapping file, say)."""
    rt = _rt(request)
    name = request.match_info["name"]
    sup = await rt.restart_source(name)
    if sup is None:
        return problem(404, "Not Found", f"no enabled source named {name!r}")
    return web.json_response(sup.status.to_json())


def _provisioning(request: web.Request) -> DeviceProvisioning:
    name = request.match_info["name"]
    sup = _rt(request).sources.get(name)
    if sup is None:
        raise problem_error(404, "Not Found", f"no enabled source named {name!r}")
    adapter = sup.adapter
    if not isinstance(adapter, DeviceProvisioning):
        raise problem_error(404, "Not Found", f"source {name!r} (adapter {sup.status.adapter}) has no device registry")
    return adapter


def _pointed(problems: list[str]) -> list[dict[str, str]]:
    """``"/dev_eui: reason"`` problems as ``{"pointer", "message"}`` (pointer "" for the whole device)."""
    out = []
    for text in problems:
        where, sep, message = text.partition(": ")
        if sep and (where.startswith("/") or where == ""):
            out.append({"pointer": "" if where == "/" else where, "message": message})
        else:
            out.append({"pointer": "", "message": text})
    return out


async def list_devices(request: web.Request) -> web.Response:
    """A source's provisioned devices (with their last radio metadata) and the profiles it knows."""
    adapter = _provisioning(request)
    return web.json_response({"source": request.match_info["name"], "devices": adapter.devices(),
                              "profiles": adapter.device_profiles()})


async def add_device(request: web.Request) -> web.Response:
    """Provision one device at run time, validated like the config's; 422 names each problem's pointer."""
    adapter = _provisioning(request)
    if (request.content_length or 0) > MAX_DEVICE_BYTES:
        return problem(413, "Payload Too Large", f"a device is at most {MAX_DEVICE_BYTES} bytes of JSON")
    raw = await request.content.read(MAX_DEVICE_BYTES + 1)
    if len(raw) > MAX_DEVICE_BYTES:
        return problem(413, "Payload Too Large", f"a device is at most {MAX_DEVICE_BYTES} bytes of JSON")
    try:
        body = json.loads(raw)
    except ValueError:
        return problem(400, "Bad Request", "body is not JSON")
    if not isinstance(body, dict):
        return problem(400, "Bad Request", "body must be a JSON object (a device as in the config's devices)")
    try:
        added = adapter.add_device(body)
    except ConfigInvalid as exc:
        doc = {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
               "detail": redact(str(exc)), "errors": _pointed(exc.problems)}
        return write_problem(doc, 422)
    return web.json_response(added, status=201)


async def sinks(request: web.Request) -> web.Response:
    """Sinks with circuit state and backlog."""
    rt = _rt(request)
    outbox = rt.outbox
    backlog: dict[str, dict[str, Any]] = {}
    for row in outbox.status():
        entry = backlog.setdefault(row.sink, {"entities": 0, "oldestAgeSeconds": 0.0})
        entry["entities"] += row.entities
        entry["oldestAgeSeconds"] = max(entry["oldestAgeSeconds"], row.oldest_age_s)
    return web.json_response({"sinks": [
        {**p.describe(), "backlog": backlog.get(name, {"entities": 0, "oldestAgeSeconds": 0.0})}
        for name, p in rt.publishers.items()]})


async def outbox_status(request: web.Request) -> web.Response:
    """Outbox backlog per sink and tenant, with the disk budget."""
    rt = _rt(request)
    outbox = rt.outbox
    rows = outbox.status()
    return web.json_response({"bytes": outbox.bytes, "maxBytes": outbox.max_bytes,
                              "entities": sum(r.entities for r in rows),
                              "oldestAgeSeconds": max((r.oldest_age_s for r in rows), default=0.0),
                              "backlog": [r.to_json() for r in rows]})


async def list_dead_letters(request: web.Request) -> web.Response:
    """Dead letters, oldest first, filtered by source, tenant or stage; paged with ``after``."""
    rt = _rt(request)
    letters = rt.deadletters
    limit = _int(request, "limit", 100, maximum=MAX_LIMIT)
    items = letters.list(source=request.query.get("source"), tenant=request.query.get("tenant"),
                         stage=request.query.get("stage"), after=_int(request, "after", 0), limit=limit)
    return web.json_response({"deadLetters": [d.to_json() for d in items],
                              "next": items[-1].id if len(items) == limit else None})


def _letter_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None


async def get_dead_letter(request: web.Request) -> web.Response:
    """One dead letter with its raw payload and the entity that failed."""
    rt = _rt(request)
    letters = rt.deadletters
    letter = letters.get(_letter_id(request))
    if letter is None:
        return problem(404, "Not Found", "no such dead letter")
    return web.json_response(letter.to_json(with_payload=True))


def _replay_letter(rt: Runtime, letter_id: int) -> dict[str, Any]:
    letters, pipeline = rt.deadletters, rt.pipeline
    letter = letters.get(letter_id)
    if letter is None:
        return {"id": letter_id, "status": "not-found"}
    if letter.stage == "intervention":
        # A call a maintenance system refused: sent again by the rules engine (the target was fixed).
        if rt.rules is None or letter.sink is None:
            return {"id": letter_id, "status": "failed", "reason": "no rules are configured"}
        rt.rules.rearm(letter.correlation_id, letter.sink, letter.raw.metadata.get("action", "open"))
        with pipeline.db.transaction() as conn:
            letters.delete(conn, letter_id)
        return {"id": letter_id, "status": "queued", "queued": [letter.correlation_id]}
    if letter.stage == "sink":
        if letter.sink not in rt.publishers or letter.entity is None:
            return {"id": letter_id, "status": "failed", "reason": f"sink {letter.sink!r} is not configured"}
        pipeline.requeue(letter.sink, letter.raw.tenant, letter.entity, letter.correlation_id,
                         letter.raw.source, letter_id)
        return {"id": letter_id, "status": "queued", "queued": [letter.entity_id]}
    try:
        outcome = pipeline.replay(letter.raw, letter.correlation_id, only_entity=letter.entity_id)
    except JonctionError as exc:
        return {"id": letter_id, "status": "failed", "reason": str(exc)}
    if outcome.dead_letters:
        # still failing: keep the original, drop the copies just made
        with pipeline.db.transaction() as conn:
            for new_id in outcome.dead_letters:
                letters.delete(conn, new_id)
        return {"id": letter_id, "status": "still-failing", "queued": outcome.queued}
    with pipeline.db.transaction() as conn:
        letters.delete(conn, letter_id)
    return {"id": letter_id, "status": "queued", "queued": outcome.queued}


async def replay_dead_letter(request: web.Request) -> web.Response:
    """Translate and validate a dead letter again (after a fix); queue it and drop it if it passes."""
    result = _replay_letter(_rt(request), _letter_id(request))
    if result["status"] == "not-found":
        return problem(404, "Not Found", "no such dead letter")
    return web.json_response(result, status=200 if result["status"] == "queued" else 422)


async def replay_dead_letters(request: web.Request) -> web.Response:
    """Replay every dead letter matching the body's filters (source, tenant, stage, limit)."""
    rt = _rt(request)
    letters = rt.deadletters
    body = await _json_body(request)
    limit = min(int(body.get("limit", 1000)), 10000) if isinstance(body.get("limit", 0), int) else 1000
    items = letters.list(source=body.get("source"), tenant=body.get("tenant"), stage=body.get("stage"),
                         limit=limit)
    results = [_replay_letter(rt, d.id) for d in items]
    return web.json_response({"replayed": sum(r["status"] == "queued" for r in results), "results": results})


async def rules_status(request: web.Request) -> web.Response:
    """The rules engine: conditions holding, open alerts and calls not yet done."""
    rt = _rt(request)
    if rt.rules is None:
        return problem(404, "Not Found", "no rules are configured")
    return web.json_response(rt.rules.status())


async def work_order_status(request: web.Request) -> web.Response:
    """A maintenance system pushes a work order's status (``{"status": "closed"}``); a closed one closes its Alert."""
    rt = _rt(request)
    body = await _json_body(request)
    status = body.get("status")
    if not isinstance(status, str) or not status or len(status) > 200:
        return problem(422, "Unprocessable Content", "/status: a string of 1 to 200 characters is required")
    if rt.rules is None or not await rt.rules.work_order_status(request.match_info["name"], request.match_info["id"],
                                                                 status):
        return problem(404, "Not Found", "no intervention with this target and work order id")
    return web.Response(status=204)


async def delete_dead_letter(request: web.Request) -> web.Response:
    """Drop a dead letter for good."""
    rt = _rt(request)
    found = rt.deadletters.discard(_letter_id(request))
    return web.Response(status=204) if found else problem(404, "Not Found", "no such dead letter")


async def list_archive(request: web.Request) -> web.Response:
    """Archived raw messages, oldest first, paged with ``after``; with the archive's bounds."""
    rt = _rt(request)
    archive = rt.archive
    limit = _int(request, "limit", 100, maximum=MAX_LIMIT)
    items = archive.list(source=request.query.get("source"), tenant=request.query.get("tenant"),
                         after=_int(request, "after", 0), limit=limit)
    return web.json_response({"stats": archive.stats(), "messages": [m.summary() for m in items],
                              "next": items[-1].id if len(items) == limit else None})


async def get_archived(request: web.Request) -> web.Response:
    """One archived message, payload included."""
    rt = _rt(request)
    archive = rt.archive
    msg = archive.get(_letter_id(request))
    if msg is None:
        return problem(404, "Not Found", "no such archived message")
    doc = msg.summary()
    try:
        doc["payload"] = json.loads(msg.raw.payload)
    except ValueError:
        doc["payload"] = msg.raw.payload.decode("utf-8", "replace")
    doc["metadata"] = dict(msg.raw.metadata)
    return web.json_response(doc)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise problem_error(400, "Bad Request", "body is not JSON") from None
    if not isinstance(body, dict):
        raise problem_error(400, "Bad Request", "body must be an object")
    return body


async def replay_archive(request: web.Request) -> web.Response:
    """Translate archived messages again: ``{"ids": [...]}`` or ``{"source", "after", "limit"}``."""
    rt = _rt(request)
    archive, pipeline = rt.archive, rt.pipeline
    body = await _json_body(request)
    ids = body.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids) or len(ids) > MAX_LIMIT:
            return problem(400, "Bad Request", f"ids must be a list of at most {MAX_LIMIT} integers")
        found = [m for m in (archive.get(i) for i in ids) if m is not None]
    else:
        limit = body.get("limit", 100)
        after = body.get("after", 0)
        if not isinstance(limit, int) or not isinstance(after, int):
            return problem(400, "Bad Request", "limit and after must be integers")
        found = archive.list(source=body.get("source"), after=after, limit=min(limit, MAX_LIMIT))
    queued = dead = 0
    failed: list[dict[str, Any]] = []
    for msg in found:
        try:
            outcome = pipeline.replay(msg.raw, msg.correlation_id)
        except JonctionError as exc:
            failed.append({"id": msg.id, "reason": str(exc)})
            continue
        queued += len(outcome.queued)
        dead += len(outcome.dead_letters)
    return web.json_response({"messages": len(found), "entitiesQueued": queued, "deadLetters": dead,
                              "failed": failed})


async def openapi(request: web.Request) -> web.Response:  # noqa: ARG001  # aiohttp handler signature
    """The OpenAPI 3.1 description of the admin and operations API."""
    return web.json_response(OPENAPI)


def add_routes(app: web.Application) -> None:
    """Register the admin routes on ``app``."""
    r = app.router
    r.add_get("/admin/openapi.json", openapi)
    r.add_get("/admin/sources", sources)
    r.add_post("/admin/sources/{name}/restart", restart_source)
    r.add_get("/admin/sources/{name}/devices", list_devices)
    r.add_post("/admin/sources/{name}/devices", add_device)
    r.add_get("/admin/sinks", sinks)
    r.add_get("/admin/outbox", outbox_status)
    r.add_get("/admin/deadletters", list_dead_letters)
    r.add_post("/admin/deadletters/replay", replay_dead_letters)
    r.add_get("/admin/deadletters/{id}", get_dead_letter)
    r.add_delete("/admin/deadletters/{id}", delete_dead_letter)
    r.add_post("/admin/deadletters/{id}/replay", replay_dead_letter)
    r.add_get("/admin/rules", rules_status)
    r.add_post("/admin/rules/targets/{name}/work-orders/{id}", work_order_status)
    r.add_get("/admin/archive", list_archive)
    r.add_post("/admin/archive/replay", replay_archive)
    r.add_get("/admin/archive/{id}", get_archived)


def _op(summary: str, *, params: list[dict[str, Any]] | None = None, body: bool = False,
        codes: tuple[int, ...] = (200,)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "security": [{"bearer": []}], "responses": {}}
    for code in codes:
        op["responses"][str(code)] = {"description": {200: "OK", 201: "Created", 204: "Done", 404: "Not found",
                                                      413: "Body too large", 422: "Still failing or invalid",
                                                      401: "Token missing or wrong"}[code]}
    op["responses"]["401"] = {"description": "Token missing or wrong"}
    op["responses"]["403"] = {"description": "Cross-site call refused (Host, Origin or a non-JSON body)"}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return op


def _q(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {"title": "jonction gateway operations API", "version": "1.0.0",
             "description": "Health, metrics and administration of a jonction gateway. Admin routes need a "
                            "bearer token once one is configured (always when the gateway listens beyond "
                            "loopback); with or without one, admin calls naming another Host, carrying "
                            "another site's Origin or a non-JSON body are refused (403)."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Readiness with dependency checks (storage, sinks, sources)",
                            "security": [], "responses": {"200": {"description": "ready"},
                                                          "503": {"description": "not ready"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition 0.0.4)", "security": [],
                             "responses": {"200": {"description": "metrics",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/admin/openapi.json": {"get": {"summary": "This document", "security": [],
                                        "responses": {"200": {"description": "OK"}}}},
        "/admin/sources": {"get": _op("Sources, their adapter, tenant routes and supervision state")},
        "/admin/sources/{name}/restart": {"post": _op(
            "Restart a source with a fresh adapter instance (re-reads its mapping files)",
            params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            codes=(200, 404))},
        "/admin/sources/{name}/devices": {
            "get": _op("A source's provisioned devices with their last radio metadata, and its device profiles",
                       params=[_NAME], codes=(200, 404)),
            "post": _op("Provision a device (config's devices form), kept in the source's state folder; "
                        "422 lists each problem with its JSON pointer", params=[_NAME], body=True,
                        codes=(201, 404, 413, 422)),
        },
        "/admin/sinks": {"get": _op("Sinks, circuit-breaker state and backlog")},
        "/admin/outbox": {"get": _op("Outbox backlog per sink and tenant (entities, bytes, oldest age)")},
        "/admin/deadletters": {"get": _op("List dead letters", params=[
            _q("source"), _q("tenant"), _q("stage"), _q("after", "integer"), _q("limit", "integer")])},
        "/admin/deadletters/replay": {"post": _op("Replay every dead letter matching source/tenant/stage",
                                                  body=True)},
        "/admin/deadletters/{id}": {
            "get": _op("One dead letter with its raw payload", params=[_ID], codes=(200, 404)),
            "delete": _op("Drop a dead letter", params=[_ID], codes=(204, 404)),
        },
        "/admin/deadletters/{id}/replay": {"post": _op("Translate and validate again; queue if it now passes",
                                                       params=[_ID], codes=(200, 404, 422))},
        "/admin/rules": {"get": _op("Rules: conditions holding, open alerts, calls not yet done", codes=(200, 404))},
        "/admin/rules/targets/{name}/work-orders/{id}": {"post": _op(
            "A maintenance system pushes a work order's status ({\"status\": \"closed\"}); a closed one closes "
            "its Alert", params=[_NAME, {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            body=True, codes=(204, 404, 422))},
        "/admin/archive": {"get": _op("List archived raw messages and the archive bounds", params=[
            _q("source"), _q("tenant"), _q("after", "integer"), _q("limit", "integer")])},
        "/admin/archive/{id}": {"get": _op("One archived raw message", params=[_ID], codes=(200, 404))},
        "/admin/archive/replay": {"post": _op("Replay archived messages by ids or by source/after/limit",
                                              body=True)},
    },
}
"""The OpenAPI 3.1 document served at ``/admin/openapi.json``."""
