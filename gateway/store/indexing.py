"""What every store backend derives from a stored document: index rows, attribute summaries, sort keys.

Pure functions shared by the SQLite and PostgreSQL backends, so both index and order the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.store.operations import attr_names
from gateway.store.query import OrderKey
from gateway.store.records import Doc

ENTITY_KEYS = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})
"""Members of a stored document that are not attributes."""



def _bbox(geometry: Any) -> tuple[float, float, float, float] | None:
    """(min lon, min lat, max lon, max lat) of a GeoJSON geometry, or None."""
    xs: list[float] = []
    ys: list[float] = []

    def walk(coords: Any) -> None:
        if isinstance(coords, list) and coords and isinstance(coords[0], int | float):
            xs.append(float(coords[0]))
            ys.append(float(coords[1]))
        elif isinstance(coords, list):
            for c in coords:
                walk(c)

    if not isinstance(geometry, Mapping):
        return None
    if geometry.get("type") == "GeometryCollection":
        for g in geometry.get("geometries") or []:
            box = _bbox(g)
            if box:
                xs.extend((box[0], box[2]))
                ys.extend((box[1], box[3]))
    else:
        walk(geometry.get("coordinates"))
    if not xs:
        return None
    return min(xs), min(ys), max(xs), max(ys)


def geo_values(doc: Doc) -> list[tuple[str, Any]]:
    """(attribute IRI, GeoJSON value) of every GeoProperty instance, cheap to compare."""
    return [
        (name, inst.get("value"))
        for name, insts in doc.items()
        if name not in ENTITY_KEYS
        for inst in insts
        if inst.get("type") == "GeoProperty"
    ]


def geo_boxes(doc: Doc) -> list[tuple[str, float, float, float, float]]:
    """(attribute IRI, min lon, min lat, max lon, max lat) for every GeoProperty instance."""
    out = []
    for name in attr_names(doc):
        for inst in doc[name]:
            if inst.get("type") == "GeoProperty":
                box = _bbox(inst.get("value"))
                if box is not None:
                    out.append((name, *box))
    return out


def attr_summary(doc: Doc) -> dict[str, list[str]]:
    """Attribute IRI → attribute types, kept beside the document for discovery."""
    out: dict[str, list[str]] = {}
    for name, insts in doc.items():
        if name in ENTITY_KEYS:
            continue
        out[name] = [str(insts[0].get("type"))] if len(insts) == 1 else sorted({str(i.get("type")) for i in insts})
    return out


class SortKey:
    """Total order over JSON values for orderBy: missing < numbers < strings < others."""

    __slots__ = ("rank", "value")

    def __init__(self, value: Any) -> None:
        self.rank: int
        self.value: Any
        if value is None:
            self.rank, self.value = 0, 0
        elif isinstance(value, OrderKey):  # a multi-item orderBy compares itself
            self.rank, self.value = 4, value
        elif isinstance(value, bool):
            self.rank, self.value = 1, int(value)
        elif isinstance(value, int | float):
            self.rank, self.value = 1, value
        elif isinstance(value, str):
            self.rank, self.value = 2, value
        else:
            self.rank, self.value = 3, json.dumps(value, sort_keys=True)

    def __lt__(self, other: SortKey) -> bool:
        if self.rank != other.rank:
            return self.rank < other.rank
        return bool(self.value < other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SortKey) and (self.rank, self.value) == (other.rank, other.value)

    __hash__ = None  # type: ignore[assignment]
