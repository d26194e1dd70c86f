"""The devices page in a real browser (Chromium via Playwright) against a gateway with a LoRaWAN source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.console.browser import browser_page, need_browser
from tests.console.test_console_devices_http import ADAPTERS, lora_config
from tests.runtime.support import running


async def _serious_violations(page: Any) -> list[str]:
    """Serious or critical axe-core findings on the page as it is (skips when axe is not installed)."""
    try:
        from axe_playwright_python.async_playwright import Axe
    except ImportError:
        pytest.skip("axe-playwright-python is missing (the axe-core engine): pip install -e '.[test]'")
    results = await Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


async def test_devices_page_lists_adds_and_points_at_an_invalid_deveui(tmp_path: Path) -> None:
    need_browser()
    async with running(lora_config(tmp_path, free_port()), ADAPTERS) as (base, _app), \
            browser_page(base, tmp_path) as w:
        page = w.page
        await page.goto(base + "/#/devices")
        await page.locator('tr[data-device="24e124707c100002"]').wait_for()
        assert await page.locator("tr[data-device]").count() == 1
        assert await page.locator("#dev-source").input_value() == "lora"
        assert await page.locator('details.profile[data-profile="milesight-em310-udl"]').count() == 1
        # an invalid DevEUI: the server's pointer and reason appear next to the field, nothing is added
        await page.get_by_label("DevEUI (16 hex digits)").fill("12-34-zz")
        await page.get_by_label("Profile", exact=True).select_option("milesight-am307")
        await page.get_by_role("button", name="Add the device").click()
        error = page.locator("#dev-dev_eui-error")
        await error.filter(has_text="/dev_eui").wait_for()
        assert "DevEUI" in (await error.text_content() or "")
        assert await page.locator("#dev-dev_eui").get_attribute("aria-invalid") == "true"
        await w.shot("devices-invalid")
        assert await _serious_violations(page) == []
        # a valid one, with the profile's parameters: it shows up in the list
        await page.get_by_label("DevEUI (16 hex digits)").fill("24e124713b100001")
        await page.get_by_label("Profile", exact=True).select_option("milesight-em310-udl")
        await page.locator("#dev-param-container_height_mm").fill("1800")
        await page.get_by_label("Entity id (default urn:ngsi-ld:<Type>:<DevEUI>)").fill(
            "urn:ngsi-ld:WasteContainer:ville-a:verre-mairie")
        await page.get_by_label("Longitude (WGS84)").fill("2.3522")
        await page.get_by_label("Latitude (WGS84)").fill("48.8566")
        await page.get_by_role("button", name="Add the device").click()
        await page.locator("#dev-added").wait_for()
        row = page.locator('tr[data-device="24e124713b100001"]')
        await row.wait_for()
        assert "urn:ngsi-ld:WasteContainer:ville-a:verre-mairie" in (await row.text_content() or "")
        assert await page.locator("#dev-dev_eui-error").text_content() == ""
        await w.shot("devices")
    # the refused POST is the one expected error Chromium logs ("status of 422")
    assert [e for e in w.errors if "status of 422" not in e] == [] and w.elsewhere == []


async def test_devices_page_in_french_on_a_phone(tmp_path: Path) -> None:
    need_browser()
    async with running(lora_config(tmp_path, free_port()), ADAPTERS) as (base, _app), \
            browser_page(base, tmp_path, locale="fr-FR", viewport=(390, 844)) as w:
        page = w.page
        await page.goto(base + "/#/devices")
        await page.locator('tr[data-device="24e124707c100002"]').wait_for()
        assert await page.locator("h1").text_content() == "Capteurs"
        await page.get_by_label("DevEUI (16 chiffres hexadécimaux)").wait_for()
        assert "aucune remontée" in (await page.locator('tr[data-device="24e124707c100002"]').text_content() or "")
        await w.shot("devices-fr-phone")
    assert w.errors == [] and w.elsewhere == []
