"""Query rules of CIM 009 V1.9.1 the ETSI suite checks: minimal parameters, orderBy, scopeQ, GeoJSON @context."""

from __future__ import annotations

from typing import Any

from tests.store.conftest import BACKENDS, LINK_JONCTION, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""


def _ids(body: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in body]


async def test_ids_alone_do_not_make_a_query(server: StoreServer) -> None:
    """§6.4.3.2 (ETSI 019_03_05): type, attrs, q or a geo-query is needed; id/idPattern alone are not enough."""
    await server.post("/entities", streetlight(1))
    r = await server.get("/entities", params={"id": "urn:ngsi-ld:Streetlight:1"})
    assert r.status == 400 and r.problem() == "BadRequestData"
    r = await server.get("/entities", params={"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight"})
    assert _ids(r.json) == ["urn:ngsi-ld:Streetlight:1"]
    r = await server.get("/entities", params={"attrs": "id,type"})  # entity members are not attribute names
    assert r.status == 400 and r.problem() == "BadRequestData"


async def test_order_by_several_items_and_members(server: StoreServer) -> None:
    """§4.23 (ETSI 019_19): orderBy items separated by commas, each asc/desc, on members or sub-paths."""
    for n, (name, rank) in enumerate([("b", 1), ("a", 2), ("a", 1)], start=1):
        entity = streetlight(n, name={"type": "Property", "value": name,
                                      "rank": {"type": "Property", "value": rank}})
        assert (await server.post("/entities", entity)).status == 201
    created = await server.get("/entities", params={"type": "Streetlight", "orderBy": "createdAt;desc"})
    assert _ids(created.json) == [f"urn:ngsi-ld:Streetlight:{n}" for n in (3, 2, 1)]
    mixed = await server.get("/entities", params={"type": "Streetlight", "orderBy": "name;asc,name.rank;desc"})
    assert _ids(mixed.json) == [f"urn:ngsi-ld:Streetlight:{n}" for n in (2, 3, 1)]
    by_attr_time = await server.get("/entities", params={"type": "Streetlight", "orderBy": "name.createdAt"})
    assert _ids(by_attr_time.json) == [f"urn:ngsi-ld:Streetlight:{n}" for n in (1, 2, 3)]
    r = await server.get("/entities", params={"type": "Streetlight", "orderBy": "name;sideways"})
    assert r.status == 400 and r.problem() == "BadRequestData"


async def test_scope_plus_matches_one_segment_anywhere(server: StoreServer) -> None:
    """§4.19 (ETSI 019_01_06): '+' stands for exactly one segment, also in the middle of a scope."""
    await server.post("/entities", streetlight(1, scope="/Madrid/Gardens/ParqueNorte"))
    await server.post("/entities", streetlight(2, scope=["/Madrid/Parks/ParqueNorte", "/CompanyA"]))
    await server.post("/entities", streetlight(3, scope="/Madrid/Gardens/Other/ParqueNorte"))
    r = await server.get("/entities", params={"type": "Streetlight", "scopeQ": "/Madrid/+/ParqueNorte"})
    assert _ids(r.json) == ["urn:ngsi-ld:Streetlight:1", "urn:ngsi-ld:Streetlight:2"]
    r = await server.get("/entities", params={"type": "Streetlight", "scopeQ": "/Madrid/#"})
    assert len(r.json) == 3


async def test_geojson_carries_the_context_in_the_body(server: StoreServer) -> None:
    """§6.3.15 (ETSI 018_05, 019_05): a GeoJSON answer has the request's @context in its body."""
    await server.post("/entities", streetlight(1), headers={"Link": LINK_JONCTION})
    headers = {"Accept": "application/geo+json", "Link": LINK_JONCTION}
    one = await server.get("/entities/urn:ngsi-ld:Streetlight:1", headers=headers)
    assert one.headers["Content-Type"].startswith("application/geo+json")
    assert one.json["type"] == "Feature" and one.json["@context"] == ["https://jonction.eu/ns/context/v1.jsonld"]
    many = await server.get("/entities", params={"type": "Streetlight"}, headers=headers)
    assert many.json["type"] == "FeatureCollection" and len(many.json["features"]) == 1
    assert many.json["@context"] == "https://jonction.eu/ns/context/v1.jsonld"
    posted = await server.post("/entityOperations/query", {"type": "Query", "entities": [{"type": "Streetlight"}]},
                               headers=headers)
    assert posted.status == 200 and posted.json["features"][0]["id"] == "urn:ngsi-ld:Streetlight:1"


async def test_query_drops_entities_pick_leaves_empty(server: StoreServer) -> None:
    """§4.21 (ETSI 019_17_01): with pick, an entity with nothing left is not part of the answer."""
    await server.post("/entities", streetlight(1, name={"type": "Property", "value": "one"}))
    await server.post("/entities", streetlight(2))
    r = await server.get("/entities", params={"type": "Streetlight", "pick": "name"})
    assert r.json == [{"name": {"type": "Property", "value": "one"}}]


async def test_single_scope_is_a_string(server: StoreServer) -> None:
    """JSON-LD compaction of one scope gives a string (ETSI 001_11_01), several stay an array."""
    await server.post("/entities", streetlight(1, scope="/Madrid/Centro"))
    await server.post("/entities", streetlight(2, scope=["/A", "/B"]))
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).json["scope"] == "/Madrid/Centro"
    kv = await server.get("/entities/urn:ngsi-ld:Streetlight:1", params={"options": "keyValues"})
    assert kv.json["scope"] == "/Madrid/Centro"
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:2")).json["scope"] == ["/A", "/B"]
