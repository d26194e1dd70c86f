"""`jonction run` with no config: the demo territory shows live entities that change over time."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.contract import discover
from tests.conftest import free_port
from tests.runtime.support import eventually

JONCTION = str(Path(sys.executable).with_name("jonction"))
LINK = '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; ' \
       'type="application/ld+json"'


def expected_types() -> list[str]:
    """Demo entity types whose adapter and simulator are installed."""
    types = ["Streetlight"]
    sims = {ep.name for ep in metadata.entry_points(group="jonction.simulators")}
    if "chirpstack_v4" in discover() and "lorawan" in sims:
        types += ["WasteContainer", "AirQualityObserved"]
    if "talq" in discover() and "talq" in sims:
        types += ["StreetlightControlCabinet"]  # the TALQ lighting network (its lamps are Streetlights too)
    return types


async def fetch(port: int, entity_type: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/ngsi-ld/v1/entities"
    try:
        async with aiohttp.ClientSession() as http, http.get(
            url, params={"type": entity_type, "limit": "100"}, headers={"Link": LINK}
        ) as resp:
            return list(await resp.json()) if resp.status == 200 else []
    except aiohttp.ClientError:
        return []


def fingerprint(items: list[dict[str, Any]]) -> dict[str, str]:
    """Per entity, the newest observedAt of any attribute: it moves when readings are new."""
    out: dict[str, str] = {}
    for item in items:
        times = [a.get("observedAt", "") for a in item.values() if isinstance(a, dict)]
        out[item["id"]] = max(times, default="")
    return out


def start_demo(port: int, tmp: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen([JONCTION, "run", "--port", str(port), "--data", str(tmp / "data")],
                                cwd=tmp, stdout=subprocess.DEVNULL, stderr=sink)


@pytest.mark.slow
async def test_demo_territory_has_live_entities_of_each_type(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    proc = start_demo(port, tmp_path, log)
    try:
        first: dict[str, dict[str, str]] = {}
        for entity_type in expected_types():
            items = await eventually(lambda t=entity_type: fetch(port, t), within=60,  # type: ignore[misc]  # binds this type
                                     what=f"demo {entity_type} entities")
            first[entity_type] = fingerprint(items)
        # the newcomer's very first request: no filter, no @context, no tenant header
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{port}/ngsi-ld/v1/entities") as resp:
            assert resp.status == 200
            assert len(await resp.json()) > 0
        for entity_type, before in first.items():
            async def changed(t: str = entity_type, b: dict[str, str] = before) -> bool:
                now = fingerprint(await fetch(port, t))
                return any(now.get(i, "") > v for i, v in b.items())
            await eventually(changed, within=90, what=f"{entity_type} values changing over time")
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text(encoding="utf-8")[-2000:]


async def test_demo_prints_the_simulated_vendor_port_and_credentials_that_work() -> None:
    # The onboarding guide asks the reader to fetch a page from the simulated platform: the demo
    # prints where it listens and with which credentials, and those lines must work as printed.
    import shlex

    from adapters.kit.simulators.streetlighting import create
    from gateway.runtime.demo import demo_config, demo_notes

    cfg = demo_config()
    notes = demo_notes(cfg)
    sim_cfg = next(s for s in cfg.simulators if s.name == "streetlighting")
    port = int(sim_cfg.options["port"])
    assert f"http://127.0.0.1:{port}/api/v1/luminarias" in notes[0] and "jonction-demo / secret demo-secret" in notes[0]
    token_cmd = shlex.split(notes[1].split("token:", 1)[1])
    user, _, secret = token_cmd[token_cmd.index("-u") + 1].partition(":")
    sim = create(sim_cfg.options)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as http:
            import base64

            basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
            async with http.post(token_cmd[-1], data={"grant_type": "client_credentials"},
                                 headers={"Authorization": f"Basic {basic}"}) as resp:
                assert resp.status == 200
                token = (await resp.json())["access_token"]
            page_url = shlex.split(notes[2].split("a page:", 1)[1])[-3]
            async with http.get(page_url, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
                assert (await resp.json())["luminarias"]
    finally:
        await sim.stop()
