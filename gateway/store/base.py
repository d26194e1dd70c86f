"""The storage interface of the embedded NGSI-LD store, independent of the database.

The API and the runtime only see :class:`Storage`. A backend implements a handful of
primitives (:meth:`StorageBase.apply`, ``get_doc``, ``query``…); the NGSI-LD write semantics
(create, upsert, update, merge, replace, delete) are pure functions in
``gateway.store.operations`` that a backend runs inside ONE transaction per batch. The record
types live in :mod:`gateway.store.records`; :mod:`gateway.store.backends` opens a backend from a
URL (SQLite, the embedded default, or PostgreSQL).

Stored entities are *expanded normalized* documents (see ``gateway.store.jsonld``): type and
attribute names are IRIs, every attribute is a list of instances, and system attributes
(``createdAt``/``modifiedAt``) are kept on the entity and on every instance.

The runtime writes through the compacted interface::

    storage = await open_storage("sqlite:///data/store.sqlite")   # gateway.store.backends
    result = await storage.upsert("", [entity, ...])          # jonction @context by default
    entity = await storage.get("", "urn:ngsi-ld:Streetlight:1")
    n = await storage.count("", "Streetlight")
    await storage.close()
"""

from __future__ import annotations

import gc
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from gateway.model import Entity
from gateway.store import history, jsonld
from gateway.store.problems import NgsiError
from gateway.store.records import (
    DEFAULT_TENANT,
    BatchError,
    BatchResult,
    Change,
    ChangeEvent,
    ChangeResult,
    Doc,
    GeoFilter,
    HistorySlice,
    HistoryWrites,
    Listener,
    Mutation,
    Mutator,
    OrderItem,
    Outcome,
    QueryResult,
    QuerySpec,
    SubscriptionRecords,
    TypeInfo,
)

if TYPE_CHECKING:
    from gateway.store.jsonld import ContextCache

__all__ = [
    "DEFAULT_TENANT",
    "BatchError",
    "BatchResult",
    "Change",
    "ChangeEvent",
    "ChangeResult",
    "Doc",
    "GeoFilter",
    "HistorySlice",
    "HistoryWrites",
    "Listener",
    "Mutation",
    "Mutator",
    "OrderItem",
    "Outcome",
    "QueryResult",
    "QuerySpec",
    "Storage",
    "StorageBase",
    "SubscriptionRecords",
    "TypeInfo",
    "tune_gc",
]

log = logging.getLogger("jonction.store")


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

    async def append_history(
        self, tenant: str, entities: Sequence[Entity], *, context: str | Sequence[str] | None = None
    ) -> BatchResult:
        """Add compacted entities' attribute instances to their temporal evolution only."""
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

    async def start(self) -> None:
        """Open the database: create or migrate its tables, load tenants and hosted contexts (idempotent)."""
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

    def subscription_records(self) -> SubscriptionRecords | None:
        """Where this backend persists subscriptions; None: the subscriptions keep their own SQLite table."""
        ...

    def delivers_notifications(self) -> bool:
        """True when this process sends the notifications (one process among those sharing a database)."""
        ...

    async def history_slice(
        self, tenant: str, entity_ids: Sequence[str] | None, start: int | None, end: int | None,
        *, types: Sequence[str] | None = None,
    ) -> HistorySlice | None:
        """The history of some entities (all: None) with ``start <= time < end`` (µs; None: open), for the
        temporal API's reads; None when the temporal API reads the backend's own SQLite history."""
        ...

    def history_writes(self) -> HistoryWrites | None:
        """The temporal writes on this backend's history; None: the temporal API writes the SQLite file."""
        ...


_HOSTED = re.compile(r"/ngsi-ld/v1/jsonldContexts/([^/?#]+)$")
"""The id of a context hosted by the store, from its URL."""


class StorageBase(ABC):
    """NGSI-LD batch semantics and the compacted runtime interface over backend primitives."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        # Hosted contexts (id -> document, loaded and persisted by the backend) and aliases of
        # announced context URLs; the same resolution on every backend.
        self._hosted: dict[str, dict[str, Any]] = {}
        self._aliases: dict[str, str] = {}
        self._contexts = jsonld.ContextCache(self._resolve_hosted)

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

    @abstractmethod
    async def start(self) -> None:
        """Open the database: create or migrate its tables, load tenants and hosted contexts (idempotent)."""

    async def ensure_tenant(self, tenant: str) -> None:
        """Create the tenant if it does not exist (creations such as subscriptions do this)."""
        await self.apply(tenant, [], create_tenant=True)

    def subscription_records(self) -> SubscriptionRecords | None:
        """Where this backend persists subscriptions; None: the subscriptions keep their own SQLite table."""
        return None

    def delivers_notifications(self) -> bool:
        """True when this process sends the notifications (a single-process backend always does)."""
        return True

    async def history_slice(
        self, tenant: str, entity_ids: Sequence[str] | None, start: int | None, end: int | None,
        *, types: Sequence[str] | None = None,
    ) -> HistorySlice | None:
        """None: the temporal API reads the history tables of the SQLite file itself."""
        return None

    def history_writes(self) -> HistoryWrites | None:
        """None: the temporal API writes the history tables of the SQLite file itself."""
        return None

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
    def contexts(self) -> jsonld.ContextCache:
        """Contexts cache resolving bundled and hosted contexts."""
        return self._contexts

    def _resolve_hosted(self, iri: str) -> Mapping[str, Any] | None:
        if iri in self._aliases:
            return jsonld.bundled(self._aliases[iri])
        match = _HOSTED.search(iri)
        if match is None:
            return None
        return self._hosted.get(match.group(1))

    def hosted_contexts(self) -> Mapping[str, Mapping[str, Any]]:
        """The hosted contexts (id → document)."""
        return dict(self._hosted)

    def alias_context(self, url: str, bundled_iri: str) -> None:
        """Resolve ``url`` to the bundled context ``bundled_iri``, never fetching it."""
        self._aliases[url] = bundled_iri
        self._contexts.clear()

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
        with BadRequestData; the others are written. With ``mode="update"``, an entity sent again
        exactly as stored (``observedAt`` included) is left alone: no history instance, no
        notification (a redelivered reading is not a new observation).

        Also with ``mode="update"``, an older observation never overwrites a newer one, checked in
        the write transaction against the stored state (so it holds across several gateway
        instances sharing one store, which a publisher's own record of what it sent cannot see):
        an attribute instance whose ``observedAt`` is strictly older than the stored one (same
        attribute, same datasetId) is added to the temporal history only, as
        :meth:`append_history` adds it, and the other attributes are applied. An entity with only
        late attributes is ``unchanged`` (no notification) but its history grows. Without
        ``observedAt`` on either side, the last write wins. See ``operations.upsert``; the API's
        batch upsert (:meth:`upsert_entities`) does not apply this guard.
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
            changes.append(Change(doc["id"], ops.upsert(doc, mode, skip_unchanged=True)))
        results = await self.apply(tenant, changes, create_tenant=True) if changes else []
        merged: list[ChangeResult] = []
        it = iter(results)
        for i in range(len(entities)):
            merged.append(early[i] if i in early else next(it))
        return BatchResult.from_results(merged)

    async def append_history(
        self, tenant: str, entities: Sequence[Entity], *, context: str | Sequence[str] | None = None
    ) -> BatchResult:
        """Add compacted entities' attribute instances to their temporal evolution only.

        What ``POST /temporal/entities/{id}/attrs`` does (§6.20.3.1), for the runtime's late
        readings: the current state is untouched and nothing is notified (no entity changed). An
        instance sent again for the same observedAt replaces the stored one, so a retry doubles
        nothing. Entities that do not expand are reported in ``errors`` with BadRequestData.
        """
        ctx = self._runtime_context(context)
        now = history.from_micros(history.now_micros())
        results: list[ChangeResult] = []
        rows: list[history.HistoryRow] = []
        for item in entities:
            entity_id = item.get("id") if isinstance(item, Mapping) else None
            try:
                if not isinstance(entity_id, str) or not entity_id:
                    raise NgsiError("BadRequestData", "/id: the entity id is missing")
                rows.extend(history.temporal_rows(ctx, tenant, item, entity_id, None, now)[1])
            except NgsiError as exc:
                results.append(ChangeResult(str(entity_id or ""), error=exc))
                continue
            results.append(ChangeResult(entity_id, "updated"))
        if rows:
            await self._write_history(tenant, rows)
        return BatchResult.from_results(results)

    async def _write_history(self, tenant: str, rows: Sequence[history.HistoryRow]) -> None:
        """Append history rows through the backend's temporal writes (one call per entity)."""
        writes = self.history_writes()
        if writes is None:
            raise NgsiError("NotImplemented", "history-only writes are not implemented on this store backend")
        by_entity: dict[str, list[history.HistoryRow]] = {}
        for row in rows:
            by_entity.setdefault(row[1], []).append(row)
        for entity_id, own in by_entity.items():
            types = own[0][2]
            await writes.write(tenant, entity_id, [types] if isinstance(types, str) else list(types), own)

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
