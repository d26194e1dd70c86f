"""The iot_agent adapter under the IoT Agent side-by-side load: JSON measures over HTTP, 50 in flight.

Runs ``jonction run`` in a subprocess (pinned to CPU 0 when there are two cores) with one
``iot_agent`` source, provisions a service group through the provisioning API as an IoT Agent
script would, then posts ``POST /iot/json?k=<apikey>&i=<device>`` measures from this process
(pinned to the other core) and prints, for each sink:

- messages per second acknowledged (a 200 is sent only once the measure is durably accepted)
  and committed at the sink, wall clock;
- the gateway's CPU µs per measure (user + system, every thread, from /proc);
- p50 / p99 of the HTTP round trip (device → 200) and of receipt → sink commit (the gateway's
  ``jonction_end_to_end_seconds`` histogram);
- the gateway's peak RSS (VmHWM);
- lost and duplicated measures: every measure carries a sequence number in ``no2``; the sink's
  final value of each device must be the device's last sequence, and the count of entities
  published must equal the count of measures acknowledged.

Sinks: the embedded store, then a fake NGSI-LD broker on loopback (in this process), which with
``--outage S`` answers 503 for S seconds in the middle of the stream (zero loss expected).
Then MQTT (a Mosquitto started for the run): ``--messages`` QoS 1 measures published as fast as
the broker acknowledges them (a burst: the gateway takes at most ``receive_maximum`` at once)
into the embedded store, and a paced stream for the receipt → commit latency.

    .venv/bin/python bench/bench_iot_agent.py [--messages 20000] [--devices 1000] [--concurrency 50]
        [--outage 10] [--skip-embedded] [--skip-broker] [--skip-mqtt] [--mqtt-rate 200 --mqtt-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import BIN, LINK, PIN, ROOT, free_port, histogram_quantiles

APIKEY = "bench-apikey-0001"
SERVICE = "openiot"
GROUP = {
    "apikey": APIKEY, "resource": "/iot/json", "entity_type": "AirQualityObserved",
    "attributes": [
        {"object_id": "t", "name": "temperature", "type": "Number",
         "metadata": {"unitCode": {"type": "Text", "value": "CEL"}}},
        {"object_id": "no2", "name": "no2", "type": "Number"},
    ],
    "static_attributes": [{"name": "location", "type": "geo:json",
                           "value": {"type": "Point", "coordinates": [4.8357, 45.764]}}],
}
HEADERS = {"fiware-service": SERVICE, "fiware-servicepath": "/", "Content-Type": "application/json"}


class FakeBroker:
    """An NGSI-LD broker on loopback: batch upserts counted per entity, last ``no2`` kept per id."""

    def __init__(self) -> None:
        self.port = free_port()
        self.entities = 0
        self.last: dict[str, float] = {}
        self.down_until = 0.0
        self.refused = 0
        self._runner: web.AppRunner | None = None

    async def _upsert(self, request: web.Request) -> web.Response:
        if time.monotonic() < self.down_until:
            self.refused += 1
            return web.json_response({"title": "unavailable"}, status=503)
        body = await request.json()
        for item in body:
            self.entities += 1
            value = item.get("no2", {}).get("value")
            if isinstance(value, int | float):
                self.last[item["id"]] = value
        return web.Response(status=204)

    async def _types(self, request: web.Request) -> web.Response:  # aiohttp handler signature
        return web.json_response([])

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", self._upsert)
        app.router.add_get("/ngsi-ld/v1/types", self._types)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Gateway:
    """A ``jonction run`` subprocess with one iot_agent source."""

    def __init__(self, tmp: Path, *, broker: FakeBroker | None, mqtt_port: int | None = None) -> None:
        self.port, self.north, self.south = free_port(), free_port(), free_port()
        sinks = [{"name": "fake", "url": f"http://127.0.0.1:{broker.port}"}] if broker else []
        doc = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "data_dir": str(tmp / "gateway"),
            "log_level": "WARNING",
            "archive": {"max_bytes": "256MB"},
            "publisher": {"linger": 0.01, "batch_size": 500, "breaker_cooldown": 1, "backoff_max": 1},
            "sinks": sinks,
            "embedded_store": {"enabled": broker is None},
            "sources": [{"name": "iota", "adapter": "iot_agent", "config": {
                "north": {"host": "127.0.0.1", "port": self.north},
                "http": {"host": "127.0.0.1", "port": self.south},
                **({"mqtt": {"host": "127.0.0.1", "port": mqtt_port, "client_id": "jonction-bench",
                             "receive_maximum": 500}} if mqtt_port else {})}}],
        }
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = tmp / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sink = "fake" if broker else "embedded"

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen([str(BIN / "jonction"), "run", "--config", str(self.config)],
                                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink)
        if PIN:
            os.sched_setaffinity(self.proc.pid, {0})

    async def ready(self, http: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                async with http.get(f"http://127.0.0.1:{self.north}/iot/about") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"gateway did not start; see {self.log}")

    async def metrics(self, http: aiohttp.ClientSession) -> str:
        async with http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            return await resp.text()

    async def published(self, http: aiohttp.ClientSession) -> int:
        import re

        text = await self.metrics(http)
        match = re.search(rf'jonction_entities_published_total{{sink="{self.sink}"}} (\S+)', text)
        return int(float(match.group(1))) if match else 0

    def _proc_file(self, name: str) -> str:
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/{name}").read_text()

    def peak_rss_mb(self) -> float:
        for line in self._proc_file("status").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        fields = self._proc_file("stat").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def send(gw: Gateway, start: int, count: int, devices: int, concurrency: int,
               latencies: list[float]) -> int:
    """Post ``count`` measures (sequence ``start..``) with ``concurrency`` in flight; return the acknowledged."""
    base = f"http://127.0.0.1:{gw.south}/iot/json"
    acked = 0
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=concurrency * 4)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal acked
        while (seq := await queue.get()) is not None:
            body = json.dumps({"t": 15 + (seq % 100) / 10, "no2": seq}).encode()
            url = f"{base}?k={APIKEY}&i=dev{seq % devices:04d}"
            for _ in range(600):  # a device retries until the gateway acknowledges
                began = time.perf_counter()
                try:
                    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                        await resp.read()
                        if resp.status == 200:
                            latencies.append(time.perf_counter() - began)
                            acked += 1
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        workers = [asyncio.create_task(worker(http)) for _ in range(concurrency)]
        for i in range(count):
            await queue.put(start + i)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return acked


async def wait_published(gw: Gateway, http: aiohttp.ClientSession, count: int, within: float) -> None:
    """Poll the gateway's metrics until ``count`` entities are published (or ``within`` seconds pass)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await gw.published(http) >= count:
            return
        await asyncio.sleep(0.05)  # polling another process: there is no event to wait on


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    if not ordered:
        return float("nan"), float("nan")
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def commit_quantiles(before: str, after: str, sink: str) -> tuple[float, float]:
    """p50 / p99 of receipt → sink commit between two scrapes."""
    import re

    def parse(text: str) -> dict[str, float]:
        pattern = rf'jonction_end_to_end_seconds_bucket\{{sink="{sink}",le="([^"]+)"\}} (\S+)'
        return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text)}

    b, a = parse(before), parse(after)
    lines = "\n".join(f'jonction_end_to_end_seconds_bucket{{sink="{sink}",le="{le}"}} {a[le] - b.get(le, 0)}'
                      for le in a)
    q = histogram_quantiles(lines, "jonction_end_to_end_seconds", sink, (0.5, 0.99))
    return (q[0], q[1]) if len(q) == 2 else (float("nan"), float("nan"))


async def final_values(gw: Gateway, http: aiohttp.ClientSession) -> dict[str, float]:
    """The embedded store's ``no2`` of every bench device."""
    out: dict[str, float] = {}
    offset = 0
    while True:
        async with http.get(f"http://127.0.0.1:{gw.port}/ngsi-ld/v1/entities",
                            params={"type": "AirQualityObserved", "limit": "1000", "offset": str(offset)},
                            headers={"NGSILD-Tenant": SERVICE, "Link": LINK}) as resp:
            page = await resp.json()
        for item in page:
            out[item["id"]] = item["no2"]["value"]
        if len(page) < 1000:
            return out
        offset += 1000


async def run_one(args: argparse.Namespace, tmp: Path, broker: FakeBroker | None) -> None:
    gw = Gateway(tmp, broker=broker)
    gw.start()
    try:
        async with aiohttp.ClientSession() as http:
            await gw.ready(http)
            async with http.post(f"http://127.0.0.1:{gw.north}/iot/services", json={"services": [GROUP]},
                                 headers=HEADERS) as resp:
                assert resp.status == 201, await resp.text()
            warm: list[float] = []
            warmup = args.devices  # autoprovisions every device once, outside the measurement
            await send(gw, 0, warmup, args.devices, args.concurrency, warm)
            await wait_published(gw, http, warmup, 600)
            before = await gw.metrics(http)
            published_before = await gw.published(http)
            cpu_before = gw.cpu_seconds()
            latencies: list[float] = []
            began = time.perf_counter()
            sender = asyncio.create_task(send(gw, warmup, args.messages, args.devices, args.concurrency, latencies))
            if broker is not None and args.outage:
                await asyncio.sleep(1.0)
                broker.down_until = time.monotonic() + args.outage
            acked = await sender
            acked_at = time.perf_counter()
            await wait_published(gw, http, published_before + acked, 600)
            done = time.perf_counter()
            await asyncio.sleep(0.5)  # anything published twice would show up now
            published = await gw.published(http) - published_before
            cpu = (gw.cpu_seconds() - cpu_before) / args.messages
            after = await gw.metrics(http)
            expected = {f"urn:ngsi-ld:AirQualityObserved:dev{d:04d}": float(max(
                seq for seq in range(warmup + args.messages - args.devices, warmup + args.messages)
                if seq % args.devices == d)) for d in range(args.devices)}
            found = broker.last if broker is not None else await final_values(gw, http)
            lost = sum(1 for k, v in expected.items() if found.get(k) != v)
            if lost and not found:
                print(f"[{gw.sink}] could not read the sink's final values")
            p50, p99 = quantiles(latencies)
            c50, c99 = commit_quantiles(before, after, gw.sink)
            outage = f", sink down {args.outage:g} s in the middle ({broker.refused} upserts refused)" \
                if broker is not None and args.outage else ""
            print(f"[{gw.sink}{outage}] {args.messages} JSON measures from {args.devices} devices, "
                  f"{args.concurrency} in flight: {acked} acknowledged at {acked / (acked_at - began):.0f} msg/s; "
                  f"all committed at {published / (done - began):.0f} msg/s wall clock")
            print(f"[{gw.sink}] gateway CPU {cpu * 1e6:.0f} µs per measure (HTTP in, archive, validation, outbox, "
                  f"{gw.sink} commit; {'pinned to one core' if PIN else 'not pinned'}); peak RSS "
                  f"{gw.peak_rss_mb():.0f} MB")
            print(f"[{gw.sink}] latency device → 200: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
                  f"receipt → commit: p50 {c50 * 1000:.1f} ms, p99 {c99 * 1000:.1f} ms")
            print(f"[{gw.sink}] lost: {lost} devices without their last measure, "
                  f"{max(0, acked - published)} acknowledged measures never published; "
                  f"duplicated: {max(0, published - acked)}; load average {os.getloadavg()[0]:.1f} "
                  f"on {os.cpu_count()} cores")
    finally:
        gw.stop()


async def mqtt_publish(port: int, start: int, count: int, devices: int, *, rate: float | None = None) -> None:
    """Publish ``count`` JSON measures at QoS 1 on ``/<apikey>/<device>/attrs`` (as fast as acknowledged, or paced)."""
    import logging

    import aiomqtt

    logging.getLogger("mqtt").setLevel(logging.ERROR)  # not one warning per queued publish
    window = asyncio.Semaphore(200)
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-devices", timeout=30,
                              max_queued_outgoing_messages=0) as client:
        began = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()

        async def one(seq: int) -> None:
            try:
                body = json.dumps({"t": 15 + (seq % 100) / 10, "no2": seq}).encode()
                await client.publish(f"/{APIKEY}/dev{seq % devices:04d}/attrs", body, qos=1)
            finally:
                window.release()

        for i in range(count):
            if rate is not None:
                delay = began + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            task = asyncio.create_task(one(start + i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)


async def run_mqtt(args: argparse.Namespace, tmp: Path) -> None:
    """MQTT QoS 1 through Mosquitto: a burst of ``--messages`` (throughput, CPU, RSS, loss), then a paced stream."""
    sys.path.insert(0, str(ROOT))
    from tests.adapters.lorawan.mosquitto import Broker

    mosquitto = Broker(tmp / "mosquitto", extra="max_inflight_messages 500")
    mosquitto.start()
    gw = Gateway(tmp / "gateway-mqtt", broker=None, mqtt_port=mosquitto.port)
    gw.start()
    try:
        async with aiohttp.ClientSession() as http:
            await gw.ready(http)
            async with http.post(f"http://127.0.0.1:{gw.north}/iot/services", json={"services": [GROUP]},
                                 headers=HEADERS) as resp:
                assert resp.status == 201, await resp.text()
            await asyncio.sleep(1.0)  # the subscription is made when the source starts
            await mqtt_publish(mosquitto.port, 0, args.devices, args.devices)  # autoprovision, outside the figures
            await wait_published(gw, http, args.devices, 600)
            published_before = await gw.published(http)
            cpu_before = gw.cpu_seconds()
            began = time.perf_counter()
            await mqtt_publish(mosquitto.port, args.devices, args.messages, args.devices)
            published_at = time.perf_counter()
            await wait_published(gw, http, published_before + args.messages, 600)
            done = time.perf_counter()
            await asyncio.sleep(0.5)
            published = await gw.published(http) - published_before
            cpu = (gw.cpu_seconds() - cpu_before) / args.messages
            last_seq = args.devices + args.messages
            expected = {f"urn:ngsi-ld:AirQualityObserved:dev{seq % args.devices:04d}": float(seq)
                        for seq in range(last_seq - args.devices, last_seq)}
            found = await final_values(gw, http)
            lost = sum(1 for k, v in expected.items() if found.get(k) != v)
            print(f"[mqtt burst] {args.messages} QoS 1 measures from {args.devices} devices published in "
                  f"{published_at - began:.1f} s; all committed in the embedded store at "
                  f"{published / (done - began):.0f} msg/s wall clock; gateway CPU {cpu * 1e6:.0f} µs per measure; "
                  f"peak RSS {gw.peak_rss_mb():.0f} MB (receive_maximum 500)")
            print(f"[mqtt burst] lost: {lost} devices without their last measure, "
                  f"{max(0, args.messages - published)} never published; duplicated: "
                  f"{max(0, published - args.messages)}; load average {os.getloadavg()[0]:.1f}")
            before = await gw.metrics(http)
            paced = int(args.mqtt_rate * args.mqtt_seconds)
            await mqtt_publish(mosquitto.port, last_seq, paced, args.devices, rate=args.mqtt_rate)
            await wait_published(gw, http, published_before + published + paced, 600)
            c50, c99 = commit_quantiles(before, await gw.metrics(http), "embedded")
            print(f"[mqtt paced] {paced} measures at {args.mqtt_rate:.0f}/s: receipt → commit p50 {c50 * 1000:.1f} ms, "
                  f"p99 {c99 * 1000:.1f} ms")
    finally:
        gw.stop()
        mosquitto.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the fake broker answers 503 (0: none)")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-broker", action="store_true")
    parser.add_argument("--skip-mqtt", action="store_true")
    parser.add_argument("--mqtt-rate", type=float, default=200.0, help="paced MQTT measures per second")
    parser.add_argument("--mqtt-seconds", type=float, default=10.0)
    args = parser.parse_args()
    if PIN:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if not args.skip_embedded:
            await run_one(args, tmp / "embedded", None)
        if not args.skip_broker:
            broker = FakeBroker()
            await broker.start()
            try:
                await run_one(args, tmp / "broker", broker)
            finally:
                await broker.stop()
        if not args.skip_mqtt:
            await run_mqtt(args, tmp / "mqtt")


if __name__ == "__main__":
    asyncio.run(main())
