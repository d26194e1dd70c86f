"""End to end: the simulated street-lighting API, the REST mapping poller, the runtime, the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.kit.simulators.streetlighting import create as create_simulator
from adapters.rest_mapping import RestMappingAdapter
from gateway.runtime.state import RUNTIME
from tests.runtime.support import config, eventually, running


async def test_vendor_api_to_store_with_tokens_wearing_out(tmp_path: Path) -> None:
    # Tokens are refused after two uses: the poller renews them while paging and loses nothing.
    sim = create_simulator({"count": 12, "page_size": 5, "token_max_uses": 2})
    await sim.start()
    try:
        source = {
            "name": "eclairage", "adapter": "rest_mapping", "tenant": "",
            "config": {
                "url": f"{sim.url}/api/v1/luminarias", "interval": 0.5,
                "auth": {"type": "oauth2", "token_url": f"{sim.url}/oauth/token", "client_id": "jonction-demo",
                         "client_secret": "demo-secret"},
                "pagination": {"style": "page", "param": "pagina", "total_pages": "totalPaginas"},
                "incremental": {"select": "luminarias[].ultimaLectura", "param": "desde"},
                "mapping_file": "builtin:luminarias.yaml",
            },
        }
        async with running(config(tmp_path, sources=[source]), adapters={"rest_mapping": RestMappingAdapter}) as (
            _, app,
        ):
            rt = app[RUNTIME]
            ids = [f"urn:ngsi-ld:Streetlight:LUM-{n:04d}" for n in range(1, 13)]

            async def all_stored() -> list[Any] | None:
                found = [await rt.embedded_store.get("", i) for i in ids]
                return found if all(found) else None

            stored = await eventually(all_stored, what="the 12 luminaires in the store")
        assert sim.stats["rejected_tokens"] >= 1
        assert all(e["lifetimePowerConsumption"]["unitCode"] == "KWH" for e in stored)
        assert all(0 <= e["illuminanceLevel"]["value"] <= 1 for e in stored)
        broken = next(e for e in stored if e["id"].endswith("LUM-0008"))
        assert broken["status"]["value"] == "defectiveLamp"
        # The watermark survived in the runtime's state folder for this source.
        assert (tmp_path / "data/state/eclairage/eclairage.json").exists()
    finally:
        await sim.stop()


async def test_one_bad_item_among_23_is_one_dead_letter_and_22_are_stored(tmp_path: Path) -> None:
    # The default split is per item: an untranslatable item must not take the rest of its page with it.
    items = [{"code": f"SL-{n}", "lon": 3.87 + n / 1000, "lat": 43.61, "dim": n, "updatedAt": "2026-01-01T10:00:00Z"}
             for n in range(23)]
    items[11]["dim"] = "not a number"

    async def page(request: web.Request) -> web.Response:
        return web.json_response({"items": items})

    app = web.Application()
    app.router.add_get("/lights", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        source = {
            "name": "lights", "adapter": "rest_mapping", "tenant": "",
            "config": {
                "url": str(server.make_url("/lights")), "interval": 60,
                "mapping": {
                    "entity_type": "Streetlight", "items": "items", "id": "urn:ngsi-ld:Streetlight:{code}",
                    "attributes": {
                        "location": {"point": {"x": "lon", "y": "lat"}},
                        "status": {"value": "ok"},
                        "illuminanceLevel": {"select": "dim", "scale": 0.01, "observed_at": "updatedAt"},
                    },
                },
            },
        }
        async with running(config(tmp_path, sources=[source]), adapters={"rest_mapping": RestMappingAdapter}) as (
            base, app_,
        ):
            rt = app_[RUNTIME]
            good = [f"urn:ngsi-ld:Streetlight:SL-{n}" for n in range(23) if n != 11]

            async def all_good_stored() -> list[Any] | None:
                found = [await rt.embedded_store.get("", i) for i in good]
                return found if all(found) else None

            stored = await eventually(all_good_stored, what="the 22 good streetlights in the store")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/admin/deadletters") as resp:
                    letters = (await resp.json())["deadLetters"]
            assert await rt.embedded_store.get("", "urn:ngsi-ld:Streetlight:SL-11") is None
        assert len(stored) == 22
        assert len(letters) == 1
        assert letters[0]["stage"] == "translation" and "item 11" in letters[0]["reason"]
    finally:
        await server.close()
