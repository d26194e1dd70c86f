"""Benchmark of the attribute history on PostgreSQL: insertion, and aggregations computed in SQL.

Generates N entities x D days of 15-minute readings into the ``history`` table of an EMPTY
PostgreSQL database (month partitions, written the way the store writes them: one transaction
per batch), then times ``aggregate`` (``date_bin`` buckets in SQL) for one entity by day over
the range and for every entity over the whole range. Prints figures only.

    .venv/bin/python bench/bench_pg_history.py --database postgresql://… [--entities 100] [--days 365]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.store.postgres import PostgresStorage
from gateway.store.postgres.history import Recorder, aggregate

VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"
START = datetime(2023, 1, 1, tzinfo=UTC)
STEP = 15


async def main(url: str, entities: int, days: int, batch: int) -> None:
    storage = PostgresStorage(url)
    await storage.start()
    pool = storage._db()
    recorder = Recorder()
    per_day = 24 * 60 // STEP
    total = 0
    print(f"history benchmark on PostgreSQL: {entities} entities x {days} days of {STEP}-minute readings")
    start = time.perf_counter()
    for e in range(entities):
        eid = f"urn:ngsi-ld:Meter:{e:05d}"
        pending = []
        for i in range(days * per_day):
            stamp = (START + timedelta(minutes=STEP * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            value = round(20 + e % 10 + 5 * math.sin(2 * math.pi * (i % per_day) / per_day), 3)
            pending.append(("", eid, [VOCAB + "Meter"], VOCAB + "temperature", {
                "type": "Property", "value": value, "observedAt": stamp, "unitCode": "CEL", "modifiedAt": stamp,
            }))
            if len(pending) >= batch:
                async with pool.acquire() as conn, conn.transaction():
                    count, months = await recorder.record(conn, "", pending, stamp)
                recorder.committed(months)
                total += count
                pending = []
        if pending:
            async with pool.acquire() as conn, conn.transaction():
                count, months = await recorder.record(conn, "", pending, pending[-1][4]["modifiedAt"])
            recorder.committed(months)
            total += count
    elapsed = time.perf_counter() - start
    print(f"insertion: {total} rows in {elapsed:.1f} s = {total / elapsed:,.0f} rows/s")
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE history")
        end = START + timedelta(days=days)
        attr = VOCAB + "temperature"
        t0 = time.perf_counter()
        buckets = await aggregate(conn, "", ["urn:ngsi-ld:Meter:00000"], attr, START, end, timedelta(days=1))
        print(f"one entity, daily avg/min/max over the range: {len(buckets)} buckets in "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms")
        ids = [f"urn:ngsi-ld:Meter:{e:05d}" for e in range(entities)]
        t0 = time.perf_counter()
        buckets = await aggregate(conn, "", ids, attr, START, end, timedelta(days=days))  # avg, min, max, count
        print(f"every entity, whole-range aggregation: {len(buckets)} buckets over {total} rows in "
              f"{time.perf_counter() - t0:.2f} s")
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"database size: {size}")
    await storage.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="postgresql://… (an empty database with PostGIS)")
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    asyncio.run(main(args.database, args.entities, args.days, args.batch))
