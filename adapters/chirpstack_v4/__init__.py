"""ChirpStack v4: MQTT integration (``application/<app>/device/<deveui>/event/<type>``) or HTTP integration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from adapters.chirpstack_v4.commands import DownlinkCommands
from adapters.kit.lorawan.adapter import NetworkServerAdapter
from adapters.kit.lorawan.servers import chirpstack
from gateway.contract import Manifest, load_config_schema
from gateway.model import RawMessage


class ChirpstackV4Adapter(DownlinkCommands, NetworkServerAdapter):
    """Reads ChirpStack v4 integration events (JSON marshaler) and emits Smart Data Model entities."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)
    parser = staticmethod(chirpstack.parse_v4)
    default_topics = ("application/+/device/+/event/+",)
    default_http_path = "/chirpstack"

    def raw_message(self, body: bytes, *, event: str | None, metadata: Mapping[str, str],
                    max_bytes: int, received_at: str | None = None,
                    doc: Mapping[str, Any] | None = None) -> RawMessage:
        """The base class's RawMessage; first, the downlink side learns application ids and acks (commands.py)."""
        if "topic" in metadata:
            self.note_event(metadata["topic"], body)
        return super().raw_message(body, event=event, metadata=metadata, max_bytes=max_bytes,
                                   received_at=received_at, doc=doc)
