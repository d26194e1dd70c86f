"""Throughput of gateway.validation on the normalized entities the gateway's benchmarks send.

Models: AirQualityObserved, WasteContainer and Device as the LoRaWAN adapters produce them, and the
WasteContainer of the HTTP benchmarks (bench_pipeline / bench_workers: two attributes). Each is
validated by ``validate`` (fast path for valid entities first) and by the reference path alone (the
full check every verdict used to take), alternating, best of ``--repeat`` runs each, in entities per
CPU second and µs per entity. Prints figures and the load average; asserts nothing.

    .venv/bin/python bench/bench_validate.py [--count 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.validation import _reference, validate, validate_batch


def air_quality(i: int) -> dict[str, Any]:
    """A realistic normalized AirQualityObserved."""
    at = f"2025-03-01T{i % 24:02d}:00:00Z"
    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:station-{i % 500}",
        "type": "AirQualityObserved",
        "dateObserved": {"type": "Property", "value": at},
        "no2": {"type": "Property", "value": 20.0 + i % 40, "unitCode": "GQ", "observedAt": at},
        "pm10": {"type": "Property", "value": 12.5 + i % 30, "unitCode": "GQ", "observedAt": at},
        "pm25": {"type": "Property", "value": 6.1 + i % 20, "unitCode": "GQ", "observedAt": at},
        "o3": {"type": "Property", "value": 55.0, "unitCode": "GQ", "observedAt": at},
        "temperature": {"type": "Property", "value": 11.5, "unitCode": "CEL"},
        "relativeHumidity": {"type": "Property", "value": 0.66, "unitCode": "C62"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.83 + i * 1e-5, 45.73]}},
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:sensor-{i % 500}"},
    }


def waste_container(i: int) -> dict[str, Any]:
    """A realistic normalized WasteContainer."""
    at = f"2025-03-01T{i % 24:02d}:15:00Z"
    return {
        "id": f"urn:ngsi-ld:WasteContainer:bac-{i}",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": (i % 100) / 100, "observedAt": at},
        "temperature": {"type": "Property", "value": 9.5, "unitCode": "CEL", "observedAt": at},
        "status": {"type": "Property", "value": "ok"},
        "storedWasteKind": {"type": "Property", "value": "glass"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-1.55 + i * 1e-6, 47.21]}},
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:probe-{i}"},
    }


def waste_container_http(i: int) -> dict[str, Any]:
    """The HTTP benchmarks' WasteContainer after translation (ngsi_v2) and normalization."""
    return {
        "id": f"urn:ngsi-ld:WasteContainer:bench-{i % 1000}",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": (i % 97) / 100,
                         "observedAt": f"2026-01-01T10:{i // 1000 % 60:02d}:00.{i % 1000:03d}Z"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.87, 43.6]}},
    }


def device(i: int) -> dict[str, Any]:
    """The Device a LoRaWAN uplink updates (chirpstack_v4 adapter, radio metadata as sub-attributes)."""
    at = f"2026-03-04T07:{i // 600 % 60:02d}:{i // 10 % 60:02d}.{i % 10}00Z"
    return {
        "id": f"urn:ngsi-ld:Device:24e124713b{i % 500:06x}",
        "type": "Device",
        "deviceCategory": {"type": "Property", "value": ["sensor"]},
        "controlledProperty": {"type": "Property", "value": ["fillingLevel"]},
        "supportedProtocol": {"type": "Property", "value": ["lora"]},
        "name": {"type": "Property", "value": "verre-mairie"},
        "controlledAsset": {"type": "Relationship", "object": f"urn:ngsi-ld:WasteContainer:bench-{i % 500}"},
        "dateLastValueReported": {"type": "Property", "value": at,
                                  "frameCounter": {"type": "Property", "value": i},
                                  "fPort": {"type": "Property", "value": 85}},
        "rssi": {"type": "Property", "value": -97 - i % 20, "observedAt": at,
                 "snr": {"type": "Property", "value": 7.25, "unitCode": "2N"},
                 "spreadingFactor": {"type": "Property", "value": 9},
                 "frequency": {"type": "Property", "value": 868300000, "unitCode": "HTZ"},
                 "gatewayCount": {"type": "Property", "value": 2},
                 "gatewayIds": {"type": "Property", "value": ["7276ff002e062a11", "7276ff002e062a42"]}},
        "batteryLevel": {"type": "Property", "value": 0.85, "observedAt": at},
    }


def _rate(count: int, work: Any) -> tuple[float, float]:
    """Entities per CPU second (one core, insensitive to other processes) and per wall second."""
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return count / (time.process_time() - cpu), count / (time.perf_counter() - wall)


def measure(label: str, entities: list[dict[str, Any]], repeat: int) -> None:
    """Print the best of ``repeat`` alternated runs: validate (one by one, batch) and the reference path."""
    for item in entities[:200]:  # warm caches (compiled validators) and check the data
        assert validate(item).valid, validate(item).errors
        assert _reference(item) == validate(item)

    def one_by_one() -> None:
        for item in entities:
            validate(item)

    def reference() -> None:
        for item in entities:
            _reference(item)

    best: dict[str, float] = {"fast": 0.0, "batch": 0.0, "reference": 0.0}
    for _ in range(repeat):
        for name, work in (("reference", reference), ("fast", one_by_one),
                           ("batch", lambda: validate_batch(entities))):
            best[name] = max(best[name], _rate(len(entities), work)[0])
    print(
        f"{label:<24} validate: {best['fast']:>8,.0f}/s ({1e6 / best['fast']:5.1f} µs)   "
        f"batch: {best['batch']:>8,.0f}/s   reference path: {best['reference']:>8,.0f}/s "
        f"({1e6 / best['reference']:5.1f} µs)   x{best['fast'] / best['reference']:.1f}"
    )


def main() -> None:
    """Run every model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"validate(): {args.count} valid normalized entities per run, best of {args.repeat} alternated runs, "
          f"entities per CPU second (one core); load average {os.getloadavg()[0]:.2f}")
    count = args.count
    measure("AirQualityObserved", [air_quality(i) for i in range(count)], args.repeat)
    measure("WasteContainer", [waste_container(i) for i in range(count)], args.repeat)
    measure("WasteContainer (HTTP)", [waste_container_http(i) for i in range(count)], args.repeat)
    measure("Device (LoRaWAN)", [device(i) for i in range(count)], args.repeat)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
