"""The storage interface of the embedded NGSI-LD store, independent of the database.

The API and the runtime only see :class:`Storage`. A backend implements a handful of
primitives (:meth:`StorageBase._apply`, ``get_doc``, ``query``…); the NGSI-LD write semantics
(create, upsert, update, merge, replace, delete) are pure functions in
``gateway.store.operations`` that a backend runs inside ONE transaction per batch, so a
PostgreSQL backend can take the same interface later without touching the API.

Stored entities are *expanded normalized* documents (see ``gateway.store.jsonld``): type and
attribute names are IRIs, every attribute is a list of instances, and system attributes
(``createdAt``/``modifiedAt``) are kept on the entity and on every instance.

The runtime writes through the compacted interface::

    storage = await open_storage(data_dir / "store.sqlite")
    result = await storage.upsert("", [entity, ...])          # jonction @context by default
    entity = await storage.get("", "urn:ngsi-ld:Streetlight:1")
    n = await storage.count("", "Streetlight")
    await storage.close()
"""

from __future__ import annotations

import gc
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from gateway.model import Entity
from gateway.store.problems import NgsiError

if TYPE_CHECKING:
    from gateway.store.jsonld import ContextCache

Doc = dict[str, Any]
"""An entity in the stored, expanded normalized form."""

Outcome = Literal["created", "updated", "deleted", "unchanged"]
"""What one change did to one entity."""

DEFAULT_TENANT = ""
"""The default tenant (no ``NGSILD-Tenant`` header)."""

log = logging.getLogger("jonction.store")


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One committed change to one entity, as subscriptions and history see it."""

    tenant: str
    entity_id: str
    entity_type: str
    """The first type IRI of the entity (after the change, or before it for a deletion)."""
    before: Mapping[str, Any] | None
    """The stored document before the change (None when created)."""
    after: Mapping[str, Any] | None
    """The stored document after the change (None when deleted)."""


Listener = Callable[[Sequence[ChangeEvent]], Awaitable[None]]
"""Called after every commit with that commit's events; it must return quickly (queue work)."""


@dataclass(slots=True)
class Mutation:
    """The result of applying one change to the current document of one entity."""

    doc: Doc | None
    """The new document; None deletes the entity."""
    outcome: Outcome
    written: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(attribute IRI, instance) pairs written, for attribute history."""
    not_updated: list[tuple[str, str]] = field(default_factory=list)
    """(attribute IRI, reason) pairs left untouched (PATCH /attrs partial results)."""


Mutator = Callable[[Doc | None, str], Mutation]
"""Pure function: (current document or None, commit time RFC 3339) → Mutation; may raise NgsiError."""


@dataclass(frozen=True, slots=True)
class Change:
    """One requested change: which entity, and the pure function that computes its new state."""

    entity_id: str
    mutate: Mutator


@dataclass(slots=True)
class ChangeResult:
    """What happened to one change of a batch."""

    entity_id: str
    outcome: Outcome | None = None
    error: NgsiError | None = None
    not_updated: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BatchError:
    """One entity of a batch that failed, with its NGSI-LD error."""

    entity_id: str
    error: NgsiError


@dataclass(slots=True)
class BatchResult:
    """Result of a batch write: ids that succeeded (in order) and per-entity errors."""

    success: list[str] = field(default_factory=list)
    errors: list[BatchError] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    """The subset of ``success`` that was created (upsert answers 201 only if all were)."""

    @classmethod
    def from_results(cls, results: Sequence[ChangeResult]) -> BatchResult:
        """Fold per-change results into a batch result."""
        out = cls()
        for r in results:
            if r.error is not None:
                out.errors.append(BatchError(r.entity_id, r.error))
            else:
                out.success.append(r.entity_id)
                if r.outcome == "created":
                    out.created.append(r.entity_id)
        return out

    def to_json(self) -> dict[str, Any]:
        """The NGSI-LD BatchOperationResult body (§5.2.16)."""
        return {
            "success": list(self.success),
            "errors": [{"entityId": e.entity_id, "error": e.error.to_problem_details()} for e in self.errors],
        }


@dataclass(slots=True)
class QuerySpec:
    """A query over one tenant: SQL-able prefilters plus an exact Python predicate."""

    types: Sequence[str] | None = None
    """Entity type IRIs: candidates have at least one of them (prefilter)."""
    type_match: Callable[[Sequence[str]], bool] | None = None
    """Exact type-expression test on an entity's type IRIs (AND, parentheses…)."""
    ids: Sequence[str] | None = None
    id_pattern: str | None = None
    """Regular expression (RE2 syntax, :mod:`gateway.store.patterns`) found somewhere in a matching id."""
    attrs: Sequence[str] | None = None
    """Attribute IRIs: an entity must have at least one of them."""
    bbox: tuple[float, float, float, float] | None = None
    """(min lon, min lat, max lon, max lat) prefilter on ``geoproperty``."""
    geoproperty: str | None = None
    predicate: Callable[[Doc], bool] | None = None
    """Exact test (q, scopeQ, geometry relation) on a candidate document."""
    number_filters: list[tuple[str, str, tuple[float, ...]]] = field(default_factory=list)
    """Optional prefilters ``(attribute IRI, op, numbers)``, op one of ``> >= < <= == ..``: keep the
    entities with an instance whose numeric value satisfies it, or whose value is not a number
    (a superset: ``predicate`` still decides). A backend may ignore them."""
    sort_key: Callable[[Doc], Any] | None = None
    """orderBy: sort the matches by this key instead of by id."""
    sort_reverse: bool = False
    limit: int = 20
    offset: int = 0
    count: bool = False


@dataclass(slots=True)
class QueryResult:
    """One page of a query."""

    docs: list[Doc]
    count: int | None
    """Total matches when ``QuerySpec.count`` was asked."""
    more: bool
    """True when matches exist beyond this page."""


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """Discovery facts about one entity type in one tenant."""

    count: int
    attributes: Mapping[str, frozenset[str]]
    """Attribute IRI → the attribute types (Property, Relationship…) seen."""


class Storage(Protocol):
    """What the API and the runtime need from a store backend."""

    # -- compacted interface (the runtime) -----------------------------------------------
    async def upsert(
        self,
        tenant: str,
        entities: Sequence[Entity],
        *,
        context: str | Sequence[str] | None = None,
        mode: Literal["update", "replace"] = "update",
    ) -> BatchResult:
        """Create or update compacted entities in one transaction (tenant created if needed)."""
        ...

    async def get(self, tenant: str, entity_id: str, context: str | Sequence[str] | None = None) -> Entity | None:
        """One entity compacted with ``context`` (default: the jonction @context), or None."""
        ...

    async def count(self, tenant: str, entity_type: str | None = None) -> int:
        """Number of entities of a tenant (optionally of one type, a term of the jonction context)."""
        ...

    async def close(self) -> None:
        """Flush and release the database."""
        ...

    # -- expanded interface (the API) ----------------------------------------------------
    async def apply(self, tenant: str, changes: Sequence[Change], *, create_tenant: bool = False) -> list[
        ChangeResult
    ]:
        """Apply changes in array order in ONE transaction; per-change errors do not abort."""
        ...

    async def create_entities(self, tenant: str, docs: Sequence[Doc]) -> BatchResult:
        """Batch create (AlreadyExists per duplicate id)."""
        ...

    async def upsert_entities(
        self, tenant: str, docs: Sequence[Doc], *, mode: Literal["update", "replace"] = "replace"
    ) -> BatchResult:
        """Batch upsert: create, or update/replace existing entities."""
        ...

    async def update_entities(self, tenant: str, docs: Sequence[Doc], *, no_overwrite: bool = False) -> BatchResult:
        """Batch update of attributes of existing entities."""
        ...

    async def merge_entities(self, tenant: str, docs: Sequence[Doc]) -> BatchResult:
        """Batch merge-patch of existing entities."""
        ...

    async def replace_entities(self, tenant: str, docs: Sequence[Doc]) -> BatchResult:
        """Batch replace of existing entities."""
        ...

    async def delete_entities(self, tenant: str, ids: Sequence[str]) -> BatchResult:
        """Batch delete."""
        ...

    async def get_doc(self, tenant: str, entity_id: str) -> Doc | None:
        """The stored document of an entity, or None."""
        ...

    async def query(self, tenant: str, spec: QuerySpec) -> QueryResult:
        """One page of the entities matching ``spec``, ordered by id unless sorted."""
        ...

    async def type_info(self, tenant: str) -> dict[str, TypeInfo]:
        """Entity type IRI → discovery facts, for one tenant."""
        ...

    async def tenants(self) -> list[str]:
        """Every tenant that exists (the default one included)."""
        ...

    async def tenant_exists(self, tenant: str) -> bool:
        """True when the tenant exists (the default tenant always does)."""
        ...

    async def ensure_tenant(self, tenant: str) -> None:
        """Create the tenant if it does not exist (creations such as subscriptions do this)."""
        ...

    async def put_context(self, context_id: str, document: Mapping[str, Any]) -> None:
        """Host a JSON-LD context document under ``context_id``."""
        ...

    async def delete_context(self, context_id: str) -> bool:
        """Stop hosting a context; False when unknown."""
        ...

    def hosted_contexts(self) -> Mapping[str, Mapping[str, Any]]:
        """The hosted contexts (id → document), read from memory."""
        ...

    def alias_context(self, url: str, bundled_iri: str) -> None:
        """Resolve ``url`` to the bundled context ``bundled_iri`` (a gateway's own public context URL)."""
        ...

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback`` with the events of every commit, after the commit."""
        ...

    @property
    def contexts(self) -> ContextCache:
        """The @context cache resolving bundled and hosted contexts."""
        ...


class StorageBase(ABC):
    """NGSI-LD batch semantics and the compacted runtime interface over backend primitives."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    # -- primitives ----------------------------------------------------------------------

    @abstractmethod
    async def apply(self, tenant: str, changes: Sequence[Change], *, create_tenant: bool = False) -> list[
        ChangeResult
    ]:
        """Apply changes in array order in ONE transaction; per-change errors do not abort."""

    @abstractmethod
    async def get_doc(self, tenant: str, entity_id: str) -> Doc | None:
        """The stored document of an entity, or None."""

    @abstractmethod
    async def query(self, tenant: str, spec: QuerySpec) -> QueryResult:
        """One page of the entities matching ``spec``."""

    @abstractmethod
    async def count_docs(self, tenant: str, type_iri: str | None = None) -> int:
        """Number of stored entities (of one type IRI)."""

    @abstractmethod
    async def close(self) -> None:
        """Flush and release the database."""

    async def ensure_tenant(self, tenant: str) -> None:
        """Create the tenant if it does not exist (creations such as subscriptions do this)."""
        await self.apply(tenant, [], create_tenant=True)

    # -- listeners -----------------------------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback`` with the events of every commit, after the commit."""
        self._listeners.append(callback)

    async def _notify(self, events: Sequence[ChangeEvent]) -> None:
        if not events:
            return
        for callback in list(self._listeners):
            try:
                await callback(events)
            except Exception:  # a broken listener must never undo or fail a committed write
                log.exception("store change listener failed")

    # -- batch semantics -----------------------------------------------------------------

    async def create_entities(self, tenant: str, docs: Sequence[Doc]) -> BatchResult:
        """Batch create (AlreadyExists per duplicate id)."""
        from gateway.store import operations as ops

        results = await self.apply(tenant, [Change(d["id"], ops.create(d)) for d in docs], create_tenant=True)
        return BatchResult.from_results(results)

    async def upsert_entities(
        self, tenant: str, docs: Sequence[Doc], *, mode: Literal["update", "replace"] = "replace"
    ) -> BatchResult:
        """Batch upsert: create, or update/replace existing entities."""
        from gateway.store import operations as ops

        changes = [Change(d["id"], ops.upsert(d, mode)) for d in docs]
        return BatchResult.from_results(await self.apply(tenant, changes, create_tenant=True))

    async def update_entities(self, tenant: str, docs: Sequence[Doc], *, no_overwrite: bool = False) -> BatchResult:
        """Batch update of attributes of existing entities."""
        from gateway.store import operations as ops

        changes = [Change(d["id"], ops.update_attrs(d, no_overwrite=no_overwrite, strict=False)) for d in docs]
        return BatchResult.from_results(await self.apply(tenant, changes))

    async def merge_entities(self, tenant: str, docs: Sequence[Doc]) -> BatchResult:
        """Batch merge-patch of existing entities."""
        from gateway.store import operations as ops

        return BatchResult.from_results(await self.apply(tenant, [Change(d["id"], ops.merge(d)) for d in docs]))

    async def replace_entities(self, tenant: str, docs: Sequence[Doc]) -> BatchResult:
        """Batch replace of existing entities."""
        from gateway.store import operations as ops

        return BatchResult.from_results(await self.apply(tenant, [Change(d["id"], ops.replace(d)) for d in docs]))

    async def delete_entities(self, tenant: str, ids: Sequence[str]) -> BatchResult:
        """Batch delete."""
        from gateway.store import operations as ops

        return BatchResult.from_results(await self.apply(tenant, [Change(i, ops.delete()) for i in ids]))

    # -- compacted interface (the runtime) -----------------------------------------------

    def _runtime_context(self, context: str | Sequence[str] | None) -> Any:
        from gateway.store import jsonld

        entries: list[jsonld.ContextEntry]
        if context is None:
            entries = [jsonld.jonction_context_iri()]
        elif isinstance(context, str):
            entries = [context]
        else:
            entries = list(context)
        return self.contexts.get(entries)

    @property
    @abstractmethod
    def contexts(self) -> Any:
        """The backend's ``jsonld.ContextCache`` (resolves hosted contexts too)."""

    async def upsert(
        self,
        tenant: str,
        entities: Sequence[Entity],
        *,
        context: str | Sequence[str] | None = None,
        mode: Literal["update", "replace"] = "update",
    ) -> BatchResult:
        """Create or update compacted entities in one transaction (tenant created if needed).

        Entities that do not expand (no URI id, bad attribute…) are reported in ``errors``
        with BadRequestData; the others are written.
        """
        from gateway.store import operations as ops

        ctx = self._runtime_context(context)
        changes: list[Change] = []
        early: dict[int, ChangeResult] = {}
        for i, item in enumerate(entities):
            try:
                doc = ctx.expand_entity(item)
            except NgsiError as exc:
                early[i] = ChangeResult(str(item.get("id", "")) if isinstance(item, Mapping) else "", error=exc)
                continue
            changes.append(Change(doc["id"], ops.upsert(doc, mode)))
        results = await self.apply(tenant, changes, create_tenant=True) if changes else []
        merged: list[ChangeResult] = []
        it = iter(results)
        for i in range(len(entities)):
            merged.append(early[i] if i in early else next(it))
        return BatchResult.from_results(merged)

    async def get(self, tenant: str, entity_id: str, context: str | Sequence[str] | None = None) -> Entity | None:
        """One entity compacted with ``context`` (default: the jonction @context), or None."""
        doc = await self.get_doc(tenant, entity_id)
        if doc is None:
            return None
        compacted: Entity = self._runtime_context(context).compact_entity(doc)
        return compacted

    async def count(self, tenant: str, entity_type: str | None = None) -> int:
        """Number of entities of a tenant (optionally of one type, a term of the jonction context)."""
        type_iri = None if entity_type is None else self._runtime_context(None).expand_term(entity_type)
        return await self.count_docs(tenant, type_iri)


def tune_gc() -> None:
    """Raise the collector's young-generation threshold (700 to 10,000 allocations), once per process.

    A batch upsert allocates many short-lived dicts per entity; with the default threshold,
    CPython spends about half of the batch in the cyclic collector (measured in
    bench/bench_store.py). The store calls this when it opens; it only ever raises thresholds.
    """
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 < 10_000:
        gc.set_threshold(10_000, max(gen1, 50), max(gen2, 100))


async def open_storage(
    path: Path, *, durability: Literal["full", "normal"] = "full", gc_tuning: bool = True
) -> Storage:
    """Open (creating if needed) the SQLite store at ``path`` (usually ``<data>/store.sqlite``).

    ``gc_tuning`` applies :func:`tune_gc` (process-wide; pass False to keep the defaults).
    """
    from gateway.store.sqlite import SqliteStorage

    if gc_tuning:
        tune_gc()
    return await SqliteStorage.open(path, durability=durability)
