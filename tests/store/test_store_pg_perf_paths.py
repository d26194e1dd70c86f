"""The store's fast paths keep the NGSI-LD answers: paging when Python rejects many candidates, and the
PostgreSQL batch write of state and history in one transaction."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.store.conftest import BACKENDS, LINK_JONCTION, StoreServer, streetlight

STORE_BACKENDS = BACKENDS

_HEADERS = {"Link": LINK_JONCTION}


def _lights(n: int) -> list[dict[str, Any]]:
    """Lights in a small area, a third of them "on": most candidates of a q on powerState are rejected."""
    rng = random.Random(5)
    out = []
    for i in range(n):
        entity = streetlight(f"{i:04d}", illuminanceLevel={"type": "Property", "value": rng.randint(0, 100)})
        entity["location"]["value"]["coordinates"] = [round(2.34 + rng.random() * 0.02, 6),
                                                      round(48.84 + rng.random() * 0.02, 6)]
        entity["powerState"]["value"] = "on" if i % 3 == 0 else "off"
        out.append(entity)
    return out


async def _ids(server: StoreServer, params: dict[str, str]) -> tuple[list[str], bool, str | None]:
    reply = await server.get("/entities", params=params, headers=_HEADERS)
    assert reply.status == 200, reply.raw
    has_next = any('rel="next"' in link for link in reply.links)
    return [e["id"] for e in reply.json], has_next, reply.headers.get("NGSILD-Results-Count")


@pytest.mark.parametrize("query", [
    {"type": "Streetlight", "q": 'powerState=="on"'},
    {"type": "Streetlight", "q": 'illuminanceLevel>20;powerState=="on"', "georel": "near;maxDistance==1500",
     "geometry": "Point", "coordinates": "[2.35,48.85]"},
], ids=["q", "q+near"])
async def test_pages_walk_every_match_once_in_id_order(server: StoreServer, query: dict[str, str]) -> None:
    """Small pages over a query that Python decides give every match once, in id order, with next links."""
    reply = await server.post("/entityOperations/upsert", _lights(300), headers=_HEADERS)
    assert reply.status == 201, reply.raw
    everything, more, count = await _ids(server, {**query, "limit": "1000", "count": "true"})
    assert not more and count == str(len(everything))
    assert len(everything) > 40, "the query should match several pages"
    assert everything == sorted(everything)
    for limit in (1, 7, 25):
        walked: list[str] = []
        offset = 0
        while True:
            page, more, _ = await _ids(server, {**query, "limit": str(limit), "offset": str(offset)})
            assert len(page) <= limit
            walked.extend(page)
            offset += limit
            if not more:
                break
            assert len(page) == limit
        assert walked == everything, f"limit {limit}"
    # one page far into the matches (its first round trip cannot hold it)
    page, more, count = await _ids(server, {**query, "limit": "3", "offset": str(len(everything) - 2),
                                            "count": "true"})
    assert page == everything[-2:] and not more and count == str(len(everything))


async def test_batch_history_and_state_written_together(server: StoreServer) -> None:
    """A batch upsert writes each entity and the history of each attribute instance it writes."""
    lights = _lights(30)
    reply = await server.post("/entityOperations/upsert", lights, headers=_HEADERS)
    assert reply.status == 201, reply.raw
    for light in lights:
        light["illuminanceLevel"]["value"] = 101
    del lights[4]["powerState"]
    reply = await server.post("/entityOperations/upsert", lights, headers=_HEADERS, params={"options": "replace"})
    assert reply.status == 204, reply.raw
    entity_id = lights[4]["id"]
    reply = await server.get(f"/temporal/entities/{entity_id}", headers=_HEADERS)
    assert reply.status == 200, reply.raw
    body = reply.json
    first = _lights(30)[4]["illuminanceLevel"]["value"]
    assert [inst["value"] for inst in _as_list(body["illuminanceLevel"])] == [first, 101]
    # the attribute the replace dropped keeps its history
    assert [inst["value"] for inst in _as_list(body["powerState"])] == ["off"]
    reply = await server.get(f"/entities/{entity_id}", headers=_HEADERS)
    assert reply.status == 200 and "powerState" not in reply.json
    assert reply.json["illuminanceLevel"]["value"] == 101


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


async def test_failed_batch_writes_neither_state_nor_history(server: StoreServer) -> None:
    """A batch the database refuses midway (U+0000 on PostgreSQL) leaves nothing behind; the next one works."""
    lights = _lights(5)
    lights[3]["powerState"]["value"] = "o\x00n"
    reply = await server.post("/entityOperations/upsert", lights, headers=_HEADERS)
    if server.settings.database is None:
        assert reply.status == 201, reply.raw  # SQLite keeps U+0000
        return
    assert reply.status == 400 and reply.problem() == "BadRequestData", reply.raw
    reply = await server.get(f"/entities/{lights[0]['id']}", headers=_HEADERS)
    assert reply.status == 404
    reply = await server.get(f"/temporal/entities/{lights[0]['id']}", headers=_HEADERS)
    assert reply.status == 404
    lights[3]["powerState"]["value"] = "on"
    reply = await server.post("/entityOperations/upsert", lights, headers=_HEADERS)
    assert reply.status == 201, reply.raw
    reply = await server.get(f"/temporal/entities/{lights[3]['id']}", headers=_HEADERS)
    assert reply.status == 200, reply.raw
    # one instance each: nothing of the refused batch reached the history
    assert [inst["value"] for inst in _as_list(reply.json["powerState"])] == ["on"]
    assert len(_as_list(reply.json["illuminanceLevel"])) == 1


async def test_deleted_entity_leaves_no_geometry_behind(server: StoreServer) -> None:
    """A deleted entity is no geo-query answer, and its id re-created elsewhere is found only there."""
    near = {"type": "Streetlight", "georel": "near;maxDistance==100", "geometry": "Point",
            "coordinates": "[2.35,48.85]", "count": "true"}
    reply = await server.post("/entityOperations/upsert", [streetlight("gone")], headers=_HEADERS)
    assert reply.status == 201, reply.raw
    assert (await _ids(server, near))[0] == ["urn:ngsi-ld:Streetlight:gone"]
    reply = await server.post("/entityOperations/delete", ["urn:ngsi-ld:Streetlight:gone"])
    assert reply.status == 204, reply.raw
    assert (await _ids(server, near))[0] == []
    moved = streetlight("gone")
    moved["location"]["value"]["coordinates"] = [2.5, 48.9]
    reply = await server.post("/entityOperations/upsert", [moved], headers=_HEADERS)
    assert reply.status == 201, reply.raw
    assert (await _ids(server, near))[:3:2] == ([], "0")
    there = {**near, "coordinates": "[2.5,48.9]"}
    assert (await _ids(server, there))[0] == ["urn:ngsi-ld:Streetlight:gone"]
