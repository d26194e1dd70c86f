"""The CommandTarget capability of the IoT Agent adapter: NGSI-LD commands to its provisioned devices.

The runtime's commands (``gateway.runtime.commands``) reuse the agent's own command path
(:meth:`IotAgentAdapter.send_device_command`: ``<apikey>/<device_id>/cmd`` over MQTT, the device's
HTTP endpoint, or queued for polling). A command the device has to confirm is ``sent``; its
``/cmdexe`` result acknowledges it (the agent's ``<command>_status``/``_info`` attributes are
written as before).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from adapters.iot_agent import ultralight
from adapters.iot_agent.provisioning import Device, Registry
from adapters.iot_agent.translate import definition
from gateway.contract import CommandReport
from gateway.errors import TranslationError


class _Sender(Protocol):
    def send_device_command(self, device: Device, name: str, value: Any) -> Awaitable[str]: ...


class NgsiCommands:
    """Mixin of the IoT Agent adapter: CommandTarget and CommandAcknowledgements."""

    registry: Registry
    _pending_commands: dict[tuple[str, str, str], str]
    _command_report: CommandReport | None

    def _command_state(self) -> dict[tuple[str, str, str], str]:
        # A mixin without __init__: its state appears on first use.
        if not hasattr(self, "_pending_commands"):
            self._pending_commands = {}
        return self._pending_commands

    def command_attributes(self) -> dict[str, list[str]]:
        """Entity type → the commands its provisioned devices declare."""
        found: dict[str, set[str]] = {}
        for device in self.registry.devices.values():
            d = definition(self.registry.definition_of(device))
            if d.commands:
                found.setdefault(d.entity_type, set()).update(d.commands)
        return {t: sorted(c) for t, c in sorted(found.items())}

    def bind_command_reports(self, report: CommandReport) -> None:
        """Keep the runtime's reporter for the devices' ``/cmdexe`` results."""
        self._command_report = report

    async def send_command(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Send through the agent's command path; ``sent`` until the device's ``/cmdexe`` result."""
        device = self.registry.device_by_entity(str(command["tenant"]), str(command["entity_id"]))
        if device is None:
            return {"status": "failed", "retry": False,
                    "detail": f"no device of service {command['tenant']!r} is bound to {command['entity_id']}"}
        name = str(command["attribute"])
        if name not in definition(self.registry.definition_of(device)).commands:
            return {"status": "failed", "retry": False, "detail": f"device {device.device_id} has no command {name!r}"}
        sender: _Sender = self  # type: ignore[assignment]  # the adapter class provides it
        self._command_state()[(device.service, device.device_id, name)] = str(command["id"])
        outcome = await sender.send_device_command(device, name, command["value"])
        if outcome == "OK":
            return {"status": "acknowledged", "retry": False, "detail": "the device endpoint answered"}
        if outcome == "ERROR":
            return {"status": "failed", "retry": True, "detail": f"command {name} not delivered to {device.device_id}"}
        return {"status": "sent", "retry": False, "detail": f"command {name} sent to {device.device_id}"}

    def note_command_result(self, service: str, device_id: str, fmt: str, payload: bytes) -> None:
        """A ``/cmdexe`` result: report the command it answers (if the runtime sent one)."""
        report: CommandReport | None = getattr(self, "_command_report", None)
        if report is None:
            return
        try:
            if fmt == "ul":
                result = ultralight.parse_command_result(payload.decode())
                results: Mapping[str, Any] = {result.command: result.result}
            else:
                doc = json.loads(payload)
                results = doc if isinstance(doc, Mapping) else {}
        except (ValueError, TranslationError):  # a malformed result is dead-lettered by the translation
            return
        pending = self._command_state()
        for name, value in results.items():
            cid = pending.pop((service, device_id, str(name)), None)
            if cid is not None:
                report(cid, {"status": "acknowledged", "detail": f"device result: {value}"})
