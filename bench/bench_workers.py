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
        [--repeat 2] [--workers 1 2] [--sinks embedded remote]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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
from bench_pipeline import BIN, Gateway, free_port, send, spawn, wait_published


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
        acked = await send(gw, 500, args.messages, args.devices, concurrency=args.concurrency)
        acked_at = time.perf_counter()
        gen = time.process_time() - cpu_gen
        done = await wait_published(gw, 500 + args.messages, sink)
        n = args.messages
        return {"acked": acked, "ack_rate": acked / (acked_at - began), "rate": n / (done - began),
                "gw_us": (gw.cpu_seconds() - cpu_gw) / n * 1e6, "gen_us": gen / n * 1e6,
                "parent_us": (gw.parent_cpu_seconds() - cpu_parent) / n * 1e6,
                "batch": n / max(1.0, await gw.batches(sink) - batches),
                "store_us": (cpu_seconds(store.pid) - cpu_store) / n * 1e6 if store is not None else 0.0,
                "load_before": load_before, "load_after": os.getloadavg()[0]}
    finally:
        gw.stop()
        if store is not None:
            store.send_signal(signal.SIGTERM)
            store.wait(timeout=30)


async def main() -> None:
    """Parse the options, alternate the runs, print every run and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sinks", nargs="+", default=["embedded", "remote"], choices=["embedded", "remote"])
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.messages} messages from {args.devices} devices, {args.concurrency} in "
          f"flight, validation on; load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
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
    print("medians:")
    for (sink, workers), runs in results.items():
        print(f"  {sink:8} --workers {workers}: {median(r['rate'] for r in runs):.0f} msg/s committed, "
              f"gateway {median(r['gw_us'] for r in runs):.0f} µs/msg "
              f"(parent {median(r['parent_us'] for r in runs):.0f}), "
              f"{median(r['batch'] for r in runs):.0f} entities per batch, "
              f"load generator {median(r['gen_us'] for r in runs):.0f} µs/msg"
              + (f", remote store {median(r['store_us'] for r in runs):.0f} µs/msg" if sink == "remote" else ""))


if __name__ == "__main__":
    asyncio.run(main())
