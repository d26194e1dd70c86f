"""End-to-end pipeline benchmark: webhook-style HTTP source → validation → outbox → store.

Runs ``jonction run --config`` in a subprocess pinned to one core (CPU 0 when there are two)
and drives it from this process (pinned to the other core) with NGSI v2 notifications, the
webhook-style source every NGSI ecosystem has. Prints figures; asserts nothing.

1. throughput: N messages (one device reading each) as fast as the gateway acknowledges them,
   until the embedded store has committed them all (validation on);
2. latency at a fixed rate (default 1,000 msg/s): receipt → commit, from the gateway's own
   ``jonction_end_to_end_seconds`` histogram (interpolated within buckets);
3. RSS of the gateway after readings from 10,000 distinct devices;
4. outage: a remote jonction store as second sink, stopped for ``--outage`` seconds in the middle
   of a steady stream: zero loss check (every device's last value) and time to drain the backlog.

    .venv/bin/python bench/bench_pipeline.py [--messages 30000] [--rate 1000] [--outage 30]
        [--repeat 2] [--remote] [--devices 1000 --concurrency 50] [--skip-stages] [--skip-outage]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PIN = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
"""Pin the gateway to CPU 0 and the load generator to CPU 1 (one core each)."""
LINK = '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; ' \
       'type="application/ld+json"'


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def notification(seq: int, devices: int) -> bytes:
    """NGSI v2 notification number ``seq`` (one WasteContainer reading of device ``seq % devices``)."""
    device = seq % devices
    second = seq // devices
    return json.dumps({"subscriptionId": "bench", "data": [{
        "id": f"urn:ngsi-ld:WasteContainer:bench-{device}", "type": "WasteContainer",
        "fillingLevel": {"type": "Number", "value": (seq % 97) / 100, "metadata": {
            "TimeInstant": {"type": "DateTime", "value": time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(1767261600 + second)) + f".{seq % 1000:03d}Z"}}},
        "location": {"type": "geo:json", "value": {"type": "Point", "coordinates": [3.87, 43.6]}}}]}).encode()


class Gateway:
    """A ``jonction run`` subprocess."""

    def __init__(self, tmp: Path, *, sinks: list[dict[str, Any]] | None = None, embedded: bool = True) -> None:
        self.port, self.notify_port = free_port(), free_port()
        doc = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "data_dir": str(tmp / "gateway"),
            "log_level": "WARNING",
            "archive": {"max_bytes": "256MB"},
            "publisher": {"linger": 0.01, "batch_size": 500, "breaker_cooldown": 1, "backoff_max": 1},
            "sinks": sinks or [],
            "embedded_store": {"enabled": embedded},
            "sources": [{"name": "bench", "adapter": "ngsi_v2", "config": {
                "listen": {"host": "127.0.0.1", "port": self.notify_port, "path": "/v2/notify"}}}],
        }
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = tmp / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process, pinned to CPU 0 when there are two."""
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen([str(BIN / "jonction"), "run", "--config", str(self.config)],
                                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink)
        if PIN:
            os.sched_setaffinity(self.proc.pid, {0})

    async def ready(self) -> None:
        """Wait for /readyz and the notification listener."""
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            while time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.notify_port), timeout=0.2):
                        return
                except OSError:
                    await asyncio.sleep(0.1)
        raise RuntimeError(f"gateway did not start; see {self.log}")

    async def metrics(self) -> str:
        """The gateway's /metrics text."""
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            return await resp.text()

    async def published(self, sink: str = "embedded") -> int:
        """Entities published to ``sink`` so far."""
        match = re.search(rf'jonction_entities_published_total{{sink="{sink}"}} (\S+)', await self.metrics())
        return int(float(match.group(1))) if match else 0

    def rss_mb(self) -> float:
        """Resident memory of the gateway process in MB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """CPU time (user + system, every thread) the gateway process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, then wait (kill after 60 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def send(gw: Gateway, start: int, count: int, devices: int, *, concurrency: int = 64,
               rate: float | None = None) -> int:
    """Post ``count`` notifications; return how many were acknowledged (2xx)."""
    url = f"http://127.0.0.1:{gw.notify_port}/v2/notify"
    acked = 0
    queue: asyncio.Queue[int | None] = asyncio.Queue(maxsize=concurrency * 4)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal acked
        while (seq := await queue.get()) is not None:
            body = notification(seq, devices)
            for _ in range(50):  # a source retries until the gateway acknowledges
                try:
                    async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                        if resp.status < 300:
                            acked += 1
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(connector=connector) as http:
        workers = [asyncio.create_task(worker(http)) for _ in range(concurrency)]
        began = time.perf_counter()
        for i in range(count):
            if rate is not None:
                delay = began + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await queue.put(start + i)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return acked


def histogram_quantiles(metrics: str, name: str, sink: str, qs: tuple[float, ...]) -> list[float]:
    """Quantiles of a Prometheus histogram, interpolated linearly within buckets."""
    buckets: list[tuple[float, float]] = []
    for m in re.finditer(rf'{name}_bucket{{le="([^"]+)",sink="{sink}"}} (\S+)|'
                         rf'{name}_bucket{{sink="{sink}",le="([^"]+)"}} (\S+)', metrics):
        le = m.group(1) or m.group(3)
        value = m.group(2) or m.group(4)
        buckets.append((float("inf") if le == "+Inf" else float(le), float(value)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out = []
    for q in qs:
        target = q * total
        prev_le, prev_count = 0.0, 0.0
        for le, count in buckets:
            if count >= target:
                if le == float("inf") or count == prev_count:
                    out.append(le if le != float("inf") else prev_le)
                else:
                    out.append(prev_le + (le - prev_le) * (target - prev_count) / (count - prev_count))
                break
            prev_le, prev_count = le, count
    return out


async def wait_published(gw: Gateway, expected: int, sink: str = "embedded", within: float = 600) -> float:
    """Wait until ``expected`` entities are published to ``sink``; return the time it happened."""
    began = time.perf_counter()
    while time.perf_counter() - began < within:
        if await gw.published(sink) >= expected:
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise RuntimeError(f"only {await gw.published(sink)} of {expected} published")


async def bench_throughput_latency_rss(args: argparse.Namespace, tmp: Path) -> None:
    """Phases 1-3: throughput (``--repeat`` runs over the same devices), latency at a fixed rate, RSS."""
    store: subprocess.Popen[bytes] | None = None
    if args.remote:
        # A loopback jonction store as the only sink: the gateway's cost to a remote broker.
        store_port = free_port()
        store = spawn([str(BIN / "jonction"), "store", "--port", str(store_port), "--data", str(tmp / "remote-a"),
                       "--durability", "normal"])
        gw = Gateway(tmp / "a", sinks=[{"name": "remote", "url": f"http://127.0.0.1:{store_port}",
                                        "profile": "jonction"}], embedded=False)
    else:
        gw = Gateway(tmp / "a")
    sink = "remote" if args.remote else "embedded"
    gw.start()
    try:
        await gw.ready()
        await send(gw, 0, 500, args.devices)  # warm-up
        await wait_published(gw, 500, sink)
        start = 500
        for run in range(args.repeat):
            began = time.perf_counter()
            cpu_before = gw.cpu_seconds()
            acked = await send(gw, start, args.messages, args.devices, concurrency=args.concurrency)
            acked_at = time.perf_counter()
            start += args.messages
            done = await wait_published(gw, start, sink)
            cpu = (gw.cpu_seconds() - cpu_before) / args.messages
            label = "throughput" if run == 0 else f"throughput (run {run + 1}, the same {args.devices} devices again)"
            print(f"{label}: {args.messages} messages, {acked} acknowledged in {acked_at - began:.2f}s "
                  f"({acked / (acked_at - began):.0f} msg/s acknowledged); committed in the {sink} store at "
                  f"{args.messages / (done - began):.0f} msg/s wall clock (validation on, gateway "
                  f"{'pinned to one core' if PIN else 'not pinned'}; {args.devices} devices, "
                  f"{args.concurrency} in flight; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
            print(f"{label}: gateway CPU {cpu * 1e6:.0f} µs per message end to end (HTTP in, archive, "
                  f"validation, outbox, {sink} store commit) → {1 / cpu:.0f} msg/s on one dedicated core")
        if args.remote:
            return
        before = await gw.metrics()
        count = int(args.rate * args.latency_seconds)
        await send(gw, start, count, args.devices, concurrency=args.concurrency, rate=args.rate)
        await wait_published(gw, start + count)
        after = await gw.metrics()
        p50, p99 = _delta_quantiles(before, after)
        print(f"latency at {args.rate:.0f} msg/s for {args.latency_seconds}s (receipt → store commit): "
              f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
        print(f"RSS after readings from {args.devices} devices: {gw.rss_mb():.0f} MB")
    finally:
        gw.stop()
        if store is not None:
            store.send_signal(signal.SIGTERM)
            store.wait(timeout=30)


def _delta_quantiles(before: str, after: str) -> tuple[float, float]:
    """Quantiles of the observations made between two scrapes."""
    def parse(text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for m in re.finditer(r'jonction_end_to_end_seconds_bucket\{sink="embedded",le="([^"]+)"\} (\S+)', text):
            out[m.group(1)] = float(m.group(2))
        return out
    b, a = parse(before), parse(after)
    lines = "\n".join(f'jonction_end_to_end_seconds_bucket{{sink="embedded",le="{le}"}} {a[le] - b.get(le, 0)}'
                      for le in a)
    q = histogram_quantiles(lines, "jonction_end_to_end_seconds", "embedded", (0.5, 0.99))
    return q[0], q[1]


async def bench_outage(args: argparse.Namespace, tmp: Path) -> None:
    """Phase 4: a remote jonction store down in the middle of a stream."""
    store_port = free_port()
    store_cmd = [str(BIN / "jonction"), "store", "--port", str(store_port), "--data", str(tmp / "remote"),
                 "--durability", "normal"]
    store = spawn(store_cmd)
    gw = Gateway(tmp / "b", sinks=[{"name": "remote", "url": f"http://127.0.0.1:{store_port}"}])
    gw.start()
    devices = min(args.devices, 2000)
    try:
        await gw.ready()
        rate, total_s = args.outage_rate, args.outage * 3
        count = int(rate * total_s)
        sender = asyncio.create_task(send(gw, 0, count, devices, concurrency=32, rate=rate))
        await asyncio.sleep(args.outage)
        store.send_signal(signal.SIGTERM)
        store.wait(timeout=30)
        down_at = time.perf_counter()
        await asyncio.sleep(args.outage)
        text = await gw.metrics()
        backlog = re.search(r'jonction_outbox_entities\{sink="remote",tenant=""\} (\S+)', text)
        age = re.search(r'jonction_outbox_oldest_age_seconds\{sink="remote",tenant=""\} (\S+)', text)
        store = spawn(store_cmd)
        up_at = time.perf_counter()
        caught_up = await wait_backlog_below(gw, "remote", int(rate))  # under a second of traffic
        acked = await sender
        drained = await wait_published(gw, count, sink="remote")
        print(f"outage: remote store down {up_at - down_at:.1f}s during a {rate:.0f} msg/s stream; backlog at "
              f"restart {backlog.group(1) if backlog else '?'} entities, oldest {age.group(1) if age else '?'} s; "
              f"backlog caught up {caught_up - up_at:.1f}s after restart (stream still running); "
              f"last entity committed {drained - up_at:.1f}s after restart")
        lost = await check_remote(store_port, count, devices)
        print(f"outage: {acked} acknowledged, {count} sent, entities lost or stale at the remote: {lost}")
    finally:
        gw.stop()
        store.send_signal(signal.SIGTERM)
        store.wait(timeout=30)


async def wait_backlog_below(gw: Gateway, sink: str, limit: int, within: float = 600) -> float:
    """Wait until the outbox holds fewer than ``limit`` entities for ``sink``; return the time."""
    began = time.perf_counter()
    pattern = re.compile(rf'jonction_outbox_entities{{sink="{sink}",tenant=""}} (\S+)')
    while time.perf_counter() - began < within:
        match = pattern.search(await gw.metrics())
        if match is None or float(match.group(1)) < limit:
            return time.perf_counter()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"backlog of {sink} never went under {limit}")


def spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    """Start a helper process (the remote store) quietly."""
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def check_remote(port: int, count: int, devices: int) -> int:
    """Devices whose last reading is missing or stale at the remote store."""
    last: dict[int, float] = {}
    for seq in range(count):
        last[seq % devices] = (seq % 97) / 100
    found: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        offset = 0
        while True:
            async with http.get(f"http://127.0.0.1:{port}/ngsi-ld/v1/entities",
                                params={"type": "WasteContainer", "limit": "1000", "offset": str(offset)},
                                headers={"Link": LINK}) as resp:
                page = await resp.json()
            for item in page:
                found[item["id"]] = item["fillingLevel"]["value"]
            if len(page) < 1000:
                break
            offset += 1000
    return sum(1 for d, v in last.items() if found.get(f"urn:ngsi-ld:WasteContainer:bench-{d}") != v)


async def bench_stages(args: argparse.Namespace, tmp: Path) -> None:
    """CPU time per message of each stage, in this process (no HTTP): what bounds throughput."""
    from adapters.ngsi_v2 import NgsiV2Adapter
    from gateway.model import RawMessage
    from gateway.runtime.normalize import normalize
    from gateway.runtime.validator import load_validator
    from gateway.store.backends import open_storage

    n = 2000
    adapter = NgsiV2Adapter({"name": "bench"})
    raws = [RawMessage("bench", "", "2026-01-01T00:00:00Z", notification(i, args.devices), f"k{i}")
            for i in range(n)]
    validate = load_validator(True)
    figures: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        began = time.process_time()
        out = fn()
        figures[name] = (time.process_time() - began) / n * 1e6
        return out

    entities = timed("translate (ngsi_v2)", lambda: [e for r in raws for e in adapter.to_entities(r)])
    timed("normalize", lambda: [normalize(e) for e in entities])
    timed("validate (structure + Smart Data Model)", lambda: validate(entities))
    storage = await open_storage(tmp / "stages" / "store.sqlite", durability="normal")
    began = time.process_time()
    for i in range(0, n, 500):
        await storage.upsert("", entities[i:i + 500])
    figures["embedded store upsert (batches of 500)"] = (time.process_time() - began) / n * 1e6
    await storage.close()
    for name, micros in figures.items():
        print(f"stage cost: {name}: {micros:.0f} µs CPU per message")


async def main() -> None:
    """Parse the options and run every phase."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=30000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the remote broker is down")
    parser.add_argument("--outage-rate", type=float, default=500.0)
    parser.add_argument("--skip-outage", action="store_true")
    parser.add_argument("--skip-stages", action="store_true")
    parser.add_argument("--repeat", type=int, default=1,
                        help="throughput runs over the same devices (the first is cold, the others warm)")
    parser.add_argument("--remote", action="store_true",
                        help="throughput to a loopback remote jonction store instead of the embedded one "
                             "(no latency or RSS phase)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the gateway and the load to one core each")
    args = parser.parse_args()
    global PIN
    PIN = PIN and not args.no_pin
    if PIN:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory(prefix="jonction-bench-") as tmp:
        if not args.skip_stages:
            await bench_stages(args, Path(tmp))
        await bench_throughput_latency_rss(args, Path(tmp))
        if not args.skip_outage:
            await bench_outage(args, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
