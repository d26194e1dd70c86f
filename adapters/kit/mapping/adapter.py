"""``MappingAdapter``: the base of adapters whose translation is a declarative mapping.

The ``rest_mapping``, ``webhook`` and ``files`` adapters differ only in their transport (poll a
REST API, receive signed pushes, read files); the configuration they share — source name,
tenant, the mapping, logger, state file, availability log — and the pure translation of a
message (one page, one delivery, or one item of either) live here once::

    class MyAdapter(MappingAdapter, package=__package__):
        def __init__(self, config, *, http=None, log=None):
            super().__init__(config, http=http, log=log)
            self.interval = float(config.get("interval", 60))   # transport settings only

``package`` is the adapter's own package: its ``manifest.json``, ``config.schema.json`` and the
``examples/`` a ``mapping_file: builtin:<name>`` names are read from there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp

from adapters.kit.mapping.engine import EntityMapping, apply_mapping, item_tenant, map_item
from adapters.kit.mapping.support import Availability, StateFile, mapping_from_config
from adapters.kit.payload import load_json
from gateway.contract import Manifest, adapter_logger, load_config_schema
from gateway.errors import ConfigInvalid
from gateway.model import Entity, RawMessage

__all__ = ["MappingAdapter"]


class MappingAdapter:
    """Configuration and pure translation shared by the mapping-driven adapters; subclasses add a transport.

    A subclass names its package (``class X(MappingAdapter, package=__package__)``), which loads
    its ``manifest`` and ``config_schema``; it implements ``check``, ``run`` and ``stop``.
    """

    manifest: ClassVar[Manifest]
    config_schema: ClassVar[Mapping[str, Any]]
    package: ClassVar[str]
    """The adapter's package: manifest, config schema and built-in example mappings."""
    default_split: ClassVar[str] = "message"
    """``split`` when the config gives none: one RawMessage per ``message`` (page, delivery) or per ``item``."""
    payload_name: ClassVar[str] = "payload"
    """What a payload is called in a TranslationError when it is not JSON ("delivery", "payload"...)."""
    push_context: ClassVar[bool] = False
    """True when the transport gives the mapping a push's query string and headers (``$query.i``)."""

    def __init_subclass__(cls, *, package: str | None = None, **kwargs: Any) -> None:
        """Load the subclass's manifest and config schema from ``package``."""
        super().__init_subclass__(**kwargs)
        if package is not None:
            cls.package = package
            cls.manifest = Manifest.load(package)
            cls.config_schema = load_config_schema(package)

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        """Read the shared settings and compile the mapping (no I/O besides a ``mapping_file``)."""
        domain = self.manifest.domain
        self.config = config
        self.source: str = str(config.get("name", domain))
        """Name of the configured source: ``RawMessage.source`` of every message it emits."""
        self.tenant: str = str(config.get("tenant", ""))
        self.split: str = str(config.get("split", self.default_split))
        self.mapping: EntityMapping = mapping_from_config(config, self.package)
        if self.mapping.context and not self.push_context:
            inline = config.get("mapping") is not None
            raise ConfigInvalid("invalid mapping", [
                (f"/mapping{where}: " if inline else f"/mapping_file: {where}: ")
                + f"the {domain} adapter receives no pushes, so $query and $headers selectors have nothing to read"
                for where in self.mapping.context.values()
            ])
        self.log: logging.Logger = log or adapter_logger(domain)
        self.http = http
        """The runtime's shared client session, when it gives one."""
        self.state = StateFile(config.get("state_dir"), self.source)
        self.availability = Availability(self.log, self.source)
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------------ messages

    @property
    def per_item(self) -> bool:
        """True when each item becomes its own RawMessage: ``split: item``, or items routed to tenants."""
        return self.split == "item" or self.mapping.tenant is not None

    def tenant_of(self, item: Any, context: Mapping[str, str] | None = None) -> str:
        """The tenant of one item: the one the mapping's ``tenant`` selector finds (in the item or, for a
        push, its ``context``), else the source's."""
        return item_tenant(self.mapping, item, context or {}) or self.tenant

    # ------------------------------------------------------------------ pure translation

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Apply the mapping to one message: a whole document, or one item when the transport split it."""
        doc = load_json(raw.payload, what=self.payload_name)
        # A push transport put the query parameters and headers the mapping reads in the metadata.
        if raw.metadata.get("split") == "item":
            return [map_item(self.mapping, doc, where=self.item_where(raw.metadata), context=raw.metadata)]
        return apply_mapping(self.mapping, doc, raw.metadata)

    def item_where(self, metadata: Mapping[str, str]) -> str:
        """How a TranslationError names an item (the transport's metadata says where it came from)."""
        return f"item {metadata.get('index', '0')}"
