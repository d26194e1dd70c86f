"""End to end: the simulated street-lighting API, the REST mapping poller, the runtime, the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.rest_mapping import RestMappingAdapter
from adapters.simulators.streetlighting import create as create_simulator
from gateway.runtime.app import RUNTIME
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
                found = [await rt.store.get("", i) for i in ids]
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
