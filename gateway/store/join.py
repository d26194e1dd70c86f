"""Linked entity retrieval: ``join=inline|flat`` and ``joinLevel`` (ETSI GS CIM 009 V1.9.1 §4.5.23).

One function, :func:`join_entities`, serves every reader: given the stored documents to answer
with, the render options of the request and a ``fetch`` callable that loads stored documents by
id, it follows the Relationships of the rendered entities level by level and returns either one
inline tree per entity (the linked entity under the relationship's ``entity`` member, or in place of
the relationship in keyValues) or the flat list (the entities, then every linked entity once).
It does no I/O of its own, so the notification code can reuse it with its own ``fetch``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from gateway import model
from gateway.store.base import Doc
from gateway.store.jsonld import Context
from gateway.store.problems import NgsiError, bad_request
from gateway.store.representation import RenderOptions, render

JoinMode = Literal["inline", "flat"]
Fetch = Callable[[Sequence[str]], Awaitable[Mapping[str, Doc]]]
"""Loads stored (expanded) documents by entity id; ids that do not exist are simply absent."""

MAX_JOIN_LEVEL: Final = 8
"""Deepest ``joinLevel`` accepted (deeper is TooComplexQuery)."""
MAX_LINKED: Final = 1000
"""Most linked entities one answer may carry (more is TooManyResults)."""


def parse_join(join: Any, join_level: Any) -> tuple[JoinMode, int] | None:
    """``join`` / ``joinLevel`` (strings from a query, or JSON values from a Query body) → (mode, level).

    None when no join is asked (``join`` absent, or ``@none``); ``joinLevel`` defaults to 1.
    """
    if join is None or join == "@none":
        if join_level is not None:
            _level(join_level)  # still validated: a bad value is a bad request either way
        return None
    if join not in ("inline", "flat"):
        raise bad_request(f"join must be inline, flat or @none, got {join!r}")
    return join, (_level(join_level) if join_level is not None else 1)


def _level(value: Any) -> int:
    if isinstance(value, bool):
        raise bad_request("joinLevel must be a positive integer")
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 3:
            raise bad_request(f"joinLevel must be a positive integer, got {value!r}")
        value = int(value)
    if not isinstance(value, int) or value < 1:
        raise bad_request(f"joinLevel must be a positive integer, got {value!r}")
    if value > MAX_JOIN_LEVEL:
        raise NgsiError("TooComplexQuery", f"joinLevel above {MAX_JOIN_LEVEL}")
    return value


@dataclass(slots=True)
class _Node:
    """A rendered (normalized, compacted) entity and, per relationship instance, what it links to."""

    entity: dict[str, Any]
    links: dict[tuple[str, int], list[_Node]] = field(default_factory=dict)
    """(attribute name, instance index) → linked entities, in the order of the objects."""


def _relationships(entity: Mapping[str, Any]) -> list[tuple[str, int, list[str]]]:
    """(attribute name, instance index, target ids) of every Relationship/ListRelationship instance."""
    out: list[tuple[str, int, list[str]]] = []
    for name, value in entity.items():
        if name in ("id", "type", "scope", "@context"):
            continue
        instances = value if isinstance(value, list) else [value]
        for index, inst in enumerate(instances):
            if not isinstance(inst, Mapping):
                continue
            kind = inst.get("type")
            if kind == "Relationship":
                target = inst.get("object")
                ids = [target] if isinstance(target, str) else [t for t in target or [] if isinstance(t, str)]
            elif kind == "ListRelationship":
                targets = inst.get("objectList") or []
                listed = [t.get("object") if isinstance(t, Mapping) else t for t in targets]
                ids = [t for t in listed if isinstance(t, str)]
            else:
                continue
            if ids:
                out.append((name, index, ids))
    return out


async def join_entities(
    docs: Sequence[Doc],
    ctx: Context,
    opts: RenderOptions,
    fetch: Fetch,
    mode: JoinMode,
    level: int,
    *,
    rendered: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Render ``docs`` with the entities their relationships link to, ``level`` relationships deep.

    inline → one tree per document, in order; flat → the documents, then each linked entity once
    (an entity already in the answer is not repeated). Pick/omit sub-projections
    (``locatedAt{id,name}``) apply to the entities reached through that relationship; the
    representation (``opts.form``), sysAttrs and lang apply to all. Entities that do not exist
    are left out; the relationship stays as it is. ``rendered``, when given, replaces ``docs``: the
    entities already rendered (normalized, with ``opts``), as notifications carry them with their
    deleted attributes and previous values.
    """
    normalized = replace(opts, form="normalized")
    if rendered is not None:
        roots = [_Node(entity) for entity in rendered]
    else:
        roots = [_Node(render(doc, ctx, normalized)) for doc in docs]
    frontier: list[tuple[_Node, RenderOptions]] = [(node, normalized) for node in roots]
    cache: dict[str, Doc | None] = {}
    flat_order: list[_Node] = []
    seen_ids = {str(node.entity.get("id")) for node in roots}
    total = 0
    for _ in range(level):
        wanted: list[tuple[_Node, str, int, list[str], RenderOptions]] = []
        missing: list[str] = []
        for node, node_opts in frontier:
            for name, index, ids in _relationships(node.entity):
                child_opts = node_opts.for_link(name, ctx.expand_term)
                wanted.append((node, name, index, ids, child_opts))
                missing.extend(i for i in ids if i not in cache)
        if not wanted:
            break
        missing = list(dict.fromkeys(missing))
        total += len(missing)
        if total > MAX_LINKED:
            raise NgsiError("TooManyResults", f"join would return more than {MAX_LINKED} linked entities")
        if missing:
            found = await fetch(missing)
            for entity_id in missing:
                cache[entity_id] = found.get(entity_id)
        next_frontier: list[tuple[_Node, RenderOptions]] = []
        for node, name, index, ids, child_opts in wanted:
            children: list[_Node] = []
            for entity_id in ids:
                doc = cache.get(entity_id)
                if doc is None:
                    continue
                child = _Node(render(doc, ctx, child_opts))
                children.append(child)
                next_frontier.append((child, child_opts))
                if entity_id not in seen_ids:
                    seen_ids.add(entity_id)
                    flat_order.append(child)
            if children:
                node.links[(name, index)] = children
        frontier = next_frontier
    if mode == "inline":
        return [_inline(node, opts.form) for node in roots]
    return [_project(node.entity, opts.form) for node in (*roots, *flat_order)]


def _project(entity: dict[str, Any], form: str) -> dict[str, Any]:
    if form == "keyValues":
        return model.to_key_values(entity)
    if form == "concise":
        return model.to_concise(entity)
    return entity


def _inline(node: _Node, form: str) -> dict[str, Any]:
    """The node in ``form`` with its linked entities nested (``entity`` member, or the value in keyValues)."""
    out = _project(node.entity, form)
    for (name, index), children in node.links.items():
        nested = [_inline(child, form) for child in children]
        linked: Any = nested[0] if len(nested) == 1 else nested
        value: Any = out.get(name)
        multi = isinstance(value, list) and isinstance(node.entity.get(name), list)
        if form == "keyValues":
            if multi:
                value[index] = linked
            else:
                out[name] = linked
            continue
        inst = value[index] if multi else value
        if isinstance(inst, dict):
            inst["entity"] = linked
        else:  # a concise Relationship is never a bare value, but keep the link visible if it were
            replacement = {"object": inst, "entity": linked}
            if multi:
                value[index] = replacement
            else:
                out[name] = replacement
    return out
