"""Sharing policies enforced in every read path of the store, through its HTTP API, on both backends.

A denied type or attribute never appears in queries, retrieval, counts, /types, /attributes, the
temporal API or error bodies; q/attrs/orderBy cannot probe a hidden attribute; coarsened
locations are snapped and hourly coarsening averages; subscriptions stay the owner's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.errors import ConfigInvalid
from gateway.store import sharing
from gateway.store.app import StoreSettings
from tests.conftest import free_port
from tests.store.conftest import BACKENDS, StoreServer

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

OWNER_TOKEN = "owner-token-for-every-tenant"
TENANT_A_TOKEN = "owner-token-of-commune-a"
SYNDICAT_TOKEN = "syndicat-token-0123456789"
VOISIN_TOKEN = "voisin-token-0123456789"

POLICY = f"""
version: 1
principals:
  syndicat: {{token: {SYNDICAT_TOKEN}}}
  voisin: {{token: {VOISIN_TOKEN}}}
tenants:
  commune-a:
    label: Saint-Martin
    share:
      - with: [syndicat]
        types: [AirQualityObserved]
        exclude_attributes: [secretNote]
      - with: [public]
        types: [AirQualityObserved]
        attributes: [pm25, location]
        coarsen: {{location_grid_m: 1000, temporal: hourly}}
  commune-b:
    label: Pont-Neuf
    share:
      - with: [syndicat]
        types: [ParkingSpot]
views:
  syndicat-view:
    principal: syndicat
"""

A = {"NGSILD-Tenant": "commune-a"}
PRECISE = [2.35221, 48.85661]


def air(n: int, pm25: float, **extra: Any) -> dict[str, Any]:
    """An AirQualityObserved with a public value, a hidden note and personal data."""
    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:{n}",
        "type": "AirQualityObserved",
        "pm25": {"type": "Property", "value": pm25},
        "secretNote": {"type": "Property", "value": "calibration drift"},
        "email": {"type": "Property", "value": "resident@example.org"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": PRECISE}},
        **extra,
    }


REPORT_ID = "urn:ngsi-ld:Open311ServiceRequest:r1"
REPORT: dict[str, Any] = {
    "id": REPORT_ID,
    "type": "Open311ServiceRequest",
    "description": {"type": "Property", "value": "pothole in front of number 12"},
}


def policies(tmp_path: Path) -> sharing.Policies:
    path = tmp_path / "sharing.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return sharing.load(path)


@pytest.fixture
async def shared(store_settings: StoreSettings, tmp_path: Path) -> AsyncIterator[StoreServer]:
    """A store with the policy above, commune-a and commune-b filled by their owner."""
    settings = replace(store_settings, tokens=frozenset({OWNER_TOKEN}),
                       tenant_tokens={"commune-a": frozenset({TENANT_A_TOKEN})}, sharing=policies(tmp_path))
    srv = StoreServer(settings)
    await srv.start()
    owner = {"Authorization": f"Bearer {OWNER_TOKEN}"}
    try:
        for entity in (air(1, 10), air(2, 30), REPORT):
            reply = await srv.post("/entities", entity, headers={**A, **owner})
            assert reply.status == 201, reply.raw
        for entity in (
            {"id": "urn:ngsi-ld:ParkingSpot:p1", "type": "ParkingSpot",
             "status": {"type": "Property", "value": "free"}},
            {"id": "urn:ngsi-ld:WaterConsumption:w1", "type": "WaterConsumption",
             "volume": {"type": "Property", "value": 12.5}},
        ):
            reply = await srv.post("/entities", entity, headers={"NGSILD-Tenant": "commune-b", **owner})
            assert reply.status == 201, reply.raw
        yield srv
    finally:
        await srv.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_queries_show_only_shared_types_and_attributes(shared: StoreServer) -> None:
    public = await shared.get("/entities", headers=A, params={"type": "AirQualityObserved,Open311ServiceRequest",
                                                              "count": "true"})
    assert public.status == 200
    assert sorted(e["id"] for e in public.json) == ["urn:ngsi-ld:AirQualityObserved:1",
                                                    "urn:ngsi-ld:AirQualityObserved:2"]
    assert public.headers["NGSILD-Results-Count"] == "2"
    for entity in public.json:
        assert set(entity) == {"id", "type", "pm25", "location"}
    syndicat = await shared.get("/entities", headers={**A, **bearer(SYNDICAT_TOKEN)},
                                params={"type": "AirQualityObserved"})
    for entity in syndicat.json:
        assert set(entity) == {"id", "type", "pm25", "location"} | set()  # secretNote excluded, email personal
        assert entity["location"]["value"]["coordinates"] == PRECISE  # no coarsening in the syndicat's rule
    owner = await shared.get("/entities", headers={**A, **bearer(TENANT_A_TOKEN)},
                             params={"type": "AirQualityObserved,Open311ServiceRequest"})
    assert len(owner.json) == 3 and "secretNote" in owner.json[0] and "email" in owner.json[0]


async def test_a_type_not_shared_is_invisible_in_every_query_form(shared: StoreServer) -> None:
    only_reports = await shared.get("/entities", headers=A, params={"type": "Open311ServiceRequest", "count": "true"})
    assert only_reports.status == 200 and only_reports.json == []
    assert only_reports.headers["NGSILD-Results-Count"] == "0"
    by_id = await shared.get("/entities", headers=A, params={"id": REPORT["id"], "local": "true"})
    assert by_id.json == []
    everything = await shared.get("/entities", headers=A, params={"local": "true", "count": "true", "limit": "1"})
    assert everything.headers["NGSILD-Results-Count"] == "2"
    assert [e["id"] for e in everything.json] == ["urn:ngsi-ld:AirQualityObserved:1"]
    assert any('rel="next"' in link for link in everything.links)
    second = await shared.get("/entities", headers=A, params={"local": "true", "limit": "1", "offset": "1"})
    assert [e["id"] for e in second.json] == ["urn:ngsi-ld:AirQualityObserved:2"]
    assert not any('rel="next"' in link for link in second.links)
    posted = await shared.post("/entityOperations/query",
                               {"type": "Query", "entities": [{"type": "Open311ServiceRequest"}]}, headers=A)
    assert posted.status == 200 and posted.json == []
    # the other commune shares nothing with the public: every query there is empty
    other = await shared.get("/entities", headers={"NGSILD-Tenant": "commune-b"},
                             params={"local": "true", "count": "true"})
    assert other.json == [] and other.headers["NGSILD-Results-Count"] == "0"


async def test_hidden_attributes_cannot_be_probed(shared: StoreServer) -> None:
    for params in ({"q": 'secretNote=="calibration drift"'}, {"q": "secretNote"}, {"attrs": "secretNote"},
                   {"q": 'email=="resident@example.org"'}, {"type": "AirQualityObserved", "q": "secretNote"}):
        reply = await shared.get("/entities", headers=A, params={**params, "count": "true"})
        assert reply.status == 200 and reply.json == [], params
        assert reply.headers["NGSILD-Results-Count"] == "0"
    absent = await shared.get("/entities", headers=A, params={"type": "AirQualityObserved", "q": "!secretNote"})
    assert len(absent.json) == 2  # as if the attribute did not exist
    visible = await shared.get("/entities", headers=A, params={"q": "pm25>20"})
    assert [e["id"] for e in visible.json] == ["urn:ngsi-ld:AirQualityObserved:2"]
    ordered = await shared.get("/entities", headers=A,
                               params={"type": "AirQualityObserved", "orderBy": "pm25;desc"})
    assert [e["pm25"]["value"] for e in ordered.json] == [30, 10]


async def test_retrieving_a_hidden_entity_is_the_404_of_an_absent_one(shared: StoreServer) -> None:
    hidden = await shared.get(f"/entities/{REPORT['id']}", headers=A)
    absent_id = "urn:ngsi-ld:Open311ServiceRequest:r2"
    absent = await shared.get(f"/entities/{absent_id}", headers=A)
    assert hidden.status == absent.status == 404
    assert hidden.raw.replace(REPORT_ID.encode(), b"<id>") == absent.raw.replace(absent_id.encode(), b"<id>")
    assert hidden.headers["Content-Type"] == absent.headers["Content-Type"]
    shown = await shared.get("/entities/urn:ngsi-ld:AirQualityObserved:1", headers=A,
                             params={"attrs": "secretNote"})
    assert shown.status == 404 and b"secretNote" in shown.raw  # the name the reader gave, nothing more
    assert b"calibration" not in shown.raw


async def test_locations_are_snapped_in_every_representation(shared: StoreServer) -> None:
    expected = list(sharing.snap(PRECISE[0], PRECISE[1], 1000))
    assert expected != PRECISE
    normalized = await shared.get("/entities/urn:ngsi-ld:AirQualityObserved:1", headers=A)
    assert normalized.json["location"]["value"]["coordinates"] == expected
    key_values = await shared.get("/entities/urn:ngsi-ld:AirQualityObserved:1", headers=A,
                                  params={"options": "keyValues"})
    assert key_values.json["location"]["coordinates"] == expected
    geojson = await shared.get("/entities", headers={**A, "Accept": "application/geo+json"},
                               params={"type": "AirQualityObserved"})
    assert [f["geometry"]["coordinates"] for f in geojson.json["features"]] == [expected, expected]
    assert "secretNote" not in geojson.raw.decode() and "calibration" not in geojson.raw.decode()
    # a geo-query decides on the snapped position, not the precise one
    near_precise = await shared.get("/entities", headers=A, params={
        "type": "AirQualityObserved", "georel": "near;maxDistance==5", "geometry": "Point",
        "coordinates": json.dumps(PRECISE)})
    near_snapped = await shared.get("/entities", headers=A, params={
        "type": "AirQualityObserved", "georel": "near;maxDistance==5", "geometry": "Point",
        "coordinates": json.dumps(expected)})
    assert near_precise.json == [] and len(near_snapped.json) == 2


async def test_types_and_attributes_list_only_what_is_shared(shared: StoreServer) -> None:
    types = await shared.get("/types", headers=A)
    assert types.json["typeList"] == ["AirQualityObserved"]
    details = await shared.get("/types", headers=A, params={"details": "true"})
    assert details.json == [{"id": details.json[0]["id"], "type": "EntityType", "typeName": "AirQualityObserved",
                             "attributeNames": ["location", "pm25"]}]
    one = await shared.get("/types/AirQualityObserved", headers=A)
    assert one.json["entityCount"] == 2
    assert sorted(a["attributeName"] for a in one.json["attributeDetails"]) == ["location", "pm25"]
    hidden = await shared.get("/types/Open311ServiceRequest", headers=A)
    absent = await shared.get("/types/NoSuchType", headers=A)
    assert hidden.status == absent.status == 404
    attributes = await shared.get("/attributes", headers=A)
    assert sorted(attributes.json["attributeList"]) == ["location", "pm25"]
    pm25 = await shared.get("/attributes/pm25", headers=A)
    assert pm25.json["attributeCount"] == 2
    for name in ("secretNote", "email", "description"):
        assert (await shared.get(f"/attributes/{name}", headers=A)).status == 404
    syndicat_b = await shared.get("/types", headers={"NGSILD-Tenant": "commune-b", **bearer(SYNDICAT_TOKEN)})
    assert syndicat_b.json["typeList"] == ["ParkingSpot"]


async def test_temporal_reads_follow_the_policy_and_average_per_hour(shared: StoreServer) -> None:
    owner = {**A, **bearer(TENANT_A_TOKEN)}
    entity_id = "urn:ngsi-ld:AirQualityObserved:1"
    for minute, value in ((5, 10), (20, 20), (40, 60)):
        at = f"2026-03-01T08:{minute:02d}:00Z"
        reply = await shared.post(f"/temporal/entities/{entity_id}/attrs", {
            "pm25": {"type": "Property", "value": value, "observedAt": at},
            "secretNote": {"type": "Property", "value": f"note {minute}", "observedAt": at},
        }, headers=owner)
        assert reply.status == 204, reply.raw
    window = {"timerel": "between", "timeAt": "2026-03-01T00:00:00Z", "endTimeAt": "2026-03-02T00:00:00Z"}
    full = await shared.get(f"/temporal/entities/{entity_id}", headers=owner, params=window)
    assert len(full.json["pm25"]) == 3 and "secretNote" in full.json
    public = await shared.get(f"/temporal/entities/{entity_id}", headers=A, params=window)
    assert public.status == 200
    assert set(public.json) == {"id", "type", "pm25"}
    assert [(i["value"], i["observedAt"]) for i in public.json["pm25"]] == [(30, "2026-03-01T08:00:00Z")]
    values = await shared.get(f"/temporal/entities/{entity_id}", headers=A,
                              params={**window, "options": "temporalValues"})
    assert values.json["pm25"]["values"] == [[30, "2026-03-01T08:00:00Z"]]
    syndicat = await shared.get(f"/temporal/entities/{entity_id}", headers={**A, **bearer(SYNDICAT_TOKEN)},
                                params=window)
    assert len(syndicat.json["pm25"]) == 3 and "secretNote" not in syndicat.json
    query = await shared.get("/temporal/entities", headers=A,
                             params={**window, "type": "AirQualityObserved,Open311ServiceRequest", "count": "true"})
    assert [e["id"] for e in query.json] == [entity_id] and query.headers["NGSILD-Results-Count"] == "1"
    probe = await shared.get("/temporal/entities", headers=A,
                             params={**window, "type": "AirQualityObserved", "q": 'secretNote=="note 5"'})
    assert probe.json == []
    fine = await shared.get("/temporal/entities", headers=A, params={
        **window, "type": "AirQualityObserved", "options": "aggregatedValues", "aggrMethods": "avg",
        "aggrPeriodDuration": "PT1M"})
    assert fine.status == 400 and b"per hour" in fine.raw
    hidden = await shared.get(f"/temporal/entities/{REPORT['id']}", headers=A, params=window)
    absent = await shared.get("/temporal/entities/urn:ngsi-ld:Open311ServiceRequest:r2", headers=A, params=window)
    assert hidden.status == absent.status == 404
    assert hidden.raw.replace(REPORT_ID.encode(), b"<id>") == absent.raw.replace(
        b"urn:ngsi-ld:Open311ServiceRequest:r2", b"<id>")


async def test_subscriptions_and_writes_stay_the_owners(shared: StoreServer) -> None:
    subscription = {"type": "Subscription", "entities": [{"type": "Open311ServiceRequest"}],
                    "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}}
    for headers in (A, {**A, **bearer(SYNDICAT_TOKEN)}):
        assert (await shared.post("/subscriptions", subscription, headers=headers)).status == 401
        assert (await shared.get("/subscriptions", headers=headers)).status == 401
        assert (await shared.post("/entities", air(9, 1), headers=headers)).status == 401
    created = await shared.post("/subscriptions", subscription, headers={**A, **bearer(TENANT_A_TOKEN)})
    assert created.status == 201
    listed = await shared.get("/subscriptions", headers={**A, **bearer(SYNDICAT_TOKEN)})
    assert listed.status == 401 and b"Open311" not in listed.raw
    registrations = await shared.get("/csourceRegistrations", headers={**A, **bearer(SYNDICAT_TOKEN)})
    assert registrations.status == 401


async def test_a_neighbour_with_no_rule_sees_what_the_public_sees(shared: StoreServer) -> None:
    voisin = {"NGSILD-Tenant": "commune-b", **bearer(VOISIN_TOKEN)}
    reply = await shared.get("/entities", headers=voisin, params={"local": "true", "count": "true"})
    assert reply.json == [] and reply.headers["NGSILD-Results-Count"] == "0"
    assert (await shared.get("/types", headers=voisin)).json["typeList"] == []
    in_a = await shared.get("/entities", headers={**A, **bearer(VOISIN_TOKEN)}, params={"local": "true"})
    assert all(set(e) == {"id", "type", "pm25", "location"} for e in in_a.json) and len(in_a.json) == 2


def test_a_policy_needs_store_tokens(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match="sharing policy"):
        StoreSettings(data_dir=tmp_path, sharing=policies(tmp_path)).check()


async def test_notifications_go_only_to_the_owners_subscriptions(shared: StoreServer) -> None:
    """Readers cannot subscribe; the owner's subscription keeps notifying everything, on a real receiver."""
    got: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        got.append(json.loads(await request.read()))
        arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/notify", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        body = {"type": "Subscription", "entities": [{"type": "AirQualityObserved"}],
                "notification": {"endpoint": {"uri": f"http://127.0.0.1:{port}/notify"}}}
        for token in (SYNDICAT_TOKEN, VOISIN_TOKEN):
            assert (await shared.post("/subscriptions", body, headers={**A, **bearer(token)})).status == 401
        owner = {**A, **bearer(TENANT_A_TOKEN)}
        assert (await shared.post("/subscriptions", body, headers=owner)).status == 201
        reply = await shared.patch("/entities/urn:ngsi-ld:AirQualityObserved:1/attrs",
                                   {"pm25": {"type": "Property", "value": 42}}, headers=owner)
        assert reply.status == 204
        await asyncio.wait_for(arrived.wait(), 15)
        notified = got[0]["data"][0]
        assert notified["pm25"]["value"] == 42 and "secretNote" in notified  # the owner's own data
        assert len(got) == 1  # one subscription in the store: the owner's
    finally:
        await runner.cleanup()
