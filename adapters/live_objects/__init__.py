"""Orange Live Objects: LoRa data messages from an MQTT FIFO (``fifo/<name>``) or router topic."""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.resources import files
from typing import Any, ClassVar

from adapters.lorawan.adapter import NetworkServerAdapter
from adapters.lorawan.servers import live_objects
from gateway.contract import Manifest


class LiveObjectsAdapter(NetworkServerAdapter):
    """Reads Live Objects LoRa data messages (hex payload, optional decoded ``value``)."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = json.loads(
        files(__package__).joinpath("config.schema.json").read_text(encoding="utf-8"))
    parser = staticmethod(live_objects.parse)
    transports = ("mqtt",)

    def event_from_topic(self, topic: str) -> str | None:
        """Live Objects data messages are uplinks."""
        return "up"
