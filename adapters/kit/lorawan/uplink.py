"""The network-server-neutral event every LoRaWAN adapter parses its JSON into."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MEASUREMENT_EVENTS = frozenset({"up"})
"""Event kinds that carry application data; every other kind only updates the Device entity."""


@dataclass(frozen=True, slots=True)
class Radio:
    """Radio metadata of one uplink, reduced to what a territory looks at."""

    rssi: float | None = None
    """Best RSSI over the receiving gateways (dBm)."""
    snr: float | None = None
    """SNR at the gateway with the best RSSI (dB)."""
    gateways: tuple[str, ...] = ()
    """Ids of the gateways that received the frame, in the server's order."""
    spreading_factor: int | None = None
    frequency: int | None = None
    """Carrier frequency (Hz)."""
    data_rate: int | None = None
    bandwidth: int | None = None
    """Bandwidth (Hz)."""


@dataclass(frozen=True, slots=True)
class Uplink:
    """One network-server event: an uplink, or a join / status / ack / txack / log / location."""

    kind: str
    """``up``, ``join``, ``status``, ``ack``, ``txack``, ``log``, ``location``, ``downlink``, ``other``."""
    dev_eui: str
    """DevEUI as 16 lower-case hex digits."""
    key: str
    """Idempotency key the server provides (or a digest of the event when it provides none)."""
    time: str | None = None
    """RFC 3339 UTC time of the event as the server reports it (None: use the receipt time)."""
    device_name: str | None = None
    applications: tuple[str, ...] = ()
    """Application id and name on the network server (provisioning rules match either)."""
    device_profile: str | None = None
    """Device-profile / model name on the network server (used by provisioning rules)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    f_port: int | None = None
    f_cnt: int | None = None
    payload: bytes | None = None
    """Application payload (FRMPayload, decrypted); None when the server did not forward it."""
    decoded: Mapping[str, Any] | None = None
    """The server-side decoded object (codec output), when there is one."""
    radio: Radio | None = None
    battery_level: float | None = None
    """Battery level 0..1 reported by the network (DevStatusAns), when known."""
    dev_addr: str | None = None
    late: bool = False
    """True for a copy the server forwarded after the first one (ThingPark ``Late``)."""
    location: tuple[float, float] | None = None
    """Device location (lon, lat) the network server holds for the device, if any."""
    decoded_at: str = ""
    """JSON pointer of the decoded object in the server's message (for error messages)."""
    payload_at: str = ""
    """JSON pointer of the payload bytes in the server's message."""
    detail: Mapping[str, Any] = field(default_factory=dict)
    """Event-specific facts kept for the Device entity (log level and code, ack flag...)."""


def digest_key(prefix: str, body: bytes) -> str:
    """A fallback idempotency key: the event kind and a SHA-256 of the exact bytes received."""
    return f"{prefix}:sha256:{hashlib.sha256(body).hexdigest()}"
