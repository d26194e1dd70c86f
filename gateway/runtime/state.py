"""The runtime's state object and its typed aiohttp application key."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.runtime.archive import RawArchive
from gateway.runtime.config import GatewayConfig
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.metrics import Metrics
from gateway.runtime.outbox import Outbox
from gateway.runtime.pipeline import Pipeline
from gateway.runtime.publisher import Publisher
from gateway.runtime.supervisor import Supervised


@dataclass(slots=True)
class Runtime:
    """Everything the running gateway holds; built piece by piece in ``cleanup_ctx``."""

    config: GatewayConfig
    adapters: dict[str, Any]
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = field(default_factory=time.time)
    db: Database | None = None
    archive: RawArchive | None = None
    outbox: Outbox | None = None
    deadletters: DeadLetters | None = None
    pipeline: Pipeline | None = None
    store: Any = None
    publishers: dict[str, Publisher] = field(default_factory=dict)
    sources: dict[str, Supervised] = field(default_factory=dict)
    simulators: list[Any] = field(default_factory=list)
    http: Any = None
    """The aiohttp client session adapters share."""
    restart: Any = None
    """``async restart(name) -> Supervised | None``, set by the app (admin restarts a source)."""
    ready: bool = False

    def require(self) -> tuple[Database, RawArchive, Outbox, DeadLetters, Pipeline]:
        """The storage pieces, or an error if the app is not started."""
        if self.db is None or self.archive is None or self.outbox is None or self.deadletters is None \
                or self.pipeline is None:
            raise web.HTTPServiceUnavailable(text="gateway is starting")
        return self.db, self.archive, self.outbox, self.deadletters, self.pipeline


RUNTIME: web.AppKey[Runtime] = web.AppKey("jonction_runtime", Runtime)
"""Where the app keeps its :class:`Runtime`."""
