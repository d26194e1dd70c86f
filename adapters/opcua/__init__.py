"""OPC UA servers (SCADA, PLCs) to NGSI-LD: subscribed data changes mapped to entity attributes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.contract import Emit, Manifest, load_config_schema
from gateway.errors import ConfigInvalid
from gateway.model import Entity, RawMessage, is_uri

from .translate import Mappings, decode_unit_id, to_entities

__all__ = ["OpcUaAdapter", "decode_unit_id"]


def _config_problems(config: Mapping[str, Any]) -> list[str]:
    """Cross-field checks the JSON Schema cannot express (reported all together)."""
    problems: list[str] = []
    names = [s.get("name") for s in config.get("servers", [])]
    for name in {n for n in names if names.count(n) > 1}:
        problems.append(f"/servers: server name {name!r} is used twice")
    for i, server in enumerate(config.get("servers", [])):
        security = server.get("security") or {}
        if security.get("policy", "None") != "None":
            for key in ("certificate", "private_key_file"):
                if not security.get(key):
                    problems.append(f"/servers/{i}/security/{key}: required with policy {security['policy']}")
        refs: set[str] = set()
        for j, node in enumerate(server.get("nodes", [])):
            ref = str(node.get("node") or node.get("browse_path"))
            if ref in refs:
                problems.append(f"/servers/{i}/nodes/{j}: node {ref!r} is mapped twice")
            refs.add(ref)
            if not is_uri(node.get("entity")):
                problems.append(f"/servers/{i}/nodes/{j}/entity: {node.get('entity')!r} is not a URI")
    return problems


class OpcUaAdapter:
    """Subscribes to one or several OPC UA servers and maps nodes to entity attributes."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)

    def __init__(self, config: Mapping[str, Any], *, http: Any = None, log: logging.Logger | None = None) -> None:
        problems = _config_problems(config)
        if problems:
            raise ConfigInvalid("opcua: invalid configuration", problems)
        self.config = config
        self.log = log or logging.getLogger("jonction.adapters.opcua")
        self.source = str(config.get("name", "opcua"))
        self.mappings = Mappings.from_config(config)
        self._links: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _make_links(self) -> list[Any]:
        # Imported here so that translation (and the contract suite) works without the extra.
        from .transport import ServerLink

        if not self._links:
            self._links = [
                ServerLink(server, source=self.source, log=self.log, state_dir=self.config.get("state_dir"))
                for server in self.config.get("servers", [])
            ]
        return self._links

    @property
    def links(self) -> list[Any]:
        """The per-server links (connection state, counters), created on first use."""
        return self._make_links()

    async def check(self) -> None:
        """Connect to every server and resolve every mapped node once."""
        for link in self._make_links():
            await link.check()

    async def browse(self, server: str, root: str = "", depth: int = 4) -> list[dict[str, Any]]:
        """The variables a server exposes below ``root`` (node id, browse path, type, units)."""
        for link in self._make_links():
            if link.name == server:
                found: list[dict[str, Any]] = await link.browse(root, depth)
                return found
        raise ConfigInvalid(f"opcua: no server named {server!r}")

    async def run(self, emit: Emit) -> None:
        """Serve every configured server concurrently until stopped."""
        self._tasks = [
            asyncio.create_task(link.run(emit), name=f"opcua:{link.name}") for link in self._make_links()
        ]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def stop(self) -> None:
        """Stop every server link; idempotent."""
        for link in self._links:
            await link.stop()

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Translate one recorded data change (pure; see ``translate``)."""
        return to_entities(raw, self.mappings)
