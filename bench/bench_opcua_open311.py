"""Throughput of the OPC UA and Open311 adapters: pure translation, live ingestion, endpoint POSTs."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import yaml

from adapters.kit.simulators.waternet import NAMESPACE, create
from adapters.opcua import OpcUaAdapter
from adapters.open311 import Open311Adapter
from adapters.open311.georeport import parse_requests, to_xml
from gateway.model import RawMessage

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = 50_000


def _raw(payload: bytes) -> RawMessage:
    return RawMessage(source="bench", tenant="", received_at="2024-05-02T06:20:00Z", payload=payload,
                      idempotency_key="k")


def bench_opcua_translation() -> None:
    """Recorded data changes (the contract fixtures, round robin) to entities."""
    adapter = OpcUaAdapter(yaml.safe_load((ROOT / "adapters/opcua/sample.yaml").read_text()))
    payloads = [p.read_bytes() for p in sorted((ROOT / "adapters/opcua/fixtures").glob("*.json"))
                if not p.name.endswith(".golden.json")]
    raws = [_raw(payloads[i % len(payloads)]) for i in range(TRANSLATIONS)]
    started = time.perf_counter()
    count = sum(len(adapter.to_entities(r)) for r in raws)
    elapsed = time.perf_counter() - started
    print(f"opcua to_entities: {count} entities in {elapsed:.2f} s = {count / elapsed:,.0f} entities/s")


async def bench_opcua_live(seconds: float = 5.0) -> None:
    """Data changes received from the simulator (9 moving variables) over loopback."""
    sim = create({"port": 48499, "interval_s": 0.02})
    await sim.start()
    nodes = [f"Pump1.{n}" for n in ("Speed", "Flow", "Power", "EnergyTotal", "Vibration")] + [
        "Tank1.Level", "Valve1.Opening", "Junction1.Pressure", "Junction2.Pressure"]
    cfg = {"servers": [{"name": "bench", "endpoint": sim.endpoint, "publishing_interval_ms": 50,
                        "sampling_interval_ms": 0, "queue_size": 100, "nodes": [
                            {"node": f"nsu={NAMESPACE};s={n}", "entity": f"urn:ngsi-ld:Pump:{n}", "type": "Pump",
                             "attribute": "speed"} for n in nodes]}]}
    adapter = OpcUaAdapter(cfg)
    received: list[RawMessage] = []

    async def emit(raw: RawMessage) -> None:
        received.append(raw)

    task = asyncio.create_task(adapter.run(emit))
    await asyncio.wait_for(adapter.links[0].connected.wait(), 30)
    start_count, start_step = len(received), sim.step
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    count, steps = len(received) - start_count, sim.step - start_step
    await adapter.stop()
    await task
    await sim.stop()
    print(f"opcua live: {count} data changes in {elapsed:.1f} s = {count / elapsed:,.0f} msg/s "
          f"({steps} simulator steps x {len(nodes)} variables written = {steps * len(nodes)})")


async def bench_opcua_many_nodes(count: int = 1000, seconds: float = 5.0) -> None:
    """Time to resolve and subscribe ``count`` nodes, then data changes received per second."""
    sim = create({"port": 48498, "interval_s": 1.0, "extra_points": count})
    await sim.start()
    cfg = {"servers": [{"name": "scale", "endpoint": sim.endpoint, "namespace": NAMESPACE,
                        "publishing_interval_ms": 200, "sampling_interval_ms": 100, "nodes": [
                            {"browse_path": f"WaterNet/Sensors/P{n:05d}", "entity": f"urn:ngsi-ld:Junction:J{n}",
                             "type": "Junction", "attribute": "pressure"} for n in range(count)]}]}
    adapter = OpcUaAdapter(cfg)
    received: list[RawMessage] = []
    all_there = asyncio.Event()

    async def emit(raw: RawMessage) -> None:
        received.append(raw)
        if len(received) >= count:
            all_there.set()

    started = time.perf_counter()
    task = asyncio.create_task(adapter.run(emit))
    await asyncio.wait_for(all_there.wait(), 300)
    ready = time.perf_counter() - started
    before, step = len(received), sim.step
    await asyncio.sleep(seconds)
    rate = (len(received) - before) / seconds
    written = (sim.step - step) * count / seconds
    await adapter.stop()
    await task
    await sim.stop()
    print(f"opcua {count} nodes: resolved, subscribed and first values in {ready:.1f} s; then {rate:,.0f} msg/s "
          f"(the simulator wrote {written:,.0f} values/s)")


def bench_open311_parse() -> None:
    """One City page of 1000 requests, JSON and XML, parsed and stripped of personal data."""
    items = [{"service_request_id": str(i), "status": "open", "service_code": "001", "service_name": "Voirie",
              "description": "Nid de poule " * 5, "requested_datetime": "2024-05-02T08:00:00+02:00",
              "updated_datetime": "2024-05-02T08:00:00+02:00", "address": "1 rue de la Paix",
              "lat": 48.86, "long": 2.33, "email": "x@example.org", "first_name": "A", "last_name": "B"}
             for i in range(1000)]
    body_json = json.dumps(items).encode()
    body_xml = to_xml("service_requests", "request", items)
    adapter = Open311Adapter({"jurisdiction_id": "bench", "listen": {"api_keys": "k"}})
    for label, body, kind in (("json", body_json, "application/json"), ("xml", body_xml, "text/xml")):
        started = time.perf_counter()
        for _ in range(20):
            parsed = parse_requests(body, kind)
            entities = [adapter.to_entities(_raw(json.dumps({"jurisdiction_id": "bench", "request": r}).encode()))
                        for r in parsed]
        elapsed = time.perf_counter() - started
        total = 20 * len(entities)
        print(f"open311 {label} page of 1000: {total} requests parsed+translated in {elapsed:.2f} s "
              f"= {total / elapsed:,.0f} requests/s")


async def bench_open311_endpoint(count: int = 500) -> None:
    """Citizen POSTs (form-encoded) answered by the endpoint, 10 at a time."""
    adapter = Open311Adapter({"jurisdiction_id": "bench", "listen": {
        "port": 0, "api_keys": "k", "max_posts_per_minute": 1e9, "max_posts_burst": 1_000_000,
        "services": [{"service_code": "001", "service_name": "Voirie"}]}})
    received: list[RawMessage] = []

    async def emit(raw: RawMessage) -> None:
        received.append(raw)

    task = asyncio.create_task(adapter.run(emit))
    await asyncio.wait_for(adapter.ready.wait(), 30)
    url = f"http://127.0.0.1:{adapter.port}/open311/v2/requests.json"
    form = {"api_key": "k", "service_code": "001", "lat": "48.86", "long": "2.33", "description": "Lampadaire"}
    semaphore = asyncio.Semaphore(10)
    async with aiohttp.ClientSession() as http:

        async def post() -> None:
            async with semaphore, http.post(url, data=form) as resp:
                await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(count)))
        elapsed = time.perf_counter() - started
    await adapter.stop()
    await task
    print(f"open311 endpoint: {len(received)} POSTs in {elapsed:.2f} s = {len(received) / elapsed:,.0f} requests/s")


def main() -> None:
    """Run every benchmark and print its figures."""
    bench_opcua_translation()
    asyncio.run(bench_opcua_live())
    asyncio.run(bench_opcua_many_nodes())
    bench_open311_parse()
    asyncio.run(bench_open311_endpoint())


if __name__ == "__main__":
    main()
