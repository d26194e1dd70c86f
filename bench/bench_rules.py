"""Rules on the publish path: what evaluating rules adds to each entity the embedded sink writes.

A temporary gateway database and embedded SQLite store; 10 rules (a threshold, a threshold held
30 minutes, a 24-h mean) over WasteContainer and AirQualityObserved readings; batches of 500
entities go through ``EmbeddedSink.upsert`` with and without the rules engine observing them,
alternating runs so that both see the same load. Readings stay under the thresholds (the steady
state: state rows and samples written, no alert), then a run where 1 reading in 100 opens an Alert.

    python bench/bench_rules.py [--entities 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from gateway.model import epoch_time
from gateway.rules.config import parse
from gateway.rules.engine import RulesEngine
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.sinks import EmbeddedSink
from gateway.store.backends import create_storage

BATCH = 500


def rules_doc() -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for i in range(4):
        rules.append({"id": f"full-{i}", "types": ["WasteContainer"], "when": f"fillingLevel>={0.9 + i / 100}",
                      "actions": []})
        rules.append({"id": f"held-{i}", "types": ["WasteContainer"], "when": "fillingLevel>=0.95", "for": "30m",
                      "actions": []})
    for i in range(2):
        rules.append({"id": f"pm25-{i}", "types": ["AirQualityObserved"], "actions": [],
                      "aggregate": {"attribute": "pm25", "function": "mean", "window": "24h", "above": 15 + i}})
    return {"tick": 3600, "rules": rules}


def readings(n: int, start: float, alert_every: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        at = epoch_time(start + i)
        if i % 2:
            out.append({"id": f"urn:ngsi-ld:AirQualityObserved:s{i % 200}", "type": "AirQualityObserved",
                        "pm25": {"type": "Property", "value": 8.0, "observedAt": at}})
        else:
            fill = 0.99 if alert_every and i % alert_every == 0 else 0.4
            out.append({"id": f"urn:ngsi-ld:WasteContainer:b{i % 2000}", "type": "WasteContainer",
                        "fillingLevel": {"type": "Property", "value": fill, "observedAt": at}})
    return out


async def run(n: int, *, with_rules: bool, alert_every: int, folder: Path, http: aiohttp.ClientSession) -> float:
    storage = create_storage(folder / "store.sqlite")
    await storage.start()
    db = Database(folder / "gateway.sqlite")
    sink = EmbeddedSink("embedded", storage)
    if with_rules:
        engine = RulesEngine(parse(rules_doc(), base=folder), db, storage, DeadLetters(db), http)
        sink.observers.append(engine.observe)
    batch = readings(n, time.time() - n - 10, alert_every)
    started = time.perf_counter()
    for i in range(0, n, BATCH):
        await sink.upsert("", batch[i:i + BATCH], "bench")
    elapsed = time.perf_counter() - started
    await storage.close()
    db.close()
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    figures: dict[str, list[float]] = {"no rules": [], "10 rules, no alert": [], "10 rules, 1% alerts": []}
    async with aiohttp.ClientSession() as http:
        for _ in range(args.rounds):
            for label, with_rules, every in (("no rules", False, 0), ("10 rules, no alert", True, 0),
                                             ("10 rules, 1% alerts", True, 100)):
                with tempfile.TemporaryDirectory() as tmp:
                    rate = await run(args.entities, with_rules=with_rules, alert_every=every, folder=Path(tmp),
                                     http=http)
                    figures[label].append(rate)
    for label, rates in figures.items():
        print(f"{label:>22}: {max(rates):8.0f} entities/s (best of {args.rounds}; "
              f"runs {', '.join(f'{r:.0f}' for r in rates)})")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
