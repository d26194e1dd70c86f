"""Write operations of the store against CIM 009 V1.9.1: Purge Entities, NGSI-LD Null, scope, types, paths."""

from __future__ import annotations

from typing import Any

import pytest

from tests.store.conftest import BACKENDS, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

ERR = "https://uri.etsi.org/ngsi-ld/errors/"
LD = "application/ld+json"
INLINE = {"lum": "https://example.org/ns/lum", "Lamp": "https://example.org/ns/Lamp"}
"""An inline @context: nothing is fetched, and its terms differ from what the core @vocab gives."""


async def _get(server: StoreServer, n: int | str) -> dict[str, Any]:
    r = await server.get(f"/entities/urn:ngsi-ld:Streetlight:{n}")
    assert r.status == 200, r.raw
    got: dict[str, Any] = r.json
    return got


# ------------------------------------------------------------------ Purge Entities (§5.6.21, §6.4.3.3)


async def _three(server: StoreServer) -> None:
    for n in (1, 2):
        assert (await server.post("/entities", streetlight(n, name={"type": "Property", "value": f"lamp {n}"},
                                                           note={"type": "Property", "value": "x"}))).status == 201
    assert (await server.post("/entities", {"id": "urn:ngsi-ld:Bench:1", "type": "Bench"})).status == 201


async def test_purge_by_type_deletes_only_that_type(server: StoreServer) -> None:
    await _three(server)
    r = await server.delete("/entities?type=Streetlight")
    assert r.status == 204 and r.raw == b""
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).status == 404
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:2")).status == 404
    assert (await server.get("/entities/urn:ngsi-ld:Bench:1")).status == 200


async def test_purge_by_q_and_by_id(server: StoreServer) -> None:
    await _three(server)
    assert (await server.delete('/entities?q=name=="lamp 1"')).status == 204
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).status == 404
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:2")).status == 200
    assert (await server.delete("/entities/?id=urn:ngsi-ld:Bench:1&type=Bench")).status == 204
    assert (await server.get("/entities/urn:ngsi-ld:Bench:1")).status == 404
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:2")).status == 200


async def test_purge_local_alone_empties_the_tenant(server: StoreServer) -> None:
    await _three(server)
    assert (await server.delete("/entities?local=true")).status == 204
    r = await server.get("/entities?local=true")
    assert r.status == 200 and r.json == []


async def test_purge_drop_and_keep_remove_attributes_only(server: StoreServer) -> None:
    await _three(server)
    assert (await server.delete("/entities?type=Streetlight&drop=name")).status == 204
    got = await _get(server, 1)
    assert "name" not in got and got["note"]["value"] == "x" and got["powerState"]["value"] == "on"
    assert (await server.delete("/entities?id=urn:ngsi-ld:Streetlight:2&keep=note")).status == 204
    got = await _get(server, 2)
    assert set(got) == {"id", "type", "note"}
    assert "note" in await _get(server, 1)  # keep applied to entity 2 only


@pytest.mark.parametrize("query", ["", "?keep=a&drop=b&type=Streetlight", "?drop=name"])
async def test_purge_refuses_no_selector_and_keep_with_drop(server: StoreServer, query: str) -> None:
    await _three(server)
    r = await server.delete("/entities" + query)
    assert r.status == 400
    assert r.problem() == "BadRequestData"
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).status == 200


async def test_purge_unknown_parameter_is_invalid_request(server: StoreServer) -> None:
    r = await server.delete("/entities?type=Streetlight&cascade=true")
    assert r.problem() == "InvalidRequest"


# ------------------------------------------------------------------ NGSI-LD Null


STREET = {"type": "LanguageProperty", "languageMap": {"fr": "rue", "en": "street"}}
NULL_LANG = {"type": "LanguageProperty", "languageMap": {"@none": "urn:ngsi-ld:null"}}


async def test_null_language_map_deletes_in_partial_attribute_update(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1, street=STREET))
    r = await server.patch("/entities/urn:ngsi-ld:Streetlight:1/attrs/street", NULL_LANG)
    assert r.status == 204
    assert "street" not in await _get(server, 1)


async def test_null_language_map_deletes_in_update_and_merge(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1, street=STREET))
    assert (await server.patch("/entities/urn:ngsi-ld:Streetlight:1/attrs", {"street": NULL_LANG})).status == 204
    assert "street" not in await _get(server, 1)
    await server.post("/entities/urn:ngsi-ld:Streetlight:1/attrs", {"street": STREET})
    assert (await server.patch("/entities/urn:ngsi-ld:Streetlight:1", {"street": NULL_LANG})).status == 204
    assert "street" not in await _get(server, 1)


async def test_null_deletes_one_dataset_instance_only(server: StoreServer) -> None:
    both = [{**STREET, "datasetId": "urn:ngsi-ld:Dataset:01"}, {**STREET, "datasetId": "urn:ngsi-ld:Dataset:02"}]
    await server.post("/entities", streetlight(1, street=both))
    fragment = {**NULL_LANG, "datasetId": "urn:ngsi-ld:Dataset:01"}
    assert (await server.patch("/entities/urn:ngsi-ld:Streetlight:1/attrs/street", fragment)).status == 204
    street = (await _get(server, 1))["street"]
    assert street["datasetId"] == "urn:ngsi-ld:Dataset:02" and street["languageMap"]["fr"] == "rue"


# ------------------------------------------------------------------ Partial Attribute Update (§5.6.4)


async def test_attr_id_is_expanded_with_the_body_context(server: StoreServer) -> None:
    entity = {"id": "urn:ngsi-ld:Lamp:1", "type": "Lamp", "lum": {"type": "Property", "value": 1}, "@context": INLINE}
    assert (await server.post("/entities", entity, content_type=LD)).status == 201
    r = await server.patch("/entities/urn:ngsi-ld:Lamp:1/attrs/lum", {"value": 2, "@context": INLINE},
                           content_type=LD)
    assert r.status == 204, r.raw
    r = await server.put("/entities/urn:ngsi-ld:Lamp:1/attrs/lum", {"type": "Property", "value": 3,
                                                                    "@context": INLINE}, content_type=LD)
    assert r.status == 204, r.raw
    got = (await server.get("/entities/urn:ngsi-ld:Lamp:1")).json
    assert got["https://example.org/ns/lum"]["value"] == 3
    # without that context "lum" is another attribute (the core @vocab), which does not exist
    r = await server.patch("/entities/urn:ngsi-ld:Lamp:1/attrs/lum", {"value": 4})
    assert r.problem() == "ResourceNotFound"


async def test_partial_update_without_type_merges_members(server: StoreServer) -> None:
    power = {"type": "Property", "value": "on", "source": {"type": "Relationship", "object": "urn:ngsi-ld:P:bob"}}
    await server.post("/entities", streetlight(1, powerState=power))
    r = await server.patch("/entities/urn:ngsi-ld:Streetlight:1/attrs/powerState",
                           {"source": {"type": "Relationship", "object": "urn:ngsi-ld:P:joe"}})
    assert r.status == 204
    got = (await _get(server, 1))["powerState"]
    assert got["value"] == "on" and got["source"]["object"] == "urn:ngsi-ld:P:joe"


@pytest.mark.parametrize("fragment", [{}, {"type": "Relationship", "object": "urn:ngsi-ld:X:1"},
                                      {"value": None}, {"datasetId": "urn:ngsi-ld:Dataset:01"}])
async def test_partial_update_refuses_empty_or_retyping_fragments(server: StoreServer, fragment: Any) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.patch("/entities/urn:ngsi-ld:Streetlight:1/attrs/powerState", fragment)
    assert r.status == 400 and r.problem() == "BadRequestData"
    assert (await _get(server, 1))["powerState"]["value"] == "on"


@pytest.mark.parametrize("name", ["scope", "type", "id"])
async def test_entity_members_are_not_attribute_ids(server: StoreServer, name: str) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.put(f"/entities/urn:ngsi-ld:Streetlight:1/attrs/{name}", {"type": "Property", "value": "/a"})
    assert r.status == 400 and r.problem() == "BadRequestData"


# ------------------------------------------------------------------ scope (§4.18) and types (§4.16)


async def test_scope_is_compacted_deleted_appended_and_updated(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1, scope="/Paris/Nord"))
    assert (await _get(server, 1))["scope"] == "/Paris/Nord"  # a single scope reads as a string
    r = await server.post("/entities/urn:ngsi-ld:Streetlight:1/attrs?options=noOverwrite", {"scope": "/Lyon"})
    assert r.status == 204
    assert (await _get(server, 1))["scope"] == ["/Paris/Nord", "/Lyon"]
    assert (await server.post("/entities/urn:ngsi-ld:Streetlight:1/attrs", {"scope": "/Nice"})).status == 204
    assert (await _get(server, 1))["scope"] == "/Nice"
    assert (await server.patch("/entities/urn:ngsi-ld:Streetlight:1/attrs", {"scope": "/Metz"})).status == 204
    assert (await _get(server, 1))["scope"] == "/Metz"
    assert (await server.delete("/entities/urn:ngsi-ld:Streetlight:1/attrs/scope")).status == 204
    assert "scope" not in await _get(server, 1)
    assert (await server.delete("/entities/urn:ngsi-ld:Streetlight:1/attrs/scope")).problem() == "ResourceNotFound"
    # update only touches what exists: an absent scope is reported, not added
    r = await server.patch("/entities/urn:ngsi-ld:Streetlight:1/attrs", {"scope": "/Metz"})
    assert r.status == 207 and r.json["notUpdated"][0]["attributeName"] == "scope"
    assert "scope" not in await _get(server, 1)


async def test_update_and_append_add_entity_types(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.patch("/entities/urn:ngsi-ld:Streetlight:1/attrs", {"type": ["Lamp", "Streetlight"]})
    assert r.status == 204
    assert (await _get(server, 1))["type"] == ["Streetlight", "Lamp"]
    assert (await server.post("/entities/urn:ngsi-ld:Streetlight:1/attrs", {"type": "Pole"})).status == 204
    assert (await _get(server, 1))["type"] == ["Streetlight", "Lamp", "Pole"]


# ------------------------------------------------------------------ malformed requests


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
async def test_entity_write_without_id_is_bad_request(server: StoreServer, method: str) -> None:
    for path in ("/entities", "/entities/"):
        r = await server.request(method, path, json_body={"powerState": {"type": "Property", "value": "off"}})
        assert r.status == 400 and r.problem() == "BadRequestData"


@pytest.mark.parametrize("method,path", [("POST", "/entities//attrs"), ("PATCH", "/entities//attrs"),
                                         ("PATCH", "/entities//attrs/powerState"),
                                         ("DELETE", "/entities//attrs/powerState")])
async def test_empty_id_in_path_is_bad_request(server: StoreServer, method: str, path: str) -> None:
    r = await server.request(method, path, json_body={"powerState": {"type": "Property", "value": "off"}})
    assert r.status == 400 and r.problem() == "BadRequestData"


async def test_create_with_a_json_array_is_invalid_request(server: StoreServer) -> None:
    r = await server.post("/entities", [streetlight(1)])
    assert r.status == 400 and r.problem() == "InvalidRequest"
    assert (await server.post("/entities", {})).problem() == "BadRequestData"


async def test_replace_attribute_refuses_ngsi_ld_null(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1, street=STREET))
    r = await server.put("/entities/urn:ngsi-ld:Streetlight:1/attrs/street", NULL_LANG)
    assert r.status == 400 and r.problem() == "BadRequestData"
    assert (await _get(server, 1))["street"]["languageMap"]["fr"] == "rue"
