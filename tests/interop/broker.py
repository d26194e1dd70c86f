"""A loopback NGSI-LD broker that treats @contexts the way Orion-LD does, for the remote-sink tests.

What it copies from Orion-LD (and what the gateway must cope with):

- a Link header's @context is fetched over HTTP (``Accept: application/ld+json``) before the
  request is processed; a context that cannot be fetched, or is not a JSON-LD context, answers
  503 LdContextNotAvailable (Orion-LD's status; CIM 009 V1.8.1+ says 504, ``unavailable_status``);
- fetched contexts are cached for one minute (the clock is the test's, so no test sleeps);
- an ``application/ld+json`` body carries its own @context, which is used as it is;
- entities are stored expanded, with an independent JSON-LD processor (PyLD), the NGSI-LD core
  context applied last as every broker has it built in.

The broker never reaches beyond loopback: the only contexts it fetches are the URLs it is sent.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from pyld import jsonld

from schemas import contexts
from tests.loopback import Loopback

CACHE_SECONDS = 60.0
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
_LINK = re.compile(r'<([^>]+)>\s*;(.*)')
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"


def _problem(status: int, kind: str, detail: str) -> web.Response:
    return web.json_response({"type": ERRORS + kind, "title": kind, "detail": detail}, status=status)


def _context_link(header: str) -> str | None:
    for part in header.split(","):
        match = _LINK.match(part.strip())
        if match and CONTEXT_REL in match.group(2):
            return match.group(1)
    return None


class OrionLikeBroker(Loopback):
    """Batch upsert and entity creation with Orion-LD's @context handling; state kept expanded."""

    client_max_size = 64 << 20

    def __init__(self, *, unavailable_status: int = 503, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.unavailable_status = unavailable_status
        self.clock = clock
        self.fetches: list[str] = []
        """Every context URL fetched over HTTP, in order (a cache hit adds nothing)."""
        self.refusals: list[str] = []
        """Context URLs that could not be obtained (each one answered LdContextNotAvailable)."""
        self.entities: dict[str, dict[str, Any]] = {}
        """Entity id -> the entity in JSON-LD expanded form (the last version written)."""
        self.bodies: list[tuple[dict[str, str], Any]] = []
        self._cache: dict[str, tuple[float, Any]] = {}
        self._core = contexts.bundled_context(contexts.CORE_CONTEXT_IRI)
        self._http: aiohttp.ClientSession | None = None

    def routes(self, app: web.Application) -> None:
        """Batch upsert, entity creation and the type list."""
        app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", self._upsert)
        app.router.add_post("/ngsi-ld/v1/entities", self._create)
        app.router.add_get("/ngsi-ld/v1/types", self._types)

    async def start(self) -> None:
        """Listen on loopback (with a client for the contexts it fetches)."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        await super().start()

    async def stop(self) -> None:
        """Stop listening."""
        await super().stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ------------------------------------------------------------------ contexts

    async def _fetch(self, url: str) -> Any:
        """The @context value of the document at ``url``, from the cache or fetched; None if unavailable."""
        now = self.clock()
        cached = self._cache.get(url)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        if url == contexts.CORE_CONTEXT_IRI or url == contexts.CORE_CONTEXT_IRI_V1_8:
            return self._core["@context"] if self._core else None  # built in, as in every broker
        assert self._http is not None
        self.fetches.append(url)
        try:
            async with self._http.get(url, headers={"Accept": "application/ld+json, application/json"}) as resp:
                if resp.status != 200:
                    return None
                document = json.loads(await resp.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        if not isinstance(document, dict) or "@context" not in document:
            return None
        self._cache[url] = (now, document["@context"])
        return document["@context"]

    async def _resolve(self, value: Any) -> Any:
        """A @context with every remote IRI replaced by the fetched document's @context."""
        if isinstance(value, str):
            fetched = await self._fetch(value)
            if fetched is None:
                raise LookupError(value)
            return fetched
        if isinstance(value, list):
            return [await self._resolve(v) for v in value]
        return value

    def _expand(self, entity: dict[str, Any], context: Any) -> dict[str, Any]:
        assert self._core is not None
        doc = {k: v for k, v in entity.items() if k != "@context"}
        # The core context is applied last: its terms always win (CIM 009 §5.5.7).
        doc["@context"] = [*(context if isinstance(context, list) else [context]), self._core["@context"]]
        expanded = jsonld.expand(doc, {"documentLoader": _no_loading})
        assert len(expanded) == 1, expanded
        return dict(expanded[0])

    async def _contexts_of(self, request: web.Request, body: list[Any]) -> list[Any] | web.Response:
        """The resolved @context of each entity, or the error response Orion-LD would give."""
        ctype = request.content_type
        link = _context_link(request.headers.get("Link", ""))
        out: list[Any] = []
        for item in body:
            if not isinstance(item, dict):
                return _problem(400, "BadRequestData", "an entity must be a JSON object")
            if ctype == "application/ld+json":
                if link is not None:
                    return _problem(400, "BadRequestData", "Link header with application/ld+json")
                if "@context" not in item:
                    return _problem(400, "BadRequestData", "application/ld+json without @context")
                value: Any = item["@context"]
            else:
                if "@context" in item:
                    return _problem(400, "BadRequestData", "@context in an application/json body")
                value = link if link is not None else []
            try:
                out.append(await self._resolve(value))
            except LookupError as exc:
                self.refusals.append(str(exc))
                return _problem(self.unavailable_status, "LdContextNotAvailable",
                                f"the @context {exc} could not be obtained")
        return out

    # ------------------------------------------------------------------ handlers

    async def _write(self, request: web.Request, body: list[Any]) -> web.Response | list[str]:
        self.bodies.append((dict(request.headers), body))
        resolved = await self._contexts_of(request, body)
        if isinstance(resolved, web.Response):
            return resolved
        ids = []
        for item, context in zip(body, resolved, strict=True):
            expanded = self._expand(item, context)
            current = self.entities.setdefault(expanded["@id"], {})
            current.update(expanded)
            ids.append(str(expanded["@id"]))
        return ids

    async def _upsert(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, list):
            return _problem(400, "BadRequestData", "a batch is a JSON array")
        done = await self._write(request, body)
        return done if isinstance(done, web.Response) else web.json_response(done, status=201)

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        done = await self._write(request, [body])
        if isinstance(done, web.Response):
            return done
        return web.Response(status=201, headers={"Location": f"/ngsi-ld/v1/entities/{done[0]}"})

    async def _types(self, request: web.Request) -> web.Response:
        return web.json_response([])


DATA_INTEGRITY = "https://w3id.org/security/data-integrity/v2"
"""Named by the core context's ``ngsildproof`` scoped context; no test entity uses that term."""


def _no_loading(url: str, options: Any = None) -> Any:
    # Every remote context was fetched (and cached) by the broker itself before expansion. The
    # data-integrity vocabulary only matters inside ``ngsildproof``: an empty stand-in keeps the
    # broker offline without changing any expansion the tests look at.
    if url == DATA_INTEGRITY:
        return {"contextUrl": None, "documentUrl": url, "document": {"@context": {}}}
    raise jsonld.JsonLdError(f"unexpected context load {url}", "jsonld.LoadDocumentError",
                             code="loading document failed")
