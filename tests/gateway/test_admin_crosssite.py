"""The runtime's admin API and embedded store: tokens on loopback, and cross-site calls refused (403)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.runtime.state import RUNTIME
from tests.runtime.support import FakeAdapter, config, running

TOKEN = "admin-token-0123456789"
EVIL_HOST = {"Host": "evil.example"}
EVIL_ORIGIN = {"Origin": "http://evil.example"}
PLAIN = {"Content-Type": "text/plain"}
ENTITY = {"id": "urn:ngsi-ld:WasteContainer:x", "type": "WasteContainer",
          "fillingLevel": {"type": "Property", "value": 0.5}}


async def _call(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
                body: bytes | None = None) -> tuple[int, str, Any]:
    async with http.request(method, url, headers=headers, data=body) as resp:
        text = await resp.text()
        return resp.status, resp.headers.get("Content-Type", ""), json.loads(text) if text else None


@pytest.mark.parametrize("with_token", [False, True], ids=["no-token", "token"])
async def test_cross_site_admin_calls_are_refused_on_loopback(tmp_path: Path, with_token: bool) -> None:
    overrides: dict[str, Any] = {"admin": {"token": TOKEN}} if with_token else {}
    async with running(config(tmp_path, **overrides)) as (base, app):
        rt = app[RUNTIME]
        first = FakeAdapter.instances["bins"]
        await first.ready()
        auth = {"Authorization": f"Bearer {TOKEN}"} if with_token else {}
        url = f"{base}/admin/sources/bins/restart"
        async with aiohttp.ClientSession() as http:
            for headers, body in (
                ({**EVIL_HOST, **EVIL_ORIGIN, **PLAIN}, b"x"),  # the reported attack, verbatim
                (EVIL_HOST, None),  # DNS rebinding: the page's own name resolves to 127.0.0.1
                (EVIL_ORIGIN, None),  # a cross-site fetch or form
                ({"Origin": "null"}, None),  # a sandboxed frame
                (PLAIN, b"x"),  # a text/plain body never comes from a legitimate admin client
                ({"Content-Type": "application/x-www-form-urlencoded"}, None),  # an empty form post
                ({"Content-Type": "application/xml"}, b"<x/>"),
                ({"Sec-Fetch-Site": "cross-site"}, None),
            ):
                status, ctype, doc = await _call(http, "POST", url, {**auth, **headers}, body)
                assert status == 403, headers
                assert ctype.startswith("application/problem+json") and doc["status"] == 403, doc
            # reads of the admin API are checked too (DNS rebinding would read dead letters)
            status, _, _ = await _call(http, "GET", f"{base}/admin/deadletters", {**auth, **EVIL_HOST})
            assert status == 403
            status, _, _ = await _call(http, "DELETE", f"{base}/admin/deadletters/1", {**auth, **EVIL_ORIGIN})
            assert status == 403
            assert FakeAdapter.instances["bins"] is first and rt.sources["bins"].status.restarts == 0
            # the embedded store's writes are checked the same way
            status, _, _ = await _call(http, "POST", f"{base}/ngsi-ld/v1/entities",
                                       {**auth, **EVIL_HOST, "Content-Type": "application/json"},
                                       json.dumps(ENTITY).encode())
            assert status == 403
            assert await rt.embedded_store.get("", str(ENTITY["id"])) is None

            # legitimate calls pass: curl (no Origin, no body), and a same-origin page posting JSON
            status, _, doc = await _call(http, "POST", url, auth)
            assert status == 200, doc
            second = FakeAdapter.instances["bins"]
            assert second is not first
            same = {**auth, "Origin": base, "Content-Type": "application/json"}
            status, _, doc = await _call(http, "POST", url, same, b"{}")
            assert status == 200, doc
            status, _, doc = await _call(http, "POST", f"{base}/admin/deadletters/replay", same, b'{"limit": 5}')
            assert status == 200 and doc["replayed"] == 0
            status, _, _ = await _call(http, "GET", f"{base}/admin/sources",
                                       {**auth, "Host": base.removeprefix("http://").replace("127.0.0.1", "localhost")})
            assert status == 200
            # health and metrics stay reachable for probes whatever their Host
            status, _, _ = await _call(http, "GET", f"{base}/healthz", EVIL_HOST)
            assert status == 200


async def test_admin_and_store_writes_need_the_configured_token_on_loopback(tmp_path: Path) -> None:
    async with running(config(tmp_path, admin={"token": TOKEN})) as (base, app):
        assert app[RUNTIME].config.loopback
        async with aiohttp.ClientSession() as http:
            status, _, _ = await _call(http, "POST", f"{base}/admin/sources/bins/restart", {})
            assert status == 401
            body = json.dumps(ENTITY).encode()
            status, _, _ = await _call(http, "POST", f"{base}/ngsi-ld/v1/entities",
                                       {"Content-Type": "application/json"}, body)
            assert status == 401
            status, _, _ = await _call(http, "POST", f"{base}/ngsi-ld/v1/entities",
                                       {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
                                       body)
            assert status == 201


async def test_no_token_on_loopback_keeps_the_admin_open(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as (base, _app):
        async with aiohttp.ClientSession() as http:
            status, _, doc = await _call(http, "GET", f"{base}/admin/sources", {})
            assert status == 200 and doc["sources"][0]["name"] == "bins"
            status, _, _ = await _call(http, "POST", f"{base}/ngsi-ld/v1/entities",
                                       {"Content-Type": "application/json"}, json.dumps(ENTITY).encode())
            assert status == 201


async def test_configured_public_host_is_accepted(tmp_path: Path) -> None:
    cfg = config(tmp_path, server={"host": "127.0.0.1", "port": 0, "allowed_hosts": ["gw.city.example"]})
    async with running(cfg) as (base, _app):
        async with aiohttp.ClientSession() as http:
            status, _, _ = await _call(http, "GET", f"{base}/admin/sources", {"Host": "gw.city.example"})
            assert status == 200
            status, _, _ = await _call(http, "GET", f"{base}/admin/sources", {"Host": "other.example"})
            assert status == 403
