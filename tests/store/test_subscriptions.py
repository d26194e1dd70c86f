"""Subscriptions and notifications against a running store and a real receiver on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from gateway.store import subscriptions
from tests.conftest import free_port
from tests.loopback import receiving
from tests.store.conftest import BACKENDS, CORE, JONCTION, LINK_JONCTION, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

STREETLIGHT_IRI = "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"


@dataclass
class Received:
    """One notification as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """An aiohttp app collecting notifications; ``fail[path]`` answers 500 that many times first."""

    port: int
    got: list[Received] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.got if r.path == path]

    async def wait(self, path: str, count: int, within: float = 15.0) -> list[Received]:
        """Poll until ``count`` notifications reached ``path`` (generous timeout, no fixed sleep)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.at(path)) < count:
            if loop.time() > deadline:
                raise AssertionError(f"{path}: {len(self.at(path))} notifications, expected {count}")
            await asyncio.sleep(0.02)
        return self.at(path)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(free_port())

    async def handle(request: web.Request) -> web.Response:
        rec.attempts[request.path] = rec.attempts.get(request.path, 0) + 1
        if rec.fail.get(request.path, 0) > 0:
            rec.fail[request.path] -= 1
            return web.Response(status=500)
        rec.got.append(Received(request.path, dict(request.headers), json.loads(await request.read())))
        return web.Response(status=204)

    async with receiving(handle, rec.port):
        yield rec


@pytest.fixture(autouse=True)
def fast_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short retry waits and a quick periodic tick, so failure tests stay fast."""
    monkeypatch.setattr(subscriptions.Notifier, "retry_delays", (0.05, 0.1))
    monkeypatch.setattr(subscriptions.Notifier, "tick", 0.05)


def sub(receiver: Receiver, path: str, **members: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "Subscription",
        "entities": [{"type": "Sensor"}],
        "notification": {"endpoint": {"uri": receiver.url(path), "accept": "application/json"}},
    }
    body.update(members)
    return body


def sensor(n: int, **attrs: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": f"urn:ngsi-ld:Sensor:{n}", "type": "Sensor"}
    for name, value in attrs.items():
        entity[name] = {"type": "Property", "value": value}
    return entity


async def set_attr(server: StoreServer, n: int, headers: dict[str, str] | None = None, **attrs: Any) -> None:
    body = {k: {"type": "Property", "value": v} for k, v in attrs.items()}
    reply = await server.patch(f"/entities/urn:ngsi-ld:Sensor:{n}/attrs", body, headers=headers)
    assert reply.status in (204, 207), reply.raw


async def create(server: StoreServer, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    reply = await server.post("/subscriptions", body, headers=headers)
    assert reply.status == 201, reply.raw
    location = reply.headers["Location"]
    assert location.startswith("/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:")
    return location.rsplit("/", 1)[1]


async def test_crud_and_representation(server: StoreServer, receiver: Receiver) -> None:
    sub_id = await create(server, sub(receiver, "/a", watchedAttributes=["temperature"], q="temperature>20",
                                      subscriptionName="chaleur", throttling=5))
    one = await server.get(f"/subscriptions/{sub_id}")
    assert one.status == 200, one.raw
    body = one.json
    assert body["id"] == sub_id and body["type"] == "Subscription"
    assert body["entities"] == [{"type": "Sensor"}] and body["watchedAttributes"] == ["temperature"]
    assert body["q"] == "temperature>20" and body["subscriptionName"] == "chaleur"
    # isActive is echoed only when the client set it; createdAt/modifiedAt only with sysAttrs (§4.8)
    assert body["status"] == "active" and "isActive" not in body and "createdAt" not in body
    with_sys = (await server.get(f"/subscriptions/{sub_id}", params={"options": "sysAttrs"})).json
    assert with_sys["createdAt"] and with_sys["modifiedAt"]
    assert body["notification"]["endpoint"]["uri"] == receiver.url("/a")
    assert body["notification"]["format"] == "normalized"
    second = await create(server, sub(receiver, "/b", id="urn:ngsi-ld:Subscription:fixed"))
    assert second == "urn:ngsi-ld:Subscription:fixed"
    duplicate = await server.post("/subscriptions", sub(receiver, "/b", id="urn:ngsi-ld:Subscription:fixed"))
    assert duplicate.status == 409 and duplicate.problem() == "AlreadyExists"
    listed = await server.get("/subscriptions", params={"limit": "1", "count": "true"})
    assert listed.headers["NGSILD-Results-Count"] == "2"
    assert [s["id"] for s in listed.json] == [sub_id]
    assert any('rel="next"' in link for link in listed.links)
    paused = await server.patch(f"/subscriptions/{sub_id}", {"isActive": False, "q": "temperature>25"})
    assert paused.status == 204, paused.raw
    body = (await server.get(f"/subscriptions/{sub_id}")).json
    assert body["status"] == "paused" and body["q"] == "temperature>25"
    assert body["notification"]["endpoint"]["uri"] == receiver.url("/a")  # kept by the partial update
    assert (await server.delete(f"/subscriptions/{sub_id}")).status == 204
    assert (await server.get(f"/subscriptions/{sub_id}")).problem() == "ResourceNotFound"
    assert (await server.delete(f"/subscriptions/{sub_id}")).problem() == "ResourceNotFound"


async def test_watched_attributes_and_q(server: StoreServer, receiver: Receiver) -> None:
    await create(server, sub(receiver, "/hot", watchedAttributes=["temperature"], q="temperature>20"))
    assert (await server.post("/entities", sensor(1, temperature=25, humidity=40))).status == 201
    (first,) = await receiver.wait("/hot", 1)
    assert first.body["type"] == "Notification" and first.body["id"].startswith("urn:ngsi-ld:Notification:")
    assert first.body["subscriptionId"].startswith("urn:ngsi-ld:Subscription:") and first.body["notifiedAt"]
    (data,) = first.body["data"]
    assert data["id"] == "urn:ngsi-ld:Sensor:1" and data["temperature"]["value"] == 25
    assert first.headers["Content-Type"].startswith("application/json")
    assert 'rel="http://www.w3.org/ns/json-ld#context"' in first.headers["Link"]
    assert "NGSILD-Tenant" not in first.headers
    await set_attr(server, 1, humidity=45)  # not watched: no notification
    await set_attr(server, 1, temperature=15)  # q false: no notification
    await set_attr(server, 1, temperature=30)
    got = await receiver.wait("/hot", 2)
    assert got[1].body["data"][0]["temperature"]["value"] == 30
    await set_attr(server, 1, temperature=31)
    got = await receiver.wait("/hot", 3)
    assert [g.body["data"][0]["temperature"]["value"] for g in got] == [25, 30, 31]
    state = (await server.get(f"/subscriptions/{first.body['subscriptionId']}")).json["notification"]
    assert state["timesSent"] == 3 and state["status"] == "ok" and state["lastSuccess"]


async def test_tenant_is_echoed_and_isolated(server: StoreServer, receiver: Receiver) -> None:
    tenant = {"NGSILD-Tenant": "commune-a"}
    await create(server, sub(receiver, "/tenant"), headers=tenant)
    await create(server, sub(receiver, "/default"))
    assert (await server.post("/entities", sensor(1, temperature=1), headers=tenant)).status == 201
    (got,) = await receiver.wait("/tenant", 1)
    assert got.headers["NGSILD-Tenant"] == "commune-a"
    assert (await server.post("/entities", sensor(2, temperature=1))).status == 201
    await receiver.wait("/default", 1)
    assert [r.body["data"][0]["id"] for r in receiver.at("/default")] == ["urn:ngsi-ld:Sensor:2"]
    assert len(receiver.at("/tenant")) == 1
    assert [s["notification"]["endpoint"]["uri"] for s in (await server.get("/subscriptions", headers=tenant)).json] \
        == [receiver.url("/tenant")]
    unknown = await server.get("/subscriptions", headers={"NGSILD-Tenant": "nowhere"})
    assert unknown.problem() == "NonexistentTenant"


async def test_throttling_drops_notifications_within_the_period(server: StoreServer, receiver: Receiver) -> None:
    await create(server, sub(receiver, "/throttled", throttling=3600))
    await create(server, sub(receiver, "/every"))
    assert (await server.post("/entities", sensor(1, temperature=1))).status == 201
    for value in (2, 3, 4):
        await set_attr(server, 1, temperature=value)
    await receiver.wait("/every", 4)
    await receiver.wait("/throttled", 1)
    assert [r.body["data"][0]["temperature"]["value"] for r in receiver.at("/throttled")] == [1]


async def test_failure_is_reported_then_retry_recovers(server: StoreServer, receiver: Receiver) -> None:
    dead = await create(server, sub(receiver, "/down"))
    receiver.fail["/down"] = 100
    flaky = await create(server, sub(receiver, "/flaky"))
    receiver.fail["/flaky"] = 2  # two 500s, then the third attempt (second retry) succeeds
    assert (await server.post("/entities", sensor(1, temperature=1))).status == 201
    await receiver.wait("/flaky", 1)
    assert receiver.attempts["/flaky"] == 3

    async def state(sub_id: str) -> dict[str, Any]:
        return dict((await server.get(f"/subscriptions/{sub_id}")).json["notification"])

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (await state(dead)).get("status") != "failed":
        assert loop.time() < deadline, await state(dead)
        await asyncio.sleep(0.02)
    down = await state(dead)
    assert down["lastFailure"] and down["timesFailed"] == 1 and "lastSuccess" not in down
    assert receiver.attempts["/down"] == 3  # one try and two bounded retries
    ok = await state(flaky)
    # the failed first attempt is recorded at once (lastFailure); the retry's success wins the status
    assert ok["status"] == "ok" and ok["lastSuccess"] and ok["lastFailure"] <= ok["lastSuccess"]


async def test_format_attributes_and_ld_json(server: StoreServer, receiver: Receiver) -> None:
    body = sub(receiver, "/kv")
    body["notification"] = {
        "endpoint": {"uri": receiver.url("/kv"), "accept": "application/ld+json",
                     "receiverInfo": [{"key": "X-Auth-Receiver", "value": "k1"}]},
        "format": "keyValues",
        "attributes": ["temperature"],
    }
    await create(server, body)
    assert (await server.post("/entities", sensor(1, temperature=21, humidity=50))).status == 201
    (got,) = await receiver.wait("/kv", 1)
    assert got.headers["Content-Type"].startswith("application/ld+json")
    assert "Link" not in got.headers and "@context" in got.body
    assert got.headers["X-Auth-Receiver"] == "k1"
    # JSON-LD notification: each entity is a JSON-LD document carrying the @context too
    assert got.body["data"] == [
        {"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor", "temperature": 21, "@context": got.body["@context"]}
    ]


async def test_id_pattern_and_deletion_trigger(server: StoreServer, receiver: Receiver) -> None:
    await create(server, sub(receiver, "/pattern", entities=[{"type": "Sensor", "idPattern": ".*:Sensor:1[0-9]$"}],
                             notificationTrigger=["entityCreated", "entityDeleted"]))
    for n in (1, 12):
        assert (await server.post("/entities", sensor(n, temperature=n))).status == 201
    await set_attr(server, 12, temperature=99)  # entityUpdated is not asked for
    assert (await server.delete("/entities/urn:ngsi-ld:Sensor:12")).status == 204
    got = await receiver.wait("/pattern", 2)
    assert [r.body["data"][0]["id"] for r in got] == ["urn:ngsi-ld:Sensor:12"] * 2
    assert "deletedAt" in got[1].body["data"][0] and "temperature" not in got[1].body["data"][0]


async def test_geo_q_filter(server: StoreServer, receiver: Receiver) -> None:
    square = [[[2.0, 48.0], [3.0, 48.0], [3.0, 49.0], [2.0, 49.0], [2.0, 48.0]]]
    await create(server, sub(receiver, "/geo", geoQ={"georel": "within", "geometry": "Polygon",
                                                     "coordinates": square}))
    inside = {**sensor(1), "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.3, 48.8]}}}
    outside = {**sensor(2), "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5.0, 45.0]}}}
    assert (await server.post("/entities", outside)).status == 201
    assert (await server.post("/entities", inside)).status == 201
    (got,) = await receiver.wait("/geo", 1)
    assert got.body["data"][0]["id"] == "urn:ngsi-ld:Sensor:1"


async def test_periodic_notifications(server: StoreServer, receiver: Receiver) -> None:
    assert (await server.post("/entities", sensor(1, temperature=1))).status == 201
    assert (await server.post("/entities", sensor(2, temperature=2))).status == 201
    await create(server, sub(receiver, "/periodic", timeInterval=0.2))
    got = await receiver.wait("/periodic", 2)
    for notification in got[:2]:
        assert sorted(d["id"] for d in notification.body["data"]) == ["urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:2"]


async def test_subscriptions_survive_a_restart(server: StoreServer, receiver: Receiver) -> None:
    sub_id = await create(server, sub(receiver, "/persist"))
    await server.restart()
    assert (await server.get(f"/subscriptions/{sub_id}")).status == 200
    assert (await server.post("/entities", sensor(1, temperature=1))).status == 201
    await receiver.wait("/persist", 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (await server.get(f"/subscriptions/{sub_id}")).json["notification"].get("timesSent") != 1:
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    await server.restart()
    state = (await server.get(f"/subscriptions/{sub_id}")).json["notification"]
    assert state["timesSent"] == 1 and state["status"] == "ok" and state["lastSuccess"]


@pytest.mark.parametrize(
    ("change", "status", "kind", "fragment"),
    [
        (lambda b: b.pop("notification"), 400, "BadRequestData", "/notification"),
        (lambda b: b.pop("entities"), 400, "BadRequestData", "entities or watchedAttributes"),
        (lambda b: b.update(entities=[{"id": "urn:x:1"}]), 400, "BadRequestData", "/entities/0/type"),
        (lambda b: b.update(entities=[{"type": "T", "idPattern": "(["}]), 400, "BadRequestData", "idPattern"),
        (lambda b: b.update(watchedAttributes=[]), 400, "BadRequestData", "/watchedAttributes"),
        (lambda b: b.update(watchedAttributes=["a"], timeInterval=10), 400, "BadRequestData", "timeInterval"),
        (lambda b: b.update(timeInterval=10, throttling=5), 400, "BadRequestData", "throttling"),
        (lambda b: b.update(throttling=-1), 400, "BadRequestData", "/throttling"),
        (lambda b: b.update(q="temperature>"), 400, "BadRequestData", "position"),
        (lambda b: b.update(geoQ={"georel": "near", "geometry": "Point", "coordinates": [1, 2]}), 400,
         "BadRequestData", "maxDistance"),
        (lambda b: b.update(expiresAt="tomorrow"), 400, "BadRequestData", "/expiresAt"),
        (lambda b: b.update(isActive="yes"), 400, "BadRequestData", "/isActive"),
        (lambda b: b.update(colour="blue"), 400, "BadRequestData", "/colour"),
        (lambda b: b.update(id="not a uri"), 400, "BadRequestData", "/id"),
        (lambda b: b.update(type="Abonnement"), 400, "BadRequestData", "/type"),
        (lambda b: b["notification"].update(format="xml"), 400, "BadRequestData", "/notification/format"),
        (lambda b: b["notification"]["endpoint"].update(uri="nowhere"), 400, "BadRequestData", "endpoint/uri"),
        (lambda b: b["notification"]["endpoint"].update(accept="text/plain"), 400, "BadRequestData", "accept"),
        (lambda b: b["notification"]["endpoint"].update(uri="ftp://host/file"), 501, "NotImplemented", "ftp"),
        (lambda b: b["notification"]["endpoint"].update(uri="mqtt://broker"), 400, "BadRequestData", "topic"),
        (lambda b: b["notification"]["endpoint"].update(notifierInfo=[{"key": "MQTT-QoS", "value": "3"}]), 400,
         "BadRequestData", "MQTT-QoS"),
        (lambda b: b.update(id=""), 400, "BadRequestData", "/id"),
        (lambda b: b["notification"]["endpoint"].update(receiverInfo=[{"key": "X-A\nB", "value": "v"}]), 400,
         "BadRequestData", "receiverInfo"),
        (lambda b: b.update(expiresAt="2000-01-01T00:00:00Z"), 400, "BadRequestData", "/expiresAt"),
        (lambda b: b["notification"].update(pick=["id"], omit=["id"]), 400, "BadRequestData", "pick"),
        (lambda b: b["notification"].update(pick=["id"], attributes=["temperature"]), 400, "BadRequestData", "pick"),
        (lambda b: b["notification"].update(omit=["id"], attributes=["temperature"]), 400, "BadRequestData", "omit"),
        (lambda b: b.update(notificationTrigger=["sometimes"]), 400, "BadRequestData", "notificationTrigger"),
        (lambda b: b.update(temporalQ={}), 501, "NotImplemented", "temporalQ"),
        (lambda b: b["notification"].update(join="deep"), 400, "BadRequestData", "/notification/join"),
        (lambda b: b["notification"].update(join=1), 400, "BadRequestData", "/notification/join"),
        (lambda b: b["notification"].update(join="flat", joinLevel=0), 400, "BadRequestData", "joinLevel"),
        (lambda b: b["notification"].update(join="flat", joinLevel="2"), 400, "BadRequestData", "joinLevel"),
        (lambda b: b["notification"].update(join="inline", joinLevel=True), 400, "BadRequestData", "joinLevel"),
        (lambda b: b["notification"].update(joinLevel=-1), 400, "BadRequestData", "joinLevel"),
        (lambda b: b["notification"].update(join="flat", joinLevel=9), 403, "TooComplexQuery", "joinLevel"),
    ],
)
async def test_invalid_subscriptions(
    server: StoreServer, receiver: Receiver, change: Callable[[dict[str, Any]], Any], status: int, kind: str,
    fragment: str,
) -> None:
    body = sub(receiver, "/x")
    change(body)
    reply = await server.post("/subscriptions", body)
    assert (reply.status, reply.problem()) == (status, kind)
    assert fragment in reply.json["detail"]


async def test_expired_subscription_is_not_notified(server: StoreServer, receiver: Receiver) -> None:
    # §5.8.1: an expiresAt in the past is refused, so the subscription expires while we wait
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    old = await create(server, sub(receiver, "/old", expiresAt=soon))
    await create(server, sub(receiver, "/new"))
    deadline = asyncio.get_running_loop().time() + 15
    while (await server.get(f"/subscriptions/{old}")).json["status"] != "expired":
        assert asyncio.get_running_loop().time() < deadline, "the subscription never expired"
        await asyncio.sleep(0.1)
    assert (await server.post("/entities", sensor(1, temperature=1))).status == 201
    await receiver.wait("/new", 1)
    assert receiver.at("/old") == []


async def test_media_and_parameter_rules(server: StoreServer, receiver: Receiver) -> None:
    raw = json.dumps(sub(receiver, "/x")).encode()
    wrong_type = await server.request("POST", "/subscriptions", data=raw, content_type="text/plain")
    assert wrong_type.status == 415
    in_body = await server.post("/subscriptions", {**sub(receiver, "/x"), "@context": "https://x.org/c.jsonld"})
    assert in_body.problem() == "BadRequestData"
    assert (await server.get("/subscriptions", params={"bogus": "1"})).problem() == "InvalidRequest"
    assert (await server.get("/subscriptions/not-a-uri")).problem() == "BadRequestData"


async def test_show_changes_and_same_value_rewrites(server: StoreServer, receiver: Receiver) -> None:
    body = sub(receiver, "/changes", watchedAttributes=["temperature"])
    body["notification"]["showChanges"] = True
    await create(server, body)
    assert (await server.post("/entities", sensor(1, temperature=20))).status == 201
    await set_attr(server, 1, temperature=22)
    await set_attr(server, 1, temperature=22)  # written again with the same value: still an update
    got = await receiver.wait("/changes", 3)
    assert "previousValue" not in got[0].body["data"][0]["temperature"]
    assert got[1].body["data"][0]["temperature"] == {"type": "Property", "value": 22, "previousValue": 20}
    assert got[2].body["data"][0]["temperature"] == {"type": "Property", "value": 22}


async def test_large_batches_are_split(
    server: StoreServer, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions.notifier, "MAX_ENTITIES_PER_NOTIFICATION", 2)
    await create(server, sub(receiver, "/batch"))
    reply = await server.post("/entityOperations/create", [sensor(n, temperature=n) for n in range(5)])
    assert reply.status == 201, reply.raw
    got = await receiver.wait("/batch", 3)
    assert [len(g.body["data"]) for g in got] == [2, 2, 1]
    assert [d["id"] for g in got for d in g.body["data"]] == [f"urn:ngsi-ld:Sensor:{n}" for n in range(5)]


async def test_type_expression_in_entity_selector(server: StoreServer, receiver: Receiver) -> None:
    sub_id = await create(server, sub(receiver, "/types", entities=[{"type": "Sensor,Meter"}]))
    assert (await server.get(f"/subscriptions/{sub_id}")).json["entities"] == [{"type": "Sensor,Meter"}]
    for n, entity_type in enumerate(("Meter", "Building", "Sensor")):
        entity = {**sensor(n, temperature=n), "type": entity_type}
        assert (await server.post("/entities", entity)).status == 201
    got = await receiver.wait("/types", 2)
    assert [g.body["data"][0]["type"] for g in got] == ["Meter", "Sensor"]


async def test_subscription_context_drives_notifications(server: StoreServer, receiver: Receiver) -> None:
    link = {"Link": LINK_JONCTION}
    body = sub(receiver, "/ctx", entities=[{"type": "Streetlight"}], watchedAttributes=["powerState"])
    sub_id = await create(server, body, headers=link)
    assert (await server.post("/entities", streetlight(1), headers=link)).status == 201
    (got,) = await receiver.wait("/ctx", 1)
    assert f"<{JONCTION}>" in got.headers["Link"]
    assert got.body["data"][0]["type"] == "Streetlight" and got.body["data"][0]["powerState"]["value"] == "on"
    with_link = (await server.get(f"/subscriptions/{sub_id}", headers=link)).json
    assert with_link["entities"] == [{"type": "Streetlight"}] and with_link["watchedAttributes"] == ["powerState"]
    without = (await server.get(f"/subscriptions/{sub_id}")).json
    assert without["entities"][0]["type"].startswith("https://")  # compacted with the core context only


async def test_jsonld_context_member_and_inline_contexts(server: StoreServer, receiver: Receiver) -> None:
    by_member = sub(receiver, "/member", entities=[{"type": f"{STREETLIGHT_IRI}"}], jsonldContext=JONCTION)
    await create(server, by_member)
    inline = {**sub(receiver, "/inline", entities=[{"type": "Lamp"}]),
              "@context": [{"Lamp": STREETLIGHT_IRI}, CORE]}
    reply = await server.post("/subscriptions", inline, content_type="application/ld+json")
    assert reply.status == 201, reply.raw
    assert (await server.post("/entities", streetlight(1), headers={"Link": LINK_JONCTION})).status == 201
    (member,) = await receiver.wait("/member", 1)
    assert f"<{JONCTION}>" in member.headers["Link"] and member.body["data"][0]["type"] == "Streetlight"
    (linked,) = await receiver.wait("/inline", 1)
    # an inline context cannot be linked: the data comes with full IRIs and the core context
    assert f"<{CORE}>" in linked.headers["Link"] and linked.body["data"][0]["type"] == STREETLIGHT_IRI
    bad = await server.post("/subscriptions", sub(receiver, "/x", jsonldContext="not a uri"))
    assert bad.problem() == "BadRequestData"
    unknown = await server.post("/subscriptions", sub(receiver, "/x", jsonldContext="https://example.org/none.jsonld"))
    assert unknown.status == 504 and unknown.problem() == "LdContextNotAvailable"


NULL = "urn:ngsi-ld:null"


async def test_deleted_attributes_are_notified_as_ngsi_ld_null(server: StoreServer, receiver: Receiver) -> None:
    # §4.5.18: a deleted attribute (or instance) is notified with NGSI-LD Null as its value
    await create(server, sub(receiver, "/del", watchedAttributes=["temperature", "owner"],
                             notificationTrigger=["attributeDeleted"]))
    entity = {**sensor(1, temperature=[{"type": "Property", "value": 1},
                                       {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:b"}]),
              "owner": {"type": "Relationship", "object": "urn:ngsi-ld:Person:1"},
              "label": {"type": "LanguageProperty", "languageMap": {"fr": "capteur"}}}
    entity["temperature"] = entity["temperature"]["value"]  # the multi-instance attribute as is
    assert (await server.post("/entities", entity)).status == 201, "created"
    base = "/entities/urn:ngsi-ld:Sensor:1/attrs"
    assert (await server.delete(f"{base}/temperature", params={"datasetId": "urn:ngsi-ld:Dataset:b"})).status == 204
    assert (await server.delete(f"{base}/owner")).status == 204
    assert (await server.delete(f"{base}/label")).status == 204  # not watched: no notification
    got = await receiver.wait("/del", 2)
    first, second = (g.body["data"][0] for g in got)
    assert first["temperature"] == [
        {"type": "Property", "value": 1},
        {"type": "Property", "value": NULL, "datasetId": "urn:ngsi-ld:Dataset:b"},
    ]
    assert second["owner"] == {"type": "Relationship", "object": NULL}
    # the rest of the entity as it is at that moment
    assert first["owner"]["object"] == "urn:ngsi-ld:Person:1" and second["temperature"] == first["temperature"][0]
    assert len(receiver.at("/del")) == 2


async def test_entity_deletion_contents(server: StoreServer, receiver: Receiver) -> None:
    plain = sub(receiver, "/gone", notificationTrigger=["entityDeleted"])
    plain["notification"].update(format="keyValues", sysAttrs=True)
    await create(server, plain)
    changes = sub(receiver, "/gone-changes", notificationTrigger=["entityDeleted"])
    changes["notification"]["showChanges"] = True
    await create(server, changes)
    watched = sub(receiver, "/gone-watched", watchedAttributes=["temperature"],
                  notificationTrigger=["attributeDeleted"])
    await create(server, watched)
    entity = {**sensor(1, temperature=20), "label": {"type": "LanguageProperty", "languageMap": {"fr": "capteur"}}}
    assert (await server.post("/entities", entity)).status == 201
    assert (await server.delete("/entities/urn:ngsi-ld:Sensor:1")).status == 204
    (gone,) = await receiver.wait("/gone", 1)
    # entityDeleted: the entity's members only (with sysAttrs: createdAt, modifiedAt), and deletedAt
    assert set(gone.body["data"][0]) == {"id", "type", "createdAt", "modifiedAt", "deletedAt"}
    (shown,) = await receiver.wait("/gone-changes", 1)
    data = shown.body["data"][0]
    assert data["deletedAt"] and data["temperature"] == {"type": "Property", "value": NULL, "previousValue": 20}
    assert data["label"] == {"type": "LanguageProperty", "languageMap": NULL, "previousLanguageMap": {"fr": "capteur"}}
    (only,) = await receiver.wait("/gone-watched", 1)
    assert {k for k in only.body["data"][0] if k not in ("id", "type")} == {"deletedAt", "temperature"}


async def test_show_changes_for_every_attribute_type(server: StoreServer, receiver: Receiver) -> None:
    body = sub(receiver, "/prev", notificationTrigger=["attributeUpdated", "attributeDeleted"])
    body["notification"]["showChanges"] = True
    await create(server, body)
    entity = {
        **sensor(1),
        "label": {"type": "LanguageProperty", "languageMap": {"fr": "un"}},
        "config": {"type": "JsonProperty", "json": {"a": 1}},
        "category": {"type": "VocabProperty", "vocab": "indoor"},
        "place": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1, 2]}},
    }
    assert (await server.post("/entities", entity)).status == 201
    update = {
        "label": {"type": "LanguageProperty", "languageMap": {"fr": "deux"}},
        "config": {"type": "JsonProperty", "json": {"a": 2}},
        "category": {"type": "VocabProperty", "vocab": "outdoor"},
    }
    assert (await server.patch("/entities/urn:ngsi-ld:Sensor:1/attrs", update)).status == 204
    assert (await server.delete("/entities/urn:ngsi-ld:Sensor:1/attrs/place")).status == 204
    got = await receiver.wait("/prev", 2)
    changed = got[0].body["data"][0]
    assert changed["label"]["previousLanguageMap"] == {"fr": "un"}
    assert changed["config"]["previousJson"] == {"a": 1}
    assert changed["category"] == {"type": "VocabProperty", "vocab": "outdoor", "previousVocab": "indoor"}
    deleted = got[1].body["data"][0]["place"]
    assert deleted == {"type": "GeoProperty", "value": NULL, "previousValue": {"type": "Point", "coordinates": [1, 2]}}


async def test_pick_omit_and_dataset_id(server: StoreServer, receiver: Receiver) -> None:
    picked = sub(receiver, "/pick")
    picked["notification"]["pick"] = ["id", "temperature"]
    pick_id = await create(server, picked)
    omitted = sub(receiver, "/omit")
    omitted["notification"]["omit"] = ["type", "humidity"]
    await create(server, omitted)
    await create(server, sub(receiver, "/ds", datasetId=["urn:ngsi-ld:Dataset:b"]))
    temperature = [{"type": "Property", "value": 1},
                   {"type": "Property", "value": 2, "datasetId": "urn:ngsi-ld:Dataset:b"}]
    entity = {**sensor(1, humidity=50), "temperature": temperature}
    assert (await server.post("/entities", entity)).status == 201
    (pick,) = await receiver.wait("/pick", 1)
    assert pick.body["data"] == [{"id": "urn:ngsi-ld:Sensor:1", "temperature": temperature}]
    (omit,) = await receiver.wait("/omit", 1)
    assert omit.body["data"] == [{"id": "urn:ngsi-ld:Sensor:1", "temperature": temperature}]
    (ds,) = await receiver.wait("/ds", 1)
    assert ds.body["data"][0]["temperature"] == temperature[1]
    shown = (await server.get(f"/subscriptions/{pick_id}")).json["notification"]
    assert shown["pick"] == ["id", "temperature"] and "attributes" not in shown


async def test_percent_encoded_q_and_list_options(server: StoreServer, receiver: Receiver) -> None:
    # lenient: q percent-encoded as in a URL still selects (FIWARE clients and the ETSI suite send it so)
    await create(server, sub(receiver, "/q", q='name=="Tour%20Eiffel"'))
    for n, name in ((1, "Tour Eiffel"), (2, "Louvre")):
        assert (await server.post("/entities", sensor(n, name=name))).status == 201
    (got,) = await receiver.wait("/q", 1)
    assert got.body["data"][0]["id"] == "urn:ngsi-ld:Sensor:1"
    for n in range(2):
        await create(server, sub(receiver, f"/p{n}"))
    counted = await server.get("/subscriptions", params={"options": "count", "limit": "1", "offset": "1"})
    assert counted.status == 200 and counted.headers["NGSILD-Results-Count"] == "3"
    links = ", ".join(counted.links)
    assert '</ngsi-ld/v1/subscriptions?options=count&limit=1&offset=2>;rel="next"' in links
    assert 'rel="prev";type="application/json"' in links
    assert (await server.get("/subscriptions", params={"options": "bogus"})).problem() == "BadRequestData"


async def test_update_rules(server: StoreServer, receiver: Receiver) -> None:
    sub_id = await create(server, sub(receiver, "/u"))
    # a member of the fragment replaces the stored one whole: a notification needs its endpoint
    partial = await server.patch(f"/subscriptions/{sub_id}", {"notification": {"format": "keyValues"}})
    assert partial.problem() == "BadRequestData"
    past = await server.patch(f"/subscriptions/{sub_id}", {"expiresAt": "2020-08-01T22:07:00Z"})
    assert past.problem() == "BadRequestData" and "expiresAt" in past.json["detail"]
    paused = await server.patch(f"/subscriptions/{sub_id}", {"isActive": False})
    assert paused.status == 204
    shown = (await server.get(f"/subscriptions/{sub_id}")).json
    assert shown["status"] == "paused" and shown["isActive"] is False
    assert shown["notification"]["endpoint"]["uri"] == receiver.url("/u")


def _linked(kind: str, n: int, **members: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {"id": f"urn:ngsi-ld:{kind}:{n}", "type": kind}
    for name, value in members.items():
        if isinstance(value, str) and value.startswith("urn:"):
            entity[name] = {"type": "Relationship", "object": value}
        else:
            entity[name] = {"type": "Property", "value": value}
    return entity


async def test_join_flat_and_inline_notifications(server: StoreServer, receiver: Receiver) -> None:
    # §4.5.23, §5.2.14: notification.join/joinLevel notify the linked entities with the entity
    region = _linked("Region", 1, label="Est")
    site = _linked("Site", 1, name="Nord", region="urn:ngsi-ld:Region:1")
    for entity in (region, site):
        assert (await server.post("/entities", entity)).status == 201
    flat = sub(receiver, "/flat")
    flat["notification"].update(join="flat", joinLevel=1)
    flat_id = await create(server, flat)
    deep = sub(receiver, "/deep")
    deep["notification"].update(join="inline", joinLevel=2, format="simplified")
    deep_id = await create(server, deep)
    picked = sub(receiver, "/attrs")
    picked["notification"].update(join="inline", attributes=["site"])
    await create(server, picked)
    plain = sub(receiver, "/none")
    plain["notification"].update(join="@none")
    await create(server, plain)
    sensor_1 = _linked("Sensor", 1, temperature=20, site="urn:ngsi-ld:Site:1")
    assert (await server.post("/entities", sensor_1)).status == 201
    (got,) = await receiver.wait("/flat", 1)
    assert got.body["data"] == [sensor_1, site]  # the entity, then each linked entity once
    (got,) = await receiver.wait("/deep", 1)
    assert got.body["data"] == [{
        "id": "urn:ngsi-ld:Sensor:1", "type": "Sensor", "temperature": 20,
        "site": {"id": "urn:ngsi-ld:Site:1", "type": "Site", "name": "Nord",
                 "region": {"id": "urn:ngsi-ld:Region:1", "type": "Region", "label": "Est"}},
    }]
    (got,) = await receiver.wait("/attrs", 1)
    # attributes select the notified entity's attributes; the linked entity comes whole
    assert got.body["data"] == [{
        "id": "urn:ngsi-ld:Sensor:1", "type": "Sensor",
        "site": {"type": "Relationship", "object": "urn:ngsi-ld:Site:1", "entity": site},
    }]
    (got,) = await receiver.wait("/none", 1)
    assert got.body["data"] == [sensor_1]
    shown = (await server.get(f"/subscriptions/{flat_id}")).json["notification"]
    assert shown["join"] == "flat" and shown["joinLevel"] == 1
    shown = (await server.get(f"/subscriptions/{deep_id}")).json["notification"]
    assert shown["join"] == "inline" and shown["joinLevel"] == 2 and shown["format"] == "keyValues"
    listed = {s["id"]: s["notification"] for s in (await server.get("/subscriptions")).json}
    assert listed[flat_id]["join"] == "flat"
    # linked entities are read at delivery time: one that is gone is left out, the relationship stays
    assert (await server.delete("/entities/urn:ngsi-ld:Site:1")).status == 204
    await set_attr(server, 1, temperature=21)
    got_all = await receiver.wait("/flat", 2)
    assert [e["id"] for e in got_all[1].body["data"]] == ["urn:ngsi-ld:Sensor:1"]
    assert got_all[1].body["data"][0]["site"] == {"type": "Relationship", "object": "urn:ngsi-ld:Site:1"}


async def test_join_on_deleted_entity_and_ld_json(server: StoreServer, receiver: Receiver) -> None:
    site = _linked("Site", 2, name="Sud")
    assert (await server.post("/entities", site)).status == 201
    gone = sub(receiver, "/gone", notificationTrigger=["entityCreated", "entityDeleted"])
    gone["notification"].update(join="flat", showChanges=True)
    gone["notification"]["endpoint"]["accept"] = "application/ld+json"
    await create(server, gone)
    assert (await server.post("/entities", _linked("Sensor", 2, site="urn:ngsi-ld:Site:2"))).status == 201
    (created,) = await receiver.wait("/gone", 1)
    context = created.body["@context"]
    # JSON-LD notification: the linked entity of a flat join is a document of its own too
    assert created.body["data"][1] == {**site, "@context": context}
    assert (await server.delete("/entities/urn:ngsi-ld:Sensor:2")).status == 204
    deleted = (await receiver.wait("/gone", 2))[1].body["data"]
    # the deleted relationship is NGSI-LD Null: nothing is linked through it
    assert [e["id"] for e in deleted] == ["urn:ngsi-ld:Sensor:2"]
    assert deleted[0]["site"]["object"] == "urn:ngsi-ld:null"
    assert deleted[0]["site"]["previousObject"] == "urn:ngsi-ld:Site:2"


async def test_readers_never_see_endpoint_secrets(server: StoreServer, receiver: Receiver) -> None:
    basic = sub(receiver, "/basic")
    basic["notification"]["endpoint"]["uri"] = receiver.url("/basic").replace("http://", "http://alice:pw-9f3k@")
    basic_id = await create(server, basic)
    bearer = sub(receiver, "/bearer")
    bearer["notification"]["endpoint"]["receiverInfo"] = [
        {"key": "Authorization", "value": "Bearer t0k-77aa"},
        {"key": "X-Api-Key", "value": "k-5511"},
        {"key": "X-Tag", "value": "visible"},
    ]
    bearer_id = await create(server, bearer)
    one = await server.get(f"/subscriptions/{basic_id}")
    assert one.json["notification"]["endpoint"]["uri"] == receiver.url("/basic").replace("http://", "http://alice:***@")
    two = await server.get(f"/subscriptions/{bearer_id}")
    assert two.json["notification"]["endpoint"]["receiverInfo"] == [
        {"key": "Authorization", "value": "***"},
        {"key": "X-Api-Key", "value": "***"},
        {"key": "X-Tag", "value": "visible"},
    ]
    listed = await server.get("/subscriptions")
    for reply in (one, two, listed):
        for secret in (b"pw-9f3k", b"t0k-77aa", b"k-5511"):
            assert secret not in reply.raw
    # deliveries use the real values
    assert (await server.post("/entities", sensor(1, temperature=1))).status == 201
    (got,) = await receiver.wait("/basic", 1)
    assert got.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pw-9f3k").decode()
    (got,) = await receiver.wait("/bearer", 1)
    assert got.headers["Authorization"] == "Bearer t0k-77aa" and got.headers["X-Api-Key"] == "k-5511"
    # a client that sends back what it read (masks included) keeps the secrets, and may change the rest
    for sub_id, reply in ((basic_id, one), (bearer_id, two)):
        notification = {k: v for k, v in reply.json["notification"].items() if k not in subscriptions_stats()}
        notification["format"] = "keyValues"
        assert (await server.patch(f"/subscriptions/{sub_id}", {"notification": notification})).status == 204
    await set_attr(server, 1, temperature=2)
    got_basic = (await receiver.wait("/basic", 2))[1]
    got_bearer = (await receiver.wait("/bearer", 2))[1]
    assert got_basic.body["data"][0]["temperature"] == 2 and got_bearer.body["data"][0]["temperature"] == 2
    assert got_basic.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pw-9f3k").decode()
    assert got_bearer.headers["Authorization"] == "Bearer t0k-77aa" and got_bearer.headers["X-Api-Key"] == "k-5511"
    # a new secret in the fragment replaces the stored one
    notification = {k: v for k, v in two.json["notification"].items() if k not in subscriptions_stats()}
    notification["endpoint"]["receiverInfo"][0]["value"] = "Bearer n3w"
    assert (await server.patch(f"/subscriptions/{bearer_id}", {"notification": notification})).status == 204
    await set_attr(server, 1, temperature=3)
    assert (await receiver.wait("/bearer", 3))[2].headers["Authorization"] == "Bearer n3w"


def subscriptions_stats() -> set[str]:
    """The read-only delivery state members of notification (not sent back in a PATCH)."""
    return {"timesSent", "timesFailed", "lastNotification", "lastFailure", "lastSuccess", "status"}
