"""The console in a real browser (Chromium via Playwright) against a real gateway on loopback.

Each test opens the pages an operator uses, checks what they show, that nothing was logged as an
error and that no request left this server; a screenshot of each page is kept with the test's files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.store.app import create_root_app
from gateway.store.settings import StoreSettings
from tests.conftest import free_port
from tests.console.browser import browser_page, need_browser
from tests.runtime.support import FakeAdapter, config, eventually, running

TOKEN = "console-browser-token-51c2"


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


async def test_overview_lists_sources_with_live_counts(tmp_path: Path) -> None:
    need_browser()
    FakeAdapter.DIVISOR = 100.0
    cfg = config(tmp_path, sources=[{"name": "bins", "adapter": "fake", "tenant": ""},
                                    {"name": "bins-nord", "adapter": "fake", "tenant": "nord"}])
    async with running(cfg) as (base, _app), browser_page(base, tmp_path) as w:
        page = w.page
        await page.goto(base + "/")
        row = page.locator('tr[data-source="bins"]')
        await row.locator("td.messages").filter(has_text="0").wait_for()
        assert await page.locator("tr[data-source]").count() == 2
        assert await page.locator('tr[data-source="bins-nord"] td').nth(1).text_content() == "nord"
        assert await row.locator(".badge").text_content() == "running"
        assert await page.locator('tr[data-sink="embedded"] .badge').text_content() == "closed"
        fake = FakeAdapter.instances["bins"]
        for i in range(4):
            await fake.send({"device": f"c{i}", "fill": 30 + i, "id": f"m{i}"})
        # the page polls: the count changes without a reload, and a sparkline appears
        await row.locator("td.messages").filter(has_text="4").wait_for()
        # attached, not visible: a flat line (no message in the sampled minutes yet) has an empty box
        await row.locator("svg.spark path").wait_for(state="attached")
        assert await row.locator("td.last").text_content() != "—"
        await w.shot("overview")
    assert w.errors == [] and w.elsewhere == []


async def test_dead_letter_shows_its_pointer_and_replays_after_the_fix(tmp_path: Path) -> None:
    need_browser()
    FakeAdapter.DIVISOR = 1.0  # the "mapping bug": a percentage where the model wants a ratio
    try:
        async with running(config(tmp_path)) as (base, _app), browser_page(base, tmp_path) as w, \
                aiohttp.ClientSession() as http:
            await FakeAdapter.instances["bins"].send({"device": "c9", "fill": 55, "id": "bad-1"})

            async def letters() -> list[dict[str, Any]]:
                async with http.get(base + "/admin/deadletters") as resp:
                    found: list[dict[str, Any]] = (await resp.json())["deadLetters"]
                    return found

            letter = (await eventually(letters, what="a dead letter"))[0]
            page = w.page
            await page.goto(base + "/#/deadletters")
            link = page.locator(f'tr[data-letter="{letter["id"]}"] a')
            await link.click()
            marked = page.locator("#dl-detail .hl")
            await marked.first.wait_for()
            assert await marked.count() == 1
            assert letter["pointer"] and await marked.get_attribute("data-pointer") == letter["pointer"]
            assert "55" in (await marked.text_content() or "")
            await w.shot("deadletters")
            FakeAdapter.DIVISOR = 100.0  # the mapping is fixed
            await page.get_by_role("button", name="Replay this one").click()
            await page.locator(f'.result li.queued[data-letter="{letter["id"]}"]').wait_for()
            await page.locator("#dl-empty").wait_for()
            assert await letters() == []

            async def stored() -> bool:
                async with http.get(base + "/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:c9") as resp:
                    return resp.status == 200
            await eventually(stored, what="the replayed entity in the store")
        assert w.errors == [] and w.elsewhere == []
    finally:
        FakeAdapter.DIVISOR = 100.0


async def test_entity_page_shows_units_and_a_history_chart(tmp_path: Path) -> None:
    need_browser()
    FakeAdapter.DIVISOR = 100.0
    outline = tmp_path / "commune.geojson"
    ring = [[3.85, 43.59], [3.89, 43.59], [3.89, 43.62], [3.85, 43.62], [3.85, 43.59]]
    outline.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "demo"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    async with running(config(tmp_path, console={"outlines": str(outline)})) as (base, _app), \
            browser_page(base, tmp_path) as w, aiohttp.ClientSession() as http:
        fake = FakeAdapter.instances["bins"]
        now = time.time()
        n = 6
        for i in range(n):
            await fake.send({"device": "c1", "fill": 20 + 5 * i, "temp": 10.5 + i, "at": _iso(now - (n - i) * 300),
                             "id": f"t{i}"})
        entity = "urn:ngsi-ld:WasteContainer:c1"

        async def history_complete() -> bool:
            url = f"{base}/ngsi-ld/v1/temporal/entities/{entity}?options=temporalValues&lastN=100"
            async with http.get(url) as resp:
                return resp.status == 200 and len(next(iter(
                    v["values"] for k, v in (await resp.json()).items() if k.endswith("temperature")), [])) == n
        await eventually(history_complete, what="the history in the store")
        page = w.page
        await page.goto(base + "/#/entities")
        await page.locator(f'tr[data-entity="{entity}"] a').click()
        row = page.locator('tr[data-attr="temperature"]')
        await row.wait_for()
        assert await row.locator("td.unit").text_content() == "°C"
        assert await row.locator("td").nth(0).text_content() == str(10.5 + n - 1)
        await page.select_option("#hist-attr", label="temperature")
        # uPlot draws on a canvas; data-points is the length of the data uPlot holds
        chart = page.locator('#chart .chart[aria-label^="temperature"]')
        await chart.locator("canvas").wait_for()
        assert await chart.get_attribute("data-points") == str(n)
        assert await chart.get_attribute("data-band") is None  # raw values: one line, no band
        assert await chart.locator(".u-legend .u-label").all_text_contents() == ["temperature"]
        await w.shot("entity")
        await page.select_option("#hist-period", "7d")  # long periods: min/avg/max per hour (aggregatedValues)
        banded = page.locator('#chart .chart[data-band="min-max"]')
        await banded.locator("canvas").wait_for()
        # six readings 5 minutes apart fall in one or two hours
        assert int(await banded.get_attribute("data-points") or 0) in (1, 2)
        assert await banded.locator(".u-legend .u-label").all_text_contents() == ["temperature", "min", "max"]
        await page.goto(base + "/#/map")
        await page.locator("#map path.outline").wait_for()
        await page.locator("#map .entity-marker[data-entity]").wait_for()
        assert await page.locator("#map .entity-marker[data-entity]").count() == 1
        assert await page.locator("#map .marker-cluster").count() == 0
        await w.shot("map-gateway")
    assert w.errors == [] and w.elsewhere == []


async def test_store_map_draws_every_located_entity_and_clusters_the_dense_ones(tmp_path: Path) -> None:
    need_browser()
    settings = StoreSettings(data_dir=tmp_path, allow_unfiltered_queries=True)
    runner = web.AppRunner(create_root_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    spread = [(3.80 + 0.02 * i, 43.55 + 0.015 * (i % 3)) for i in range(7)]
    dense = [(3.95, 43.70), (3.9515, 43.7005), (3.9508, 43.6988)]  # ~100 m apart
    docs = [{"id": f"urn:ngsi-ld:Streetlight:s{i}", "type": "Streetlight",
             "powerState": {"type": "Property", "value": "on" if i % 2 else "off"},
             "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": list(c)}}}
            for i, c in enumerate(spread + dense)]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/ngsi-ld/v1/entityOperations/upsert", json=docs) as resp:
                assert resp.status in (201, 204), await resp.text()
        async with browser_page(base, tmp_path) as w:
            page = w.page
            await page.goto(base + "/")  # a store's console opens on its entities
            await page.locator("#entity-list").wait_for()
            await page.goto(base + "/#/map")
            markers = page.locator("#map .entity-marker[data-entity]")
            cluster = page.locator("#map .marker-cluster [data-count]")
            await page.locator(f'#map[data-clustered="{len(docs)}"]').wait_for()
            await cluster.wait_for()
            assert await markers.count() == len(spread)
            assert await cluster.count() == 1 and await cluster.get_attribute("data-count") == str(len(dense))
            await page.select_option("#map-colour", label="powerState")
            assert await page.locator(".legend li").all_text_contents() == ["off", "on"]
            # the markers are repainted: s1 is on, s0 off, in the legend's colours
            colours = await page.locator(".legend .swatch").evaluate_all("els => els.map(e => e.style.background)")
            painted = page.locator('#map .entity-marker[data-entity="urn:ngsi-ld:Streetlight:s0"]')
            assert await painted.evaluate("e => e.style.background") == colours[0] != colours[1]
            # no tile layer and no link off this server (the attribution names Leaflet without linking to it)
            assert await page.locator("#map img, #map a[href^='http']").count() == 0
            await w.shot("map-store")
            for _ in range(6):  # a click on a cluster zooms in until it splits, in a few steps at most
                if not await cluster.count():
                    break
                before = await page.locator("#map").get_attribute("data-settled")
                await cluster.first.click()
                await page.locator(f'#map:not([data-settled="{before}"])').wait_for()  # the new view is drawn
            for i in range(len(spread), len(spread + dense)):
                await page.locator(f'#map .entity-marker[data-entity="urn:ngsi-ld:Streetlight:s{i}"]').wait_for()
            await cluster.first.wait_for(state="detached")
            await page.get_by_role("button", name="Fit").click()
            await cluster.wait_for()  # back to the whole view: the dense ones cluster again
            await page.locator('#map .entity-marker[data-entity="urn:ngsi-ld:Streetlight:s0"]').click()
            await page.locator("h1", has_text="urn:ngsi-ld:Streetlight:s0").wait_for()
            assert await page.locator('tr[data-attr="powerState"] td').first.text_content() == "off"
        assert w.errors == [] and w.elsewhere == []
    finally:
        await runner.cleanup()


async def test_login_and_logout_when_a_token_is_configured(tmp_path: Path) -> None:
    need_browser()
    async with running(config(tmp_path, admin={"token": TOKEN})) as (base, _app), browser_page(base, tmp_path) as w:
        page = w.page
        await page.goto(base + "/")
        assert page.url == base + "/console/login"
        await page.get_by_label("Admin token").fill("not-the-token")
        await page.get_by_role("button", name="Log in").click()
        await page.locator(".error", has_text="wrong token").wait_for()
        await w.shot("login")
        await page.get_by_label("Admin token").fill(TOKEN)
        await page.get_by_role("button", name="Log in").click()
        await page.locator('tr[data-source="bins"]').wait_for()
        assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script can read the session
        await page.get_by_role("button", name="Log out").click()
        await page.wait_for_url(base + "/console/login")
        await page.goto(base + "/")
        assert page.url == base + "/console/login"
    # the refused login answers 401: the browser logs that one failed load, nothing else
    assert [e for e in w.errors if "401" not in e] == [] and w.elsewhere == []


async def test_conformance_run_from_the_page_and_its_reports(tmp_path: Path) -> None:
    need_browser()
    async with running(config(tmp_path)) as (base, _app), browser_page(base, tmp_path) as w, \
            aiohttp.ClientSession() as http:
        page = w.page
        await page.goto(base + "/#/conformance")
        await page.get_by_label("Profile").fill("fournisseur-donnees")
        await page.get_by_label("Target (NGSI-LD API)").fill(base + "/ngsi-ld/v1")
        await page.get_by_role("button", name="Run").click()
        done = page.locator('#cf-runs tr[data-status="done"]')
        await done.wait_for(timeout=120_000)
        run_id = await done.get_attribute("data-run")
        async with http.get(f"{base}/console/api/conformance/{run_id}") as resp:
            run = await resp.json()
        assert run["total"] > 0 and run["done"] == run["total"] and run["exit_code"] in (0, 1)
        assert set(run["files"]) == {"report.json", "report.junit.xml", "report.html", "clause.fr.html",
                                     "clause.en.html"}
        assert "mandatory checks passed" in (await done.locator("td").nth(3).text_content() or "")
        await done.get_by_role("button", name="Read").click()
        frame = page.frame_locator("iframe.report")
        await frame.locator(".banner").wait_for()
        await w.shot("conformance")
        links = await done.locator("a[download]").all_text_contents()
        assert links == ["JSON", "JUnit", "HTML", "Clause FR", "Clause EN"]
        href = await done.locator("a", has_text="JSON").get_attribute("href")
        async with http.get(base + (href or "")) as resp:
            assert resp.status == 200 and "attachment" in resp.headers["Content-Disposition"]
            assert (await resp.json())["profile"]["id"] == "fournisseur-donnees"
    assert w.errors == [] and w.elsewhere == []


async def test_french_browsers_get_french_text_and_a_phone_gets_a_readable_page(tmp_path: Path) -> None:
    need_browser()
    FakeAdapter.DIVISOR = 100.0
    async with running(config(tmp_path)) as (base, _app), \
            browser_page(base, tmp_path, locale="fr-FR", viewport=(390, 844)) as w:
        page = w.page
        await page.goto(base + "/")
        await page.locator('tr[data-source="bins"] .badge', has_text="en marche").wait_for()
        assert await page.locator("html").get_attribute("lang") == "fr"
        assert await page.locator("h1").text_content() == "Vue d\u2019ensemble"
        assert "Lettres mortes" in await page.locator("header nav").inner_text()
        # nothing wider than the phone's screen: wide tables scroll in their own box
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await w.shot("overview-fr-phone")
        await page.goto(base + "/#/deadletters")
        await page.get_by_label("Raison contenant").wait_for()
        assert await page.locator("#dl-empty").text_content() == "Aucune lettre morte ne correspond."
    assert w.errors == [] and w.elsewhere == []


async def test_no_serious_accessibility_violation_on_any_page(tmp_path: Path) -> None:
    need_browser()
    try:
        from axe_playwright_python.async_playwright import Axe
    except ImportError:
        pytest.skip("axe-playwright-python is missing (the axe-core engine): pip install -e '.[test]'")
    FakeAdapter.DIVISOR = 1.0  # one dead letter to show
    try:
        async with running(config(tmp_path, admin={"token": TOKEN})) as (base, _app), \
                browser_page(base, tmp_path) as w:
            fake = FakeAdapter.instances["bins"]
            await fake.send({"device": "c1", "fill": 55, "id": "bad"})
            FakeAdapter.DIVISOR = 100.0
            await fake.send({"device": "c2", "fill": 40, "temp": 12.5, "id": "ok"})
            page = w.page
            axe = Axe()
            found: dict[str, list[str]] = {}

            async def audit(name: str, ready: str) -> None:
                await page.locator(ready).first.wait_for()
                results = await axe.run(page)
                found[name] = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
                               for v in results.response["violations"] if v["impact"] in ("serious", "critical")]

            await page.goto(base + "/")
            await audit("login", "#token")
            await page.get_by_label("Admin token").fill(TOKEN)
            await page.get_by_role("button", name="Log in").click()
            await audit("overview", "tr[data-source] svg.spark, tr[data-source] td.rate")
            await page.goto(base + "/#/deadletters")
            await page.locator("tr[data-letter] a").first.click()
            await audit("dead letters", "#dl-detail")
            await page.goto(base + "/#/entities")
            await audit("entities", "#entity-list")
            await page.goto(base + "/#/entity/urn:ngsi-ld:WasteContainer:c2")
            await audit("entity", "#chart .chart canvas")
            await page.goto(base + "/#/map")
            await audit("map", "#map .entity-marker, #map .marker-cluster")
            await page.goto(base + "/#/conformance")
            await audit("conformance", "#cf-profile")
        assert found == {name: [] for name in found}
        assert len(found) == 7
    finally:
        FakeAdapter.DIVISOR = 100.0


async def test_overview_says_since_when_and_why_a_source_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_browser()
    from gateway.runtime import supervisor

    monkeypatch.setattr(supervisor, "BACKOFF_INITIAL_S", 600.0)  # it stays unavailable while we look
    cfg = config(tmp_path, sources=[{"name": "bins", "adapter": "fake", "config": {"fail_check": True}}])
    async with running(cfg) as (base, _app), browser_page(base, tmp_path) as w:
        page = w.page
        await page.goto(base + "/")
        row = page.locator('tr[data-source="bins"]')
        await row.locator(".badge", has_text="unavailable").wait_for()
        assert "since" in (await row.locator("td.state .muted").text_content() or "")
        why = await row.locator("td.state .why").text_content()
        assert why == "ConnectionError: vendor platform refused the connection"
        await w.shot("overview-unavailable")
    assert w.errors == [] and w.elsewhere == []
