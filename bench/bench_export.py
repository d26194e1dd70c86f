"""Benchmark of `jonction export` and `jonction import`: instances per second and peak memory.

Builds a SQLite store of N streetlight-like entities with D days of 15-minute readings of one
attribute (the history tables written the way the store writes them, ``history.record_many`` in
batches; the entities through the storage), then runs the real commands in child processes:
``jonction export --data`` into a directory (or an archive), and ``jonction import`` into a fresh
store. Each child's peak resident memory comes from ``wait4`` (its own, not the parent's). It
prints what it ran and the figures; it asserts nothing.

    .venv/bin/python bench/bench_export.py                              # 100 entities x 30 days (288 k)
    .venv/bin/python bench/bench_export.py --entities 1000 --days 365   # the full 35 M readings
    .venv/bin/python bench/bench_export.py --format tar.gz --keep /tmp/b
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.store import history
from gateway.store.backends import open_storage

SDM = "https://smartdatamodels.org/dataModel.Streetlighting/"
START = datetime(2025, 1, 1, tzinfo=UTC)


def entity(n: int) -> dict[str, object]:
    """One streetlight's current state."""
    return {
        "id": f"urn:ngsi-ld:Streetlight:bench:{n:05d}",
        "type": "Streetlight",
        "status": {"type": "Property", "value": "ok"},
        "illuminanceLevel": {"type": "Property", "value": 0.5, "observedAt": "2025-01-01T00:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5.7 + n / 1e5, 45.18]}},
    }


def rows(n: int, days: int, step: int) -> Iterator[history.HistoryRow]:
    """One entity's readings: illuminanceLevel every ``step`` minutes."""
    eid = f"urn:ngsi-ld:Streetlight:bench:{n:05d}"
    types = [SDM + "Streetlight"]
    for i in range(days * 24 * 60 // step):
        stamp = (START + timedelta(minutes=step * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        yield ("", eid, types, SDM + "illuminanceLevel", {
            "type": "Property", "value": round((i % 96) / 96, 3), "observedAt": stamp,
            "createdAt": stamp, "modifiedAt": stamp,
        })


async def build(data: Path, entities: int, days: int, step: int) -> int:
    """The store: entities through the storage, then their history straight into the tables."""
    storage = await open_storage(data / "store.sqlite", durability="normal")
    try:
        for start in range(0, entities, 500):
            await storage.upsert("", [entity(n) for n in range(start, min(entities, start + 500))])
    finally:
        await storage.close()
    conn = sqlite3.connect(data / "store.sqlite", isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("DELETE FROM history_instances")  # only the generated readings: known counts
    total = 0
    batch: list[history.HistoryRow] = []
    for n in range(entities):
        for row in rows(n, days, step):
            batch.append(row)
            if len(batch) >= 50_000:
                conn.execute("BEGIN IMMEDIATE")
                total += history.record_many(conn, batch)
                conn.execute("COMMIT")
                batch = []
    if batch:
        conn.execute("BEGIN IMMEDIATE")
        total += history.record_many(conn, batch)
        conn.execute("COMMIT")
    conn.close()
    return total


def run(*args: str | Path) -> tuple[float, float, str]:
    """Run ``jonction`` in a child; (seconds, its peak RSS in MiB, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started
    # communicate() reaped it: the children's peak covers it (children run one at a time, largest so far)
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        raise SystemExit(f"jonction {' '.join(map(str, args))} failed ({proc.returncode}):\n{out}\n{err}")
    return elapsed, peak, out.strip()


def main() -> None:
    """Build, export, import; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--step", type=int, default=15, help="minutes between readings (default 15)")
    parser.add_argument("--format", choices=("dir", "tar", "tar.gz"), default="dir")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-export-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        instances = asyncio.run(build(work / "data", args.entities, args.days, args.step))
        built = time.perf_counter() - t0
        size = (work / "data" / "store.sqlite").stat().st_size / 2**20
        print(f"store: {args.entities} entities x {args.days} days every {args.step} min = {instances:,} instances "
              f"({size:,.0f} MiB, built in {built:.1f} s); load average {os.getloadavg()[0]:.2f}")
        out = work / ("export" if args.format == "dir" else f"export.{args.format}")
        seconds, peak, _ = run("export", "--data", work / "data", "--out", out)
        exported = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) if out.is_dir() else out.stat().st_size
        print(f"export: {seconds:.1f} s, {instances / seconds:,.0f} instances/s, peak RSS {peak:,.0f} MiB, "
              f"{exported / 2**20:,.0f} MiB written ({args.format}); load average {os.getloadavg()[0]:.2f}")
        seconds, peak_import, _ = run("import", out, "--data", work / "fresh")
        print(f"import: {seconds:.1f} s, {instances / seconds:,.0f} instances/s (SHA-256 verification included), "
              f"peak RSS {peak_import:,.0f} MiB (children's maximum so far); load average {os.getloadavg()[0]:.2f}")
        manifest = json.loads((out / "manifest.json").read_text()) if out.is_dir() else None
        if manifest is not None:
            print(f"manifest: {manifest['totals']['history']:,} instances, time range {manifest['time_range']}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
