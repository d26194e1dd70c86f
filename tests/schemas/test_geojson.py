"""Our RFC 7946 shapes and the validator's GeoProperty check agree: on our own cases, and (where
../shared is present) with the upstream GeoJSON fixture suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import schemas
from gateway.validation import validate
from tests.conftest import REFERENCE, needs_shared, shared_params

FIXTURES = REFERENCE / "geojson-fixtures"
GEOMETRIES = ("point", "multipoint", "linestring", "multilinestring", "polygon", "multipolygon", "geometrycollection")


def _fixture_cases() -> list[tuple[bool, Path]]:
    return sorted(
        (path.parent.parent.name == "valid", path)
        for kind in GEOMETRIES
        for path in FIXTURES.glob(f"*/{kind}/*.json")
    )


CASES = shared_params(_fixture_cases, arity=2)
_RING = [[2.0, 48.0], [2.1, 48.0], [2.1, 48.1], [2.0, 48.1], [2.0, 48.0]]
_HOLE = [[2.02, 48.02], [2.08, 48.02], [2.08, 48.08], [2.02, 48.02]]
OWN_CASES: list[tuple[bool, str, Any]] = [
    # Written from RFC 7946 §3.1: positions of 2 or 3 numbers, lines of 2+ positions, closed rings of 4+.
    (True, "point", {"type": "Point", "coordinates": [-1.55, 47.21]}),
    (True, "point with altitude", {"type": "Point", "coordinates": [-1.55, 47.21, 12.5]}),
    (True, "multipoint", {"type": "MultiPoint", "coordinates": [[2.0, 48.0], [2.1, 48.1]]}),
    (True, "linestring", {"type": "LineString", "coordinates": [[2.0, 48.0], [2.1, 48.1]]}),
    (True, "multilinestring", {"type": "MultiLineString", "coordinates": [[[2.0, 48.0], [2.1, 48.1]]]}),
    (True, "polygon", {"type": "Polygon", "coordinates": [_RING]}),
    (True, "polygon with a hole", {"type": "Polygon", "coordinates": [_RING, _HOLE]}),
    (True, "multipolygon", {"type": "MultiPolygon", "coordinates": [[_RING], [_RING, _HOLE]]}),
    (True, "geometrycollection", {"type": "GeometryCollection", "geometries": [
        {"type": "Point", "coordinates": [2.0, 48.0]},
        {"type": "LineString", "coordinates": [[2.0, 48.0], [2.1, 48.1]]}]}),
    (False, "point with one number", {"type": "Point", "coordinates": [2.0]}),
    (False, "point as text", {"type": "Point", "coordinates": ["2.0", "48.0"]}),
    (False, "point without coordinates", {"type": "Point"}),
    (False, "linestring of one position", {"type": "LineString", "coordinates": [[2.0, 48.0]]}),
    (False, "polygon ring of three positions", {"type": "Polygon", "coordinates": [_RING[:2] + _RING[-1:]]}),
    (False, "multipoint of bare numbers", {"type": "MultiPoint", "coordinates": [2.0, 48.0]}),
    (False, "unknown geometry type", {"type": "Circle", "coordinates": [2.0, 48.0]}),
    (False, "collection without geometries", {"type": "GeometryCollection"}),
]
"""Our own cases, one or more per geometry kind; the project tests itself without the fixture suite.
(An unclosed ring, which JSON Schema cannot express, is test_unclosed_ring_is_named.)"""
ANY_GEOMETRY = {"$ref": "https://jonction.eu/schemas/models/common.schema.json#/$defs/AnyGeometry"}


def _entity(geometry: Any) -> dict[str, Any]:
    return {"id": "urn:ngsi-ld:Thing:g", "type": "Thing", "where": {"type": "GeoProperty", "value": geometry}}


@needs_shared
def test_fixture_suite_is_there() -> None:
    assert len(_fixture_cases()) >= 40


@pytest.mark.parametrize(("valid", "label", "geometry"), OWN_CASES, ids=[c[1] for c in OWN_CASES])
def test_schema_and_validator_agree_on_our_cases(valid: bool, label: str, geometry: Any) -> None:
    assert (schemas.check_document(ANY_GEOMETRY, geometry) == []) is valid, label
    verdict = validate(_entity(geometry))
    assert verdict.valid is valid, verdict.errors
    if not valid:
        assert verdict.errors and all(p.pointer.startswith("/where/value") for p in verdict.errors)


@pytest.mark.parametrize(("valid", "path"), CASES, ids=lambda v: v.parent.name + "/" + v.name if isinstance(v, Path)
                         else str(v))
def test_schema_and_validator_agree_with_fixture(valid: bool, path: Path) -> None:
    geometry = json.loads(path.read_text(encoding="utf-8"))
    assert (schemas.check_document(ANY_GEOMETRY, geometry) == []) is valid
    verdict = validate(_entity(geometry))
    assert verdict.valid is valid, verdict.errors
    if not valid:
        assert all(p.pointer.startswith("/where/value") for p in verdict.errors)


def test_unclosed_ring_is_named() -> None:
    ring = [[2.0, 48.0], [2.1, 48.0], [2.1, 48.1], [2.0, 48.1]]
    verdict = validate(_entity({"type": "Polygon", "coordinates": [ring]}))
    assert [(p.pointer, p.rule) for p in verdict.errors] == [("/where/value/coordinates/0", "geojson-ring")]
