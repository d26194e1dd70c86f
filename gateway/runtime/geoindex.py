"""Which commune a point is in: commune boundary polygons behind a spatial index, pure Python.

Boundaries come from a GeoJSON FeatureCollection (IGN Admin Express, OpenStreetMap extracts):
``Polygon`` and ``MultiPolygon`` features, holes respected, longitude/latitude in WGS84 (RFC 7946);
a file with a legacy ``crs`` member (Lambert-93 exports) is reprojected with pyproj when loaded.

Two levels keep a lookup cheap with thousands of communes of thousands of vertices each:

1. a uniform grid over the bounding box of every polygon; a cell lists the polygons whose
   bounding box meets it, so a point is tested against the two or three polygons around it;
2. inside each polygon, its edges binned into horizontal bands; the ray cast (even-odd rule, all
   rings of the polygon together, so holes count) looks only at the edges of the point's band.

Edge cases, deterministic by design:

- a point on an edge (within ``EPSILON`` degrees, about 0.1 mm) is *in* the commune: polygons
  are closed sets. A point inside one commune goes there; a point on the boundary shared by
  several communes goes to the one with the lowest code (INSEE code, or the tenant when no code
  is used), then the first in the file;
- a point outside every polygon, or in a hole not filled by another commune, is in none.

The file is checked when loaded, every problem named by its JSON pointer (``/features/12/geometry/
coordinates/0``): a ring that is not closed, has fewer than four positions or no area, a position
that is not a longitude/latitude pair, a geometry that is not a (Multi)Polygon.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gateway.errors import ConfigInvalid

if TYPE_CHECKING:
    from pyproj import Transformer

EPSILON: Final = 1e-9
"""Distance (degrees) within which a point counts as on an edge (~0.1 mm)."""
MAX_BYTES: Final = 512 << 20
"""Largest boundary file read (a whole French department at full IGN resolution is far smaller)."""
MAX_PROBLEMS: Final = 20
"""Problems listed before the rest of a bad file is skipped."""

Edge = tuple[float, float, float, float]
Position = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Area:
    """One commune of the boundary file: where its tenant is, how it ranks on a shared boundary."""

    index: int
    """Its feature's index in the file."""
    tenant: str | None
    """The tenant it routes to; None: a commune of the file no tenant serves."""
    code: str
    """Its INSEE code (or tenant name): the tie-break on a shared boundary, lowest first."""
    name: str = ""


@dataclass(slots=True)
class _Part:
    """One polygon (exterior ring and holes) of an area, with its edges binned in horizontal bands."""

    area: int
    bbox: tuple[float, float, float, float]
    y0: float
    band_h: float
    bands: list[list[Edge]] = field(default_factory=list)


OUTSIDE: Final = 0
INSIDE: Final = 1
ON_EDGE: Final = 2


def _build_part(area: int, rings: Sequence[Sequence[Position]]) -> _Part:
    edges: list[Edge] = []
    for ring in rings:
        for (x1, y1), (x2, y2) in itertools.pairwise(ring):
            if (x1, y1) != (x2, y2):
                edges.append((x1, y1, x2, y2))
    xs = [p[0] for p in rings[0]]
    ys = [p[1] for p in rings[0]]
    bbox = (min(xs), min(ys), max(xs), max(ys))
    # About eight edges per band: the ray cast then reads a handful of edges, not thousands.
    count = max(1, min(4096, len(edges) // 8))
    height = (bbox[3] - bbox[1]) / count or 1.0
    bands: list[list[Edge]] = [[] for _ in range(count)]
    part = _Part(area, bbox, bbox[1], height, bands)
    y0, last = bbox[1], count - 1
    for edge in edges:  # _band inlined: this loop runs once per vertex of the file
        y1, y2 = (edge[1], edge[3]) if edge[1] < edge[3] else (edge[3], edge[1])
        lo = int((y1 - EPSILON - y0) / height)
        hi = int((y2 + EPSILON - y0) / height)
        for b in range(lo if lo > 0 else 0, (hi if hi < last else last) + 1):
            bands[b].append(edge)
    return part


def _band(part: _Part, y: float) -> int:
    b = int((y - part.y0) / part.band_h)
    return 0 if b < 0 else min(b, len(part.bands) - 1)


def locate(part: _Part, x: float, y: float) -> int:
    """OUTSIDE, INSIDE or ON_EDGE of one polygon (holes are outside, their edges on the edge)."""
    inside = False
    for x1, y1, x2, y2 in part.bands[_band(part, y)]:
        if ((x1 if x1 < x2 else x2) - EPSILON <= x <= (x2 if x1 < x2 else x1) + EPSILON
                and (y1 if y1 < y2 else y2) - EPSILON <= y <= (y2 if y1 < y2 else y1) + EPSILON):
            dx, dy = x2 - x1, y2 - y1
            if abs(dx * (y - y1) - dy * (x - x1)) <= EPSILON * math.hypot(dx, dy):
                return ON_EDGE
        # Half-open on y so that a vertex the ray passes through is counted once.
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return INSIDE if inside else OUTSIDE


class GeoIndex:
    """Commune areas behind a uniform grid of bounding boxes; ``find(lon, lat)`` names the commune."""

    def __init__(self, areas: Sequence[Area], polygons: Sequence[tuple[int, Sequence[Sequence[Position]]]]) -> None:
        """``polygons``: (area position in ``areas``, rings with the exterior first) for every polygon."""
        self.areas = list(areas)
        self._parts = [_build_part(a, rings) for a, rings in polygons]
        self._rank = {i: (a.code, a.index) for i, a in enumerate(self.areas)}
        if self._parts:
            self._x0 = min(p.bbox[0] for p in self._parts)
            self._y0 = min(p.bbox[1] for p in self._parts)
            x1 = max(p.bbox[2] for p in self._parts)
            y1 = max(p.bbox[3] for p in self._parts)
        else:
            self._x0 = self._y0 = x1 = y1 = 0.0
        # About two cells per polygon along each axis keeps cell lists short for a tessellation.
        side = max(1, min(2048, math.ceil(2 * math.sqrt(len(self._parts)))))
        self._nx = self._ny = side
        self._cw = (x1 - self._x0) / side or 1.0
        self._ch = (y1 - self._y0) / side or 1.0
        self._x1, self._y1 = x1, y1
        self._cells: dict[int, list[_Part]] = {}
        for part in self._parts:
            minx, miny, maxx, maxy = part.bbox
            for cx in range(self._cell_x(minx - EPSILON), self._cell_x(maxx + EPSILON) + 1):
                for cy in range(self._cell_y(miny - EPSILON), self._cell_y(maxy + EPSILON) + 1):
                    self._cells.setdefault(cy * self._nx + cx, []).append(part)

    def _cell_x(self, x: float) -> int:
        c = int((x - self._x0) / self._cw)
        return 0 if c < 0 else min(c, self._nx - 1)

    def _cell_y(self, y: float) -> int:
        c = int((y - self._y0) / self._ch)
        return 0 if c < 0 else min(c, self._ny - 1)

    def __len__(self) -> int:
        return len(self.areas)

    @property
    def polygons(self) -> int:
        """Number of polygons indexed (a MultiPolygon counts each of its parts)."""
        return len(self._parts)

    def find(self, lon: float, lat: float) -> Area | None:
        """The commune containing the point (see the module's rules for shared boundaries), or None."""
        if not (self._x0 - EPSILON <= lon <= self._x1 + EPSILON and self._y0 - EPSILON <= lat <= self._y1 + EPSILON):
            return None
        inside: int | None = None
        edges: list[int] = []
        for part in self._cells.get(self._cell_y(lat) * self._nx + self._cell_x(lon), ()):
            minx, miny, maxx, maxy = part.bbox
            if not (minx - EPSILON <= lon <= maxx + EPSILON and miny - EPSILON <= lat <= maxy + EPSILON):
                continue
            where = locate(part, lon, lat)
            if where == INSIDE:
                if inside is None or self._rank[part.area] < self._rank[inside]:
                    inside = part.area
            elif where == ON_EDGE:
                edges.append(part.area)
        if inside is not None:
            return self.areas[inside]
        if edges:
            return self.areas[min(edges, key=self._rank.__getitem__)]
        return None


# ---------------------------------------------------------------------------- loading


def _position(value: Any, where: str, problems: list[str]) -> Position | None:
    if (not isinstance(value, list) or len(value) < 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value[:2])):
        problems.append(f"{where}: a position must be [longitude, latitude] numbers")
        return None
    lon, lat = float(value[0]), float(value[1])
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        problems.append(f"{where}: [{value[0]}, {value[1]}] is not a WGS84 longitude/latitude")
        return None
    return lon, lat


_NUMBER: Final = (int, float)


def _plausible(ring: list[Position]) -> bool:
    """True when every position is a finite WGS84 longitude/latitude (NaN and infinities fail)."""
    if not ring:
        return True
    xs = [p[0] for p in ring]
    ys = [p[1] for p in ring]
    return (math.isfinite(sum(xs) + sum(ys)) and -180 <= min(xs) and max(xs) <= 180
            and -90 <= min(ys) and max(ys) <= 90)


def _ring(value: Any, where: str, problems: list[str], project: Transformer | None = None) -> list[Position] | None:
    if not isinstance(value, list):
        problems.append(f"{where}: a linear ring must be an array of positions")
        return None
    # Fast path over the whole ring (files hold millions of positions); the slow one names the bad one.
    ring = [(float(v[0]), float(v[1])) for v in value
            if type(v) is list and len(v) >= 2 and type(v[0]) in _NUMBER and type(v[1]) in _NUMBER]
    if project is not None and len(ring) == len(value):
        lons, lats = project.transform([p[0] for p in ring], [p[1] for p in ring])  # one call per ring
        ring = list(zip(map(float, lons), map(float, lats), strict=True))
        value = [list(p) for p in ring]  # a position the projection cannot place is named below
    if len(ring) != len(value) or not _plausible(ring):
        before = len(problems)
        ring = [p for i, v in enumerate(value) if (p := _position(v, f"{where}/{i}", problems)) is not None]
        if len(problems) > before:
            return None
    if len(ring) < 4:
        problems.append(f"{where}: a linear ring needs at least 4 positions, it has {len(ring)}")
        return None
    if ring[0] != ring[-1]:
        problems.append(f"{where}: the ring is not closed (its first and last positions differ)")
        return None
    area2 = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in itertools.pairwise(ring))
    if area2 == 0:
        problems.append(f"{where}: the ring has no area")
        return None
    return ring


def _polygon(value: Any, where: str, problems: list[str], project: Transformer | None) -> list[list[Position]] | None:
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: a Polygon is a non-empty array of linear rings")
        return None
    rings = [_ring(r, f"{where}/{i}", problems, project) for i, r in enumerate(value)]
    return None if any(r is None for r in rings) else [r for r in rings if r is not None]


def _projection(crs: Any, problems: list[str]) -> Transformer | None:
    """A transformer to WGS84 lon/lat for a legacy GeoJSON ``crs`` member (GeoJSON 2008, ogr2ogr's default for
    Lambert-93 files); None for WGS84 itself or when the member is unusable (a problem is listed)."""
    name = crs.get("properties", {}).get("name") if isinstance(crs, Mapping) else None
    if not isinstance(name, str) or not isinstance(crs.get("properties"), Mapping):
        problems.append("/crs: expected {\"type\": \"name\", \"properties\": {\"name\": \"EPSG:2154\"}} "
                        "(or no crs member: WGS84, RFC 7946)")
        return None
    if "CRS84" in name.upper() or name.upper().replace("::", ":").endswith("EPSG:4326"):
        return None  # WGS84 longitude/latitude, as RFC 7946 has it
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        return Transformer.from_crs(CRS.from_user_input(name), "OGC:CRS84", always_xy=True)
    except CRSError:
        problems.append(f"/crs/properties/name: unknown CRS {name!r}")
        return None


def _polygons(geometry: Any, where: str, problems: list[str], project: Transformer | None) -> list[
        list[list[Position]]]:
    if not isinstance(geometry, Mapping):
        problems.append(f"{where}: a feature of a boundary file needs a Polygon or MultiPolygon geometry")
        return []
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Polygon":
        poly = _polygon(coords, f"{where}/coordinates", problems, project)
        return [poly] if poly is not None else []
    if kind == "MultiPolygon":
        if not isinstance(coords, list) or not coords:
            problems.append(f"{where}/coordinates: a MultiPolygon is a non-empty array of polygons")
            return []
        found = [_polygon(p, f"{where}/coordinates/{i}", problems, project) for i, p in enumerate(coords)]
        return [p for p in found if p is not None]
    problems.append(f"{where}/type: {kind!r} is not Polygon or MultiPolygon")
    return []


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        return str(value).strip() or None
    return None


def parse_boundaries(
    document: Any,
    *,
    tenant_property: str | None = None,
    code_property: str | None = None,
    tenants: Mapping[str, str] | None = None,
    name_property: str | None = None,
    source: str = "boundaries",
) -> GeoIndex:
    """Check a GeoJSON FeatureCollection of commune boundaries and index it (no I/O).

    Each feature names its tenant with ``tenant_property``, or its code with ``code_property``
    looked up in ``tenants`` (code → tenant; a code absent from the table is a commune no tenant
    serves: a point there is reported as such). Raises ConfigInvalid listing every problem.
    """
    problems: list[str] = []
    if not isinstance(document, Mapping) or document.get("type") != "FeatureCollection":
        raise ConfigInvalid(f"{source} is not a GeoJSON FeatureCollection", ["/type: expected FeatureCollection"])
    # RFC 7946 removed the crs member, but Lambert-93 exports still carry one: reproject with pyproj.
    project = _projection(document["crs"], problems) if document.get("crs") is not None else None
    features = document.get("features")
    if not isinstance(features, list):
        raise ConfigInvalid(f"{source} is not a GeoJSON FeatureCollection", ["/features: expected an array"])
    table = dict(tenants or {})
    areas: list[Area] = []
    polygons: list[tuple[int, Sequence[Sequence[Position]]]] = []
    for index, feature in enumerate(features):
        if len(problems) >= MAX_PROBLEMS:
            problems.append(f"/features/{index}: stopped after {MAX_PROBLEMS} problems")
            break
        where = f"/features/{index}"
        if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
            problems.append(f"{where}/type: expected Feature")
            continue
        props = feature.get("properties") if isinstance(feature.get("properties"), Mapping) else {}
        assert isinstance(props, Mapping)
        tenant: str | None
        if tenant_property is not None:
            tenant = _text(props.get(tenant_property))
            if tenant is None:
                problems.append(f"{where}/properties/{tenant_property}: missing (it names the feature's tenant)")
                continue
            code = _text(props.get(code_property)) if code_property else None
            code = code or tenant
        else:
            code = _text(props.get(code_property)) if code_property else None
            if code is None:
                problems.append(f"{where}/properties/{code_property}: missing (it is the feature's commune code)")
                continue
            tenant = table.get(code)
        found = _polygons(feature.get("geometry"), f"{where}/geometry", problems, project)
        if not found:
            continue
        name = _text(props.get(name_property)) if name_property else None
        position = len(areas)
        areas.append(Area(index, tenant, code, name or ""))
        polygons.extend((position, rings) for rings in found)
    if problems:
        raise ConfigInvalid(f"{source} has invalid boundaries", problems)
    if not areas:
        raise ConfigInvalid(f"{source} has invalid boundaries", ["/features: no commune polygon"])
    return GeoIndex(areas, polygons)


def load_boundaries(path: Path, **options: Any) -> GeoIndex:
    """Read, check and index a GeoJSON boundary file (see :func:`parse_boundaries` for ``options``)."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigInvalid(f"{path}: {size} bytes, more than the {MAX_BYTES} allowed")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigInvalid(f"cannot read boundary file {path}: {exc.strerror}") from None
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ConfigInvalid(f"{path} is not JSON: {exc}") from None
    return parse_boundaries(document, source=str(path), **options)


def bounding_centre(geometry: Mapping[str, Any]) -> Position | None:
    """A Point's position, or the centre of the bounding box of another geometry; None when unreadable."""
    coords = geometry.get("coordinates")
    if geometry.get("type") == "Point":
        return _pair(coords)
    flat = list(_flatten(coords))
    if not flat:
        return None
    xs, ys = [p[0] for p in flat], [p[1] for p in flat]
    return (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2


def _pair(value: Any) -> Position | None:
    if (isinstance(value, list | tuple) and len(value) >= 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value[:2])):
        lon, lat = float(value[0]), float(value[1])
        if math.isfinite(lon) and math.isfinite(lat):
            return lon, lat
    return None


def _flatten(value: Any, depth: int = 0) -> Iterable[Position]:
    pair = _pair(value)
    if pair is not None:
        yield pair
    elif isinstance(value, list) and depth < 4:
        for item in value:
            yield from _flatten(item, depth + 1)
