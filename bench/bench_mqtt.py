"""MQTT uplinks per second through the runtime to the embedded store, latency, memory under a burst.

Three figures, on this machine, one gateway process (the broker and the publisher are separate
processes, as in production):

1. translation + validation only: ChirpStack v4 uplinks → ``to_entities`` → ``validate`` (one core);
2. burst: N uplinks published at once by ``mosquitto_pub -l`` (QoS 1) → Mosquitto → the
   chirpstack_v4 adapter (manual acks, persistent session) → pipeline (archive, validation,
   outbox) → embedded store; throughput until the outbox is drained, and peak RSS;
3. paced: uplinks published at a fixed rate; latency from the uplink's ``time`` (set when it is
   written to the publisher) to the moment the pipeline has durably accepted it (p50, p99).

Run: ``.venv/bin/python bench/bench_mqtt.py [--burst 30000] [--rate 5000] [--seconds 5]``.
Needs the Debian packages ``mosquitto`` (the broker) and ``mosquitto-clients`` (``mosquitto_pub``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.chirpstack_v4 import ChirpstackV4Adapter  # noqa: E402
from gateway.model import RawMessage  # noqa: E402
from gateway.runtime.app import RUNTIME, create_app  # noqa: E402
from gateway.runtime.config import parse  # noqa: E402
from gateway.validation import validate  # noqa: E402
from tests.adapters.lorawan.mosquitto import Broker  # noqa: E402

DEVICES = 500
TOPIC = "application/5e1f9a3c/device/bench/event/up"
TEMPLATE = json.loads((ROOT / "adapters/chirpstack_v4/fixtures/em310_up_decoded.json").read_text())


def devices() -> list[dict[str, Any]]:
    return [{"dev_eui": f"24e124713b{n:06x}", "profile": "milesight-em310-udl",
             "entity_id": f"urn:ngsi-ld:WasteContainer:bench-{n}", "location": {"lon": 3.88, "lat": 43.61},
             "params": {"container_height_mm": 1800, "full_distance_mm": 250}} for n in range(DEVICES)]


def uplink(n: int, when: str | None = None) -> str:
    doc = copy.deepcopy(TEMPLATE)
    doc["deduplicationId"] = f"00000000-0000-4000-8000-{n:012d}"
    doc["deviceInfo"]["devEui"] = f"24e124713b{n % DEVICES:06x}"
    doc["fCnt"] = n
    # 10 ms apart in n, so each device's readings arrive in the order they were taken, as a network
    # server forwards them (an earlier formula went back in time every 600 uplinks and made 40 % late)
    doc["time"] = when or (datetime(2026, 3, 4, 7, tzinfo=UTC) + timedelta(milliseconds=10 * n)).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    doc["object"]["distance"] = 250 + n % 1500
    return json.dumps(doc, separators=(",", ":"))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def translation_only(count: int) -> None:
    adapter = ChirpstackV4Adapter({"transport": "http", "devices": devices()})
    bodies = [uplink(n).encode() for n in range(count)]
    started = time.perf_counter()
    cpu = time.process_time()
    entities = 0
    for n, body in enumerate(bodies):
        raw = RawMessage("bench", "", "2026-03-04T07:00:00Z", body, f"k{n}", metadata={"event": "up"})
        for item in adapter.to_entities(raw):
            if not validate(item).valid:
                raise SystemExit(f"invalid entity in the benchmark: {item['id']}")
            entities += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    print(f"translation + validation: {count / cpu:,.0f} uplinks per CPU second ({entities / cpu:,.0f} entities; "
          f"{count / elapsed:,.0f}/s wall on this machine)")


class Timed(ChirpstackV4Adapter):
    """The chirpstack_v4 adapter, recording when the pipeline has accepted each uplink."""

    latencies: list[float] = []

    async def run(self, emit: Any) -> None:
        async def timed(raw: RawMessage) -> None:
            await emit(raw)
            sent = datetime.fromisoformat(json.loads(raw.payload)["time"]).timestamp()
            Timed.latencies.append(time.time() - sent)

        await super().run(timed)


def gateway_config(folder: Path, port: int) -> Any:
    return parse({
        "server": {"host": "127.0.0.1", "port": 0},
        "data_dir": str(folder / "data"),
        "publisher": {"linger": 0.02},
        "sources": [{"name": "chirpstack", "adapter": "chirpstack_v4", "tenant": "", "config": {
            "transport": "mqtt",
            "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "jonction-bench",
                     "topics": ["application/+/device/+/event/+"], "receive_maximum": 500},
            "devices": devices()}}],
    })


def received(rt: Any) -> float:
    return float(rt.metrics.messages_in.get(source="chirpstack", adapter="chirpstack_v4"))


async def wait_drained(rt: Any, count: int, within: float) -> float:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if received(rt) >= count and rt.outbox.depth("embedded") == 0:
            return time.perf_counter()
        await asyncio.sleep(0.01)
    raise SystemExit(f"not drained: {received(rt):.0f} of {count} received")


async def through_runtime(burst: int, rate: int, seconds: float) -> None:
    from aiohttp import web

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Broker(folder / "broker", extra="max_inflight_messages 500")
        broker.start()
        app = create_app(gateway_config(folder, broker.port), adapters={"chirpstack_v4": Timed})
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            rt = app[RUNTIME]
            adapter = rt.sources["chirpstack"].adapter
            await asyncio.wait_for(adapter.mqtt.connected.wait(), 30)
            lines = ("\n".join(uplink(n) for n in range(burst)) + "\n").encode()
            base_rss = rss_mb()
            peak_buffer = 0

            async def sample() -> None:
                nonlocal peak_buffer
                while True:
                    peak_buffer = max(peak_buffer, adapter.mqtt.in_flight())
                    await asyncio.sleep(0.005)

            sampler = asyncio.create_task(sample())
            started = time.perf_counter()
            cpu = time.process_time()
            publisher = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", TOPIC, "-l",
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            await publisher.communicate(lines)
            finished = await wait_drained(rt, burst, 600)
            elapsed = finished - started
            cpu = time.process_time() - cpu
            sampler.cancel()
            stored = await rt.store.get("", "urn:ngsi-ld:WasteContainer:bench-0")
            assert stored is not None and "fillingLevel" in stored
            print(f"burst through the runtime (MQTT QoS 1 → validation → outbox → embedded store): "
                  f"{burst / elapsed:,.0f} uplinks/s wall, {burst / cpu:,.0f} per gateway CPU second "
                  f"({burst} uplinks in {elapsed:.2f} s); "
                  f"peak RSS {rss_mb():.0f} MB (+{rss_mb() - base_rss:.0f} MB during the burst); at most "
                  f"{peak_buffer} uplinks in flight in the gateway (receive_maximum 500), the rest waited "
                  f"in Mosquitto")

            Timed.latencies.clear()
            publisher = await asyncio.create_subprocess_exec(
                "mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", TOPIC, "-l",
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            assert publisher.stdin is not None
            total = int(rate * seconds)
            slice_s = 0.01
            per_slice = max(1, int(rate * slice_s))
            sent = 0
            t0 = time.perf_counter()
            while sent < total:
                now = datetime.now(UTC).isoformat(timespec="microseconds")
                chunk = "".join(uplink(burst + sent + i, now) + "\n" for i in range(min(per_slice, total - sent)))
                publisher.stdin.write(chunk.encode())
                await publisher.stdin.drain()
                sent += per_slice
                next_at = t0 + (sent / per_slice) * slice_s
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            publisher.stdin.close()
            await publisher.wait()
            await wait_drained(rt, burst + total, 120)
            lat = sorted(Timed.latencies)
            if lat:
                p50 = lat[len(lat) // 2] * 1000
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
                print(f"paced at {rate:,}/s for {seconds:g} s: publish → durably accepted latency "
                      f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(lat)} uplinks)")
        finally:
            await runner.cleanup()
            broker.stop()


def main() -> None:
    """Run the three measurements and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translate", type=int, default=20000)
    parser.add_argument("--burst", type=int, default=30000)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    translation_only(args.translate)
    import shutil

    if not shutil.which("mosquitto_pub"):
        print("MQTT figures skipped: mosquitto_pub not found (Debian package mosquitto-clients)")
        return
    asyncio.run(through_runtime(args.burst, args.rate, args.seconds))


if __name__ == "__main__":
    main()
