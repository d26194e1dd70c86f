"""ngsildclient (an independent NGSI-LD client from PyPI) against the store, as its users call it.

Synchronous (requests): each call runs in a thread while the store serves on the event loop. The
client's defaults are kept (its own URLs, headers, query parameters and core @context Link).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.interop.support import Receiver, store
from tests.runtime.support import eventually

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # whatever the client's own dependencies say at import
    pytest.importorskip("ngsildclient", reason="ngsildclient is in the interop extra: run `make interop`")
    from ngsildclient import Client, Entity, SubscriptionBuilder
    from ngsildclient.api.helper.temporal import TemporalQuery

T = TypeVar("T")
TENANT = "ngsildclient"


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking client call, off the event loop that serves the store."""
    return await asyncio.to_thread(fn, *args, **kwargs)


@asynccontextmanager
async def connected(tmp: Path) -> AsyncIterator[Client]:
    """The store on loopback and a client connected to it (the client probes the broker on start)."""
    async with store(tmp / "store") as url:
        host, port = url.removeprefix("http://").split(":")
        client = await call(Client, hostname=host, port=int(port), tenant=TENANT, verbose=False)
        try:
            yield client
        finally:
            await call(client.close)


def container(n: int, fill: float, lon: float = 3.87, at: str | None = None) -> Entity:
    entity = Entity("WasteContainer", f"ngl-{n}")
    entity.prop("fillingLevel", fill, observedat=at) if at else entity.prop("fillingLevel", fill)
    entity.prop("status", "ok")
    entity.gprop("location", (43.6, lon))  # (lat, lon), as the client takes it
    return entity


def ids(entities: list[Any]) -> list[str]:
    return sorted(e["id"] if isinstance(e, dict) else e.id for e in entities)


async def test_create_get_query_and_count(tmp_path: Path) -> None:
    async with connected(tmp_path) as client:
        assert await call(client.create, container(1, 0.4)) is True
        got = await call(client.get, "urn:ngsi-ld:WasteContainer:ngl-1")
        assert got["type"] == "WasteContainer"
        assert got["fillingLevel"]["value"] == 0.4
        assert got["location"]["value"]["coordinates"] == [3.87, 43.6]
        assert await call(client.exists, "urn:ngsi-ld:WasteContainer:ngl-1") is True
        assert ids(await call(client.query, type="WasteContainer", q="fillingLevel>0.3")) == [
            "urn:ngsi-ld:WasteContainer:ngl-1"]
        assert await call(client.query, type="WasteContainer", q="fillingLevel>0.5") == []
        assert await call(client.count, type="WasteContainer") == 1


async def test_batch_upsert_q_and_geoq_through_the_query_operation(tmp_path: Path) -> None:
    async with connected(tmp_path) as client:
        batch = [container(n, n / 10, lon=3.87 + n * 0.05) for n in range(1, 6)]
        result = await call(client.upsert, batch)
        assert result.ok and len(result.success) == 5, result
        result = await call(client.upsert, [container(1, 0.9), container(6, 0.05, lon=4.5)])
        assert result.ok, result
        assert await call(client.count, type="WasteContainer") == 6
        assert (await call(client.get, "urn:ngsi-ld:WasteContainer:ngl-1"))["fillingLevel"]["value"] == 0.9
        both = await call(client.query, type="WasteContainer", q='fillingLevel<0.35;status=="ok"')
        assert ids(both) == [f"urn:ngsi-ld:WasteContainer:ngl-{n}" for n in (2, 3, 6)]
        # Geo-queries go through POST /entityOperations/query with a geoQ (the client's "alt" API).
        query = {"type": "Query", "entities": [{"type": "WasteContainer"}],
                 "geoQ": {"geometry": "Point", "coordinates": [3.90, 43.6], "georel": "near;maxDistance==8000"}}
        near = await call(client.alt.query, query)
        assert ids(near) == [f"urn:ngsi-ld:WasteContainer:ngl-{n}" for n in (1, 2)]


async def test_subscription_notifies_a_real_receiver(tmp_path: Path) -> None:
    async with connected(tmp_path) as client, Receiver() as receiver:
        await call(client.create, container(1, 0.2))
        # (The builder's .query() URL-escapes q inside the JSON body; CIM 009 defines q as plain text and
        # the store reads it so: not used here.)
        subscription = (SubscriptionBuilder(receiver.url).id("urn:ngsi-ld:Subscription:ngl-1")
                        .select_type("WasteContainer").watch(["fillingLevel"]).notif(["fillingLevel"]).build())
        sub_id = await call(client.subscriptions.create, subscription)
        assert sub_id == "urn:ngsi-ld:Subscription:ngl-1"
        assert (await call(client.subscriptions.get, sub_id))["id"] == sub_id
        await call(client.upsert, [container(2, 0.1)])  # another container, created: notified too
        await call(client.upsert, [container(1, 0.8)])
        await eventually(lambda: any(e.get("fillingLevel", {}).get("value") == 0.8 for e in receiver.entities()),
                         what="a notification with the new fill level")
        notified = {e["id"]: e["fillingLevel"]["value"] for e in receiver.entities()}
        assert notified["urn:ngsi-ld:WasteContainer:ngl-2"] == 0.1, notified
        assert all(set(e) <= {"id", "type", "fillingLevel", "@context"} for e in receiver.entities())
        headers, body = receiver.received[-1]
        assert body["subscriptionId"] == sub_id and body["type"] == "Notification"
        assert headers.get("NGSILD-Tenant") == TENANT
        assert await call(client.subscriptions.delete, None) is True
        assert await call(client.subscriptions.list) == []


async def test_temporal_retrieve_returns_the_history(tmp_path: Path) -> None:
    async with connected(tmp_path) as client:
        for hour, fill in enumerate((0.1, 0.4, 0.7)):
            await call(client.upsert, [container(1, fill, at=f"2026-01-01T1{hour}:00:00Z")])
        troe = await call(client.temporal.get, "urn:ngsi-ld:WasteContainer:ngl-1", attrs=["fillingLevel"])
        troe = troe[0] if isinstance(troe, list) else troe
        assert troe["id"] == "urn:ngsi-ld:WasteContainer:ngl-1"
        values = troe["fillingLevel"]["values"]  # the simplified temporal representation: [value, time]
        assert sorted(values, key=lambda v: v[1]) == [[0.1, "2026-01-01T10:00:00Z"], [0.4, "2026-01-01T11:00:00Z"],
                                                      [0.7, "2026-01-01T12:00:00Z"]]


async def test_temporal_query_returns_the_history(tmp_path: Path) -> None:
    async with connected(tmp_path) as client:
        for hour, fill in enumerate((0.1, 0.4, 0.7)):
            await call(client.upsert, [container(1, fill, at=f"2026-01-01T1{hour}:00:00Z")])
        troes = await call(client.temporal.query, type="WasteContainer", attrs=["fillingLevel"],
                           tq=TemporalQuery().between("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"))
        assert ids(troes) == ["urn:ngsi-ld:WasteContainer:ngl-1"]
        values = troes[0]["fillingLevel"]["values"]
        assert sorted(v[0] for v in values) == [0.1, 0.4, 0.7]
