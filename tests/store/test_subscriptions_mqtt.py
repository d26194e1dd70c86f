"""MQTT notification endpoints (CIM 009 V1.9.1 §5.8.6) against a real Mosquitto broker on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from gateway.store import subscriptions
from tests.adapters.lorawan.mosquitto import MOSQUITTO, Broker
from tests.store.conftest import StoreServer


@pytest.fixture(autouse=True)
def fast_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short retry waits, so the broker-down test stays fast."""
    monkeypatch.setattr(subscriptions.Notifier, "retry_delays", (0.05, 0.1))
    monkeypatch.setattr(subscriptions.Notifier, "tick", 0.05)


def _broker(folder: Path, passwords: dict[str, str] | None = None) -> Broker:
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed (Debian package 'mosquitto'; .ci/run installs it)")
    broker = Broker(folder, passwords=passwords)
    broker.start()
    return broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """An anonymous Mosquitto on a free loopback port."""
    b = _broker(tmp_path / "anon")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[Broker]:
    """A Mosquitto that wants a user name and password."""
    b = _broker(tmp_path / "auth", passwords={"notifier": "s3cr@t"})
    try:
        yield b
    finally:
        b.stop()


class Listener:
    """An MQTT client subscribed to one topic, collecting the messages it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, dict[str, Any]]] = []

    async def wait(self, count: int, within: float = 15.0) -> list[tuple[int, dict[str, Any]]]:
        """Poll until ``count`` messages arrived (generous timeout, no fixed sleep)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(self.messages) < count:
            if loop.time() > deadline:
                raise AssertionError(f"{len(self.messages)} MQTT messages, expected {count}")
            await asyncio.sleep(0.02)
        return self.messages


async def _listen(broker: Broker, topic: str, **auth: str) -> AsyncIterator[Listener]:
    listener = Listener()
    async with aiomqtt.Client("127.0.0.1", broker.port, **auth) as client:  # type: ignore[arg-type]
        await client.subscribe(topic, qos=2)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                listener.messages.append((message.qos, json.loads(message.payload)))

        task = asyncio.get_running_loop().create_task(collect())
        try:
            yield listener
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def listener(broker: Broker) -> AsyncIterator[Listener]:
    """Listens on ``ngsild/notify`` of the anonymous broker."""
    async for item in _listen(broker, "ngsild/notify"):
        yield item


def mqtt_sub(uri: str, **notifier: str) -> dict[str, Any]:
    endpoint: dict[str, Any] = {
        "uri": uri, "accept": "application/json", "receiverInfo": [{"key": "X-Receiver", "value": "r1"}],
    }
    if notifier:
        endpoint["notifierInfo"] = [{"key": k.replace("_", "-"), "value": v} for k, v in notifier.items()]
    return {
        "type": "Subscription",
        "entities": [{"type": "Sensor"}],
        "notification": {"endpoint": endpoint, "attributes": ["temperature"]},
    }


async def _create(server: StoreServer, body: dict[str, Any]) -> str:
    reply = await server.post("/subscriptions", body)
    assert reply.status == 201, reply.raw
    return str(reply.headers["Location"]).rsplit("/", 1)[1]


def _sensor(n: int, temperature: float) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Sensor:{n}", "type": "Sensor",
            "temperature": {"type": "Property", "value": temperature},
            "humidity": {"type": "Property", "value": 40}}


async def test_mqtt_notification_payload_and_default_qos(
    server: StoreServer, broker: Broker, listener: Listener
) -> None:
    sub_id = await _create(server, mqtt_sub(f"mqtt://127.0.0.1:{broker.port}/ngsild/notify"))
    assert (await server.post("/entities", _sensor(1, 21.5))).status == 201
    ((qos, message),) = await listener.wait(1)
    assert qos == 0  # no MQTT-QoS in notifierInfo: QoS 0
    metadata, body = message["metadata"], message["body"]
    assert metadata["Content-Type"] == "application/json" and "rel=" in metadata["Link"]
    assert metadata["X-Receiver"] == "r1"
    assert body["type"] == "Notification" and body["subscriptionId"] == sub_id
    assert body["data"] == [
        {"id": "urn:ngsi-ld:Sensor:1", "type": "Sensor", "temperature": {"type": "Property", "value": 21.5}}
    ]
    state = (await server.get(f"/subscriptions/{sub_id}")).json["notification"]
    assert state["status"] == "ok" and state["timesSent"] == 1 and state["lastSuccess"]


@pytest.mark.parametrize("version", ["mqtt3.1.1", "mqtt5.0"])
async def test_mqtt_qos1_and_protocol_versions(
    server: StoreServer, broker: Broker, listener: Listener, version: str
) -> None:
    body = mqtt_sub(f"mqtt://127.0.0.1:{broker.port}/ngsild/notify", MQTT_QoS="1", MQTT_Version=version)
    sub_id = await _create(server, body)
    shown = (await server.get(f"/subscriptions/{sub_id}")).json["notification"]["endpoint"]
    assert {"key": "MQTT-Version", "value": version} in shown["notifierInfo"]
    assert (await server.post("/entities", _sensor(2, 19))).status == 201
    ((qos, message),) = await listener.wait(1)
    assert qos == 1 and message["body"]["data"][0]["temperature"]["value"] == 19


async def test_mqtt_credentials_from_the_endpoint_uri(
    server: StoreServer, secured_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    async for listener in _listen(secured_broker, "secure/#", username="notifier", password="s3cr@t"):
        # the password's reserved character travels percent-encoded in the URI userinfo
        good = await _create(server, mqtt_sub(f"mqtt://notifier:s3cr%40t@127.0.0.1:{secured_broker.port}/secure/a"))
        bad = await _create(server, mqtt_sub(f"mqtt://notifier:wrong@127.0.0.1:{secured_broker.port}/secure/b"))
        assert (await server.post("/entities", _sensor(3, 5))).status == 201
        ((_, message),) = await listener.wait(1)
        assert message["body"]["subscriptionId"] == good

        async def state(sub_id: str = bad) -> dict[str, Any]:
            return dict((await server.get(f"/subscriptions/{sub_id}")).json["notification"])

        deadline = asyncio.get_running_loop().time() + 15
        while (await state()).get("timesFailed") != 1:
            assert asyncio.get_running_loop().time() < deadline, await state()
            await asyncio.sleep(0.05)
        assert (await state())["status"] == "failed" and (await state())["lastFailure"]
        # the failure is logged without the endpoint's password
        assert f"mqtt://127.0.0.1:{secured_broker.port}/secure/b" in caplog.text and "wrong" not in caplog.text
        assert len(listener.messages) == 1  # the refused client published nothing


async def test_mqtt_password_is_masked_for_readers(server: StoreServer, secured_broker: Broker) -> None:
    async for listener in _listen(secured_broker, "secure/#", username="notifier", password="s3cr@t"):
        uri = f"mqtt://notifier:s3cr%40t@127.0.0.1:{secured_broker.port}/secure/a"
        sub_id = await _create(server, mqtt_sub(uri))
        one = await server.get(f"/subscriptions/{sub_id}")
        masked = f"mqtt://notifier:***@127.0.0.1:{secured_broker.port}/secure/a"
        assert one.json["notification"]["endpoint"]["uri"] == masked
        listed = await server.get("/subscriptions")
        assert [s["notification"]["endpoint"]["uri"] for s in listed.json] == [masked]
        for reply in (one, listed):
            assert b"s3cr" not in reply.raw
        # the broker accepts only the real password: the delivery used it
        assert (await server.post("/entities", _sensor(5, 7))).status == 201
        ((_, message),) = await listener.wait(1)
        assert message["body"]["subscriptionId"] == sub_id
        # the endpoint sent back as read keeps the real password
        state = ("timesSent", "timesFailed", "lastNotification", "lastFailure", "lastSuccess", "status")
        notification = {k: v for k, v in one.json["notification"].items() if k not in state}
        notification["attributes"] = ["humidity"]
        assert (await server.patch(f"/subscriptions/{sub_id}", {"notification": notification})).status == 204
        patch = {"humidity": {"type": "Property", "value": 41}}
        assert (await server.patch("/entities/urn:ngsi-ld:Sensor:5/attrs", patch)).status == 204
        messages = await listener.wait(2)
        assert messages[1][1]["body"]["data"][0]["humidity"]["value"] == 41


async def test_mqtt_broker_down_is_a_failure(server: StoreServer, tmp_path: Path) -> None:
    gone = _broker(tmp_path / "gone")
    port = gone.port
    gone.stop()
    sub_id = await _create(server, mqtt_sub(f"mqtt://127.0.0.1:{port}/ngsild/notify"))
    assert (await server.post("/entities", _sensor(4, 1))).status == 201
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        state = (await server.get(f"/subscriptions/{sub_id}")).json["notification"]
        if state.get("timesFailed") == 1:
            break
        assert asyncio.get_running_loop().time() < deadline, state
        await asyncio.sleep(0.05)
    assert state["status"] == "failed" and "lastSuccess" not in state
