"""``near;maxDistance`` from a Point gives the same answer on both backends, the great-circle test of
§4.10 as the store reads it: the border of the circle (to the millimetre), several instances, other
geometries, and pages when Python rejects candidates the SQL prefilters keep. A guard for any move
of the distance test into SQL (a margin too small, another Earth radius, a skipped instance)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from gateway.store.geo import EARTH_RADIUS_M, haversine
from tests.store.conftest import BACKENDS, LINK_JONCTION, StoreServer, streetlight

STORE_BACKENDS = BACKENDS

_HEADERS = {"Link": LINK_JONCTION}
CENTRE = (2.35, 48.85)
RADIUS = 500.0


def _at(distance: float, bearing: float) -> list[float]:
    """The lon/lat at ``distance`` metres from CENTRE towards ``bearing`` (radians), on the sphere."""
    lon1, lat1 = map(math.radians, CENTRE)
    d = distance / EARTH_RADIUS_M
    lat2 = math.asin(math.sin(lat1) * math.cos(d) + math.cos(lat1) * math.sin(d) * math.cos(bearing))
    lon2 = lon1 + math.atan2(math.sin(bearing) * math.sin(d) * math.cos(lat1),
                             math.cos(d) - math.sin(lat1) * math.sin(lat2))
    return [math.degrees(lon2), math.degrees(lat2)]


def _point_lights() -> list[dict[str, Any]]:
    """Points spread over and around the circle, many within a metre of its border."""
    rng = random.Random(11)
    out = []
    for i in range(240):
        if i % 3 == 0:
            distance = RADIUS + rng.uniform(-1.0, 1.0)  # the border, both sides
        elif i % 3 == 1:
            distance = RADIUS + rng.uniform(-0.001, 0.001)
        else:
            distance = rng.uniform(0, 1.5 * RADIUS)
        light = streetlight(f"P{i:04d}", illuminanceLevel={"type": "Property", "value": i % 100})
        light["location"]["value"]["coordinates"] = _at(distance, rng.uniform(0, 2 * math.pi))
        out.append(light)
    return out


def _odd_lights() -> list[dict[str, Any]]:
    """Locations the SQL test leaves to Python: several instances, polygons, lines, not a GeoProperty."""
    far, near = _at(3 * RADIUS, 0.3), _at(0.9 * RADIUS, 2.0)
    lights = [
        streetlight("X-two-instances-one-near", location=[
            {"type": "GeoProperty", "value": {"type": "Point", "coordinates": far}},
            {"type": "GeoProperty", "datasetId": "urn:ngsi-ld:Dataset:b",
             "value": {"type": "Point", "coordinates": near}},
        ]),
        streetlight("X-two-instances-far", location=[
            {"type": "GeoProperty", "value": {"type": "Point", "coordinates": far}},
            {"type": "GeoProperty", "datasetId": "urn:ngsi-ld:Dataset:b",
             "value": {"type": "Point", "coordinates": _at(2 * RADIUS, 1.0)}},
        ]),
        # a polygon whose corners are all out of the circle but whose edge passes near the centre
        streetlight("X-polygon-edge-near", location={"type": "GeoProperty", "value": {
            "type": "Polygon", "coordinates": [[
                _at(1.2 * RADIUS, math.radians(-60)), _at(5 * RADIUS, math.radians(-30)),
                _at(5 * RADIUS, math.radians(30)), _at(1.2 * RADIUS, math.radians(60)),
                _at(1.2 * RADIUS, math.radians(-60))]]}}),
        streetlight("X-line-far", location={"type": "GeoProperty", "value": {"type": "LineString", "coordinates": [
            _at(2 * RADIUS, 0.0), _at(2 * RADIUS, 0.5)]}}),
        streetlight("X-property-not-geo", location={"type": "Property", "value": {"type": "Point",
                                                                                 "coordinates": near}}),
    ]
    for light in lights:
        light["illuminanceLevel"] = {"type": "Property", "value": 80}
    return lights


async def _all_ids(server: StoreServer, params: dict[str, str]) -> tuple[list[str], str | None]:
    reply = await server.get("/entities", params={**params, "limit": "1000", "count": "true"}, headers=_HEADERS)
    assert reply.status == 200, reply.raw
    return [e["id"] for e in reply.json], reply.headers.get("NGSILD-Results-Count")


def _near() -> dict[str, str]:
    return {"type": "Streetlight", "georel": f"near;maxDistance=={RADIUS:g}", "geometry": "Point",
            "coordinates": f"[{CENTRE[0]},{CENTRE[1]}]"}


async def test_near_point_border_matches_the_haversine_test(server: StoreServer) -> None:
    """Every point within the distance (great-circle, as §4.10 reads it here) and no other, at the border too."""
    lights = _point_lights()
    reply = await server.post("/entityOperations/upsert", lights, headers=_HEADERS)
    assert reply.status == 201, reply.raw
    expected = sorted(
        light["id"] for light in lights
        if haversine(tuple(light["location"]["value"]["coordinates"]), CENTRE) <= RADIUS  # type: ignore[arg-type]
    )
    assert 60 < len(expected) < 200, "the set should hold matches and rejects"
    ids, count = await _all_ids(server, _near())
    assert ids == expected and count == str(len(expected))
    with_q = sorted(
        light["id"] for light in lights if light["id"] in expected and light["illuminanceLevel"]["value"] > 50
    )
    ids, count = await _all_ids(server, {**_near(), "q": "illuminanceLevel>50"})
    assert ids == with_q and count == str(len(with_q))


async def test_near_leaves_other_locations_to_the_exact_test(server: StoreServer) -> None:
    """Several instances, polygons and lines are decided on their real geometry; a Property is no location."""
    reply = await server.post("/entityOperations/upsert", _odd_lights(), headers=_HEADERS)
    assert reply.status == 201, reply.raw
    ids, _ = await _all_ids(server, {**_near(), "q": "illuminanceLevel>50"})
    assert ids == ["urn:ngsi-ld:Streetlight:X-polygon-edge-near", "urn:ngsi-ld:Streetlight:X-two-instances-one-near"]


@pytest.mark.parametrize("limit", [1, 5, 30])
async def test_pages_refill_when_python_rejects(server: StoreServer, limit: int) -> None:
    """Entities the SQL keeps but Python rejects (a second illuminanceLevel instance below the threshold)
    cost another round trip, never a missing or repeated match."""
    lights = _point_lights()
    for i, light in enumerate(lights):
        if i % 2:
            light["illuminanceLevel"] = [
                light["illuminanceLevel"] | {"value": 90},
                {"type": "Property", "value": 10, "datasetId": "urn:ngsi-ld:Dataset:low"},
            ]
    reply = await server.post("/entityOperations/upsert", lights, headers=_HEADERS)
    assert reply.status == 201, reply.raw
    query = {**_near(), "q": "illuminanceLevel>50"}
    everything, count = await _all_ids(server, query)
    assert everything and count == str(len(everything)) and everything == sorted(everything)
    walked: list[str] = []
    offset = 0
    while True:
        reply = await server.get("/entities", params={**query, "limit": str(limit), "offset": str(offset)},
                                 headers=_HEADERS)
        assert reply.status == 200, reply.raw
        page = [e["id"] for e in reply.json]
        walked.extend(page)
        offset += limit
        if not any('rel="next"' in link for link in reply.links):
            break
        assert len(page) == limit
    assert walked == everything
