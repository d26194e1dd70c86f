"""Sharing policies in the store's read paths: who is reading, and the storage as that reader may see it.

One choke point: when a policy file is loaded (``StoreSettings.sharing``), :func:`sharing_middleware`
names the reader of every request (a store token valid for the tenant: the owner, who sees
everything; a principal's token: that principal; anything else: ``public``) and, for a non-owner
read, hands the handlers a :class:`ReaderStorage` instead of the storage (``http.ngsi_context``
picks it up). Every entity read (queries, retrieval, counts, joins, ``/types``, ``/attributes``)
goes through it:

* the query is narrowed to the shared types *before* paging (SQL prefilter) and the exact test
  runs on the entity as the reader sees it, so ``q``/``attrs``/``orderBy``/geo-queries cannot probe
  a hidden attribute, and limit/offset/count agree with what is returned;
* an entity of a type not shared is absent (retrieval answers the very 404 of an absent id);
* attributes not shared (and personal data) are removed, GeoProperties snapped to the rule's grid.

A *view* (``views:`` of the policy file) is a read-only virtual tenant: its principal reads the
member tenants through it, each entity tagged with the tenant's label. The temporal API, which
reads the history tables itself, asks :func:`temporal_policy` for the same decisions. Every
non-owner read is written to the audit log (:mod:`gateway.store.audit`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

from aiohttp import web

from gateway.model import Entity
from gateway.store import audit, codec, jsonld
from gateway.store.base import (
    BatchResult,
    Change,
    ChangeResult,
    Doc,
    HistorySlice,
    HistoryWrites,
    Listener,
    QueryResult,
    QuerySpec,
    Storage,
    SubscriptionRecords,
    TypeInfo,
)
from gateway.store.http import TENANT_HEADER
from gateway.store.indexing import SortKey
from gateway.store.problems import NgsiError
from gateway.store.security import token_matches
from gateway.store.settings import READER_STORAGE, STORAGE_KEY, StoreSettings
from gateway.store.sharing import OWNER, PUBLIC, Access, Policies, Rule, View, snap

log = logging.getLogger("jonction.store.sharing")

_MEMBERS: Final = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt", "@context"})
_READ_POSTS: Final = ("/entityOperations/query",)
"""POST endpoints that only read (Query Entities and Query Temporal Evolution of Entities)."""
_OWNER_ONLY: Final = frozenset({"subscriptions", "csourceSubscriptions", "csourceRegistrations"})
"""Resources of the tenant's owner: their definitions name types, attributes and endpoints."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _tail(iri: str) -> str:
    """The last segment of an IRI (``.../dataModel.Environment/pm25`` → ``pm25``)."""
    return iri.rsplit("/", 1)[-1].rsplit("#", 1)[-1]


def is_read(request: web.Request) -> bool:
    """True for requests that only read: GET/HEAD/OPTIONS and the POST queries."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return True
    return request.method == "POST" and request.path.rstrip("/").endswith(_READ_POSTS)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class ReaderStorage:
    """The storage as one non-owner reader sees it: the reads filtered, the writes refused.

    ``tenant`` arguments are the request's tenant; a view's name stands for its member tenants.
    """

    def __init__(self, storage: Storage, policies: Policies, principal: str, view: View | None = None) -> None:
        self.storage = storage
        self.policies = policies
        self.principal = principal
        self.view = view
        self._jonction = storage.contexts.get([jsonld.jonction_context_iri()])
        self._core = storage.contexts.get([])
        self._tag = self._core.expand_term(view.tag) if view is not None else ""
        # one request compacts the same few IRIs for every entity: remembered for its duration
        self._type_memo: dict[str, tuple[str, ...]] = {}
        self._attr_memo: dict[tuple[int, str], bool] = {}

    # -- decisions -------------------------------------------------------------------------

    def access(self, tenant: str) -> Access:
        """What this reader may see of a (real) tenant."""
        return self.policies.access(tenant, self.principal)

    def _type_names(self, iri: str) -> tuple[str, ...]:
        names = self._type_memo.get(iri)
        if names is None:
            names = self._type_memo[iri] = (iri, self._jonction.compact_iri(iri), self._core.compact_iri(iri))
        return names

    def rule(self, access: Access, types: Iterable[str]) -> Rule | None:
        """The rule showing an entity of these type IRIs, or None (invisible)."""
        return access.rule_for(n for t in types for n in self._type_names(t))

    def attribute_allowed(self, rule: Rule, iri: str) -> bool:
        """True when the attribute IRI may be shown under ``rule``."""
        key = (id(rule), iri)
        allowed = self._attr_memo.get(key)
        if allowed is None:
            names = (iri, self._jonction.compact_iri(iri), _tail(iri))
            allowed = self._attr_memo[key] = rule.allows_attribute(names, self.policies.personal)
        return allowed

    def shared_type_iris(self, access: Access) -> set[str]:
        """The IRIs of the shared types (the query's SQL prefilter): exactly those :meth:`rule` recognises."""
        out: set[str] = set()
        for name in access.shared_types():
            out.update((name, self._jonction.expand_term(name), self._core.expand_term(name)))
        return out

    def visible(self, tenant: str, doc: Doc, access: Access | None = None) -> Doc | None:
        """The entity as this reader sees it, or None when its type is not shared."""
        rule = self.rule(access or self.access(tenant), doc.get("type") or ())
        if rule is None:
            return None
        grid = rule.coarsen.location_grid_m
        out: Doc = {}
        for key, value in doc.items():
            if key in _MEMBERS:
                out[key] = value
            elif self.attribute_allowed(rule, key):
                out[key] = [_coarsened(i, grid) for i in value] if grid and isinstance(value, list) else value
        return out

    # -- reads -----------------------------------------------------------------------------

    async def get_doc(self, tenant: str, entity_id: str) -> Doc | None:
        """The entity as this reader sees it; None when absent or not shared (the same 404)."""
        if self.view is not None:
            for member in self._members(tenant):
                doc = await self.storage.get_doc(member, entity_id)
                shown = self.visible(member, doc) if doc is not None else None
                if shown is not None:
                    return self._tagged(member, shown)
            return None
        doc = await self.storage.get_doc(tenant, entity_id)
        return self.visible(tenant, doc) if doc is not None else None

    async def query(self, tenant: str, spec: QuerySpec) -> QueryResult:
        """One page of the visible matches: shared types prefiltered, the exact test on the visible entity."""
        if self.view is None:
            return await self._query_one(tenant, spec)
        end = spec.offset + spec.limit
        docs: list[Doc] = []
        total = 0
        more = False
        for member in self._members(tenant):
            page = await self._query_one(member, dataclasses.replace(spec, offset=0, limit=end))
            docs.extend(page.docs)
            total += page.count or 0
            more = more or page.more
        if spec.sort_key is not None:
            key = spec.sort_key
            docs.sort(key=lambda d: (SortKey(key(d)), d["id"]), reverse=spec.sort_reverse)
        else:
            docs.sort(key=lambda d: d["id"])
        return QueryResult(docs[spec.offset : end], total if spec.count else None, more or len(docs) > end)

    async def _query_one(self, tenant: str, spec: QuerySpec) -> QueryResult:
        access = self.access(tenant)
        empty = QueryResult([], 0 if spec.count else None, False)
        if access.sees_nothing or not await self.storage.tenant_exists(tenant):
            return empty
        shared = self.shared_type_iris(access)
        narrowed = dataclasses.replace(spec)
        if self.view is not None:
            # q and attrs may name the view's tag, which no stored entity has: the exact test alone decides
            narrowed.q, narrowed.number_filters, narrowed.attrs = None, [], None
        if spec.types is None:
            narrowed.types = sorted(shared)
        elif spec.type_match is None:
            narrowed.types = [t for t in spec.types if t in shared]
            if not narrowed.types:
                return empty
        # else: a type expression with AND; its names stay the prefilter, visibility decides below
        exact = spec.predicate
        wanted = spec.attrs
        if exact is None and wanted is None and spec.sort_key is None and spec.type_match is None \
                and self.view is None:
            # visibility depends on the type alone, which the prefilter decided: the database pages and counts
            result = await self.storage.query(tenant, narrowed)
            docs = [shown for d in result.docs if (shown := self.visible(tenant, d, access)) is not None]
            return QueryResult(docs, result.count, result.more)

        def predicate(doc: Doc) -> bool:
            shown = self.visible(tenant, doc, access)
            if shown is None:
                return False
            shown = self._tagged(tenant, shown)
            if wanted is not None and not any(a in shown for a in wanted):
                return False
            return exact is None or exact(shown)

        narrowed.predicate = predicate
        if spec.sort_key is not None:
            key = spec.sort_key
            narrowed.sort_key = lambda doc: key(self._tagged(tenant, self.visible(tenant, doc, access) or doc))
        if any(rule.coarsen.location_grid_m for rule in access.rules):
            # the geometry box prefilter reads precise positions: the snapped ones decide alone
            narrowed.bbox = None
            narrowed.geoproperty = None
        result = await self.storage.query(tenant, narrowed)
        shown_docs = (self.visible(tenant, d, access) for d in result.docs)
        docs = [self._tagged(tenant, shown) for shown in shown_docs if shown is not None]
        return QueryResult(docs, result.count, result.more)

    async def type_info(self, tenant: str) -> dict[str, TypeInfo]:
        """The shared types only, with their shared attributes."""
        merged: dict[str, TypeInfo] = {}
        for member in self._members(tenant):
            access = self.access(member)
            if access.sees_nothing:
                continue
            for iri, info in (await self.storage.type_info(member)).items():
                rule = self.rule(access, (iri,))
                if rule is None:
                    continue
                attrs = {a: k for a, k in info.attributes.items() if self.attribute_allowed(rule, a)}
                known = merged.get(iri)
                if known is not None:
                    attrs = {a: known.attributes.get(a, frozenset()) | attrs.get(a, frozenset())
                             for a in {*known.attributes, *attrs}}
                    merged[iri] = TypeInfo(known.count + info.count, attrs)
                else:
                    merged[iri] = TypeInfo(info.count, attrs)
        return dict(sorted(merged.items()))

    async def tenant_exists(self, tenant: str) -> bool:
        """A view exists for its principal; a tenant as for anyone."""
        if self.view is not None and tenant == self.view.name:
            return True
        return await self.storage.tenant_exists(tenant)

    async def tenants(self) -> list[str]:
        """The tenants sharing something with this reader."""
        return [t for t in await self.storage.tenants() if not self.access(t).sees_nothing]

    def _members(self, tenant: str) -> tuple[str, ...]:
        if self.view is not None and tenant == self.view.name:
            return self.policies.view_tenants(self.view)
        return (tenant,)

    def _tagged(self, member: str, doc: Doc) -> Doc:
        if self.view is None:
            return doc
        return {**doc, self._tag: [{"type": "Property", "value": self.policies.label(member)}]}

    # -- what is not a read: refused, or the storage's own -------------------------------------

    def _refuse(self) -> NgsiError:
        return NgsiError("Forbidden", "this reader may only read what is shared with it", 403, title="Forbidden")

    async def upsert(self, tenant: str, entities: Sequence[Entity], *, context: str | Sequence[str] | None = None,
                     mode: Literal["update", "replace"] = "update") -> BatchResult:
        """Refused: a non-owner never writes."""
        raise self._refuse()

    async def append_history(self, tenant: str, entities: Sequence[Entity], *,
                             context: str | Sequence[str] | None = None) -> BatchResult:
        """Refused."""
        raise self._refuse()

    async def get(self, tenant: str, entity_id: str, context: str | Sequence[str] | None = None) -> Entity | None:
        """One visible entity compacted with ``context``."""
        doc = await self.get_doc(tenant, entity_id)
        if doc is None:
            return None
        entries: list[jsonld.ContextEntry] = (
            [jsonld.jonction_context_iri()] if context is None else [context] if isinstance(context, str)
            else list(context))
        compacted: Entity = self.storage.contexts.get(entries).compact_entity(doc)
        return compacted

    async def count(self, tenant: str, entity_type: str | None = None) -> int:
        """Number of visible entities (of one type)."""
        types = None if entity_type is None else [self._jonction.expand_term(entity_type)]
        result = await self.query(tenant, QuerySpec(types=types, limit=0, count=True))
        return result.count or 0

    async def close(self) -> None:
        """Nothing: the storage belongs to the app."""

    async def apply(self, tenant: str, changes: Sequence[Change], *, create_tenant: bool = False) -> list[
        ChangeResult
    ]:
        """Refused."""
        raise self._refuse()

    async def create_entities(self, tenant: str, docs: Sequence[Doc]) -> BatchResult:
        """Refused."""
        raise self._refuse()

    async def upsert_entities(self, tenant: str, docs: Sequence[Doc], *,
                              mode: Literal["update", "replace"] = "replace") -> BatchResult:
        """Refused."""
        raise self._refuse()

    async def update_entities(self, tenant: str, docs: Sequence[Doc], *, no_overwrite: bool = False) -> BatchResult:
        """Refused."""
        raise self._refuse()

    async def merge_entities(self, tenant: str, docs: Sequence[Doc]) -> BatchResult:
        """Refused."""
        raise self._refuse()

    async def replace_entities(self, tenant: str, docs: Sequence[Doc]) -> BatchResult:
        """Refused."""
        raise self._refuse()

    async def delete_entities(self, tenant: str, ids: Sequence[str]) -> BatchResult:
        """Refused."""
        raise self._refuse()

    async def start(self) -> None:
        """Nothing: the storage belongs to the app."""

    async def ensure_tenant(self, tenant: str) -> None:
        """Refused."""
        raise self._refuse()

    async def put_context(self, context_id: str, document: Mapping[str, Any]) -> None:
        """Refused."""
        raise self._refuse()

    async def delete_context(self, context_id: str) -> bool:
        """Refused."""
        raise self._refuse()

    def hosted_contexts(self) -> Mapping[str, Mapping[str, Any]]:
        """The hosted contexts (public documents)."""
        return self.storage.hosted_contexts()

    def alias_context(self, url: str, bundled_iri: str) -> None:
        """The storage's own."""
        self.storage.alias_context(url, bundled_iri)

    def add_listener(self, callback: Listener) -> None:
        """The storage's own."""
        self.storage.add_listener(callback)

    @property
    def contexts(self) -> jsonld.ContextCache:
        """The storage's @context cache."""
        return self.storage.contexts

    def subscription_records(self) -> SubscriptionRecords | None:
        """The storage's own (subscriptions are the owner's: readers never reach them)."""
        return self.storage.subscription_records()

    def delivers_notifications(self) -> bool:
        """The storage's own."""
        return self.storage.delivers_notifications()

    async def history_slice(
        self, tenant: str, entity_ids: Sequence[str] | None, start: int | None, end: int | None,
        *, types: Sequence[str] | None = None,
    ) -> HistorySlice | None:
        """The storage's own: the temporal API filters what it reads with :func:`temporal_policy`."""
        return await self.storage.history_slice(tenant, entity_ids, start, end, types=types)

    def history_writes(self) -> HistoryWrites | None:
        """The storage's own (reads only: the temporal writes are refused by the auth middleware)."""
        return self.storage.history_writes()


def _snap_positions(coords: Any, grid: float) -> Any:
    if isinstance(coords, list) and len(coords) >= 2 and all(isinstance(c, int | float) for c in coords[:2]):
        lon, lat = float(coords[0]), float(coords[1])
        if math.isfinite(lon) and math.isfinite(lat):
            return list(snap(lon, lat, grid)) + list(coords[2:3])
        return coords
    if isinstance(coords, list):
        return [_snap_positions(c, grid) for c in coords]
    return coords


def snap_geometry(value: Any, grid: float) -> Any:
    """A GeoJSON geometry with every position moved to the centre of its grid cell."""
    if not isinstance(value, Mapping):
        return value
    out = dict(value)
    if "coordinates" in out:
        out["coordinates"] = _snap_positions(out["coordinates"], grid)
    if isinstance(out.get("geometries"), list):
        out["geometries"] = [snap_geometry(g, grid) for g in out["geometries"]]
    return out


def _coarsened(instance: Any, grid: float) -> Any:
    if not isinstance(instance, Mapping) or instance.get("type") != "GeoProperty":
        return instance
    return {**instance, "value": snap_geometry(instance.get("value"), grid)}


# --------------------------------------------------------------------------- temporal API


@dataclasses.dataclass(frozen=True)
class TemporalPolicy:
    """What the temporal API asks of a non-owner read: visible entities, attributes, coarsening."""

    storage: ReaderStorage
    tenant: str

    def _rule(self, types: Sequence[str]) -> Rule | None:
        return self.storage.rule(self.storage.access(self.tenant), types)

    def entity_visible(self, types: Sequence[str]) -> bool:
        """True when an entity of these type IRIs is shared with the reader."""
        return self._rule(types) is not None

    def attribute_visible(self, types: Sequence[str], attr: str) -> bool:
        """True when this attribute of such an entity is shared."""
        rule = self._rule(types)
        return rule is not None and self.storage.attribute_allowed(rule, attr)

    def grid(self, types: Sequence[str]) -> float | None:
        """The grid GeoProperties are snapped to (metres), or None."""
        rule = self._rule(types)
        return rule.coarsen.location_grid_m if rule is not None else None

    def hourly(self, types: Sequence[str]) -> bool:
        """True when this entity's history is shown averaged per hour."""
        rule = self._rule(types)
        return rule is not None and rule.coarsen.temporal == "hourly"

    def any_hourly(self) -> bool:
        """True when some shared type (of some member of a view) is averaged per hour."""
        return any(r.coarsen.temporal == "hourly" for m in self.members() for r in self.storage.access(m).rules)

    @property
    def is_view(self) -> bool:
        """True when the tenant read is a view: read member by member (:meth:`members`, :meth:`for_member`)."""
        return self.storage.view is not None and self.tenant == self.storage.view.name

    def members(self) -> tuple[str, ...]:
        """The tenants read: a view's members, or the tenant itself."""
        return self.storage._members(self.tenant)

    def for_member(self, member: str) -> TemporalPolicy:
        """The policy of one member tenant of a view."""
        return TemporalPolicy(self.storage, member)

    def tag(self, member: str) -> tuple[str, str]:
        """(IRI of the view's tag Property, the member's label) added to each entity read through a view."""
        return self.storage._tag, self.storage.policies.label(member)


def temporal_policy(tenant: str) -> TemporalPolicy | None:
    """The policy the temporal read being served applies (None: the owner, everything)."""
    reader = READER_STORAGE.get()
    if not isinstance(reader, ReaderStorage):
        return None
    return TemporalPolicy(reader, tenant)


# --------------------------------------------------------------------------- middleware


def sharing_middleware(settings: StoreSettings) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Middleware naming the reader of each request and filtering non-owner reads (see the module doc)."""
    policies = settings.sharing
    assert policies is not None  # only installed with a policy file

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        tenant = request.headers.get(TENANT_HEADER, "")
        token = _bearer(request)
        accepted = settings.tokens | settings.tenant_tokens.get(tenant, frozenset())
        owner = token is not None and token_matches(token, accepted)
        principal = OWNER if owner else policies.principal_of(token)
        view = policies.views.get(tenant)
        read = is_read(request)
        if view is not None and not read and (owner or principal == view.principal):
            raise NgsiError("Forbidden", f"tenant {tenant!r} is a read-only view over "
                            f"{', '.join(policies.view_tenants(view)) or 'no tenant'}: write to a member tenant "
                            "with its owner's token", 403, title="Forbidden")
        if owner or not read or audit.is_audit_path(request.path):
            return await handler(request)
        if request.path.rstrip("/").endswith("/jsonldContexts") or "/jsonldContexts/" in request.path:
            return await handler(request)  # @context documents are public, no tenant's data
        if _owner_only(request):
            raise NgsiError("Unauthorized", "subscriptions and registrations belong to the tenant's owner: a store "
                            "token valid for this tenant is required", 401, title="Unauthorized")
        if principal == PUBLIC and settings.protect_reads:
            return await handler(request)  # the auth middleware asks for a token
        storage = request.config_dict[STORAGE_KEY]
        reader = ReaderStorage(storage, policies, principal, view if view and view.principal == principal else None)
        bound = READER_STORAGE.set(reader)
        status = 500
        returned = 0
        try:
            response = await handler(request)
            status = response.status
            returned = _returned(response)
            return response
        except NgsiError as exc:
            status = exc.status
            raise
        finally:
            READER_STORAGE.reset(bound)
            try:
                await audit.record(
                    storage, principal=principal, tenant=tenant, method=request.method, path=request.path,
                    query=audit.clean_query(request.query_string, _secrets(settings, policies)), status=status,
                    returned=returned, view=reader.view is not None,
                    retention_days=policies.audit_retention_days,
                )
            except Exception:  # the audit must never break a read; it says so loudly
                log.exception("sharing: the audit record of a read could not be written")

    return middleware


def _owner_only(request: web.Request) -> bool:
    """True for the owner's resources (by the route, so that no id in the path can pass for one)."""
    route = request.match_info.route.resource
    path = route.canonical if route is not None else request.path
    return any(segment in _OWNER_ONLY for segment in path.split("/"))


def _secrets(settings: StoreSettings, policies: Policies) -> list[str]:
    return [*settings.tokens, *(t for ts in settings.tenant_tokens.values() for t in ts),
            *policies.principals.values()]


def _returned(response: web.StreamResponse) -> int:
    """How many entities (or items) a JSON answer holds: list length, GeoJSON features, or 1."""
    if not isinstance(response, web.Response) or response.status >= 300 or not isinstance(response.body, bytes):
        return 0
    try:
        data = codec.loads(response.body)
    except ValueError:
        return 0
    if isinstance(data, list):
        return len(data)
    if isinstance(data, Mapping) and isinstance(data.get("features"), list):
        return len(data["features"])
    return 1
