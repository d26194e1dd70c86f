"""Temporal API over HTTP: pagination of instances (206), pick/omit, orderBy, geo-queries, POST queries,
deletion marks (timeproperty=deletedAt) and temporal writes that correct an observation (CIM 009 V1.9.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigInvalid
from gateway.store.app import StoreSettings
from tests.store.conftest import BACKENDS, StoreServer

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

VEHICLE = "urn:ngsi-ld:Vehicle:"


def minute(day: int, m: int) -> str:
    return f"2020-01-{day:02d}T01:{m:02d}:00Z"


def vehicle(n: str, speeds: int, fuels: int, *, fuel_day: int = 1, location: list[float] | None = None,
            name: str | None = None) -> dict[str, Any]:
    """A temporal vehicle: ``speeds`` readings on day 1, ``fuels`` readings on ``fuel_day``."""
    entity: dict[str, Any] = {
        "id": f"{VEHICLE}{n}",
        "type": "Vehicle",
        "speed": [{"type": "Property", "value": i, "observedAt": minute(1, i)} for i in range(1, speeds + 1)],
        "fuelLevel": [{"type": "Property", "value": 100 - i, "observedAt": minute(fuel_day, i + 2)}
                      for i in range(1, fuels + 1)],
    }
    if location is not None:
        entity["location"] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": location},
                              "observedAt": minute(1, 1)}
    if name is not None:
        entity["name"] = {"type": "Property", "value": name, "observedAt": minute(1, 1),
                          "rank": {"type": "Property", "value": len(name)}}
    return entity


@pytest.fixture
async def paged(tmp_path: Path) -> AsyncIterator[StoreServer]:
    """A store that answers at most 10 instances per attribute (as the ETSI suite asks to configure)."""
    srv = StoreServer(replace(StoreSettings(data_dir=tmp_path / "paged"), temporal_instance_limit=10))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


AFTER_2019 = {"timerel": "after", "timeAt": "2019-01-01T00:00:00Z"}


async def test_partial_content_cuts_every_attribute_at_one_time(paged: StoreServer) -> None:
    assert (await paged.post("/temporal/entities", vehicle("1", 20, 20))).status == 201
    reply = await paged.get(f"/temporal/entities/{VEHICLE}1", params=AFTER_2019)
    assert reply.status == 206, reply.raw
    # speed reached the limit at 01:10; fuelLevel (01:03 onwards) is cut at the same moment
    assert reply.headers["Content-Range"] == f"date-time {AFTER_2019['timeAt']}-{minute(1, 10)}/*"
    assert [i["value"] for i in reply.json["speed"]] == list(range(1, 11))
    assert [i["observedAt"] for i in reply.json["fuelLevel"]] == [minute(1, m) for m in range(3, 11)]
    # the next page starts where the range ended: nothing skipped
    nxt = await paged.get(f"/temporal/entities/{VEHICLE}1", params={"timerel": "after", "timeAt": minute(1, 11)})
    assert nxt.json["speed"][0]["value"] == 11


async def test_partial_content_with_last_n_runs_backwards(paged: StoreServer) -> None:
    assert (await paged.post("/temporal/entities", vehicle("1", 20, 20))).status == 201
    reply = await paged.get(f"/temporal/entities/{VEHICLE}1", params={"lastN": "20"})
    assert reply.status == 206
    # newest first: from the newest instance back to the oldest that every attribute still covers
    assert reply.headers["Content-Range"] == f"date-time {minute(1, 22)}-{minute(1, 13)}/20"
    assert [i["value"] for i in reply.json["speed"]] == list(range(13, 21))
    small = await paged.get(f"/temporal/entities/{VEHICLE}1", params={"lastN": "5"})
    assert small.status == 200 and "Content-Range" not in small.headers
    assert [i["value"] for i in small.json["speed"]] == list(range(16, 21))


async def test_cut_leaves_an_attribute_outside_the_range_empty(paged: StoreServer) -> None:
    assert (await paged.post("/temporal/entities", vehicle("1", 30, 30, fuel_day=2))).status == 201
    reply = await paged.get(f"/temporal/entities/{VEHICLE}1", params=AFTER_2019)
    assert reply.status == 206
    assert len(reply.json["speed"]) == 10 and reply.json["fuelLevel"] == []
    tv = await paged.get(f"/temporal/entities/{VEHICLE}1", params={**AFTER_2019, "options": "temporalValues"})
    assert tv.json["fuelLevel"] == {"type": "Property", "values": []}


async def test_query_without_cut_is_200(paged: StoreServer) -> None:
    for n in ("1", "2"):
        assert (await paged.post("/temporal/entities", vehicle(n, 5, 5))).status == 201
    reply = await paged.get("/temporal/entities", params={"type": "Vehicle", **AFTER_2019})
    assert reply.status == 200 and "Content-Range" not in reply.headers
    assert [len(e["speed"]) for e in reply.json] == [5, 5]


async def test_pick_and_omit(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", vehicle("1", 2, 2))).status == 201
    picked = await server.get(f"/temporal/entities/{VEHICLE}1", params={"pick": "id,speed"})
    assert picked.status == 200 and set(picked.json) == {"id", "speed"}
    omitted = await server.get(f"/temporal/entities/{VEHICLE}1", params={"omit": "type,speed"})
    assert set(omitted.json) == {"id", "fuelLevel"}
    nothing = await server.get(f"/temporal/entities/{VEHICLE}1", params={"pick": "unknown"})
    assert nothing.status == 404 and nothing.problem() == "ResourceNotFound"
    everything = await server.get(f"/temporal/entities/{VEHICLE}1", params={"omit": "id,type,speed,fuelLevel"})
    assert everything.status == 404
    ids = await server.get("/temporal/entities", params={"type": "Vehicle", "pick": "id"})
    assert ids.json == [{"id": f"{VEHICLE}1"}]
    both = await server.get(f"/temporal/entities/{VEHICLE}1", params={"pick": "speed", "omit": "speed"})
    assert both.problem() == "BadRequestData"
    with_attrs = await server.get(f"/temporal/entities/{VEHICLE}1", params={"omit": "speed", "attrs": "speed"})
    assert with_attrs.problem() == "BadRequestData"


async def test_order_by(server: StoreServer) -> None:
    for n, name in (("b", "B"), ("a", "A"), ("c", "CC")):
        assert (await server.post("/temporal/entities", vehicle(n, 1, 1, name=name))).status == 201
    async def order(spec: str) -> list[str]:
        reply = await server.get("/temporal/entities", params={"type": "Vehicle", "orderBy": spec})
        assert reply.status == 200, reply.raw
        return [e["id"][len(VEHICLE):] for e in reply.json]

    assert await order("name") == ["a", "b", "c"]
    assert await order("name;desc") == ["c", "b", "a"]
    assert await order("id;desc") == ["c", "b", "a"]
    assert await order("createdAt") == ["b", "a", "c"]
    assert await order("type,name.rank;desc,name") == ["c", "a", "b"]


async def test_queries_need_a_filter_and_skip_entities_without_instances(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", vehicle("1", 2, 2))).status == 201
    unfiltered = await server.get("/temporal/entities", params=AFTER_2019)
    assert unfiltered.problem() == "BadRequestData"
    ids_only = await server.get("/temporal/entities", params={"id": f"{VEHICLE}1", **AFTER_2019})
    assert ids_only.problem() == "BadRequestData"
    local = await server.get("/temporal/entities", params={"local": "true", **AFTER_2019})
    assert [e["id"] for e in local.json] == [f"{VEHICLE}1"]
    later = await server.get("/temporal/entities", params={"type": "Vehicle", "timerel": "after",
                                                           "timeAt": "2021-01-01T00:00:00Z"})
    assert later.status == 200 and later.json == []
    other_dataset = await server.get("/temporal/entities", params={"type": "Vehicle", "attrs": "speed",
                                                                   "datasetId": "urn:ngsi-ld:Dataset:x"})
    assert other_dataset.json == []


async def test_geo_query_and_post_query_with_several_selectors(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", vehicle("near", 1, 1, location=[2.35, 48.85]))).status == 201
    assert (await server.post("/temporal/entities", vehicle("far", 1, 1, location=[5.0, 43.0]))).status == 201
    bus = {"id": "urn:ngsi-ld:Bus:1", "type": "Bus",
           "speed": [{"type": "Property", "value": 40, "observedAt": minute(1, 1)}]}
    assert (await server.post("/temporal/entities", bus)).status == 201
    near = await server.get("/temporal/entities", params={
        "type": "Vehicle", "georel": "near;maxDistance==1000", "geometry": "Point", "coordinates": "[2.35,48.85]"})
    assert near.status == 200, near.raw
    assert [e["id"] for e in near.json] == [f"{VEHICLE}near"]
    query = {"type": "Query", "entities": [{"type": "Bus"}, {"id": f"{VEHICLE}far", "type": "Vehicle"}],
             "temporalQ": AFTER_2019}
    posted = await server.post("/temporal/entityOperations/query", query)
    assert posted.status == 200, posted.raw
    assert sorted(e["id"] for e in posted.json) == ["urn:ngsi-ld:Bus:1", f"{VEHICLE}far"]


async def test_format_takes_precedence_and_bad_options_are_invalid_requests(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", vehicle("1", 2, 2))).status == 201
    reply = await server.get(f"/temporal/entities/{VEHICLE}1", params={
        "format": "temporalValues", "options": "aggregatedValues", "aggrMethods": "sum"})
    assert reply.status == 200 and reply.json["speed"]["values"] == [[1, minute(1, 1)], [2, minute(1, 2)]]
    bad = await server.get(f"/temporal/entities/{VEHICLE}1", params={"options": "temporalValues,sideways"})
    assert bad.problem() == "InvalidRequest"


async def test_simplified_values_of_structured_kinds_are_keyed(server: StoreServer) -> None:
    entity = {"id": f"{VEHICLE}1", "type": "Vehicle",
              "street": [{"type": "LanguageProperty", "languageMap": {"fr": "Grand Place"},
                          "observedAt": minute(1, 1)}],
              "config": [{"type": "JsonProperty", "json": {"max": 80}, "observedAt": minute(1, 1)}]}
    assert (await server.post("/temporal/entities", entity)).status == 201
    reply = await server.get(f"/temporal/entities/{VEHICLE}1", params={"options": "temporalValues"})
    assert reply.json["street"]["languageMaps"] == [[{"languageMap": {"fr": "Grand Place"}}, minute(1, 1)]]
    assert reply.json["config"]["jsons"] == [[{"json": {"max": 80}}, minute(1, 1)]]


async def test_lang_turns_language_maps_into_strings(server: StoreServer) -> None:
    entity = {"id": f"{VEHICLE}1", "type": "Vehicle",
              "street": [{"type": "LanguageProperty", "languageMap": {"fr": "Grand Place", "nl": "Grote Markt"},
                          "observedAt": minute(1, 1)}]}
    assert (await server.post("/temporal/entities", entity)).status == 201
    normalized = await server.get(f"/temporal/entities/{VEHICLE}1", params={"lang": "nl"})
    (street,) = normalized.json["street"]
    assert (street["type"], street["value"], street["lang"]) == ("Property", "Grote Markt", "nl")
    values = await server.get(f"/temporal/entities/{VEHICLE}1", params={"lang": "de,fr", "format": "simplified"})
    assert values.json["street"] == {"type": "Property", "values": [["Grand Place", minute(1, 1)]]}


async def test_sending_an_observation_again_corrects_it(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", vehicle("1", 2, 0))).status == 201
    fix = {"id": f"{VEHICLE}1", "type": "Vehicle",
           "speed": [{"type": "Property", "value": 99, "observedAt": minute(1, 1)},
                     {"type": "Property", "value": 3, "observedAt": minute(1, 3)}]}
    assert (await server.post("/temporal/entities", fix)).status == 204
    reply = await server.get(f"/temporal/entities/{VEHICLE}1", params={"options": "temporalValues"})
    assert reply.json["speed"]["values"] == [[99, minute(1, 1)], [2, minute(1, 2)], [3, minute(1, 3)]]


async def test_deleted_attribute_leaves_a_deletion_mark(server: StoreServer) -> None:
    entity = {"id": f"{VEHICLE}1", "type": "Vehicle",
              "speed": {"type": "Property", "value": 50, "observedAt": minute(1, 1)},
              "name": {"type": "LanguageProperty", "languageMap": {"fr": "Bus"}}}
    assert (await server.post("/entities", entity)).status == 201
    assert (await server.delete(f"/entities/{VEHICLE}1/attrs/speed")).status == 204
    assert (await server.delete(f"/entities/{VEHICLE}1/attrs/name")).status == 204
    ordinary = await server.get(f"/temporal/entities/{VEHICLE}1")
    assert [i["value"] for i in ordinary.json["speed"]] == [50]  # marks stay out of ordinary reads
    marks = await server.get(f"/temporal/entities/{VEHICLE}1", params={"timeproperty": "deletedAt"})
    assert marks.status == 200, marks.raw
    (speed,) = marks.json["speed"]
    assert speed["value"] == "urn:ngsi-ld:null" and "deletedAt" in speed and "observedAt" not in speed
    (name,) = marks.json["name"]
    assert name["languageMap"] == {"@none": "urn:ngsi-ld:null"}
    values = await server.get(f"/temporal/entities/{VEHICLE}1", params={"timeproperty": "deletedAt",
                                                                        "options": "temporalValues"})
    assert values.json["speed"]["values"] == [["urn:ngsi-ld:null", speed["deletedAt"]]]


async def test_temporal_creation_makes_the_entity(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", vehicle("1", 3, 2))).status == 201
    current = await server.get(f"/entities/{VEHICLE}1")
    assert current.status == 200
    assert current.json["speed"]["value"] == 3 and current.json["fuelLevel"]["value"] == 98
    history = await server.get(f"/temporal/entities/{VEHICLE}1", params={"options": "temporalValues"})
    assert len(history.json["speed"]["values"]) == 3  # the mirror wrote no second history


async def test_missing_ids_in_paths_are_bad_requests(server: StoreServer) -> None:
    assert (await server.post("/temporal/entities", vehicle("1", 1, 0))).status == 201
    instance = (await server.get(f"/temporal/entities/{VEHICLE}1")).json["speed"][0]["instanceId"]
    fragment = {"speed": {"type": "Property", "value": 1}}
    assert (await server.post("/temporal/entities//attrs", fragment)).problem() == "BadRequestData"
    assert (await server.delete("/temporal/entities//attrs/speed")).problem() == "BadRequestData"
    assert (await server.delete(f"/temporal/entities//attrs/speed/{instance}")).problem() == "BadRequestData"
    assert (await server.delete(f"/temporal/entities/{VEHICLE}1/attrs//{instance}")).problem() == "BadRequestData"
    not_uri = await server.patch(f"/temporal/entities/{VEHICLE}1/attrs/speed/invalidId", fragment)
    assert not_uri.problem() == "BadRequestData"
    no_attr = await server.patch(f"/temporal/entities/{VEHICLE}1/attrs//{instance}", fragment)
    assert no_attr.status == 405


def test_instance_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match="temporal_instance_limit"):
        StoreSettings(data_dir=tmp_path, temporal_instance_limit=0).check()
