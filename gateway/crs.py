"""Reprojection of GeoJSON geometries to WGS84 lon/lat with pyproj (e.g. Lambert-93, CC zones).

Coordinates outside the source CRS's area of use raise ``CRSError`` naming the coordinate, instead
of silently producing a wrong point somewhere else on Earth.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as PyprojCRSError

from gateway.model import GEOJSON_TYPES, ModelError

WGS84 = "EPSG:4326"

# Tolerance around the published area of use, in degrees: areas of use are drawn on land borders,
# and a sensor on a pier or a buoy must still pass.
_MARGIN_DEG = 0.5


class CRSError(ModelError):
    """A CRS that is unknown, or coordinates it cannot place (outside its area of use)."""


def _crs_name(crs: str | int) -> str:
    if isinstance(crs, int) or (isinstance(crs, str) and crs.isdigit()):
        return f"EPSG:{crs}"
    text = str(crs).strip()
    if text.lower().startswith("urn:ogc:def:crs:epsg::"):
        return "EPSG:" + text.rsplit(":", 1)[1]
    return text


@lru_cache(maxsize=64)
def _transformer(name: str) -> tuple[Transformer, tuple[float, float, float, float] | None]:
    try:
        source = CRS.from_user_input(name)
    except PyprojCRSError as exc:
        raise CRSError(f"unknown CRS {name!r}") from exc
    area = source.area_of_use
    bounds = None if area is None else (area.west, area.south, area.east, area.north)
    return Transformer.from_crs(source, WGS84, always_xy=True), bounds


def _is_wgs84(name: str) -> bool:
    return name.upper() in {"EPSG:4326", "WGS84", "CRS84", "OGC:CRS84", "URN:OGC:DEF:CRS:OGC:1.3:CRS84"}


def _check_lonlat(lon: float, lat: float, where: str) -> None:
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise CRSError(f"{where}: ({lon}, {lat}) is not a WGS84 longitude/latitude")


def _position(position: Any, name: str, where: str) -> list[float]:
    if (
        not isinstance(position, list | tuple)
        or len(position) < 2
        or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in position)
    ):
        raise CRSError(f"{where}: {position!r} is not a position [x, y(, z)]")
    x, y = float(position[0]), float(position[1])
    if not (math.isfinite(x) and math.isfinite(y)):
        raise CRSError(f"{where}: ({x}, {y}) is not finite")
    if _is_wgs84(name):
        _check_lonlat(x, y, where)
        return [x, y, *map(float, position[2:])]
    transformer, bounds = _transformer(name)
    lon, lat = transformer.transform(x, y)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise CRSError(f"{where}: ({x}, {y}) cannot be placed in {name}")
    if bounds is not None:
        west, south, east, north = bounds
        if not (west - _MARGIN_DEG <= lon <= east + _MARGIN_DEG and south - _MARGIN_DEG <= lat <= north + _MARGIN_DEG):
            raise CRSError(
                f"{where}: ({x}, {y}) in {name} falls at lon {lon:.5f}, lat {lat:.5f}, "
                f"outside the area of use of {name} (lon {west}..{east}, lat {south}..{north})"
            )
    _check_lonlat(lon, lat, where)
    return [lon, lat, *map(float, position[2:])]


def _coordinates(value: Any, depth: int, name: str, where: str) -> list[Any]:
    if depth == 0:
        return _position(value, name, where)
    if not isinstance(value, list | tuple):
        raise CRSError(f"{where}: {value!r} is not an array of coordinates")
    return [_coordinates(item, depth - 1, name, f"{where}/{index}") for index, item in enumerate(value)]


_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3}


def to_wgs84(geometry: Mapping[str, Any], crs: str | int, *, _where: str = "") -> dict[str, Any]:
    """Reproject a GeoJSON geometry (any type) from ``crs`` to WGS84 lon/lat; raise CRSError."""
    name = _crs_name(crs)
    kind = geometry.get("type") if isinstance(geometry, Mapping) else None
    if kind not in GEOJSON_TYPES:
        raise CRSError(f"{_where or '/'}: {kind!r} is not a GeoJSON geometry type")
    if kind == "GeometryCollection":
        parts = geometry.get("geometries")
        if not isinstance(parts, list):
            raise CRSError(f"{_where}/geometries: a GeometryCollection needs a list of geometries")
        return {
            "type": kind,
            "geometries": [to_wgs84(g, name, _where=f"{_where}/geometries/{i}") for i, g in enumerate(parts)],
        }
    coordinates = _coordinates(geometry.get("coordinates"), _DEPTH[str(kind)], name, f"{_where}/coordinates")
    out: dict[str, Any] = {"type": kind, "coordinates": coordinates}
    return out


def point_from(x: float, y: float, crs: str | int) -> dict[str, Any]:
    """A WGS84 GeoJSON Point from coordinates ``x, y`` in ``crs`` (easting/northing or lon/lat)."""
    return to_wgs84({"type": "Point", "coordinates": [x, y]}, crs)
