"""The checker's own notification receiver: an aiohttp server that records what the target sends."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

MAX_NOTIFICATION: Final = 4 * 1024 * 1024


@dataclass(slots=True)
class Received:
    """One notification as it arrived."""

    key: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def content_type(self) -> str:
        """Media type of the notification, lower case."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class Receiver:
    """Accepts POSTs on ``/notify/{key}``; checks wait for what they expect with a timeout."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, public_url: str | None = None) -> None:
        self.host = host
        self.port = port
        self.public_url = public_url
        self.received: list[Received] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind and serve."""
        app = web.Application(client_max_size=MAX_NOTIFICATION)
        app.router.add_post("/notify/{key}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server: Any = site._server
        if self.port == 0 and server is not None and getattr(server, "sockets", None):
            self.port = int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop serving; idempotent."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def url(self, key: str) -> str:
        """The notification URI to give the target for ``key``."""
        base = (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
        return f"{base}/notify/{key}"

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.received.append(Received(request.match_info["key"], {k.lower(): v for k, v in request.headers.items()},
                                      body, raw))
        self._changed.set()
        return web.Response(status=204)

    def of(self, key: str) -> list[Received]:
        """Every notification received for ``key``, in arrival order."""
        return [r for r in self.received if r.key == key]

    async def wait(self, key: str, pred: Callable[[Received], bool], within: float) -> Received | None:
        """The first notification for ``key`` satisfying ``pred``, or None after ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            for r in self.of(key):
                if pred(r):
                    return r
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.5))
            except TimeoutError:
                pass
