"""Discovery (/types, /attributes), hosted @contexts (/jsonldContexts) and the `jonction store` command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ROOT, free_port
from tests.store.conftest import BACKENDS, CONTEXT_REL, LINK_JONCTION, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""


@pytest.fixture
async def typed(server: StoreServer) -> StoreServer:
    """Two street lights and a device."""
    rel = {"type": "Relationship", "object": "urn:ngsi-ld:Device:1"}
    await server.post("/entities", streetlight(1, refDevice=rel))
    await server.post("/entities", streetlight(2))
    await server.post("/entities", {"id": "urn:ngsi-ld:Device:1", "type": "Device",
                                    "batteryLevel": {"type": "Property", "value": 0.5}})
    return server


async def test_types_list(typed: StoreServer) -> None:
    r = await typed.get("/types")
    assert r.status == 200
    body = r.json
    assert body["type"] == "EntityTypeList"
    assert body["id"].startswith("urn:ngsi-ld:EntityTypeList:")
    assert body["typeList"] == ["Device", "Streetlight"]


async def test_types_details(typed: StoreServer) -> None:
    r = await typed.get("/types?details=true")
    by_name = {t["typeName"]: t for t in r.json}
    assert by_name["Streetlight"]["type"] == "EntityType"
    assert by_name["Streetlight"]["id"] == "https://uri.etsi.org/ngsi-ld/default-context/Streetlight"
    assert by_name["Streetlight"]["attributeNames"] == ["location", "powerState", "refDevice"]
    assert (await typed.get("/types?details=maybe")).problem() == "BadRequestData"


async def test_type_info(typed: StoreServer) -> None:
    r = await typed.get("/types/Streetlight")
    body = r.json
    assert body["type"] == "EntityTypeInfo" and body["entityCount"] == 2
    details = {a["attributeName"]: a["attributeTypes"] for a in body["attributeDetails"]}
    assert details == {"location": ["GeoProperty"], "powerState": ["Property"], "refDevice": ["Relationship"]}
    assert (await typed.get("/types/Nothing")).problem() == "ResourceNotFound"


async def test_type_info_by_iri(typed: StoreServer) -> None:
    r = await typed.get("/types/https%3A%2F%2Furi.etsi.org%2Fngsi-ld%2Fdefault-context%2FDevice")
    assert r.status == 200 and r.json["entityCount"] == 1


async def test_attributes(typed: StoreServer) -> None:
    r = await typed.get("/attributes")
    assert r.json["type"] == "AttributeList"
    assert r.json["attributeList"] == ["batteryLevel", "location", "powerState", "refDevice"]
    details = {a["attributeName"]: a for a in (await typed.get("/attributes?details=true")).json}
    assert details["powerState"]["typeNames"] == ["Streetlight"]
    one = (await typed.get("/attributes/batteryLevel")).json
    assert one["type"] == "Attribute" and one["attributeTypes"] == ["Property"] and one["typeNames"] == ["Device"]
    assert (await typed.get("/attributes/nothing")).problem() == "ResourceNotFound"


async def test_discovery_compacts_with_request_context(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1), headers={"Link": LINK_JONCTION})
    assert (await server.get("/types", headers={"Link": LINK_JONCTION})).json["typeList"] == ["Streetlight"]
    core_view = (await server.get("/types")).json["typeList"]
    assert core_view == ["https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"]


async def test_discovery_ld_json(typed: StoreServer) -> None:
    r = await typed.get("/types", headers={"Accept": "application/ld+json"})
    assert "@context" in r.json


async def test_hosted_context_lifecycle(server: StoreServer) -> None:
    doc = {"@context": {"lum": "https://example.org/ns/luminosity", "Lamp": "https://example.org/ns/Lamp"}}
    r = await server.post("/jsonldContexts", doc)
    assert r.status == 201
    url = r.headers["Location"]
    assert url.startswith(server.base + "/jsonldContexts/")
    listed = (await server.get("/jsonldContexts")).json
    assert listed == [url]
    details = (await server.get("/jsonldContexts?details=true")).json
    assert details[0]["kind"] == "Hosted" and details[0]["URL"] == url
    local_id = url.rsplit("/", 1)[1]
    got = await server.get(f"/jsonldContexts/{local_id}")
    assert got.json == doc
    assert got.headers["Content-Type"].startswith("application/ld+json")
    # Use it through a Link header: terms expand with the hosted definitions.
    link = {"Link": f'<{url}>; rel="{CONTEXT_REL}"; type="application/ld+json"'}
    entity = {"id": "urn:ngsi-ld:Lamp:1", "type": "Lamp", "lum": {"type": "Property", "value": 3}}
    assert (await server.post("/entities", entity, headers=link)).status == 201
    core_view = (await server.get("/entities/urn:ngsi-ld:Lamp:1")).json
    assert core_view["type"] == "https://example.org/ns/Lamp"
    assert core_view["https://example.org/ns/luminosity"]["value"] == 3
    assert (await server.get("/entities/urn:ngsi-ld:Lamp:1", headers=link)).json == entity
    # Survives a restart.
    await server.restart()
    assert (await server.get(f"/jsonldContexts/{local_id}")).json == doc
    assert (await server.get("/entities/urn:ngsi-ld:Lamp:1", headers=link)).json == entity
    assert (await server.delete(f"/jsonldContexts/{local_id}")).status == 204
    assert (await server.get(f"/jsonldContexts/{local_id}")).problem() == "ResourceNotFound"
    assert (await server.delete(f"/jsonldContexts/{local_id}")).problem() == "ResourceNotFound"
    assert (await server.get("/entities/urn:ngsi-ld:Lamp:1", headers=link)).problem() == "LdContextNotAvailable"


@pytest.mark.parametrize("body", [{"lum": "x"}, [], {"@context": "https://example.org/remote.jsonld"}, {"@context": 5}])
async def test_hosted_context_errors(server: StoreServer, body: object) -> None:
    r = await server.post("/jsonldContexts", body)
    assert r.status in (400, 504)
    assert r.problem() in ("BadRequestData", "LdContextNotAvailable")


async def test_contexts_kind_parameter(server: StoreServer) -> None:
    assert (await server.get("/jsonldContexts?kind=Cached")).json == []
    assert (await server.get("/jsonldContexts?kind=nope")).problem() == "BadRequestData"


@pytest.mark.parametrize("path", ["/entityMaps", "/info/sourceIdentity"])
async def test_not_implemented_parts_are_problem_details(server: StoreServer, path: str) -> None:
    r = await server.get(path)
    assert r.status == 501
    assert r.problem() == "NotImplemented"


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("args", [["--host", "0.0.0.0"], ["--port", "70000"]])
async def test_cli_refuses_bad_settings(tmp_path: Path, args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JONCTION_STORE_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "store", "--data", str(tmp_path), *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"error:" in err and b"Traceback" not in err


async def test_cli_serves_and_stops(tmp_path: Path) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "store", "--port", str(port), "--data", str(tmp_path),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.decode().strip() == f"jonction store: serving NGSI-LD at http://127.0.0.1:{port}/ngsi-ld/v1"
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
            async with session.post(base + "/entities", json=streetlight(1)) as resp:
                assert resp.status == 201
            async with session.get(base + "/entities/urn:ngsi-ld:Streetlight:1") as resp:
                assert (await resp.json())["id"] == "urn:ngsi-ld:Streetlight:1"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
    assert proc.returncode == 0
    assert (tmp_path / "store.sqlite").exists()


async def _start_cli(tmp_path: Path, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "store", "--port", str(port), "--data", str(tmp_path),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert b"serving NGSI-LD" in line
    return proc


async def test_acknowledged_writes_survive_a_killed_process(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
    proc = await _start_cli(tmp_path, port)
    try:
        async with aiohttp.ClientSession() as session:
            batch = [streetlight(i) for i in range(300)]
            async with session.post(base + "/entityOperations/upsert", json=batch) as resp:
                assert resp.status == 201
            async with session.patch(base + "/entities/urn:ngsi-ld:Streetlight:7/attrs",
                                     json={"powerState": {"type": "Property", "value": "off"}}) as resp:
                assert resp.status == 204
    finally:
        proc.kill()  # no clean shutdown: what was acknowledged must already be on disk
        await asyncio.wait_for(proc.wait(), 60)
    proc = await _start_cli(tmp_path, port)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/entities", params={"type": "Streetlight", "count": "true",
                                                               "limit": "0"}) as resp:
                assert resp.headers["NGSILD-Results-Count"] == "300"
            async with session.get(base + "/entities/urn:ngsi-ld:Streetlight:7?options=keyValues") as resp:
                assert (await resp.json())["powerState"] == "off"
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
