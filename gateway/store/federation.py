"""Distributed operations over context source registrations (ETSI GS CIM 009 V1.9.1 §4.3.6, §6.3.18).

The store acts as a federating broker in front of the context sources its registrations name (other
jonction stores, or any NGSI-LD broker at an URL). A middleware wraps the entity endpoints:

* reads (GET /entities, GET /entities/{id}; GET /temporal/entities[/{id}] too, passed through with
  the request's @context and added by entity id): the local answer and the answers of every matching
  registration (``inclusive``, ``auxiliary``, ``exclusive``, ``redirect``: all may hold entities
  a consumer asks for) are merged by entity id, each source asked concurrently with its own
  timeout (``StoreSettings.federation_timeout``); a source that fails, is too slow or answers
  garbage is named in the ``NGSILD-Warning`` header (``199 <registration id> "reason"``) and the
  rest of the answer still returns;
* writes on one entity (create, update, merge, replace, delete and attribute operations) and batch
  operations: ``exclusive`` and ``redirect`` registrations receive the request (or, when they list
  attributes, those attributes of it) instead of the local store, ``inclusive`` ones as well as the
  local store, ``auxiliary`` ones never (§4.3.6.3); a part that fails makes the answer a 207 naming it;
* ``local=true`` disables forwarding; the ``Via`` header (RFC 9110 §7.6.3) carries this store's
  identity to the sources, and a request whose ``Via`` already names it is refused with
  LoopDetected (508), which ends a registration loop (A registers B, B registers A) after one hop;
* ``contextSourceInfo`` key/value pairs become headers of the forwarded requests (a neighbour's
  bearer token travels this way; they are never logged); ``jsonldContext`` among them names the
  @context the source speaks, which must be one this store already has (it never fetches one);
* opt-in commune tag: a registration whose ``contextSourceInfo`` has ``jonction:commune`` marks every
  entity it contributes with a Property ``commune`` holding that value (an empty value: the
  registration's ``tenant``, else its ``registrationName``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from gateway.store import audit, codec, http, jsonld
from gateway.store import registrations as regs
from gateway.store.problems import NgsiError
from gateway.store.query import parse_type_expression
from gateway.store.representation import render, render_feature
from gateway.store.settings import CONTEXTS_KEY, READER_STORAGE, SETTINGS_KEY, STORAGE_KEY, StoreSettings
from gateway.store.sharing import OWNER

log = logging.getLogger("jonction.store.federation")

WARNING_HEADER: Final = "NGSILD-Warning"
COMMUNE_KEY: Final = "jonction:commune"
CONTEXT_KEY: Final = "jsonldContext"
COMMUNE_ATTR: Final = "commune"
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
_HOP_HEADERS: Final = frozenset({"host", "content-length", "connection", "transfer-encoding", "via", "authorization",
                                 "ngsild-tenant", "link", "accept-encoding"})
_READ_OPS: Final = {"query": frozenset({"federationOps", "retrieveOps", "queryEntity", "redirectionOps"}),
                    "retrieve": frozenset({"federationOps", "retrieveOps", "retrieveEntity", "redirectionOps"})}
_WRITE_OPS: Final = frozenset({"federationOps", "updateOps", "redirectionOps", "createEntity", "updateEntity",
                               "mergeEntity", "replaceEntity", "deleteEntity", "appendAttrs", "updateAttrs",
                               "deleteAttrs", "replaceAttrs"})
_QUERY_FORWARD: Final = ("id", "type", "idPattern", "attrs", "q", "scopeQ", "georel", "geometry", "coordinates",
                         "geoproperty", "limit", "offset", "count", "lang", "datasetId")


def store_identity(settings: StoreSettings) -> str:
    """This store's identity in ``Via``: the setting, else a URN stable for one host and one database."""
    if settings.identity:
        return settings.identity
    seed = f"{socket.gethostname()}|{settings.database_url}"
    return f"urn:jonction:store:{hashlib.sha256(seed.encode()).hexdigest()[:16]}"


def _via_names(request: web.Request) -> list[str]:
    names = []
    for header in request.headers.getall("Via", []):
        for element in header.split(","):
            parts = element.split()
            if len(parts) >= 2:
                names.append(parts[1])
    return names


@dataclass(slots=True)
class Source:
    """One registration a request is forwarded to."""

    doc: dict[str, Any]

    @property
    def id(self) -> str:
        """The registration id."""
        return str(self.doc["id"])

    @property
    def mode(self) -> str:
        """inclusive, exclusive, redirect or auxiliary."""
        return str(self.doc.get("mode", "inclusive"))

    def info(self) -> dict[str, str]:
        """contextSourceInfo as a dict (a list of {key, value}, or an object)."""
        raw = self.doc.get("contextSourceInfo") or []
        pairs: dict[str, str] = {}
        if isinstance(raw, list):
            for item in raw:
                if isinstance(item, Mapping) and isinstance(item.get("key"), str):
                    pairs[item["key"]] = str(item.get("value", ""))
        elif isinstance(raw, Mapping):
            pairs = {str(k): str(v) for k, v in raw.items()}
        return pairs

    def commune(self) -> str | None:
        """The commune tag of what this source contributes (opt-in), or None."""
        info = self.info()
        if COMMUNE_KEY not in info:
            return None
        return info[COMMUNE_KEY] or self.doc.get("tenant") or self.doc.get("registrationName") or None

    def base(self) -> str:
        """The NGSI-LD API root of the source (its endpoint + /ngsi-ld/v1)."""
        return str(self.doc["endpoint"]).rstrip("/") + "/ngsi-ld/v1"


@dataclass(slots=True)
class Outcome:
    """What one source answered: entities (expanded) or a failure reason."""

    source: Source
    status: int = 0
    docs: list[dict[str, Any]] = field(default_factory=list)
    count: int | None = None
    error: str | None = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


class FederationClient:
    """The HTTP client towards context sources: bounded connections, timeouts and answer sizes."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.identity = store_identity(settings)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the session."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=16),
            timeout=aiohttp.ClientTimeout(total=self.settings.federation_timeout),
        )

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def headers(self, request: web.Request, source: Source, context_link: str | None) -> dict[str, str]:
        """Headers of a forwarded request: Via, tenant, @context, Accept and the contextSourceInfo ones."""
        via = ", ".join([*request.headers.getall("Via", []), f"1.1 {self.identity}"])
        out = {"Via": via, "Accept": http.JSON}
        tenant = source.doc.get("tenant")
        if isinstance(tenant, str) and tenant:
            out[http.TENANT_HEADER] = tenant
        if context_link:
            out["Link"] = f'<{context_link}>; rel="{http.CONTEXT_REL}"; type="{http.LD_JSON}"'
        for key, value in source.info().items():
            # valid header names only (jonction:commune and jsonldContext are not headers); values never logged
            if key != CONTEXT_KEY and _HEADER_NAME.fullmatch(key) and not any(c in value for c in "\r\n\0"):
                out[key] = value
        return out

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, source: Source
    ) -> Outcome:
        """One request to a source; never raises (the failure is the Outcome's error)."""
        outcome = Outcome(source)
        if self._session is None:
            outcome.error = "the federation client is stopped"
            return outcome
        limit = self.settings.max_body_bytes
        try:
            async with asyncio.timeout(self.settings.federation_timeout):
                async with self._session.request(method, url, headers=dict(headers), data=body,
                                                 allow_redirects=False) as response:
                    data = await response.content.read(limit + 1)
                    if len(data) > limit:
                        outcome.error = f"answer larger than {limit} bytes"
                        return outcome
                    outcome.status = response.status
                    outcome.body = data
                    outcome.headers = {k: v for k, v in response.headers.items()
                                       if k.lower() in ("content-type", "location", http.COUNT_HEADER.lower())}
        except TimeoutError:
            outcome.error = f"no answer within {self.settings.federation_timeout:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            outcome.error = f"unreachable ({type(exc).__name__})"
        return outcome


FEDERATION_KEY: Final = web.AppKey("jonction.store.federation", FederationClient)


# ------------------------------------------------------------------ choosing the sources


def _operations_allow(doc: Mapping[str, Any], allowed: frozenset[str]) -> bool:
    ops = doc.get("operations") or ["federationOps"]
    return any(o in allowed for o in ops)


async def _registrations(request: web.Request, tenant: str) -> list[dict[str, Any]]:
    records = regs_records(request)
    if records is None:
        return []
    out = []
    for text in await records.load(tenant):
        doc = codec.loads(text)
        if not regs._expired(doc):
            out.append(doc)
    return out


def regs_records(request: web.Request) -> Any:
    """The storage's registration records, or None."""
    factory = getattr(request.config_dict[STORAGE_KEY], "registration_records", None)
    return None if factory is None else factory()


def _matching(
    docs: Sequence[dict[str, Any]], *, types: set[str] | None, ids: set[str] | None, pattern: Any,
    attrs: set[str] | None, ops: frozenset[str],
) -> list[Source]:
    found = []
    for doc in docs:
        if not _operations_allow(doc, ops):
            continue
        if any(regs._info_matches(i, types, ids, pattern, attrs) for i in doc.get("information", ())):
            found.append(Source(doc))
    return found


# ------------------------------------------------------------------ reads


def _warnings(failed: Sequence[Outcome]) -> str:
    return ", ".join(f'199 <{o.source.id}> "{(o.error or "failed").replace(chr(34), chr(39))}"' for o in failed)


def _remote_context(source: Source, request_link: str | None) -> str | None:
    return source.info().get(CONTEXT_KEY) or request_link


def _expand_answer(outcome: Outcome, contexts: jsonld.ContextCache, link: str | None, *, single: bool) -> None:
    """Parse a source's JSON answer into expanded documents (or set the outcome's error)."""
    try:
        data = codec.loads(outcome.body)
    except ValueError:
        outcome.error = "answer is not JSON"
        return
    items = [data] if single else data
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        outcome.error = "answer is not an entity array"
        return
    try:
        ctx = contexts.get([link] if link else [])
        outcome.docs = [ctx.expand_entity({k: v for k, v in i.items() if k != "@context"}) for i in items]
    except NgsiError as exc:
        outcome.error = f"answer refused: {exc.type} {exc.detail}"[:300]


def _tag(entity: dict[str, Any], commune: str, form: str) -> None:
    entity[COMMUNE_ATTR] = {"type": "Property", "value": commune} if form == "normalized" else commune


async def _forward_reads(
    request: web.Request, client: FederationClient, sources: Sequence[Source], path: str, params: Mapping[str, str],
    *, single: bool,
) -> list[Outcome]:
    contexts = request.config_dict[CONTEXTS_KEY]
    request_link = http.link_context(request)

    async def one(source: Source) -> Outcome:
        link = _remote_context(source, request_link)
        url = f"{source.base()}{path}"
        if params:
            url += "?" + urlencode(params)
        outcome = await client.send("GET", url, client.headers(request, source, link), None, source)
        if outcome.error is None:
            if outcome.status == 404 and single:
                return outcome  # not there: not a failure
            if outcome.status == 508:
                outcome.error = "loop detected (the source forwarded back to this store)"
            elif outcome.status != 200:
                outcome.error = f"HTTP {outcome.status}"
            else:
                _expand_answer(outcome, contexts, link, single=single)
                count = outcome.headers.get(http.COUNT_HEADER)
                outcome.count = int(count) if count and count.isdigit() else None
        if outcome.error is not None:
            log.info("context source %s (registration %s) failed: %s", source.base(), source.id, outcome.error)
        return outcome

    outcomes = list(await asyncio.gather(*(one(s) for s in sources)))
    await _audit_reads(request, outcomes, path)
    return outcomes


async def _audit_reads(request: web.Request, outcomes: Sequence[Outcome], path: str) -> None:
    """One audit row per source a read went through: who (the tenant's owner: other readers are never
    federated), what (the source's path, the cleaned query, how many entities), via which registration."""
    settings = request.config_dict[SETTINGS_KEY]
    policies = settings.sharing
    retention = policies.audit_retention_days if policies is not None else audit.DEFAULT_RETENTION_DAYS
    storage = request.config_dict[STORAGE_KEY]
    tenant = request.headers.get(http.TENANT_HEADER, "")
    query = audit.clean_query(request.query_string)
    for outcome in outcomes:
        status = outcome.status if outcome.error is None else (outcome.status or 504)
        try:
            await audit.record(storage, principal=OWNER, tenant=tenant, path=path, query=query, status=status,
                               returned=len(outcome.docs), via=outcome.source.id, retention_days=retention)
        except Exception:  # the audit must never break a read; it says so loudly
            log.exception("federation: the audit record of a read through %s could not be written", outcome.source.id)


def _render_remote(
    request: web.Request, outcomes: Sequence[Outcome], seen: dict[str, dict[str, Any]], media: str,
) -> list[dict[str, Any]]:
    """Render the sources' documents like the local answer (new ids only; known ids merged into ``seen``)."""
    from gateway.store.api import render_options  # late: api imports much of the store

    settings = request.config_dict[SETTINGS_KEY]
    contexts = request.config_dict[CONTEXTS_KEY]
    link = http.link_context(request)
    ctx = contexts.get([link] if link else [])
    ngsi = http.NgsiContext(request, request.config_dict[STORAGE_KEY], settings, "", contexts, link)
    opts = render_options(ngsi, ctx, request.query)
    out: list[dict[str, Any]] = []
    for outcome in outcomes:
        commune = outcome.source.commune()
        for doc in outcome.docs:
            if media == http.GEO_JSON:
                geometry = ctx.expand_term(request.query.get("geometryProperty", "location"))
                entity = render_feature(doc, ctx, opts, geometry)
                if commune is not None:
                    entity.setdefault("properties", {})[COMMUNE_ATTR] = commune
            else:
                entity = render(doc, ctx, opts)
                if commune is not None:
                    _tag(entity, commune, opts.form)
                if media == http.LD_JSON:
                    entity = {"@context": ctx.as_json(), **entity}
            known = seen.get(str(doc.get("id")))
            if known is not None:
                _merge_rendered(known, entity)
                continue
            seen[str(doc.get("id"))] = entity
            out.append(entity)
    return out


def _merge_rendered(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    target = into.get("properties") if into.get("type") == "Feature" else into
    extra = other.get("properties") if other.get("type") == "Feature" else other
    if isinstance(target, dict) and isinstance(extra, Mapping):
        for key, value in extra.items():
            target.setdefault(key, value)


def _query_scope(request: web.Request) -> tuple[set[str] | None, set[str] | None, Any, set[str] | None]:
    contexts = request.config_dict[CONTEXTS_KEY]
    link = http.link_context(request)
    ctx = contexts.get([link] if link else [])
    q = request.query
    types = None
    if "type" in q:
        types = {ctx.expand_term(t) for t in parse_type_expression(q["type"]).types()}
    ids = set(http.split_list(q.get("id")) or []) or None
    pattern = None
    if "idPattern" in q:
        from gateway.store.patterns import compile_user_pattern

        pattern = compile_user_pattern(q["idPattern"], "idPattern")
    attrs = {ctx.expand_term(a) for a in http.split_list(q.get("attrs")) or []} or None
    return types, ids, pattern, attrs


def _local_answer(response: web.StreamResponse) -> Any:
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes | bytearray):
        return None
    try:
        return codec.loads(bytes(body))
    except ValueError:
        return None


def _respond_merged(local: web.Response, data: Any, failed: Sequence[Outcome], count: int | None) -> web.Response:
    response = web.Response(body=codec.dumps_bytes(data), status=local.status, content_type=local.content_type)
    for name, value in local.headers.items():
        if name.lower() not in ("content-length", "content-type", http.COUNT_HEADER.lower()):
            response.headers.add(name, value)
    if count is not None:
        response.headers[http.COUNT_HEADER] = str(count)
    if failed:
        response.headers[WARNING_HEADER] = _warnings(failed)
    return response


async def federated_query(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], client: FederationClient,
    tenant: str,
) -> web.StreamResponse:
    """GET /entities: the local answer merged with every matching source's answer."""
    local = await handler(request)  # validation errors of the request come from the local handler, first
    if not isinstance(local, web.Response) or local.status != 200:
        return local
    types, ids, pattern, attrs = _query_scope(request)
    sources = _matching(await _registrations(request, tenant), types=types, ids=ids, pattern=pattern, attrs=attrs,
                        ops=_READ_OPS["query"])
    if not sources:
        return local
    params = {k: request.query[k] for k in _QUERY_FORWARD if k in request.query}
    outcomes = await _forward_reads(request, client, sources, "/entities", params, single=False)
    data = _local_answer(local)
    media = local.content_type
    features = media == http.GEO_JSON and isinstance(data, dict)
    entities = data["features"] if features else data
    if not isinstance(entities, list):
        return local
    seen = {str(e.get("id")): e for e in entities if isinstance(e, dict)}
    entities.extend(_render_remote(request, [o for o in outcomes if o.error is None], seen, media))
    count = None
    if http.COUNT_HEADER in local.headers:
        count = int(local.headers[http.COUNT_HEADER]) + sum(o.count or 0 for o in outcomes if o.error is None)
    failed = [o for o in outcomes if o.error is not None]
    return _respond_merged(local, data, failed, count)


async def federated_retrieve(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], client: FederationClient,
    tenant: str,
) -> web.StreamResponse:
    """GET /entities/{id}: the local entity merged with the sources' views of it."""
    entity_id = request.match_info["entity_id"]
    docs = await _registrations(request, tenant)
    types = None
    if "type" in request.query:
        contexts = request.config_dict[CONTEXTS_KEY]
        link = http.link_context(request)
        ctx = contexts.get([link] if link else [])
        types = {ctx.expand_term(t) for t in parse_type_expression(request.query["type"]).types()}
    sources = _matching(docs, types=types, ids={entity_id}, pattern=None, attrs=None, ops=_READ_OPS["retrieve"])
    if not sources:
        return await handler(request)
    params = {k: request.query[k] for k in ("attrs", "type", "lang", "datasetId") if k in request.query}
    path = f"/entities/{quote(entity_id, safe=':@!$&()*+,;=-._~')}"
    remote_task = asyncio.ensure_future(_forward_reads(request, client, sources, path, params, single=True))
    try:
        local: web.StreamResponse | None = await handler(request)
    except NgsiError as exc:
        if exc.type != "ResourceNotFound":
            remote_task.cancel()
            raise
        local = None
        missing = exc
    outcomes = await remote_task
    failed = [o for o in outcomes if o.error is not None]
    found = [o for o in outcomes if o.error is None and o.docs]
    if local is not None and (not isinstance(local, web.Response) or local.status != 200):
        return local
    if local is None:
        if not found:
            raise missing
        template = web.Response(status=200, content_type=_media_of(request))
        template.headers["Link"] = f'<{http.link_context(request) or jsonld.core_context_iri()}>; ' \
                                   f'rel="{http.CONTEXT_REL}"; type="{http.LD_JSON}"'
        seen: dict[str, dict[str, Any]] = {}
        rendered = _render_remote(request, found, seen, _media_of(request))
        return _respond_merged(template, rendered[0], failed, None)
    data = _local_answer(local)
    if not isinstance(data, dict):
        return local
    seen = {entity_id: data}
    _render_remote(request, found, seen, local.content_type)
    return _respond_merged(local, data, failed, None)


def _media_of(request: web.Request) -> str:
    try:
        return http.negotiate(request, (http.JSON, http.LD_JSON, http.GEO_JSON))
    except NgsiError:
        return http.JSON


# ------------------------------------------------------------------ temporal reads


async def _forward_raw(
    request: web.Request, client: FederationClient, sources: Sequence[Source], path: str,
) -> list[Outcome]:
    """The same GET (path and parameters but local) to each source, with the request's own @context."""
    link = http.link_context(request)
    params = {k: v for k, v in request.query.items() if k != "local"}

    async def one(source: Source) -> Outcome:
        url = source.base() + path + (("?" + urlencode(params)) if params else "")
        outcome = await client.send("GET", url, client.headers(request, source, link), None, source)
        if outcome.error is None:
            if outcome.status == 508:
                outcome.error = "loop detected (the source forwarded back to this store)"
            elif outcome.status not in (200, 206, 404):
                outcome.error = f"HTTP {outcome.status}"
            elif outcome.status != 404:
                try:
                    data = codec.loads(outcome.body)
                except ValueError:
                    data = None
                items = [data] if isinstance(data, dict) else data
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                    outcome.error = "answer is not a temporal entity array"
                else:
                    outcome.docs = items
        if outcome.error is not None:
            log.info("context source %s (registration %s) failed: %s", source.base(), source.id, outcome.error)
        return outcome

    return list(await asyncio.gather(*(one(s) for s in sources)))


def _tagged(entity: dict[str, Any], source: Source) -> dict[str, Any]:
    commune = source.commune()
    if commune is not None:
        entity.setdefault(COMMUNE_ATTR, {"type": "Property", "value": commune})
    return entity


async def federated_temporal(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], client: FederationClient,
    tenant: str,
) -> web.StreamResponse:
    """GET /temporal/entities[/{id}]: the sources' temporal entities added to the local answer, by id.

    The sources are asked with the request's own parameters and @context (a temporal representation is
    not re-rendered here), so they must know that @context; a source that does not is named as failed.
    """
    entity_id = request.match_info.get("entity_id")
    if entity_id is not None:
        sources = _matching(await _registrations(request, tenant), types=None, ids={entity_id}, pattern=None,
                            attrs=None, ops=_READ_OPS["retrieve"])
        path = f"/temporal/entities/{quote(entity_id, safe=':@!$&()*+,;=-._~')}"
    else:
        types, ids, pattern, attrs = _query_scope(request)
        sources = _matching(await _registrations(request, tenant), types=types, ids=ids, pattern=pattern,
                            attrs=attrs, ops=_READ_OPS["query"])
        path = "/temporal/entities"
    if not sources:
        return await handler(request)
    remote = asyncio.ensure_future(_forward_raw(request, client, sources, path))
    try:
        local: web.StreamResponse | None = await handler(request)
    except NgsiError as exc:
        if exc.type != "ResourceNotFound" or entity_id is None:
            remote.cancel()
            raise
        local, missing = None, exc
    outcomes = await remote
    failed = [o for o in outcomes if o.error is not None]
    if local is not None and (not isinstance(local, web.Response) or local.status not in (200, 206)):
        return local
    if entity_id is not None:
        found = next((o for o in outcomes if o.error is None and o.docs), None)
        if local is None:
            if found is None:
                raise missing
            template = web.Response(status=200, content_type=http.JSON)
            return _respond_merged(template, _tagged(found.docs[0], found.source), failed, None)
        data = _local_answer(local)
        if isinstance(data, dict):
            for o in outcomes:
                for item in o.docs:
                    for key, value in _tagged(item, o.source).items():
                        data.setdefault(key, value)
            return _respond_merged(local, data, failed, None)
        return local
    assert local is not None
    data = _local_answer(local)
    if not isinstance(data, list):
        return local
    seen = {e.get("id") for e in data if isinstance(e, dict)}
    for o in outcomes:
        for item in o.docs:
            if item.get("id") not in seen:
                seen.add(item.get("id"))
                data.append(_tagged(item, o.source))
    return _respond_merged(local, data, failed, None)


# ------------------------------------------------------------------ writes


async def _entity_type(request: web.Request, tenant: str, entity_id: str, body: Any) -> set[str] | None:
    contexts = request.config_dict[CONTEXTS_KEY]
    link = http.link_context(request)
    if isinstance(body, Mapping) and "type" in body:
        entries = jsonld.normalize_entries(body["@context"]) if "@context" in body else ([link] if link else [])
        ctx = contexts.get(entries)
        raw = body["type"]
        return {ctx.expand_term(t) for t in (raw if isinstance(raw, list) else [raw]) if isinstance(t, str)}
    doc = await request.config_dict[STORAGE_KEY].get_doc(tenant, entity_id)
    return set(doc["type"]) if doc is not None else None


def _sub_path(request: web.Request, settings: StoreSettings) -> str:
    """The request's path below the API root, without a trailing slash (sources serve the canonical form)."""
    path = request.path[len(settings.base_path):] if request.path.startswith(settings.base_path) else request.path
    return path.rstrip("/") or "/"


def _registered_attrs(source: Source, entity_id: str, types: set[str] | None) -> set[str] | None:
    """The attribute IRIs a registration holds for this entity; None: the whole entity."""
    names: set[str] = set()
    for info in source.doc.get("information", ()):
        if not regs._info_matches(info, types, {entity_id}, None, None):
            continue
        listed = [*info.get("propertyNames", ()), *info.get("relationshipNames", ())]
        if not listed:
            return None
        names.update(listed)
    return names


_MEMBERS: Final = frozenset({"id", "type", "@context", "scope", "createdAt", "modifiedAt"})


def _split(body: Any, ctx: jsonld.Context, names: set[str]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the body with the registered attributes only, the body without them); None when not an entity body."""
    if not isinstance(body, Mapping):
        return None
    head = {k: v for k, v in body.items() if k in _MEMBERS}
    mine = {k: v for k, v in body.items() if k not in _MEMBERS and ctx.expand_term(k) in names}
    rest = {k: v for k, v in body.items() if k not in _MEMBERS and ctx.expand_term(k) not in names}
    return {**head, **mine}, {**head, **rest}


@dataclass(slots=True)
class _Target:
    """Where one part of a write goes: a source (with its body) or, source None, this store."""

    source: Source | None
    body: bytes | None


async def federated_write(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], client: FederationClient,
    tenant: str,
) -> web.StreamResponse:
    """A write on one entity, split by the registrations' modes (§4.3.6.3).

    ``exclusive``/``redirect`` registrations receive the attributes they register (all of them when they list
    none) instead of the local store; ``inclusive`` ones receive the whole write as well as the local store;
    ``auxiliary`` ones never. All parts succeed: the answer of the local store (else of the source); some
    fail: 207 with a BatchOperationResult naming each failure; all fail: the first failure.
    """
    docs = await _registrations(request, tenant)
    if not docs:
        return await handler(request)
    raw = b""
    length = request.content_length
    settings = request.config_dict[SETTINGS_KEY]
    if request.can_read_body and length is not None and 0 < length <= settings.max_body_bytes:
        try:
            raw = request.get(http.BODY_KEY) or await request.content.readexactly(length)  # already read (commands)
        except Exception:  # IncompleteReadError, connection reset: the local handler answers it
            return await handler(request)
        request[http.BODY_KEY] = raw
    body: Any = None
    if raw:
        try:
            body = codec.loads(raw)
        except ValueError:
            return await handler(request)  # the local handler names the malformed body
    entity_id = request.match_info.get("entity_id")
    if entity_id is None:
        if request.method != "POST" or not isinstance(body, Mapping) or not isinstance(body.get("id"), str):
            return await handler(request)
        entity_id = str(body["id"])
    types = await _entity_type(request, tenant, entity_id, body)
    sources = [
        s for s in _matching(docs, types=None, ids={entity_id}, pattern=None, attrs=None, ops=_WRITE_OPS)
        if s.mode != "auxiliary"
        and (types is None or any(regs._info_matches(i, types, None, None, None) for i in s.doc["information"]))
    ]
    if not sources:
        return await handler(request)
    contexts = request.config_dict[CONTEXTS_KEY]
    link = http.link_context(request)
    try:
        entries = jsonld.normalize_entries(body["@context"]) if isinstance(body, Mapping) and "@context" in body \
            else ([link] if link else [])
        ctx = contexts.get(entries)
    except NgsiError:
        return await handler(request)  # the local handler names the @context problem
    attr = request.match_info.get("attr")
    targets: list[_Target] = []
    local_body: bytes | None = raw or None
    local_wanted = True
    for source in sources:
        if source.mode == "inclusive":
            targets.append(_Target(source, raw or None))
            continue
        names = _registered_attrs(source, entity_id, types)
        if names is None:
            local_wanted = False  # the whole entity lives at the source
            targets.append(_Target(source, raw or None))
            continue
        if attr is not None:
            if ctx.expand_term(attr) in names:
                local_wanted = False
                targets.append(_Target(source, None))
            continue
        parts = _split(body, ctx, names) if local_body is not None else None
        if parts is None:
            if request.method == "DELETE":
                targets.append(_Target(source, None))  # the entity: its registered part at the source too
            continue
        mine, rest = parts
        if len(mine) > len([k for k in mine if k in _MEMBERS]):
            targets.append(_Target(source, codec.dumps_bytes(mine)))
            local_body = codec.dumps_bytes(rest)
            if len(rest) == len([k for k in rest if k in _MEMBERS]):
                local_wanted = False  # nothing left for this store
    if not targets:
        return await handler(request)
    local: web.StreamResponse | None = None
    local_error: NgsiError | None = None
    if local_wanted:
        if local_body is not None and local_body != raw:
            request[http.BODY_KEY] = local_body
            request = request.clone(headers={**request.headers, "Content-Length": str(len(local_body))})
        # A request refused as malformed goes nowhere; one the local store cannot apply (AlreadyExists,
        # ResourceNotFound) is still forwarded, and the answer says which part failed.
        try:
            local = await handler(request)
        except NgsiError as exc:
            if exc.status == 400 or exc.status >= 500:
                raise
            local_error = exc
        if local is not None and local.status >= 300:
            return local
    sub_path = _sub_path(request, settings)
    query = {k: v for k, v in request.query.items() if k != "local"}
    sends = []
    for target in targets:
        assert target.source is not None
        headers = client.headers(request, target.source, _remote_context(target.source, link))
        if target.body is not None and request.content_type:
            headers["Content-Type"] = request.content_type
        url = target.source.base() + sub_path + (("?" + urlencode(query)) if query else "")
        sends.append(client.send(request.method, url, headers, target.body, target.source))
    results = list(await asyncio.gather(*sends))
    failed = [o for o in results if o.error is not None or o.status >= 300]
    for o in failed:
        if o.error is None:
            o.error = f"HTTP {o.status}"
        log.info("forwarding %s to registration %s failed: %s", request.method, o.source.id, o.error)
    if local_wanted:
        return _inclusive_answer(local, local_error, failed, len(results), entity_id)
    succeeded = [o for o in results if o not in failed]
    if succeeded and failed:
        return _inclusive_answer(None, None, failed, len(results) + 1, entity_id)
    chosen = succeeded[0] if succeeded else results[0]
    if chosen.status == 0:
        raise NgsiError("InternalError", f"registration {chosen.source.id}: {chosen.error}", status=502)
    response = web.Response(status=chosen.status, body=chosen.body or None)
    if "Content-Type" in chosen.headers:
        response.headers["Content-Type"] = chosen.headers["Content-Type"]
    if chosen.status == 201 and request.method == "POST":
        response.headers["Location"] = http.entity_url(
            http.NgsiContext(request, request.config_dict[STORAGE_KEY], settings, tenant, contexts, link), entity_id)
    return response


async def federated_batch(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], client: FederationClient,
    tenant: str,
) -> web.StreamResponse:
    """Batch create/upsert/update/merge/delete: each entity split by the registrations' modes, as one write.

    One request per source carries its part of every entity; the local store gets what stays here. The
    answer merges the parts: every part succeeded, the usual answer; some failed, 207 with the failed
    entities (``registrationId`` naming the source) in ``errors``.
    """
    docs = await _registrations(request, tenant)
    length = request.content_length
    settings = request.config_dict[SETTINGS_KEY]
    if not docs or not request.can_read_body or length is None or not 0 < length <= settings.max_body_bytes:
        return await handler(request)
    try:
        raw = request.get(http.BODY_KEY) or await request.content.readexactly(length)  # already read (commands)
    except Exception:  # IncompleteReadError, connection reset: the local handler answers it
        return await handler(request)
    request[http.BODY_KEY] = raw
    try:
        items = codec.loads(raw)
    except ValueError:
        return await handler(request)
    if not isinstance(items, list):
        return await handler(request)
    contexts = request.config_dict[CONTEXTS_KEY]
    link = http.link_context(request)
    deleting = request.path.rstrip("/").endswith("/delete")
    storage = request.config_dict[STORAGE_KEY]
    parts: dict[str, tuple[Source, list[Any]]] = {}
    local_items: list[Any] = []
    for item in items:
        if deleting:
            entity_id = item if isinstance(item, str) else None
            entity: Any = None
        else:
            entity = item
            entity_id = item.get("id") if isinstance(item, Mapping) else None
        if not isinstance(entity_id, str):
            local_items.append(item)  # the local store reports it
            continue
        try:
            entries = jsonld.normalize_entries(entity["@context"]) if isinstance(entity, Mapping) and \
                "@context" in entity else ([link] if link else [])
            ctx = contexts.get(entries)
        except NgsiError:
            local_items.append(item)
            continue
        if isinstance(entity, Mapping) and "type" in entity:
            raw_types = entity["type"] if isinstance(entity["type"], list) else [entity["type"]]
            types: set[str] | None = {ctx.expand_term(t) for t in raw_types if isinstance(t, str)}
        else:
            doc = await storage.get_doc(tenant, entity_id)
            types = set(doc["type"]) if doc is not None else None
        sources = [
            src for src in _matching(docs, types=None, ids={entity_id}, pattern=None, attrs=None, ops=_WRITE_OPS)
            if src.mode != "auxiliary"
            and (types is None or any(regs._info_matches(i, types, None, None, None) for i in src.doc["information"]))
        ]
        keep: Any = item
        for src in sources:
            names = None if src.mode == "inclusive" else _registered_attrs(src, entity_id, types)
            if src.mode == "inclusive":
                parts.setdefault(src.id, (src, []))[1].append(item)
            elif names is None or deleting:
                parts.setdefault(src.id, (src, []))[1].append(item)
                if names is None:
                    keep = None
            elif isinstance(keep, Mapping):
                split = _split(keep, ctx, names)
                if split is not None and len(split[0]) > len([k for k in split[0] if k in _MEMBERS]):
                    parts.setdefault(src.id, (src, []))[1].append(split[0])
                    keep = split[1] if len(split[1]) > len([k for k in split[1] if k in _MEMBERS]) else None
        if keep is not None:
            local_items.append(keep)
    if not parts:
        return await handler(request)
    local: web.StreamResponse | None = None
    if local_items:
        body = codec.dumps_bytes(local_items)
        request[http.BODY_KEY] = body
        local = await handler(request.clone(headers={**request.headers, "Content-Length": str(len(body))}))
        if local.status >= 400:
            return local
    sub_path = _sub_path(request, settings)
    sends = []
    for src, chunk in parts.values():
        headers = client.headers(request, src, _remote_context(src, link))
        headers["Content-Type"] = request.content_type or http.JSON
        sends.append(client.send("POST", src.base() + sub_path, headers, codec.dumps_bytes(chunk), src))
    results = list(await asyncio.gather(*sends))
    success: list[str] = []
    errors: list[dict[str, Any]] = []
    created: list[str] = []
    if local is not None:
        answer = _local_answer(local)
        if local.status == 207 and isinstance(answer, dict):
            success += [str(i) for i in answer.get("success", [])]
            errors += list(answer.get("errors", []))
        else:
            ids = [i if isinstance(i, str) else i.get("id") for i in local_items if isinstance(i, str | Mapping)]
            success += [str(i) for i in ids if i is not None]
            if local.status == 201 and isinstance(answer, list):
                created += [str(i) for i in answer]
    for outcome in results:
        chunk = parts[outcome.source.id][1]
        sent_ids = [str(i if isinstance(i, str) else i.get("id")) for i in chunk]
        if outcome.error is None and outcome.status < 300:
            success += [i for i in sent_ids if i not in success]
            if outcome.status == 201:
                created += sent_ids
            continue
        if outcome.error is None:
            outcome.error = f"HTTP {outcome.status}"
        log.info("forwarding a batch to registration %s failed: %s", outcome.source.id, outcome.error)
        problem = _problem_of(outcome)
        errors += [{"entityId": i, "registrationId": outcome.source.id, "error": problem} for i in sent_ids]
    failed_ids = {e.get("entityId") for e in errors}
    success = [i for i in dict.fromkeys(success) if i not in failed_ids]
    if errors:
        response = web.json_response({"success": success, "errors": errors}, status=207)
        failed = [o for o in results if o.error is not None]
        if failed:
            response.headers[WARNING_HEADER] = _warnings(failed)
        return response
    if local is not None and (local.status != 201 or not created):
        return local
    if request.path.rstrip("/").endswith(("/create", "/upsert")) and created:
        return web.json_response(list(dict.fromkeys(created)), status=201)
    return web.Response(status=204)


async def federated_purge(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], client: FederationClient,
    tenant: str,
) -> web.StreamResponse:
    """DELETE /entities (Purge Entities): purged here and at every matching non-auxiliary source."""
    types, ids, pattern, _ = _query_scope(request)
    sources = [s for s in _matching(await _registrations(request, tenant), types=types, ids=ids, pattern=pattern,
                                    attrs=None, ops=_WRITE_OPS) if s.mode != "auxiliary"]
    if not sources:
        return await handler(request)
    local = await handler(request)  # a malformed purge is refused here before anything is forwarded
    if local.status >= 300:
        return local
    link = http.link_context(request)
    query = {k: v for k, v in request.query.items() if k != "local"}
    sends = []
    for src in sources:
        url = src.base() + "/entities" + (("?" + urlencode(query)) if query else "")
        sends.append(client.send("DELETE", url, client.headers(request, src, _remote_context(src, link)), None, src))
    results = list(await asyncio.gather(*sends))
    failed = [o for o in results if o.error is not None or o.status >= 300]
    if not failed:
        return local
    for o in failed:
        if o.error is None:
            o.error = f"HTTP {o.status}"
    response = web.json_response({"success": [], "errors": [
        {"registrationId": o.source.id, "error": _problem_of(o)} for o in failed]}, status=207)
    response.headers[WARNING_HEADER] = _warnings(failed)
    return response


def _problem_of(outcome: Outcome) -> dict[str, Any]:
    """The ProblemDetails of a failed forward: the source's own, else one that names the reason."""
    if outcome.status >= 300:
        try:
            body = codec.loads(outcome.body) if outcome.body else None
        except ValueError:
            body = None
        if isinstance(body, dict) and "type" in body:
            return {**body, "status": body.get("status", outcome.status)}
        return {"type": "https://uri.etsi.org/ngsi-ld/errors/InternalError", "title": f"HTTP {outcome.status}",
                "status": outcome.status, "detail": f"registration {outcome.source.id} answered {outcome.status}"}
    return {"type": "https://uri.etsi.org/ngsi-ld/errors/InternalError", "title": "Context source failed",
            "status": 502, "detail": f"registration {outcome.source.id}: {outcome.error}"}


def _inclusive_answer(
    local: web.StreamResponse | None, local_error: NgsiError | None, failed: Sequence[Outcome], sent: int,
    entity_id: str,
) -> web.StreamResponse:
    """All succeeded: the local answer. Some failed: 207 with a BatchOperationResult (§5.2.16) naming
    each failure (the registration in ``registrationId``). All failed: the local error."""
    if local is not None and not failed:
        return local
    if local is None and len(failed) == sent:
        assert local_error is not None
        raise local_error
    errors: list[dict[str, Any]] = []
    if local_error is not None:
        errors.append({"entityId": entity_id, "error": local_error.to_problem_details()})
    errors += [{"entityId": entity_id, "registrationId": o.source.id, "error": _problem_of(o)} for o in failed]
    response = web.json_response({"success": [entity_id], "errors": errors}, status=207)
    if failed:
        response.headers[WARNING_HEADER] = _warnings(failed)
    return response


# ------------------------------------------------------------------ the middleware


_READ_PATHS: Final = {("GET", "/entities"): federated_query, ("GET", "/entities/{entity_id}"): federated_retrieve,
                      ("GET", "/temporal/entities"): federated_temporal,
                      ("GET", "/temporal/entities/{entity_id}"): federated_temporal}
_WRITE_PATHS: Final = frozenset({
    ("POST", "/entities"), ("PATCH", "/entities/{entity_id}"), ("PUT", "/entities/{entity_id}"),
    ("DELETE", "/entities/{entity_id}"), ("POST", "/entities/{entity_id}/attrs"),
    ("PATCH", "/entities/{entity_id}/attrs"), ("PATCH", "/entities/{entity_id}/attrs/{attr}"),
    ("PUT", "/entities/{entity_id}/attrs/{attr}"), ("DELETE", "/entities/{entity_id}/attrs/{attr}"),
})


def _route_path(request: web.Request, base: str) -> str | None:
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    if resource is None:
        return None
    path = resource.canonical
    if path.startswith(base):
        path = path[len(base):]
    return path.rstrip("/") or "/"


_BATCH_PATHS: Final = frozenset(
    {("POST", f"/entityOperations/{op}") for op in ("create", "upsert", "update", "delete", "merge")}
    | {("DELETE", "/entities")}  # Purge Entities
)


@web.middleware
async def federation_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Loop detection (Via) and forwarding of the entity endpoints to matching registrations."""
    settings = request.config_dict[SETTINGS_KEY]
    path = _route_path(request, settings.base_path)
    key = (request.method, path or "")
    if key not in _READ_PATHS and key not in _WRITE_PATHS and key not in _BATCH_PATHS:
        return await handler(request)
    client = request.config_dict[FEDERATION_KEY]
    if client.identity in _via_names(request):
        raise NgsiError("LoopDetected", f"this request already passed through this store ({client.identity}): "
                                        "a registration loop")
    if request.query.get("local") == "true":
        if key in _WRITE_PATHS or (key in _BATCH_PATHS and key != ("DELETE", "/entities")):  # purge has local
            # writes have no local parameter of their own: the local store alone answers, as if not given
            query = {k: v for k, v in request.query.items() if k != "local"}
            request = request.clone(rel_url=request.rel_url.with_query(query))
        return await handler(request)
    tenant = http.tenant_of(request)
    if key in _READ_PATHS:
        if READER_STORAGE.get() is not None:
            # a non-owner reader under a sharing policy: the sources would answer with this store's credentials,
            # not under the reader's policy, so such a reader gets the local (policy-filtered) answer only
            return await handler(request)
        return await _READ_PATHS[key](request, handler, client, tenant)
    if key == ("DELETE", "/entities"):
        return await federated_purge(request, handler, client, tenant)
    if key in _BATCH_PATHS:
        return await federated_batch(request, handler, client, tenant)
    return await federated_write(request, handler, client, tenant)


def setup_federation(app: web.Application, settings: StoreSettings) -> None:
    """The federation client in the app's lifecycle (the middleware is added by the app factory)."""
    client = FederationClient(settings)
    app[FEDERATION_KEY] = client

    async def lifecycle(app: web.Application) -> Any:  # noqa: ARG001  # cleanup_ctx signature
        await client.start()
        try:
            yield
        finally:
            await client.close()

    app.cleanup_ctx.append(lifecycle)
