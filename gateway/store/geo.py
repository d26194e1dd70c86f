"""NGSI-LD geo-queries (ETSI GS CIM 009 V1.9.1 §4.10): parsing and plain-Python geometry.

Predicates are evaluated on WGS84 lon/lat treated as a plane (as GeoJSON, RFC 7946 §3.1.1,
describes edges), except distances, which are great-circle (haversine) metres. Plain Python
is enough for the sizes an entity carries (a district polygon has hundreds of vertices, not
millions), and it keeps the store free of a native geometry library.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.store.problems import NgsiError

EARTH_RADIUS_M: Final = 6_371_008.8
"""Mean Earth radius (IUGG), metres."""
GEOMETRIES: Final = frozenset({"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"})
"""Geometry types accepted in a geo-query."""
GEORELS: Final = frozenset({"near", "within", "contains", "intersects", "disjoint", "equals", "overlaps"})
MAX_POSITIONS: Final = 10_000
"""Most positions in a query geometry."""
_EPS: Final = 1e-12
_NEAR = re.compile(r"^near;(maxDistance|minDistance)==(\d+(?:\.\d+)?)$")

Position = tuple[float, float]
Ring = list[Position]


class GeoQueryError(NgsiError, ValueError):
    """A geo-query that cannot be used (BadRequestData 400), naming the parameter at fault."""

    def __init__(self, detail: str) -> None:
        super().__init__("BadRequestData", detail)


# --------------------------------------------------------------------------- decomposed geometry


@dataclass
class Shape:
    """A geometry split into what the predicates need: points, segments and polygons."""

    points: list[Position] = field(default_factory=list)
    lines: list[list[Position]] = field(default_factory=list)
    polygons: list[list[Ring]] = field(default_factory=list)
    """Each polygon is its exterior ring followed by its holes."""

    def vertices(self) -> list[Position]:
        """Every position of the shape."""
        out = list(self.points)
        for line in self.lines:
            out.extend(line)
        for polygon in self.polygons:
            for ring in polygon:
                out.extend(ring)
        return out

    def segments(self) -> list[tuple[Position, Position]]:
        """Every edge: line segments and polygon ring edges."""
        out: list[tuple[Position, Position]] = []
        for line in self.lines:
            out.extend(itertools.pairwise(line))
        for polygon in self.polygons:
            for ring in polygon:
                out.extend(itertools.pairwise(ring))
        return out

    def bbox(self) -> tuple[float, float, float, float]:
        """(min lon, min lat, max lon, max lat)."""
        verts = self.vertices()
        lons = [p[0] for p in verts]
        lats = [p[1] for p in verts]
        return (min(lons), min(lats), max(lons), max(lats))


def _position(value: Any, where: str) -> Position:
    if (
        not isinstance(value, list | tuple)
        or len(value) < 2
        or not all(isinstance(c, int | float) and not isinstance(c, bool) for c in value)
    ):
        raise GeoQueryError(f"{where}: a position is [longitude, latitude], got {json.dumps(value)[:80]}")
    lon, lat = float(value[0]), float(value[1])
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0) or math.isnan(lon) or math.isnan(lat):
        raise GeoQueryError(f"{where}: position {[lon, lat]} is outside WGS84 longitude/latitude ranges")
    return (lon, lat)


def _positions(value: Any, where: str, minimum: int) -> list[Position]:
    if not isinstance(value, list):
        raise GeoQueryError(f"{where}: expected an array of positions")
    if len(value) < minimum:
        raise GeoQueryError(f"{where}: needs at least {minimum} positions")
    return [_position(v, f"{where}/{i}") for i, v in enumerate(value)]


def _ring(value: Any, where: str) -> Ring:
    ring = _positions(value, where, 4)
    if ring[0] != ring[-1]:
        raise GeoQueryError(f"{where}: a linear ring must be closed (first position == last position)")
    return ring


def _polygon(value: Any, where: str) -> list[Ring]:
    if not isinstance(value, list) or not value:
        raise GeoQueryError(f"{where}: a Polygon is a non-empty array of linear rings")
    return [_ring(r, f"{where}/{i}") for i, r in enumerate(value)]


def to_shape(geometry_type: str, coordinates: Any, where: str = "coordinates") -> Shape:
    """Decompose GeoJSON coordinates of a given type; raise GeoQueryError when invalid."""
    shape = Shape()
    if geometry_type == "Point":
        shape.points.append(_position(coordinates, where))
    elif geometry_type == "MultiPoint":
        shape.points.extend(_positions(coordinates, where, 1))
    elif geometry_type == "LineString":
        shape.lines.append(_positions(coordinates, where, 2))
    elif geometry_type == "MultiLineString":
        if not isinstance(coordinates, list) or not coordinates:
            raise GeoQueryError(f"{where}: a MultiLineString is a non-empty array of lines")
        shape.lines.extend(_positions(c, f"{where}/{i}", 2) for i, c in enumerate(coordinates))
    elif geometry_type == "Polygon":
        shape.polygons.append(_polygon(coordinates, where))
    elif geometry_type == "MultiPolygon":
        if not isinstance(coordinates, list) or not coordinates:
            raise GeoQueryError(f"{where}: a MultiPolygon is a non-empty array of polygons")
        shape.polygons.extend(_polygon(c, f"{where}/{i}") for i, c in enumerate(coordinates))
    else:
        raise GeoQueryError(f"geometry {geometry_type!r} is not one of {', '.join(sorted(GEOMETRIES))}")
    return shape


def geojson_shape(geometry: Any) -> Shape | None:
    """Decompose a GeoJSON geometry object (GeometryCollection included); None when unusable."""
    if not isinstance(geometry, Mapping):
        return None
    kind = geometry.get("type")
    try:
        if kind == "GeometryCollection":
            out = Shape()
            for member in geometry.get("geometries") or []:
                part = geojson_shape(member)
                if part is None:
                    return None
                out.points.extend(part.points)
                out.lines.extend(part.lines)
                out.polygons.extend(part.polygons)
            return out if out.vertices() else None
        if not isinstance(kind, str):
            return None
        return to_shape(kind, geometry.get("coordinates"))
    except GeoQueryError:
        return None


# --------------------------------------------------------------------------- planar predicates


def _cross(o: Position, a: Position, b: Position) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _on_segment(p: Position, a: Position, b: Position) -> bool:
    if abs(_cross(a, b, p)) > _EPS * max(1.0, abs(b[0] - a[0]) + abs(b[1] - a[1])):
        return False
    return min(a[0], b[0]) - _EPS <= p[0] <= max(a[0], b[0]) + _EPS and (
        min(a[1], b[1]) - _EPS <= p[1] <= max(a[1], b[1]) + _EPS
    )


def _segments_intersect(a: Position, b: Position, c: Position, d: Position) -> bool:
    d1, d2 = _cross(c, d, a), _cross(c, d, b)
    d3, d4 = _cross(a, b, c), _cross(a, b, d)
    if ((d1 > _EPS and d2 < -_EPS) or (d1 < -_EPS and d2 > _EPS)) and (
        (d3 > _EPS and d4 < -_EPS) or (d3 < -_EPS and d4 > _EPS)
    ):
        return True
    return _on_segment(a, c, d) or _on_segment(b, c, d) or _on_segment(c, a, b) or _on_segment(d, a, b)


def _segments_cross(a: Position, b: Position, c: Position, d: Position) -> bool:
    """A proper crossing: the segments cut through each other (touching does not count)."""
    d1, d2 = _cross(c, d, a), _cross(c, d, b)
    d3, d4 = _cross(a, b, c), _cross(a, b, d)
    return ((d1 > _EPS and d2 < -_EPS) or (d1 < -_EPS and d2 > _EPS)) and (
        (d3 > _EPS and d4 < -_EPS) or (d3 < -_EPS and d4 > _EPS)
    )


def _in_ring(p: Position, ring: Ring) -> int:
    """1 inside, 0 on the boundary, -1 outside (ray casting)."""
    inside = False
    for a, b in itertools.pairwise(ring):
        if _on_segment(p, a, b):
            return 0
        if (a[1] > p[1]) != (b[1] > p[1]):
            x = a[0] + (p[1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            if p[0] < x:
                inside = not inside
    return 1 if inside else -1


def _in_polygon(p: Position, polygon: list[Ring]) -> int:
    """1 inside, 0 on the boundary, -1 outside, holes taken into account."""
    where = _in_ring(p, polygon[0])
    if where <= 0:
        return where
    for hole in polygon[1:]:
        in_hole = _in_ring(p, hole)
        if in_hole == 0:
            return 0
        if in_hole == 1:
            return -1
    return 1


def _covered_point(p: Position, shape: Shape) -> bool:
    """The point lies in or on ``shape`` (any of its parts)."""
    if any(abs(p[0] - q[0]) <= _EPS and abs(p[1] - q[1]) <= _EPS for q in shape.points):
        return True
    if any(_on_segment(p, a, b) for line in shape.lines for a, b in itertools.pairwise(line)):
        return True
    return any(_in_polygon(p, poly) >= 0 for poly in shape.polygons)


def intersects(a: Shape, b: Shape) -> bool:
    """True when the two shapes share at least one point."""
    if not _bbox_overlap(a.bbox(), b.bbox()):
        return False
    if any(_covered_point(p, b) for p in a.vertices()) or any(_covered_point(p, a) for p in b.vertices()):
        return True
    return any(_segments_intersect(p, q, r, s) for p, q in a.segments() for r, s in b.segments())


def within(a: Shape, b: Shape) -> bool:
    """True when every point of ``a`` lies in or on ``b`` (boundary contact allowed)."""
    if not all(_covered_point(p, b) for p in a.vertices()):
        return False
    if not b.polygons:
        # a line or point set can only cover what lies on it; vertices on it are enough for
        # points, and for segments we also require their midpoints to stay on it
        for p, q in a.segments():
            if not _covered_point(((p[0] + q[0]) / 2, (p[1] + q[1]) / 2), b):
                return False
        return True
    # no edge of ``a`` may cut through the boundary of ``b``, and no part of ``b``'s outside
    # (a hole, a concave notch) may sit between two vertices of ``a``
    if any(_segments_cross(p, q, r, s) for p, q in a.segments() for r, s in b.segments()):
        return False
    for p, q in a.segments():
        if not _covered_point(((p[0] + q[0]) / 2, (p[1] + q[1]) / 2), b):
            return False
    return True


def equals(a: Shape, b: Shape) -> bool:
    """True when both shapes have the same parts (polygon rings may start anywhere)."""

    def ring_key(ring: Ring) -> tuple[Position, ...]:
        body = ring[:-1]
        start = body.index(min(body))
        rotated = body[start:] + body[:start]
        backward = list(reversed(body))
        start_b = backward.index(min(backward))
        rotated_b = backward[start_b:] + backward[:start_b]
        return tuple(min(rotated, rotated_b))

    def key(shape: Shape) -> tuple[Any, ...]:
        return (
            tuple(sorted(set(shape.points))),
            tuple(sorted(tuple(line) for line in shape.lines)),
            tuple(sorted(tuple(ring_key(r) for r in poly) for poly in shape.polygons)),
        )

    return key(a) == key(b)


def _bbox_overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] <= b[2] + _EPS and b[0] <= a[2] + _EPS and a[1] <= b[3] + _EPS and b[1] <= a[3] + _EPS


# --------------------------------------------------------------------------- distances


def haversine(a: Position, b: Position) -> float:
    """Great-circle distance in metres between two lon/lat positions."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _point_segment_distance(p: Position, a: Position, b: Position) -> float:
    """Metres from ``p`` to segment ab, projecting locally (equirectangular around ``p``)."""
    k = math.cos(math.radians(p[1]))

    def local(q: Position) -> tuple[float, float]:
        return ((q[0] - p[0]) * k, q[1] - p[1])

    ax, ay = local(a)
    bx, by = local(b)
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length2))
    closest = (p[0] + (ax + t * dx) / k if k else p[0], p[1] + ay + t * dy)
    return haversine(p, closest)


def point_distance(p: Position, shape: Shape) -> float:
    """Metres from a point to the nearest part of a shape (0 when inside a polygon)."""
    if any(_in_polygon(p, poly) >= 0 for poly in shape.polygons):
        return 0.0
    best = min((haversine(p, q) for q in shape.points), default=math.inf)
    for a, b in shape.segments():
        best = min(best, _point_segment_distance(p, a, b))
    return best


# --------------------------------------------------------------------------- the query


@dataclass(frozen=True)
class GeoQuery:
    """A validated geo-query: relation, reference geometry and the GeoProperty it applies to."""

    georel: str
    geometry: str
    coordinates: Any
    geoproperty: str = "location"
    max_distance: float | None = None
    min_distance: float | None = None
    shape: Shape = field(default_factory=Shape, compare=False)

    def matches(self, geometry: Any) -> bool:
        """True when the entity's GeoJSON geometry stands in this relation to the reference."""
        target = geojson_shape(geometry)
        if target is None:
            return False
        ref = self.shape
        if self.georel == "near":
            dist = self.distance(geometry)
            if self.max_distance is not None:
                return dist <= self.max_distance
            return self.min_distance is not None and dist >= self.min_distance
        if self.georel == "within":
            return within(target, ref)
        if self.georel == "contains":
            return within(ref, target)
        if self.georel == "intersects":
            return intersects(target, ref)
        if self.georel == "disjoint":
            return not intersects(target, ref)
        if self.georel == "equals":
            return equals(target, ref)
        if self.georel == "overlaps":
            return intersects(target, ref) and not within(target, ref) and not within(ref, target)
        return False

    def distance(self, geometry: Any) -> float:
        """Metres from the reference geometry to ``geometry`` (inf when it is not usable)."""
        target = geojson_shape(geometry)
        if target is None:
            return math.inf
        if intersects(target, self.shape):
            return 0.0
        best = math.inf
        for p in self.shape.vertices():
            best = min(best, point_distance(p, target))
        for p in target.vertices():
            best = min(best, point_distance(p, self.shape))
        return best

    def bbox(self) -> tuple[float, float, float, float] | None:
        """A lon/lat box every matching geometry touches, for an index prefilter; None if none helps.

        ``disjoint`` and ``near;minDistance`` match far away, so no box bounds them.
        """
        if self.georel == "disjoint" or (self.georel == "near" and self.max_distance is None):
            return None
        min_lon, min_lat, max_lon, max_lat = self.shape.bbox()
        if self.georel == "near" and self.max_distance is not None:
            dlat = math.degrees(self.max_distance / EARTH_RADIUS_M) * 1.01
            lat_extreme = min(89.999, max(abs(min_lat), abs(max_lat)) + dlat)
            dlon = dlat / max(math.cos(math.radians(lat_extreme)), 1e-6)
            if dlon >= 180 or lat_extreme >= 89.99:
                return (-180.0, max(-90.0, min_lat - dlat), 180.0, min(90.0, max_lat + dlat))
            return (
                max(-180.0, min_lon - dlon),
                max(-90.0, min_lat - dlat),
                min(180.0, max_lon + dlon),
                min(90.0, max_lat + dlat),
            )
        return (min_lon, min_lat, max_lon, max_lat)


def parse_geo_query(
    georel: str | None,
    geometry: str | None,
    coordinates: str | Sequence[Any] | None,
    geoproperty: str | None = "location",
) -> GeoQuery:
    """Validate the georel/geometry/coordinates(/geoproperty) parameters into a GeoQuery."""
    if not georel or not geometry or coordinates is None or coordinates == "":
        missing = [n for n, v in (("georel", georel), ("geometry", geometry), ("coordinates", coordinates)) if not v]
        raise GeoQueryError(f"a geo-query needs georel, geometry and coordinates (missing: {', '.join(missing)})")
    max_distance: float | None = None
    min_distance: float | None = None
    relation = georel
    if georel.startswith("near"):
        match = _NEAR.match(georel)
        if match is None:
            raise GeoQueryError(
                f"georel {georel!r}: near needs ';maxDistance==<metres>' or ';minDistance==<metres>'"
            )
        relation = "near"
        if match.group(1) == "maxDistance":
            max_distance = float(match.group(2))
        else:
            min_distance = float(match.group(2))
    elif georel not in GEORELS:
        raise GeoQueryError(f"georel {georel!r} is not one of {', '.join(sorted(GEORELS))}")
    if geometry not in GEOMETRIES:
        raise GeoQueryError(f"geometry {geometry!r} is not one of {', '.join(sorted(GEOMETRIES))}")
    if isinstance(coordinates, str):
        if len(coordinates) > 1_000_000:
            raise GeoQueryError("coordinates: too long")
        try:
            coords: Any = json.loads(coordinates)
        except json.JSONDecodeError as exc:
            raise GeoQueryError(f"coordinates: not a JSON array ({exc.msg} at character {exc.pos})") from None
    else:
        coords = coordinates
    shape = to_shape(geometry, coords)
    if len(shape.vertices()) > MAX_POSITIONS:
        raise GeoQueryError(f"coordinates: more than {MAX_POSITIONS} positions")
    if relation == "near" and geometry != "Point" and max_distance is None and min_distance is None:
        raise GeoQueryError("near needs a distance")  # pragma: no cover - the regex guarantees one
    return GeoQuery(
        relation,
        geometry,
        coords,
        geoproperty or "location",
        max_distance=max_distance,
        min_distance=min_distance,
        shape=shape,
    )
