"""Adapter supervision: run each source, restart it with backoff, log state changes once.

A source is ``starting``, ``running``, ``unavailable`` (its last run or check failed; it will
be restarted) or ``stopped``. "unavailable" is logged once when it stops working and
"recovered" once when it works again, never once per retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.contract import Adapter
from gateway.errors import ConfigInvalid
from gateway.model import RawMessage
from gateway.runtime.logging import redact

log = logging.getLogger("jonction.supervisor")

Emit = Callable[[RawMessage], Awaitable[None]]

BACKOFF_INITIAL_S = 1.0
"""First restart delay of a failed source (doubles up to BACKOFF_MAX_S)."""
BACKOFF_MAX_S = 60.0
"""Longest delay between two restarts."""


@dataclass(slots=True)
class SourceState:
    """What the admin API shows about one source."""

    name: str
    adapter: str
    state: str = "starting"
    restarts: int = 0
    last_error: str | None = None
    since: float = 0.0
    messages: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-able view."""
        return {"name": self.name, "adapter": self.adapter, "state": self.state, "restarts": self.restarts,
                "lastError": self.last_error, "messages": self.messages,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)) if self.since else None}


class Supervised:
    """One source under supervision."""

    def __init__(
        self,
        name: str,
        adapter_name: str,
        adapter: Adapter,
        emit: Emit,
        *,
        backoff_initial_s: float | None = None,
        backoff_max_s: float | None = None,
        healthy_after_s: float = 30.0,
    ) -> None:
        self.adapter = adapter
        self.emit = emit
        self.status = SourceState(name, adapter_name, since=time.time())
        self.backoff_initial_s = BACKOFF_INITIAL_S if backoff_initial_s is None else backoff_initial_s
        self.backoff_max_s = BACKOFF_MAX_S if backoff_max_s is None else backoff_max_s
        self.healthy_after_s = healthy_after_s
        self._task: asyncio.Task[None] | None = None

    async def _counted_emit(self, raw: RawMessage) -> None:
        await self.emit(raw)
        self.status.messages += 1
        if self.status.state == "unavailable":
            self._set("running")

    def _set(self, state: str, error: str | None = None) -> None:
        previous = self.status.state
        self.status.state = state
        self.status.since = time.time()
        if error is not None:
            self.status.last_error = error
        name = self.status.name
        if state == "unavailable" and previous != "unavailable":
            log.warning("source %s unavailable: %s", name, error, extra={"source": name})
        elif state == "running" and previous == "unavailable":
            log.warning("source %s recovered", name, extra={"source": name})

    async def _loop(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await self.adapter.check()
                self._set("running")
                await self.adapter.run(self._counted_emit)
                # run() returning means the source ended on its own (a finished file, say).
                self._set("stopped")
                return
            except asyncio.CancelledError:
                raise
            except ConfigInvalid as exc:
                self._set("failed", redact(str(exc)))
                log.error("source %s has an invalid configuration: %s", self.status.name, redact(str(exc)),
                          extra={"source": self.status.name})
                return
            except Exception as exc:  # any adapter failure: restart with backoff, never crash the gateway
                error = redact(f"{type(exc).__name__}: {exc}")
                self._set("unavailable", error)
            if time.monotonic() - started > self.healthy_after_s:
                failures = 0
            failures += 1
            self.status.restarts += 1
            with contextlib.suppress(Exception):
                await self.adapter.stop()
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (failures - 1))
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))

    def start(self) -> None:
        """Start supervising (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"source:{self.status.name}")

    async def stop(self, within: float = 5.0) -> None:
        """Stop the adapter, then the supervision task."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.adapter.stop(), within)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, within)
            self._task = None
        self.status.state = "stopped"
