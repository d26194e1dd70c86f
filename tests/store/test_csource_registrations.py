"""Context source registrations (/csourceRegistrations, CIM 009 V1.9.1 §5.9, §5.10, §6.8, §6.9) on both backends."""

from __future__ import annotations

from typing import Any

from tests.store.conftest import BACKENDS, LINK_JONCTION, StoreServer

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

REGS = "/csourceRegistrations"


def registration(n: int | str, **members: Any) -> dict[str, Any]:
    """A registration of a source holding street lights' powerState."""
    reg: dict[str, Any] = {
        "id": f"urn:ngsi-ld:ContextSourceRegistration:{n}",
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Streetlight"}], "propertyNames": ["powerState"]}],
        "endpoint": "http://source.example:1026",
    }
    reg.update(members)
    return reg


def ids(body: Any) -> list[str]:
    """The registration ids of a query answer, sorted."""
    return sorted(r["id"].rsplit(":", 1)[1] for r in body)


async def test_create_retrieve_list_patch_delete(server: StoreServer) -> None:
    """The whole life of a registration, with defaults filled in and names compacted as given."""
    created = await server.post(REGS, registration(1, registrationName="lights"))
    assert created.status == 201, created.raw
    assert created.headers["Location"].endswith("/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:1")
    got = await server.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1")
    assert got.status == 200
    assert got.json["information"] == [{"entities": [{"type": "Streetlight"}], "propertyNames": ["powerState"]}]
    assert got.json["mode"] == "inclusive" and got.json["operations"] == ["federationOps"]
    assert got.json["registrationName"] == "lights"
    assert "createdAt" not in got.json
    sys_attrs = await server.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1", params={"options": "sysAttrs"})
    assert "createdAt" in sys_attrs.json and "modifiedAt" in sys_attrs.json

    patched = await server.patch(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1",
                                 {"endpoint": "http://other.example:1026"})
    assert patched.status == 204, patched.raw
    got = await server.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1")
    assert got.json["endpoint"] == "http://other.example:1026"
    assert got.json["registrationName"] == "lights"  # untouched members stay

    listed = await server.get(REGS, params={"type": "Streetlight"})
    assert listed.status == 200 and ids(listed.json) == ["1"]

    assert (await server.delete(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1")).status == 204
    gone = await server.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1")
    assert gone.status == 404 and gone.problem() == "ResourceNotFound"


async def test_generated_id(server: StoreServer) -> None:
    """Without an id the store names the registration and says where it is."""
    reg = registration(0)
    del reg["id"]
    created = await server.post(REGS, reg)
    assert created.status == 201
    path = created.headers["Location"].split("/ngsi-ld/v1", 1)[1]
    assert (await server.get(path)).json["endpoint"] == "http://source.example:1026"


async def test_types_expanded_with_the_context(server: StoreServer) -> None:
    """Entity types and attribute names are IRIs: the Link @context names them, another context shows IRIs."""
    created = await server.post(REGS, registration(2), headers={"Link": LINK_JONCTION})
    assert created.status == 201
    plain = await server.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:2")
    with_link = await server.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:2", headers={"Link": LINK_JONCTION})
    assert with_link.json["information"][0]["entities"][0]["type"] == "Streetlight"
    found = await server.get(REGS, params={"type": "Streetlight"}, headers={"Link": LINK_JONCTION})
    assert ids(found.json) == ["2"]
    # the type expanded with another @context names something else only if the contexts differ
    shown = plain.json["information"][0]["entities"][0]["type"]
    assert shown.endswith("Streetlight")


async def test_discovery_filters(server: StoreServer) -> None:
    """type, id, idPattern, attrs, q, geoQ and timeQ select registrations as §5.10.2 and §5.12 say."""
    await server.post(REGS, registration(1))
    await server.post(REGS, registration(2, information=[{"entities": [{"id": "urn:ngsi-ld:Device:7",
                                                                          "type": "Device"}]}]))
    await server.post(REGS, registration(3, information=[{"entities": [{"idPattern": "^urn:ngsi-ld:Device:9.*",
                                                                          "type": "Device"}],
                                                           "relationshipNames": ["refStreetlight"]}],
                                         location={"type": "Point", "coordinates": [2.35, 48.85]}))
    await server.post(REGS, registration(4, information=[{"propertyNames": ["batteryLevel"]}],
                                         observationInterval={"startAt": "2020-01-01T00:00:00Z",
                                                              "endAt": "2020-12-31T00:00:00Z"},
                                         sourceKind="meter"))

    async def query(**params: str) -> list[str]:
        reply = await server.get(REGS, params=params)
        assert reply.status == 200, reply.raw
        return ids(reply.json)

    assert await query(type="Streetlight") == ["1", "4"]  # 4 holds batteryLevel of any entity
    assert await query(type="Device") == ["2", "3", "4"]
    assert await query(type="Device", id="urn:ngsi-ld:Device:7") == ["2", "4"]
    assert await query(type="Device", id="urn:ngsi-ld:Device:91") == ["3", "4"]
    assert await query(attrs="batteryLevel") == ["2", "4"]  # 2 registers every attribute of Device:7
    assert await query(attrs="refStreetlight") == ["2", "3"]
    assert await query(q='sourceKind=="meter"') == ["4"]
    assert await query(georel="near;maxDistance==2000", geometry="Point", coordinates="[2.36,48.85]") == ["3"]
    assert await query(georel="near;maxDistance==200", geometry="Point", coordinates="[2.40,48.85]") == []
    assert await query(timerel="before", timeAt="2020-06-01T00:00:00Z") == ["4"]
    assert await query(timerel="after", timeAt="2021-06-01T00:00:00Z") == []
    paged = await server.get(REGS, params={"type": "Device", "limit": "2", "count": "true"})
    assert len(paged.json) == 2 and paged.headers["NGSILD-Results-Count"] == "3"


async def test_errors(server: StoreServer) -> None:
    """Bad ids and bodies are 400 BadRequestData, a duplicate 409, an unknown id 404, an empty query 400."""
    bad_id = await server.get(f"{REGS}/not-a-uri")
    assert bad_id.status == 400 and bad_id.problem() == "BadRequestData"
    assert (await server.post(REGS, registration(1))).status == 201
    duplicate = await server.post(REGS, registration(1))
    assert duplicate.status == 409 and duplicate.problem() == "AlreadyExists"
    for bad in (registration(2, endpoint="no uri"), registration(3, information=[]),
                registration(4, type="Registration"), registration(5, information=[{"entities": [{"id": "x:1"}]}]),
                registration(6, mode="sometimes"), registration(7, expiresAt="2001-01-01T00:00:00Z")):
        reply = await server.post(REGS, bad)
        assert reply.status == 400 and reply.problem() == "BadRequestData", (bad, reply.raw)
    unknown = "/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:nope"
    assert (await server.patch(unknown, {"endpoint": "http://x.example"})).problem() == "ResourceNotFound"
    assert (await server.delete(unknown)).status == 404
    removing = await server.patch(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1", {"information": None})
    assert removing.status == 400 and removing.problem() == "BadRequestData"
    empty = await server.get(REGS)
    assert empty.status == 400 and empty.problem() == "BadRequestData"
    bad_geo = await server.get(REGS, params={"georel": "within", "geometry": "Polygon", "coordinates": "[[1,2]]"})
    assert bad_geo.status == 400


async def test_tenants_are_isolated(server: StoreServer) -> None:
    """A registration lives in its tenant only; an unknown tenant is 404 NonexistentTenant."""
    tenant = {"NGSILD-Tenant": "commune-b"}
    assert (await server.post(REGS, registration(1), headers=tenant)).status == 201
    assert ids((await server.get(REGS, params={"type": "Streetlight"}, headers=tenant)).json) == ["1"]
    assert (await server.get(REGS, params={"type": "Streetlight"})).json == []
    assert (await server.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1")).status == 404
    other = await server.get(REGS, params={"type": "Streetlight"}, headers={"NGSILD-Tenant": "nowhere"})
    assert other.status == 404 and other.problem() == "NonexistentTenant"


async def test_registrations_survive_a_restart(server: StoreServer) -> None:
    """Registrations are persisted by the backend, not held in memory."""
    assert (await server.post(REGS, registration(1), headers={"NGSILD-Tenant": "t1"})).status == 201
    await server.restart()
    got = await server.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1", headers={"NGSILD-Tenant": "t1"})
    assert got.status == 200 and got.json["endpoint"] == "http://source.example:1026"
