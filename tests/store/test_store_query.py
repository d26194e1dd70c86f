"""Query entities over HTTP: filters, q, geoQ, pagination, count, GeoJSON, POST query."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.store.settings import StoreSettings
from tests.store.conftest import BACKENDS, Reply, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""


def _light(n: int, state: str, lon: float, lat: float, **extra: Any) -> dict[str, Any]:
    return streetlight(
        f"{n:03d}",
        powerState={"type": "Property", "value": state},
        brightness={"type": "Property", "value": n},
        location={"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
        **extra,
    )


@pytest.fixture
def store_settings(tmp_path: Path, store_backend: str, request: pytest.FixtureRequest) -> StoreSettings:
    """This module's store lists entities on an unfiltered query (the demo's setting)."""
    database = request.getfixturevalue("postgres_url") if store_backend == "postgresql" else None
    return StoreSettings(data_dir=tmp_path / "data", allow_unfiltered_queries=True, database=database)


@pytest.fixture
async def city(server: StoreServer) -> StoreServer:
    """30 street lights along a line in Paris, every third one off, plus 2 devices."""
    lights = [_light(n, "off" if n % 3 == 0 else "on", 2.30 + n * 0.001, 48.85) for n in range(30)]
    devices = [
        {"id": f"urn:ngsi-ld:Device:{n}", "type": "Device", "batteryLevel": {"type": "Property", "value": n / 10}}
        for n in range(2)
    ]
    r = await server.post("/entityOperations/create", lights + devices)
    assert r.status == 201
    return server


async def _ids(server: StoreServer, query: str, **kw: Any) -> list[str]:
    r = await server.get(f"/entities?{query}", **kw)
    assert r.status == 200, r.raw
    return [e["id"] for e in r.json]


async def test_query_by_type_default_limit_and_order(city: StoreServer) -> None:
    ids = await _ids(city, "type=Streetlight")
    assert len(ids) == 20
    assert ids == sorted(ids)


def _rels(reply: Reply) -> dict[str, dict[str, list[str]]]:
    """rel → query parameters of the Link headers "next" and "prev"."""
    out = {}
    for link in reply.links:
        rel = link.split('rel="')[1].split('"')[0]
        if rel in ("next", "prev"):
            out[rel] = parse_qs(urlsplit(link[1:].split(">")[0]).query)
    return out


async def test_unfiltered_query_lists_the_tenant_paginated(city: StoreServer) -> None:
    """allow_unfiltered_queries=True: a plain GET /entities lists the tenant's entities, paginated."""
    r = await city.get("/entities")
    assert r.status == 200, r.raw
    ids = [e["id"] for e in r.json]
    assert len(ids) == 20 and ids == sorted(ids)  # default limit, id order
    assert ids[0] == "urn:ngsi-ld:Device:0"
    assert _rels(r)["next"]["offset"] == ["20"] and "prev" not in _rels(r)
    r = await city.get("/entities?offset=20&limit=20&count=true")
    assert r.headers["NGSILD-Results-Count"] == "32"
    assert [e["id"] for e in r.json] == [f"urn:ngsi-ld:Streetlight:{n:03d}" for n in range(18, 30)]
    assert "next" not in _rels(r) and _rels(r)["prev"]["offset"] == ["0"]
    r = await city.get("/entities?local=true&limit=100")
    assert len(r.json) == 32
    # another tenant sees its own entities only, and an unknown one is still 404
    other = {"NGSILD-Tenant": "commune-b"}
    assert (await city.post("/entityOperations/upsert", [streetlight("b1")], headers=other)).status == 201
    r = await city.get("/entities?count=true", headers=other)
    assert [e["id"] for e in r.json] == ["urn:ngsi-ld:Streetlight:b1"]
    assert r.headers["NGSILD-Results-Count"] == "1"
    r = await city.get("/entities", headers={"NGSILD-Tenant": "nowhere"})
    assert r.problem() == "NonexistentTenant"
    r = await city.post("/entityOperations/query?limit=100", {"type": "Query"})
    assert r.status == 200 and len(r.json) == 32


async def test_strict_store_refuses_unfiltered_queries(tmp_path: Path) -> None:
    """The default follows CIM 009: a query needs type, attrs, q or a geo-query (or local=true)."""
    srv = StoreServer(StoreSettings(data_dir=tmp_path / "strict"))
    await srv.start()
    try:
        assert (await srv.post("/entityOperations/create", [streetlight(n) for n in range(3)])).status == 201
        r = await srv.get("/entities")
        assert r.status == 400 and r.problem() == "BadRequestData"
        assert "unfiltered" in r.json["detail"]
        r = await srv.post("/entityOperations/query", {"type": "Query"})
        assert r.problem() == "BadRequestData"
        r = await srv.get("/entities?local=true")
        assert len(r.json) == 3
        r = await srv.get("/entities?type=Streetlight")
        assert len(r.json) == 3
    finally:
        await srv.close()


async def test_query_by_id_and_id_pattern(city: StoreServer) -> None:
    ids = await _ids(city, "id=urn:ngsi-ld:Streetlight:001,urn:ngsi-ld:Device:1")
    assert ids == ["urn:ngsi-ld:Device:1", "urn:ngsi-ld:Streetlight:001"]
    ids = await _ids(city, "idPattern=urn:ngsi-ld:Streetlight:00.*")
    assert len(ids) == 10
    ids = await _ids(city, "type=Streetlight&idPattern=.*:02[0-4]")
    assert ids == [f"urn:ngsi-ld:Streetlight:02{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("id=not-a-uri", "BadRequestData"),
        ("type=Streetlight&idPattern=(", "BadRequestData"),
        ("type=Streetlight&idPattern=(a)%5C1", "BadRequestData"),  # a backreference: not in RE2 syntax
        ("type=Streetlight&idPattern=" + "a" * 300, "TooComplexQuery"),
        ("type=Streetlight&q=brightness%3D%3D", "BadRequestData"),
        ("type=Streetlight&q=" + "a%3D%3D1;" * 2000 + "a%3D%3D1", "TooComplexQuery"),
        ("type=Streetlight&limit=1001", "TooManyResults"),
        ("type=Streetlight&limit=-1", "BadRequestData"),
        ("type=Streetlight&limit=abc", "BadRequestData"),
        ("type=Streetlight&offset=-3", "BadRequestData"),
        ("type=Streetlight&limit=0", "BadRequestData"),
        ("type=Streetlight&count=yes", "BadRequestData"),
        ("type=Streetlight&georel=near;maxDistance==10&geometry=Point", "BadRequestData"),
        ("type=Streetlight&georel=around&geometry=Point&coordinates=[2,48]", "BadRequestData"),
        ("type=Streetlight&georel=within&geometry=Polygon&coordinates=[[[0,0],[1,1]]]", "BadRequestData"),
        ("type=Streetlight&geoproperty=location", "BadRequestData"),
        ("type=Streetlight&orderBy=brightness;sideways", "BadRequestData"),
        ("type=(Streetlight", "BadRequestData"),
    ],
)
async def test_query_errors(city: StoreServer, query: str, problem: str) -> None:
    r = await city.get(f"/entities?{query}")
    assert r.problem() == problem, r.json


async def test_too_many_geometry_vertices_is_too_complex(city: StoreServer) -> None:
    ring = [[2 + i * 1e-4, 48] for i in range(1500)] + [[2, 49], [2, 48]]
    coords = str([ring]).replace(" ", "")
    r = await city.get("/entities", params={"type": "Streetlight", "georel": "within", "geometry": "Polygon",
                                            "coordinates": coords})
    assert r.problem() == "TooComplexQuery"


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ('powerState=="off"', 10),
        ('powerState!="off"', 20),
        ("brightness>25", 4),
        ("brightness>=10;brightness<12", 2),
        ('brightness<2|powerState=="off"', 11),
        ("brightness==3..5", 3),
        ("nothing", 0),
        ("brightness", 30),
    ],
)
async def test_q(city: StoreServer, q: str, expected: int) -> None:
    r = await city.get("/entities", params={"type": "Streetlight", "q": q, "count": "true", "limit": "0"})
    assert r.status == 200, r.json
    assert r.headers["NGSILD-Results-Count"] == str(expected)
    assert r.json == []


async def test_attrs_filters_entities(city: StoreServer) -> None:
    ids = await _ids(city, "attrs=batteryLevel")
    assert ids == ["urn:ngsi-ld:Device:0", "urn:ngsi-ld:Device:1"]


async def test_geo_near(city: StoreServer) -> None:
    # Lights are ~73 m apart along a parallel; 200 m around light 10 catches lights 8..12.
    coords = "[2.310,48.85]"
    ids = await _ids(city, f"type=Streetlight&georel=near;maxDistance==200&geometry=Point&coordinates={coords}")
    assert ids == [f"urn:ngsi-ld:Streetlight:{n:03d}" for n in range(8, 13)]
    far = await _ids(
        city, f"type=Streetlight&georel=near;minDistance==1000&geometry=Point&coordinates={coords}&limit=100"
    )
    assert far == [f"urn:ngsi-ld:Streetlight:{n:03d}" for n in range(24, 30)]


async def test_geo_within_polygon_with_q(city: StoreServer) -> None:
    poly = "[[[2.3045,48.84],[2.3105,48.84],[2.3105,48.86],[2.3045,48.86],[2.3045,48.84]]]"
    r = await city.get("/entities", params={
        "type": "Streetlight", "georel": "within", "geometry": "Polygon", "coordinates": poly,
        "q": 'powerState=="on"',
    })
    assert [e["id"][-3:] for e in r.json] == ["005", "007", "008", "010"]


async def test_geo_intersects_and_disjoint(city: StoreServer) -> None:
    line = "[[2.3045,48.84],[2.3045,48.86]]"
    ids = await _ids(city, f"type=Streetlight&georel=intersects&geometry=LineString&coordinates={line}")
    assert ids == []
    box = "[[[2.2995,48.84],[2.3015,48.84],[2.3015,48.86],[2.2995,48.86],[2.2995,48.84]]]"
    ids = await _ids(city, f"type=Streetlight&georel=intersects&geometry=Polygon&coordinates={box}")
    assert ids == ["urn:ngsi-ld:Streetlight:000", "urn:ngsi-ld:Streetlight:001"]
    ids = await _ids(city, f"type=Streetlight&georel=disjoint&geometry=Polygon&coordinates={box}&limit=100")
    assert len(ids) == 28


async def test_geoproperty_other_than_location(server: StoreServer) -> None:
    area = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5.0, 45.0]}}
    await server.post("/entities", streetlight(1, observationSpace=area))
    base = "type=Streetlight&georel=near;maxDistance==10&geometry=Point&coordinates=[5.0,45.0]"
    assert await _ids(server, base + "&geoproperty=observationSpace") == ["urn:ngsi-ld:Streetlight:1"]
    assert await _ids(server, base) == []


async def test_pagination_links_and_count(city: StoreServer) -> None:
    r = await city.get("/entities?type=Streetlight&limit=10&offset=10&count=true")
    assert r.headers["NGSILD-Results-Count"] == "30"
    assert [e["id"][-3:] for e in r.json] == [f"{n:03d}" for n in range(10, 20)]
    rels = {
        link.split('rel="')[1].split('"')[0]: link for link in r.links if 'rel="next"' in link or 'rel="prev"' in link
    }
    nxt = parse_qs(urlsplit(rels["next"][1:].split(">")[0]).query)
    prev = parse_qs(urlsplit(rels["prev"][1:].split(">")[0]).query)
    assert nxt["offset"] == ["20"] and prev["offset"] == ["0"]
    last = await city.get("/entities?type=Streetlight&limit=10&offset=20")
    assert len(last.json) == 10
    assert not any('rel="next"' in link for link in last.links)


async def test_pagination_with_q_filter(city: StoreServer) -> None:
    r = await city.get("/entities", params={"type": "Streetlight", "q": 'powerState=="on"', "limit": "5",
                                            "offset": "5", "count": "true"})
    assert r.headers["NGSILD-Results-Count"] == "20"
    assert len(r.json) == 5
    assert any('rel="next"' in link for link in r.links)


async def test_count_header_absent_without_count(city: StoreServer) -> None:
    r = await city.get("/entities?type=Device")
    assert "NGSILD-Results-Count" not in r.headers


async def test_options_count_is_read_as_count_true(city: StoreServer) -> None:
    """FIWARE clients (FiLiP, ngsildclient) ask for the total with options=count: accepted leniently."""
    r = await city.get("/entities?type=Device&options=count,keyValues")
    assert r.status == 200
    assert r.headers["NGSILD-Results-Count"] == (await city.get("/entities?type=Device&count=true")).headers[
        "NGSILD-Results-Count"]
    assert all("type" in e and not isinstance(e.get("name"), dict) for e in r.json)  # keyValues still applies
    r = await city.get("/entities?type=Device&options=counting")
    assert r.status == 400


async def test_order_by(city: StoreServer) -> None:
    r = await city.get("/entities?type=Streetlight&orderBy=brightness;desc&limit=3&options=keyValues")
    assert [e["brightness"] for e in r.json] == [29, 28, 27]
    r = await city.get("/entities?type=Streetlight&orderBy=brightness&limit=2&options=keyValues")
    assert [e["brightness"] for e in r.json] == [0, 1]


async def test_query_geojson(city: StoreServer) -> None:
    r = await city.get(
        "/entities?type=Streetlight&limit=2&options=keyValues", headers={"Accept": "application/geo+json"}
    )
    assert r.headers["Content-Type"] == "application/geo+json"
    assert r.json["type"] == "FeatureCollection"
    assert [f["geometry"]["type"] for f in r.json["features"]] == ["Point", "Point"]
    assert r.json["features"][0]["properties"]["powerState"] == "off"


async def test_query_ld_json_has_context_per_entity(city: StoreServer) -> None:
    r = await city.get("/entities?type=Device", headers={"Accept": "application/ld+json"})
    assert all("@context" in e for e in r.json)


async def test_type_or_expression(city: StoreServer) -> None:
    r = await city.get("/entities?type=Device,Streetlight&count=true&limit=0")
    assert r.headers["NGSILD-Results-Count"] == "32"
    r = await city.get("/entities?type=Device|Streetlight&count=true&limit=0")
    assert r.headers["NGSILD-Results-Count"] == "32"


async def test_post_query(city: StoreServer) -> None:
    body = {
        "type": "Query",
        "entities": [{"type": "Streetlight"}],
        "q": 'powerState=="off"',
        "geoQ": {"georel": "near;maxDistance==300", "geometry": "Point", "coordinates": [2.31, 48.85]},
        "attrs": ["brightness"],
    }
    r = await city.post("/entityOperations/query?options=keyValues&count=true", body)
    assert r.status == 200, r.json
    assert r.headers["NGSILD-Results-Count"] == "3"
    assert r.json == [
        {"id": f"urn:ngsi-ld:Streetlight:{n:03d}", "type": "Streetlight", "brightness": n} for n in (6, 9, 12)
    ]


async def test_post_query_selectors(city: StoreServer) -> None:
    body = {"type": "Query", "entities": [{"type": "Device"}, {"type": "Streetlight", "idPattern": ".*"}]}
    r = await city.post("/entityOperations/query?limit=100", body)
    assert r.status == 501 or len(r.json) == 32
    body = {"type": "Query", "entities": [{"type": "Device", "id": "urn:ngsi-ld:Device:1"}]}
    r = await city.post("/entityOperations/query", body)
    assert [e["id"] for e in r.json] == ["urn:ngsi-ld:Device:1"]


@pytest.mark.parametrize(
    "body",
    [[], {"type": "Nope"}, {"type": "Query", "unknown": 1}, {"type": "Query", "entities": [{}]},
     {"type": "Query", "q": 5}, {"type": "Query", "geoQ": "x"}],
)
async def test_post_query_errors(city: StoreServer, body: Any) -> None:
    r = await city.post("/entityOperations/query", body)
    assert r.problem() == "BadRequestData"


@pytest.mark.parametrize(
    "q",
    ["v>5", "v>=5", "v<5", "v<=5", "v==5", "v==3,7", "v==2..6", "v>5;w==1", "v>5|w==1", "v!=5", "v==5.0"],
)
async def test_numeric_prefilter_never_loses_a_match(server: StoreServer, q: str) -> None:
    """The SQL prefilter of numeric q terms keeps every entity the exact evaluation keeps."""
    from gateway.store import query as query_mod
    from gateway.store.jsonld import Context

    shapes: list[Any] = [
        1, 5, 7, 5.0, 9.5, "8", True, [1, 9], {"a": 6},
        {"type": "ListProperty", "valueList": [2, 8]},
        {"type": "JsonProperty", "json": 6},
        {"type": "Relationship", "object": "urn:x:5"},
        [{"type": "Property", "value": 1}, {"type": "Property", "value": 8, "datasetId": "urn:d:1"}],
    ]
    entities = []
    for n, shape in enumerate(shapes):
        value = shape if isinstance(shape, dict) and "type" in shape else (
            shape if isinstance(shape, list) and shape and isinstance(shape[0], dict)
            else {"type": "Property", "value": shape})
        w = {"type": "Property", "value": n % 2}
        entities.append({"id": f"urn:ngsi-ld:T:{n:02d}", "type": "T", "v": value, "w": w})
    assert (await server.post("/entityOperations/create", entities)).status == 201
    r = await server.get("/entities", params={"type": "T", "q": q, "limit": "100"})
    assert r.status == 200, r.json
    got = [e["id"] for e in r.json]
    ctx = Context([])
    expr = query_mod.parse_q(q)
    expected = [e["id"] for e in entities if expr.evaluate(ctx.expand_entity(e), ctx.expand_term)]
    assert got == expected


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("type=Streetlight&scopeQ=nope", "BadRequestData"),
        ("type=Streetlight&lang=", "BadRequestData"),
        ("type=Streetlight&attrs=a%20b", "BadRequestData"),
        ("type=Streetlight&omit=a%20b", "BadRequestData"),
        ("type=Streetlight&local=maybe", "BadRequestData"),
        ("type=Streetlight&georel=near;maxDistance==10&geometry=Cube&coordinates=[1,2]", "BadRequestData"),
        ("type=Streetlight&georel=near;maxDistance==10&geometry=Point&coordinates=[1,", "BadRequestData"),
        ("type=Streetlight&options=noOverwrite", "InvalidRequest"),
        ("id=" + ",".join(f"urn:x:{i}" for i in range(1001)), "TooComplexQuery"),
    ],
)
async def test_more_query_errors(city: StoreServer, query: str, problem: str) -> None:
    r = await city.get(f"/entities?{query}")
    assert r.problem() == problem, r.json


async def test_order_by_missing_values_first_and_id(city: StoreServer) -> None:
    ids = await _ids(city, "type=Device,Streetlight&orderBy=batteryLevel;desc&limit=3")
    assert ids[:2] == ["urn:ngsi-ld:Device:1", "urn:ngsi-ld:Device:0"]
    ids = await _ids(city, "type=Device&orderBy=id;desc")
    assert ids == ["urn:ngsi-ld:Device:1", "urn:ngsi-ld:Device:0"]


async def test_count_with_geo_and_offset_beyond_end(city: StoreServer) -> None:
    r = await city.get("/entities?type=Streetlight&georel=near;maxDistance==200&geometry=Point"
                       "&coordinates=[2.310,48.85]&count=true&offset=100")
    assert r.json == []
    assert r.headers["NGSILD-Results-Count"] == "5"
    assert any('rel="prev"' in link for link in r.links)


async def test_query_key_values_attrs_and_sys_attrs(city: StoreServer) -> None:
    r = await city.get("/entities?type=Device&attrs=batteryLevel&options=keyValues,sysAttrs")
    assert r.json[0]["batteryLevel"] == 0.0
    assert "createdAt" in r.json[0]
