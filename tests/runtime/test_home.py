"""``/`` answers the console, which links to every API the process serves, not a 404."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.store.app import create_root_app
from gateway.store.settings import StoreSettings
from tests.conftest import free_port
from tests.runtime.support import config, running


async def _links_answer(session: aiohttp.ClientSession, base: str, href: str) -> int:
    async with session.get(base + href) as resp:
        return resp.status


async def test_gateway_root_links_to_apis_that_answer(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as (base, _app), aiohttp.ClientSession() as session:
        async with session.get(base + "/") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            page = await resp.text()
        hrefs = [h for h in re.findall(r'<a href="([^"]+)"', page) if not h.startswith("#")]  # "#": console pages
        assert {"/admin/sources", "/metrics", "/readyz"} <= set(hrefs)
        assert any(h.startswith("/ngsi-ld/v1/entities") for h in hrefs)
        assert "http://" not in page and "https://" not in page  # offline: no asset from elsewhere
        for href in hrefs:  # every link leads somewhere real (no 404 from the page itself)
            assert await _links_answer(session, base, href.replace("&amp;", "&")) == 200, href
        async with session.get(base + "/", headers={"Accept": "application/json"}) as resp:
            body = await resp.json()
        assert body["name"] == "jonction" and [link["href"] for link in body["links"]] == hrefs


async def test_store_root_links_under_its_base_path(tmp_path: Path) -> None:
    settings = StoreSettings(data_dir=tmp_path, base_path="/broker/v1", allow_unfiltered_queries=True)
    runner = web.AppRunner(create_root_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                page = await resp.text()
            hrefs = [h for h in re.findall(r'<a href="([^"]+)"', page) if not h.startswith("#")]
            assert hrefs and all(h.startswith("/broker/v1/") for h in hrefs)
            for href in hrefs:
                assert await _links_answer(session, f"http://127.0.0.1:{port}", href) == 200, href
    finally:
        await runner.cleanup()
