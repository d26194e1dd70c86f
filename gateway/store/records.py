"""The record types the store's backends and handlers exchange, independent of any database.

Documents (``Doc``), changes (``Change``/``Mutation``), their results (``ChangeResult``,
``BatchResult``), commit events (``ChangeEvent``) and queries (``QuerySpec``/``QueryResult``).
:mod:`gateway.store.base` re-exports them, so older imports keep working.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from gateway.store.problems import NgsiError

if TYPE_CHECKING:
    from gateway.store.geo import GeoQuery
    from gateway.store.query import QExpr, ScopeExpr, TypeExpr

Doc = dict[str, Any]
"""An entity in the stored, expanded normalized form."""

Outcome = Literal["created", "updated", "deleted", "unchanged"]
"""What one change did to one entity."""

DEFAULT_TENANT = ""
"""The default tenant (no ``NGSILD-Tenant`` header)."""

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
    remote: bool = False
    """True when another process sharing the database committed it (read back from its change log)."""
    seq: int | None = None
    """Its position in a shared change log (PostgreSQL), which delivery is tracked against; None elsewhere."""


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
    late: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(attribute IRI, instance) pairs for the attribute history only, whatever the outcome (late readings):
    each replaces a stored instance of its series with the same ``observedAt``, as ``append_history``'s do."""


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
    late: int = 0
    """Attribute instances that went to the history only, older than the stored ones (runtime upserts)."""


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
    late: int = 0
    """Attribute instances that went to the history only (see ``Storage.upsert``)."""

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
                out.late += r.late
        return out

    def to_json(self) -> dict[str, Any]:
        """The NGSI-LD BatchOperationResult body (§5.2.16)."""
        return {
            "success": list(self.success),
            "errors": [{"entityId": e.entity_id, "error": e.error.to_problem_details()} for e in self.errors],
        }


@dataclass(frozen=True, slots=True)
class GeoFilter:
    """A parsed geo-query and the expanded IRI of the GeoProperty it tests."""

    geoproperty: str
    query: GeoQuery


@dataclass(frozen=True, slots=True)
class OrderItem:
    """One ``orderBy`` item: an entity member (``id``, ``type``…) or an attribute path, and its direction."""

    member: str | None
    """``id``, ``type``, ``createdAt``, ``modifiedAt`` or ``scope``; None for an attribute path."""
    attr: str | None = None
    """The attribute IRI (None for a member)."""
    subs: tuple[str, ...] = ()
    """Sub-attribute IRIs or meta members (``observedAt``…) below the attribute."""
    descending: bool = False


@dataclass(slots=True)
class QuerySpec:
    """A query over one tenant: prefilters, the parsed expressions, and exact Python closures.

    A backend narrows candidates with what it can compile (``types``, ``ids``, ``attrs``, ``bbox``,
    ``q``, ``geo``…) and, unless it compiled everything exactly, decides with ``type_match``,
    ``predicate`` and ``sort_key``, which are the reference semantics (SQLite evaluates them in process).
    """

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
    # -- the parsed expressions, for backends that compile them (the closures above stay exact) --
    q: QExpr | None = None
    """The parsed ``q`` (§4.9); its terms expand with ``expand``."""
    scope_q: ScopeExpr | None = None
    """The parsed ``scopeQ`` (§4.19)."""
    type_expr: TypeExpr | None = None
    """The parsed ``type`` expression (§4.17); ``types`` lists its expanded names."""
    geo: GeoFilter | None = None
    """The geo-query (§4.10) with its geoproperty expanded."""
    order_by: tuple[OrderItem, ...] = ()
    """The parsed ``orderBy`` (§4.23), items in order."""
    expand: Callable[[str], str] | None = None
    """Expands a term of the request's @context to its IRI (what the expressions need)."""

    def needs_python(self) -> bool:
        """True when some part of the spec is only decided by its Python closures."""
        return (
            self.type_match is not None
            or self.id_pattern is not None
            or self.predicate is not None
            or self.sort_key is not None
        )


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


class SubscriptionRecords(Protocol):
    """Where subscriptions persist: one JSON document (definition and delivery state) per subscription."""

    async def load_all(self) -> list[tuple[str, str, str]]:
        """Every stored subscription as (tenant, id, JSON document)."""
        ...

    async def save(self, tenant: str, sub_id: str, document: str) -> None:
        """Create or replace one subscription's document."""
        ...

    async def delete(self, tenant: str, sub_id: str) -> None:
        """Forget one subscription (nothing when unknown)."""
        ...

    async def close(self) -> None:
        """Release what the records hold (the storage's own connections stay open)."""
        ...


@dataclass(slots=True)
class HistorySlice:
    """Part of a backend's attribute history, in the rows of the SQLite history tables (times in µs).

    The temporal API reads it as it reads the SQLite store's own history, so both backends answer
    alike (``gateway.store.history`` defines the tables).
    """

    entities: list[tuple[str, str, str]] = field(default_factory=list)
    """(tenant, entity id, JSON list of type IRIs)."""
    series: list[tuple[int, str, str, str, str]] = field(default_factory=list)
    """(series id, tenant, entity id, attribute IRI, datasetId or "")."""
    instances: list[tuple[Any, ...]] = field(default_factory=list)
    """(series id, observedAt, createdAt, modifiedAt, kind, number, JSON value, instanceId, JSON extra)."""


@dataclass(frozen=True, slots=True)
class AggregationQuery:
    """An ``aggregatedValues`` read a backend computes itself (§4.5.19; times in µs since the epoch).

    The buckets follow the SQLite history's rules (``gateway.store.history.aggregate``): periods start
    at ``start``, else at each series' first instance in the window, and run to ``end``, else to just
    after its last; only periods holding instances are returned.
    """

    tenant: str
    entity_ids: Sequence[str] | None
    types: Sequence[str] | None
    """Type IRIs (and terms) an entity has one of: the same prefilter as ``history_slice``."""
    attrs: Sequence[str] | None
    dataset_ids: Sequence[str] | None
    """Stored datasetIds ("" for the default instance, the deletion-mark prefix included); None: all."""
    deletions: bool
    column: str
    """The time the window and periods are on: observed_at, created_at or modified_at."""
    start: int | None
    end: int | None
    months: int
    """The calendar part of the period (months); with ``micros`` both 0 for P0D."""
    micros: int
    methods: Sequence[str]


AggregateBucket = tuple[int, int, int, int, int, float, float, Any, Any]
"""(start, end, count, distinctCount, how many numbers, sum, sum of squares, min, max) of one period."""


@dataclass(slots=True)
class HistoryAggregates:
    """A backend's answer to an :class:`AggregationQuery`.

    ``slice`` holds the entities, the series with instances in the window and, per series, its first
    and last instance there (the temporal API reads the span and attribute type from them); ``buckets``
    the computed periods by series id.
    """

    slice: HistorySlice
    buckets: dict[int, list[AggregateBucket]] = field(default_factory=dict)


class HistoryWrites(Protocol):
    """Temporal writes (§5.6.11 to §5.6.15) on a backend's attribute history, and its aggregation."""

    async def aggregate(self, query: AggregationQuery) -> HistoryAggregates:
        """Compute ``aggregatedValues`` in the backend (§4.5.19) rather than from a loaded slice."""
        ...

    async def entity_types(self, tenant: str, entity_id: str) -> list[str] | None:
        """The type IRIs recorded for an entity, or None when it has no history."""
        ...

    async def write(
        self, tenant: str, entity_id: str, types: list[str], rows: Sequence[tuple[str, str, Any, str, Any]]
    ) -> bool:
        """Add instances (an instance sent again for the same observedAt replaces the stored one);
        record the entity's types (merged with those known). True when the entity had no history."""
        ...

    async def delete(self, tenant: str, entity_id: str, attr: str | None = None, dataset_id: str | None = None,
                     *, every_dataset: bool = False) -> bool:
        """Forget an entity's history, or one attribute's (one datasetId, or all); False when there was none."""
        ...

    async def delete_instance(self, tenant: str, entity_id: str, attr: str, instance_id: str) -> bool:
        """Forget one instance; False when unknown."""
        ...

    async def replace_instance(
        self, tenant: str, entity_id: str, attr: str, instance_id: str, instance: Mapping[str, Any]
    ) -> bool:
        """Overwrite one instance (its id and creation time stay); False when unknown."""
        ...


class RegistrationRecords(Protocol):
    """Where a backend persists context source registrations (one JSON document each, per tenant)."""

    async def load(self, tenant: str) -> list[str]:
        """Every registration of a tenant, as JSON documents."""
        ...

    async def get(self, tenant: str, reg_id: str) -> str | None:
        """One registration's JSON document, or None."""
        ...

    async def create(self, tenant: str, reg_id: str, document: str) -> bool:
        """Store a new registration; False when one with that id exists."""
        ...

    async def replace(self, tenant: str, reg_id: str, document: str) -> bool:
        """Replace a registration's document; False when unknown."""
        ...

    async def delete(self, tenant: str, reg_id: str) -> bool:
        """Forget a registration; False when unknown."""
        ...
