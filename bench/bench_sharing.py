"""Benchmark of sharing policies in the store's read path: the same query as the owner and as filtered readers.

Usage: ``python bench/bench_sharing.py [N]`` (default 20000 entities, SQLite in a temporary folder).
Half the entities are of a shared type (AirQualityObserved, attributes filtered, location snapped),
half of a type that is not shared. Prints p50/p99 of a page of 100 (``count=true``, without and with
``q``) for the owner, a principal (attributes filtered) and the public (filtered and coarsened), and
the load average.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.store import sharing
from gateway.store.app import StoreSettings, create_root_app

QUERIES = 100
OWNER = "bench-owner-token-0123456789"
SYNDICAT = "bench-syndicat-token-0123456789"
POLICY = f"""
version: 1
principals:
  syndicat: {{token: {SYNDICAT}}}
tenants:
  commune:
    share:
      - with: [syndicat]
        types: [AirQualityObserved]
        exclude_attributes: [note]
      - with: [public]
        types: [AirQualityObserved]
        attributes: [pm25, location]
        coarsen: {{location_grid_m: 500}}
"""


def entity(n: int) -> dict[str, object]:
    kind = "AirQualityObserved" if n % 2 == 0 else "Open311ServiceRequest"
    return {"id": f"urn:ngsi-ld:{kind}:{n:07d}", "type": kind,
            "pm25": {"type": "Property", "value": n % 50}, "note": {"type": "Property", "value": "x"},
            "email": {"type": "Property", "value": "a@example.org"},
            "location": {"type": "GeoProperty",
                         "value": {"type": "Point", "coordinates": [2.3 + n % 100 / 1000, 48.8 + n % 97 / 1000]}}}


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sharing.yaml"
        path.write_text(POLICY, encoding="utf-8")
        settings = StoreSettings(data_dir=Path(tmp) / "data", tokens=frozenset({OWNER}), sharing=sharing.load(path),
                                 allow_unfiltered_queries=True)
        runner = web.AppRunner(create_root_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
        tenant = {"NGSILD-Tenant": "commune"}
        async with aiohttp.ClientSession() as session:
            for start in range(0, n, 1000):
                batch = [entity(i) for i in range(start, min(n, start + 1000))]
                async with session.post(f"{base}/entityOperations/upsert", json=batch,
                                        headers={**tenant, "Authorization": f"Bearer {OWNER}"}) as reply:
                    assert reply.status in (201, 204), await reply.text()
            cases = [(who, token, q) for q in (None, "pm25>10")
                     for who, token in (("owner", OWNER), ("syndicat", SYNDICAT), ("public", None))]
            for who, token, q in cases:
                headers = dict(tenant)
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                timings = []
                for i in range(QUERIES):
                    params = {"type": "AirQualityObserved", "limit": "100", "offset": str(i * 100 % (n // 2)),
                              "count": "true"}
                    if q is not None:
                        params["q"] = q
                    began = time.perf_counter()
                    async with session.get(f"{base}/entities", params=params, headers=headers) as reply:
                        await reply.read()
                        assert reply.status == 200
                    timings.append((time.perf_counter() - began) * 1000)
                timings.sort()
                print(f"{who:9s} page of 100, count=true, q={q or '-':8s}: p50 {statistics.median(timings):6.1f} ms"
                      f"  p99 {timings[int(len(timings) * 0.99) - 1]:6.1f} ms")
        await runner.cleanup()
    print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
