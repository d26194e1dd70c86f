"""FiLiP's NGSI-LD client (FIWARE's Python library) against the store, as its users call it.

FiLiP is synchronous (requests): each call runs in a thread while the store serves on the event
loop. Nothing is adapted to the store: default headers (the core @context v1.6 Link, Accept
application/ld+json), FiLiP's own URLs (with the trailing slash) and its own query parameters.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.interop.support import Receiver, store
from tests.runtime.support import eventually

with warnings.catch_warnings():
    # FiLiP's pydantic models warn at import (a field shadows a parent attribute; pydantic V1-style
    # validators): FiLiP's own code, nothing the store or these tests can change.
    warnings.simplefilter("ignore")
    pytest.importorskip("filip", reason="FiLiP is in the interop extra: run `make interop`")
    from filip.clients.ngsi_ld.cb import ContextBrokerLDClient
    from filip.models.base import FiwareLDHeader
    from filip.models.ngsi_ld.context import ActionTypeLD, ContextLDEntity
    from filip.models.ngsi_ld.subscriptions import Endpoint, EntityInfo, NotificationParams, SubscriptionLD

T = TypeVar("T")
TENANT = "filip"


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A blocking FiLiP call, off the event loop that serves the store."""
    return await asyncio.to_thread(fn, *args, **kwargs)


def client(url: str) -> ContextBrokerLDClient:
    # FiLiP creates the tenant itself (it posts and deletes a TemporaryTenant entity).
    return ContextBrokerLDClient(url=url, fiware_header=FiwareLDHeader(ngsild_tenant=TENANT))


def container(n: int, fill: float, lon: float = 3.87) -> ContextLDEntity:
    return ContextLDEntity(
        id=f"urn:ngsi-ld:WasteContainer:filip-{n}", type="WasteContainer",
        fillingLevel={"type": "Property", "value": fill},
        status={"type": "Property", "value": "ok"},
        location={"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, 43.6]}})


def ids(entities: list[Any]) -> list[str]:
    return sorted(e.id for e in entities)


async def test_create_retrieve_and_list(tmp_path: Path) -> None:
    async with store(tmp_path / "store") as url:
        cb = await call(client, url)
        try:
            await call(cb.post_entity, container(1, 0.4))
            got = await call(cb.get_entity, "urn:ngsi-ld:WasteContainer:filip-1")
            assert got.type == "WasteContainer"
            assert got.model_dump()["fillingLevel"]["value"] == 0.4
            listed = await call(cb.get_entity_list, entity_type="WasteContainer")
            assert ids(listed) == ["urn:ngsi-ld:WasteContainer:filip-1"]
        finally:
            await call(cb.close)


async def test_batch_upsert_then_query_with_q_and_geoq(tmp_path: Path) -> None:
    async with store(tmp_path / "store") as url:
        cb = await call(client, url)
        try:
            batch = [container(n, n / 10, lon=3.87 + n * 0.05) for n in range(1, 6)]
            await call(cb.entity_batch_operation, entities=batch, action_type=ActionTypeLD.UPSERT, options="update")
            # A second upsert updates what exists (fill levels move) and creates the newcomer.
            again = [container(1, 0.9), container(6, 0.05, lon=4.5)]
            await call(cb.entity_batch_operation, entities=again, action_type=ActionTypeLD.UPSERT, options="update")
            everything = await call(cb.get_entity_list, entity_type="WasteContainer", limit=100)
            assert len(everything) == 6
            full = await call(cb.get_entity_list, entity_type="WasteContainer", q="fillingLevel>0.35")
            assert ids(full) == [f"urn:ngsi-ld:WasteContainer:filip-{n}" for n in (1, 4, 5)]
            both = await call(cb.get_entity_list, entity_type="WasteContainer",
                              q='fillingLevel<0.35;status=="ok"')
            assert ids(both) == [f"urn:ngsi-ld:WasteContainer:filip-{n}" for n in (2, 3, 6)]
            # Containers 1 (3.92°E, 1.6 km) and 2 (3.97°E, 5.6 km) lie within 8 km of (3.90°E, 43.6°N);
            # 3 (4.02°E) is 9.7 km away.
            near = await call(cb.get_entity_list, entity_type="WasteContainer", georel="near;maxDistance==8000",
                              geometry="Point", coordinates="[3.90,43.6]")
            assert ids(near) == [f"urn:ngsi-ld:WasteContainer:filip-{n}" for n in (1, 2)]
            box = "[[[4.4,43.5],[4.6,43.5],[4.6,43.7],[4.4,43.7],[4.4,43.5]]]"
            inside = await call(cb.get_entity_list, entity_type="WasteContainer", georel="within",
                                geometry="Polygon", coordinates=box)
            assert ids(inside) == ["urn:ngsi-ld:WasteContainer:filip-6"]
        finally:
            await call(cb.close)


async def test_id_pattern_matches_anywhere_in_the_id(tmp_path: Path) -> None:
    """idPattern is a regular expression searched in the id, as in Orion-LD and Scorpio (CIM 009 §4.9)."""
    async with store(tmp_path / "store") as url:
        cb = await call(client, url)
        try:
            await call(cb.entity_batch_operation, entities=[container(1, 0.1), container(2, 0.2)],
                       action_type=ActionTypeLD.UPSERT, options="update")
            got = await call(cb.get_entity_list, id_pattern="filip-2", entity_type="WasteContainer")
            assert ids(got) == ["urn:ngsi-ld:WasteContainer:filip-2"]
        finally:
            await call(cb.close)


async def test_subscription_notifies_a_real_receiver(tmp_path: Path) -> None:
    async with store(tmp_path / "store") as url, Receiver() as receiver:
        cb = await call(client, url)
        try:
            await call(cb.post_entity, container(1, 0.2))
            sub = SubscriptionLD(
                id="urn:ngsi-ld:Subscription:filip-1", type="Subscription",
                entities=[EntityInfo(type="WasteContainer")], watchedAttributes=["fillingLevel"],
                notification=NotificationParams(attributes=["fillingLevel"],
                                                endpoint=Endpoint(uri=receiver.url, accept="application/json")))
            sub_id = await call(cb.post_subscription, sub)
            assert sub_id == "urn:ngsi-ld:Subscription:filip-1"
            listed = await call(cb.get_subscription_list)
            assert [s.id for s in listed] == [sub_id]
            await call(cb.entity_batch_operation, entities=[container(1, 0.8)], action_type=ActionTypeLD.UPSERT,
                       options="update")
            await eventually(lambda: any(e.get("fillingLevel", {}).get("value") == 0.8 for e in receiver.entities()),
                             what="a notification with the new fill level")
            headers, body = receiver.received[-1]
            assert body["subscriptionId"] == sub_id
            assert headers.get("NGSILD-Tenant") == TENANT
            await call(cb.delete_subscription, sub_id)
            assert await call(cb.get_subscription_list) == []
        finally:
            await call(cb.close)
