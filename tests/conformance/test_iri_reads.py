"""The checker finds entities stored under Smart Data Model IRIs (as any broker stores them) and judges them.

Entities written with the jonction @context (what the gateway sends) are stored with their
official IRIs; a query ``?type=WasteContainer`` without a @context names another IRI (the core
default vocabulary) and finds nothing. The checker names types by IRI, so it needs no @context.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conformance.context import compact_entity, type_selectors
from conformance.profile import load_profile
from conformance.reports import validate_report
from conformance.runner import run
from conformance.targets import EndpointTarget
from tests.conformance.support import TOKEN, model_example, running_store
from tests.conftest import free_port, needs_shared
from tests.runtime.support import eventually

JONCTION_LINK = '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; ' \
                'type="application/ld+json"'
WASTE = "https://smartdatamodels.org/dataModel.WasteManagement/WasteContainer"


def test_type_selectors_and_compaction_are_offline() -> None:
    assert type_selectors("WasteContainer") == [WASTE, "WasteContainer"]
    assert type_selectors("JcProbeabc") == ["JcProbeabc"]
    read = {"id": "urn:ngsi-ld:WasteContainer:1", "type": WASTE,
            "https://smartdatamodels.org/dataModel.WasteManagement/fillingLevel": {
                "type": "Property", "value": 0.5, "observedAt": "2026-01-01T00:00:00Z",
                "https://uri.etsi.org/ngsi-ld/default-context/quality": {"type": "Property", "value": "good"}},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.8, 43.6]}}}
    assert compact_entity(read) == {
        "id": "urn:ngsi-ld:WasteContainer:1", "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": 0.5, "observedAt": "2026-01-01T00:00:00Z",
                         "quality": {"type": "Property", "value": "good"}},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.8, 43.6]}}}


async def seed_with_context(url: str, entities: list[dict[str, Any]]) -> None:
    """Upsert as the gateway does: Smart Data Model terms with the jonction @context (Link header)."""
    async with aiohttp.ClientSession() as s, s.post(
            f"{url}/ngsi-ld/v1/entityOperations/upsert", json=entities,
            headers={"Authorization": f"Bearer {TOKEN}", "Link": JONCTION_LINK}) as resp:
        assert resp.status in (201, 204), await resp.text()


@needs_shared  # the upstream normalized examples
async def test_read_only_checker_judges_entities_stored_under_iris(tmp_path: Path) -> None:
    profile = load_profile("territoire-essentiel")
    async with running_store(tmp_path / "store") as url:
        extra = [dict(model_example("WasteContainer"), id=f"urn:ngsi-ld:WasteContainer:jc-iri-{i}") for i in range(3)]
        await seed_with_context(url, [model_example("WasteContainer"), model_example("Streetlight"), *extra])
        async with aiohttp.ClientSession() as s, s.get(f"{url}/ngsi-ld/v1/types") as resp:
            stored = (await resp.json())["typeList"]
        assert WASTE in stored and "WasteContainer" not in stored  # stored by IRI, as in any broker
        target = EndpointTarget(url=url, token=TOKEN, token_source="test", allow_write=False)
        report = await run(profile, target)
    assert validate_report(report) == []
    results = {r["id"]: r for r in report["results"]}
    for cid in ("L1-SDM-020", "L1-SDM-013", "L2-RET-001", "L2-QRY-001", "L2-QRY-004", "L2-TYP-001"):
        assert results[cid]["verdict"] == "pass", (cid, results[cid]["reason"])
    queried = {x["request"]["url"] for r in report["results"] for x in r["evidence"]["exchanges"]}
    assert any("dataModel.WasteManagement" in u for u in queried)


def start_demo(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    """``jonction run`` with no config (the demo territory) on ``port``; its log in ``tmp``."""
    jonction = str(Path(sys.executable).with_name("jonction"))
    with (tmp / "demo.log").open("wb") as log:
        return subprocess.Popen([jonction, "run", "--port", str(port), "--data", str(tmp / "data")],
                                cwd=tmp, stdout=subprocess.DEVNULL, stderr=log)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
async def test_check_against_the_demo_judges_its_own_entities(tmp_path: Path) -> None:
    """``jonction check`` against ``jonction run``'s demo: L1 finds the demo's Streetlights and judges them."""
    port = free_port()
    proc = start_demo(port, tmp_path)
    base = f"http://127.0.0.1:{port}"

    async def streetlights() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(
                    f"{base}/ngsi-ld/v1/entities",
                    params={"type": type_selectors("Streetlight")[0], "limit": "1"}) as resp:
                return resp.status == 200 and bool(await resp.json())
        except aiohttp.ClientError:
            return False

    try:
        await eventually(streetlights, within=60, what="demo Streetlight entities")
        report = await run(load_profile("territoire-essentiel"), EndpointTarget(url=base, allow_write=False))
    finally:
        stop(proc)
    results = {r["id"]: r for r in report["results"]}
    streetlight = results["L1-SDM-013"]
    assert streetlight["verdict"] == "pass", streetlight["reason"]
    judged = [r for r in report["results"] if r["level"] == "L1" and r["verdict"] != "skip"]
    assert len(judged) >= 5, [(r["id"], r["verdict"], r["reason"]) for r in report["results"] if r["level"] == "L1"]
