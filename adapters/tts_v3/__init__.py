"""The Things Stack v3 (TTN / TTI): MQTT (``v3/{app}@{tenant}/devices/{dev}/up``) or webhooks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from adapters.kit.lorawan.adapter import NetworkServerAdapter
from adapters.kit.lorawan.servers import tts
from adapters.kit.push import PushRequest
from gateway.contract import Manifest, load_config_schema


class TtsV3Adapter(NetworkServerAdapter):
    """Reads The Things Stack application messages (uplinks, join accepts, downlink events)."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)
    parser = staticmethod(tts.parse)
    default_topics = ("v3/+/devices/+/up", "v3/+/devices/+/join")
    default_http_path = "/tts"

    def event_from_topic(self, topic: str) -> str | None:
        """The message kind after ``/devices/<device id>/`` (``up``, ``join``, ``down/ack``...)."""
        parts = topic.split("/")
        if len(parts) >= 5 and parts[0] == "v3" and parts[2] == "devices":
            return "/".join(parts[4:])
        return None

    def event_from_request(self, request: PushRequest) -> str | None:
        """The webhook sub-path (``/tts/uplink``) when the webhook posts each kind to its own path."""
        tail = request.match_info.get("kind")
        return tail or None
