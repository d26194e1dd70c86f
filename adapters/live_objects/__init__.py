"""Orange Live Objects: LoRa data messages from an MQTT FIFO (``fifo/<name>``) or router topic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from adapters.kit.lorawan.adapter import NetworkServerAdapter
from adapters.kit.lorawan.servers import live_objects
from gateway.contract import Manifest, load_config_schema


class LiveObjectsAdapter(NetworkServerAdapter):
    """Reads Live Objects LoRa data messages (hex payload, optional decoded ``value``)."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)
    parser = staticmethod(live_objects.parse)
    transports = ("mqtt",)

    def event_from_topic(self, topic: str) -> str | None:
        """Live Objects data messages are uplinks."""
        return "up"
