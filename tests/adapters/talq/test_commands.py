"""TALQ commands through the NGSI-LD API of the embedded store: the gateway down, jonction restarted, delivered once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from adapters.talq import TalqAdapter
from adapters.talq.simulator import create
from gateway.runtime.commands import Commands
from gateway.runtime.state import RUNTIME
from tests.conftest import free_port
from tests.runtime.support import config, eventually, running

LINK = ('<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; '
        'type="application/ld+json"')


def _config(tmp: Path, cms_port: int, gw_port: int) -> Any:
    source = {"name": "talq", "adapter": "talq", "tenant": "",
              "config": {"http": {"listen": {"host": "127.0.0.1", "port": cms_port, "path": "/talq"}},
                         "gateway": {"url": f"http://127.0.0.1:{gw_port}/talq", "timeout": 5},
                         "state_dir": str(tmp / "talq-state")}}
    return config(tmp, sources=[source])


def _commands(app: Any) -> Commands:
    """The running gateway's commands (the embedded store is on in these tests)."""
    commands = app[RUNTIME].commands
    assert commands is not None
    return commands


async def _entity(app: Any, entity_id: str, attribute: str, value: Any = None) -> Any:
    found = await app[RUNTIME].embedded_store.get("", entity_id)
    if not found or attribute not in found:
        return None
    return found if value is None or found[attribute].get("value") == value else None


async def test_gateway_down_then_a_restart_then_back_delivers_the_dimming_exactly_once(tmp_path: Path) -> None:
    cms_port, gw_port = free_port(), free_port()
    cfg = _config(tmp_path, cms_port, gw_port)
    options = {"cms_url": f"http://127.0.0.1:{cms_port}/talq", "port": gw_port, "lamps": 3, "interval": 0.2}
    gw = create(options)
    lamp_id = f"urn:ngsi-ld:Streetlight:{gw.lamps[0].address}"
    async with running(cfg, adapters={"talq": TalqAdapter}) as (base, app):
        await gw.start()
        try:
            await eventually(lambda: _entity(app, lamp_id, "illuminanceLevel"), what="the lamp in the store")
        finally:
            await gw.stop()  # the TALQ gateway goes down
        async with aiohttp.ClientSession() as http, http.post(
                f"{base}/ngsi-ld/v1/entities/{lamp_id}/attrs", headers={"Link": LINK},
                json={"dimmingLevel": {"type": "Property", "value": 35}}) as resp:
            assert resp.status == 204, await resp.text()
        commands = _commands(app)
        await eventually(lambda: commands.listing()[0]["attempts"] >= 2, what="retries while the gateway is down")
        listed = commands.listing()
        assert len(listed) == 1 and listed[0]["status"] == "pending"
        pending = await eventually(lambda: _entity(app, lamp_id, "dimmingLevelCommand", "pending"),
                                   what="dimmingLevelCommand pending")
        assert "unreachable" in pending["dimmingLevelCommand"]["detail"]["value"]
        assert pending["dimmingLevelCommand"]["requestedValue"]["value"] == 35
        cid = listed[0]["id"]
    assert gw.stats["commands"] == 0, "nothing reached the gateway while it was down"
    # jonction restarts (the command row is on disk); the gateway comes back on the same address.
    back = create(options)
    async with running(cfg, adapters={"talq": TalqAdapter}) as (base, app):
        await back.start()
        try:
            done = await eventually(lambda: _entity(app, lamp_id, "dimmingLevelCommand", "acknowledged"),
                                    what="the command acknowledged after the restart")
            assert done["dimmingLevelCommand"]["commandId"]["value"] == cid
            await eventually(lambda: _entity(app, lamp_id, "illuminanceLevel", 0.35),
                             what="the lamp reporting 35 %")
            commands = _commands(app)
            assert [(c["id"], c["status"]) for c in commands.listing()] == [(cid, "acknowledged")]
            overrides = [body for method, path, body in back.received if path == "/override-commands"]
            assert back.stats["commands"] == 1 and len(overrides) == 1, "delivered exactly once"
            assert overrides[0]["targetCommand"]["state"] == {"name": "LevelState", "value": 35}
            assert overrides[0]["targetCommand"]["cmsRefId"] == cid
            assert overrides[0]["addresses"] == [{"resource": "devices", "address": back.lamps[0].address}]
        finally:
            await back.stop()
