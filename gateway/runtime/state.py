"""The running gateway's components, created together in one place, and their typed application key.

:func:`gateway.runtime.app.create_app` builds a :class:`Runtime` when the application starts
(``build_runtime`` there is the map of the runtime); handlers read it with ``app[RUNTIME]``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from gateway.contract import Adapter, Simulator, adapter_logger, instantiate
from gateway.model import RawMessage
from gateway.rules.engine import RulesEngine
from gateway.runtime.archive import RawArchive
from gateway.runtime.commands import Commands
from gateway.runtime.config import GatewayConfig, SourceConfig, source_config
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.dedup import SeenKeys
from gateway.runtime.metrics import Metrics
from gateway.runtime.outbox import Outbox
from gateway.runtime.pipeline import Pipeline, SourceBinding
from gateway.runtime.publisher import Publisher
from gateway.runtime.supervisor import Supervised
from gateway.store.base import Storage

log = logging.getLogger("jonction.runtime")


@dataclass(slots=True)
class Runtime:
    """Everything the running gateway holds: typed components, all created before any is used."""

    config: GatewayConfig
    adapters: Mapping[str, type[Adapter]]
    """Installed adapter classes by domain."""
    http: aiohttp.ClientSession
    """The HTTP client session adapters share (owned by the application)."""
    store: Storage | None
    """The embedded store's storage (owned by the application), None when disabled."""
    metrics: Metrics
    db: Database
    archive: RawArchive
    outbox: Outbox
    deadletters: DeadLetters
    seen: SeenKeys
    pipeline: Pipeline
    publishers: dict[str, Publisher]
    """One per sink, by sink name."""
    sources: dict[str, Supervised] = field(default_factory=dict)
    """Supervised sources by name (enabled ones, once started)."""
    simulators: list[Simulator] = field(default_factory=list)
    rules: RulesEngine | None = None
    """The rules engine, when rules are configured (set when the runtime starts)."""
    started_at: float = field(default_factory=time.time)
    ready: bool = False
    commands: Commands | None = None
    """Commands back to the field (:mod:`gateway.runtime.commands`); None without the embedded store."""

    @property
    def embedded_store(self) -> Storage:
        """The embedded store's storage, for callers that know it is enabled (RuntimeError otherwise)."""
        if self.store is None:
            raise RuntimeError("the embedded store is disabled in this gateway's configuration")
        return self.store

    def start_source(self, src: SourceConfig) -> Supervised:
        """Instantiate a source's adapter (no I/O), bind it to the pipeline and supervise it."""
        cls = self.adapters[src.adapter]
        effective = source_config(src, cls.config_schema, self.config.data_dir)
        adapter = instantiate(cls, effective, http=self.http, log=adapter_logger(src.adapter))
        binding = SourceBinding(src.name, src.adapter, adapter, src.tenant, src.routes, src.routing)
        self.pipeline.add_source(binding)
        sup = Supervised(src.name, src.adapter, adapter, _emitter(self.pipeline, binding))
        self.sources[src.name] = sup
        sup.start()
        return sup

    async def restart_source(self, name: str) -> Supervised | None:
        """Stop a source and start a fresh adapter instance (it re-reads its mapping and routing files)."""
        src = next((s for s in self.config.sources if s.name == name and s.enabled), None)
        if src is None:
            return None
        if src.routing is not None:
            # Read before anything stops: bad files raise ConfigInvalid and the source runs on as it was.
            src.routing = await asyncio.to_thread(src.routing.reloaded)
        old = self.sources.get(name)
        if old is not None:
            await old.stop()
        log.info("source %s restarted on request", name, extra={"source": name})
        return self.start_source(src)


def _emitter(pipeline: Pipeline, binding: SourceBinding) -> Callable[[RawMessage], Awaitable[None]]:
    async def emit(raw: RawMessage) -> None:
        # The runtime, not the adapter, knows the source's name; the adapter may pick a tenant.
        if raw.source != binding.name or (not raw.tenant and binding.tenant):
            # Built directly: dataclasses.replace costs several microseconds per message.
            raw = RawMessage(binding.name, raw.tenant or binding.tenant, raw.received_at, raw.payload,
                             raw.idempotency_key, raw.content_type, raw.metadata)
        await pipeline.emit(raw)

    return emit


RUNTIME: web.AppKey[Runtime] = web.AppKey("jonction_runtime", Runtime)
"""Where the gateway application keeps its :class:`Runtime` (set when it starts)."""
