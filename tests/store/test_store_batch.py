"""Batch operations over HTTP: create, upsert, update, merge, delete (201/204/207 shapes)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.store.conftest import ERR, StoreServer, streetlight


def _ids(n: int) -> list[str]:
    return [f"urn:ngsi-ld:Streetlight:{i}" for i in range(n)]


async def test_batch_create_all_201(server: StoreServer) -> None:
    r = await server.post("/entityOperations/create", [streetlight(i) for i in range(3)])
    assert r.status == 201
    assert r.json == _ids(3)


async def test_batch_create_partial_207(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    body = [streetlight(0), streetlight(1), {"id": "bad id", "type": "X"}, streetlight(2)]
    r = await server.post("/entityOperations/create", body)
    assert r.status == 207
    assert r.headers["Content-Type"] == "application/json"
    assert r.json["success"] == ["urn:ngsi-ld:Streetlight:0", "urn:ngsi-ld:Streetlight:2"]
    errors = {e["entityId"]: e["error"] for e in r.json["errors"]}
    assert errors["urn:ngsi-ld:Streetlight:1"]["type"] == ERR + "AlreadyExists"
    assert errors["urn:ngsi-ld:Streetlight:1"]["status"] == 409
    assert errors["bad id"]["type"] == ERR + "BadRequestData"
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:2")).status == 200


async def test_batch_create_duplicates_in_array_order(server: StoreServer) -> None:
    r = await server.post("/entityOperations/create", [streetlight(1), streetlight(1)])
    assert r.status == 207
    assert r.json["success"] == ["urn:ngsi-ld:Streetlight:1"]
    assert r.json["errors"][0]["error"]["type"] == ERR + "AlreadyExists"


@pytest.mark.parametrize("body", [{}, [], "x", [1] * 10001])
async def test_batch_body_must_be_array(server: StoreServer, body: Any) -> None:
    r = await server.post("/entityOperations/create", body)
    assert r.problem() == "BadRequestData"


async def test_batch_upsert_201_204_207(server: StoreServer) -> None:
    r = await server.post("/entityOperations/upsert", [streetlight(0), streetlight(1)])
    assert r.status == 201
    assert r.json == _ids(2)
    r = await server.post("/entityOperations/upsert", [streetlight(0), streetlight(1)])
    assert r.status == 204
    r = await server.post("/entityOperations/upsert", [streetlight(1), streetlight(2)])
    assert r.status == 201  # mixed: only the ids created are listed (§6.15.3.1)
    assert r.json == ["urn:ngsi-ld:Streetlight:2"]
    r = await server.post("/entityOperations/upsert", [streetlight(3), {"id": "urn:x:1"}])
    assert r.status == 207
    assert r.json["errors"][0]["entityId"] == "urn:x:1"


async def test_batch_upsert_replace_vs_update(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1, extra={"type": "Property", "value": 1}))
    new = {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "brightness": {"type": "Property", "value": 5}}
    assert (await server.post("/entityOperations/upsert?options=update", [new])).status == 204
    got = (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).json
    assert got["extra"]["value"] == 1 and got["brightness"]["value"] == 5
    assert (await server.post("/entityOperations/upsert", [new])).status == 204  # replace by default
    got = (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).json
    assert set(got) == {"id", "type", "brightness"}
    assert (await server.post("/entityOperations/upsert?options=replace", [new])).status == 204
    r = await server.post("/entityOperations/upsert?options=update,replace", [new])
    assert r.problem() == "BadRequestData"
    r = await server.post("/entityOperations/upsert?options=noOverwrite", [new])
    assert r.problem() == "BadRequestData"


async def test_batch_upsert_duplicates_processed_in_order(server: StoreServer) -> None:
    first = streetlight(1, brightness={"type": "Property", "value": 1})
    second = {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "brightness": {"type": "Property", "value": 2}}
    r = await server.post("/entityOperations/upsert?options=update", [first, second])
    assert r.status == 201
    assert r.json == ["urn:ngsi-ld:Streetlight:1"]
    got = (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).json
    assert got["brightness"]["value"] == 2
    assert got["powerState"]["value"] == "on"


async def test_batch_update(server: StoreServer) -> None:
    await server.post("/entityOperations/create", [streetlight(0), streetlight(1)])
    patch: list[dict[str, Any]] = [
        {"id": "urn:ngsi-ld:Streetlight:0", "type": "Streetlight", "powerState": {"type": "Property", "value": "off"}},
        {"id": "urn:ngsi-ld:Streetlight:1", "brightness": {"type": "Property", "value": 3}},
    ]
    assert (await server.post("/entityOperations/update", patch)).status == 204
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:0")).json["powerState"]["value"] == "off"
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).json["brightness"]["value"] == 3
    patch.append({"id": "urn:ngsi-ld:Streetlight:9", "brightness": 1})
    r = await server.post("/entityOperations/update?options=noOverwrite", patch)
    assert r.status == 207
    errors = {e["entityId"]: e["error"]["type"] for e in r.json["errors"]}
    assert errors["urn:ngsi-ld:Streetlight:9"] == ERR + "ResourceNotFound"
    # §5.6.9: attributes left alone by noOverwrite put their entity in errors too
    assert errors["urn:ngsi-ld:Streetlight:0"] == ERR + "BadRequestData"
    assert r.json["success"] == []


async def test_batch_update_no_overwrite_keeps_values(server: StoreServer) -> None:
    await server.post("/entities", streetlight(0))
    patch = [{"id": "urn:ngsi-ld:Streetlight:0", "powerState": {"type": "Property", "value": "off"},
              "brightness": {"type": "Property", "value": 9}}]
    r = await server.post("/entityOperations/update?options=noOverwrite", patch)
    # powerState exists and is kept: the entity is reported (207), brightness is still appended
    assert r.status == 207
    assert [e["entityId"] for e in r.json["errors"]] == ["urn:ngsi-ld:Streetlight:0"]
    assert "powerState" in r.json["errors"][0]["error"]["detail"]
    got = (await server.get("/entities/urn:ngsi-ld:Streetlight:0")).json
    assert got["powerState"]["value"] == "on"
    assert got["brightness"]["value"] == 9


async def test_batch_merge(server: StoreServer) -> None:
    await server.post("/entities", streetlight(0, note={"type": "Property", "value": "x"}))
    body = [{"id": "urn:ngsi-ld:Streetlight:0", "note": "urn:ngsi-ld:null", "brightness": 4},
            {"id": "urn:ngsi-ld:Streetlight:7", "brightness": 4}]
    r = await server.post("/entityOperations/merge", body)
    assert r.status == 207
    assert r.json["success"] == ["urn:ngsi-ld:Streetlight:0"]
    got = (await server.get("/entities/urn:ngsi-ld:Streetlight:0")).json
    assert "note" not in got and got["brightness"]["value"] == 4
    assert (await server.post("/entityOperations/merge", body[:1])).status == 204


async def test_batch_delete(server: StoreServer) -> None:
    await server.post("/entityOperations/create", [streetlight(i) for i in range(3)])
    assert (await server.post("/entityOperations/delete", _ids(2))).status == 204
    r = await server.post("/entityOperations/delete", ["urn:ngsi-ld:Streetlight:2", "urn:ngsi-ld:Streetlight:0", 5])
    assert r.status == 207
    assert r.json["success"] == ["urn:ngsi-ld:Streetlight:2"]
    assert [e["entityId"] for e in r.json["errors"]] == ["urn:ngsi-ld:Streetlight:0", "5"]
    r = await server.get("/entities?type=Streetlight&count=true&limit=0")
    assert r.headers["NGSILD-Results-Count"] == "0"


async def test_batch_ld_json_context_per_entity(server: StoreServer) -> None:
    jonction = "https://jonction.eu/ns/context/v1.jsonld"
    body = [{**streetlight(0), "@context": jonction}, {**streetlight(1), "@context": jonction}, streetlight(2)]
    r = await server.post("/entityOperations/create", body, headers={"Content-Type": "application/ld+json"})
    assert r.status == 207
    assert r.json["errors"][0]["entityId"] == "urn:ngsi-ld:Streetlight:2"
    assert r.json["errors"][0]["error"]["type"] == ERR + "BadRequestData"


async def test_batch_json_with_context_in_body(server: StoreServer) -> None:
    # application/json with an @context inside an entity: that entity fails (207), the others are written
    body = [{**streetlight(0), "@context": "https://jonction.eu/ns/context/v1.jsonld"}, streetlight(1)]
    r = await server.post("/entityOperations/upsert", body)
    assert r.status == 207
    assert r.json["success"] == ["urn:ngsi-ld:Streetlight:1"]
    assert r.json["errors"][0]["entityId"] == "urn:ngsi-ld:Streetlight:0"
    assert r.json["errors"][0]["error"]["type"] == ERR + "BadRequestData"
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:0")).status == 404


async def test_batch_is_one_transaction_visible_at_once(server: StoreServer) -> None:
    r = await server.post("/entityOperations/upsert", [streetlight(i) for i in range(500)])
    assert r.status == 201
    r = await server.get("/entities?type=Streetlight&count=true&limit=0")
    assert r.headers["NGSILD-Results-Count"] == "500"
