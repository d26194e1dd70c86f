"""Routing one feed to many communes: 1,000 readings over 30 commune polygons, through a real run.

The boundary file is generated here: a 6 x 6 grid of cells whose inner vertices are moved and
whose edges are jagged polylines shared (reversed) by the two neighbours, so the tessellation has
no gap and no overlap. Six communes own two cells (MultiPolygon), one cell belongs to a commune
no tenant serves, and one commune is an enclave: a hole in its host's polygon, filled by its own.
The expected commune of every point is computed independently, by a winding-number test written
here (not the ray cast of gateway.runtime.geoindex).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import random
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest

from gateway.errors import ConfigInvalid
from gateway.model import RawMessage, entity, geo, point, prop, urn
from gateway.runtime.config import parse
from gateway.runtime.geoindex import parse_boundaries
from gateway.runtime.routing import Unroutable, parse_mapping
from gateway.runtime.state import RUNTIME
from tests.runtime.support import FakeAdapter, config, eventually, running

Ring = list[tuple[float, float]]
N = 6
X0, Y0, CELL = 3.0, 43.0, 0.1


class FeedAdapter(FakeAdapter):
    """One vendor feed for every commune: ``{"device", "value", "lon"?, "lat"?, "postcode"?}``."""

    instances: ClassVar[dict[str, FakeAdapter]] = FakeAdapter.instances

    def to_entities(self, raw: RawMessage) -> list[dict[str, Any]]:
        doc = json.loads(raw.payload)
        attrs: dict[str, Any] = {"numValue": prop(doc["value"], observed_at="2026-01-01T10:00:00Z")}
        if "lon" in doc:
            attrs["location"] = geo(point(doc["lon"], doc["lat"]))
        if "postcode" in doc:
            attrs["address"] = prop({"postalCode": doc["postcode"], "addressLocality": "x"})
        return [entity("DeviceMeasurement", urn("DeviceMeasurement", doc["device"]), **attrs)]


@pytest.fixture(autouse=True)
def _reset() -> Any:
    FakeAdapter.instances.clear()
    yield
    FakeAdapter.instances.clear()


# ---------------------------------------------------------------------------- the synthetic territory


class Territory:
    """The generated communes: features for the file, and each commune's rings for the independent check."""

    def __init__(self, seed: int = 14) -> None:
        rng = random.Random(seed)
        # Inner vertices moved by up to 0.02 degrees; the outer frame stays straight.
        self.vertex: dict[tuple[int, int], tuple[float, float]] = {}
        for i in range(N + 1):
            for j in range(N + 1):
                x, y = X0 + i * CELL, Y0 + j * CELL
                if 0 < i < N and 0 < j < N:
                    x, y = x + rng.uniform(-0.02, 0.02), y + rng.uniform(-0.02, 0.02)
                self.vertex[i, j] = (x, y)
        self._edges: dict[tuple[tuple[int, int], tuple[int, int]], Ring] = {}
        self._rng = rng
        cells = [(i, j) for j in range(N) for i in range(N)]
        # 36 cells: commune k (code 34001 + k) owns cell k for k < 29; cells 29..34 go to the six
        # communes 0, 5, 10, 15, 20, 25 (MultiPolygons); cell 35 is commune 34999, served by no tenant.
        owner = {cell: k for k, cell in enumerate(cells[:29])}
        for extra, k in zip(cells[29:35], (0, 5, 10, 15, 20, 25), strict=True):
            owner[extra] = k
        owner[cells[35]] = 99
        self.cells_of: dict[int, list[tuple[int, int]]] = {}
        for cell, k in owner.items():
            self.cells_of.setdefault(k, []).append(cell)
        self.host = 7  # commune 34008 has a hole filled by the enclave commune 34030 (k = 29)
        hi, hj = self.cells_of[self.host][0]
        cx, cy = X0 + (hi + 0.5) * CELL, Y0 + (hj + 0.5) * CELL
        self.hole: Ring = [(cx - 0.02, cy - 0.02), (cx - 0.02, cy + 0.02), (cx + 0.02, cy + 0.02),
                           (cx + 0.02, cy - 0.02), (cx - 0.02, cy - 0.02)]
        self.rings: dict[int, list[list[Ring]]] = {}
        for k, own in self.cells_of.items():
            polys = []
            for cell in own:
                polys.append([self.cell_ring(*cell)] + ([self.hole] if k == self.host else []))
            self.rings[k] = polys
        self.rings[29] = [[list(reversed(self.hole))]]

    @staticmethod
    def code(k: int) -> str:
        return "34999" if k == 99 else f"{34001 + k}"

    @staticmethod
    def tenant(k: int) -> str | None:
        return None if k == 99 else f"commune-{k + 1:02d}"

    def _edge(self, a: tuple[int, int], b: tuple[int, int]) -> Ring:
        """The jagged polyline from vertex a to vertex b, the same points (reversed) for both neighbours."""
        if (b, a) in self._edges:
            return list(reversed(self._edges[b, a]))
        if (a, b) not in self._edges:
            (x1, y1), (x2, y2) = self.vertex[a], self.vertex[b]
            frame = (a[0] == b[0] and a[0] in (0, N)) or (a[1] == b[1] and a[1] in (0, N))
            line = [(x1, y1)]
            for t in (0.25, 0.5, 0.75):
                wobble = 0.0 if frame else self._rng.uniform(-0.015, 0.015)
                # perpendicular wobble
                line.append((x1 + t * (x2 - x1) + wobble * (y2 - y1) / CELL,
                             y1 + t * (y2 - y1) - wobble * (x2 - x1) / CELL))
            line.append((x2, y2))
            self._edges[a, b] = line
        return self._edges[a, b]

    def cell_ring(self, i: int, j: int) -> Ring:
        corners = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1), (i, j)]
        ring: Ring = [self.vertex[i, j]]
        for a, b in itertools.pairwise(corners):
            ring.extend(self._edge(a, b)[1:])
        return ring

    def geojson(self) -> dict[str, Any]:
        features = []
        for k in sorted(self.rings):
            polys = [[[list(p) for p in ring] for ring in poly] for poly in self.rings[k]]
            geometry = ({"type": "Polygon", "coordinates": polys[0]} if len(polys) == 1
                        else {"type": "MultiPolygon", "coordinates": polys})
            features.append({"type": "Feature", "geometry": geometry,
                             "properties": {"INSEE_COM": self.code(k), "NOM": f"Commune {k + 1}"}})
        return {"type": "FeatureCollection", "features": features}

    def tenants_table(self) -> dict[str, str]:
        return {self.code(k): t for k in self.rings if (t := self.tenant(k)) is not None}

    def expected(self, x: float, y: float) -> int | None:
        """The commune of a point by winding numbers (independent of the code under test)."""
        for k, polys in self.rings.items():
            for poly in polys:
                if _winding(poly[0], x, y) != 0 and not any(_winding(h, x, y) != 0 for h in poly[1:]):
                    return k
        return None


def _winding(ring: Ring, x: float, y: float) -> int:
    """Dan Sunday's winding number of ``ring`` around (x, y)."""
    wn = 0
    for (x1, y1), (x2, y2) in itertools.pairwise(ring):
        side = (x2 - x1) * (y - y1) - (x - x1) * (y2 - y1)
        if y1 <= y < y2 and side > 0:
            wn += 1
        elif y2 <= y < y1 and side < 0:
            wn -= 1
    return wn


@pytest.fixture(scope="module")
def territory() -> Territory:
    return Territory()


def write_boundaries(tmp: Path, territory: Territory) -> Path:
    path = tmp / "communes.geojson"
    path.write_text(json.dumps(territory.geojson()), encoding="utf-8")
    return path


def location_routing(path: Path, territory: Territory, **extra: Any) -> dict[str, Any]:
    return {"location": {"boundaries": str(path), "code_property": "INSEE_COM", "name_property": "NOM",
                         "tenants": territory.tenants_table()}, **extra}


# ---------------------------------------------------------------------------- the index alone


def test_generated_file_has_the_advertised_shape(territory: Territory) -> None:
    doc = territory.geojson()
    kinds = [f["geometry"]["type"] for f in doc["features"]]
    assert len(territory.tenants_table()) == 30
    assert kinds.count("MultiPolygon") == 6
    host = next(f for f in doc["features"] if f["properties"]["INSEE_COM"] == "34008")
    assert len(host["geometry"]["coordinates"]) == 2  # exterior + hole
    index = parse_boundaries(doc, code_property="INSEE_COM", tenants=territory.tenants_table())
    assert len(index) == 31 and index.polygons == 37


def test_index_agrees_with_winding_numbers_on_20000_points(territory: Territory) -> None:
    index = parse_boundaries(territory.geojson(), code_property="INSEE_COM", tenants=territory.tenants_table())
    rng = random.Random(7)
    outside = 0
    for _ in range(20_000):
        # the territory plus a margin, so that some points are outside every commune
        x, y = rng.uniform(X0 - 0.05, X0 + N * CELL + 0.05), rng.uniform(Y0 - 0.05, Y0 + N * CELL + 0.05)
        expected = territory.expected(x, y)
        found = index.find(x, y)
        if expected is None:
            outside += 1
            assert found is None, (x, y)
        else:
            assert found is not None and found.code == territory.code(expected), (x, y, expected)
    assert outside > 500


def test_shared_vertex_goes_to_the_lowest_code(territory: Territory) -> None:
    index = parse_boundaries(territory.geojson(), code_property="INSEE_COM", tenants=territory.tenants_table())
    # inner vertex (2, 3) is a corner of cells (1,2), (2,2), (1,3), (2,3): communes 13, 14, 19, 20
    x, y = territory.vertex[2, 3]
    sharing = sorted(territory.code(k) for k, cells in territory.cells_of.items()
                     if {(1, 2), (2, 2), (1, 3), (2, 3)} & set(cells))
    assert len(sharing) == 4
    found = index.find(x, y)
    assert found is not None and found.code == sharing[0]
    # a point of a shared jagged edge: in both neighbours, the lower code wins
    mid = territory._edge((2, 3), (3, 3))[2]
    below = next(k for k, c in territory.cells_of.items() if (2, 2) in c)
    above = next(k for k, c in territory.cells_of.items() if (2, 3) in c)
    found = index.find(*mid)
    assert found is not None and found.code == min(territory.code(below), territory.code(above))
    # the enclave's edge is also the host's hole edge: 34008 < 34030, the host wins on the line
    corner = territory.hole[1]
    found = index.find(*corner)
    assert found is not None and found.code == "34008"
    inside_hole = (corner[0] + 0.001, corner[1] - 0.001)
    found = index.find(*inside_hole)
    assert found is not None and found.code == "34030"


def test_a_bad_boundary_file_names_the_feature(territory: Territory) -> None:
    doc = territory.geojson()
    doc["features"][3]["geometry"]["coordinates"][0].pop()  # unclosed exterior ring
    doc["features"][5]["geometry"] = {"type": "LineString", "coordinates": [[3, 43], [3.1, 43.1]]}
    doc["features"][9]["geometry"]["coordinates"][0][2] = ["a", 43.0]
    doc["features"][11]["geometry"]["coordinates"][0][1] = [200.0, 43.0]
    doc["features"][12]["geometry"]["coordinates"][0][1] = [True, 43.0]
    with pytest.raises(ConfigInvalid) as caught:
        parse_boundaries(doc, code_property="INSEE_COM", tenants=territory.tenants_table())
    problems = caught.value.problems
    assert any(p.startswith("/features/3/geometry/coordinates/0: the ring is not closed") for p in problems)
    assert "/features/5/geometry/type: 'LineString' is not Polygon or MultiPolygon" in problems
    assert any(p.startswith("/features/9/geometry/coordinates/0/2: a position must be") for p in problems)
    assert "/features/11/geometry/coordinates/0/1: [200.0, 43.0] is not a WGS84 longitude/latitude" in problems
    assert any(p.startswith("/features/12/geometry/coordinates/0/1: a position must be") for p in problems)
    assert len(problems) == 5
    unknown = {**territory.geojson(), "crs": {"type": "name", "properties": {"name": "EPSG:999999"}}}
    with pytest.raises(ConfigInvalid) as caught:
        parse_boundaries(unknown, code_property="INSEE_COM", tenants=territory.tenants_table())
    assert caught.value.problems == ["/crs/properties/name: unknown CRS 'EPSG:999999'"]


def test_a_lambert_93_file_is_reprojected(territory: Territory) -> None:
    from pyproj import Transformer

    to_l93 = Transformer.from_crs("EPSG:4326", "EPSG:2154", always_xy=True)
    doc = territory.geojson()
    for feature in doc["features"]:
        geometry = feature["geometry"]
        polys = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        for poly in polys:
            for ring in poly:
                for position in ring:
                    position[:] = list(to_l93.transform(position[0], position[1]))
    doc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}}
    assert 600_000 < doc["features"][1]["geometry"]["coordinates"][0][0][0] < 900_000  # metres, not degrees
    index = parse_boundaries(doc, code_property="INSEE_COM", tenants=territory.tenants_table())
    rng = random.Random(93)
    for _ in range(2000):
        x, y = rng.uniform(X0 - 0.05, X0 + N * CELL + 0.05), rng.uniform(Y0 - 0.05, Y0 + N * CELL + 0.05)
        expected = territory.expected(x, y)
        found = index.find(x, y)
        assert (found.code if found else None) == (territory.code(expected) if expected is not None else None)


def test_config_errors_name_the_key(tmp_path: Path, territory: Territory) -> None:
    doc = territory.geojson()
    doc["features"][2]["geometry"]["coordinates"][0] = doc["features"][2]["geometry"]["coordinates"][0][:3]
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps(doc), encoding="utf-8")
    (tmp_path / "devices.csv").write_text("id,tenant\nbin-1,lattes\nbin-2,not a tenant!\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        parse({"sources": [{"name": "feed", "adapter": "fake", "routing": {
            "order": ["mapping", "location", "attribute"],
            "mapping": {"file": str(tmp_path / "devices.csv")},
            "location": {"boundaries": str(bad), "code_property": "INSEE_COM", "tenants": {"34001": "a"}}}}]})
    problems = caught.value.problems
    assert any(p.startswith("/sources/0/routing/mapping/file: line 3: 'not a tenant!' is not a tenant name")
               for p in problems), problems
    assert any(p.startswith("/sources/0/routing/location/boundaries: /features/2/geometry/coordinates/0: "
                            "a linear ring needs at least 4 positions") for p in problems), problems
    assert "/sources/0/routing/order/2: 'attribute' is listed but has no attribute block" in problems
    # schema problems come first, before any file is read
    with pytest.raises(ConfigInvalid) as caught:
        parse({"sources": [{"name": "feed", "adapter": "fake",
                            "routing": {"location": {"boundaries": "/nonexistent.geojson"}}}]})
    assert all(p.startswith("/sources/0/routing/location") for p in caught.value.problems)
    assert not any("cannot read" in p for p in caught.value.problems)


def test_mapping_files_csv_and_yaml() -> None:
    assert parse_mapping("device,tenant\n\"a,1\",lattes\nb, perols\n", yaml_file=False) == {
        "a,1": "lattes", "b": "perols"}
    assert parse_mapping("urn:ngsi-ld:X:1: lattes\n'2': perols\n", yaml_file=True) == {
        "urn:ngsi-ld:X:1": "lattes", "2": "perols"}
    with pytest.raises(ConfigInvalid, match="mapped twice"):
        parse_mapping("id,tenant\na,lattes\na,perols\n", yaml_file=False)
    with pytest.raises(ConfigInvalid, match="header"):
        parse_mapping("a,lattes\n", yaml_file=False)


# ---------------------------------------------------------------------------- through a real run


async def _send_all(adapter: FakeAdapter, docs: list[dict[str, Any]]) -> None:
    await adapter.ready()
    for start in range(0, len(docs), 100):
        await asyncio.gather(*(adapter.send(d, key=d["device"]) for d in docs[start:start + 100]))


async def _letters(base: str, **params: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/admin/deadletters", params={"limit": "1000", **params}) as resp:
            assert resp.status == 200
            letters: list[dict[str, Any]] = (await resp.json())["deadLetters"]
            return letters


async def test_1000_readings_split_across_30_communes(tmp_path: Path, territory: Territory) -> None:
    boundaries = write_boundaries(tmp_path, territory)
    rng = random.Random(1000)
    docs: list[dict[str, Any]] = []
    expected: dict[str, str] = {}
    unroutable: dict[str, str] = {}
    for n in range(1000):
        device = f"dev-{n:04d}"
        if n % 100 == 0:  # 10 readings with no location
            docs.append({"device": device, "value": n})
            unroutable[device] = "no location"
            continue
        x, y = rng.uniform(X0 - 0.03, X0 + N * CELL + 0.03), rng.uniform(Y0 - 0.03, Y0 + N * CELL + 0.03)
        docs.append({"device": device, "value": n, "lon": x, "lat": y})
        k = territory.expected(x, y)
        tenant = territory.tenant(k) if k is not None else None
        if tenant is None:
            unroutable[device] = "outside" if k is None else "not served"
        else:
            expected[device] = tenant
    assert len(set(expected.values())) == 30  # every commune receives readings
    assert "outside" in unroutable.values() and "not served" in unroutable.values()
    cfg = config(tmp_path, sources=[{"name": "feed", "adapter": "feed", "tenant": "syndicat",
                                     "routing": location_routing(boundaries, territory)}])
    async with running(cfg, adapters={"feed": FeedAdapter}) as (base, app):
        rt = app[RUNTIME]
        await _send_all(FeedAdapter.instances["feed"], docs)
        store = rt.embedded_store
        tenants = sorted(set(expected.values()))

        async def total() -> bool:
            counts = [await store.count(t) for t in tenants]
            return sum(counts) == len(expected)

        await eventually(total, what="every routed reading stored")
        for device, tenant in expected.items():
            entity_id = urn("DeviceMeasurement", device)
            assert await store.get(tenant, entity_id) is not None, (device, tenant)
        for tenant in tenants:
            assert await store.count(tenant) == sum(1 for t in expected.values() if t == tenant)
        assert await store.count("syndicat") == 0  # routing replaced the source's tenant
        letters = await _letters(base, stage="routing")
        by_entity = {d["entityId"]: d for d in letters}
        assert set(by_entity) == {urn("DeviceMeasurement", d) for d in unroutable}
        for device, why in unroutable.items():
            reason = by_entity[urn("DeviceMeasurement", device)]["reason"]
            if why == "no location":
                assert reason == "unroutable: location: the entity has no location to place it in a commune"
            elif why == "outside":
                assert "is outside every commune of the boundary file" in reason
            else:
                assert "is in commune 34999 Commune 100, which no tenant serves" in reason
            assert by_entity[urn("DeviceMeasurement", device)]["pointer"] == "/location"
        assert all(d["tenant"] == "syndicat" for d in letters)


async def test_precedence_mapping_attribute_location(tmp_path: Path, territory: Territory) -> None:
    boundaries = write_boundaries(tmp_path, territory)
    mapping = tmp_path / "devices.yaml"
    mapping.write_text("dev-mapped: commune-05\n", encoding="utf-8")
    routing = location_routing(boundaries, territory, order=["mapping", "attribute", "location"],
                               mapping={"file": str(mapping)},
                               attribute={"name": "address.postalCode", "tenants": {"34970": "commune-09"}})
    cx, cy = X0 + 0.55, Y0 + 0.55  # deep inside cell (5, 5): commune 34999, served by nobody
    assert territory.expected(cx, cy) == 99
    inner = (X0 + 0.05, Y0 + 0.05)  # cell (0, 0): commune-01
    docs = [
        {"device": "dev-mapped", "value": 1, "lon": inner[0], "lat": inner[1], "postcode": "34970"},
        {"device": "dev-postcode", "value": 2, "lon": inner[0], "lat": inner[1], "postcode": "34970"},
        {"device": "dev-located", "value": 3, "lon": inner[0], "lat": inner[1], "postcode": "00000"},
        {"device": "dev-lost", "value": 4, "lon": cx, "lat": cy, "postcode": "00000"},
    ]
    cfg = config(tmp_path, sources=[{"name": "feed", "adapter": "feed", "routing": routing}])
    async with running(cfg, adapters={"feed": FeedAdapter}) as (base, app):
        rt = app[RUNTIME]
        await _send_all(FeedAdapter.instances["feed"], docs)
        store = rt.embedded_store
        for device, tenant in (("dev-mapped", "commune-05"), ("dev-postcode", "commune-09"),
                               ("dev-located", "commune-01")):
            await eventually(functools.partial(store.get, tenant, urn("DeviceMeasurement", device)), what=device)
        letters = await _letters(base, stage="routing")
        assert [d["entityId"] for d in letters] == [urn("DeviceMeasurement", "dev-lost")]
        assert letters[0]["reason"] == (
            "unroutable: mapping: no entry for entity 'urn:ngsi-ld:DeviceMeasurement:dev-lost' or device 'dev-lost'; "
            "attribute: address.postalCode = '00000' is in no routing table entry; "
            f"location: point ({cx:.7g}, {cy:.7g}) is in commune 34999 Commune 100, which no tenant serves")
        # the admin API shows the routing of the source
        async with aiohttp.ClientSession() as http, http.get(f"{base}/admin/sources") as resp:
            body = await resp.json()
        text = json.dumps(body)
        assert '"routing": ["mapping", "attribute", "location"]' in text


async def test_otherwise_source_tenant_keeps_unroutable_data(tmp_path: Path, territory: Territory) -> None:
    boundaries = write_boundaries(tmp_path, territory)
    cfg = config(tmp_path, sources=[{"name": "feed", "adapter": "feed", "tenant": "syndicat",
                                     "routing": location_routing(boundaries, territory, otherwise="source_tenant")}])
    async with running(cfg, adapters={"feed": FeedAdapter}) as (base, app):
        rt = app[RUNTIME]
        await _send_all(FeedAdapter.instances["feed"], [{"device": "far", "value": 1, "lon": 10.0, "lat": 50.0},
                                                        {"device": "near", "value": 2, "lon": 3.05, "lat": 43.05}])
        await eventually(lambda: rt.embedded_store.get("syndicat", urn("DeviceMeasurement", "far")), what="far")
        await eventually(lambda: rt.embedded_store.get("commune-01", urn("DeviceMeasurement", "near")), what="near")
        assert await _letters(base, stage="routing") == []


def test_unroutable_is_raised_by_the_router(tmp_path: Path, territory: Territory) -> None:
    boundaries = write_boundaries(tmp_path, territory)
    cfg = parse({"sources": [{"name": "feed", "adapter": "feed", "routing": location_routing(boundaries, territory)}]})
    router = cfg.sources[0].routing
    assert router is not None
    raw = RawMessage("feed", "", "2026-01-01T00:00:00Z", b"{}", "k")
    item = entity("DeviceMeasurement", urn("DeviceMeasurement", "x"), location=geo(point(3.05, 43.05)))
    assert router.tenant(raw, item) == "commune-01"
    polygon = {"type": "Polygon", "coordinates": [[[3.04, 43.04], [3.06, 43.04], [3.06, 43.06], [3.04, 43.04]]]}
    assert router.tenant(raw, {**item, "location": geo(polygon)}) == "commune-01"  # centre of its bounding box
    with pytest.raises(Unroutable) as caught:
        router.tenant(raw, {**item, "location": {"type": "GeoProperty", "value": {"type": "Point"}}})
    assert caught.value.pointer == "/location"


def test_index_over_1000_communes_agrees_with_brute_force() -> None:
    rng = random.Random(1000)
    nx, ny, size = 40, 25, 0.03
    vertex = {(i, j): (3.3 + i * size + (rng.uniform(-0.3, 0.3) * size if 0 < i < nx else 0.0),
                       43.3 + j * size + (rng.uniform(-0.3, 0.3) * size if 0 < j < ny else 0.0))
              for i in range(nx + 1) for j in range(ny + 1)}
    rings: dict[str, Ring] = {}
    for j in range(ny):
        for i in range(nx):
            rings[f"{10000 + j * nx + i}"] = [vertex[i, j], vertex[i + 1, j], vertex[i + 1, j + 1], vertex[i, j + 1],
                                             vertex[i, j]]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"code": code},
         "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}} for code, ring in rings.items()]}
    index = parse_boundaries(doc, code_property="code", tenants={c: f"t{c}" for c in rings})
    assert len(index) == 1000
    for _ in range(500):
        x, y = rng.uniform(3.29, 3.3 + nx * size + 0.01), rng.uniform(43.29, 43.3 + ny * size + 0.01)
        expected = next((code for code, ring in rings.items() if _winding(ring, x, y) != 0), None)
        found = index.find(x, y)
        assert (found.code if found else None) == expected, (x, y)


async def test_fixed_boundaries_apply_on_restart_and_letters_replay(tmp_path: Path, territory: Territory) -> None:
    boundaries = write_boundaries(tmp_path, territory)
    complete = boundaries.read_text(encoding="utf-8")
    doc = json.loads(complete)
    doc["features"] = [f for f in doc["features"] if f["properties"]["INSEE_COM"] != "34001"]  # a commune missing
    boundaries.write_text(json.dumps(doc), encoding="utf-8")
    cfg = config(tmp_path, sources=[{"name": "feed", "adapter": "feed", "tenant": "syndicat",
                                     "routing": location_routing(boundaries, territory)}])
    async with running(cfg, adapters={"feed": FeedAdapter}) as (base, app):
        rt = app[RUNTIME]
        await _send_all(FeedAdapter.instances["feed"], [{"device": "late", "value": 1, "lon": 3.05, "lat": 43.05}])
        (letter,) = await _letters(base, stage="routing")
        assert "outside every commune" in letter["reason"]
        async with aiohttp.ClientSession() as http:
            # a broken file: the restart is refused with the pointer, the source keeps running as it was
            broken = json.loads(complete)
            broken["features"][4]["geometry"]["coordinates"][0].pop()
            boundaries.write_text(json.dumps(broken), encoding="utf-8")
            async with http.post(f"{base}/admin/sources/feed/restart") as resp:
                assert resp.status == 400
                assert "/features/4/geometry/coordinates/0: the ring is not closed" in (await resp.json())["detail"]
            assert rt.sources["feed"].status.state == "running"
            # the fix: the complete file, a restart, a replay
            boundaries.write_text(complete, encoding="utf-8")
            async with http.post(f"{base}/admin/sources/feed/restart") as resp:
                assert resp.status == 200
            async with http.post(f"{base}/admin/deadletters/replay", json={"stage": "routing"}) as resp:
                assert (await resp.json())["replayed"] == 1
        await eventually(lambda: rt.embedded_store.get("commune-01", urn("DeviceMeasurement", "late")),
                         what="the replayed reading in its commune")
        assert await _letters(base, stage="routing") == []
