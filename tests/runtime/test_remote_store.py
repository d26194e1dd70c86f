"""A second jonction store as the remote broker (profile jonction): stopped mid-stream, restarted, nothing lost."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.runtime.state import RUNTIME
from gateway.store.app import create_root_app
from gateway.store.settings import StoreSettings
from tests.loopback import Loopback
from tests.runtime.support import FakeAdapter, config, eventually, running


class RemoteStore(Loopback):
    """A jonction store on its own port and SQLite file, startable and stoppable."""

    def __init__(self, data: Path) -> None:
        super().__init__()
        self.settings = StoreSettings(data_dir=data, host="127.0.0.1")

    def application(self) -> web.Application:
        """The store's app over its file."""
        return create_root_app(self.settings)

    async def entities(self, tenant: str) -> dict[str, dict[str, Any]]:
        headers = {"Link": '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; '
                           'type="application/ld+json"'}
        if tenant:
            headers["NGSILD-Tenant"] = tenant
        async with aiohttp.ClientSession() as http, http.get(
            f"{self.url}/ngsi-ld/v1/entities", params={"type": "WasteContainer", "limit": "1000"}, headers=headers
        ) as resp:
            if resp.status != 200:
                return {}
            return {e["id"]: e for e in await resp.json()}


@pytest.mark.slow
async def test_remote_store_stopped_mid_stream_gets_everything(tmp_path: Path) -> None:
    FakeAdapter.instances.clear()
    remote = RemoteStore(tmp_path / "remote")
    await remote.start()
    cfg = config(tmp_path, sinks=[{"name": "remote", "url": remote.url, "profile": "jonction"}],
                 sources=[{"name": "bins", "adapter": "fake", "tenant": "sete"}])
    devices, rounds = 25, 8
    try:
        async with running(cfg) as (base, app):
            rt = app[RUNTIME]
            adapter = FakeAdapter.instances["bins"]

            async def round_(r: int) -> None:
                await asyncio.gather(*(adapter.send(
                    {"id": f"{r}-{d}", "device": f"bin-{d}", "fill": (r * 10 + d) % 100,
                     "at": f"2026-01-01T10:{r:02d}:{d:02d}Z"}) for d in range(devices)))

            for r in range(3):
                await round_(r)
            await eventually(lambda: rt.outbox is not None and rt.outbox.depth("remote") == 0, what="first rounds")
            await remote.stop()  # the broker goes down mid-stream
            for r in range(3, 6):
                await round_(r)
            await eventually(lambda: rt.publishers["remote"].state == "open", what="circuit open")
            async with aiohttp.ClientSession() as http, http.get(f"{base}/admin/outbox") as resp:
                backlog = await resp.json()
            assert backlog["entities"] == 3 * devices
            await remote.start()
            for r in range(6, rounds):
                await round_(r)
            await eventually(lambda: rt.outbox is not None and rt.outbox.depth("remote") == 0, within=60,
                             what="backlog drained")
            embedded_count = await rt.embedded_store.count("sete")
        state = await remote.entities("sete")
        assert len(state) == devices == embedded_count
        for d in range(devices):
            item = state[f"urn:ngsi-ld:WasteContainer:bin-{d}"]
            last = rounds - 1
            assert item["fillingLevel"]["value"] == ((last * 10 + d) % 100) / 100
            assert item["fillingLevel"]["observedAt"] == f"2026-01-01T10:{last:02d}:{d:02d}Z"
    finally:
        await remote.stop()
