"""NGSI-LD HTTP toolkit of the store (ETSI GS CIM 009 V1.9.1 §6.3): the seam every route module uses.

:func:`ngsi_context` gives the tenant, the storage and the @context of a request; :func:`read_body`
applies the media-type, size and @context rules; :func:`respond` answers with the Link header or the
body @context; :func:`paging` and :func:`page_links` apply §6.3.10; errors raised as
:class:`~gateway.store.problems.NgsiError` become ProblemDetails in :func:`error_middleware`, and
:class:`Bare` becomes a status without a body (415, 411). Entity, batch, discovery, subscription and
temporal routes are built on it; nothing here knows an endpoint.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

from aiohttp import web

from gateway.problems import write_problem
from gateway.store import codec, jsonld
from gateway.store.base import Storage
from gateway.store.jsonld import Context, ContextCache, ContextEntry
from gateway.store.problems import NgsiError, bad_request, invalid_request, not_found
from gateway.store.settings import CONTEXTS_KEY, READER_STORAGE, SETTINGS_KEY, STORAGE_KEY, StoreSettings

log = logging.getLogger("jonction.store.http")

JSON: Final = "application/json"
LD_JSON: Final = "application/ld+json"
GEO_JSON: Final = "application/geo+json"
MERGE_PATCH: Final = "application/merge-patch+json"
CONTEXT_REL: Final = "http://www.w3.org/ns/json-ld#context"
TENANT_HEADER: Final = "NGSILD-Tenant"
COUNT_HEADER: Final = "NGSILD-Results-Count"
BODY_KEY: Final = web.RequestKey("jonction.store.body", bytes)
"""Request key of a body already read by a middleware (bytes), which read_body then uses."""

_TENANT = re.compile(r"^[A-Za-z0-9_\-.:]{1,128}$")
_LINK = re.compile(r"<([^>]*)>([^<]*)")
NOT_IMPLEMENTED_PARAMS: Final = frozenset(
    {"csf", "containedBy", "entityMap", "expandValues", "collectValues", "splitEntities",
     "dataset", "contextSourceIds", "jsonKeys"}
)
"""Query parameters of 1.8/1.9 this store does not implement: 501 instead of 400."""


class Bare(Exception):
    """An HTTP status answered without a body (415 and 411 are bare in §6.3.4)."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(status)


# --------------------------------------------------------------------------- middleware


def _problem_response(err: NgsiError) -> web.Response:
    return write_problem(err.to_problem_details(), err.status, content_type=JSON)


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    """Map errors to ProblemDetails (or bare statuses) and echo the tenant header."""
    try:
        response: web.StreamResponse = await handler(request)
    except NgsiError as err:
        response = _problem_response(err)
    except Bare as bare:
        response = web.Response(status=bare.status)
    except web.HTTPNotFound:
        if "//" in request.path:
            # An empty path segment is a missing identifier (/entities//attrs): the request is
            # malformed, not aimed at a resource that does not exist.
            response = _problem_response(bad_request(f"{request.path}: an identifier in the path is empty"))
        else:
            response = _problem_response(not_found(f"no NGSI-LD resource at {request.path}"))
    except web.HTTPMethodNotAllowed as exc:
        response = _problem_response(
            NgsiError("OperationNotSupported", f"{request.method} is not supported on {request.path}", 405)
        )
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("store: unexpected error on %s %s", request.method, request.path)
        response = _problem_response(NgsiError("InternalError", "unexpected error; see the server log"))
    if response.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ngsi-ld"'
    tenant = request.headers.get(TENANT_HEADER)
    if tenant is not None and _TENANT.match(tenant):
        response.headers[TENANT_HEADER] = tenant
    return response


# --------------------------------------------------------------------------- request context


@dataclass(slots=True)
class NgsiContext:
    """What every handler needs: tenant, storage, settings, and the request's @context."""

    request: web.Request
    storage: Storage
    settings: StoreSettings
    tenant: str
    contexts: ContextCache
    link: str | None
    """The @context IRI given in the Link header, if any."""

    def context(self, entries: Sequence[ContextEntry] | None = None) -> Context:
        """The Context for explicit entries, else for the Link header, else the core one."""
        if entries is None:
            entries = [self.link] if self.link else []
        return self.contexts.get(entries)

    def link_iri(self) -> str:
        """The @context IRI to put in a response Link header."""
        return self.link or jsonld.core_context_iri()


def tenant_of(request: web.Request) -> str:
    """The tenant named by ``NGSILD-Tenant`` ("" when absent); BadRequestData when malformed."""
    value = request.headers.get(TENANT_HEADER)
    if value is None:
        return ""
    if not _TENANT.match(value):
        raise bad_request(f"{TENANT_HEADER}: {value!r} is not a valid tenant name")
    return value


def link_context(request: web.Request) -> str | None:
    """The @context IRI of the Link header (rel json-ld#context), or None."""
    found: list[str] = []
    for header in request.headers.getall("Link", []):
        for target, params in _LINK.findall(header):
            if re.search(r'rel\s*=\s*"?' + re.escape(CONTEXT_REL) + r'"?', params):
                found.append(target.strip())
    if len(found) > 1:
        raise bad_request("more than one JSON-LD @context Link header")
    if found:
        entries = jsonld.normalize_entries(found[0])
        return str(entries[0])
    return None


async def ngsi_context(request: web.Request, *, must_exist: bool = True) -> NgsiContext:
    """Build the request context; NonexistentTenant when ``must_exist`` and the tenant is unknown."""
    # a reader who is not the tenant's owner sees the storage through its sharing policy (readers.py)
    storage = READER_STORAGE.get() or request.config_dict[STORAGE_KEY]
    tenant = tenant_of(request)
    if must_exist and not await storage.tenant_exists(tenant):
        raise NgsiError("NonexistentTenant", f"tenant {tenant!r} does not exist")
    return NgsiContext(
        request,
        storage,
        request.config_dict[SETTINGS_KEY],
        tenant,
        request.config_dict[CONTEXTS_KEY],
        link_context(request),
    )


def negotiate(request: web.Request, offered: Sequence[str] = (JSON, LD_JSON)) -> str:
    """The response media type from ``Accept``; 406 listing what is available."""
    header = request.headers.get("Accept")
    if not header or not header.strip():
        return JSON
    choices: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        q = 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        choices.append((-q, index, media))
    for neg_q, _, media in sorted(choices):
        if neg_q >= 0:
            continue
        if media in ("*/*", "application/*"):
            return offered[0]
        if media in offered:
            return media
    raise NgsiError(
        "NotAcceptable",
        f"none of the accepted media types ({header}) is available; available: {', '.join(offered)}",
        406,
        title="Not Acceptable",
    )


def check_params(request: web.Request, allowed: Iterable[str]) -> None:
    """InvalidRequest for an unknown query parameter, NotImplemented for a known unsupported one."""
    allowed_set = set(allowed)
    for name in request.query:
        if name in allowed_set:
            continue
        if name in NOT_IMPLEMENTED_PARAMS:
            raise NgsiError("NotImplemented", f"query parameter {name!r} is not supported by this store")
        raise invalid_request(f"unknown query parameter {name!r}")


@dataclass(slots=True)
class Body:
    """A parsed request body with the media type it came with."""

    data: Any
    content_type: str
    link: str | None

    def context_for(self, ngsi: NgsiContext, item: Any = None) -> Context:
        """The @context of the body (ld+json: the item's own ``@context``) or of the Link header."""
        if self.content_type == LD_JSON:
            source = item if item is not None else self.data
            if not isinstance(source, Mapping) or "@context" not in source:
                raise bad_request("with Content-Type application/ld+json the @context must be in the body")
            return ngsi.contexts.get(jsonld.normalize_entries(source["@context"]))
        return ngsi.context([self.link] if self.link else [])


def _has_context(data: Any) -> bool:
    if isinstance(data, Mapping):
        return "@context" in data
    if isinstance(data, list):
        return any(isinstance(i, Mapping) and "@context" in i for i in data)
    return False


async def read_body(
    request: web.Request, *, merge_patch: bool = False, context_rules: bool = True, item_contexts: bool = False
) -> Body:
    """Apply §6.3.4/§6.3.5 to a write: media type (415), length (411, 413), JSON, @context rules.

    ``context_rules=False`` is for bodies that are themselves contexts (POST /jsonldContexts).
    ``item_contexts=True`` (batch operations) leaves an ``@context`` inside the items of an
    application/json array to the caller, which reports it per entity in a 207.
    """
    allowed = {JSON, LD_JSON, MERGE_PATCH} if merge_patch else {JSON, LD_JSON}
    if "Content-Type" not in request.headers or request.content_type not in allowed:
        raise Bare(415)
    length = request.content_length
    if length is None:
        raise Bare(411)
    settings = request.config_dict[SETTINGS_KEY]
    if length > settings.max_body_bytes:
        raise NgsiError("PayloadTooLarge", f"the body is larger than {settings.max_body_bytes} bytes")
    try:
        # a middleware that had to look at the body first (federation) leaves it under BODY_KEY
        raw = request.get(BODY_KEY) or await request.content.readexactly(length)
    except Exception as exc:  # IncompleteReadError, connection reset
        raise invalid_request(f"the body could not be read completely: {type(exc).__name__}") from None
    try:
        data = codec.loads_strict(raw)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            where = f" (line {exc.lineno}, column {exc.colno})"
        elif isinstance(exc, ValueError) and str(exc):
            where = f": {exc}"
        else:
            where = ""
        raise invalid_request(f"the body is not valid JSON{where}") from None
    link = link_context(request)
    content_type = LD_JSON if request.content_type == LD_JSON else JSON
    if not context_rules:
        return Body(data, content_type, link)
    if content_type == LD_JSON:
        if link is not None:
            raise bad_request("with Content-Type application/ld+json the @context must be in the body, "
                              "not in a Link header")
    elif _has_context(data) and not (item_contexts and isinstance(data, list)):
        raise bad_request("with Content-Type application/json the @context must come in a Link header, "
                          "not in the body")
    return Body(data, content_type, link)


def entity_url(ngsi: NgsiContext, entity_id: str) -> str:
    """The Location of an entity."""
    return f"{ngsi.settings.base_path}/entities/{quote(entity_id, safe=':@!$&()*+,;=-._~')}"


def respond(
    ngsi: NgsiContext,
    data: Any,
    *,
    media: str = JSON,
    status: int = 200,
    ctx: Context | None = None,
    headers: Mapping[str, str] | None = None,
    links: Sequence[str] = (),
) -> web.Response:
    """A JSON response: Link header (json, geo+json) or body @context (ld+json) per §6.3.6."""
    response_headers: list[tuple[str, str]] = list((headers or {}).items())
    if media == LD_JSON:
        context_value = (ctx or ngsi.context()).as_json()
        if isinstance(data, dict):
            data = {"@context": context_value, **data}
        elif isinstance(data, list):
            data = [{"@context": context_value, **d} if isinstance(d, dict) else d for d in data]
    else:
        response_headers.append(("Link", f'<{ngsi.link_iri()}>; rel="{CONTEXT_REL}"; type="{LD_JSON}"'))
    response_headers.extend(("Link", link) for link in links)
    response = web.Response(body=codec.dumps_bytes(data), status=status, content_type=media)
    for name, value in response_headers:
        response.headers.add(name, value)
    return response


def no_content() -> web.Response:
    """204."""
    return web.Response(status=204)


# --------------------------------------------------------------------------- parameters


def split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def int_param(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"-?\d{1,9}", text):
        raise bad_request(f"{name} must be an integer, got {text!r}")
    return int(text)


def bool_param(request: web.Request, name: str) -> bool:
    text = request.query.get(name)
    if text is None:
        return False
    if text not in ("true", "false"):
        raise bad_request(f"{name} must be true or false, got {text!r}")
    return text == "true"

def _options_count(request: web.Request) -> bool:
    """``options=count``: not in CIM 009, but what FIWARE clients send for count=true; lenient reading."""
    return "count" in (item.strip() for item in request.query.get("options", "").split(","))


def paging(ngsi: NgsiContext) -> tuple[int, int, bool]:
    """limit/offset/count from the query string, with the §6.3.10 rules."""
    settings = ngsi.settings
    limit = int_param(ngsi.request, "limit", settings.default_limit)
    offset = int_param(ngsi.request, "offset", 0)
    count = bool_param(ngsi.request, "count") or _options_count(ngsi.request)
    if limit < 0:
        raise bad_request("limit must not be negative")
    if limit > settings.max_limit:
        raise NgsiError("TooManyResults", f"limit {limit} is above the maximum of {settings.max_limit}")
    if limit == 0 and not count:
        raise bad_request("limit=0 is only allowed with count=true")
    if offset < 0:
        raise bad_request("offset must not be negative")
    return limit, offset, count


def page_links(ngsi: NgsiContext, limit: int, offset: int, more: bool) -> list[str]:
    """Link headers rel="next"/"prev" for a page."""
    links = []
    params = dict(ngsi.request.query)
    path = ngsi.request.path
    if more and limit > 0:
        params["offset"] = str(offset + limit)
        params["limit"] = str(limit)
        links.append(f'<{path}?{urlencode(params)}>; rel="next"; type="{JSON}"')
    if offset > 0 and limit > 0:
        params["offset"] = str(max(0, offset - limit))
        params["limit"] = str(limit)
        links.append(f'<{path}?{urlencode(params)}>; rel="prev"; type="{JSON}"')
    return links
