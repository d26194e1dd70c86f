"""ChirpStack v4: MQTT integration (``application/<app>/device/<deveui>/event/<type>``) or HTTP integration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from adapters.kit.lorawan.adapter import NetworkServerAdapter
from adapters.kit.lorawan.servers import chirpstack
from gateway.contract import Manifest, load_config_schema


class ChirpstackV4Adapter(NetworkServerAdapter):
    """Reads ChirpStack v4 integration events (JSON marshaler) and emits Smart Data Model entities."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)
    parser = staticmethod(chirpstack.parse_v4)
    default_topics = ("application/+/device/+/event/+",)
    default_http_path = "/chirpstack"
