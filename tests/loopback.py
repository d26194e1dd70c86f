"""Real servers on loopback for the tests: an aiohttp app on a free port (a block, or a ``Loopback``
server a test starts and stops), a catch-all notification receiver, and ``jonction store``
processes (the lines they print, the one holding the notifier lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from aiohttp import web

from tests.conftest import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""An aiohttp request handler."""


@asynccontextmanager
async def serving(app: web.Application, port: int | None = None) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1 (on ``port``, or a free one) until the block ends; yield the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    bound = free_port() if port is None else port
    await web.TCPSite(runner, "127.0.0.1", bound).start()
    try:
        yield bound
    finally:
        await runner.cleanup()


@asynccontextmanager
async def receiving(handle: Handler, port: int | None = None, *, path: str = "/{tail:.*}") -> AsyncIterator[int]:
    """Serve ``handle`` for every POST to ``path`` (any path by default): a notification endpoint; yield the port."""
    app = web.Application()
    app.router.add_post(path, handle)
    async with serving(app, port) as bound:
        yield bound


class Loopback:
    """An aiohttp app on a free loopback port: a subclass adds its routes (or gives its app);
    ``start``/``stop``, or ``async with``."""

    client_max_size: ClassVar[int] = 1024**2
    """The largest request body the app reads (aiohttp's default)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        """Add the server's routes to ``app``."""
        raise NotImplementedError

    def application(self) -> web.Application:
        """The app to serve (a new one each start): by default an empty one given ``routes``."""
        app = web.Application(client_max_size=self.client_max_size)
        self.routes(app)
        return app

    async def start(self) -> None:
        """Listen (again after ``stop``: same port)."""
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening (once)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


LEADS = "this process sends the notifications"
"""What a ``jonction store`` process logs once it holds the notifier lock (PostgreSQL)."""
SERVING = re.compile(r"serving NGSI-LD at (http://127\.0\.0\.1:\d+/ngsi-ld/v1)")


@dataclass
class StoreProcess:
    """One ``jonction store`` process and the lines it printed."""

    proc: asyncio.subprocess.Process
    base: str
    """Its NGSI-LD base URL."""
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def leads(self) -> bool:
        """True once the process logged that it holds the notifier lock."""
        return any(LEADS in line for line in self.lines)


async def start_store(folder: Path, database: str | None = None) -> StoreProcess:
    """Start ``jonction store`` on ``folder`` (SQLite) or on the PostgreSQL ``database``; wait until it serves."""
    args = ["store", "--port", "0", "--data", str(folder)]
    if database is not None:
        args += ["--database", database]
    # The store would read a database URL from the environment: only the test's choice counts.
    env = {k: v for k, v in os.environ.items() if k != "JONCTION_STORE_DATABASE"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line, "the store stopped: " + "".join(lines)
        lines.append(line)
        found = SERVING.search(line)
        if found:
            break
    store = StoreProcess(proc, found[1], lines)

    async def follow() -> None:
        assert proc.stdout is not None
        while line := (await proc.stdout.readline()).decode():
            store.lines.append(line)

    store.reader = asyncio.get_running_loop().create_task(follow())
    return store


async def stop_store(store: StoreProcess, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process (if it still runs), wait for it, stop reading its output."""
    if store.proc.returncode is None:
        store.proc.send_signal(sig)
        await asyncio.wait_for(store.proc.wait(), 30)
    if store.reader is not None:
        store.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await store.reader


async def until_leads(store: StoreProcess, within: float = 60.0) -> None:
    """Wait until ``store`` holds the notifier lock (at most ``within`` seconds)."""
    for _ in range(int(within / 0.05)):
        if store.leads():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no process took the notifier lock: " + "".join(store.lines))
