"""The syndicat view: a read-only virtual tenant over what member communes share, tagged by commune."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.store.app import StoreSettings
from tests.store.conftest import BACKENDS, StoreServer
from tests.store.test_sharing_reads import OWNER_TOKEN, REPORT, SYNDICAT_TOKEN, TENANT_A_TOKEN, air, bearer, policies

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

VIEW = {"NGSILD-Tenant": "syndicat-view"}
PARKING = {"id": "urn:ngsi-ld:ParkingSpot:p1", "type": "ParkingSpot", "status": {"type": "Property", "value": "free"}}
WATER = {"id": "urn:ngsi-ld:WaterConsumption:w1", "type": "WaterConsumption",
         "volume": {"type": "Property", "value": 12.5}}


@pytest.fixture
async def shared(store_settings: StoreSettings, tmp_path: Path) -> AsyncIterator[StoreServer]:
    """Two communes filled by their owner, and the view of the syndicat over them."""
    settings = replace(store_settings, tokens=frozenset({OWNER_TOKEN}),
                       tenant_tokens={"commune-a": frozenset({TENANT_A_TOKEN})}, sharing=policies(tmp_path))
    srv = StoreServer(settings)
    await srv.start()
    owner = bearer(OWNER_TOKEN)
    try:
        for tenant, entities in (("commune-a", (air(1, 10), air(2, 30), REPORT)), ("commune-b", (PARKING, WATER))):
            for entity in entities:
                reply = await srv.post("/entities", entity, headers={"NGSILD-Tenant": tenant, **owner})
                assert reply.status == 201, reply.raw
        yield srv
    finally:
        await srv.close()


async def test_the_view_reads_every_member_tagged_by_commune(shared: StoreServer) -> None:
    syndicat = {**VIEW, **bearer(SYNDICAT_TOKEN)}
    reply = await shared.get("/entities", headers=syndicat, params={"local": "true", "count": "true"})
    assert reply.status == 200, reply.raw
    assert reply.headers["NGSILD-Results-Count"] == "3"
    tags = {e["id"]: e["commune"]["value"] for e in reply.json}
    assert tags == {"urn:ngsi-ld:AirQualityObserved:1": "Saint-Martin",
                    "urn:ngsi-ld:AirQualityObserved:2": "Saint-Martin", "urn:ngsi-ld:ParkingSpot:p1": "Pont-Neuf"}
    for entity in reply.json:
        assert "secretNote" not in entity and "email" not in entity
    page = await shared.get("/entities", headers=syndicat, params={"local": "true", "limit": "2", "offset": "1"})
    assert [e["id"] for e in page.json] == ["urn:ngsi-ld:AirQualityObserved:2", "urn:ngsi-ld:ParkingSpot:p1"]
    key_values = await shared.get("/entities", headers=syndicat, params={"type": "ParkingSpot", "options": "keyValues"})
    assert key_values.json == [{"id": PARKING["id"], "type": "ParkingSpot", "status": "free", "commune": "Pont-Neuf"}]
    one = await shared.get(f"/entities/{PARKING['id']}", headers=syndicat)
    assert one.status == 200 and one.json["commune"]["value"] == "Pont-Neuf"
    for hidden in (REPORT["id"], WATER["id"]):
        assert (await shared.get(f"/entities/{hidden}", headers=syndicat)).status == 404
    by_commune = await shared.get("/entities", headers=syndicat,
                                  params={"q": 'commune=="Pont-Neuf"', "orderBy": "commune;desc,id"})
    assert [e["id"] for e in by_commune.json] == [PARKING["id"]]
    ordered = await shared.get("/entities", headers=syndicat, params={"local": "true", "orderBy": "commune,id"})
    assert [e["commune"]["value"] for e in ordered.json] == ["Pont-Neuf", "Saint-Martin", "Saint-Martin"]
    types = await shared.get("/types", headers=syndicat)
    assert sorted(types.json["typeList"]) == ["AirQualityObserved", "ParkingSpot"]


async def test_the_view_refuses_writes(shared: StoreServer) -> None:
    for token in (SYNDICAT_TOKEN, OWNER_TOKEN):
        reply = await shared.post("/entities", PARKING, headers={**VIEW, **bearer(token)})
        assert reply.status == 403
        assert "read-only view" in reply.json["detail"]
        batch = await shared.post("/entityOperations/upsert", [PARKING], headers={**VIEW, **bearer(token)})
        assert batch.status == 403
    # nothing was created under the view's name
    listed = await shared.get("/entities", headers={**VIEW, **bearer(OWNER_TOKEN)}, params={"local": "true"})
    assert listed.status == 404 and listed.json["type"].endswith("NonexistentTenant")


async def test_without_the_principal_token_a_view_is_an_absent_tenant(shared: StoreServer) -> None:
    for headers in (VIEW, {**VIEW, **bearer("voisin-token-0123456789")}):
        reply = await shared.get("/entities", headers=headers, params={"local": "true"})
        absent = await shared.get("/entities", headers={**headers, "NGSILD-Tenant": "nowhere-view"},
                                  params={"local": "true"})
        assert reply.status == absent.status == 404
        assert reply.raw.replace(b"syndicat-view", b"<t>") == absent.raw.replace(b"nowhere-view", b"<t>")


async def test_the_view_reads_the_temporal_evolution_of_every_member(shared: StoreServer) -> None:
    window = {"timerel": "between", "timeAt": "2026-03-01T00:00:00Z", "endTimeAt": "2026-03-02T00:00:00Z"}
    for tenant, entity_id, attr in (("commune-a", "urn:ngsi-ld:AirQualityObserved:1", "pm25"),
                                    ("commune-b", PARKING["id"], "status"),
                                    ("commune-b", WATER["id"], "volume")):
        reply = await shared.post(f"/temporal/entities/{entity_id}/attrs", {
            attr: {"type": "Property", "value": 7, "observedAt": "2026-03-01T08:00:00Z"},
        }, headers={"NGSILD-Tenant": tenant, **bearer(OWNER_TOKEN)})
        assert reply.status == 204, reply.raw
    syndicat = {**VIEW, **bearer(SYNDICAT_TOKEN)}
    reply = await shared.get("/temporal/entities", headers=syndicat,
                             params={**window, "type": "AirQualityObserved,ParkingSpot,WaterConsumption",
                                     "count": "true"})
    assert reply.status == 200, reply.raw
    assert [(e["id"], e["commune"]["value"]) for e in reply.json] == [
        ("urn:ngsi-ld:AirQualityObserved:1", "Saint-Martin"), (PARKING["id"], "Pont-Neuf")]
    assert reply.headers["NGSILD-Results-Count"] == "2"
    assert "secretNote" not in reply.raw.decode()
    one = await shared.get(f"/temporal/entities/{PARKING['id']}", headers=syndicat, params=window)
    assert one.status == 200 and one.json["commune"]["value"] == "Pont-Neuf"
    assert (await shared.get(f"/temporal/entities/{WATER['id']}", headers=syndicat, params=window)).status == 404
