"""Calls to maintenance systems: a templated webhook (GMAO/CMMS) and Open311 GeoReport v2 ``POST requests``.

A webhook may also declare the call that closes its work order; both kinds are polled for the
remote status (Open311 through ``GET requests/{id}.json``).

Each call returns an :class:`Answer`; it never raises for what the target says. 4xx (but 408 and
429) is a refusal, 5xx and network errors are worth a retry. The request body kept with a refusal
has the Open311 ``api_key`` removed; headers (which carry tokens) are never kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp

from gateway.rules.config import Target
from gateway.rules.templates import render
from gateway.runtime.logging import redact

MAX_ANSWER: Final = 64 * 1024
"""Bytes of a target's answer read at most (a work-order API answers a small document)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a target said: success with the remote id and status, or a failure to retry or to keep."""

    ok: bool
    retry: bool = False
    remote_id: str | None = None
    remote_status: str | None = None
    text: str = ""
    request: bytes = b""
    content_type: str = "application/json"


def _body(target: Target, fields: Mapping[str, Any], action: str = "open") -> tuple[bytes, bytes, str]:
    """The request body to send, the one to keep (no secret) and its media type."""
    if action == "close":
        template = target.close_body if target.close_body is not None else {
            "status": "closed", "alert": "${alertId}", "reason": "${closedBy}"}
        data = json.dumps(render(template, fields), ensure_ascii=False).encode()
        return data, data, "application/json"
    if target.kind == "open311":
        form: dict[str, Any] = {"service_code": target.service_code, "lat": fields.get("lat", ""),
                                "long": fields.get("long", ""), "description": fields.get("description", ""),
                                "device_id": fields.get("alertSource", "")}
        if target.jurisdiction_id:
            form["jurisdiction_id"] = target.jurisdiction_id
        if isinstance(target.body, Mapping):
            form.update(render(target.body, fields))
        kept = urlencode({k: v for k, v in form.items() if v != ""}).encode()
        if target.api_key:
            form["api_key"] = target.api_key
        sent = urlencode({k: v for k, v in form.items() if v != ""}).encode()
        return sent, kept, "application/x-www-form-urlencoded"
    template = target.body if target.body is not None else {
        "title": "${title}", "description": "${description}", "severity": "${severity}", "asset": "${alertSource}",
        "alert": "${alertId}"}
    rendered = render(template, fields)
    if target.format == "form":
        data = urlencode(rendered if isinstance(rendered, Mapping) else {"body": rendered}).encode()
        return data, data, "application/x-www-form-urlencoded"
    data = json.dumps(rendered, ensure_ascii=False).encode()
    return data, data, "application/json"


def _member(doc: Any, name: str) -> str | None:
    node = doc
    for part in name.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return None if node is None or isinstance(node, Mapping | list) else str(node)


async def send(http: aiohttp.ClientSession, target: Target, fields: Mapping[str, Any],
               action: str = "open") -> Answer:
    """Send the intervention (``open``) or its closing (``close``) to ``target``; never raises for its answer."""
    data, kept, ctype = _body(target, fields, action)
    headers = {"Content-Type": ctype, "Accept": "application/json", **target.headers}
    method, url = target.method, target.url
    if action == "close":
        safe = quote(str(fields.get("workOrderId", "")), safe="")
        method, url = target.close_method, str(render(target.close_url or "", {**fields, "workOrderId": safe}))
    try:
        async with http.request(method, url, data=data, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=target.timeout_s)) as resp:
            raw = await resp.content.read(MAX_ANSWER)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Answer(False, True, text=redact(f"no answer: {type(exc).__name__}: {exc}"), request=kept,
                      content_type=ctype)
    text = raw.decode("utf-8", "replace")
    if status >= 300:
        retry = status >= 500 or status in (408, 429)
        return Answer(False, retry, text=redact(f"HTTP {status}: {text[:1000]}"), request=kept, content_type=ctype)
    try:
        doc: Any = json.loads(text) if text.strip() else {}
    except ValueError:
        doc = {}
    if action == "close":
        return Answer(True, remote_status=_member(doc, target.status_field), request=kept, content_type=ctype)
    if target.kind == "open311":
        # GeoReport v2 answers a list of one: service_request_id, or a token when the id comes later.
        first = doc[0] if isinstance(doc, list) and doc else doc
        remote = _member(first, "service_request_id") or _member(first, "token")
        return Answer(True, remote_id=remote, remote_status="submitted", request=kept, content_type=ctype)
    return Answer(True, remote_id=_member(doc, target.id_field), remote_status=_member(doc, target.status_field),
                  request=kept, content_type=ctype)


async def poll_status(http: aiohttp.ClientSession, target: Target, remote_id: str | None) -> str | None:
    """The work order's status as the target reports it now, or None when it cannot be read."""
    if target.poll_url is None or remote_id is None:
        return None
    safe = quote(remote_id, safe="")
    url = render(target.poll_url, {"workOrderId": safe, "id": safe})
    try:
        async with http.get(str(url), headers={"Accept": "application/json", **target.headers},
                            timeout=aiohttp.ClientTimeout(total=target.timeout_s)) as resp:
            if resp.status != 200:
                return None
            doc = json.loads(await resp.content.read(MAX_ANSWER))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None
    if target.kind == "open311":
        # GeoReport v2 GET requests/{id}.json answers a list of one request; its status is open or closed.
        doc = doc[0] if isinstance(doc, list) and doc else doc
        return _member(doc, "status")
    return _member(doc, target.status_field)
