"""Several store processes writing one PostgreSQL database: batch upsert entities/s for 1..K writers.

Each writer is a process of its own with its own ``open_storage(url)`` (what ``jonction store
--workers K`` or K store processes behind a load balancer do), writing its share of N entities in
batches of 1,000 with attribute history on: a create phase, then an update phase (a new
``observedAt`` and value on every entity). The phases start together on every writer; printed: the
aggregate rate, each writer's Python CPU per entity, and the server's CPU per entity when it runs on
this machine. ``--tenants`` gives each writer a tenant of its own: a batch holds its tenant's lock
(writes of one tenant go in turn), so writers of different tenants (communes) are not serialized.
The database should be empty (a throw-away one: ``python -m tests.postgres``).

    python -m tests.postgres sh -c 'python bench/bench_store_writers.py --database "$JONCTION_STORE_DATABASE" \\
        --entities 30000 --writers 1 2'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from typing import Any

sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from bench_store import BATCH, _entity, _postmaster, _server_cpu  # noqa: E402

from gateway.store import open_storage  # noqa: E402


async def writer(url: str, index: int, count: int, offset: int, tenant: str) -> None:
    """One writer process: wait for each phase's go on stdin, write, report its figures on stdout."""
    rng = random.Random(index)
    entities = [_entity(offset + i, rng, f"W{index}Light") for i in range(count)]
    storage = await open_storage(url)
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    try:
        for phase in ("create", "update"):
            assert (await reader.readline()).strip() == phase.encode()
            if phase == "update":
                for e in entities:
                    e["illuminanceLevel"]["value"] = rng.randint(0, 100)
                    e["illuminanceLevel"]["observedAt"] = "2026-11-22T03:00:00Z"
            cpu, began = time.process_time(), time.perf_counter()
            for i in range(0, count, BATCH):
                result = await storage.upsert(tenant, entities[i: i + BATCH])
                assert not result.errors, result.errors[:3]
            print(json.dumps({"phase": phase, "seconds": time.perf_counter() - began,
                              "cpu": time.process_time() - cpu}), flush=True)
    finally:
        await storage.close()


async def run(url: str, entities: int, writers: int, offset: int, tenants: bool) -> dict[str, Any]:
    """Start ``writers`` processes sharing ``entities``; time each phase from the go to the last report."""
    share = entities // writers
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--database", url, "--writer", str(k), "--count", str(share),
        "--offset", str(offset + k * share), "--tenant", f"commune{k}" if tenants else "",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        for k in range(writers)]
    postmaster = await _postmaster(url)
    out: dict[str, Any] = {}
    try:
        for proc in procs:
            assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"ready"
        for phase in ("create", "update"):
            server, began = _server_cpu(postmaster), time.perf_counter()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(phase.encode() + b"\n")
            reports = []
            for proc in procs:
                assert proc.stdout is not None
                reports.append(json.loads(await proc.stdout.readline()))
            wall = time.perf_counter() - began
            out[phase] = {"rate": share * writers / wall,
                          "python_us": sum(r["cpu"] for r in reports) / (share * writers) * 1e6,
                          "server_us": (_server_cpu(postmaster) - server) / (share * writers) * 1e6
                          if postmaster else None}
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            await proc.wait()
    return out


async def durability(url: str) -> str:
    """The server's durability settings (``JONCTION_PG_DURABLE=1 python -m tests.postgres`` keeps the defaults)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return ", ".join([f"{name} {await conn.fetchval(f'SHOW {name}')}"
                          for name in ("fsync", "full_page_writes", "synchronous_commit")])
    finally:
        await conn.close()


async def measure(args: argparse.Namespace) -> None:
    """Each writer count in turn, on fresh ids (the database keeps what earlier rounds wrote)."""
    settings = await durability(args.database)
    print(f"{os.cpu_count()} cores; {args.entities} entities per round, batches of {BATCH}, history on; "
          f"{settings}; load average {os.getloadavg()[0]:.2f}", flush=True)
    offset = 0
    for writers in args.writers:
        r = await run(args.database, args.entities, writers, offset, args.tenants)
        offset += args.entities
        for phase, f in r.items():
            server = f" + server {f['server_us']:.0f}" if f["server_us"] is not None else ""
            mode = " (one tenant each)" if args.tenants else ""
            print(f"{writers} writer(s){mode}, {phase}: {f['rate']:,.0f} entities/s; CPU per entity: python "
                  f"{f['python_us']:.0f}{server} µs; load {os.getloadavg()[0]:.2f}", flush=True)


def main() -> None:
    """Parse the options: a writer process, or the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True, help="postgresql://… (an empty database)")
    parser.add_argument("--entities", type=int, default=30000)
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tenants", action="store_true",
                        help="each writer writes a tenant of its own (a commune of a syndicat), "
                             "not all of them the default one")
    parser.add_argument("--writer", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tenant", default="", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer is not None:
        asyncio.run(writer(args.database, args.writer, args.count, args.offset, args.tenant))
    else:
        asyncio.run(measure(args))


if __name__ == "__main__":
    main()
