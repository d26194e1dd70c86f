"""Temporal evolution of deleted attributes and scopes read with timeproperty=deletedAt (CIM 009 V1.9.1
§4.5.x deletedAt, §4.18 scope, §5.7.3, §6.19.3.1), on both store backends."""

from __future__ import annotations

from typing import Any

from tests.store.conftest import BACKENDS, StoreServer

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

VEHICLE = "urn:ngsi-ld:Vehicle:deleted-1"
SCOPES = ["/Madrid/Gardens/ParqueNorte", "/CompanyA/OrganizationB/UnitC"]


def temporal_vehicle() -> dict[str, Any]:
    """A temporal vehicle with a scope and two fuelLevel observations."""
    return {
        "id": VEHICLE,
        "type": "Vehicle",
        "scope": list(SCOPES),
        "fuelLevel": [
            {"type": "Property", "value": 67, "observedAt": "2020-08-01T12:03:00Z"},
            {"type": "Property", "value": 53, "observedAt": "2020-08-01T13:05:00Z"},
        ],
    }


async def deleted_at(server: StoreServer, **params: str) -> dict[str, Any]:
    """The entity's temporal evolution along deletedAt (200 expected)."""
    reply = await server.get(f"/temporal/entities/{VEHICLE}", params={"timeproperty": "deletedAt", **params})
    assert reply.status == 200, reply.raw
    body: dict[str, Any] = reply.json
    return body


async def test_deleted_scope_shows_in_its_deleted_at_evolution(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", temporal_vehicle())).status == 201
    assert (await deleted_at(server)) == {"id": VEHICLE, "type": "Vehicle"}  # nothing deleted yet
    assert (await server.delete(f"/entities/{VEHICLE}/attrs/scope")).status == 204
    body = await deleted_at(server)
    assert set(body) == {"id", "type", "scope"}  # fuelLevel was not deleted: no mark
    (scope,) = body["scope"]
    assert scope["type"] == "Property" and scope["value"] == []
    assert scope["deletedAt"].endswith("Z")
    values = await deleted_at(server, options="temporalValues")
    assert values["scope"] == {"type": "Property", "values": [[[], scope["deletedAt"]]]}
    # marks stay out of ordinary reads, and the scope is gone from the entity
    ordinary = await server.get(f"/temporal/entities/{VEHICLE}")
    assert "scope" not in ordinary.json and len(ordinary.json["fuelLevel"]) == 2
    assert "scope" not in (await server.get(f"/entities/{VEHICLE}")).json


async def test_deleted_attribute_shows_in_its_deleted_at_evolution(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", temporal_vehicle())).status == 201
    assert (await server.delete(f"/entities/{VEHICLE}/attrs/fuelLevel")).status == 204
    body = await deleted_at(server)
    assert set(body) == {"id", "type", "fuelLevel"}  # the scope was kept: no mark
    (fuel,) = body["fuelLevel"]
    assert fuel["type"] == "Property" and fuel["value"] == "urn:ngsi-ld:null"
    assert "observedAt" not in fuel and fuel["deletedAt"].endswith("Z")
    values = await deleted_at(server, options="temporalValues")
    assert values["fuelLevel"] == {"type": "Property", "values": [["urn:ngsi-ld:null", fuel["deletedAt"]]]}
    # the observations before the deletion are still in the ordinary evolution
    ordinary = await server.get(f"/temporal/entities/{VEHICLE}", params={"options": "temporalValues"})
    assert ordinary.json["fuelLevel"]["values"] == [[67, "2020-08-01T12:03:00Z"], [53, "2020-08-01T13:05:00Z"]]


async def test_deleted_entity_marks_its_scope_and_attributes(server: StoreServer) -> None:
    assert (await server.post("/entities", {"id": VEHICLE, "type": "Vehicle", "scope": "/Nice",
                                            "speed": {"type": "Property", "value": 30}})).status == 201
    assert (await server.delete(f"/entities/{VEHICLE}")).status == 204
    body = await deleted_at(server, attrs="scope,speed")
    assert [i["value"] for i in body["scope"]] == [[]]
    assert [i["value"] for i in body["speed"]] == ["urn:ngsi-ld:null"]
    assert body["scope"][0]["deletedAt"] == body["speed"][0]["deletedAt"]  # one deletion, one moment


async def test_entity_without_scope_leaves_no_scope_mark(server: StoreServer) -> None:
    assert (await server.post("/entities", {"id": VEHICLE, "type": "Vehicle",
                                            "speed": {"type": "Property", "value": 30}})).status == 201
    assert (await server.delete(f"/entities/{VEHICLE}/attrs/scope")).status == 404
    assert (await server.delete(f"/entities/{VEHICLE}/attrs/speed")).status == 204
    assert set(await deleted_at(server)) == {"id", "type", "speed"}


async def test_scope_marks_follow_pick_and_omit_and_aggregate(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", temporal_vehicle())).status == 201
    assert (await server.delete(f"/entities/{VEHICLE}/attrs/scope")).status == 204
    assert (await server.delete(f"/entities/{VEHICLE}/attrs/fuelLevel")).status == 204
    picked = await deleted_at(server, pick="id,scope")
    assert set(picked) == {"id", "scope"}
    assert set(await deleted_at(server, pick="fuelLevel")) == {"fuelLevel"}
    assert set(await deleted_at(server, omit="scope")) == {"id", "type", "fuelLevel"}
    counted = await deleted_at(server, options="aggregatedValues", aggrMethods="totalCount",
                               aggrPeriodDuration="P1D")
    assert [row[0] for row in counted["scope"]["totalCount"]] == [1]
    assert [row[0] for row in counted["fuelLevel"]["totalCount"]] == [1]
