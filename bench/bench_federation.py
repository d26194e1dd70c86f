"""A query across three federated ``jonction store`` processes (a syndicat and two communes).

Three real store processes on loopback, each with its own SQLite file and N AirQualityObserved
entities; the syndicat registers the two communes (inclusive, tagged by commune). Printed, with
the load average before and after (the machine is shared):

* load: seconds to create the 3 x N entities (batch upserts of 1,000);
* per query shape, p50 and p99 latency over ``--queries`` runs: the syndicat's own entities
  (``local=true``, the baseline), the federated query (its entities plus both communes', merged
  and tagged), the same with ``count=true``, and a federated query with a ``q`` filter.

Run: ``.venv/bin/python bench/bench_federation.py [--entities 2000] [--queries 200] [--limit 100]``
(``--entities 100000`` for the issue's figure: about 3 x 100,000 entities).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402

BATCH = 1000
TYPE = "AirQualityObserved"


def entity(commune: str, n: int) -> dict[str, Any]:
    """One reading of a commune."""
    return {
        "id": f"urn:ngsi-ld:{TYPE}:{commune}-{n:06d}",
        "type": TYPE,
        "no2": {"type": "Property", "value": float(n % 80)},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.1 + n % 100 / 1000, 45.9]}},
    }


async def start_store(data: Path, port: int) -> asyncio.subprocess.Process:
    """A ``jonction store`` process on loopback, ready to answer."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "store", "--host", "127.0.0.1", "--port", str(port), "--data", str(data),
        "--durability", "normal", "--federation-timeout", "30", cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"http://127.0.0.1:{port}/ngsi-ld/v1/types") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"store on port {port} did not start")


async def load(session: aiohttp.ClientSession, base: str, commune: str, n: int) -> None:
    """Create n entities in batches."""
    for start in range(0, n, BATCH):
        batch = [entity(commune, i) for i in range(start, min(n, start + BATCH))]
        async with session.post(f"{base}/entityOperations/upsert", json=batch) as r:
            assert r.status in (201, 204), await r.text()


async def timed(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], runs: int
) -> tuple[float, float, int]:
    """p50 and p99 in milliseconds, and the entities of the last answer."""
    samples = []
    size = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        async with session.get(url, params=params) as r:
            body = await r.json()
            assert r.status == 200 and "NGSILD-Warning" not in r.headers, (r.status, r.headers.get("NGSILD-Warning"))
        samples.append((time.perf_counter() - t0) * 1000)
        size = len(body)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return statistics.median(samples), p99, size


async def main(n: int, queries: int, limit: int) -> None:
    """Start the three stores, load them, register, and time the queries."""
    print(f"load average before: {os.getloadavg()[0]:.2f}; {n} entities per store, {queries} queries, limit {limit}")
    ports = [free_port() for _ in range(3)]
    bases = [f"http://127.0.0.1:{p}/ngsi-ld/v1" for p in ports]
    with tempfile.TemporaryDirectory() as tmp:
        procs = [await start_store(Path(tmp) / name, port) for name, port in zip(("syndicat", "annecy", "seynod"),
                                                                                  ports, strict=True)]
        try:
            async with aiohttp.ClientSession() as session:
                t0 = time.perf_counter()
                await asyncio.gather(*(load(session, b, c, n) for b, c in zip(bases, ("syndicat", "annecy", "seynod"),
                                                                            strict=True)))
                print(f"load: {3 * n} entities in {time.perf_counter() - t0:.1f} s")
                for name, port in (("annecy", ports[1]), ("seynod", ports[2])):
                    reg = {"id": f"urn:ngsi-ld:ContextSourceRegistration:{name}", "type": "ContextSourceRegistration",
                           "information": [{"entities": [{"type": TYPE}]}], "endpoint": f"http://127.0.0.1:{port}",
                           "contextSourceInfo": [{"key": "jonction:commune", "value": name}]}
                    async with session.post(f"{bases[0]}/csourceRegistrations", json=reg) as r:
                        assert r.status == 201, await r.text()
                url = f"{bases[0]}/entities"
                shapes = {
                    "local only (local=true)": {"type": TYPE, "limit": str(limit), "local": "true"},
                    "federated, 3 stores": {"type": TYPE, "limit": str(limit)},
                    "federated, count=true": {"type": TYPE, "limit": str(limit), "count": "true"},
                    "federated, q=no2>70": {"type": TYPE, "limit": str(limit), "q": "no2>70"},
                }
                for label, params in shapes.items():
                    await timed(session, url, params, 3)  # warm-up
                    p50, p99, size = await timed(session, url, params, queries)
                    print(f"{label:<28} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   ({size} entities per answer)")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await proc.wait()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=2000, help="entities per store (100000 for the issue's figure)")
    parser.add_argument("--queries", type=int, default=200, help="queries per shape")
    parser.add_argument("--limit", type=int, default=100, help="page size asked of each store")
    args = parser.parse_args()
    asyncio.run(main(args.entities, args.queries, args.limit))
