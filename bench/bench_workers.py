"""Scaling benchmark: ``jonction run --workers 1`` against ``--workers 2``, webhook-style HTTP in.

For each sink (the embedded store; a loopback ``jonction store`` as remote broker) and each worker
count, a fresh gateway receives ``--messages`` NGSI v2 notifications from ``--devices`` devices
with ``--concurrency`` requests in flight (keep-alive connections, which the kernel spreads over
the workers' shared port), validation on. Printed per run:

* msg/s acknowledged and msg/s committed in the sink (wall clock, first send → last commit);
* gateway CPU per message, every gateway process summed (parent and workers, user + system);
* the load generator's own CPU per message (this process), and the remote store's;
* the 1-minute load average before and after (the machine may be shared).

Nothing is pinned: with two workers the gateway has three processes on however many cores there
are, and the load generator competes with them. Runs alternate between worker counts so that
load drift hits both. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_workers.py [--messages 20000] [--devices 1000] [--concurrency 50]
        [--repeat 2] [--workers 1 2] [--sinks embedded remote] [--paced 1500 [--paced-seconds 10]]
        [--driver aiohttp|wrk]

``--driver wrk`` sends the measured run with wrk (Debian package ``wrk``), which costs 24 to 30 µs of
CPU per request where aiohttp's client in this process costs 130 to 200: on two cores, the gateway
then has the machine's remaining CPU to itself (no retry: a refused message is counted, not resent).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import BIN, ROOT, Gateway, free_port, send, spawn, wait_published


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads) so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkersGateway(Gateway):
    """The pipeline benchmark's gateway, started with ``--workers N`` and not pinned."""

    def __init__(self, tmp: Path, workers: int, **kwargs: Any) -> None:
        super().__init__(tmp, **kwargs)
        self.workers = workers
        self.pids: list[int] = []

    def start(self) -> None:
        """Start ``jonction run --workers N`` (no CPU pinning: the workers need the cores)."""
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen([str(BIN / "jonction"), "run", "--config", str(self.config),
                                          "--workers", str(self.workers)],
                                         cwd=Path(__file__).resolve().parent.parent,
                                         stdout=subprocess.DEVNULL, stderr=sink)

    async def ready(self) -> None:
        """Wait for readiness, then note every gateway process (the parent and its workers)."""
        await super().ready()
        assert self.proc is not None
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{self.port}/admin/workers") as resp:
            workers = (await resp.json())["workers"]
        self.pids = [self.proc.pid, *(int(w["pid"]) for w in workers)]

    def cpu_seconds(self) -> float:
        """CPU of every gateway process, summed."""
        return sum(cpu_seconds(pid) for pid in self.pids)

    def parent_cpu_seconds(self) -> float:
        """CPU of the parent alone (store writes, publishers, admin; all of it with one worker)."""
        return cpu_seconds(self.pids[0])

    async def batches(self, sink: str) -> float:
        """Batch upserts sent to ``sink`` so far (the publish histogram's count)."""
        match = re.search(rf'jonction_publish_seconds_count{{sink="{sink}"}} (\S+)', await self.metrics())
        return float(match.group(1)) if match else 0.0


async def one_run(args: argparse.Namespace, tmp: Path, sink: str, workers: int) -> dict[str, float]:
    """A fresh gateway (and remote store), a warm-up, then ``--messages`` measured."""
    store: subprocess.Popen[bytes] | None = None
    if sink == "remote":
        store_port = free_port()
        store = spawn([str(BIN / "jonction"), "store", "--port", str(store_port), "--data", str(tmp / "remote"),
                       "--durability", "normal"])
        gw = WorkersGateway(tmp / "gw", workers, sinks=[{"name": "remote", "url": f"http://127.0.0.1:{store_port}",
                                                         "profile": "jonction"}], embedded=False)
    else:
        gw = WorkersGateway(tmp / "gw", workers)
    gw.start()
    try:
        await gw.ready()
        await send(gw, 0, 500, args.devices)
        await wait_published(gw, 500, sink)
        load_before = os.getloadavg()[0]
        began = time.perf_counter()
        cpu_gw, cpu_gen, cpu_parent = gw.cpu_seconds(), time.process_time(), gw.parent_cpu_seconds()
        batches = await gw.batches(sink)
        cpu_store = cpu_seconds(store.pid) if store is not None else 0.0
        if args.driver == "wrk":
            acked, gen = await send_wrk(gw, 500, args.messages, args.devices, concurrency=args.concurrency)
        else:
            acked = await send(gw, 500, args.messages, args.devices, concurrency=args.concurrency)
            gen = time.process_time() - cpu_gen
        acked_at = time.perf_counter()
        done = await wait_published(gw, 500 + args.messages, sink)
        n = args.messages
        # The measured run's figures, taken before the paced phase adds its own CPU and batches.
        measured = {"gw_us": (gw.cpu_seconds() - cpu_gw) / n * 1e6, "gen_us": gen / n * 1e6,
                    "parent_us": (gw.parent_cpu_seconds() - cpu_parent) / n * 1e6,
                    "batch": n / max(1.0, await gw.batches(sink) - batches),
                    "store_us": (cpu_seconds(store.pid) - cpu_store) / n * 1e6 if store is not None else 0.0}
        paced: dict[str, float] = {}
        if args.paced and sink == "embedded":
            # Latency at a fixed rate: the end-to-end histogram (receipt → committed in the store) of these only.
            before, cpu_paced = await gw.metrics(), gw.cpu_seconds()
            count = int(args.paced * args.paced_seconds)
            sent_at = time.perf_counter()
            await send(gw, 500 + n, count, args.devices, concurrency=args.concurrency, rate=args.paced)
            sent = count / (time.perf_counter() - sent_at)  # below --paced when the gateway acknowledged slower
            await wait_published(gw, 500 + n + count, sink)
            p50, p99 = _window_quantiles(before, await gw.metrics())
            paced = {"paced_p50": p50, "paced_p99": p99, "paced_rate": sent,
                     "paced_gw_us": (gw.cpu_seconds() - cpu_paced) / count * 1e6}
        return {**paced, **measured, "acked": acked, "ack_rate": acked / (acked_at - began),
                "rate": n / (done - began), "load_before": load_before, "load_after": os.getloadavg()[0]}
    finally:
        gw.stop()
        if store is not None:
            store.send_signal(signal.SIGTERM)
            store.wait(timeout=30)


WRK_SCRIPT = r"""
-- NGSI v2 notifications first .. first+count-1: the readings of bench_pipeline.notification().
-- Once every one is sent, a connection sends GETs (answered 405 at once) until the last answer
-- of a notification comes back; the thread stops there.
-- wrk calls request() once to check the script before it connects: that call sends nothing.
local first, devices, count, sent, answered, checked = 0, 1, 0, 0, 0, false
ok = 0
function init(args)
  first, devices, count = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
end
function request()
  if sent >= count or not checked then
    checked = true
    return wrk.format("GET", nil, {})
  end
  local seq = first + sent
  sent = sent + 1
  local second = math.floor(seq / devices)
  local body = string.format(
    '{"subscriptionId":"bench","data":[{"id":"urn:ngsi-ld:WasteContainer:bench-%d","type":"WasteContainer",' ..
    '"fillingLevel":{"type":"Number","value":%s,"metadata":{"TimeInstant":{"type":"DateTime","value":"%s.%03dZ"}}},' ..
    '"location":{"type":"geo:json","value":{"type":"Point","coordinates":[3.87,43.6]}}}]}',
    seq % devices, tostring((seq % 97) / 100), os.date("!%Y-%m-%dT%H:%M:%S", 1767261600 + second), seq % 1000)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  if status ~= 405 then
    answered = answered + 1
    if status < 300 then ok = ok + 1 end
    if answered >= count then
      wrk.thread:stop()
      io.write("finished\n")  -- wrk's main thread sleeps out -d unless interrupted: the bench sends SIGINT
      io.flush()
    end
  end
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function done(summary, latency, requests)
  local acked = 0
  for _, t in ipairs(threads) do acked = acked + t:get("ok") end
  io.write(string.format("acked %d\n", acked))
end
"""


async def send_wrk(gw: Gateway, start: int, count: int, devices: int, *, concurrency: int) -> tuple[int, float]:
    """Post the notifications with ``wrk`` (C, Debian package ``wrk``); return (acknowledged, its CPU seconds).

    The same readings as :func:`bench_pipeline.send`, from a load generator that costs a few
    microseconds per request instead of aiohttp's client's 130 to 200: on two cores, what the gateway
    does with the rest of the machine. One wrk thread, ``concurrency`` keep-alive connections, no retry.
    """
    script = Path(gw.config).with_name("notify.lua")
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    def run() -> tuple[str, int, Any]:
        proc = subprocess.Popen(
            ["wrk", "-t1", f"-c{concurrency}", "-d600s", "--timeout", "30s", "-s", str(script),
             f"http://127.0.0.1:{gw.notify_port}/v2/notify", "--", str(start), str(devices), str(count)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.decode(errors="replace"))
            if line.strip() == b"finished":
                proc.send_signal(signal.SIGINT)  # ends wrk's wait for -d; it then prints its summary
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: this child's own CPU
        return "".join(lines), os.waitstatus_to_exitcode(status), usage

    text, code, usage = await asyncio.to_thread(run)
    match = re.search(r"^acked (\d+)$", text, re.MULTILINE)
    if code != 0 or match is None:
        raise RuntimeError(f"wrk failed ({code}): {text[-1000:]}")
    return int(match.group(1)), usage.ru_utime + usage.ru_stime


PER_UPLINK = 2
"""Entities stored per chirpstack_v4 uplink in this benchmark: the WasteContainer and its Device."""


class MqttGateway(WorkersGateway):
    """``jonction run --workers N`` with one chirpstack_v4 source over MQTT (QoS 1) and the embedded store."""

    def __init__(self, tmp: Path, workers: int, broker_port: int) -> None:
        super().__init__(tmp, workers)
        import yaml
        from bench_mqtt import devices

        doc = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        doc["sources"] = [{"name": "chirpstack", "adapter": "chirpstack_v4", "tenant": "", "config": {
            "transport": "mqtt",
            "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": "jonction-bench",
                     "topics": ["application/+/device/+/event/+"], "receive_maximum": 500},
            "devices": devices()}}]
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")

    async def ready(self) -> None:
        """Readiness of the admin port (the MQTT source has no port of its own)."""
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
            else:
                raise RuntimeError(f"gateway did not start; see {self.log}")
            async with http.get(f"http://127.0.0.1:{self.port}/admin/workers") as resp:
                workers = (await resp.json())["workers"]
        assert self.proc is not None
        self.pids = [self.proc.pid, *(int(w["pid"]) for w in workers)]
        await asyncio.sleep(1.0)  # the workers' MQTT sessions subscribe after readiness

    async def counter(self, name: str) -> float:
        """Sum of every series of counter ``name`` in /metrics."""
        return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", await self.metrics(),
                                                          re.MULTILINE))


async def publish(port: int, lines: list[str], rate: float | None = None) -> None:
    """Publish ``lines`` (QoS 1) with ``mosquitto_pub -l``, at once or paced at ``rate`` per second."""
    from bench_mqtt import TOPIC

    pub = await asyncio.create_subprocess_exec(
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", TOPIC, "-l",
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert pub.stdin is not None
    if rate is None:
        pub.stdin.write(("\n".join(lines) + "\n").encode())
    else:
        per_slice, began = max(1, int(rate / 100)), time.perf_counter()
        for i in range(0, len(lines), per_slice):
            pub.stdin.write(("\n".join(lines[i:i + per_slice]) + "\n").encode())
            await pub.stdin.drain()
            await asyncio.sleep(max(0.0, began + (i + per_slice) / rate - time.perf_counter()))
    await pub.stdin.drain()
    pub.stdin.close()
    await pub.wait()


async def mqtt_run(args: argparse.Namespace, tmp: Path, workers: int) -> dict[str, float]:
    """A fresh Mosquitto and gateway; a burst of ``--burst`` uplinks, then ``--rate``/s for ``--seconds``."""
    sys.path.insert(0, str(ROOT))
    from bench_mqtt import uplink

    from tests.adapters.lorawan.mosquitto import Broker

    broker = Broker(tmp / "broker", extra="max_inflight_messages 500")
    broker.start()
    gw = MqttGateway(tmp / "gw", workers, broker.port)
    gw.start()
    try:
        await gw.ready()
        stored = "jonction_entities_published_total"
        await publish(broker.port, [uplink(n) for n in range(200)])
        await wait_published(gw, 200 * PER_UPLINK, "embedded")
        load_before = os.getloadavg()[0]
        cpu_gw, cpu_parent = gw.cpu_seconds(), gw.parent_cpu_seconds()
        base = await gw.counter(stored)
        batches = await gw.batches("embedded")
        n = args.burst
        lines = [uplink(200 + i) for i in range(n)]
        began = time.perf_counter()
        await publish(broker.port, lines)
        done = await wait_published(gw, int(base) + n * PER_UPLINK, "embedded")
        burst = {"rate": n / (done - began), "gw_us": (gw.cpu_seconds() - cpu_gw) / n * 1e6,
                 "parent_us": (gw.parent_cpu_seconds() - cpu_parent) / n * 1e6,
                 "batch": n * PER_UPLINK / max(1.0, await gw.batches("embedded") - batches)}
        # Paced: the end-to-end histogram (gateway receipt → committed in the store) of these uplinks only.
        before = await gw.metrics()
        paced = int(args.rate * args.seconds)
        now = time.time()
        lines = [uplink(200 + n + i, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + i / args.rate))
                        + f".{int((now + i / args.rate) % 1 * 1e6):06d}Z") for i in range(paced)]
        await publish(broker.port, lines, args.rate)
        total = 200 + n + paced
        await wait_published(gw, int(base) + (n + paced) * PER_UPLINK, "embedded")
        after = await gw.metrics()
        p50, p99 = _window_quantiles(before, after)
        await asyncio.sleep(1.0)  # anything redelivered late would show up now
        published = (await gw.counter(stored) - base) / PER_UPLINK + 200
        duplicates = await gw.counter("jonction_messages_duplicate_total")
        return {**{f"burst_{k}": v for k, v in burst.items()}, "p50": p50, "p99": p99,
                "lost": max(0.0, total - published), "dup": max(0.0, published - total),
                "dedup": duplicates, "load_before": load_before, "load_after": os.getloadavg()[0]}
    finally:
        gw.stop()
        broker.stop()


def _window_quantiles(before: str, after: str) -> tuple[float, float]:
    """p50 and p99 (ms) of the end-to-end histogram between two /metrics snapshots."""
    def buckets(text: str) -> dict[str, float]:
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            r'jonction_end_to_end_seconds_bucket{(?:sink="embedded",)?le="([^"]+)"(?:,sink="embedded")?} (\S+)', text)}

    a, b = buckets(before), buckets(after)
    diff = sorted(((float("inf") if le == "+Inf" else float(le)), b[le] - a.get(le, 0.0)) for le in b)
    total = diff[-1][1] if diff else 0.0
    out = []
    for q in (0.5, 0.99):
        target, prev_le, prev = q * total, 0.0, 0.0
        for le, count in diff:
            if count >= target:
                span = count - prev
                out.append(1000 * (prev_le + (le - prev_le) * ((target - prev) / span if span else 0.0))
                           if le != float("inf") else 1000 * prev_le)
                break
            prev_le, prev = le, count
        else:
            out.append(float("nan"))
    return out[0], out[1]


async def main() -> None:
    """Parse the options, alternate the runs, print every run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sinks", nargs="+", default=["embedded", "remote"], choices=["embedded", "remote"])
    parser.add_argument("--driver", choices=["aiohttp", "wrk"], default="aiohttp",
                        help="HTTP load generator of the measured run: aiohttp's client (in this process, "
                             "retries) or wrk (C, `apt-get install wrk`; a few µs per request, no retry)")
    parser.add_argument("--paced", type=float, default=0.0,
                        help="HTTP → embedded store: after each run, this many msg/s for --paced-seconds, "
                             "printing p50/p99 receipt → stored (0: no paced phase)")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--mqtt", action="store_true",
                        help="LoRaWAN (chirpstack_v4) uplinks over MQTT QoS 1 → embedded store instead of HTTP")
    parser.add_argument("--burst", type=int, default=20000, help="MQTT: uplinks published at once")
    parser.add_argument("--rate", type=float, default=2000.0, help="MQTT: paced uplinks per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="MQTT: how long the paced run lasts")
    args = parser.parse_args()
    if args.mqtt:
        await mqtt_main(args)
        return
    if args.driver == "wrk" and shutil.which("wrk") is None:
        parser.error("--driver wrk needs wrk (Debian package wrk)")
    print(f"{os.cpu_count()} cores; {args.messages} messages from {args.devices} devices, {args.concurrency} in "
          f"flight ({args.driver}), validation on; workers' event loop {workers_loop()}; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="jonction-bench-workers-") as folder:
        for sink in args.sinks:
            for rep in range(args.repeat):
                for workers in args.workers:
                    tmp = Path(folder) / f"{sink}-{workers}-{rep}"
                    r = await one_run(args, tmp, sink, workers)
                    results.setdefault((sink, workers), []).append(r)
                    print(f"{sink:8} --workers {workers} run {rep + 1}: {r['acked']:.0f} acked at "
                          f"{r['ack_rate']:.0f} msg/s, committed at {r['rate']:.0f} msg/s; gateway CPU "
                          f"{r['gw_us']:.0f} µs/msg (all processes; parent {r['parent_us']:.0f}), "
                          f"{r['batch']:.0f} entities per batch, load generator {r['gen_us']:.0f} µs/msg"
                          + (f", remote store {r['store_us']:.0f} µs/msg" if sink == "remote" else "")
                          + f"; load {r['load_before']:.2f} → {r['load_after']:.2f}", flush=True)
                    if "paced_p99" in r:
                        print(f"{sink:8} --workers {workers} run {rep + 1}: paced {args.paced:.0f} msg/s for "
                              f"{args.paced_seconds:g} s (sent at {r['paced_rate']:.0f}/s): receipt → stored p50 "
                              f"{r['paced_p50']:.0f} ms, "
                              f"p99 {r['paced_p99']:.0f} ms, gateway CPU {r['paced_gw_us']:.0f} µs/msg; load "
                              f"{os.getloadavg()[0]:.2f}", flush=True)
    print("medians:")
    for (sink, workers), runs in results.items():
        print(f"  {sink:8} --workers {workers}: {median(r['rate'] for r in runs):.0f} msg/s committed, "
              f"gateway {median(r['gw_us'] for r in runs):.0f} µs/msg "
              f"(parent {median(r['parent_us'] for r in runs):.0f}), "
              f"{median(r['batch'] for r in runs):.0f} entities per batch, "
              f"load generator {median(r['gen_us'] for r in runs):.0f} µs/msg"
              + (f", remote store {median(r['store_us'] for r in runs):.0f} µs/msg" if sink == "remote" else ""))


def workers_loop() -> str:
    """The event loop the gateway's workers run on (uvloop when installed, see gateway.runtime.workers)."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


async def mqtt_main(args: argparse.Namespace) -> None:
    """Alternate ``--workers`` counts on the MQTT feed; print every run."""
    if shutil.which("mosquitto_pub") is None:
        print("--mqtt needs mosquitto_pub (Debian package mosquitto-clients)")
        return
    print(f"{os.cpu_count()} cores; chirpstack_v4 uplinks over MQTT QoS 1 → embedded store, burst {args.burst}, "
          f"paced {args.rate:.0f}/s for {args.seconds:g} s; workers' event loop {workers_loop()}; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory(prefix="jonction-bench-mqtt-") as folder:
        for rep in range(args.repeat):
            for workers in args.workers:
                r = await mqtt_run(args, Path(folder) / f"mqtt-{workers}-{rep}", workers)
                print(f"mqtt --workers {workers} run {rep + 1}: burst {r['burst_rate']:.0f} uplinks/s stored, "
                      f"gateway CPU {r['burst_gw_us']:.0f} µs/uplink (parent {r['burst_parent_us']:.0f}), "
                      f"{r['burst_batch']:.0f} entities per store batch; "
                      f"paced {args.rate:.0f}/s: receipt → stored p50 {r['p50']:.0f} ms, p99 {r['p99']:.0f} ms; "
                      f"lost {r['lost']:.0f}, duplicated {r['dup']:.0f} (duplicates dropped by dedup "
                      f"{r['dedup']:.0f}); load {r['load_before']:.2f} → {r['load_after']:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
