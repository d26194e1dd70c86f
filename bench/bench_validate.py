"""Throughput of gateway.validation on normalized AirQualityObserved and WasteContainer entities."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.validation import validate, validate_batch

COUNT = 20_000


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


def _rate(count: int, work: Any) -> tuple[float, float]:
    """Entities per CPU second (one core, insensitive to other processes) and per wall second."""
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return count / (time.process_time() - cpu), count / (time.perf_counter() - wall)


def measure(label: str, entities: list[dict[str, Any]]) -> None:
    """Print entities/s for one-by-one and batch validation."""
    for item in entities[:200]:  # warm caches (compiled validators)
        assert validate(item).valid, validate(item).errors

    def one_by_one() -> None:
        for item in entities:
            validate(item)

    single_cpu, single_wall = _rate(len(entities), one_by_one)
    batch_cpu, batch_wall = _rate(len(entities), lambda: validate_batch(entities))
    print(
        f"{label:<20} single: {single_cpu:>8,.0f}/s cpu ({single_wall:>8,.0f}/s wall)   "
        f"batch: {batch_cpu:>8,.0f}/s cpu ({batch_wall:>8,.0f}/s wall)"
    )


def main() -> None:
    """Run both models."""
    print(f"validate(): {COUNT} valid normalized entities per run, one core (entities per CPU second)")
    measure("AirQualityObserved", [air_quality(i) for i in range(COUNT)])
    measure("WasteContainer", [waste_container(i) for i in range(COUNT)])


if __name__ == "__main__":
    main()
