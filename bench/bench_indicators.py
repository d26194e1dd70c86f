"""Benchmark of `jonction indicators`: the shipped indicators over N entities x D days of readings.

Generates the history straight into a SQLite store file with SQL (the tables and row shapes the
store writes, ``gateway.store.history``; generating 35 M rows through the Python writer would take
longer than the measurement), a quarter each of street lights (cumulative energy meter), waste
containers (fill level filling over a week, then collected), air-quality stations (PM2.5) and
devices (rssi), one attribute each. Then runs the real command in a child process, baseline the
first half of the days and period the second, and prints its rate (history instances read per
second) and peak memory (the child's maximum resident set). It asserts nothing.

    .venv/bin/python bench/bench_indicators.py                               # 100 entities x 365 days
    .venv/bin/python bench/bench_indicators.py --entities 1000 --days 365    # 35 M instances
    .venv/bin/python bench/bench_indicators.py --entities 40 --days 60 --keep /tmp/ind
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.store import history, jsonld

START = datetime(2025, 1, 1, tzinfo=UTC)
KINDS = (
    # type, attribute, value of the n-th reading as an SQL expression of n
    ("Streetlight", "lifetimePowerConsumption", "n * 0.0125"),                 # 50 W, all the time
    ("WasteContainer", "fillingLevel", "(n % 672) / 672.0"),                   # full in a week, then emptied
    ("AirQualityObserved", "pm25", "10 + (n % 96) / 9.6"),                     # 10..20 µg/m³ each day
    ("Device", "rssi", "-90 - (n % 10)"),
)


def generate(path: Path, entities: int, days: int, step_minutes: int) -> int:
    """Write the synthetic history into a new store file; return the number of instances."""
    context = jsonld.ContextCache(lambda iri: None).get([jsonld.jonction_context_iri()])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    history.ensure_schema(conn)
    step = step_minutes * 60_000_000
    count = days * 24 * 60 // step_minutes
    start = history.to_micros(START)
    now = history.now_micros()
    conn.execute("DROP INDEX history_instances_by_time")  # built once at the end: much faster
    conn.execute("BEGIN")
    for e in range(entities):
        kind, attr, expr = KINDS[e % len(KINDS)]
        tenant = f"commune-{e // len(KINDS) % 4}"  # every commune has every kind
        eid = f"urn:ngsi-ld:{kind}:bench-{e:05d}"
        conn.execute("INSERT INTO history_entities (tenant, entity_id, types) VALUES (?, ?, ?)",
                     (tenant, eid, json.dumps([context.expand_term(kind)])))
        sid = conn.execute("INSERT INTO history_series (tenant, entity_id, attr, dataset_id) VALUES (?, ?, ?, '')",
                           (tenant, eid, context.expand_term(attr))).lastrowid
        conn.execute(
            "INSERT INTO history_instances (series_id, observed_at, created_at, modified_at, kind, num, value) "
            "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n < ?) "
            f"SELECT ?, ? + n * ?, ?, ?, 'Property', round({expr}, 4), printf('%.4f', {expr}) FROM i",
            (count - 1, sid, start, step, now, now),
        )
        if e % 50 == 49:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            print(f"  generated {e + 1}/{entities} entities", flush=True)
    conn.execute("COMMIT")
    history.ensure_schema(conn)  # the index
    conn.close()
    return entities * count


def main() -> int:
    """Generate, run the command, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--step-minutes", type=int, default=15)
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-indicators-"))
    (work / "data").mkdir(parents=True, exist_ok=True)
    store = work / "data" / "store.sqlite"
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
        if not store.exists():
            began = time.perf_counter()
            generated = generate(store, args.entities, args.days, args.step_minutes)
            print(f"generated {generated:,} instances ({args.entities} entities x {args.days} days at "
                  f"{args.step_minutes} min) in {time.perf_counter() - began:.1f} s, "
                  f"{store.stat().st_size / 1e9:.2f} GB")
        half = START + timedelta(days=args.days // 2)
        end = START + timedelta(days=args.days)
        command = [sys.executable, "-m", "gateway.cli", "indicators", "--data", str(work / "data"),
                   "--baseline", f"{START.isoformat()}/{half.isoformat()}",
                   "--period", f"{half.isoformat()}/{end.isoformat()}", "--out", str(work / "out"), "--lang", "en"]
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - began
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(done.stdout.strip())
        if done.returncode != 0:
            print(f"exit {done.returncode}: {done.stderr.strip()}")
            return 1
        read = int(done.stdout.split(" history instances read")[0].rsplit(" ", 1)[-1])
        print(f"indicators: {elapsed:.1f} s, {read:,} instances read, {read / elapsed:,.0f} instances/s, "
              f"peak memory {peak:.0f} MB (child's max RSS)")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
