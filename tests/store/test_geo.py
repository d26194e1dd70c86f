"""Geo-queries (§4.10): parameter validation, predicates, distances and the index prefilter box."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from gateway.store.geo import GeoQueryError, geojson_shape, haversine, parse_geo_query
from tests.conftest import REFERENCE, shared_params

SQUARE = [[[4.80, 45.70], [4.90, 45.70], [4.90, 45.80], [4.80, 45.80], [4.80, 45.70]]]
"""A 0.1° square around Lyon's centre."""
SQUARE_WITH_HOLE = [SQUARE[0], [[4.84, 45.74], [4.86, 45.74], [4.86, 45.76], [4.84, 45.76], [4.84, 45.74]]]


def pt(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def line(*coords: tuple[float, float]) -> dict[str, Any]:
    return {"type": "LineString", "coordinates": [list(c) for c in coords]}


def poly(rings: list[list[list[float]]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": rings}


@pytest.mark.parametrize(
    ("georel", "geometry", "coords", "target", "expected"),
    [
        ("within", "Polygon", SQUARE, pt(4.85, 45.75), True),
        ("within", "Polygon", SQUARE, pt(4.95, 45.75), False),
        ("within", "Polygon", SQUARE, pt(4.80, 45.75), True),  # on the boundary
        ("within", "Polygon", SQUARE_WITH_HOLE, pt(4.85, 45.75), False),  # in the hole
        ("within", "Polygon", SQUARE_WITH_HOLE, pt(4.82, 45.75), True),
        ("within", "Polygon", SQUARE, line((4.81, 45.71), (4.89, 45.79)), True),
        ("within", "Polygon", SQUARE, line((4.81, 45.71), (4.99, 45.79)), False),
        ("within", "Polygon", SQUARE_WITH_HOLE, line((4.83, 45.75), (4.87, 45.75)), False),  # crosses the hole
        ("within", "Polygon", SQUARE, poly([[[4.81, 45.71], [4.82, 45.71], [4.82, 45.72], [4.81, 45.71]]]), True),
        ("within", "Polygon", SQUARE, poly(SQUARE), True),
        ("contains", "Point", [4.85, 45.75], poly(SQUARE), True),
        ("contains", "Point", [5.85, 45.75], poly(SQUARE), False),
        ("contains", "Polygon", SQUARE, poly(SQUARE), True),
        ("intersects", "Polygon", SQUARE, line((4.70, 45.75), (4.85, 45.75)), True),
        ("intersects", "Polygon", SQUARE, line((4.70, 45.75), (4.75, 45.75)), False),
        ("intersects", "LineString", [[4.70, 45.60], [5.00, 45.90]], line((4.70, 45.90), (5.00, 45.60)), True),
        ("intersects", "LineString", [[4.70, 45.60], [5.00, 45.90]], line((4.70, 45.61), (4.80, 45.71)), False),
        ("intersects", "Polygon", SQUARE, poly([[[4.7, 45.6], [5.0, 45.6], [5.0, 45.9], [4.7, 45.9], [4.7, 45.6]]]),
         True),  # the square lies inside the target: no edge crosses, still intersects
        ("intersects", "Point", [4.90, 45.75], poly(SQUARE), True),
        ("intersects", "MultiPoint", [[0, 0], [4.85, 45.75]], poly(SQUARE), True),
        ("disjoint", "Polygon", SQUARE, pt(4.95, 45.75), True),
        ("disjoint", "Polygon", SQUARE, pt(4.85, 45.75), False),
        ("equals", "Point", [4.85, 45.75], pt(4.85, 45.75), True),
        ("equals", "Point", [4.85, 45.75], pt(4.85, 45.76), False),
        ("equals", "Polygon", SQUARE,
         poly([[[4.90, 45.70], [4.90, 45.80], [4.80, 45.80], [4.80, 45.70], [4.90, 45.70]]]), True),
        ("overlaps", "Polygon", SQUARE,
         poly([[[4.85, 45.75], [4.95, 45.75], [4.95, 45.85], [4.85, 45.85], [4.85, 45.75]]]), True),
        ("overlaps", "Polygon", SQUARE, poly(SQUARE), False),
        ("within", "MultiPolygon", [SQUARE, [[[0, 0], [1, 0], [1, 1], [0, 0]]]], pt(0.6, 0.3), True),
        ("within", "Polygon", SQUARE, {"type": "GeometryCollection", "geometries": [pt(4.81, 45.71), pt(4.82, 45.72)]},
         True),
        ("within", "Polygon", SQUARE, {"type": "Point"}, False),  # unusable target never matches
        ("within", "Polygon", SQUARE, "not a geometry", False),
    ],
)
def test_predicates(georel: str, geometry: str, coords: Any, target: Any, expected: bool) -> None:
    query = parse_geo_query(georel, geometry, json.dumps(coords))
    assert query.matches(target) is expected


def test_haversine_known_distance() -> None:
    # Paris (Notre-Dame) to Lyon (Bellecour): about 392 km great-circle
    d = haversine((2.3499, 48.8530), (4.8320, 45.7578))
    assert 390_000 < d < 394_000
    # one degree of latitude is about 111.2 km everywhere
    assert abs(haversine((4.0, 45.0), (4.0, 46.0)) - 111_195) < 50


def test_near_max_and_min_distance() -> None:
    centre = [4.85, 45.75]
    north_500m = pt(4.85, 45.75 + 500 / 111_195)
    north_2km = pt(4.85, 45.75 + 2000 / 111_195)
    near = parse_geo_query("near;maxDistance==1000", "Point", json.dumps(centre))
    assert near.matches(north_500m) and not near.matches(north_2km)
    assert abs(near.distance(north_500m) - 500) < 1
    far = parse_geo_query("near;minDistance==1000", "Point", centre)
    assert far.matches(north_2km) and not far.matches(north_500m)
    assert far.bbox() is None


def test_near_distance_to_lines_and_polygons() -> None:
    near = parse_geo_query("near;maxDistance==100", "Point", "[4.85, 45.75]")
    # a street passing 50 m east of the point, running north-south
    dlon = 50 / (111_195 * math.cos(math.radians(45.75)))
    street = line((4.85 + dlon, 45.74), (4.85 + dlon, 45.76))
    assert abs(near.distance(street) - 50) < 1
    assert near.matches(street)
    assert near.distance(poly(SQUARE)) == 0.0  # inside the polygon


def test_ordering_by_distance() -> None:
    near = parse_geo_query("near;maxDistance==5000", "Point", "[4.85,45.75]")
    targets = [pt(4.86, 45.75), pt(4.85, 45.75), pt(4.88, 45.75)]
    assert sorted(targets, key=near.distance) == [targets[1], targets[0], targets[2]]


def test_bbox_prefilter_contains_every_match() -> None:
    near = parse_geo_query("near;maxDistance==1000", "Point", "[4.85,45.75]")
    box = near.bbox()
    assert box is not None
    min_lon, min_lat, max_lon, max_lat = box
    assert min_lat < 45.75 - 1000 / 111_195 and max_lat > 45.75 + 1000 / 111_195
    east = 1000 / (111_195 * math.cos(math.radians(45.75)))
    assert min_lon < 4.85 - east and max_lon > 4.85 + east
    assert parse_geo_query("within", "Polygon", json.dumps(SQUARE)).bbox() == (4.80, 45.70, 4.90, 45.80)
    assert parse_geo_query("disjoint", "Polygon", json.dumps(SQUARE)).bbox() is None


@pytest.mark.parametrize(
    ("georel", "geometry", "coords", "fragment"),
    [
        (None, "Point", "[1,2]", "missing: georel"),
        ("near", "Point", "[1,2]", "maxDistance"),
        ("near;maxDistance==abc", "Point", "[1,2]", "maxDistance"),
        ("near;distance==5", "Point", "[1,2]", "maxDistance"),
        ("around", "Point", "[1,2]", "is not one of"),
        ("within", "Circle", "[1,2]", "geometry 'Circle'"),
        ("within", "Point", "[1,", "not a JSON array"),
        ("within", "Point", "[200,2]", "outside WGS84"),
        ("within", "Point", "[1]", "a position is"),
        ("within", "Point", '["a","b"]', "a position is"),
        ("within", "LineString", "[[1,2]]", "at least 2 positions"),
        ("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,1]]]", "must be closed"),
        ("within", "Polygon", "[[[0,0],[1,0],[0,0]]]", "at least 4 positions"),
        ("within", "Polygon", "[]", "non-empty array"),
        ("within", "MultiPolygon", "[]", "non-empty array"),
        ("within", "Point", "", "missing: coordinates"),
    ],
)
def test_invalid_geo_queries(georel: str | None, geometry: str, coords: str, fragment: str) -> None:
    with pytest.raises(GeoQueryError) as caught:
        parse_geo_query(georel, geometry, coords)
    assert fragment in str(caught.value)
    assert caught.value.status == 400 and caught.value.type == "BadRequestData"


def test_geoproperty_is_kept() -> None:
    query = parse_geo_query("within", "Polygon", json.dumps(SQUARE), "observationSpace")
    assert query.geoproperty == "observationSpace"
    assert parse_geo_query("within", "Polygon", json.dumps(SQUARE), None).geoproperty == "location"


GEOMETRY_FOLDERS = ("point", "multipoint", "linestring", "multilinestring", "polygon", "multipolygon",
                    "geometrycollection")


def _fixtures(kind: str) -> list[Path]:
    root = REFERENCE / "geojson-fixtures" / kind
    return sorted(p for folder in GEOMETRY_FOLDERS for p in (root / folder).glob("*.json"))


@pytest.mark.parametrize("path", shared_params(lambda: _fixtures("valid")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}" if p else "shared-absent")
def test_valid_upstream_geometries_are_usable_and_equal_themselves(path: Path) -> None:
    geometry = json.loads(path.read_text(encoding="utf-8"))
    shape = geojson_shape(geometry)
    assert shape is not None and shape.vertices()
    if geometry["type"] != "GeometryCollection":
        query = parse_geo_query("equals", geometry["type"], json.dumps(geometry["coordinates"]))
        assert query.matches(geometry)
        assert parse_geo_query("intersects", geometry["type"], geometry["coordinates"]).matches(geometry)


@pytest.mark.parametrize(
    "path",
    shared_params(lambda: [p for p in _fixtures("invalid") if "bbox" not in p.stem]),  # bbox members are not read
    ids=lambda p: f"{p.parent.name}/{p.stem}" if p else "shared-absent",
)
def test_invalid_upstream_geometries_are_refused(path: Path) -> None:
    geometry = json.loads(path.read_text(encoding="utf-8"))
    assert geojson_shape(geometry) is None
