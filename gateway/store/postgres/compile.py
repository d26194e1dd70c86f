"""Compile a :class:`~gateway.store.records.QuerySpec` to a PostgreSQL ``WHERE`` clause over ``entities e``.

What compiles exactly (entity ids, simple type lists, attribute existence, geometry boxes) decides
alone; the ``q`` expression compiles to necessary conditions (the attributes its terms need, the
numeric comparisons every match satisfies) that GIN indexes answer, and the exact test stays the
spec's Python predicate, the reference semantics shared with SQLite. ``Where.exact`` says whether
the database's answer is final.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.store import query as query_mod
from gateway.store.indexing import ENTITY_KEYS
from gateway.store.records import QuerySpec


@dataclass(slots=True)
class Where:
    """SQL conditions (joined by AND) with their positional parameters."""

    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    geo: str | None = None
    """Conditions on ``geo g`` (the box prefilter): the candidates come from its ids, in id order."""

    def arg(self, value: Any) -> str:
        """Add a parameter; return its placeholder."""
        self.params.append(value)
        return f"${len(self.params)}"

    def sql(self) -> str:
        """The conditions as one SQL expression."""
        return " AND ".join(self.clauses) if self.clauses else "true"

    def source(self, after: str | None = None) -> str:
        """The FROM clause giving ``e`` (with ``after``, a placeholder: only ids above it).

        With a box, the candidates are the distinct ids of the boxes it meets, sorted by id (byte
        order, as ``entities.id``): PostgreSQL can then read the entities of one page in order and
        stop, instead of reading every entity in the box and sorting them.
        """
        if self.geo is None:
            return "entities e"
        above = f' AND g.id COLLATE "C" > {after}' if after is not None else ""
        return (
            f'(SELECT DISTINCT g.id COLLATE "C" AS id FROM geo g WHERE {self.geo}{above}) c '
            "JOIN entities e ON e.id = c.id"
        )


def compile_spec(tenant: str, spec: QuerySpec) -> Where:
    """The WHERE conditions for ``spec`` in ``tenant`` (a superset of the matches when Python must decide)."""
    w = Where()
    tenant_arg = w.arg(tenant)
    w.clauses.append(f"e.tenant = {tenant_arg}")
    if spec.types is not None:
        w.clauses.append(f"e.types && {w.arg(list(spec.types))}::text[]")
    if spec.ids is not None:
        w.clauses.append(f"e.id = ANY({w.arg(list(spec.ids))}::text[])")
    if spec.attrs is not None:
        w.clauses.append(f"e.attrs ?| {w.arg(list(spec.attrs))}::text[]")
    if spec.bbox is not None:
        minlon, minlat, maxlon, maxlat = spec.bbox
        attr = w.arg(spec.geoproperty or "")
        low = f"point({w.arg(float(minlon))}, {w.arg(float(minlat))})"
        high = f"point({w.arg(float(maxlon))}, {w.arg(float(maxlat))})"
        # every column named here is in the GiST index geo_bbox (migration 11): an index-only scan
        w.geo = f"g.tenant = {tenant_arg} AND g.attr = {attr} AND g.bbox && box({low}, {high})"
    for iri, op, numbers in spec.number_filters:
        _number_clause(w, iri, op, numbers)
    if spec.q is not None and spec.expand is not None:
        _q_prefilter(w, spec.q, spec.expand)
    return w


def _number_clause(w: Where, iri: str, op: str, numbers: tuple[float, ...]) -> None:
    """The attribute exists, and a single instance whose value is a number satisfies ``op``.

    Several instances, or a value that is not a number, pass (the Python test decides); CASE keeps
    PostgreSQL from casting a string to a number, which an OR would not guarantee.
    """
    attr = w.arg(iri)
    value = f"(e.doc -> {attr} -> 0 -> 'value')"
    if op == "..":
        test = f"{value}::float8 BETWEEN {w.arg(float(numbers[0]))} AND {w.arg(float(numbers[1]))}"
    elif op == "==":
        test = f"{value}::float8 = ANY({w.arg([float(n) for n in numbers])}::float8[])"
    else:
        test = f"{value}::float8 {op} {w.arg(float(numbers[0]))}"
    w.clauses.append(
        f"(e.doc ? {attr} AND CASE WHEN e.doc -> {attr} -> 1 IS NOT NULL THEN true "
        f"WHEN jsonb_typeof({value}) = 'number' THEN {test} ELSE true END)"
    )


def _q_prefilter(w: Where, expr: query_mod.QExpr, expand: Any) -> None:
    """Necessary conditions of ``q``: every term of a top-level AND but ``!attr`` needs its attribute."""
    root = expr.root
    terms = [root] if isinstance(root, query_mod.Term) else list(root.parts) if root.op == ";" else []
    for term in terms:
        if not isinstance(term, query_mod.Term) or term.op == "!":
            continue
        name = term.path.attr
        if name in query_mod.META_MEMBERS or name in ENTITY_KEYS or name.startswith("@"):
            continue
        # the evaluator finds an attribute under its expanded IRI, or else under the bare term
        names = sorted({expand(name), name})
        w.clauses.append(f"e.attrs ?| {w.arg(names)}::text[]")
