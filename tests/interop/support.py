"""The embedded store as ``jonction store`` serves it, on loopback, and a real HTTP notification receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.store.app import create_root_app
from gateway.store.settings import StoreSettings
from tests.loopback import Loopback, serving


@asynccontextmanager
async def store(data_dir: Path) -> AsyncIterator[str]:
    """The NGSI-LD store (``jonction store --host 127.0.0.1``) on a free port; yields its base URL."""
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    async with serving(create_root_app(StoreSettings(data_dir=data_dir, host="127.0.0.1"))) as port:
        yield f"http://127.0.0.1:{port}"


class Receiver(Loopback):
    """An HTTP endpoint that keeps every notification POSTed to it (headers and JSON body)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[dict[str, str], Any]] = []

    @property
    def url(self) -> str:
        """Where subscriptions send notifications."""
        return f"http://127.0.0.1:{self.port}/notify"

    async def _notify(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), json.loads(await request.read())))
        return web.Response(status=204)

    def routes(self, app: web.Application) -> None:
        """The one notification path."""
        app.router.add_post("/notify", self._notify)

    def entities(self) -> list[dict[str, Any]]:
        """Every entity of every notification received, in order."""
        return [e for _, body in self.received for e in body.get("data", [])]
