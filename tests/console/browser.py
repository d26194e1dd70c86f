"""A real Chromium driven by Playwright, for the console's browser tests (skipped, by name, when absent)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def need_browser() -> None:
    """Skip the calling test when Debian's Chromium or the playwright package is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the playwright package is missing: pip install -e '.[test]'")


@dataclass
class Watched:
    """A page with what it logged and fetched, to assert no error and nothing leaving loopback."""

    page: Any
    base: str
    shots: Path
    errors: list[str] = field(default_factory=list)
    elsewhere: list[str] = field(default_factory=list)

    async def shot(self, name: str) -> Path:
        """A full-page screenshot kept with the test's files."""
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@asynccontextmanager
async def browser_page(base: str, shots: Path, *, locale: str = "en-GB",
                       viewport: tuple[int, int] = (1366, 768)) -> AsyncIterator[Watched]:
    """A page (a 1366x768 laptop screen by default) in a fresh Chromium, watching console errors and requests."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": viewport[0], "height": viewport[1]}, locale=locale)
            page.set_default_timeout(20_000)
            # a style or script the page's CSP refuses is an error of the page (the libraries must not need one)
            await page.add_init_script("document.addEventListener('securitypolicyviolation', (e) => "
                                       "console.error(`CSP refused ${e.violatedDirective}: ${e.blockedURI}`))")
            watched = Watched(page, base, shots)
            page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: watched.errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(base + "/") or r.url.startswith("data:")
                    else watched.elsewhere.append(r.url))
            yield watched
        finally:
            await browser.close()
