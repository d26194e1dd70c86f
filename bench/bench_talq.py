"""TALQ log reports into the embedded store: attribute values per second, as a TALQ gateway posts them.

Runs ``jonction run`` in a subprocess (pinned to CPU 0 when there are two cores) with one ``talq``
source (jonction as the TALQ CMS, embedded store), registers a lighting network of ``--lamps``
luminaire controllers and a cabinet (``POST /devices``), then posts ``--reports`` log reports
(``POST /log-reports``, each with every lamp's 7 values and the cabinet's 8: 7 x lamps + 8
attribute values, one entity per device) from this process (pinned to the other core),
``--concurrency`` in flight, and prints:

- log reports and attribute values per second acknowledged (201 is sent once the report is
  durably accepted) and committed to the embedded store (entities published), wall clock;
- the gateway's CPU µs per attribute value (user + system, from /proc);
- p50 / p99 of the HTTP round trip of a report;
- entities published against entities expected (nothing lost, nothing twice);
- then ``--commands`` commands (``send_command``: a dimming level to one lamp, an override command
  to the simulated gateway on loopback, one at a time): p50 / p99 latency until the gateway's 201.

    .venv/bin/python bench/bench_talq.py [--lamps 100] [--reports 300] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_pipeline import BIN, PIN, ROOT, free_port

from adapters.talq import TalqAdapter
from adapters.talq.simulator import create

HEADERS = {"talq-api-version": "2.7.1", "Content-Type": "application/json"}


class Gateway:
    """A ``jonction run`` subprocess with one talq source and the embedded store."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.cms = free_port(), free_port()
        doc = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "data_dir": str(tmp / "gateway"),
            "log_level": "WARNING",
            "archive": {"max_bytes": "256MB"},
            "publisher": {"linger": 0.01, "batch_size": 500},
            "sources": [{"name": "talq", "adapter": "talq", "config": {
                "http": {"listen": {"host": "127.0.0.1", "port": self.cms, "path": "/talq"},
                         "max_body_bytes": 16777216}}}],
        }
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = tmp / "gateway.yaml"
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
        self.log = tmp / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.cms}/talq"

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
                async with http.get(f"{self.url}/data-packages", headers=HEADERS,
                                    params={"clientAddress": "bench"}) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"gateway did not start; see {self.log}")

    async def published(self, http: aiohttp.ClientSession) -> int:
        async with http.get(f"http://127.0.0.1:{self.port}/metrics") as resp:
            text = await resp.text()
        match = re.search(r'jonction_entities_published_total\{sink="embedded"\} (\S+)', text)
        return int(float(match.group(1))) if match else 0

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def main(args: argparse.Namespace) -> None:
    """Register, post the reports, wait for the store, print the figures."""
    sim = create({"lamps": args.lamps, "name": "bench-gateway"})
    for i, lamp in enumerate(sim.lamps):
        lamp.override = 20 + i % 80  # lit, so that energy counters move
    start = time.time() - args.reports
    bodies = [json.dumps(sim.log_report(start + i)).encode() for i in range(args.reports)]
    values = sum(len(json.loads(b)["entries"]) for b in bodies[:1]) * len(bodies)
    devices = args.lamps + 1
    with tempfile.TemporaryDirectory() as tmp_dir:
        gw = Gateway(Path(tmp_dir))
        gw.start()
        try:
            async with aiohttp.ClientSession() as http:
                await gw.ready(http)
                params = {"clientAddress": sim.address}
                async with http.post(f"{gw.url}/devices", json=sim.devices(), headers=HEADERS,
                                     params={**params, "talqRequestId": str(uuid.uuid4())}) as resp:
                    assert resp.status == 201, await resp.text()
                while await gw.published(http) < devices:  # noqa: ASYNC110  # polling another process
                    await asyncio.sleep(0.05)
                before = await gw.published(http)
                cpu0 = gw.cpu_seconds()
                trips: list[float] = []
                queue = list(enumerate(bodies))
                began = time.perf_counter()

                async def worker() -> None:
                    while queue:
                        _, body = queue.pop(0)
                        t0 = time.perf_counter()
                        async with http.post(f"{gw.url}/log-reports", data=body, headers=HEADERS,
                                             params={**params, "talqRequestId": str(uuid.uuid4())}) as resp:
                            await resp.read()
                            assert resp.status == 201, resp.status
                        trips.append(time.perf_counter() - t0)

                await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                acked = time.perf_counter() - began
                expected = before + devices * args.reports
                deadline = time.monotonic() + 600
                while await gw.published(http) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                done = time.perf_counter() - began
                await asyncio.sleep(0.5)
                published = await gw.published(http) - before
                cpu = gw.cpu_seconds() - cpu0
        finally:
            gw.stop()
    trips.sort()
    p50, p99 = trips[len(trips) // 2], trips[min(len(trips) - 1, int(len(trips) * 0.99))]
    print(f"talq: {args.reports} log reports x {values // args.reports} attribute values ({args.lamps} lamps + "
          f"a cabinet), {args.concurrency} in flight")
    print(f"  acknowledged: {args.reports / acked:.1f} reports/s = {values / acked:,.0f} values/s")
    print(f"  committed to the embedded store: {args.reports / done:.1f} reports/s = {values / done:,.0f} values/s "
          f"({published} entities published of {devices * args.reports} expected)")
    print(f"  gateway CPU: {cpu / values * 1e6:.1f} µs per attribute value; report round trip p50 {p50 * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms; pinned: {PIN}; load average {os.getloadavg()[0]:.1f}")


async def commands(count: int) -> None:
    """Latency of ``send_command`` to the simulated gateway, one command at a time."""
    port = free_port()
    sim = create({"port": port, "lamps": 50, "cms_url": f"http://127.0.0.1:{free_port()}/talq", "interval": 3600})
    await sim.start()
    adapter = TalqAdapter({"gateway": {"url": f"http://127.0.0.1:{port}/talq"}})
    latencies: list[float] = []
    try:
        for i in range(count):
            lamp = sim.lamps[i % len(sim.lamps)]
            t0 = time.perf_counter()
            result = await adapter.send_command({"id": f"c-{i}", "tenant": "", "attribute": "dimmingLevel",
                                                 "entity_id": f"urn:ngsi-ld:Streetlight:{lamp.address}",
                                                 "entity_type": "Streetlight", "value": i % 101,
                                                 "issued_at": "2026-12-03T12:00:00Z"})
            latencies.append(time.perf_counter() - t0)
            assert result["status"] == "acknowledged", result
    finally:
        await adapter.stop()
        await sim.stop()
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"talq commands: {count} dimming commands to the simulated gateway, one at a time: "
          f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms (in one process, loopback); "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lamps", type=int, default=100)
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--commands", type=int, default=1000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments))
    asyncio.run(commands(arguments.commands))
