"""LoRaWAN downlinks through ChirpStack v4: the CommandTarget capability of the chirpstack_v4 adapter.

A command is enqueued on ChirpStack's MQTT integration topic
``application/<applicationId>/device/<devEui>/command/down`` with a device-queue item
``{"id", "devEui", "confirmed": true, "fPort", "data": <base64>}``. The queue item id is the
command id, so ChirpStack's ``event/ack`` (``queueItemId``, ``acknowledged``) for the confirmed
downlink tells which command the device acknowledged (or did not).

The application id is learnt from the device's uplink topics (the devices list does not carry
it) and kept in ``state_dir`` when one is configured: without it, a command for a device not heard
since the gateway started waits (retried) for its next uplink.

Encoders, by device profile. The Milesight WS558 (profile ``milesight-ws558-streetlight``) is a
relay controller without dimming: the only dimming downlink written here is a *generic DALI
dimming controller* format, not a WS558 feature and not a published vendor format — fPort 10,
``0x01`` (set level), the DALI arc power level (0..254, logarithmic curve of IEC 62386-102 from
the percentage; 0 is off), the output (1..8, the profile's ``switch`` parameter). A real dimming
controller's profile replaces it with its own documented bytes.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import aiomqtt

from adapters.kit.lorawan.provisioning import DeviceRecord, Registry
from adapters.kit.mqtt import MqttSettings
from gateway.contract import CommandReport
from gateway.errors import TranslationError
from gateway.secrets import read_secret

APPLICATIONS_FILE: Final = "chirpstack-applications.json"
"""In ``state_dir``: DevEUI → application id, learnt from the uplink topics."""
DIMMING_PORT: Final = 10
SET_LEVEL: Final = 0x01


def dali_arc_level(percent: float) -> int:
    """The DALI arc power level (IEC 62386-102 logarithmic curve) giving ``percent`` % of full light."""
    if percent <= 0:
        return 0
    if percent >= 100:
        return 254
    # IEC 62386-102: X(n) = 10 ** ((n - 1) / (253 / 3) - 1) %, n in 1..254
    return max(1, min(254, round(1 + (253 / 3) * (math.log10(percent) + 1))))


def encode_dimming(value: Any, record: DeviceRecord) -> tuple[int, bytes]:
    """(fPort, bytes) of the generic DALI dimming downlink; TranslationError for a value out of range."""
    level = value
    if isinstance(level, bool) or not isinstance(level, int | float) or not math.isfinite(level):
        raise TranslationError(f"dimmingLevel: {value!r} is not a number")
    percent = float(level) * 100 if 0 <= level <= 1 and isinstance(level, float) else float(level)
    if not 0 <= percent <= 100:
        raise TranslationError(f"dimmingLevel: {value!r} is outside 0..100 %")
    output = int(record.params.get("switch", 1))
    return DIMMING_PORT, bytes([SET_LEVEL, dali_arc_level(percent), output])


Encoder = Callable[[Any, DeviceRecord], tuple[int, bytes]]
ENCODERS: Final[Mapping[str, Mapping[str, Encoder]]] = {
    "milesight-ws558-streetlight": {"dimmingLevel": encode_dimming},
}
"""Device profile id → attribute → encoder."""


class DownlinkCommands:
    """Mixin of the ChirpStack v4 adapter: CommandTarget and CommandAcknowledgements over MQTT."""

    registry: Registry
    config: Mapping[str, Any]
    source: str

    _applications: dict[str, str]
    _report: CommandReport | None

    def command_attributes(self) -> dict[str, list[str]]:
        """Entity type → commandable attributes, from the provisioned devices' profiles that have encoders."""
        found: dict[str, set[str]] = {}
        for record in self.registry.devices.values():
            encoders = ENCODERS.get(record.profile.id)
            if encoders:
                found.setdefault(record.profile.entity_type, set()).update(encoders)
        return {t: sorted(a) for t, a in sorted(found.items())}

    def bind_command_reports(self, report: CommandReport) -> None:
        """Keep the runtime's reporter for ChirpStack's ``ack`` events."""
        self._state()
        self._report = report

    def _state(self) -> None:
        # A mixin without __init__: the attributes appear on first use, each on its own.
        if not hasattr(self, "_applications"):
            self._applications = self._saved_applications()
        if not hasattr(self, "_report"):
            self._report = None

    def note_event(self, topic: str, body: bytes) -> None:
        """Learn the application id of a device from its topic; report an ``ack`` event to the runtime."""
        self._state()
        parts = topic.split("/")
        if len(parts) >= 6 and parts[0] == "application" and parts[2] == "device" and parts[4] == "event":
            eui = parts[3].lower()
            if self._applications.get(eui) != parts[1]:
                self._applications[eui] = parts[1]
                self._save_applications()
            if parts[5] == "ack" and self._report is not None:
                try:
                    doc = json.loads(body)
                except ValueError:
                    return
                item = doc.get("queueItemId") if isinstance(doc, Mapping) else None
                if isinstance(item, str):
                    ok = doc.get("acknowledged") is True
                    self._report(item, {"status": "acknowledged" if ok else "failed",
                                        "detail": f"device ack (fCntDown {doc.get('fCntDown')})" if ok
                                        else "the device did not acknowledge the confirmed downlink"})

    def _applications_file(self) -> Path | None:
        state_dir = self.config.get("state_dir")
        return Path(str(state_dir)) / APPLICATIONS_FILE if state_dir else None

    def _saved_applications(self) -> dict[str, str]:
        path = self._applications_file()
        try:
            saved = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.exists() else {}
        except (OSError, ValueError):
            return {}  # rebuilt from the next uplinks
        return {str(k): str(v) for k, v in saved.items()} if isinstance(saved, dict) else {}

    def _save_applications(self) -> None:
        """Keep the learnt application ids (only when one changes: rare), so a restart need not wait for uplinks."""
        path = self._applications_file()
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._applications, sort_keys=True), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass  # memory still has it; the file catches up on the next change

    async def send_command(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Enqueue the downlink on ChirpStack's MQTT integration (``sent``; the device's ack follows)."""
        self._state()
        record = next((r for r in self.registry.devices.values() if r.entity_id == command["entity_id"]), None)
        if record is None:
            return {"status": "failed", "retry": False,
                    "detail": f"no provisioned device measures {command['entity_id']}"}
        encoder = ENCODERS.get(record.profile.id, {}).get(str(command["attribute"]))
        if encoder is None:
            return {"status": "failed", "retry": False,
                    "detail": f"profile {record.profile.id} has no downlink for {command['attribute']}"}
        try:
            port, data = encoder(command["value"], record)
        except TranslationError as exc:
            return {"status": "failed", "retry": False, "detail": exc.reason}
        mqtt = self.config.get("mqtt")
        if not isinstance(mqtt, Mapping):
            return {"status": "failed", "retry": False, "detail": "downlinks need the mqtt transport"}
        app = self._applications.get(record.dev_eui.lower())
        if app is None:
            return {"status": "failed", "retry": True,
                    "detail": f"application id of device {record.dev_eui} not known until its next uplink"}
        item = {"id": command["id"], "devEui": record.dev_eui.lower(), "confirmed": True, "fPort": port,
                "data": base64.b64encode(data).decode()}
        topic = f"application/{app}/device/{record.dev_eui.lower()}/command/down"
        settings = MqttSettings.from_config(mqtt, client_id=f"jonction-{self.source}-down",
                                            default_topics=("application/+/device/+/event/+",))
        try:
            password = read_secret({"password": settings.password, "password_file": settings.password_file,
                                    "password_env": settings.password_env}, "password", where="mqtt.")
            async with aiomqtt.Client(settings.host, settings.port, username=settings.username, password=password,
                                      identifier=f"jonction-{self.source}-down-{time.monotonic_ns()}",
                                      tls_context=settings.ssl_context(), timeout=10) as client:
                await client.publish(topic, json.dumps(item).encode(), qos=1)
        except (aiomqtt.MqttError, OSError) as exc:
            return {"status": "failed", "retry": True, "detail": f"MQTT broker unavailable: {exc}"}
        return {"status": "sent", "retry": False, "detail": f"queued on {topic} (fPort {port}, {data.hex()})"}
