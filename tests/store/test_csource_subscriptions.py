"""Context source registration subscriptions (/csourceSubscriptions, CIM 009 V1.9.1 §5.11, §6.10, §6.11).

Notifications reach a real loopback receiver; subscriptions survive a restart on both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import free_port
from tests.loopback import Loopback
from tests.store.conftest import BACKENDS, StoreServer

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

SUBS = "/csourceSubscriptions"
REGS = "/csourceRegistrations"
SUB_ID = "urn:ngsi-ld:Subscription:csr-1"


class Receiver(Loopback):
    """A loopback HTTP server that keeps the notifications it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.received: asyncio.Queue[tuple[dict[str, Any], dict[str, str]]] = asyncio.Queue()

    @property
    def url(self) -> str:
        """Where notifications go."""
        return f"http://127.0.0.1:{self.port}/notify"

    async def _notify(self, request: web.Request) -> web.Response:
        await self.received.put((await request.json(), dict(request.headers)))
        return web.Response(status=200)

    def routes(self, app: web.Application) -> None:
        """The one notification path."""
        app.router.add_post("/notify", self._notify)

    async def next(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The next notification (generous bound: the machine may be loaded)."""
        return await asyncio.wait_for(self.received.get(), 30)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A running notification receiver."""
    async with Receiver() as r:
        yield r


async def stats_after(server: StoreServer, sent: int) -> dict[str, Any]:
    """The subscription's notification member once ``sent`` deliveries are counted (written after sending)."""
    for _ in range(300):
        got = (await server.get(f"{SUBS}/{SUB_ID}")).json["notification"]
        if got.get("timesSent", 0) >= sent:
            return dict(got)
        await asyncio.sleep(0.1)
    raise AssertionError(f"timesSent never reached {sent}: {got}")


def subscription(url: str, **members: Any) -> dict[str, Any]:
    """A subscription to registrations of Streetlight sources."""
    sub: dict[str, Any] = {
        "id": SUB_ID,
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": {"endpoint": {"uri": url, "accept": "application/json"}},
    }
    sub.update(members)
    return sub


def registration(n: int, entity_type: str = "Streetlight", **members: Any) -> dict[str, Any]:
    """A registration of a source of entities of one type."""
    reg: dict[str, Any] = {
        "id": f"urn:ngsi-ld:ContextSourceRegistration:{n}",
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": entity_type}], "propertyNames": ["powerState"]},
                        {"entities": [{"type": "Other"}]}],
        "endpoint": "http://source.example:1026",
    }
    reg.update(members)
    return reg


async def test_notifications_follow_registration_changes(server: StoreServer, receiver: Receiver) -> None:
    assert (await server.post(SUBS, subscription(receiver.url))).status == 201

    assert (await server.post(REGS, registration(1))).status == 201
    body, headers = await receiver.next()
    assert body["type"] == "ContextSourceNotification" and body["subscriptionId"] == SUB_ID
    assert body["triggerReason"] == "newlyMatching" and body["notifiedAt"]
    assert [r["id"] for r in body["data"]] == ["urn:ngsi-ld:ContextSourceRegistration:1"]
    # only the matching RegistrationInfo is sent (§5.11.7)
    assert body["data"][0]["information"] == [
        {"entities": [{"type": ["Streetlight"]}], "propertyNames": ["powerState"]}
    ]
    assert "json-ld#context" in headers["Link"]

    assert (await server.post(REGS, registration(2, "Parking"))).status == 201  # not matching: no notification
    assert (await server.patch(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1",
                               {"endpoint": "http://moved.example:1026"})).status == 204
    body, _ = await receiver.next()
    assert body["triggerReason"] == "updated" and body["data"][0]["endpoint"] == "http://moved.example:1026"

    assert (await server.delete(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:1")).status == 204
    body, _ = await receiver.next()
    assert body["triggerReason"] == "noLongerMatching"
    assert body["data"][0]["id"] == "urn:ngsi-ld:ContextSourceRegistration:1"
    assert receiver.received.empty()

    got = await stats_after(server, 3)
    assert got["timesSent"] == 3 and "lastSuccess" in got and "timesFailed" not in got


async def test_creation_and_update_send_every_matching_registration(server: StoreServer, receiver: Receiver) -> None:
    assert (await server.post(REGS, registration(1))).status == 201
    assert (await server.post(REGS, registration(2, "Parking"))).status == 201
    assert (await server.post(SUBS, subscription(receiver.url))).status == 201
    body, _ = await receiver.next()
    assert body["triggerReason"] == "newlyMatching" and [r["id"][-1] for r in body["data"]] == ["1"]

    patch = {"entities": [{"type": "Parking"}, {"type": "Streetlight"}]}
    assert (await server.patch(f"{SUBS}/{SUB_ID}", patch)).status == 204
    body, _ = await receiver.next()
    assert sorted(r["id"][-1] for r in body["data"]) == ["1", "2"]


async def test_filters_q_temporal_geo_and_paused(server: StoreServer, receiver: Receiver) -> None:
    sub = subscription(receiver.url, q="registrationName==north",
                       geoQ={"georel": "near;maxDistance==2000", "geometry": "Point", "coordinates": [6.12, 45.9]},
                       temporalQ={"timerel": "after", "timeAt": "2020-01-01T00:00:00Z", "timeproperty": "observedAt"})
    assert (await server.post(SUBS, sub)).status == 201
    near = {"type": "Point", "coordinates": [6.121, 45.901]}
    interval = {"startAt": "2021-01-01T00:00:00Z"}
    assert (await server.post(REGS, registration(1, registrationName="south", location=near,
                                                 observationInterval=interval))).status == 201
    paris = {"type": "Point", "coordinates": [2.35, 48.85]}
    assert (await server.post(REGS, registration(2, registrationName="north", observationInterval=interval,
                                                 location=paris))).status == 201
    assert (await server.post(REGS, registration(3, registrationName="north", location=near))).status == 201
    assert (await server.post(REGS, registration(4, registrationName="north", location=near,
                                                 observationInterval=interval))).status == 201
    body, _ = await receiver.next()
    assert [r["id"][-1] for r in body["data"]] == ["4"]  # 1: q, 2: geoQ, 3: temporalQ keep the others out

    assert (await server.patch(f"{SUBS}/{SUB_ID}", {"isActive": False})).status == 204
    assert (await server.get(f"{SUBS}/{SUB_ID}")).json["status"] == "paused"
    assert (await server.post(REGS, registration(5, registrationName="north", location=near,
                                                 observationInterval=interval))).status == 201
    assert (await server.patch(f"{SUBS}/{SUB_ID}", {"isActive": True})).status == 204
    body, _ = await receiver.next()  # the update sends what matches now: 4 and 5, nothing was sent while paused
    assert sorted(r["id"][-1] for r in body["data"]) == ["4", "5"]
    assert receiver.received.empty()


async def test_crud_errors_and_persistence(server: StoreServer, receiver: Receiver) -> None:
    sub = subscription(receiver.url, subscriptionName="lights")
    assert (await server.post(SUBS, sub)).status == 201
    again = await server.post(SUBS, sub)
    assert again.status == 409 and again.problem() == "AlreadyExists"
    bad_type = await server.post(SUBS, {**sub, "id": "urn:x:2", "type": "RandomType"})
    assert bad_type.status == 400 and bad_type.problem() == "BadRequestData"
    bad_q = await server.post(SUBS, {**sub, "id": "urn:x:3", "q": "invalidQuery"})
    assert bad_q.status == 400 and "/q" in bad_q.json["detail"]
    past = await server.post(SUBS, {**sub, "id": "urn:x:4", "expiresAt": "2001-01-01T00:00:00Z"})
    assert past.status == 400
    assert (await server.get(f"{SUBS}/invalid")).problem() == "BadRequestData"
    assert (await server.get(f"{SUBS}/urn:x:unknown")).problem() == "ResourceNotFound"
    assert (await server.delete(f"{SUBS}/urn:x:unknown")).problem() == "ResourceNotFound"

    await server.restart()
    got = await server.get(f"{SUBS}/{SUB_ID}")
    assert got.status == 200 and got.json["subscriptionName"] == "lights" and got.json["status"] == "active"
    assert got.json["entities"] == [{"type": "Streetlight"}]
    listed = await server.get(SUBS, params={"count": "true"})
    assert [s["id"] for s in listed.json] == [SUB_ID] and listed.headers["NGSILD-Results-Count"] == "1"
    assert (await server.post(REGS, registration(1))).status == 201
    body, _ = await receiver.next()  # still notifies after the restart
    assert body["subscriptionId"] == SUB_ID
    assert (await server.delete(f"{SUBS}/{SUB_ID}")).status == 204
    assert (await server.get(f"{SUBS}/{SUB_ID}")).status == 404


async def test_failed_delivery_is_counted(server: StoreServer) -> None:
    """A receiver that is down: the notification is retried, then counted as failed (§5.2.14 status)."""
    down = f"http://127.0.0.1:{free_port()}/notify"
    assert (await server.post(SUBS, subscription(down))).status == 201
    assert (await server.post(REGS, registration(1))).status == 201
    got = await stats_after(server, 1)
    assert got["timesFailed"] == 1 and got["status"] == "failed"
    assert "lastFailure" in got and "lastSuccess" not in got
