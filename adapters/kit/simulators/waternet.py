"""A simulated drinking-water network served over OPC UA (asyncua), for tests and the demo.

It publishes pumps (speed, flow, power, status), tanks (level), valves (opening), junction
pressures, a 64-bit energy totalizer and a vibration spectrum (array) under
``Objects/WaterNet``; every variable carries ``EngineeringUnits`` (EUInformation with the
UN/CEFACT code encoded as OPC UA specifies) and ``EURange``. Values move on a timer from a
deterministic step counter so that a restarted simulator continues the same curves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.status_codes import StatusCodes

NAMESPACE = "urn:jonction:simulator:waternet"
"""Namespace URI of the simulated address space."""

UNECE_NAMESPACE = "http://www.opcfoundation.org/UA/units/un/cefact"
"""Namespace URI OPC UA uses for EUInformation built from UN/CEFACT Recommendation 20."""


def _node_id(name: str, namespace: int) -> ua.NodeId:
    """A string NodeId in ``namespace`` (asyncua types its fields with its own int/str subclasses)."""
    return ua.NodeId(ua.String(name), ua.Int16(namespace))


def _ua_time(moment: datetime) -> ua.DateTime:
    """``moment`` as asyncua's DateTime (a datetime subclass), exactly."""
    return ua.DateTime.combine(moment.date(), moment.timetz())


def unit_id(common_code: str) -> int:
    """Encode a UN/CEFACT common code as the OPC UA ``UnitId`` (OPC 10000-8 §5.6.3)."""
    value = 0
    for char in common_code.upper():
        value = (value << 8) | ord(char)
    return value


@dataclass(frozen=True, slots=True)
class Point:
    """One simulated variable: where it lives, its type, unit, range and curve."""

    obj: str
    name: str
    variant: ua.VariantType
    unit: str
    display: str
    low: float
    high: float
    base: float
    amplitude: float
    period: float

    @property
    def node_id(self) -> str:
        """String identifier of the variable (``<object>.<name>``)."""
        return f"{self.obj}.{self.name}"

    def value(self, step: int) -> Any:
        """The variable's value at ``step`` (a smooth, repeatable curve)."""
        if self.variant in (ua.VariantType.UInt64, ua.VariantType.Int64):
            # A totalizer that starts past 2**53 so that 64-bit handling is exercised.
            return int(self.base) + step * int(self.amplitude)
        if self.variant == ua.VariantType.Boolean:
            return True
        raw = self.base + self.amplitude * math.sin(2 * math.pi * step / self.period)
        return round(min(self.high, max(self.low, raw)), 3)


POINTS: tuple[Point, ...] = (
    Point("Pump1", "Speed", ua.VariantType.Double, "RPM", "r/min", 0, 3000, 1450, 150, 20),
    Point("Pump1", "Flow", ua.VariantType.Double, "G51", "L/s", 0, 200, 85, 12, 15),
    Point("Pump1", "Power", ua.VariantType.Double, "KWT", "kW", 0, 150, 37, 4, 25),
    Point("Pump1", "Running", ua.VariantType.Boolean, "", "", 0, 1, 1, 0, 1),
    Point("Tank1", "Level", ua.VariantType.Double, "MTR", "m", 0, 6.75, 4.2, 1.1, 40),
    Point("Valve1", "Opening", ua.VariantType.Double, "P1", "%", 0, 100, 62, 20, 30),
    Point("Junction1", "Pressure", ua.VariantType.Double, "BAR", "bar", 0, 16, 4.1, 0.6, 12),
    Point("Junction2", "Pressure", ua.VariantType.Double, "BAR", "bar", 0, 16, 3.6, 0.5, 18),
    Point("Pump1", "EnergyTotal", ua.VariantType.UInt64, "WHR", "Wh", 0, 2**64 - 1, 2**53 + 10, 7, 1),
)
"""The simulated variables (object, name, type, UN/CEFACT unit, display, range, curve)."""

SPECTRUM = Point("Pump1", "Vibration", ua.VariantType.Double, "MMT", "mm", 0, 10, 0, 0, 1)
"""An array variable: a small vibration spectrum per step."""


class _Users(UserManager):
    """Username/password check against the configured users (anonymous refused if users set)."""

    def __init__(self, users: Mapping[str, str], allow_anonymous: bool) -> None:
        self._users = dict(users)
        self._anonymous = allow_anonymous

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        """The user for these credentials, or None to refuse the session."""
        if username is None:
            return User(role=UserRole.User) if self._anonymous else None
        if self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


_POLICIES = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


class WaterNet:
    """The simulator server: ``await start()``, ``await stop()``; ``endpoint`` is its URL.

    Config keys (all optional): ``host``, ``port`` (default 4840), ``path``, ``interval_s``
    (update period, default 0.2), ``start_step``, ``policies`` (list of ``None``,
    ``Basic256Sha256_Sign``, ``Basic256Sha256_SignAndEncrypt``), ``certificate`` and
    ``private_key`` (server certificate files, required with a secure policy), ``users``
    (username → password; anonymous is refused when set unless ``allow_anonymous``),
    ``historize`` (keep an in-memory history of every variable for HistoryRead),
    ``extra_points`` (that many more pressure sensors under ``WaterNet/Sensors``, for load tests).
    """

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        cfg = dict(config or {})
        self.host: str = cfg.get("host", "127.0.0.1")
        self.port: int = int(cfg.get("port", 4840))
        self.path: str = cfg.get("path", "/jonction/waternet")
        self.interval: float = float(cfg.get("interval_s", 0.2))
        self.step: int = int(cfg.get("start_step", 0))
        self.policies: list[str] = list(cfg.get("policies", ["None"]))
        self.certificate: str | None = cfg.get("certificate")
        self.private_key: str | None = cfg.get("private_key")
        self.users: dict[str, str] = dict(cfg.get("users", {}))
        self.allow_anonymous: bool = bool(cfg.get("allow_anonymous", not self.users))
        self.historize: bool = bool(cfg.get("historize", False))
        self.extra_points: int = int(cfg.get("extra_points", 0))
        self.frozen: set[str] = set()
        """Node ids whose value the simulator stops changing (for deadband tests)."""
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._nodes: dict[str, Any] = {}
        self._objects: dict[str, Any] = {}
        self._events: Any = None
        self._log = logging.getLogger("jonction.simulators.waternet")

    @property
    def endpoint(self) -> str:
        """The ``opc.tcp://`` URL clients connect to."""
        return f"opc.tcp://{self.host}:{self.port}{self.path}"

    async def start(self) -> None:
        """Build the address space and start serving."""
        server = Server(user_manager=_Users(self.users, self.allow_anonymous))
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("jonction waternet simulator")
        await server.set_application_uri("urn:jonction:simulator:waternet:server")
        server.set_security_policy([_POLICIES[p] for p in self.policies])
        tokens: list[type] = [ua.UserNameIdentityToken] if self.users else []
        if self.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if self.certificate and self.private_key:
            await server.load_certificate(Path(self.certificate))
            await server.load_private_key(Path(self.private_key))
        idx = await server.register_namespace(NAMESPACE)
        net = await server.nodes.objects.add_folder(_node_id("WaterNet", idx), ua.QualifiedName("WaterNet", idx))
        objects: dict[str, Any] = {}
        now = datetime.now(UTC)
        extra = tuple(
            Point("Sensors", f"P{n:05d}", ua.VariantType.Double, "BAR", "bar", 0, 16,
                  3 + (n % 10) / 10, 0.4, 10 + n % 17)
            for n in range(self.extra_points)
        )
        for point in (*POINTS, SPECTRUM, *extra):
            if point.obj not in objects:
                objects[point.obj] = await net.add_object(
                    _node_id(point.obj, idx), ua.QualifiedName(point.obj, idx)
                )
            initial = self._value(point)
            node = await objects[point.obj].add_variable(
                _node_id(point.node_id, idx),
                ua.QualifiedName(point.name, idx),
                ua.Variant(initial, point.variant),
            )
            stamp = _ua_time(now)
            await node.write_value(
                ua.DataValue(ua.Variant(initial, point.variant), SourceTimestamp=stamp, ServerTimestamp=stamp)
            )
            if point.unit:
                eu = ua.EUInformation(
                    NamespaceUri=UNECE_NAMESPACE,
                    UnitId=unit_id(point.unit),
                    DisplayName=ua.LocalizedText(point.display),
                    Description=ua.LocalizedText(point.display),
                )
                await node.add_property(
                    _node_id(point.node_id + ".EngineeringUnits", idx), "EngineeringUnits", eu
                )
                await node.add_property(
                    _node_id(point.node_id + ".EURange", idx),
                    "EURange",
                    ua.Range(Low=float(point.low), High=float(point.high)),
                )
            self._nodes[point.node_id] = (node, point)
        self._objects = objects
        # Alarms are emitted by the Server object (where most clients subscribe to events),
        # with the equipment as SourceNode.
        self._events = await server.get_event_generator()
        await server.start()
        if self.historize:
            # In-memory history, so that a client cut off for a while can read back what it missed.
            for node, _point in self._nodes.values():
                # asyncua annotates ``period`` as timedelta, but its history manager takes None for "no age
                # limit" (only ``count`` bounds it), which is what a simulator needs.
                await server.historize_node_data_change(node, period=None, count=10_000)  # type: ignore[arg-type]
        self._server = server
        self._task = asyncio.create_task(self._tick(), name="waternet-simulator")
        self._log.info("waternet simulator listening", extra={"endpoint": self.endpoint})

    def _value(self, point: Point) -> Any:
        if point is SPECTRUM:
            return [round(abs(math.sin((self.step + k) / 3.0)) * (k + 1) * 0.1, 3) for k in range(8)]
        return point.value(self.step)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.step += 1
            await self.write_all()

    async def write_all(self) -> None:
        """Write every moving variable's value for the current step (source timestamp = now)."""
        now = _ua_time(datetime.now(UTC))
        for node_id, (node, point) in self._nodes.items():
            if node_id in self.frozen or point.variant == ua.VariantType.Boolean:
                continue
            await node.write_value(
                ua.DataValue(ua.Variant(self._value(point), point.variant), SourceTimestamp=now, ServerTimestamp=now)
            )

    async def set_value(
        self, node_id: str, value: Any, status: int = StatusCodes.Good, source_ts: datetime | None = None
    ) -> None:
        """Write one value with an explicit status code (e.g. to simulate a failing sensor)."""
        node, point = self._nodes[node_id]
        moment = source_ts or datetime.now(UTC)
        variant = ua.Variant(value, point.variant) if value is not None else ua.Variant()
        await node.write_value(
            ua.DataValue(variant, StatusCode=ua.StatusCode(ua.UInt32(status)), SourceTimestamp=_ua_time(moment),
                         ServerTimestamp=_ua_time(moment))
        )

    async def alarm(self, obj: str, message: str, severity: int = 700) -> None:
        """Fire an event (BaseEventType) whose source is equipment ``obj`` (e.g. ``Tank1``)."""
        node = self._objects[obj]
        event = self._events.event
        event.SourceNode = node.nodeid
        event.SourceName = obj
        event.Severity = severity
        await self._events.trigger(message=message)

    async def stop(self) -> None:
        """Stop updating and serving; idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()


def create(config: Mapping[str, Any] | None = None) -> WaterNet:
    """Factory registered under the ``jonction.simulators`` entry point ``waternet``."""
    return WaterNet(config)
