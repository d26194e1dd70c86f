"""A client that follows the @context Link the gateway announces can read the gateway's own store with it."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from gateway.runtime.state import RUNTIME
from tests.runtime.support import FakeAdapter, config, eventually, running


async def test_the_announced_context_url_resolves_in_the_embedded_store(tmp_path: Path) -> None:
    cfg = config(tmp_path, server={"host": "127.0.0.1", "port": 0, "public_url": "https://gw.ville-a.example"})
    async with running(cfg) as (base, app):
        rt = app[RUNTIME]
        await FakeAdapter.instances["bins"].send({"id": "m1", "device": "bin-1", "fill": 42,
                                                  "at": "2026-01-01T10:00:00Z"})
        await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:bin-1"), what="store write")
        assert cfg.context_url == "https://gw.ville-a.example/contexts/jonction.jsonld"
        link = f'<{cfg.context_url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/ngsi-ld/v1/entities?type=WasteContainer", headers={"Link": link}) as resp:
                assert resp.status == 200, await resp.text()
                entities = await resp.json()
            async with http.get(f"{base}/ngsi-ld/v1/entities?type=WasteContainer") as resp:
                without = await resp.json()
            # the document the Link names is the one the gateway serves
            async with http.get(f"{base}/contexts/jonction.jsonld") as resp:
                served = await resp.json(content_type=None)
        assert [e["id"] for e in entities] == ["urn:ngsi-ld:WasteContainer:bin-1"]
        assert entities[0]["fillingLevel"]["value"] == 0.42  # short names: the context was applied
        assert without == []  # without the Link, WasteContainer is the core default vocabulary's
        assert "fillingLevel" in served["@context"]
