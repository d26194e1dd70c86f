"""The MQTT transport against a real Mosquitto: keys, persistence across a broker restart, acks, TLS."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import yaml

from adapters.chirpstack_v4 import ChirpstackV4Adapter
from gateway.errors import AuthFailed
from gateway.model import RawMessage
from tests.adapters.lorawan.mosquitto import Broker, make_certificates

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "adapters" / "chirpstack_v4" / "fixtures"
SAMPLE = yaml.safe_load((ROOT / "adapters" / "chirpstack_v4" / "sample.yaml").read_text())
APP = "9a0c7b1e-3f7d-4d1e-8a52-61f0c2d4e5b6"


def config(port: int, **mqtt: Any) -> dict[str, Any]:
    """The sample config with the MQTT section pointed at a local broker."""
    cfg = copy.deepcopy(SAMPLE)
    cfg["mqtt"] = {"host": "127.0.0.1", "port": port, "client_id": mqtt.pop("client_id", "jonction-test"),
                   "topics": ["application/+/device/+/event/+"], "backoff": {"initial": 0.05, "max": 0.5}, **mqtt}
    return cfg


def uplink(n: int, eui: str = "24e124713b100001", dedup: str | None = None, gateway: str = "7276ff002e062a11") -> bytes:
    """A ChirpStack v4 uplink (EM310-UDL) with deduplicationId ``dedup`` or one derived from ``n``."""
    doc = json.loads((FIXTURES / "em310_up_decoded.json").read_text())
    doc["deduplicationId"] = dedup or f"00000000-0000-4000-8000-{n:012d}"
    doc["fCnt"] = n
    doc["deviceInfo"]["devEui"] = eui
    doc["rxInfo"] = [{"gatewayId": gateway, "uplinkId": n, "rssi": -90 - n % 20, "snr": 5.5}]
    doc["object"]["distance"] = 300 + n % 1000
    return json.dumps(doc).encode()


def topic(eui: str = "24e124713b100001", event: str = "up") -> str:
    return f"application/{APP}/device/{eui}/event/{event}"


class Collector:
    """An ``emit`` that records what it receives, optionally slowly or failing once."""

    def __init__(self, delay: float = 0.0, fail_on: Callable[[RawMessage], bool] | None = None) -> None:
        self.items: list[RawMessage] = []
        self.delay = delay
        self.fail_on = fail_on
        self.failures = 0

    async def __call__(self, raw: RawMessage) -> None:
        if self.fail_on is not None and self.fail_on(raw):
            self.fail_on = None
            self.failures += 1
            raise RuntimeError("outbox unavailable (simulated)")
        if self.delay:
            await asyncio.sleep(self.delay)
        self.items.append(raw)

    def keys(self) -> set[str]:
        return {r.idempotency_key for r in self.items}


async def until(condition: Callable[[], bool], within: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition`` until true; fail with ``what`` after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


async def publish(port: int, messages: list[tuple[str, bytes]], *, client_id: str = "publisher",
                  between: Callable[[int], Awaitable[None]] | None = None) -> None:
    """Publish at QoS 1, reconnecting and retrying on broker failure (at-least-once), for 60 s at most."""
    i = 0
    deadline = asyncio.get_running_loop().time() + 60
    while i < len(messages):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"could not publish to the broker on port {port} for 60 s")
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, timeout=5) as client:
                while i < len(messages):
                    t, payload = messages[i]
                    await client.publish(t, payload, qos=1)
                    i += 1
                    if between is not None:
                        await between(i)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)


async def started(adapter: ChirpstackV4Adapter, emit: Collector) -> asyncio.Task[None]:
    task = asyncio.create_task(adapter.run(emit))
    assert adapter.mqtt is not None
    await asyncio.wait_for(adapter.mqtt.connected.wait(), 15)
    return task


async def test_uplinks_are_emitted_with_the_server_idempotency_keys_and_device_tenant(broker: Broker) -> None:
    adapter = ChirpstackV4Adapter(config(broker.port))
    emit = Collector()
    task = await started(adapter, emit)
    try:
        join = (FIXTURES / "join.json").read_bytes()
        await publish(broker.port, [(topic(), uplink(1)), (topic(), uplink(2)), (topic(event="join"), join)])
        await until(lambda: len(emit.items) == 3, what="three messages")
    finally:
        await adapter.stop()
        await task
    keys = [r.idempotency_key for r in emit.items]
    assert keys == ["up:00000000-0000-4000-8000-000000000001", "up:00000000-0000-4000-8000-000000000002",
                    "join:38b703f4-e614-4f37-a849-d34455667788"]
    assert {r.tenant for r in emit.items} == {"ville-a"}, "the provisioned device's tenant routes the message"
    assert emit.items[2].metadata["event"] == "join"
    assert emit.items[0].metadata["topic"] == topic()
    entities = adapter.to_entities(emit.items[0])
    assert [e["type"] for e in entities] == ["WasteContainer", "Device"]
    assert entities[0]["fillingLevel"]["value"] == pytest.approx((1800 - 301) / (1800 - 250), abs=1e-3)


async def test_the_same_uplink_through_two_gateways_has_one_idempotency_key(broker: Broker) -> None:
    adapter = ChirpstackV4Adapter(config(broker.port))
    emit = Collector()
    task = await started(adapter, emit)
    dedup = "5f3c2a10-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
    try:
        await publish(broker.port, [(topic(), uplink(7, dedup=dedup, gateway="7276ff002e062a11")),
                                    (topic(), uplink(7, dedup=dedup, gateway="7276ff002e062a42"))])
        await until(lambda: len(emit.items) == 2, what="both copies")
    finally:
        await adapter.stop()
        await task
    assert emit.items[0].payload != emit.items[1].payload
    assert emit.items[0].idempotency_key == emit.items[1].idempotency_key == f"up:{dedup}"


async def test_nothing_is_lost_at_qos1_when_mosquitto_restarts_mid_stream(broker: Broker) -> None:
    total = 300
    adapter = ChirpstackV4Adapter(config(broker.port, client_id="jonction-restart"))
    emit = Collector(delay=0.002)  # slower than the publisher: messages queue in the broker
    task = await started(adapter, emit)
    expected = {f"up:00000000-0000-4000-8000-{n:012d}" for n in range(total)}
    restarted = asyncio.Event()

    async def maybe_restart(sent: int) -> None:
        if sent == total // 2 and not restarted.is_set():
            restarted.set()
            await asyncio.to_thread(broker.restart)

    try:
        await publish(broker.port, [(topic(), uplink(n)) for n in range(total)], between=maybe_restart)
        assert restarted.is_set()
        await until(lambda: emit.keys() >= expected, within=60, what="every uplink after the restart")
    finally:
        await adapter.stop()
        await task
    assert emit.keys() == expected
    # At-least-once: a message whose PUBACK was lost in the restart may come twice, with the same key.
    assert len(emit.items) >= total


async def test_a_message_whose_emit_failed_is_not_acknowledged_and_comes_back(broker: Broker,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    adapter = ChirpstackV4Adapter(config(broker.port, client_id="jonction-nack"))
    emit = Collector(fail_on=lambda raw: raw.idempotency_key.endswith("000000000002"))
    task = await started(adapter, emit)
    try:
        with caplog.at_level(logging.ERROR):
            await publish(broker.port, [(topic(), uplink(n)) for n in range(1, 4)])
            await until(lambda: len(emit.keys()) == 3, what="the failed message redelivered")
    finally:
        await adapter.stop()
        await task
    assert emit.failures == 1
    assert emit.keys() == {f"up:00000000-0000-4000-8000-{n:012d}" for n in range(1, 4)}
    assert "redelivers" in caplog.text


async def test_a_shared_subscription_splits_the_stream_between_instances(broker: Broker) -> None:
    first = ChirpstackV4Adapter(config(broker.port, client_id="jonction-a", shared_group="jonction"))
    second = ChirpstackV4Adapter(config(broker.port, client_id="jonction-b", shared_group="jonction"))
    emit_a, emit_b = Collector(), Collector()
    tasks = [await started(first, emit_a), await started(second, emit_b)]
    try:
        await publish(broker.port, [(topic(), uplink(n)) for n in range(40)])
        await until(lambda: len(emit_a.items) + len(emit_b.items) == 40, what="40 uplinks")
    finally:
        await first.stop()
        await second.stop()
        await asyncio.gather(*tasks)
    assert emit_a.items and emit_b.items, "both instances received part of the stream"
    assert not emit_a.keys() & emit_b.keys()
    assert len(emit_a.keys() | emit_b.keys()) == 40


async def test_tls_with_custom_ca_client_certificate_and_password_from_file(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "pki")
    tls_broker = Broker(tmp_path / "tls-broker", tls=certs, passwords={"jonction": "s3cret-pw"})
    tls_broker.start()
    try:
        secret = tmp_path / "mqtt-password"
        secret.write_text("s3cret-pw\n")
        tls = {"ca_file": certs["ca"], "cert_file": certs["client_cert"], "key_file": certs["client_key"]}
        adapter = ChirpstackV4Adapter(config(tls_broker.port, username="jonction", password_file=str(secret),
                                             tls=tls))
        await adapter.check()
        wrong = ChirpstackV4Adapter(config(tls_broker.port, username="jonction", password="nope", tls=tls,
                                           client_id="jonction-wrong"))
        with pytest.raises(AuthFailed):
            await wrong.check()
        emit = Collector()
        task = await started(adapter, emit)
        try:
            import ssl

            context = ssl.create_default_context(cafile=certs["ca"])
            context.load_cert_chain(certs["client_cert"], certs["client_key"])
            async with aiomqtt.Client("127.0.0.1", tls_broker.port, username="jonction", password="s3cret-pw",
                                      tls_context=context, identifier="tls-publisher") as client:
                await client.publish(topic(), uplink(11), qos=1)
            await until(lambda: len(emit.items) == 1, what="the uplink over TLS")
        finally:
            await adapter.stop()
            await task
        assert emit.items[0].idempotency_key == "up:00000000-0000-4000-8000-000000000011"
    finally:
        tls_broker.stop()


async def test_stop_is_idempotent_and_run_returns(broker: Broker) -> None:
    adapter = ChirpstackV4Adapter(config(broker.port))
    task = await started(adapter, Collector())
    await adapter.stop()
    await adapter.stop()
    await asyncio.wait_for(task, 10)
    assert task.done() and task.exception() is None


async def test_unavailable_is_logged_once_then_recovered(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    adapter = ChirpstackV4Adapter(config(broker.port, client_id="jonction-flap"))
    emit = Collector()
    with caplog.at_level(logging.INFO, logger="jonction.adapters.chirpstack_v4"):
        task = await started(adapter, emit)
        try:
            await asyncio.to_thread(broker.stop)
            assert adapter.mqtt is not None
            await until(lambda: not adapter.mqtt.connected.is_set(), what="the disconnection")  # type: ignore[union-attr]
            await asyncio.sleep(0.6)  # several reconnection attempts with backoff
            await asyncio.to_thread(broker.start)
            await asyncio.wait_for(adapter.mqtt.connected.wait(), 15)
        finally:
            await adapter.stop()
            await task
    messages = [r.getMessage() for r in caplog.records if r.name == "jonction.adapters.chirpstack_v4"]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1


async def test_a_burst_into_a_slow_pipeline_with_a_small_window_arrives_whole_and_in_order(broker: Broker) -> None:
    adapter = ChirpstackV4Adapter(config(broker.port, client_id="jonction-burst", receive_maximum=10))
    emit = Collector(delay=0.003)
    task = await started(adapter, emit)
    try:
        await publish(broker.port, [(topic(), uplink(n)) for n in range(200)])
        await until(lambda: len(emit.keys()) == 200, what="the whole burst")
    finally:
        await adapter.stop()
        await task
    keys = [r.idempotency_key for r in emit.items]
    assert keys == [f"up:00000000-0000-4000-8000-{n:012d}" for n in range(200)], "arrival order is kept"
    assert adapter.mqtt is not None and adapter.mqtt.in_flight() == 0
