"""Our RFC 7946 shapes and the validator's GeoProperty check agree with the GeoJSON fixture suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import schemas
from gateway.validation import validate
from tests.conftest import REFERENCE

FIXTURES = REFERENCE / "geojson-fixtures"
GEOMETRIES = ("point", "multipoint", "linestring", "multilinestring", "polygon", "multipolygon", "geometrycollection")
CASES = sorted(
    (path.parent.parent.name == "valid", path)
    for kind in GEOMETRIES
    for path in FIXTURES.glob(f"*/{kind}/*.json")
)
ANY_GEOMETRY = {"$ref": "https://jonction.eu/schemas/models/common.schema.json#/$defs/AnyGeometry"}


def _entity(geometry: Any) -> dict[str, Any]:
    return {"id": "urn:ngsi-ld:Thing:g", "type": "Thing", "where": {"type": "GeoProperty", "value": geometry}}


def test_fixture_suite_is_there() -> None:
    assert len(CASES) >= 40


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
