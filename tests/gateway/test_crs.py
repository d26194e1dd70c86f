"""Reprojection to WGS84: Lambert-93 and CC zones, every geometry type, refusal outside the area of use."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.crs import CRSError, point_from, to_wgs84
from gateway.model import ModelError

# Notre-Dame de Paris, parvis: WGS84 and Lambert-93 (EPSG:2154) of the same point.
NOTRE_DAME = (2.34880, 48.85330)
NOTRE_DAME_L93 = (652_216.53, 6_861_670.38)


def test_lambert93_point() -> None:
    lon, lat = point_from(*NOTRE_DAME_L93, 2154)["coordinates"]
    assert lon == pytest.approx(NOTRE_DAME[0], abs=1e-6)
    assert lat == pytest.approx(NOTRE_DAME[1], abs=1e-6)


@pytest.mark.parametrize("zone", range(3942, 3951))
def test_cc_zones_round_trip_through_their_own_projection(zone: int) -> None:
    from pyproj import Transformer

    # A point at the centre latitude of each CC zone (CC42 = 42°N ... CC50 = 50°N), lon 3°E.
    lat = 42.0 + (zone - 3942)
    x, y = Transformer.from_crs(4326, zone, always_xy=True).transform(3.0, lat)
    lon2, lat2 = point_from(x, y, f"EPSG:{zone}")["coordinates"]
    assert (lon2, lat2) == (pytest.approx(3.0, abs=1e-7), pytest.approx(lat, abs=1e-7))


def test_every_geometry_type_is_reprojected() -> None:
    x, y = NOTRE_DAME_L93
    ring = [[x, y], [x + 100, y], [x + 100, y + 100], [x, y]]
    geometries: list[dict[str, Any]] = [
        {"type": "Point", "coordinates": [x, y]},
        {"type": "MultiPoint", "coordinates": [[x, y], [x + 10, y]]},
        {"type": "LineString", "coordinates": [[x, y], [x + 10, y + 10]]},
        {"type": "MultiLineString", "coordinates": [[[x, y], [x + 10, y]]]},
        {"type": "Polygon", "coordinates": [ring]},
        {"type": "MultiPolygon", "coordinates": [[ring]]},
    ]
    for geometry in geometries:
        out = to_wgs84(geometry, "EPSG:2154")
        assert out["type"] == geometry["type"]
        flat = str(out["coordinates"])
        assert "2.34" in flat and "48.85" in flat
    collection = to_wgs84({"type": "GeometryCollection", "geometries": geometries[:2]}, 2154)
    assert [g["type"] for g in collection["geometries"]] == ["Point", "MultiPoint"]


def test_altitude_is_kept() -> None:
    out = point_from(*NOTRE_DAME_L93, 2154)
    assert len(out["coordinates"]) == 2
    assert to_wgs84({"type": "Point", "coordinates": [*NOTRE_DAME_L93, 35.0]}, 2154)["coordinates"][2] == 35.0


def test_outside_the_area_of_use_is_refused_with_the_coordinate() -> None:
    with pytest.raises(CRSError) as caught:
        to_wgs84({"type": "LineString", "coordinates": [list(NOTRE_DAME_L93), [50_000_000.0, 6_861_670.0]]}, 2154)
    message = str(caught.value)
    assert "/coordinates/1" in message
    assert "area of use" in message
    assert isinstance(caught.value, ModelError)


def test_projected_coordinates_declared_as_wgs84_are_refused() -> None:
    with pytest.raises(CRSError, match="not a WGS84 longitude/latitude"):
        point_from(*NOTRE_DAME_L93, 4326)


def test_wgs84_passes_through_and_bad_inputs_are_named() -> None:
    assert point_from(2.3488, 48.8533, "EPSG:4326") == {"type": "Point", "coordinates": [2.3488, 48.8533]}
    with pytest.raises(CRSError, match="unknown CRS"):
        point_from(1, 2, "EPSG:999999")
    with pytest.raises(CRSError, match="not a position"):
        to_wgs84({"type": "Point", "coordinates": ["a", 1]}, 2154)
    with pytest.raises(CRSError, match="not a GeoJSON geometry type"):
        to_wgs84({"type": "Circle", "coordinates": [1, 2]}, 2154)
