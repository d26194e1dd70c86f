"""Everything a check may use during one run: the HTTP client, fixtures, cleanup, the receiver."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from conformance.http import Client, Response
from conformance.registry import Fail, Skip
from conformance.targets import (
    API_ROOT,
    AdapterTarget,
    EndpointTarget,
    ExportTarget,
    FilesTarget,
    Target,
    TranslationFailure,
)
from gateway.model import is_uri

if TYPE_CHECKING:
    from conformance.profile import Profile
    from conformance.receiver import Receiver

JSON: Final = "application/json"
LD_JSON: Final = "application/ld+json"
GEO_JSON: Final = "application/geo+json"
MERGE_PATCH: Final = "application/merge-patch+json"
CORE_CONTEXT: Final = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
"""The NGSI-LD core @context V1.9 (every implementation knows it without fetching)."""
CONTEXT_REL: Final = "http://www.w3.org/ns/json-ld#context"
ERRORS: Final = "https://uri.etsi.org/ngsi-ld/errors/"
UNREACHABLE_CONTEXT: Final = "http://127.0.0.1:9/jonction-check/missing-context.jsonld"
"""A context URL nothing serves (discard port on loopback): an implementation must not invent it."""

_TARGET_TENANT: Final = object()
WRITE_LEVELS: Final = frozenset({"L3", "L4", "L5", "L6"})
"""Levels whose checks write; the checker writes only when the profile selects one of them."""
PROBES: Final = 5
"""Number of probe entities seeded when the checker may write."""


class FixtureError(Exception):
    """A fixture the checks depend on could not be built (reported as ``error``)."""


@dataclass(slots=True)
class ReadSet:
    """Entities of one type the read checks work on, as the target returned them."""

    type: str
    entities: list[dict[str, Any]]
    seeded: bool
    total: int


@dataclass(slots=True)
class RunContext:
    """State shared by the checks of one run."""

    profile: Profile
    target: Target
    client: Client | None = None
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    writes_allowed: bool = False
    write_refusal: str = ""
    receiver: Receiver | None = None
    measurements: list[dict[str, Any]] = field(default_factory=list)
    """Figures the running check measured (kept as evidence; reset for each check)."""
    created: dict[str | None, set[str]] = field(default_factory=dict)
    subscriptions: dict[str | None, set[str]] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    # ------------------------------------------------------------------ identity

    @property
    def probe_type(self) -> str:
        """The entity type of this run's probe entities (unique, so counts are exact)."""
        return f"JcProbe{self.run_id}"

    def uid(self, label: str, entity_type: str | None = None) -> str:
        """A URN unique to this run: every id the checker creates starts with its prefix."""
        return f"urn:ngsi-ld:{entity_type or self.probe_type}:jc-{self.run_id}-{label}"

    @property
    def endpoint(self) -> EndpointTarget:
        """The endpoint target (checks that need ``api`` only run against one)."""
        if not isinstance(self.target, EndpointTarget):
            raise Skip("the target is not an NGSI-LD API")
        return self.target

    @property
    def tenant(self) -> str | None:
        """The tenant named by the target (None: the default tenant)."""
        return self.target.tenant if isinstance(self.target, EndpointTarget) else None

    def other_tenant(self, label: str = "b") -> str:
        """A tenant name unique to this run (created implicitly by the first creation)."""
        return f"jc-{self.run_id}-{label}"

    def missing_tenant(self) -> str:
        """A tenant name that no creation ever used."""
        return f"jc-{self.run_id}-none"

    # ------------------------------------------------------------------ HTTP

    async def api(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        raw: bytes | None = None,
        ctype: str | None = JSON,
        accept: str | None = None,
        link: str | None = None,
        tenant: Any = _TARGET_TENANT,
        auth: bool | str = True,
        headers: Mapping[str, str] | None = None,
        chunked: bool = False,
        record: bool = True,
    ) -> Response:
        """One request to the API root; ``tenant`` None sends no tenant header."""
        if self.client is None:
            raise Skip("the target is not an NGSI-LD API")
        sent: dict[str, str] = {}
        chosen = self.tenant if tenant is _TARGET_TENANT else tenant
        if chosen:
            sent["NGSILD-Tenant"] = str(chosen)
        token = self.endpoint.token
        if auth is True and token:
            sent["Authorization"] = f"Bearer {token}"
        elif isinstance(auth, str):
            sent["Authorization"] = auth
        if accept:
            sent["Accept"] = accept
        if link:
            sent["Link"] = f'<{link}>; rel="{CONTEXT_REL}"; type="application/ld+json"'
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None and ctype:
            sent["Content-Type"] = ctype
        sent.update(headers or {})
        full = path if path.startswith("http") else API_ROOT + path
        return await self.client.request(method, full, params=params, headers=sent, body=data,
                                         chunked=chunked, no_content_type=data is not None and not ctype,
                                         record=record)

    # ------------------------------------------------------------------ writes and cleanup

    def require_write(self) -> None:
        """Skip unless the checker may write to this target."""
        if not self.writes_allowed:
            raise Skip(self.write_refusal or "writing to the target is not allowed")

    def track(self, entity_id: str, tenant: Any = _TARGET_TENANT) -> None:
        """Remember an entity to delete at the end of the run (only URIs can have been created)."""
        if not is_uri(entity_id):
            return
        chosen = self.tenant if tenant is _TARGET_TENANT else tenant
        self.created.setdefault(chosen, set()).add(entity_id)

    def track_subscription(self, sub_id: str, tenant: Any = _TARGET_TENANT) -> None:
        """Remember a subscription to delete at the end of the run."""
        chosen = self.tenant if tenant is _TARGET_TENANT else tenant
        self.subscriptions.setdefault(chosen, set()).add(sub_id)

    async def create(self, ent: Mapping[str, Any], *, tenant: Any = _TARGET_TENANT, ctype: str = JSON) -> Response:
        """Create an entity the run owns (tracked for cleanup)."""
        self.require_write()
        self.track(str(ent["id"]), tenant)
        return await self.api("POST", "/entities", body=ent, tenant=tenant, ctype=ctype)

    async def create_ok(self, ent: Mapping[str, Any], *, tenant: Any = _TARGET_TENANT) -> None:
        """Create an entity the run needs as a fixture; FixtureError if the target refuses."""
        resp = await self.create(ent, tenant=tenant)
        if resp.status != 201:
            raise FixtureError(f"could not create fixture {ent['id']}: HTTP {resp.status} {resp.body[:300]!r}")

    async def cleanup(self) -> list[str]:
        """Delete every entity and subscription this run created; returns what could not be deleted."""
        left: list[str] = []
        if self.client is None:
            return left
        self.client.recorder.exchanges = []
        for tenant, subs in self.subscriptions.items():
            for sub in sorted(subs):
                try:
                    resp = await self.api("DELETE", f"/subscriptions/{sub}", tenant=tenant)
                    if resp.status not in (204, 404):
                        left.append(f"subscription {sub} (HTTP {resp.status})")
                except Exception as exc:  # cleanup keeps going whatever happens
                    left.append(f"subscription {sub} ({exc})")
        for tenant, ids in self.created.items():
            for eid in sorted(ids):
                try:
                    resp = await self.api("DELETE", f"/entities/{eid}", tenant=tenant)
                    if resp.status not in (204, 404):
                        left.append(f"entity {eid} in tenant {tenant or 'default'} (HTTP {resp.status})")
                except Exception as exc:  # cleanup keeps going whatever happens
                    left.append(f"entity {eid} ({exc})")
        return left

    # ------------------------------------------------------------------ fixtures

    def probe(self, n: int) -> dict[str, Any]:
        """The n-th probe entity (1-based): numbers, text, a unit, a time and a location."""
        return {
            "id": self.uid(f"p{n}"),
            "type": self.probe_type,
            "temperature": {"type": "Property", "value": 10.5 + n, "unitCode": "CEL",
                            "observedAt": f"2024-01-0{n}T10:00:00Z"},
            "name": {"type": "Property", "value": f"probe {n}"},
            "status": {"type": "Property", "value": "on" if n % 2 else "off"},
            "location": {"type": "GeoProperty",
                         "value": {"type": "Point", "coordinates": [2.30 + n * 0.01, 48.85]}},
            "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:jc-{self.run_id}-d{n}"},
        }

    async def read_set(self) -> ReadSet:
        """Entities for the read checks: seeded probes, or (read-only) entities found on the target."""
        async with self._lock:
            if "read_set" in self._cache:
                cached: ReadSet = self._cache["read_set"]
                return cached
            if self.writes_allowed:
                for n in range(1, PROBES + 1):
                    await self.create_ok(self.probe(n))
                resp = await self.api("GET", "/entities", params={"type": self.probe_type, "limit": "100"})
                found = resp.json() if resp.status == 200 else None
                if not isinstance(found, list):
                    raise FixtureError(f"could not read back the probe entities (HTTP {resp.status})")
                rs = ReadSet(self.probe_type, sorted(found, key=lambda e: str(e.get("id"))), True, PROBES)
            else:
                rs = await self._discover()
            self._cache["read_set"] = rs
            return rs

    async def _discover(self) -> ReadSet:
        for model in self.profile.model_names:
            # The type as a full IRI first: entities written with the official @context are stored
            # under it, and no broker needs a @context to match a full IRI.
            for selector in type_selectors(model):
                resp = await self.api("GET", "/entities", params={"type": selector, "limit": "20", "count": "true"})
                found = resp.json() if resp.status == 200 else None
                if isinstance(found, list) and found:
                    try:
                        total = int(resp.header("NGSILD-Results-Count") or len(found))
                    except ValueError:
                        total = len(found)
                    # Entities as the target answered (names in full where the core context has
                    # no term for them): the read checks send those names back in their queries.
                    return ReadSet(selector, found, False, total)
        raise Skip("no entities of the profile's models on the target, and writing is not allowed "
                   "(set allow_write to let the checker seed its own probe entities)")

    async def data_entities(self) -> list[tuple[str, Any]]:
        """The vendor data the L1 and Q checks judge: records from files/adapter, or entities read."""
        async with self._lock:
            if "data" in self._cache:
                cached: list[tuple[str, Any]] = self._cache["data"]
                return cached
            if isinstance(self.target, FilesTarget | AdapterTarget | ExportTarget):
                data = await self.target.records()
            else:
                data = await self._read_models()
            self._cache["data"] = data
            return data

    async def _read_models(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        limit = self.profile.max_entities
        for model in self.profile.model_names:
            # One query for the official IRI and the bare term (a type in the core default
            # vocabulary): both are the model's entities as far as their data is concerned.
            selector = ",".join(type_selectors(model))
            offset = 0
            while offset < limit:
                page = min(100, limit - offset)
                resp = await self.api("GET", "/entities", params={"type": selector, "limit": str(page),
                                                                   "offset": str(offset)})
                if resp.status != 200 or not isinstance(resp.json(), list):
                    raise Fail(f"reading entities of type {model} answered HTTP {resp.status}")
                items = resp.json()
                out.extend((f"{model}/{e.get('id')}", compact_entity(e)) for e in items)
                if len(items) < page:
                    break
                offset += page
        return out

    async def model_records(self, model: str | None = None) -> list[tuple[str, Any]]:
        """Data records, optionally only those of one type; translation failures included."""
        data = await self.data_entities()
        if model is None:
            return data
        return [(loc, e) for loc, e in data if isinstance(e, dict) and e.get("type") == model]


def type_selectors(model: str) -> list[str]:
    """How to name a model's type in a query without a @context: its official IRI, then the term."""
    from schemas.contexts import expand_term

    iri = expand_term(model)
    return [iri, model] if iri and iri != model else [model]


_MEMBERS: Final = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt", "value", "object",
                             "objectList", "languageMap", "vocab", "json", "valueList", "observedAt", "unitCode",
                             "datasetId", "instanceId", "lang", "objectType", "@context"})


def compact_entity(entity: Any) -> Any:
    """An entity read without a @context, with full Smart Data Model IRIs turned back into terms.

    A broker compacts with the core context only, so types and attribute names come back as IRIs;
    the data checks judge the model's terms. Compaction is offline (the bundled jonction terms).
    """
    from schemas.contexts import compact_iri

    def names(node: Any) -> Any:
        if isinstance(node, list):
            return [names(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _MEMBERS:
                out[key] = value
            else:
                out[compact_iri(key)] = names(value)
        return out

    if not isinstance(entity, dict):
        return entity
    compacted: dict[str, Any] = names(entity)
    kind = entity.get("type")
    if isinstance(kind, str):
        compacted["type"] = compact_iri(kind)
    elif isinstance(kind, list):
        compacted["type"] = [compact_iri(k) if isinstance(k, str) else k for k in kind]
    return compacted


def is_failure(record: Any) -> bool:
    """True for a record that is a translation failure instead of an entity."""
    return isinstance(record, TranslationFailure)
