"""Linked entity retrieval (join=inline|flat, joinLevel, §4.5.23) and nested pick/omit (§4.21)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.store.problems import NgsiError
from gateway.store.representation import Projection, parse_projection
from tests.store.conftest import BACKENDS, StoreServer

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

B = "urn:ngsi-ld:Building:1"
PARIS = "urn:ngsi-ld:City:Paris"
FRANCE = "urn:ngsi-ld:Country:France"


def _rel(target: str) -> dict[str, str]:
    return {"type": "Relationship", "object": target}


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


async def _seed(server: StoreServer) -> None:
    entities = [
        {"id": B, "type": "Building", "name": _prop("Tower"), "locatedAt": _rel(PARIS)},
        {"id": PARIS, "type": "City", "name": _prop("Paris"), "isInCountry": _rel(FRANCE)},
        {"id": FRANCE, "type": "Country", "name": _prop("France"), "description": _prop("a country")},
    ]
    assert (await server.post("/entityOperations/create", entities)).status == 201


async def _get(server: StoreServer, path: str, params: dict[str, str]) -> Any:
    r = await server.get(path, params=params)
    assert r.status == 200, r.raw
    return r.json


async def test_inline_one_and_two_levels(server: StoreServer) -> None:
    await _seed(server)
    one = await _get(server, f"/entities/{B}", {"join": "inline"})
    city = one["locatedAt"]["entity"]
    assert one["locatedAt"]["object"] == PARIS
    assert city["id"] == PARIS and city["name"]["value"] == "Paris"
    assert "entity" not in city["isInCountry"]  # joinLevel defaults to 1
    two = await _get(server, f"/entities/{B}", {"join": "inline", "joinLevel": "2"})
    assert two["locatedAt"]["entity"]["isInCountry"]["entity"]["id"] == FRANCE


async def test_flat_lists_each_linked_entity_once(server: StoreServer) -> None:
    await _seed(server)
    other = {"id": "urn:ngsi-ld:Building:2", "type": "Building", "locatedAt": _rel(PARIS)}
    assert (await server.post("/entities", other)).status == 201
    flat = await _get(server, "/entities", {"type": "Building", "join": "flat", "joinLevel": "2"})
    assert [e["id"] for e in flat] == [B, "urn:ngsi-ld:Building:2", PARIS, FRANCE]
    assert "entity" not in flat[0]["locatedAt"]


async def test_flat_without_linked_entity_is_the_entity(server: StoreServer) -> None:
    lonely = {"id": B, "type": "Building", "locatedAt": _rel("urn:ngsi-ld:City:Nowhere")}
    assert (await server.post("/entities", lonely)).status == 201
    for mode in ("flat", "inline"):
        body = await _get(server, f"/entities/{B}", {"join": mode})
        assert body == lonely  # a link to a missing entity stays a plain relationship


async def test_key_values_inline_replaces_the_relationship(server: StoreServer) -> None:
    await _seed(server)
    body = await _get(server, f"/entities/{B}", {"join": "inline", "options": "keyValues"})
    assert body["locatedAt"] == {"id": PARIS, "type": "City", "name": "Paris", "isInCountry": FRANCE}
    concise = await _get(server, f"/entities/{B}", {"join": "inline", "format": "concise"})
    assert concise["locatedAt"]["object"] == PARIS and concise["locatedAt"]["entity"]["name"] == "Paris"


async def test_nested_pick_and_omit(server: StoreServer) -> None:
    await _seed(server)
    picked = await _get(server, f"/entities/{B}", {"join": "flat", "joinLevel": "2",
                                                  "pick": "id,locatedAt{id,name}"})
    # isInCountry is not picked on the city, so the country is never reached
    assert picked == [{"id": B, "locatedAt": _rel(PARIS)}, {"id": PARIS, "name": _prop("Paris")}]
    omitted = await _get(server, f"/entities/{B}", {"join": "inline", "joinLevel": "2",
                                                   "omit": "type,locatedAt{name,isInCountry{description}}"})
    assert "type" not in omitted and omitted["name"] == _prop("Tower")
    city = omitted["locatedAt"]["entity"]
    assert "name" not in city and city["type"] == "City"
    assert city["isInCountry"]["entity"] == {"id": FRANCE, "type": "Country", "name": _prop("France")}


async def test_cycles_end(server: StoreServer) -> None:
    a = {"id": "urn:ngsi-ld:Node:a", "type": "Node", "next": _rel("urn:ngsi-ld:Node:b")}
    b = {"id": "urn:ngsi-ld:Node:b", "type": "Node", "next": _rel("urn:ngsi-ld:Node:a")}
    assert (await server.post("/entityOperations/create", [a, b])).status == 201
    flat = await _get(server, "/entities/urn:ngsi-ld:Node:a", {"join": "flat", "joinLevel": "5"})
    assert [e["id"] for e in flat] == ["urn:ngsi-ld:Node:a", "urn:ngsi-ld:Node:b"]
    inline = await _get(server, "/entities/urn:ngsi-ld:Node:a", {"join": "inline", "joinLevel": "3"})
    assert inline["next"]["entity"]["next"]["entity"]["next"]["entity"]["id"] == "urn:ngsi-ld:Node:b"


async def test_post_query_with_join(server: StoreServer) -> None:
    await _seed(server)
    r = await server.post("/entityOperations/query", {"type": "Query", "entities": [{"type": "Building"}],
                                                      "join": "inline"})
    assert r.status == 200 and r.json[0]["locatedAt"]["entity"]["id"] == PARIS


@pytest.mark.parametrize("params", [{"join": "sideways"}, {"join": "flat", "joinLevel": "0"},
                                    {"join": "flat", "joinLevel": "x"}])
async def test_bad_join_parameters(server: StoreServer, params: dict[str, str]) -> None:
    await _seed(server)
    r = await server.get(f"/entities/{B}", params=params)
    assert r.status == 400 and r.problem() == "BadRequestData"
    r = await server.get(f"/entities/{B}", params={"join": "flat", "joinLevel": "99"})
    assert r.status == 403 and r.problem() == "TooComplexQuery"


def test_projection_grammar() -> None:
    tree = parse_projection("id,locatedAt{id,name,isInCountry{description}}", "pick")
    assert tree.names == ("id", "locatedAt")
    assert tree.children["locatedAt"] == Projection(("id", "name", "isInCountry"),
                                                    {"isInCountry": Projection(("description",))})


@pytest.mark.parametrize("text", ["", "id,,name", "id;name", "a{b", "a{{b}", "a{}", "a{,b}", "a}b", ",a", "a b"])
def test_projection_syntax_errors(text: str) -> None:
    with pytest.raises(NgsiError) as caught:
        parse_projection(text, "pick")
    assert caught.value.type == "BadRequestData" and "pick" in caught.value.detail
