"""A small territory written through the store's HTTP API: two communes, streetlights and waste containers
with a history of readings (some late, one attribute with two datasetIds, one without observedAt), and a
subscription whose endpoint carries a credential."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.store.conftest import LINK_JONCTION, StoreServer

TENANTS = ("", "ville-a")
LIGHTS = 3
READINGS = 8
SECRET_HEADER = "Bearer s3cret-notification-token"


def at(i: int) -> str:
    """The i-th quarter hour of 2025-03-01 (UTC)."""
    return f"2025-03-01T{i // 4:02d}:{15 * (i % 4):02d}:00Z"


def streetlight(n: int, i: int) -> dict[str, Any]:
    """Streetlight n at reading i (valid against the Streetlight model)."""
    return {
        "id": f"urn:ngsi-ld:Streetlight:test:{n}",
        "type": "Streetlight",
        "status": {"type": "Property", "value": "ok"},
        "powerState": {"type": "Property", "value": "on" if i % 2 else "off", "observedAt": at(i)},
        "illuminanceLevel": [
            {"type": "Property", "value": round(0.1 * i, 2), "observedAt": at(i)},
            {"type": "Property", "value": round(0.05 * i, 2), "observedAt": at(i),
             "datasetId": "urn:ngsi-ld:Dataset:lux-meter"},
        ],
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5.72 + n / 1000, 45.18]}},
    }


def container(n: int, i: int) -> dict[str, Any]:
    """Waste container n at reading i (valid against the WasteContainer model)."""
    return {
        "id": f"urn:ngsi-ld:WasteContainer:test:{n}",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": round(0.1 * i, 2), "observedAt": at(i), "unitCode": "C62"},
        "status": {"type": "Property", "value": "ok"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [-1.55, 47.21 + n / 1000]}},
    }


def tenant_headers(tenant: str) -> dict[str, str]:
    """Link to jonction's @context, and the tenant header when not the default tenant."""
    headers = {"Link": LINK_JONCTION}
    if tenant:
        headers["NGSILD-Tenant"] = tenant
    return headers


async def feed(server: StoreServer) -> dict[str, int]:
    """Write the territory; the number of history instances each tenant should hold."""
    expected: dict[str, int] = {}
    for tenant in TENANTS:
        headers = tenant_headers(tenant)
        for i in range(READINGS):
            batch = [streetlight(n, i) for n in range(LIGHTS)] + [container(0, i)]
            reply = await server.post("/entityOperations/upsert", batch, headers=headers)
            assert reply.status in (201, 204), reply.raw
        # a late reading, before the others (the temporal API, as a back-fill)
        reply = await server.post(
            "/temporal/entities/urn:ngsi-ld:WasteContainer:test:0/attrs",
            {"fillingLevel": [{"type": "Property", "value": 0.01, "observedAt": "2025-02-28T23:00:00Z"}]},
            headers=headers,
        )
        assert reply.status == 204, reply.raw
        # every upsert records every attribute instance: 5 per light (2 datasets), 3 per container
        expected[tenant] = READINGS * (LIGHTS * 5 + 3) + 1
        reply = await server.post("/subscriptions", {
            "type": "Subscription",
            "entities": [{"type": "WasteContainer"}],
            "watchedAttributes": ["fillingLevel"],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify", "accept": "application/json",
                                          "receiverInfo": [{"key": "Authorization", "value": SECRET_HEADER}]}},
        }, headers=headers)
        assert reply.status == 201, reply.raw
    return expected


def jonction(
    *args: str | Path, env: dict[str, str] | None = None, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a child process (its own event loop, its own exit code)."""
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=240)
    if check is not None:
        assert proc.returncode == check, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


async def ajonction(
    *args: str | Path, env: dict[str, str] | None = None, check: int | None = 0
) -> subprocess.CompletedProcess[str]:
    """:func:`jonction` off the event loop, so that a store server of the test answers meanwhile."""
    return await asyncio.to_thread(jonction, *args, env=env, check=check)


def store_args(data: Path, database: str | None) -> list[str]:
    """--data or --database for the backend under test."""
    return ["--database", database] if database else ["--data", str(data)]


def manifest(path: Path) -> dict[str, Any]:
    """The manifest of a bundle directory."""
    result: dict[str, Any] = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    return result


def content_sums(path: Path) -> dict[str, tuple[str, int]]:
    """(SHA-256, lines) of every entities and history file of a bundle, by path."""
    return {f["path"]: (f["sha256"], f["lines"]) for f in manifest(path)["files"]
            if f["kind"] in ("entities", "history")}


def lines(path: Path) -> list[dict[str, Any]]:
    """The records of one NDJSON file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
