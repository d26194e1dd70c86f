"""report.html in a real Chromium: it fetches nothing and axe-core finds no serious accessibility problem."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.cli import main
from tests.console.browser import browser_page, need_browser
from tests.indicators.test_indicators_cli import WINDOWS, _fill


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """French and English reports of the synthetic territory, written by the CLI."""
    (tmp_path / "data").mkdir()
    asyncio.run(_fill(str(tmp_path / "data" / "store.sqlite")))
    for lang in ("fr", "en"):
        options = ["indicators", "--data", str(tmp_path / "data"), *WINDOWS, "--out", str(tmp_path / lang)]
        assert main([*options, "--lang", lang]) == 0
    return tmp_path


@pytest.mark.parametrize("lang", ["fr", "en"])
async def test_report_is_self_contained_and_accessible(reports: Path, lang: str) -> None:
    need_browser()
    try:
        from axe_playwright_python.async_playwright import Axe
    except ImportError:
        pytest.skip("axe-playwright-python is missing (the axe-core engine): pip install -e '.[test]'")
    folder = reports / lang
    async with browser_page(f"file://{folder}", folder) as w:
        await w.page.goto(f"file://{folder}/report.html")
        assert await w.page.locator("section table caption").count() >= 19
        assert await w.page.locator('svg[role="img"] > title').count() >= 5
        results = await Axe().run(w.page)
        serious = [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
                   for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
        assert serious == []
        assert w.elsewhere == [] and w.errors == []
