"""Two ``jonction run`` processes on one MQTT ``$share`` feed, every uplink published twice.

Real parts: Mosquitto (shared subscription, QoS 1, manual acks), two gateway processes with the
chirpstack_v4 source in one ``shared_group``, one PostgreSQL holding both the embedded store
(``embedded_store.database``) and the shared idempotency keys (``dedup.database``). Each uplink
is published twice, as two LoRaWAN gateways hearing it would make it reach the feed; the broker
hands the copies to either instance. Every uplink must be stored once: one history instance per
reading, none missing.

The helpers here are also used by ``bench/bench_instances.py``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.runtime.outbox import STATUS_CACHE_S
from tests.adapters.lorawan.mosquitto import MOSQUITTO, Broker
from tests.conftest import ROOT, free_port
from tests.runtime.support import eventually

JONCTION = str(Path(sys.executable).with_name("jonction"))
TEMPLATE = json.loads((ROOT / "adapters/chirpstack_v4/fixtures/em310_up_decoded.json").read_text())
TOPIC = "application/5e1f9a3c/device/shared/event/up"
GROUP = "jonction"
FILLING = "https://smartdatamodels.org/dataModel.WasteManagement/fillingLevel"
OUTBOX_GAUGE_AGE_S = STATUS_CACHE_S + 0.5


def devices(count: int) -> list[dict[str, Any]]:
    """Provisioned EM310 waste-level sensors."""
    return [{"dev_eui": f"24e124713b{n:06x}", "profile": "milesight-em310-udl",
             "entity_id": f"urn:ngsi-ld:WasteContainer:shared-{n}", "location": {"lon": 3.88, "lat": 43.61},
             "params": {"container_height_mm": 1800, "full_distance_mm": 250}} for n in range(count)]


def uplink(n: int, device_count: int) -> str:
    """The n-th uplink (one line of JSON): its own deduplicationId and time, device ``n % device_count``."""
    doc = copy.deepcopy(TEMPLATE)
    doc["deduplicationId"] = f"00000000-0000-4000-8000-{n:012d}"
    doc["deviceInfo"]["devEui"] = f"24e124713b{n % device_count:06x}"
    doc["fCnt"] = n
    doc["time"] = f"2026-03-04T{7 + n // 360000:02d}:{(n // 6000) % 60:02d}:{(n // 100) % 60:02d}.{n % 100:02d}0Z"
    doc["object"]["distance"] = 250 + n % 1500
    return json.dumps(doc, separators=(",", ":"))


def gateway_config(folder: Path, name: str, *, mqtt_port: int, database: str, http_port: int,
                   device_count: int, shared_dedup: bool = True, push_port: int | None = None) -> Path:
    """One instance's config file: its own port, data folder and MQTT client id; the rest shared.

    With ``push_port`` the source is ChirpStack's HTTP integration on that port instead of MQTT.
    """
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": http_port},
        "data_dir": str(folder / name),
        "log_level": "WARNING",
        "embedded_store": {"database": database},
        "publisher": {"linger": 0.02},
        "shutdown": {"drain_timeout": 20},
        "sources": [{"name": "chirpstack", "adapter": "chirpstack_v4", "tenant": "", "config": {
            "transport": "mqtt",
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": f"jonction-{name}",
                     "shared_group": GROUP, "topics": ["application/+/device/+/event/+"], "receive_maximum": 200},
            "devices": devices(device_count)}}],
    }
    if shared_dedup:
        doc["dedup"] = {"database": database}
    if push_port is not None:
        source = doc["sources"][0]["config"]
        del source["mqtt"]
        source["transport"] = "http"
        source["http"] = {"listen": {"host": "127.0.0.1", "port": push_port, "path": "/lorawan"}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """``jonction run --config`` as a child process, its stderr in ``log``."""
    with log.open("ab") as sink:
        return subprocess.Popen([JONCTION, "run", "--config", str(config)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=sink)


def broker(folder: Path) -> Broker:
    """A Mosquitto that logs subscriptions (to know when both members of the group listen)."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed (Debian package 'mosquitto'; .ci/run installs it)")
    b = Broker(folder, extra="log_type subscribe\nmax_inflight_messages 200")
    b.start()
    return b


async def subscribed(b: Broker, client_ids: list[str]) -> None:
    """Until every client has subscribed to the shared group (read from Mosquitto's log)."""
    def done() -> bool:
        text = b.log.read_text() if b.log.exists() else ""
        return all(re.search(rf"\b{re.escape(c)} \d \$share/{GROUP}/", text) for c in client_ids)
    await eventually(done, within=60, what=f"{client_ids} subscribed")


async def ready(port: int) -> None:
    """Until the gateway answers ready."""
    async def check() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False
    await eventually(check, within=60, what=f"gateway on {port} ready")


async def scrape(port: int) -> dict[str, float]:
    """The gateway's metrics (Prometheus text), summed per metric name."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    figures: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            figures[name.split("{", 1)[0]] = figures.get(name.split("{", 1)[0], 0.0) + float(value)
    return figures


async def settled(ports: list[int], copies: int) -> list[dict[str, float]]:
    """Until the instances have accepted or dropped ``copies`` messages and emptied their outboxes.

    The outbox gauges come from a status query made at most once a second, while the workers'
    counters are reported every few milliseconds: an empty outbox counts only when scraped more
    than that second after the last message was handled.
    """
    seen: list[dict[str, float]] = []
    handled_at: list[float] = []

    async def check() -> bool:
        seen[:] = [await scrape(p) for p in ports]
        handled = sum(m.get("jonction_messages_received_total", 0) + m.get("jonction_messages_duplicate_total", 0)
                      for m in seen)
        if handled < copies:
            return False
        if not handled_at:
            handled_at.append(time.monotonic())
        return (time.monotonic() - handled_at[0] > OUTBOX_GAUGE_AGE_S
                and all(m.get("jonction_outbox_entities", 0) == 0 for m in seen))

    await eventually(check, within=300, what=f"{copies} messages handled and stored")
    return seen


async def publish(port: int, lines: list[str]) -> None:
    """Publish lines at QoS 1 with ``mosquitto_pub -l`` (one process, in order)."""
    proc = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", TOPIC, "-l",
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await proc.communicate(("\n".join(lines) + "\n").encode())
    assert proc.returncode == 0, err.decode()


async def history_rows(database: str) -> tuple[int, int]:
    """(fillingLevel history instances, distinct (entity, observedAt) among them) in the store."""
    import asyncpg

    conn = await asyncpg.connect(database)
    try:
        row = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (entity_id, observed_at)) FROM history WHERE attr = $1", FILLING)
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


def stop(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM every process, wait, return the exit codes."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=60))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


@pytest.mark.slow
async def test_two_instances_on_one_shared_feed_store_each_uplink_once(tmp_path: Path, postgres_url: str) -> None:
    pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")
    uplinks, device_count = 400, 40
    mqtt = broker(tmp_path / "broker")
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, port in zip(("a", "b"), ports, strict=True):
            config = gateway_config(tmp_path, name, mqtt_port=mqtt.port, database=postgres_url, http_port=port,
                                    device_count=device_count)
            procs.append(start(config, tmp_path / f"{name}.log"))
        for port in ports:
            await ready(port)
        await subscribed(mqtt, ["jonction-a", "jonction-b"])
        # Every uplink twice in a row (two LoRaWAN gateways heard it): the shared subscription hands
        # consecutive messages to different members, so most pairs are split between the instances.
        lines = [line for n in range(uplinks) for line in (uplink(n, device_count),) * 2]
        # and a late copy of the first 20, as a network server's retry would be
        lines += [uplink(n, device_count) for n in range(20)]
        await publish(mqtt.port, lines)
        figures = await settled(ports, len(lines))
        rows, distinct = await history_rows(postgres_url)
    finally:
        codes = stop(procs)
        mqtt.stop()
    received = [m.get("jonction_messages_received_total", 0) for m in figures]
    duplicates = [m.get("jonction_messages_duplicate_total", 0) for m in figures]
    assert distinct == uplinks  # no reading lost ...
    assert rows == uplinks  # ... and none stored twice
    assert sum(received) == uplinks and sum(duplicates) == len(lines) - uplinks
    # Both instances took part. Which copy of a split pair wins is a race: on a loaded machine one
    # instance can win every race, so it stores everything and the other only drops copies; what
    # each instance was handed by the broker is the figure that must not be zero.
    handled = [r + d for r, d in zip(received, duplicates, strict=True)]
    assert all(n > 0 for n in handled), (received, duplicates)
    assert codes == [0, 0], [(tmp_path / f"{n}.log").read_text()[-2000:] for n in "ab"]


@pytest.mark.slow
async def test_an_instance_killed_mid_stream_loses_nothing(tmp_path: Path, postgres_url: str) -> None:
    """SIGKILL one instance while both are busy, start it again: every uplink stored, at most one group twice.

    What it had claimed but not committed is released by PostgreSQL when its connection drops,
    and its unacknowledged messages are delivered again; what it had committed is in its outbox
    and published after the restart. Only a group caught between its local commit and its claim's
    commit may be written by the other instance too (a duplicate, bounded by what is in flight).
    """
    pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")
    uplinks, device_count, in_flight = 1500, 100, 200
    mqtt = broker(tmp_path / "broker")
    ports = [free_port(), free_port()]
    configs = [gateway_config(tmp_path, name, mqtt_port=mqtt.port, database=postgres_url, http_port=port,
                              device_count=device_count)
               for name, port in zip(("a", "b"), ports, strict=True)]
    procs = [start(c, tmp_path / f"{c.stem}.log") for c in configs]
    try:
        for port in ports:
            await ready(port)
        await subscribed(mqtt, ["jonction-a", "jonction-b"])
        lines = [line for n in range(uplinks) for line in (uplink(n, device_count),) * 2]
        sender = asyncio.create_task(publish(mqtt.port, lines))
        await eventually(lambda: _stored_at_least(postgres_url, uplinks // 5), within=120, what="a fifth stored")
        procs[0].send_signal(signal.SIGKILL)  # mid-stream, nothing drained
        procs[0].wait(timeout=30)
        await sender
        procs[0] = start(configs[0], tmp_path / "a.log")
        await ready(ports[0])

        async def all_stored() -> bool:
            _, distinct = await history_rows(postgres_url)
            waiting = [(await scrape(p)).get("jonction_outbox_entities", 0) for p in ports]
            return distinct == uplinks and waiting == [0, 0]

        await eventually(all_stored, within=300, what="every uplink stored")
        rows, distinct = await history_rows(postgres_url)
    finally:
        codes = stop(procs)
        mqtt.stop()
    assert distinct == uplinks  # nothing lost
    assert rows - distinct <= in_flight, rows - distinct  # duplicates only from the group caught at the kill
    assert codes == [0, 0]


async def _stored_at_least(database: str, count: int) -> bool:
    _, distinct = await history_rows(database)
    return distinct >= count


@pytest.mark.slow
async def test_two_instances_behind_a_load_balancer_store_each_uplink_once(tmp_path: Path,
                                                                          postgres_url: str) -> None:
    """ChirpStack's HTTP integration through a load balancer that sends a retry to the other instance."""
    pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")
    uplinks, device_count = 200, 20
    ports, pushes = [free_port(), free_port()], [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, port, push in zip(("a", "b"), ports, pushes, strict=True):
            config = gateway_config(tmp_path, name, mqtt_port=1, database=postgres_url, http_port=port,
                                    device_count=device_count, push_port=push)
            procs.append(start(config, tmp_path / f"{name}.log"))
        for port in ports:
            await ready(port)
        statuses: list[int] = []
        async with aiohttp.ClientSession() as http:
            async def post(push: int, body: str) -> None:
                url = f"http://127.0.0.1:{push}/lorawan?event=up"
                for _ in range(50):  # the listener may still be binding: connection refused is retried
                    try:
                        async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                            statuses.append(resp.status)
                            return
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                raise AssertionError(f"no answer from port {push}")

            # Every uplink reaches both instances at the same time (a retry after a timeout that the
            # balancer routed to the other one), half of them to A first.
            for n in range(0, uplinks, 20):
                bodies = [uplink(i, device_count) for i in range(n, n + 20)]
                order = pushes if n % 40 == 0 else pushes[::-1]
                await asyncio.gather(*(post(p, b) for b in bodies for p in order))
        figures = await settled(ports, 2 * uplinks)
        rows, distinct = await history_rows(postgres_url)
    finally:
        codes = stop(procs)
    assert statuses and set(statuses) <= {200, 202, 204}, sorted(set(statuses))  # every copy acknowledged
    assert len(statuses) == 2 * uplinks
    assert (rows, distinct) == (uplinks, uplinks)  # each uplink stored once
    received = [m.get("jonction_messages_received_total", 0) for m in figures]
    assert sum(received) == uplinks and all(n > 0 for n in received), received
    assert codes == [0, 0]
