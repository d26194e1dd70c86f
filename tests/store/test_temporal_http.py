"""The temporal API over HTTP against a running store: history recorded by ordinary writes."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from gateway.store import history, temporal
from tests.store.conftest import BACKENDS, StoreServer

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

SENSOR = "urn:ngsi-ld:Sensor:"
READINGS = [18.0, 19.5, 21.0, 24.5, 22.0, 31.0]
"""Temperatures of sensor 1 at 10:00, 10:15 ... 11:15 on 2024-05-01."""


def at(i: int) -> str:
    minutes = 15 * i
    return f"2024-05-01T{10 + minutes // 60:02d}:{minutes % 60:02d}:00Z"


def sensor(n: int, temperature: float, observed: str) -> dict[str, Any]:
    return {
        "id": f"{SENSOR}{n}",
        "type": "Sensor",
        "temperature": {"type": "Property", "value": temperature, "observedAt": observed, "unitCode": "CEL"},
        "status": {"type": "Property", "value": "ok"},
    }


async def feed(server: StoreServer) -> None:
    """Sensor 1 gets six readings through PATCH; sensor 2 gets two lower ones."""
    reply = await server.post("/entities", sensor(1, READINGS[0], at(0)))
    assert reply.status == 201, reply.raw
    for i, value in enumerate(READINGS[1:], start=1):
        reply = await server.patch(
            f"/entities/{SENSOR}1/attrs",
            {"temperature": {"type": "Property", "value": value, "observedAt": at(i), "unitCode": "CEL"}},
        )
        assert reply.status == 204, reply.raw
    assert (await server.post("/entities", sensor(2, 10.0, at(0)))).status == 201
    reply = await server.patch(
        f"/entities/{SENSOR}2/attrs", {"temperature": {"type": "Property", "value": 12.0, "observedAt": at(2)}}
    )
    assert reply.status == 204


WINDOW = {"timerel": "between", "timeAt": "2024-05-01T00:00:00Z", "endTimeAt": "2024-05-02T00:00:00Z"}


async def test_normalized_history_of_one_entity(server: StoreServer) -> None:
    await feed(server)
    reply = await server.get(f"/temporal/entities/{SENSOR}1", params=WINDOW)
    assert reply.status == 200, reply.raw
    body = reply.json
    assert body["id"] == f"{SENSOR}1" and body["type"] == "Sensor"
    instances = body["temperature"]
    assert [i["value"] for i in instances] == READINGS
    assert [i["observedAt"] for i in instances] == [at(i) for i in range(6)]
    assert all(i["type"] == "Property" and i["unitCode"] == "CEL" and i["instanceId"] for i in instances)
    assert len({i["instanceId"] for i in instances}) == 6
    assert "createdAt" not in instances[0]
    # status carries no observedAt: with a timerel on observedAt it is out of the window
    assert "status" not in body
    assert any('rel="http://www.w3.org/ns/json-ld#context"' in link for link in reply.links)


async def test_temporal_values_and_sys_attrs(server: StoreServer) -> None:
    await feed(server)
    reply = await server.get(
        f"/temporal/entities/{SENSOR}1", params={**WINDOW, "options": "temporalValues", "attrs": "temperature"}
    )
    assert reply.status == 200, reply.raw
    body = reply.json
    assert body["temperature"] == {"type": "Property", "values": [[v, at(i)] for i, v in enumerate(READINGS)]}
    reply = await server.get(f"/temporal/entities/{SENSOR}1", params={**WINDOW, "options": "sysAttrs"})
    assert all("createdAt" in i and "modifiedAt" in i for i in reply.json["temperature"])


async def test_last_n_and_time_windows(server: StoreServer) -> None:
    await feed(server)
    reply = await server.get(f"/temporal/entities/{SENSOR}1", params={"lastN": "2", "attrs": "temperature"})
    assert [i["value"] for i in reply.json["temperature"]] == READINGS[-2:]
    reply = await server.get(
        f"/temporal/entities/{SENSOR}1", params={"timerel": "before", "timeAt": at(2), "attrs": "temperature"}
    )
    assert [i["value"] for i in reply.json["temperature"]] == READINGS[:2]
    reply = await server.get(
        f"/temporal/entities/{SENSOR}1", params={"timerel": "after", "timeAt": at(4), "attrs": "temperature"}
    )
    assert [i["value"] for i in reply.json["temperature"]] == READINGS[4:]


async def test_aggregated_values_per_half_hour(server: StoreServer) -> None:
    await feed(server)
    params = {
        **WINDOW, "timerel": "between", "timeAt": at(0), "endTimeAt": at(6),
        "options": "aggregatedValues", "aggrMethods": "avg,min,max,sum,totalCount", "aggrPeriodDuration": "PT30M",
        "attrs": "temperature",
    }
    reply = await server.get(f"/temporal/entities/{SENSOR}1", params=params)
    assert reply.status == 200, reply.raw
    temperature = reply.json["temperature"]
    pairs = [READINGS[i : i + 2] for i in range(0, 6, 2)]
    assert temperature["type"] == "Property"
    assert temperature["avg"] == [[statistics.fmean(p), at(2 * k), at(2 * k + 2)] for k, p in enumerate(pairs)]
    assert [row[0] for row in temperature["max"]] == [max(p) for p in pairs]
    assert [row[0] for row in temperature["min"]] == [min(p) for p in pairs]
    assert [row[0] for row in temperature["sum"]] == [sum(p) for p in pairs]
    assert [row[0] for row in temperature["totalCount"]] == [2, 2, 2]


async def test_query_by_type_with_count_pagination_and_q(server: StoreServer) -> None:
    await feed(server)
    params = {**WINDOW, "type": "Sensor", "count": "true", "limit": "1", "options": "temporalValues"}
    first = await server.get("/temporal/entities", params=params)
    assert first.status == 200, first.raw
    assert first.headers["NGSILD-Results-Count"] == "2"
    assert [e["id"] for e in first.json] == [f"{SENSOR}1"]
    assert any('rel="next"' in link for link in first.links)
    second = await server.get("/temporal/entities", params={**params, "offset": "1"})
    assert [e["id"] for e in second.json] == [f"{SENSOR}2"]
    assert second.json[0]["temperature"]["values"] == [[10.0, at(0)], [12.0, at(2)]]
    hot = await server.get("/temporal/entities", params={**WINDOW, "type": "Sensor", "q": "temperature>30"})
    assert [e["id"] for e in hot.json] == [f"{SENSOR}1"]
    none = await server.get("/temporal/entities", params={**WINDOW, "type": "Building"})
    assert none.status == 200 and none.json == []


async def test_post_query(server: StoreServer) -> None:
    await feed(server)
    query = {
        "type": "Query",
        "entities": [{"type": "Sensor", "idPattern": ".*:2$"}],
        "attrs": ["temperature"],
        "temporalQ": {"timerel": "after", "timeAt": "2024-05-01T10:10:00Z"},
    }
    reply = await server.post("/temporal/entityOperations/query", query)
    assert reply.status == 200, reply.raw
    assert [(e["id"], [i["value"] for i in e["temperature"]]) for e in reply.json] == [(f"{SENSOR}2", [12.0])]


async def test_temporal_create_append_and_delete(server: StoreServer) -> None:
    entity = {
        "id": "urn:ngsi-ld:WaterMeter:7",
        "type": "WaterMeter",
        "volume": [
            {"type": "Property", "value": 100, "observedAt": "2024-01-01T00:00:00Z"},
            {"type": "Property", "value": 130, "observedAt": "2024-01-02T00:00:00Z"},
        ],
    }
    created = await server.post("/temporal/entities", entity)
    assert created.status == 201, created.raw
    assert created.headers["Location"].endswith("/temporal/entities/urn:ngsi-ld:WaterMeter:7")
    again = await server.post("/temporal/entities", {**entity, "volume": [
        {"type": "Property", "value": 150, "observedAt": "2024-01-03T00:00:00Z"}]})
    assert again.status == 204
    appended = await server.post(
        "/temporal/entities/urn:ngsi-ld:WaterMeter:7/attrs",
        {"volume": {"type": "Property", "value": 170, "observedAt": "2024-01-04T00:00:00Z"}},
    )
    assert appended.status == 204, appended.raw
    reply = await server.get("/temporal/entities/urn:ngsi-ld:WaterMeter:7", params={"options": "temporalValues"})
    assert [v[0] for v in reply.json["volume"]["values"]] == [100, 130, 150, 170]
    # the creation made the entity itself (its newest instance); later temporal writes leave it alone
    current = await server.get("/entities/urn:ngsi-ld:WaterMeter:7")
    assert current.status == 200 and current.json["volume"]["value"] == 130, current.raw
    instance_id = (await server.get("/temporal/entities/urn:ngsi-ld:WaterMeter:7")).json["volume"][0]["instanceId"]
    patched = await server.patch(
        f"/temporal/entities/urn:ngsi-ld:WaterMeter:7/attrs/volume/{instance_id}",
        {"volume": {"type": "Property", "value": 101, "observedAt": "2024-01-01T00:00:00Z", "unitCode": "MTQ"}},
    )
    assert patched.status == 204, patched.raw
    first = (await server.get("/temporal/entities/urn:ngsi-ld:WaterMeter:7")).json["volume"][0]
    assert (first["value"], first["unitCode"], first["instanceId"]) == (101, "MTQ", instance_id)
    gone = await server.delete(f"/temporal/entities/urn:ngsi-ld:WaterMeter:7/attrs/volume/{instance_id}")
    assert gone.status == 204
    reply = await server.get("/temporal/entities/urn:ngsi-ld:WaterMeter:7", params={"options": "temporalValues"})
    assert [v[0] for v in reply.json["volume"]["values"]] == [130, 150, 170]
    assert (await server.delete("/temporal/entities/urn:ngsi-ld:WaterMeter:7")).status == 204
    missing = await server.get("/temporal/entities/urn:ngsi-ld:WaterMeter:7")
    assert missing.status == 404 and missing.problem() == "ResourceNotFound"
    assert (await server.delete("/temporal/entities/urn:ngsi-ld:WaterMeter:7")).problem() == "ResourceNotFound"
    missing_append = await server.post("/temporal/entities/urn:ngsi-ld:WaterMeter:7/attrs", {"volume": 1})
    assert missing_append.problem() == "ResourceNotFound"


async def test_delete_attribute_history(server: StoreServer) -> None:
    await feed(server)
    assert (await server.delete(f"/temporal/entities/{SENSOR}1/attrs/temperature")).status == 204
    reply = await server.get(f"/temporal/entities/{SENSOR}1")
    assert "temperature" not in reply.json and "status" in reply.json
    again = await server.delete(f"/temporal/entities/{SENSOR}1/attrs/temperature")
    assert again.problem() == "ResourceNotFound"


async def test_tenants_are_isolated(server: StoreServer) -> None:
    tenant = {"NGSILD-Tenant": "commune-a"}
    assert (await server.post("/entities", sensor(5, 20.0, at(0)), headers=tenant)).status == 201
    reply = await server.get(f"/temporal/entities/{SENSOR}5", headers=tenant)
    assert reply.status == 200 and reply.headers["NGSILD-Tenant"] == "commune-a"
    assert (await server.get(f"/temporal/entities/{SENSOR}5")).problem() == "ResourceNotFound"
    unknown = await server.get("/temporal/entities", params={"type": "Sensor"}, headers={"NGSILD-Tenant": "nowhere"})
    assert unknown.status == 404 and unknown.problem() == "NonexistentTenant"


async def test_errors_are_problem_details(server: StoreServer) -> None:
    await feed(server)
    cases = [
        ({"timerel": "between", "timeAt": at(0)}, 400, "BadRequestData"),
        ({"timerel": "before"}, 400, "BadRequestData"),
        ({"timerel": "whenever", "timeAt": at(0)}, 400, "BadRequestData"),
        ({"timeAt": "yesterday", "timerel": "after"}, 400, "BadRequestData"),
        ({"lastN": "-3"}, 400, "BadRequestData"),
        ({"options": "aggregatedValues"}, 400, "BadRequestData"),
        ({"options": "aggregatedValues", "aggrMethods": "median"}, 400, "BadRequestData"),
        ({"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "1 hour"}, 400, "BadRequestData"),
        ({"aggrMethods": "avg"}, 400, "BadRequestData"),
        ({"options": "temporalValues,aggregatedValues"}, 400, "BadRequestData"),
        ({"q": "temperature>>1"}, 400, "BadRequestData"),
        ({"bogus": "1"}, 400, "InvalidRequest"),
        ({"georel": "near;maxDistance==10"}, 400, "BadRequestData"),
        ({"scopeQ": "/a"}, 501, "NotImplemented"),
        ({"lang": ""}, 400, "BadRequestData"),
        ({"options": "bogus"}, 400, "InvalidRequest"),
        ({"format": "keyValues"}, 400, "InvalidRequest"),
        ({"pick": "temperature", "attrs": "temperature"}, 400, "BadRequestData"),
        ({"pick": "temperature", "omit": "temperature"}, 400, "BadRequestData"),
        ({"orderBy": "temperature;sideways"}, 400, "BadRequestData"),
        ({"timeproperty": "sometime"}, 400, "BadRequestData"),
    ]
    for params, status, kind in cases:
        reply = await server.get("/temporal/entities", params={"type": "Sensor", **params})
        assert (reply.status, reply.problem()) == (status, kind), params
    not_a_uri = await server.get("/temporal/entities/not-a-uri")
    assert not_a_uri.problem() == "BadRequestData"
    bad_create = await server.post("/temporal/entities", {"id": "urn:ngsi-ld:X:1"})
    assert bad_create.problem() == "BadRequestData"
    patch = await server.patch(f"/temporal/entities/{SENSOR}1/attrs/temperature/urn:x:1", {"value": 1})
    assert patch.status == 404 and patch.problem() == "ResourceNotFound"


async def test_ld_json_response_carries_the_context(server: StoreServer) -> None:
    await feed(server)
    reply = await server.get(f"/temporal/entities/{SENSOR}2", headers={"Accept": "application/ld+json"})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/ld+json")
    assert "@context" in reply.json


async def test_partial_content_when_an_attribute_has_too_many_instances(
    server: StoreServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(temporal, "MAX_INSTANCES", 4)
    await feed(server)
    reply = await server.get(f"/temporal/entities/{SENSOR}1", params={**WINDOW, "attrs": "temperature"})
    assert reply.status == 206
    assert [i["value"] for i in reply.json["temperature"]] == READINGS[:4]
    # CIM 009 V1.9.1 §6.3.10: the range starts at timeAt (after/between), ends at the last instance
    # returned, and its size is "*" without lastN (it said "/4", the limit, before)
    assert reply.headers["Content-Range"] == f"date-time {WINDOW['timeAt']}-{at(3)}/*"
    whole = await server.get(f"/temporal/entities/{SENSOR}1", params={"lastN": "3", "attrs": "temperature"})
    assert whole.status == 200 and len(whole.json["temperature"]) == 3


async def test_timeproperty_modified_at(server: StoreServer) -> None:
    await feed(server)
    everything = await server.get(f"/temporal/entities/{SENSOR}1", params={"attrs": "temperature",
                                                                           "options": "sysAttrs"})
    stamps = [i["modifiedAt"] for i in everything.json["temperature"]]
    moments = [history.to_micros(s) for s in stamps]  # instants: texts with fractions mis-sort
    assert moments == sorted(moments)
    reply = await server.get(
        f"/temporal/entities/{SENSOR}1",
        params={"timerel": "after", "timeAt": stamps[3], "timeproperty": "modifiedAt", "attrs": "temperature",
                "options": "temporalValues"},
    )
    assert reply.status == 200, reply.raw
    assert reply.json["temperature"]["values"][-1] == [READINGS[-1], stamps[-1]]
    assert len(reply.json["temperature"]["values"]) == len([m for m in moments if m >= moments[3]])


async def test_answer_wide_budget_cuts_with_partial_content(
    server: StoreServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(temporal, "MAX_RESPONSE_INSTANCES", 7)
    await feed(server)
    reply = await server.get("/temporal/entities", params={**WINDOW, "type": "Sensor", "attrs": "temperature"})
    assert reply.status == 206
    # the budget becomes a per-attribute cap (7 // 2 series = 3) and one time range for every
    # attribute: sensor 1 is cut after at(2), sensor 2 keeps its two readings of that range
    assert [len(e["temperature"]) for e in reply.json] == [3, 2]
    assert reply.headers["Content-Range"] == f"date-time {WINDOW['timeAt']}-{at(2)}/*"
