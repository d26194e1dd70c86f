"""Batch upsert write paths: what the fast paths (history rows, type arrays) must keep exactly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.store.conftest import BACKENDS, StoreServer

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

WINDOW = {"timerel": "between", "timeAt": "2024-05-01T00:00:00Z", "endTimeAt": "2024-07-01T00:00:00Z"}
ODD_TYPE = "https://example.org/t/Odd,comma{brace}}"
"""A type IRI with characters a PostgreSQL array literal must quote."""


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def reading(n: int, value: float, observed: str) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Meter:{n}",
        "type": "Meter",
        "power": {"type": "Property", "value": value, "observedAt": observed, "unitCode": "KWT"},
        "state": {"type": "Property", "value": "ok"},
    }


async def test_odd_type_iris_round_trip_and_filter(server: StoreServer) -> None:
    entity = {"id": "urn:ngsi-ld:Odd:1", "type": [ODD_TYPE, "https://example.org/t/Second"],
              "name": {"type": "Property", "value": "x"}}
    reply = await server.post("/entityOperations/upsert", [entity])
    assert reply.status in (201, 204), reply.raw
    got = await server.get("/entities/urn:ngsi-ld:Odd:1")
    assert got.status == 200, got.raw
    assert sorted(got.json["type"]) == sorted([ODD_TYPE, "https://example.org/t/Second"])
    # a comma separates types in the ``type`` parameter: the odd one is found through its sibling
    found = await server.get("/entities", params={"type": "https://example.org/t/Second"})
    assert [sorted(e["type"]) for e in found.json] == [sorted([ODD_TYPE, "https://example.org/t/Second"])]


async def test_batch_history_keeps_times_and_gives_distinct_instance_ids(server: StoreServer) -> None:
    # one batch spans two months: the rows go to two month partitions on PostgreSQL
    batch = [reading(i, float(i), "2024-05-31T23:59:59.250Z" if i % 2 else "2024-06-01T00:00:00Z") for i in range(6)]
    assert (await server.post("/entityOperations/upsert", batch)).status in (201, 204)
    again = [reading(i, float(i) + 0.5, "2024-06-02T10:00:00.123456Z") for i in range(6)]
    assert (await server.post("/entityOperations/upsert", again)).status in (201, 204)
    ids: list[str] = []
    for i in range(6):
        reply = await server.get(f"/temporal/entities/urn:ngsi-ld:Meter:{i}", params=WINDOW)
        assert reply.status == 200, reply.raw
        power = reply.json["power"]
        assert [p["value"] for p in power] == [float(i), float(i) + 0.5]
        first = "2024-05-31T23:59:59.250Z" if i % 2 else "2024-06-01T00:00:00Z"
        assert [_at(p["observedAt"]) for p in power] == [_at(first), _at("2024-06-02T10:00:00.123456Z")]
        assert all(p["unitCode"] == "KWT" for p in power)
        ids.extend(p["instanceId"] for p in power)
    assert len(set(ids)) == len(ids) == 12
    assert all(i.startswith("urn:ngsi-ld:") for i in ids)


async def test_upsert_of_existing_entities_replaces_their_types_and_attrs(server: StoreServer) -> None:
    assert (await server.post("/entityOperations/upsert", [reading(1, 1.0, "2024-05-01T00:00:00Z")])).status == 201
    changed = {"id": "urn:ngsi-ld:Meter:1", "type": ["Meter", "Device"],
               "power": {"type": "Property", "value": 2.0}}
    assert (await server.post("/entityOperations/upsert", [changed])).status == 204
    got = (await server.get("/entities/urn:ngsi-ld:Meter:1")).json
    assert sorted(got["type"]) == ["Device", "Meter"]
    assert "state" not in got and got["power"]["value"] == 2.0
    devices = await server.get("/entities", params={"type": "Device"})
    assert [e["id"] for e in devices.json] == ["urn:ngsi-ld:Meter:1"]
