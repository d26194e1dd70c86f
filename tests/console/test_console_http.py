"""The console over HTTP: authentication (session cookie over the admin token), CSP, offline assets, outlines."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.console.web import STATIC
from gateway.errors import ConfigInvalid
from gateway.store.app import create_root_app
from gateway.store.settings import StoreSettings
from tests.conftest import free_port
from tests.runtime.support import FakeAdapter, config, eventually, running

TOKEN = "console-test-token-7f3a"


def _session() -> aiohttp.ClientSession:
    # unsafe: keep cookies set by an IP address (the server is on 127.0.0.1), as a browser does
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_pages_and_data_need_a_login_when_a_token_is_configured(tmp_path: Path) -> None:
    cfg = config(tmp_path, admin={"token": TOKEN})
    async with running(cfg) as (base, _app), _session() as http:
        async with http.get(base + "/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/console/login"
        async with http.get(base + "/console/login") as resp:
            assert resp.status == 200 and 'name="token"' in await resp.text()
        for path in ("/console/api/overview", "/console/api/info", "/admin/sources"):
            async with http.get(base + path) as resp:
                assert resp.status == 401, path
        async with http.post(base + "/console/login", data={"token": "wrong"}, allow_redirects=False) as resp:
            assert resp.status == 401 and "wrong token" in await resp.text()
            assert "Set-Cookie" not in resp.headers


async def test_login_sets_an_http_only_strict_cookie_that_opens_the_admin_api(tmp_path: Path) -> None:
    cfg = config(tmp_path, admin={"token": TOKEN})
    async with running(cfg) as (base, _app), _session() as http:
        async with http.post(base + "/console/login", data={"token": TOKEN}, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/"
            cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie  # an opaque session id, never the token itself
        async with http.get(base + "/") as resp:
            assert resp.status == 200 and 'data-mode="gateway"' in await resp.text()
        async with http.get(base + "/admin/sources") as resp:  # the session stands for the bearer token
            assert resp.status == 200 and (await resp.json())["sources"][0]["name"] == "bins"
        async with http.get(base + "/console/api/overview") as resp:
            assert resp.status == 200
        async with http.post(base + "/console/logout", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/console/login"
        async with http.get(base + "/admin/sources") as resp:
            assert resp.status == 401


async def test_cross_site_logins_and_cookie_writes_are_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, admin={"token": TOKEN})
    async with running(cfg) as (base, _app), _session() as http:
        evil = {"Origin": "http://evil.example"}
        async with http.post(base + "/console/login", data={"token": TOKEN}, headers=evil,
                             allow_redirects=False) as resp:
            assert resp.status == 403 and "Set-Cookie" not in resp.headers
        async with http.post(base + "/console/login", data={"token": TOKEN}, allow_redirects=False) as resp:
            assert resp.status == 303
        # the session cookie never lets another site drive the admin API
        async with http.post(base + "/admin/deadletters/replay", json={}, headers=evil) as resp:
            assert resp.status == 403
        async with http.post(base + "/admin/deadletters/replay", data="{}",
                             headers={"Content-Type": "text/plain"}) as resp:
            assert resp.status == 403
        async with http.post(base + "/admin/deadletters/replay", json={}) as resp:
            assert resp.status == 200


async def test_open_on_loopback_without_a_token(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as (base, _app), _session() as http:
        async with http.get(base + "/") as resp:
            page = await resp.text()
            assert resp.status == 200 and 'src="/console/static/app.js"' in page
            assert "Log out" not in page
        async with http.get(base + "/console/api/info") as resp:
            doc = await resp.json()
        assert doc["mode"] == "gateway" and doc["auth"] is False and doc["units"]["CEL"] == "°C"
        assert doc["units"]["MTQ"] == "m³" and doc["tenants"] == [""]
        async with http.post(base + "/console/login", data={"token": "x"}, allow_redirects=False) as resp:
            assert resp.status == 401  # nothing to log in to


async def test_console_pages_carry_a_strict_content_security_policy(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as (base, _app), _session() as http:
        for path in ("/", "/console/login", "/console/static/app.js"):
            async with http.get(base + path) as resp:
                csp = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "default-src 'none'" in csp, path
                assert "unsafe" not in csp and "http" not in csp, path
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(base + "/healthz") as resp:  # the APIs are not console pages
            assert "Content-Security-Policy" not in resp.headers


_URL = re.compile(r"https?://[^\s'\"<>)]+")
_NAMESPACES = {"http://www.w3.org/2000/svg"}
_VENDOR = STATIC / "vendor"
# The only URLs the vendored libraries carry, none of them fetched: banner and CSS comments, and
# Leaflet's default attribution link, which the map replaces (the browser test checks that no link
# off the server is shown).
_VENDOR_URLS = {
    "vendor/leaflet/leaflet.js": {"https://leafletjs.com"},
    "vendor/leaflet/leaflet.css": {"https://bugs.chromium.org/p/chromium/issues/detail?id=600120",
                                   "https://bugzilla.mozilla.org/show_bug.cgi?id=888319"},
    "vendor/uplot/uPlot.iife.min.js": {"https://github.com/leeoniya/uPlot"},
}
# Read by people, never loaded by a page: the licences and the record of what is vendored.
_PROSE = {"LICENSE", "README.md"}
_BINARY = {".png"}


def _served() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*") if p.is_file() and p.name not in _PROSE and p.suffix not in _BINARY)


def test_no_asset_refers_to_another_server() -> None:
    files = _served()
    assert {p.suffix for p in files} >= {".js", ".css", ".svg"}
    found: dict[str, set[str]] = {}
    for p in files:
        urls = set(_URL.findall(p.read_text(encoding="utf-8"))) - _NAMESPACES
        if urls:
            found[str(p.relative_to(STATIC))] = urls
    assert found == _VENDOR_URLS  # our own files carry none; a library upgrade adding one shows here
    for p in files:
        if p.suffix == ".js" and _VENDOR not in p.parents:  # our modules import each other by relative path only
            for spec in re.findall(r"""^import .* from '([^']+)';""", p.read_text(encoding="utf-8"), re.M):
                assert spec.startswith("./") and (STATIC / spec[2:]).is_file(), (p.name, spec)
        if p.suffix == ".css":  # whatever a style sheet refers to is a file of the package (or a fragment)
            for ref in re.findall(r"url\(\s*['\"]?([^'\")]+)", p.read_text(encoding="utf-8")):
                assert ref.startswith("#") or (p.parent / ref).resolve().is_file(), (p.name, ref)


def test_vendored_libraries_are_recorded_with_their_licence_and_digests() -> None:
    record = (_VENDOR / "README.md").read_text(encoding="utf-8")
    libraries = {"leaflet": "leaflet", "markercluster": "leaflet.markercluster", "uplot": "uplot"}  # folder: npm name
    assert sorted(d.name for d in _VENDOR.iterdir() if d.is_dir()) == sorted(libraries)
    for folder, npm in libraries.items():
        assert folder.isidentifier(), f"setuptools would leave {folder}/ out of the package"
        assert (_VENDOR / folder / "LICENSE").is_file(), folder
        assert re.search(rf"^\| {folder} \| {re.escape(npm)} \| [0-9.]+ \| (MIT|BSD-2-Clause) \| `{re.escape(npm)}@",
                         record, re.M), folder
    digests = {m[2]: m[1] for m in re.finditer(r"^([0-9a-f]{64})  (\S+)$", record, re.M)}  # path: sha256
    files = {str(p.relative_to(_VENDOR)): p for p in _VENDOR.rglob("*") if p.is_file() and p.name != "README.md"}
    assert set(digests) == set(files)  # every shipped file is recorded, nothing recorded is missing
    for rel, path in files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digests[rel], f"{rel} differs from the recorded copy"
    # the versions in the record are the ones in the files' own banners
    assert "Leaflet 1.9.4" in (_VENDOR / "leaflet" / "leaflet.js").read_text(encoding="utf-8")[:200]
    assert "| leaflet | leaflet | 1.9.4 |" in record
    assert "(v1.6.32)" in (_VENDOR / "uplot" / "uPlot.iife.min.js").read_text(encoding="utf-8")[:200]
    assert "| uplot | uplot | 1.6.32 |" in record


async def test_assets_are_served_with_their_types(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as (base, _app), _session() as http:
        for name, ctype in (("app.js", "javascript"), ("console.css", "text/css"), ("icon.svg", "image/svg+xml")):
            async with http.get(f"{base}/console/static/{name}") as resp:
                assert resp.status == 200 and ctype in resp.headers["Content-Type"], name
        async with http.get(f"{base}/console/static/../web.py") as resp:
            assert resp.status in (403, 404)


async def test_overview_counts_messages_and_draws_rates(tmp_path: Path) -> None:
    FakeAdapter.DIVISOR = 100.0
    async with running(config(tmp_path)) as (base, _app), _session() as http:
        fake = FakeAdapter.instances["bins"]

        async def overview() -> dict[str, object]:
            async with http.get(base + "/console/api/overview") as resp:
                doc: dict[str, object] = await resp.json()
                return doc

        await fake.ready()

        async def sampled() -> bool:  # the sampler has seen the source before the messages come
            return bool((await overview())["sources"][0]["spark"])  # type: ignore[index]

        await eventually(sampled, what="a first sample")
        for i in range(3):
            await fake.send({"device": f"c{i}", "fill": 40, "id": f"m{i}"})

        async def counted() -> bool:
            src = (await overview())["sources"][0]  # type: ignore[index]
            return bool(src["messages"] == 3 and src["spark"] and src["lastMessageAt"])

        await eventually(counted, what="3 messages and a sparkline")
        doc = await overview()
        src = doc["sources"][0]  # type: ignore[index]
        assert src["state"] == "running" and src["adapter"] == "fake" and src["deadLetters"] == 0
        assert sum(src["spark"]) > 0
        sink = doc["sinks"][0]  # type: ignore[index]
        assert sink["name"] == "embedded" and sink["circuit"] == "closed" and "entities" in sink["backlog"]


def test_outlines_are_checked_with_the_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None}]}))
    with pytest.raises(ConfigInvalid) as caught:
        config(tmp_path, console={"outlines": str(bad)})
    assert any(p.startswith("/console/outlines:") and "/features/0/geometry" in p for p in caught.value.problems)
    with pytest.raises(ConfigInvalid) as caught:
        config(tmp_path, console={"outlines": str(tmp_path / "missing.geojson")})
    assert any("/console/outlines" in p for p in caught.value.problems)


async def test_outlines_are_served_to_the_map(tmp_path: Path) -> None:
    good = tmp_path / "commune.geojson"
    square = [[[3.86, 43.60], [3.89, 43.60], [3.89, 43.62], [3.86, 43.62], [3.86, 43.60]]]
    good.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "demo"}, "geometry": {"type": "Polygon", "coordinates": square}}]}))
    async with running(config(tmp_path, console={"outlines": str(good)})) as (base, _app), \
            _session() as http:
        async with http.get(base + "/console/api/outlines") as resp:
            doc = await resp.json(content_type=None)
        assert doc["features"][0]["geometry"]["coordinates"] == square


async def test_store_serves_the_entities_part_of_the_console(tmp_path: Path) -> None:
    settings = StoreSettings(data_dir=tmp_path, allow_unfiltered_queries=True)
    runner = web.AppRunner(create_root_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with _session() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(base + "/") as resp:
                page = await resp.text()
            assert 'data-mode="store"' in page and 'data-ngsi="/ngsi-ld/v1"' in page
            assert "#/entities" in page and "#/map" in page and "#/deadletters" not in page
            async with http.get(base + "/console/api/overview") as resp:
                assert resp.status == 404
    finally:
        await runner.cleanup()


async def test_store_console_needs_a_login_when_the_store_has_tokens(tmp_path: Path) -> None:
    settings = StoreSettings(data_dir=tmp_path, tokens=frozenset({TOKEN}))
    runner = web.AppRunner(create_root_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with _session() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(base + "/", allow_redirects=False) as resp:
                assert resp.status == 303
            async with http.post(base + "/console/login", data={"token": TOKEN}, allow_redirects=False) as resp:
                assert resp.status == 303
            async with http.get(base + "/console/api/info") as resp:
                assert (await resp.json())["mode"] == "store"
    finally:
        await runner.cleanup()


async def test_conformance_runs_take_a_shipped_profile_and_an_http_target_only(tmp_path: Path) -> None:
    async with running(config(tmp_path, admin={"token": TOKEN})) as (base, _app), _session() as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(base + "/console/api/conformance", json={"profile": "x", "target": base}) as resp:
            assert resp.status == 401
        for body, where in (({"profile": "../etc/passwd", "target": base}, "/profile"),
                            ({"profile": "territoire-essentiel", "target": "file:///etc/passwd"}, "/target"),
                            ({"profile": "territoire-essentiel", "target": base, "lang": "de"}, "/lang")):
            async with http.post(base + "/console/api/conformance", json=body, headers=auth) as resp:
                assert resp.status == 400 and where in (await resp.json())["detail"], body
        async with http.post(base + "/console/api/conformance", data='{"profile": "territoire-essentiel"}',
                             headers={**auth, "Content-Type": "text/plain"}) as resp:
            assert resp.status == 403  # a form or text body is what another site could send
        async with http.post(base + "/console/api/conformance", json={"profile": "p", "target": base},
                             headers={**auth, "Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
        async with http.get(base + "/console/api/conformance/20260101T000000Z-p/../../gateway.sqlite",
                            headers=auth) as resp:
            assert resp.status == 404
        async with http.get(base + "/console/api/conformance", headers=auth) as resp:
            assert (await resp.json()) == {"running": False, "runs": []}


async def test_the_login_page_speaks_french_to_french_browsers(tmp_path: Path) -> None:
    async with running(config(tmp_path, admin={"token": TOKEN})) as (base, _app), _session() as http:
        for accept, lang, label in (("fr-FR,fr;q=0.9,en;q=0.8", "fr", "Jeton d'administration"),
                                    ("en-US,en;q=0.9,fr;q=0.5", "en", "Admin token"),
                                    ("de-DE", "en", "Admin token")):
            async with http.get(base + "/console/login", headers={"Accept-Language": accept}) as resp:
                page = await resp.text()
            assert f'<html lang="{lang}">' in page and label in page, accept
        async with http.post(base + "/console/login", data={"token": "nope"}, allow_redirects=False,
                             headers={"Accept-Language": "fr"}) as resp:
            assert resp.status == 401 and "jeton incorrect" in await resp.text()
