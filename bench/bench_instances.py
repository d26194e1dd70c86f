"""Several ``jonction run`` instances on one MQTT ``$share`` feed, with duplicates injected.

Real processes: Mosquitto, one PostgreSQL 15 + PostGIS (a throw-away server from the Debian
binaries, ``tests/postgres.py``) holding the embedded store and the shared idempotency keys,
and N gateway processes with the chirpstack_v4 source in one ``shared_group``. Each uplink is
published twice (``--copies``), as two LoRaWAN gateways hearing it would make it reach the feed.

Printed per configuration: uplinks per second until every copy was durably accepted (intake)
and until every entity was stored (end to end), uplinks lost and stored twice (counted in the
store's history), gateway CPU per copy received (all instances) and PostgreSQL's CPU, and the
load average before and after (the machine is shared).

First, the claim alone (in this process, groups of 100 keys): milliseconds per group and
gateway CPU per key. Then the configurations: ``1-local`` (one instance, its own keys only:
the baseline), ``1-shared`` (one instance claiming keys in PostgreSQL: the claim's cost),
``2-shared`` (two instances, the feature), and with ``--unsafe`` ``2-local`` (two instances
without shared keys: what is stored twice without it).

Run: ``.venv/bin/python bench/bench_instances.py [--uplinks 10000] [--copies 2] [--runs 1] [--unsafe]``
(``--only claims`` runs the claim alone).
Needs the Debian packages ``mosquitto``, ``postgresql-15`` and ``postgresql-15-postgis-3``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402
from tests.postgres import PostgresServer, unavailable  # noqa: E402
from tests.runtime.test_shared_dedup_processes import (  # noqa: E402
    broker,
    gateway_config,
    history_rows,
    publish,
    ready,
    scrape,
    start,
    stop,
    subscribed,
    uplink,
)

DEVICES = 500
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) of a process, with its reaped children's if asked."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS


def postgres_cpu_s(server: PostgresServer) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, its reaped children and its live backends."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    total = cpu_s(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == postmaster:
                    total += (int(fields[11]) + int(fields[12])) / TICKS
            except (OSError, IndexError):
                continue
    return total


async def handled(ports: list[int]) -> tuple[float, float]:
    """(copies accepted or dropped as duplicates, entities waiting in outboxes) over the instances."""
    done = waiting = 0.0
    for port in ports:
        m = await scrape(port)
        done += m.get("jonction_messages_received_total", 0) + m.get("jonction_messages_duplicate_total", 0)
        waiting += m.get("jonction_outbox_entities", 0)
    return done, waiting


async def run(server: PostgresServer, label: str, instances: int, shared: bool, uplinks: int, copies: int) -> None:
    database = server.new_database()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mqtt = broker(folder / "broker")
        ports = [free_port() for _ in range(instances)]
        names = [chr(ord("a") + i) for i in range(instances)]
        procs = []
        try:
            for name, port in zip(names, ports, strict=True):
                config = gateway_config(folder, name, mqtt_port=mqtt.port, database=database, http_port=port,
                                        device_count=DEVICES, shared_dedup=shared)
                procs.append(start(config, folder / f"{name}.log"))
            for port in ports:
                await ready(port)
            await subscribed(mqtt, [f"jonction-{n}" for n in names])
            lines = [line for n in range(uplinks) for line in (uplink(n, DEVICES),) * copies]
            load_before = os.getloadavg()
            cpu_before = [cpu_s(p.pid) for p in procs]
            pg_before = postgres_cpu_s(server)
            started = time.perf_counter()
            await publish(mqtt.port, lines)
            accepted_at = None
            while True:
                done, waiting = await handled(ports)
                now = time.perf_counter()
                if accepted_at is None and done >= len(lines):
                    accepted_at = now
                if accepted_at is not None and waiting == 0:
                    stored_at = now
                    break
                if now - started > 900:
                    raise SystemExit(f"{label}: not settled after 900 s ({done:.0f} of {len(lines)} copies)")
                await asyncio.sleep(0.1)
            gateway_cpu = sum(cpu_s(p.pid) - b for p, b in zip(procs, cpu_before, strict=True))
            pg_cpu = postgres_cpu_s(server) - pg_before
            load_after = os.getloadavg()
            shares = [(await scrape(p)).get("jonction_messages_received_total", 0) for p in ports]
            rows, distinct = await history_rows(database)
        finally:
            stop(procs)
            mqtt.stop()
    print(f"{label:9} intake {uplinks / (accepted_at - started):7,.0f} uplinks/s "
          f"({len(lines) / (accepted_at - started):7,.0f} copies/s), end to end "
          f"{uplinks / (stored_at - started):7,.0f} uplinks/s; lost {uplinks - distinct}, stored twice "
          f"{rows - distinct}; gateway CPU {gateway_cpu / len(lines) * 1e6:4.0f} µs per copy "
          f"({gateway_cpu / uplinks * 1e6:4.0f} per uplink), PostgreSQL {pg_cpu / uplinks * 1e6:4.0f} µs per uplink; "
          f"written by instance {'/'.join(f'{s:.0f}' for s in shares)}; "
          f"load {load_before[0]:.1f} → {load_after[0]:.1f}")


async def claims_only(server: PostgresServer, groups: int, size: int) -> None:
    """The claim alone, in this process: groups of fresh keys, then the same groups again (all duplicates)."""
    from gateway.runtime.dedup import SeenKey
    from gateway.runtime.dedup_pg import PostgresClaims

    claims = PostgresClaims(server.new_database())
    await claims.open()
    try:
        for label in ("fresh keys", "known keys"):
            now = time.time()
            batches = [[SeenKey("chirpstack", f"up:{g}:{i}", now) for i in range(size)] for g in range(groups)]
            cpu, started = time.process_time(), time.perf_counter()
            won = 0
            for batch in batches:
                async with claims.claim(batch) as indexes:
                    won += len(indexes)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            print(f"claim alone, {label}: {groups} groups of {size}: {wall / groups * 1000:.2f} ms per group, "
                  f"{cpu / (groups * size) * 1e6:.1f} µs gateway CPU per key ({won} won); "
                  f"load {os.getloadavg()[0]:.1f}")
    finally:
        await claims.close()


async def main(server: PostgresServer, args: argparse.Namespace) -> None:
    await claims_only(server, 200, 100)
    configurations = [("1-local", 1, False), ("1-shared", 1, True), ("2-shared", 2, True)]
    if args.unsafe:
        configurations.append(("2-local", 2, False))
    if args.only:
        configurations = [c for c in configurations if c[0] in args.only.split(",")]
    print(f"{args.uplinks} uplinks from {DEVICES} devices, each published {args.copies} times, MQTT QoS 1 $share → "
          f"N gateways (validation on) → one PostgreSQL store; {os.cpu_count()} cores")
    for _ in range(args.runs):
        for label, instances, shared in configurations:
            await run(server, label, instances, shared, args.uplinks, args.copies)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--uplinks", type=int, default=10000, help="distinct uplinks (default 10000)")
    parser.add_argument("--copies", type=int, default=2, help="copies of each uplink published (default 2)")
    parser.add_argument("--runs", type=int, default=1, help="rounds over the configurations (alternated)")
    parser.add_argument("--only", default="", help="comma-separated configurations to run")
    parser.add_argument("--unsafe", action="store_true", help="also run two instances without shared keys")
    arguments = parser.parse_args()
    reason = unavailable()
    if reason is not None:
        raise SystemExit(f"bench_instances: {reason}")
    pg = PostgresServer()
    pg.start()  # before the event loop: it prepares its template database with asyncio.run
    try:
        asyncio.run(main(pg, arguments))
    finally:
        pg.stop()
