"""Benchmark of the attribute history: insertion throughput and temporal queries over HTTP.

Generates N entities x D days of 15-minute readings into a temporary store file (history
tables only, written the way the store writes them: ``history.record_many`` in batches, one
transaction per batch), then starts the store on that file and times temporal queries through
the HTTP API. It prints what it ran and the figures; it asserts nothing.

    .venv/bin/python bench/bench_temporal.py                      # 100 entities x 365 days
    .venv/bin/python bench/bench_temporal.py --entities 1000      # the full 35 M readings
    .venv/bin/python bench/bench_temporal.py --entities 20 --days 30 --keep /tmp/h
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from gateway.store import history
from gateway.store.app import StoreSettings, create_root_app

VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
START = datetime(2023, 1, 1, tzinfo=UTC)


def rows(entity: int, days: int, step: int) -> Iterator[history.HistoryRow]:
    """One entity's readings: a daily wave plus an entity offset, with observedAt and unitCode."""
    per_day = 24 * 60 // step
    eid = f"urn:ngsi-ld:Meter:{entity:05d}"
    types = [VOCAB + "Meter"]
    for i in range(days * per_day):
        moment = START + timedelta(minutes=step * i)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        value = round(20 + entity % 10 + 5 * math.sin(2 * math.pi * (i % per_day) / per_day), 3)
        yield ("", eid, types, VOCAB + "temperature", {
            "type": "Property", "value": value, "observedAt": stamp, "unitCode": "CEL",
            "createdAt": stamp, "modifiedAt": stamp,
        })


def generate(path: Path, entities: int, days: int, step: int, batch: int) -> tuple[int, float]:
    """Write the history; return (rows, seconds)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    history.ensure_schema(conn)
    total = 0
    elapsed = 0.0
    for entity in range(entities):
        # the readings are built first so that only the insertion is timed
        pending = list(rows(entity, days, step))
        began = time.perf_counter()
        for start in range(0, len(pending), batch):
            conn.execute("BEGIN IMMEDIATE")
            total += history.record_many(conn, pending[start : start + batch])
            conn.execute("COMMIT")
        elapsed += time.perf_counter() - began
    conn.close()
    return total, elapsed


async def store_upserts(data_dir: Path, updates: int, batch: int) -> float:
    """Entity updates per second through the store (current state + history in one transaction)."""
    from gateway.store.backends import open_storage

    storage = await open_storage(data_dir / "upsert.sqlite", durability="normal")
    core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
    try:
        # warm up: the first use builds the @context and imports the schema registry
        await storage.upsert("", [{"id": "urn:ngsi-ld:Meter:warm", "type": "Meter"}], context=core)
        began = time.perf_counter()
        done = 0
        tick = 0
        while done < updates:
            entities = []
            for k in range(batch):
                stamp = (START + timedelta(minutes=15 * tick)).strftime("%Y-%m-%dT%H:%M:%SZ")
                entities.append({
                    "id": f"urn:ngsi-ld:Meter:{k:05d}", "type": "Meter",
                    "temperature": {"type": "Property", "value": 20.0 + k % 7, "observedAt": stamp},
                })
            result = await storage.upsert("", entities, context=core)
            assert not result.errors, result.errors[:1]
            done += batch
            tick += 1
        return done / (time.perf_counter() - began)
    finally:
        await storage.close()


async def timed(session: aiohttp.ClientSession, url: str, params: dict[str, str], runs: int) -> tuple[float, int, int]:
    """(median seconds, status, response bytes) over ``runs`` requests."""
    times = []
    status = size = 0
    for _ in range(runs):
        began = time.perf_counter()
        async with session.get(url, params=params) as response:
            body = await response.read()
            status, size = response.status, len(body)
        times.append(time.perf_counter() - began)
    return statistics.median(times), status, size


async def queries(data_dir: Path, entities: int, days: int, runs: int) -> list[tuple[str, float, int, int]]:
    """Start the store on the generated file and time temporal queries."""
    settings = StoreSettings(data_dir=data_dir, durability="normal", max_limit=1000)
    runner = web.AppRunner(create_root_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}/ngsi-ld/v1/temporal/entities"
    one = f"{base}/urn:ngsi-ld:Meter:00000"
    end = (START + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    year = {"timerel": "between", "timeAt": "2023-01-01T00:00:00Z", "endTimeAt": end}
    day = {"timerel": "between", "timeAt": "2023-01-15T00:00:00Z", "endTimeAt": "2023-01-16T00:00:00Z"}
    page = str(min(entities, 1000))
    cases: list[tuple[str, str, dict[str, str]]] = [
        ("one entity, whole range, normalized (capped at 10000 instances)", one, year),
        ("one entity, whole range, temporalValues", one, {**year, "options": "temporalValues"}),
        ("one entity, one day, temporalValues", one, {**day, "options": "temporalValues"}),
        ("one entity, daily avg/min/max over the range", one,
         {**year, "options": "aggregatedValues", "aggrMethods": "avg,min,max", "aggrPeriodDuration": "P1D"}),
        ("one entity, monthly avg/max over the range", one,
         {**year, "options": "aggregatedValues", "aggrMethods": "avg,max", "aggrPeriodDuration": "P1M"}),
        (f"type query, lastN=1, {page} entities", base, {"type": "Meter", "lastN": "1", "limit": page}),
        (f"type query, one day, temporalValues, {page} entities", base,
         {**day, "type": "Meter", "options": "temporalValues", "limit": page}),
        (f"type query, whole-range avg (P0D), {page} entities", base,
         {**year, "type": "Meter", "options": "aggregatedValues", "aggrMethods": "avg,totalCount", "limit": page}),
    ]
    out = []
    try:
        async with aiohttp.ClientSession() as session:
            for label, url, params in cases:
                seconds, status, size = await timed(session, url, params, runs)
                out.append((label, seconds, status, size))
    finally:
        await runner.cleanup()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--step", type=int, default=15, help="minutes between readings")
    parser.add_argument("--batch", type=int, default=1000, help="history rows per transaction")
    parser.add_argument("--runs", type=int, default=3, help="repetitions per query (median reported)")
    parser.add_argument("--upserts", type=int, default=20_000, help="entity updates through the store")
    parser.add_argument("--keep", type=Path, help="write the store here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="jonction-bench-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "store.sqlite"
    try:
        per_entity = args.days * 24 * 60 // args.step
        print(f"history: {args.entities} entities x {args.days} days x every {args.step} min "
              f"= {args.entities * per_entity:,} readings, batches of {args.batch} rows, file {path}")
        total, seconds = generate(path, args.entities, args.days, args.step, args.batch)
        size = sum(p.stat().st_size for p in data_dir.glob("store.sqlite*"))
        print(f"insert (history.record_many): {total:,} rows in {seconds:.1f} s = {total / seconds:,.0f} rows/s; "
              f"file {size / 1e6:,.0f} MB ({size / max(total, 1):.0f} B/row)")
        rate = asyncio.run(store_upserts(data_dir, args.upserts, 100))
        print(f"store upsert with history, batches of 100 entities: {rate:,.0f} entity updates/s "
              f"({args.upserts:,} updates, synchronous=NORMAL)")
        for label, took, status, nbytes in asyncio.run(queries(data_dir, args.entities, args.days, args.runs)):
            print(f"query {label}: {took * 1000:,.1f} ms median of {args.runs} (HTTP {status}, {nbytes / 1e3:,.0f} kB)")
    finally:
        if args.keep is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
