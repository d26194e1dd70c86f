"""`jonction run --workers N` as real processes: ingestion spread over workers, the parent publishing.

Every test starts the gateway with ``--workers 2`` in a subprocess, talks to it over loopback (an
NGSI v2 notification listener shared with SO_REUSEPORT, or a real Mosquitto with a shared
subscription) and reads what the embedded store holds through its API.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import aiomqtt
import pytest
import yaml

from gateway.contract import discover
from gateway.runtime.config import SourceConfig
from gateway.runtime.workers import sharing, worker_source
from tests.adapters.lorawan.mosquitto import MOSQUITTO, Broker
from tests.conftest import ROOT, free_port
from tests.runtime.support import eventually

JONCTION = str(Path(sys.executable).with_name("jonction"))
LINK = {"Link": '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; '
                'type="application/ld+json"'}
WINDOW = {"timerel": "between", "timeAt": "2026-01-01T00:00:00Z", "endTimeAt": "2027-01-01T00:00:00Z",
          "lastN": "1000"}

pytestmark = pytest.mark.slow


def notification(i: int) -> dict[str, Any]:
    """One NGSI v2 notification carrying WasteContainer ``wc-<i>``."""
    return {"subscriptionId": "sub-workers", "data": [{
        "id": f"urn:ngsi-ld:WasteContainer:wc-{i}", "type": "WasteContainer",
        "fillingLevel": {"type": "Number", "value": (i % 100) / 100,
                         "metadata": {"TimeInstant": {"type": "DateTime", "value": "2026-01-01T10:00:00Z"}}},
        "location": {"type": "geo:json", "value": {"type": "Point", "coordinates": [3.87, 43.6]}}}]}


class Gateway:
    """A ``jonction run --config … --workers N`` subprocess and what the test needs to reach it."""

    def __init__(self, tmp: Path, sources: list[dict[str, Any]], *, workers: int = 2) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.workers = workers
        doc = {"server": {"host": "127.0.0.1", "port": self.port}, "data_dir": str(tmp / "data"),
               "publisher": {"linger": 0.01}, "shutdown": {"drain_timeout": 20}, "sources": sources}
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = tmp / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        with self.log.open("ab") as sink:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [JONCTION, "run", "--config", str(self.config), "--workers", str(self.workers)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink)

    async def start(self) -> None:
        self.spawn()

        async def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                async with aiohttp.ClientSession() as http, http.get(f"{self.base}/readyz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, within=90, what="gateway ready")

    async def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 60)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def get(self, path: str, **kwargs: Any) -> Any:
        async with aiohttp.ClientSession() as http, http.get(f"{self.base}{path}", **kwargs) as resp:
            assert resp.status == 200, await resp.text()
            if resp.content_type == "text/plain":
                return await resp.text()
            return await resp.json()

    async def counter(self, name: str, **labels: str) -> dict[str, float]:
        """``worker`` label → value of a counter series whose other labels match."""
        out: dict[str, float] = {}
        for line in (await self.get("/metrics")).splitlines():
            if not line.startswith(name + "{"):
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                out[found.get("worker", "parent")] = float(line.rsplit(" ", 1)[1])
        return out

    async def count(self, entity_type: str, tenant: str = "") -> int:
        headers = {**LINK, **({"NGSILD-Tenant": tenant} if tenant else {})}
        async with aiohttp.ClientSession() as http, http.get(
                f"{self.base}/ngsi-ld/v1/entities", params={"type": entity_type, "count": "true", "limit": "0"},
                headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            return int(resp.headers["NGSILD-Results-Count"])

    def archived(self) -> int:
        """Raw messages the gateway's database holds, read as another process would."""
        with sqlite3.connect(f"file:{self.tmp / 'data' / 'gateway.sqlite'}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM archive").fetchone()[0])


@asynccontextmanager
async def gateway(tmp: Path, sources: list[dict[str, Any]], *, workers: int = 2) -> AsyncIterator[Gateway]:
    gw = Gateway(tmp, sources, workers=workers)
    try:
        await gw.start()
        yield gw
    finally:
        gw.kill()


def ngsi_source(port: int) -> dict[str, Any]:
    return {"name": "orion", "adapter": "ngsi_v2",
            "config": {"listen": {"host": "127.0.0.1", "port": port, "path": "/v2/notify"}}}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def post_each(port: int, indexes: range, *, after_ack: Any = None) -> list[int]:
    """Post one notification per index, each on a new connection (so that the kernel spreads them)."""
    acked: list[int] = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        for i in indexes:
            async with http.post(f"http://127.0.0.1:{port}/v2/notify", json=notification(i)) as resp:
                assert resp.status == 200, await resp.text()
            acked.append(i)
            if after_ack is not None:
                after_ack(len(acked))
    return acked


# ---------------------------------------------------------------------------- HTTP push


async def test_webhook_two_workers_store_every_message_once(tmp_path: Path) -> None:
    notify_port = free_port()
    async with gateway(tmp_path, [ngsi_source(notify_port)]) as gw:
        workers = (await gw.get("/admin/workers"))["workers"]
        assert [w["index"] for w in workers] == [0, 1] and all(w["running"] for w in workers)
        assert len({w["pid"] for w in workers} | {gw.proc.pid if gw.proc else 0}) == 3, "three processes"
        await eventually(lambda: _port_open(notify_port), what="shared listener")

        # 2xx only after the durable write: once answered, the message is in the shared database file.
        def committed(acked: int) -> None:
            assert gw.archived() >= acked, "a message was acknowledged before it was committed"

        acked = await post_each(notify_port, range(60), after_ack=committed)
        # The rest concurrently, several connections at once.
        batches = await asyncio.gather(*(post_each(notify_port, range(60 + k * 35, 60 + (k + 1) * 35))
                                         for k in range(4)))
        acked += [i for b in batches for i in b]
        assert len(acked) == 200
        # Redeliveries (the same notifications again) are acknowledged and dropped as duplicates.
        await post_each(notify_port, range(20))

        async def all_stored() -> bool:
            return await gw.count("WasteContainer") == 200
        await eventually(all_stored, within=60, what="200 entities in the embedded store")

        async def all_received() -> Any:
            found = await gw.counter("jonction_messages_received_total", source="orion")
            return found if sum(found.values()) == 200 else None
        received = await eventually(all_received, what="200 messages counted")
        duplicates = await eventually(lambda: _summed(gw, "jonction_messages_duplicate_total", 20),
                                      what="duplicates counted")
        assert set(received) == {"0", "1"}, f"both workers took traffic: {received}"
        assert all(v > 0 for v in received.values()) and sum(received.values()) == 200
        assert duplicates == 20
        assert gw.archived() == 200
        published = await gw.counter("jonction_entities_published_total", sink="embedded")
        assert published == {"parent": 200.0}, "the parent publishes each entity once"

        async def reported() -> Any:
            sources = (await gw.get("/admin/sources"))["sources"]
            return sources if sources[0]["messages"] == 220 else None
        sources = await eventually(reported, what="both workers' source counts in /admin/sources")
        assert sources[0]["name"] == "orion" and sources[0]["state"] == "running"
        assert await gw.stop() == 0


async def _summed(gw: Gateway, name: str, want: float) -> float | None:
    total = sum((await gw.counter(name)).values())
    return total if total >= want else None


async def test_dead_letters_from_workers_replay_in_the_parent(tmp_path: Path) -> None:
    notify_port = free_port()
    async with gateway(tmp_path, [ngsi_source(notify_port)]) as gw:
        await eventually(lambda: _port_open(notify_port), what="shared listener")
        bad = notification(7)
        del bad["data"][0]["location"]  # a WasteContainer needs a location: a validation dead letter
        bad["data"][0]["fillingLevel"]["value"] = 5  # and a level over 1
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{notify_port}/v2/notify", json=bad) as resp:
                assert resp.status == 200  # accepted: kept as a dead letter, not refused
        letters = await gw.get("/admin/deadletters")
        items = letters["deadLetters"]
        assert len(items) == 1 and items[0]["stage"] == "validation"

        async def counted() -> Any:
            found = await gw.counter("jonction_dead_letters_total", source="orion")
            return found if sum(found.values()) >= 1 else None
        stages = await eventually(counted, what="the worker's dead letter counted in the parent's /metrics")
        assert sum(stages.values()) == 1 and "parent" not in stages
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{gw.base}/admin/deadletters/{items[0]['id']}/replay") as resp:
                # The parent translates it again with its own binding of the source: still invalid.
                assert resp.status == 422
                assert (await resp.json())["status"] == "still-failing"
            # Restarting a shared source restarts it in every worker (a fresh adapter instance each).
            async with http.post(f"{gw.base}/admin/sources/orion/restart") as resp:
                assert resp.status == 200
        await eventually(lambda: gw.log.read_text().count('restarted on request", "source": "orion", "worker"') == 2,
                         what="the source restarted in both workers")
        await eventually(lambda: _port_open(notify_port), what="shared listener again")
        assert await post_each(notify_port, range(1)) == [0]
        assert await gw.stop() == 0


async def test_killed_worker_is_restarted_and_acknowledged_messages_are_kept(tmp_path: Path) -> None:
    notify_port = free_port()
    async with gateway(tmp_path, [ngsi_source(notify_port)]) as gw:
        await eventually(lambda: _port_open(notify_port), what="shared listener")
        acked = await post_each(notify_port, range(40))
        victim = (await gw.get("/admin/workers"))["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)

        async def restarted() -> Any:
            w = (await gw.get("/admin/workers"))["workers"][0]
            return w if w["pid"] != victim["pid"] and w["ready"] and w["restarts"] == 1 else None
        await eventually(restarted, within=60, what="worker 0 restarted")
        restarts = await gw.get("/metrics")
        assert 'jonction_worker_restarts{worker="0"} 1' in restarts
        assert 'jonction_worker_up{worker="0"} 1' in restarts
        assert "exited with code -9" in gw.log.read_text()
        # The port is served again by both; traffic reaches the new worker too.
        acked += await post_each(notify_port, range(40, 120))

        async def all_stored() -> bool:
            return await gw.count("WasteContainer") == 120
        await eventually(all_stored, within=60, what="120 entities in the embedded store")

        async def new_worker_0_took_some() -> bool:
            # The new process reports its own counts (every half second), from zero.
            w = (await gw.get("/admin/workers"))["workers"][0]
            return w["pid"] != victim["pid"] and w["sources"].get("orion", {}).get("messages", 0) > 0
        await eventually(new_worker_0_took_some, what="the restarted worker receives traffic")
        assert await gw.stop() == 0


async def test_sigterm_stops_workers_then_drains_nothing_acknowledged_lost(tmp_path: Path) -> None:
    notify_port = free_port()
    sources = [ngsi_source(notify_port)]
    async with gateway(tmp_path, sources) as gw:
        await eventually(lambda: _port_open(notify_port), what="shared listener")
        acked = await asyncio.gather(*(post_each(notify_port, range(k * 50, (k + 1) * 50)) for k in range(3)))
        assert sum(len(a) for a in acked) == 150
        pids = [w["pid"] for w in (await gw.get("/admin/workers"))["workers"]]
        assert await gw.stop() == 0
        for pid in pids:
            assert not _alive(pid), "a worker outlived its parent"
        lines = [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith("{")]
        assert sum(1 for line in lines if line["msg"].startswith("worker ") and "stopped" in line["msg"]) == 2
        assert any("drained" in line["msg"] for line in lines)
    # Everything acknowledged is in the store (read back by a one-process gateway on the same data).
    async with gateway(tmp_path, sources, workers=1) as again:
        assert await again.count("WasteContainer") == 150
        assert (await again.get("/admin/workers"))["workers"] == []
        assert await again.stop() == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting for its parent to read it is gone too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# ---------------------------------------------------------------------------- MQTT


SAMPLE = yaml.safe_load((ROOT / "adapters/chirpstack_v4/sample.yaml").read_text())
FIXTURE = json.loads((ROOT / "adapters/chirpstack_v4/fixtures/em310_up_decoded.json").read_text())
EUI = "24e124713b100001"
CONTAINER = "urn:ngsi-ld:WasteContainer:ville-a:verre-mairie"
TOPIC = f"application/9a0c7b1e/device/{EUI}/event/up"


def uplink(n: int) -> bytes:
    doc = copy.deepcopy(FIXTURE)
    doc.update(deduplicationId=f"00000000-0000-4000-8000-{n:012d}", time=f"2026-03-04T07:{n // 60:02d}:{n % 60:02d}Z")
    doc["object"]["distance"] = 300 + n
    return json.dumps(doc).encode()


def _mosquitto(folder: Path) -> Broker:
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is not installed (Debian package 'mosquitto'; .ci/run installs it)")
    return Broker(folder)


async def test_mqtt_shared_group_two_workers_store_every_uplink_once(tmp_path: Path) -> None:
    broker = _mosquitto(tmp_path / "broker")
    broker.start()
    try:
        cfg = copy.deepcopy(SAMPLE)
        cfg.pop("http")
        # No shared_group here: with --workers the gateway puts its workers in one ($share/jonction-<source>).
        cfg["mqtt"] = {"host": "127.0.0.1", "port": broker.port, "client_id": "jonction-workers",
                       "topics": ["application/+/device/+/event/+"], "backoff": {"initial": 0.05, "max": 0.5}}
        source = {"name": "chirpstack", "adapter": "chirpstack_v4", "tenant": "", "config": cfg}
        async with gateway(tmp_path / "gw", [source]) as gw:
            async def subscribed() -> bool:
                workers = (await gw.get("/admin/workers"))["workers"]
                return all(w["sources"].get("chirpstack", {}).get("state") == "running" for w in workers)
            await eventually(subscribed, within=60, what="both workers subscribed")
            count = 80
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="workers-publisher") as client:
                for n in range(count):
                    await client.publish(TOPIC, uplink(n), qos=1)
                for n in range(10):  # the same uplinks heard again: duplicates
                    await client.publish(TOPIC, uplink(n), qos=1)

            newest = json.loads(uplink(count - 1))["time"]

            async def current() -> Any:
                async with aiohttp.ClientSession() as http, http.get(
                        f"{gw.base}/ngsi-ld/v1/entities/{CONTAINER}",
                        headers={**LINK, "NGSILD-Tenant": "ville-a"}) as resp:
                    body = await resp.json() if resp.status == 200 else {}
                level = body.get("fillingLevel") or {}
                return body if level.get("observedAt") == newest else None
            await eventually(current, within=90, what="the newest uplink as the current state")
            async with aiohttp.ClientSession() as http, http.get(
                    f"{gw.base}/ngsi-ld/v1/temporal/entities/{CONTAINER}", params=WINDOW,
                    headers={**LINK, "NGSILD-Tenant": "ville-a"}) as resp:
                body = await resp.json()
            observed = [i["observedAt"] for i in body["fillingLevel"]]
            # No reading twice. (Readings of one device that two workers commit out of order are not
            # all in the history: the older one is dropped by the observedAt guard; see the report.)
            assert len(observed) == len(set(observed)) and newest in observed and len(observed) <= count
            async def all_received() -> Any:
                found = await gw.counter("jonction_messages_received_total", source="chirpstack")
                return found if sum(found.values()) == count else None
            received = await eventually(all_received, what=f"{count} uplinks counted")
            assert set(received) == {"0", "1"} and all(v > 0 for v in received.values()), received
            assert sum(received.values()) == count
            duplicates = await eventually(lambda: _summed(gw, "jonction_messages_duplicate_total", 10),
                                          what="duplicates counted")
            assert duplicates == 10
            assert gw.archived() == count
            assert await gw.stop() == 0
        # Each worker had its own client id, in one shared group.
        log = broker.log.read_text() if broker.log.exists() else ""
        assert "jonction-workers-w0" in log and "jonction-workers-w1" in log
    finally:
        broker.stop()


# ---------------------------------------------------------------------------- the plan


def test_which_sources_the_workers_share() -> None:
    adapters = discover()

    def kind(adapter: str, config: dict[str, Any]) -> str | None:
        return sharing(SourceConfig("s", adapter, config), adapters[adapter])

    assert kind("ngsi_v2", {"listen": {"port": 8668}}) == "http"
    assert kind("ngsi_v2", {}) == "http"  # the adapter's default port: fixed, shareable
    assert kind("ngsi_v2", {"listen": {"port": 0}}) is None  # each process would pick its own port
    assert kind("chirpstack_v4", {"transport": "mqtt", "mqtt": {"host": "b"}}) == "mqtt"
    assert kind("chirpstack_v4", {"transport": "http", "mqtt": {"host": "b"}, "http": {}}) == "http"
    assert kind("rest_mapping", {"url": "http://x"}) is None  # a poller stays in the parent
    assert kind("open311", {"listen": {"port": 8311}}) is None  # it polls too
    src = SourceConfig("lns", "chirpstack_v4", {"mqtt": {"host": "b", "client_id": "gw-1"}})
    one = worker_source(src, 1).config["mqtt"]
    assert one["client_id"] == "gw-1-w1" and one["shared_group"] == "jonction-lns"
    grouped = SourceConfig("lns", "chirpstack_v4", {"mqtt": {"host": "b", "shared_group": "g"}})
    # A configured group: worker 0 keeps the configured (here default) id and its broker session.
    assert worker_source(grouped, 0).config["mqtt"] == {"host": "b", "shared_group": "g", "client_id": "jonction-lns"}
    assert worker_source(grouped, 1).config["mqtt"]["client_id"] == "jonction-lns-w1"
    assert worker_source(src, 0).config["mqtt"]["client_id"] == "gw-1-w0", "no group: a new session for each"
    assert src.config["mqtt"] == {"host": "b", "client_id": "gw-1"}, "the configured source is left as it was"


def test_workers_option_is_a_count_or_auto() -> None:
    """auto is the number of cores, a count is taken as it is, and nonsense is refused by name."""
    import argparse

    from gateway.commands.run import _workers
    from gateway.runtime.workers import default_workers

    assert _workers("auto") == default_workers() >= 1
    assert _workers("3") == 3
    for bad in ("0", "-1", "two", "65"):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad)):
            _workers(bad)


def test_workers_from_the_config_default_auto(tmp_path: Path) -> None:
    """``server.workers``: a count, or auto (the default, None: the number of cores); else refused by pointer."""
    from gateway.errors import ConfigInvalid
    from gateway.runtime.config import load

    def config(server: dict[str, Any]) -> Path:
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump({"server": server, "data_dir": str(tmp_path / "data")}), encoding="utf-8")
        return path

    assert load(config({})).workers is None
    assert load(config({"workers": "auto"})).workers is None
    assert load(config({"workers": 3})).workers == 3
    for bad in (0, "two", 65):
        with pytest.raises(ConfigInvalid) as caught:
            load(config({"workers": bad}))
        assert any("/server/workers" in problem for problem in caught.value.problems), caught.value.problems


def test_a_worker_settles_the_collector_after_start_up() -> None:
    """A worker raises the young threshold and freezes what start-up allocated (run in a fresh interpreter)."""
    probe = (
        "import gc; from gateway.runtime.workers import settle_gc; "
        "before = (gc.get_threshold()[0], gc.get_freeze_count()); settle_gc(); "
        "print(before[0], before[1], gc.get_threshold()[0], gc.get_freeze_count())"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    threshold_before, frozen_before, threshold_after, frozen_after = map(int, out.stdout.split())
    assert threshold_before == 700 and frozen_before == 0
    assert threshold_after >= 10_000
    assert frozen_after > 10_000, "start-up objects (modules, schemas) are left for the collector to scan"


async def test_a_worker_stops_when_its_parent_dies_with_reports_unread() -> None:
    """A parent killed with unread reports resets the control link (ECONNRESET): the worker stops all the same."""
    from gateway.runtime.workers import _hear

    parent_end, child_end = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=child_end)
    writer.write(b'{"t":"c","o":1}\n' * 100)  # commit reports the parent never reads
    await writer.drain()
    parent_end.close()
    stop = asyncio.Event()
    await asyncio.wait_for(_hear(cast(Any, None), cast(Any, None), reader, stop, 0), timeout=5)
    assert stop.is_set()
    writer.close()
