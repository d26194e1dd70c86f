"""ChirpStack v3 (application server): MQTT integration or HTTP integration, JSON marshaler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from adapters.kit.lorawan.adapter import NetworkServerAdapter
from adapters.kit.lorawan.servers import chirpstack
from gateway.contract import Manifest, load_config_schema


class ChirpstackV3Adapter(NetworkServerAdapter):
    """Reads ChirpStack v3 integration events (base64 ids, ``objectJSON``) and emits entities."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)
    parser = staticmethod(chirpstack.parse_v3)
    default_topics = ("application/+/device/+/event/+",)
    default_http_path = "/chirpstack"

    def event_from_topic(self, topic: str) -> str | None:
        """``…/event/up`` (v3.11+) or ``…/rx`` (older releases)."""
        if topic.endswith("/rx"):
            return "up"
        return super().event_from_topic(topic)
