"""Routing by commune polygon: index build time and readings/s with 1,000 communes of 200-2,000 vertices.

The territory is synthetic and the size of a French department: a 40 x 25 grid of communes over
1.2 x 0.75 degrees, inner vertices moved, every shared edge a jagged random walk of 50 to 500
points (the same points for both neighbours), so each polygon has about 200 to 2,000 vertices,
like IGN Admin Express communes. Figures: file check + index build, then lookups through the
index (``GeoIndex.find``), through the router (entity → tenant, as the pipeline calls it), and two
baselines: without the grid (bounding-box scan of every polygon, then the same banded test) and with no index at all.

Then the ingestion path itself (``Pipeline.submit``: archive, translate, normalize, validate, route,
outbox commit, on SQLite in a temporary folder), alternating runs with and without routing, so the
routing step's share of a reading's cost shows under the same conditions.

    python bench/bench_routing.py [--readings 100000] [--pipeline 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from gateway.model import RawMessage, entity, geo, point, prop, urn
from gateway.runtime.geoindex import INSIDE, ON_EDGE, GeoIndex, locate, parse_boundaries
from gateway.runtime.routing import LocationMethod, Router

NX, NY = 40, 25
X0, Y0, W, H = 3.3, 43.3, 1.2, 0.75


def territory(seed: int = 1) -> dict[str, Any]:
    """A FeatureCollection of NX * NY communes with jagged shared edges."""
    rng = random.Random(seed)
    cw, ch = W / NX, H / NY
    vertex = {}
    for i in range(NX + 1):
        for j in range(NY + 1):
            x, y = X0 + i * cw, Y0 + j * ch
            if 0 < i < NX and 0 < j < NY:
                x, y = x + rng.uniform(-0.2, 0.2) * cw, y + rng.uniform(-0.2, 0.2) * ch
            vertex[i, j] = (x, y)
    edges: dict[tuple[tuple[int, int], tuple[int, int]], list[tuple[float, float]]] = {}

    def edge(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[float, float]]:
        if (b, a) in edges:
            return list(reversed(edges[b, a]))
        if (a, b) not in edges:
            (x1, y1), (x2, y2) = vertex[a], vertex[b]
            n = rng.randint(50, 500)
            amp = 0.08 * max(cw, ch)
            offset, line = 0.0, [(x1, y1)]
            frame = (a[0] == b[0] and a[0] in (0, NX)) or (a[1] == b[1] and a[1] in (0, NY))
            for k in range(1, n):
                t = k / n
                if not frame:  # a bounded random walk across the edge, like a hedge or a stream
                    offset = max(-amp, min(amp, offset + rng.uniform(-0.15, 0.15) * amp))
                taper = min(t, 1 - t) * 4 if t < 0.25 or t > 0.75 else 1.0
                dx, dy = x2 - x1, y2 - y1
                norm = (dx * dx + dy * dy) ** 0.5
                line.append((x1 + t * dx + offset * taper * -dy / norm, y1 + t * dy + offset * taper * dx / norm))
            line.append((x2, y2))
            edges[a, b] = line
        return edges[a, b]

    features = []
    for j in range(NY):
        for i in range(NX):
            corners = [(i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1), (i, j)]
            ring = [vertex[i, j]]
            for a, b in itertools.pairwise(corners):
                ring.extend(edge(a, b)[1:])
            code = f"{34000 + j * NX + i + 1:05d}"
            features.append({"type": "Feature", "properties": {"INSEE_COM": code},
                             "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}})
    return {"type": "FeatureCollection", "features": features}


def brute_force(index: GeoIndex, lon: float, lat: float) -> str | None:
    """Without the grid: every polygon's bounding box, then the exact test (the baseline)."""
    for part in index._parts:
        minx, miny, maxx, maxy = part.bbox
        if minx <= lon <= maxx and miny <= lat <= maxy and locate(part, lon, lat) in (INSIDE, ON_EDGE):
            return index.areas[part.area].code
    return None


def naive(doc: dict[str, Any], lon: float, lat: float) -> str | None:
    """No index at all: the even-odd ray cast over every edge of every commune's rings."""
    for feature in doc["features"]:
        inside = False
        for ring in feature["geometry"]["coordinates"]:
            for (x1, y1), (x2, y2) in itertools.pairwise(ring):
                if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
                    inside = not inside
        if inside:
            return str(feature["properties"]["INSEE_COM"])
    return None


class Feed:
    """A vendor feed for every commune: ``{"d": device, "x": lon, "y": lat, "v": value}`` → DeviceMeasurement."""

    def to_entities(self, raw: RawMessage) -> list[dict[str, Any]]:
        doc = json.loads(raw.payload)
        return [entity("DeviceMeasurement", urn("DeviceMeasurement", doc["d"]),
                       numValue=prop(doc["v"], observed_at="2026-01-01T10:00:00Z"),
                       location=geo(point(doc["x"], doc["y"])))]


async def pipeline_run(
    boundaries: Path, points: list[tuple[float, float]], routing: bool, tag: str
) -> tuple[float, float]:
    """(wall s, CPU s) to commit one reading per point through Pipeline.submit, 256 in flight."""
    import aiohttp

    from gateway.runtime.app import build_runtime
    from gateway.runtime.config import parse
    from gateway.runtime.pipeline import SourceBinding

    with tempfile.TemporaryDirectory() as tmp:
        source: dict[str, Any] = {"name": "feed", "adapter": "feed", "tenant": "syndicat"}
        if routing:
            source["routing"] = {"location": {"boundaries": str(boundaries), "tenant_property": "tenant"},
                                 "otherwise": "source_tenant"}
        cfg = parse({"data_dir": tmp, "sources": [source]})
        async with aiohttp.ClientSession() as http:
            rt = build_runtime(cfg, {}, http=http, storage=None, publishing=False)
            rt.pipeline.add_source(SourceBinding("feed", "feed", Feed(), "syndicat", (),  # type: ignore[arg-type]
                                                 cfg.sources[0].routing))
            messages = [RawMessage("feed", "syndicat", "2026-01-01T10:00:00Z",
                                   json.dumps({"d": f"{tag}{i}", "x": x, "y": y, "v": i}).encode(), f"{tag}{i}")
                        for i, (x, y) in enumerate(points)]
            wall, cpu = time.perf_counter(), time.process_time()
            for start in range(0, len(messages), 256):
                await asyncio.gather(*(rt.pipeline.submit(m) for m in messages[start:start + 256]))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            rt.pipeline.close()
            rt.db.close()
    return wall, cpu


def main() -> None:
    """Build, then time lookups; print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--pipeline", type=int, default=20_000, help="readings through Pipeline.submit per run")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    doc = territory()
    text = json.dumps(doc)
    vertices = [len(f["geometry"]["coordinates"][0]) for f in doc["features"]]
    print(f"boundaries: {len(vertices)} communes, {sum(vertices):,} vertices "
          f"(min {min(vertices)}, median {sorted(vertices)[len(vertices) // 2]}, max {max(vertices)}), "
          f"{len(text) / 1e6:.1f} MB of GeoJSON")
    tenants = {f["properties"]["INSEE_COM"]: f"t{f['properties']['INSEE_COM']}" for f in doc["features"]}
    started = time.perf_counter()
    parsed = json.loads(text)
    loaded = time.perf_counter()
    index = parse_boundaries(parsed, code_property="INSEE_COM", tenants=tenants)
    built = time.perf_counter()
    print(f"index: JSON parse {loaded - started:.2f} s, check + build {built - loaded:.2f} s "
          f"({index.polygons} polygons)")

    rng = random.Random(2)
    points = [(rng.uniform(X0 - 0.01, X0 + W + 0.01), rng.uniform(Y0 - 0.01, Y0 + H + 0.01))
              for _ in range(args.readings)]
    started = time.perf_counter()
    found = [index.find(x, y) for x, y in points]
    elapsed = time.perf_counter() - started
    routed = sum(1 for a in found if a is not None)
    print(f"GeoIndex.find: {len(points):,} points in {elapsed:.2f} s = {len(points) / elapsed:,.0f} points/s "
          f"({elapsed / len(points) * 1e6:.1f} µs each; {routed:,} in a commune)")

    router = Router((("location", LocationMethod(index)),))
    raw = RawMessage("feed", "", "2026-01-01T00:00:00Z", b"{}", "k")
    entities = [entity("DeviceMeasurement", urn("DeviceMeasurement", f"d{i}"), numValue=prop(i),
                       location=geo(point(x, y))) for i, (x, y) in enumerate(points)]
    started = time.perf_counter()
    unroutable = 0
    for item in entities:
        try:
            router.tenant(raw, item)
        except Exception:
            unroutable += 1
    elapsed = time.perf_counter() - started
    print(f"Router.tenant (entity -> tenant): {len(entities):,} readings in {elapsed:.2f} s = "
          f"{len(entities) / elapsed:,.0f} readings/s ({unroutable:,} unroutable, outside the territory)")

    sample = points[: max(1, len(points) // 50)]
    started = time.perf_counter()
    baseline = [brute_force(index, x, y) for x, y in sample]
    elapsed = time.perf_counter() - started
    agree = sum(1 for b, a in zip(baseline, found, strict=False) if b == (a.code if a else None))
    print(f"baseline without the grid: {len(sample):,} points in {elapsed:.2f} s = {len(sample) / elapsed:,.0f} "
          f"points/s (agrees with the index on {agree}/{len(sample)})")
    sample = points[:50]
    started = time.perf_counter()
    plain = [naive(parsed, x, y) for x, y in sample]
    elapsed = time.perf_counter() - started
    agree = sum(1 for b, a in zip(plain, found, strict=False) if b == (a.code if a else None))
    print(f"no index (ray cast over every edge): {len(sample):,} points in {elapsed:.2f} s = "
          f"{len(sample) / elapsed:,.0f} points/s (agrees with the index on {agree}/{len(sample)})")

    if args.pipeline:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "communes.geojson"
            for f in doc["features"]:
                f["properties"]["tenant"] = f"c{f['properties']['INSEE_COM']}"
            path.write_text(json.dumps(doc), encoding="utf-8")
            sample = points[: args.pipeline]
            runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for n in range(4):  # alternated: without, with, without, with
                routing = bool(n % 2)
                runs[routing].append(asyncio.run(pipeline_run(path, sample, routing, f"r{n}-")))
            for routing, figures in runs.items():
                cpu = min(c for _, c in figures) / len(sample) * 1e6
                rate = max(len(sample) / w for w, _ in figures)
                print(f"Pipeline.submit {'with' if routing else 'without'} location routing: {rate:,.0f} readings/s, "
                      f"{cpu:.0f} µs CPU per reading (best of 2, {len(sample):,} readings, committed to SQLite)")
            print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
