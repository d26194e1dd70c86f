"""Benchmark of the embedded NGSI-LD store: upsert throughput, query latency, memory.

Usage: ``python bench/bench_store.py [N | --entities N] [--database URL] [--reuse] [--cluster-geo] [--explain]
[--near-only] [--stages] [--statements] [--shape streetlight|lorawan]``
(or ``BENCH_STORE_N=N``; default 100000 entities; ``--database postgresql://…`` measures the PostgreSQL
backend, whose database should be empty, default: SQLite in a temporary folder; ``--reuse`` with
``--database`` skips the writes and measures the queries over the N entities an earlier run left there,
so that versions of the query code compare on the same data; ``--cluster-geo`` with a PostgreSQL
database runs, before the queries, ``CLUSTER geo`` on its GiST index, which puts the geometry boxes of one
area on neighbouring pages (a manual step that migration 11's index-only prefilter made unnecessary);
``--explain`` with a PostgreSQL database prints, before the queries, what EXPLAIN (ANALYZE, BUFFERS) says
of the near query's first round trip at 20 places: how ``geo`` is read, the blocks, the heap fetches;
``--near-only`` stops after the near queries, which ``--reuse`` runs of query versions compare);
``BENCH_STORE_DURABILITY=normal`` measures the Python upserts with ``synchronous=NORMAL`` (default full).
Prints figures only (targets: upsert >= 20,000 entities/s, query p50 <= 20 ms, RSS <= 300 MB).
Wall-clock rates depend on what else the machine runs; "entities per CPU-second" does not.
Every write also appends each attribute instance to the attribute history (same transaction).
``--stages`` prints instead the Python CPU per entity of each stage of a batch upsert (expansion,
mutation, read of the stored document, row preparation, history rows), best of 5 over 10,000
entities: the figures behind the totals, without the database or the noise of a shared machine.
``--shape lorawan`` writes, instead of streetlights, what the runtime writes for a LoRaWAN uplink (the
chirpstack_v4 adapter's ``WasteContainer`` and ``Device``: 4 and 8 attributes, sub-attributes, observedAt;
N counts entities, half of each type); its updates change the readings and their times, as uplinks do.
``--statements`` (PostgreSQL) adds, per upsert phase, the server time per entity of each statement, from
``pg_stat_statements`` (the server must preload it: ``shared_preload_libraries = 'pg_stat_statements'``).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.store import open_storage
from gateway.store.app import StoreSettings, create_root_app
from gateway.store.backends import describe

BATCH = 1000
QUERIES = 200
LINK = '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"'


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _load() -> str:
    # the machine may be shared: figures mean little without what else ran
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _proc_times(pid: int) -> tuple[int, int, float]:
    """(parent pid, own CPU ticks, reaped children's CPU ticks) of a local process, from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


async def _postmaster(url: str) -> int | None:
    """The pid of the PostgreSQL server at ``url`` when it runs on this machine (else None)."""
    import asyncpg  # only for a PostgreSQL run

    conn = await asyncpg.connect(url)
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        try:
            return _proc_times(int(backend))[0]  # read while the backend lives
        except OSError:
            return None  # a server on another machine (or another pid namespace)
    finally:
        await conn.close()


async def _backends(url: str) -> list[int]:
    """The pids of the store's own connections (application_name "jonction store") on a local server."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = 'jonction store'")
        return [int(r[0]) for r in rows]
    finally:
        await conn.close()


def _cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds each of some local processes used so far (those that exited are left out)."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            out[pid] = _proc_times(pid)[1] / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return out


async def _statements(url: str, reset: bool) -> list[tuple[float, int, str]] | None:
    """(total ms, calls, statement) of the heaviest statements since the last reset (None: not available)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            if reset:
                await conn.execute("SELECT pg_stat_statements_reset()")
                return []
            rows = await conn.fetch(
                "SELECT total_exec_time, calls, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 8"
            )
        except asyncpg.PostgresError as exc:
            print(f"  (per-statement times not available: {exc})")
            return None
        return [(float(r[0]), int(r[1]), str(r[2])) for r in rows]
    finally:
        await conn.close()


def _server_cpu(postmaster: int | None) -> float:
    """CPU seconds the server's processes used so far (live children plus reaped ones)."""
    if postmaster is None:
        return 0.0
    total = sum(_proc_times(postmaster)[1:])
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent, ticks, _ = _proc_times(int(entry))
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile
            if parent == postmaster:
                total += ticks
    return total / os.sysconf("SC_CLK_TCK")


def _entity(n: int, rng: random.Random, prefix: str = "Streetlight") -> dict[str, Any]:
    # ~100,000 lights over a 20 km x 20 km territory around Paris.
    lon = 2.20 + rng.random() * 0.27
    lat = 48.75 + rng.random() * 0.18
    return {
        "id": f"urn:ngsi-ld:{prefix}:{n:07d}",
        "type": "Streetlight",
        "powerState": {"type": "Property", "value": "on" if n % 3 else "off"},
        "illuminanceLevel": {"type": "Property", "value": rng.randint(0, 100), "unitCode": "P1",
                             "observedAt": "2026-11-22T02:00:00Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [round(lon, 6), round(lat, 6)]}},
    }


def _uplink_entity(n: int, rng: random.Random, prefix: str = "Streetlight") -> dict[str, Any]:
    """What the runtime writes for one LoRaWAN uplink (chirpstack_v4): a container (even n) or its device (odd n)."""
    device = f"urn:ngsi-ld:Device:{prefix}{n // 2:07d}"
    asset = f"urn:ngsi-ld:WasteContainer:{prefix}{n // 2:07d}"
    when = f"2026-03-04T07:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z"
    if n % 2 == 0:
        return {
            "id": asset,
            "type": "WasteContainer",
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.88, 43.61]}},
            "fillingLevel": {
                "type": "Property",
                "value": rng.randint(0, 1000) / 1000,
                "unitCode": "C62",
                "observedAt": when,
            },
            "status": {"type": "Property", "value": "ok" if n % 3 else "full", "observedAt": when},
            "refDevice": {"type": "Relationship", "object": device},
        }
    return {
        "id": device,
        "type": "Device",
        "deviceCategory": {"type": "Property", "value": ["sensor"]},
        "controlledProperty": {"type": "Property", "value": ["fillingLevel"]},
        "supportedProtocol": {"type": "Property", "value": ["lora"]},
        "name": {"type": "Property", "value": f"container-{n // 2}"},
        "controlledAsset": {"type": "Relationship", "object": asset},
        "dateLastValueReported": {
            "type": "Property",
            "value": when,
            "frameCounter": {"type": "Property", "value": rng.randrange(65536)},
            "fPort": {"type": "Property", "value": 85},
        },
        "rssi": {
            "type": "Property",
            "value": rng.randint(-120, -60),
            "observedAt": when,
            "snr": {"type": "Property", "value": rng.randint(-80, 40) / 4, "unitCode": "2N"},
            "spreadingFactor": {"type": "Property", "value": rng.randint(7, 12)},
            "frequency": {"type": "Property", "value": 868300000, "unitCode": "HTZ"},
            "gatewayCount": {"type": "Property", "value": 2},
            "gatewayIds": {"type": "Property", "value": ["7276ff002e062a11", "7276ff002e062a42"]},
        },
        "batteryLevel": {"type": "Property", "value": rng.randint(0, 100) / 100, "observedAt": when},
    }


SHAPES: dict[str, Callable[[int, random.Random, str], dict[str, Any]]] = {
    "streetlight": _entity,
    "lorawan": _uplink_entity,
}
"""``--shape``: entity generators, (n, random source, id prefix) → compacted entity."""


def _next_reading(entity: dict[str, Any], n: int, rng: random.Random, shape: str) -> dict[str, Any]:
    """The entity as its next update sends it: a new illuminance (streetlight), a new uplink (lorawan)."""
    if shape == "streetlight":
        entity["illuminanceLevel"]["value"] = rng.randint(0, 100)
        return entity
    fresh = SHAPES[shape](n, rng, entity["id"].rsplit(":", 1)[1].rstrip("0123456789"))
    # an hour later: a newer observation (a random time could be older than the stored one: a late reading)
    for attr in fresh.values():
        if isinstance(attr, dict):
            for member in ("observedAt", "value"):
                if isinstance(attr.get(member), str) and attr[member].startswith("2026-03-04T07:"):
                    attr[member] = attr[member].replace("T07:", "T08:", 1)
    return fresh


def stages(n: int = 10_000, shape: str = "streetlight") -> None:
    """Print the Python CPU per entity of each stage of a batch upsert (best of 5; the SQLite history stage
    writes to an in-memory database, the others use none)."""
    import gc

    from gateway.store import codec, history, jsonld
    from gateway.store import operations as ops
    from gateway.store.indexing import attr_summary, geo_boxes, geo_values
    from gateway.store.postgres.history import Recorder, array_literal

    class NoDatabase:
        """Takes the history rows and sends them nowhere: only their preparation is timed."""

        async def execute(self, *args: Any) -> None:
            """Nothing to run."""

        async def copy_records_to_table(self, *args: Any, **kwargs: Any) -> None:
            """Nothing to copy."""

    ctx = jsonld.ContextCache().get([jsonld.jonction_context_iri()])
    rng = random.Random(1)
    make = SHAPES[shape]
    entities = [make(i, rng, "Streetlight") for i in range(n)]
    first, second = "2026-12-03T10:00:00.000000Z", "2026-12-03T10:00:01.000000Z"
    docs = [ctx.expand_entity(e) for e in entities]
    stored = [ops.upsert(d, "update")(None, first).doc for d in docs]
    texts = [codec.dumps(d) for d in stored]
    entities = [_next_reading(e, i, rng, shape) for i, e in enumerate(entities)]
    updates = [ctx.expand_entity(e) for e in entities]
    mutations = [ops.upsert(d, "update")(s, second) for d, s in zip(updates, stored, strict=True)]
    rows = [("", m.doc["id"], m.doc["type"], a, i) for m in mutations if m.doc for a, i in m.written]
    created_rows = [
        ("", d["id"], d["type"], a, i) for d in stored for a, i in ops.upsert(d, "update")(None, first).written
    ]

    def sqlite_history() -> None:
        """record_many of the update rows into an in-memory database whose series are known (the steady state)."""
        conn = sqlite3.connect(":memory:", isolation_level=None)
        history.ensure_schema(conn)
        cache = history.WriteCache()
        conn.execute("BEGIN")
        history.record_many(conn, created_rows, cache)
        cpu = time.process_time()
        history.record_many(conn, rows, cache)
        timings.append(time.process_time() - cpu)
        conn.execute("COMMIT")
        conn.close()

    timings: list[float] = []
    recorder = Recorder()
    recorder.months.update({(2026, 11), (2026, 12)})
    gc.freeze()  # the setup's objects are not what a write costs the collector
    print(
        f"stages of a batch upsert, Python CPU per entity (best of 5 over {n} {shape} entities, "
        f"{len(rows) / n:.1f} history rows each; load average {_load()}):"
    )
    timed: list[tuple[str, Any]] = [
        ("expand (JSON-LD expansion and validation)", lambda: [ctx.expand_entity(e) for e in entities]),
        ("mutate: create", lambda: [ops.upsert(d, "update")(None, first) for d in docs]),
        ("mutate: update an existing entity",
         lambda: [ops.upsert(d, "update")(s, second) for d, s in zip(updates, stored, strict=True)]),
        ("read the stored document (update)", lambda: [codec.loads(t) for t in texts]),
        ("deleted attributes diff (update)",
         lambda: [history.deletions(s, m.doc, second) for s, m in zip(stored, mutations, strict=True)]),
        ("row values: create (JSON, summary, types, boxes)",
         lambda: [(codec.dumps(attr_summary(m.doc)), codec.dumps(m.doc), array_literal(m.doc["type"]),
                   geo_boxes(m.doc)) for m in mutations if m.doc]),
        ("row values: update (JSON, summary, types, same geometry?)",
         lambda: [(codec.dumps(attr_summary(m.doc)), codec.dumps(m.doc), array_literal(m.doc["type"]),
                   geo_values(s) == geo_values(m.doc)) for s, m in zip(stored, mutations, strict=True) if m.doc]),
        ("history rows, PostgreSQL (Python part)",
         lambda: asyncio.run(recorder.record(NoDatabase(), "", rows, second))),
        ("history rows, SQLite (record_many, in-memory database, series known)", sqlite_history),
    ]
    for name, run in timed:
        best = float("inf")
        for _ in range(5):
            cpu = time.process_time()
            run()
            best = min(best, timings.pop() if timings else time.process_time() - cpu)
        print(f"  {best / n * 1e6:6.2f} us  {name}")
    gc.unfreeze()


async def _cluster_geo(url: str) -> None:
    """``CLUSTER geo`` on its GiST index and ``VACUUM (ANALYZE) geo`` (no longer needed since migration 11), timed."""
    import asyncpg  # only for a PostgreSQL run

    conn = await asyncpg.connect(url)
    try:
        # geo_geom up to migration 10, geo_bbox after: the bench compares both layouts
        index = await conn.fetchval("SELECT coalesce(to_regclass('geo_bbox'), to_regclass('geo_geom'))::text")
        start = time.perf_counter()
        await conn.execute(f"CLUSTER geo USING {index}")
        # the rewritten table has no page marked all-visible: without VACUUM an index-only scan reads the heap
        await conn.execute("VACUUM (ANALYZE) geo")
        print(f"CLUSTER geo USING {index} + VACUUM (ANALYZE): {time.perf_counter() - start:.1f} s")
    finally:
        await conn.close()


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A plan node and every node under it."""
    out = [node]
    for child in node.get("Plans", []):
        out.extend(_plan_nodes(child))
    return out


async def _explain_near(url: str, points: int = 20) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the first round trip of the benchmark's near query at ``points`` places.

    The statement the store sends for a first page (``PostgresStorage._filtered``: the box prefilter,
    the type, attribute and numeric conditions, 151 rows in id order), the tables warm after the first places.
    Prints the medians of the blocks read from ``geo`` (heap and index) and in all, and the heap fetches.
    """
    import json

    import asyncpg

    from gateway.store import jsonld
    from gateway.store.geo import parse_geo_query
    from gateway.store.postgres.compile import compile_spec
    from gateway.store.query import parse_q
    from gateway.store.records import QuerySpec

    expand = jsonld.ContextCache().get([jsonld.jonction_context_iri()]).expand_term
    rng = random.Random(7)
    conn = await asyncpg.connect(url)
    geo_blocks, all_blocks, fetches, kinds, took = [], [], [], set(), []
    try:
        for _ in range(points):
            lon, lat = 2.22 + rng.random() * 0.23, 48.77 + rng.random() * 0.14
            box = parse_geo_query("near;maxDistance==500", "Point", f"[{lon:.5f},{lat:.5f}]").bbox()
            spec = QuerySpec(
                types=[expand("Streetlight")],
                bbox=box,
                geoproperty=expand("location"),
                q=parse_q("illuminanceLevel>50"),
                expand=expand,
                number_filters=[(expand("illuminanceLevel"), ">", (50.0,))],
            )
            where = compile_spec("", spec)
            n = len(where.params)
            sql = (
                f"SELECT e.id, e.doc::text FROM {where.source(f'${n + 1}')} WHERE {where.sql()} "
                f"AND e.id > ${n + 1} ORDER BY e.id LIMIT 151"
            )
            plan = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *where.params, ""))
            root = plan[0]["Plan"]
            nodes = _plan_nodes(root)
            scans = [node for node in nodes if node.get("Relation Name") == "geo"]
            geo_blocks.append(
                sum(sum(node.get(k, 0) for k in ("Shared Hit Blocks", "Shared Read Blocks")) for node in scans)
            )
            all_blocks.append(root.get("Shared Hit Blocks", 0) + root.get("Shared Read Blocks", 0))
            fetches.append(sum(node.get("Heap Fetches", 0) for node in scans))
            kinds.update(node["Node Type"] for node in scans)
            took.append(plan[0]["Execution Time"])
    finally:
        await conn.close()
    print(
        f"EXPLAIN near prefilter ({points} places): geo read by {', '.join(sorted(kinds))}; median blocks: "
        f"geo {statistics.median(geo_blocks):.0f} (heap and index), whole statement "
        f"{statistics.median(all_blocks):.0f}; heap fetches median {statistics.median(fetches):.0f} "
        f"max {max(fetches)}; server execution median {statistics.median(took):.1f} ms"
    )


async def main(
    n: int,
    database: str | None = None,
    statements: bool = False,
    reuse: bool = False,
    cluster: bool = False,
    explain: bool = False,
    near_only: bool = False,
    shape: str = "streetlight",
) -> None:
    rng = random.Random(42)
    durability = "normal" if os.environ.get("BENCH_STORE_DURABILITY") == "normal" else "full"
    where = describe(database) if database else "sqlite"
    print(
        f"store benchmark: {n} {shape} entities, batches of {BATCH}, durability {durability}, database {where}; "
        f"load average {_load()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        entities = [SHAPES[shape](i, rng, "Streetlight") for i in range(n)]

        storage = await open_storage(database or data / "store.sqlite", durability=durability)
        pg = bool(database and database.startswith("postgres"))
        postmaster = await _postmaster(database) if database and pg else None
        statements = statements and pg
        if reuse:
            stored = await storage.count_docs("")
            assert stored == n, f"--reuse: the database holds {stored} entities, not {n}"
        for phase in () if reuse else ("create", "update"):
            if phase == "update":
                entities = [_next_reading(e, i, rng, shape) for i, e in enumerate(entities)]
            if statements and database:
                statements = await _statements(database, reset=True) is not None
            own = _cpu_of(await _backends(database)) if database and postmaster else {}
            start, cpu, server = time.perf_counter(), time.process_time(), _server_cpu(postmaster)
            for i in range(0, n, BATCH):
                result = await storage.upsert("", entities[i : i + BATCH])
                assert not result.errors
            elapsed, used = time.perf_counter() - start, time.process_time() - cpu
            # the database server's CPU, when it is local: the other half of the cost of a write (the store's
            # connections, and the whole server with its background work: autovacuum, WAL writer)
            served = ""
            if database and postmaster:
                whole = _server_cpu(postmaster) - server
                # a connection the pool opened during the phase counts whole
                now = _cpu_of(await _backends(database))
                mine = sum(t - own.get(pid, 0.0) for pid, t in now.items())
                served = f"; server {whole / n * 1e6:.0f} us (its connections {mine / n * 1e6:.0f} us)"
            print(f"python upsert ({phase}):  {n / elapsed:10.0f} entities/s  ({elapsed:.1f} s; "
                  f"{n / used:.0f} entities per CPU-second; CPU per entity: python {used / n * 1e6:.0f} us"
                  f"{served})")
            heaviest = await _statements(database, reset=False) if statements and database else None
            for spent, calls, text in heaviest or []:
                print(f"  {spent * 1000 / n:7.1f} us/entity  {calls:5d} calls  {text[:100]}")
        await storage.close()
        del entities
        if shape != "streetlight":
            return  # the queries below look for streetlights
        if cluster and database:
            await _cluster_geo(database)
        if explain and database:
            await _explain_near(database)

        settings = StoreSettings(data_dir=data, database=database)
        runner = web.AppRunner(create_root_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
        headers = {"Link": LINK, "NGSILD-Tenant": "bench-http"}
        async with aiohttp.ClientSession() as session:
            http_n = 0 if reuse else min(n, 20_000)
            http_entities = [_entity(i, rng, "HttpLight") for i in range(http_n)]
            start = time.perf_counter()
            for i in range(0, http_n, BATCH):
                async with session.post(base + "/entityOperations/upsert", json=http_entities[i : i + BATCH],
                                        headers=headers) as resp:
                    assert resp.status in (201, 204), await resp.text()
            elapsed = time.perf_counter() - start
            if http_n:
                print(f"http upsert (create):    {http_n / elapsed:10.0f} entities/s  ({http_n} entities)")

            latencies = []
            found = 0
            cpu, server = time.process_time(), _server_cpu(postmaster)
            for _ in range(QUERIES):
                lon = 2.22 + rng.random() * 0.23
                lat = 48.77 + rng.random() * 0.14
                params = {
                    "type": "Streetlight",
                    "q": "illuminanceLevel>50",
                    "georel": "near;maxDistance==500",
                    "geometry": "Point",
                    "coordinates": f"[{lon:.5f},{lat:.5f}]",
                    "limit": "100",
                }
                t0 = time.perf_counter()
                async with session.get(base + "/entities", params=params, headers={"Link": LINK}) as resp:
                    body = await resp.json()
                    assert resp.status == 200, body
                latencies.append((time.perf_counter() - t0) * 1000)
                found += len(body)
            cpu_ms = (time.process_time() - cpu) * 1000 / QUERIES
            # the local server's CPU per query (its background work included): the database's half of a query
            server_ms = (_server_cpu(postmaster) - server) * 1000 / QUERIES
            latencies.sort()
            p50 = statistics.median(latencies)
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
            print(f"query type+q+geoQ near:  p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
                  f"({found / QUERIES:.1f} entities/answer over {n}; {cpu_ms:.1f} ms CPU per query, "
                  "client included" + (f"; server CPU {server_ms:.1f} ms per query)" if postmaster else ")"))
            if near_only:
                await runner.cleanup()
                return
            t0 = time.perf_counter()
            async with session.get(base + "/entities", params={"type": "Streetlight", "limit": "100"},
                                   headers={"Link": LINK}) as resp:
                await resp.read()
            print(f"query type only (100):   {(time.perf_counter() - t0) * 1000:6.1f} ms")
            scans = []
            for threshold in (95, 97, 99, 90, 98):
                t0 = time.perf_counter()
                params = {"type": "Streetlight", "q": f"illuminanceLevel>{threshold}", "count": "true"}
                async with session.get(base + "/entities", params=params, headers={"Link": LINK}) as resp:
                    total = resp.headers["NGSILD-Results-Count"]
                    await resp.read()
                scans.append((time.perf_counter() - t0) * 1000)
            print(f"query type+q, count, no geo: median {statistics.median(scans):6.1f} ms "
                  f"(last count {total} of {n})")
        print(f"RSS with {n} entities stored and served: {_rss_mb():.0f} MB; load average {_load()}")
        if database is None:
            print(f"database file: {(data / 'store.sqlite').stat().st_size / 1e6:.0f} MB")
        await runner.cleanup()


if __name__ == "__main__":
    args = sys.argv[1:]
    url: str | None = None
    if "--database" in args:
        at = args.index("--database")
        url = args[at + 1]
        del args[at : at + 2]
    if "--entities" in args:
        at = args.index("--entities")
        args[at : at + 2] = [args[at + 1]]
    reuse = "--reuse" in args
    if reuse:
        args.remove("--reuse")
        assert url is not None, "--reuse measures an existing database: give --database"
    cluster_geo = "--cluster-geo" in args
    if cluster_geo:
        args.remove("--cluster-geo")
        assert url is not None and url.startswith("postgres"), "--cluster-geo needs --database postgresql://…"
    only_near = "--near-only" in args
    if only_near:
        args.remove("--near-only")
    explain_near = "--explain" in args
    if explain_near:
        args.remove("--explain")
        assert url is not None and url.startswith("postgres"), "--explain needs --database postgresql://…"
    entity_shape = "streetlight"
    if "--shape" in args:
        at = args.index("--shape")
        entity_shape = args[at + 1]
        del args[at : at + 2]
        assert entity_shape in SHAPES, f"--shape: one of {', '.join(SHAPES)}"
    if "--stages" in args:
        stages(shape=entity_shape)
        sys.exit(0)
    by_statement = "--statements" in args
    if by_statement:
        args.remove("--statements")
    size = int(args[0]) if args else int(os.environ.get("BENCH_STORE_N", "100000"))
    asyncio.run(main(size, url, by_statement, reuse, cluster_geo, explain_near, only_near, entity_shape))
