"""Benchmark: how long the console's pages take to show in Chromium with 50 sources and 10,000 entities.

Starts a gateway in-process (embedded store on SQLite in a temporary folder, 50 in-process push
sources), writes 10,000 located WasteContainers through the NGSI-LD batch API, then opens each page
in Debian's Chromium (Playwright) and prints, per page, the time from navigation to the page's
content drawn (best and median of the runs), with the load average.

    .venv/bin/python bench/bench_console.py [--entities 10000] [--sources 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.console.browser import browser_page, need_browser
from tests.runtime.support import FakeAdapter, config, running

PAGES = {
    "overview": ("#/overview", "tr[data-source]"),
    "entities (one type, 10,000)": ("#/entities", "#entity-list tbody tr"),
    # every marker clustered (the cluster plugin works in slices; data-ready says it is done)
    "map (clustered)": ("#/map", "#map[data-ready] .marker-cluster, #map[data-ready] .entity-marker"),
}


async def main(n_entities: int, n_sources: int, repeat: int) -> None:
    """Run the benchmark and print its figures."""
    need_browser()
    rng = random.Random(13)
    with tempfile.TemporaryDirectory() as tmp:
        sources = [{"name": f"source-{i:02d}", "adapter": "fake", "tenant": ""} for i in range(n_sources)]
        cfg = config(Path(tmp), sources=sources, embedded_store={"allow_unfiltered_queries": True})
        async with running(cfg) as (base, _app), aiohttp.ClientSession() as http:
            t0 = time.perf_counter()
            for start in range(0, n_entities, 1000):
                docs = [{"id": f"urn:ngsi-ld:WasteContainer:b{i}", "type": "WasteContainer",
                         "fillingLevel": {"type": "Property", "value": round(rng.random(), 2)},
                         "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [
                             round(3.80 + rng.random() * 0.15, 5), round(43.56 + rng.random() * 0.1, 5)]}}}
                        for i in range(start, min(start + 1000, n_entities))]
                async with http.post(base + "/ngsi-ld/v1/entityOperations/upsert", json=docs) as resp:
                    assert resp.status in (201, 204), await resp.text()
            print(f"seeded {n_entities} entities in {time.perf_counter() - t0:.1f} s; {n_sources} sources")
            for i in range(n_sources):
                await FakeAdapter.instances[f"source-{i:02d}"].send({"device": f"d{i}", "fill": 10, "id": f"m{i}"})
            async with browser_page(base, Path(tmp)) as w:
                for name, (hash_, selector) in PAGES.items():
                    times = []
                    for _ in range(repeat):
                        await w.page.goto("about:blank")
                        t = time.perf_counter()
                        await w.page.goto(f"{base}/{hash_}")
                        await w.page.locator(selector).first.wait_for(state="attached")
                        times.append(time.perf_counter() - t)
                    count = await w.page.locator(selector).count()
                    best, median = min(times) * 1000, statistics.median(times) * 1000
                    print(f"{name:30s} best {best:7.0f} ms  median {median:7.0f} ms  ({count} rows/markers drawn)")
                assert w.errors == [], w.errors
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--sources", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.entities, args.sources, args.repeat))
