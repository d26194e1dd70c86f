"""A simulated TALQ 2.7.1 gateway: a small lighting network that registers with a CMS and reports to it.

It plays both sides a real outdoor-device-network gateway plays: as a client of the CMS API it
registers its devices (``POST /devices``; the CMS reads the group back), then posts a log report
(``POST /log-reports``) every ``interval`` seconds; as a server it answers the gateway API a CMS
calls (``/devices``, ``/groups``, ``/calendars``, ``/control-programs``, ``/services``,
``POST /override-commands``, ``PATCH /devices/{deviceAddress}/{functionId}/{attributeName}``,
``POST /assign-commands``, ``POST``/``PUT`` of ``/calendars`` and ``/control-programs``), so that a
command round-trips: an override changes the level the lamp reports next, and a calendar assigned to
the group (its ``ControlProgramOne`` fixed-time controls) sets the levels of the following nights. Lamps
without either follow a night dimming schedule (100 % in the evening, 50 % after 23:00, 80 %
before dawn, off by day), their energy counters grow with the light they give, one lamp in eleven
has failed and the fourth fails now and then (one report in 20) and recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web

__all__ = ["SimulatedGateway", "create", "night_level"]

API_VERSION: Final = "2.7.1"
PARIS: Final = ZoneInfo("Europe/Paris")
_NS: Final = uuid.UUID("6f1c1d7e-53a1-4f7e-9c55-7a1c0e0b7a10")
# Montpellier, along the Lez (Port Marianne), WGS84.
LON0, LAT0 = 3.8952, 43.6032
log = logging.getLogger("jonction.simulators.talq")


def night_level(moment: float) -> int:
    """The scheduled light level (%) at POSIX time ``moment``, in Paris local time."""
    local = datetime.fromtimestamp(moment, tz=PARIS)
    hour = local.hour + local.minute / 60
    if 7 <= hour < 19:
        return 0
    if hour >= 19:
        return 100 if hour < 23 else 50
    return 50 if hour < 5 else 80


def address(name: str) -> str:
    """A stable TALQ address (UUID) for a simulated thing."""
    return str(uuid.uuid5(_NS, name))


def attr(kind: str, value: Any, when: str) -> dict[str, Any]:
    """A TALQ Attribute object."""
    return {"type": kind, "value": value, "timestamp": when}


@dataclass
class Lamp:
    """One simulated luminaire controller."""

    index: int
    watts: float
    energy_kwh: float
    hours: float
    failed: bool
    override: int | None = None
    calendar: str | None = None
    switches: int = 0
    lit: bool = False

    @property
    def address(self) -> str:
        """Its TALQ address."""
        return address(f"lamp-{self.index}")


@dataclass
class GatewaySettings:
    """Settings of one simulated gateway (every field has a demo default)."""

    cms_url: str = "http://127.0.0.1:8443/talq"
    cms_token: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    token: str = ""
    lamps: int = 12
    interval: float = 10.0
    name: str = "talq-gateway"
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> GatewaySettings:
        """Settings from a plain mapping, ignoring unknown keys."""
        known = {k: v for k, v in (config or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


class SimulatedGateway:
    """The simulated TALQ gateway: ``start`` serves its API and begins reporting to the CMS."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.address = address(settings.name)
        self.cms_address = ""
        self.lamps = [Lamp(i, (40.0, 60.0, 90.0)[i % 3], 1200.0 + 37.5 * i, 4000.0 + 11 * i, i % 11 == 7)
                      for i in range(settings.lamps)]
        self.cabinet = address("cabinet-1")
        self.group = address("group-1")
        self.cabinet_energy = 85_000.0
        self.url = ""
        self.stats: dict[str, int] = {"reports": 0, "report_failures": 0, "commands": 0, "registered": 0}
        self.sent: list[tuple[str, str, Any]] = []
        """Every request this gateway sent to the CMS (method, path, body), for contract tests; bounded."""
        self.received: list[tuple[str, str, Any]] = []
        """Every write the CMS sent to this gateway (method, path, body), for contract tests; bounded."""
        self.answers: list[tuple[str, str, int, Any]] = []
        """Every answer this gateway gave (method, route, status, body), for contract tests; bounded."""
        self._last = settings.clock()
        self.reports_built = 0
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self.registered = asyncio.Event()
        self.calendars: dict[str, dict[str, Any]] = {}
        """Calendars the CMS created, by id."""
        self.programs: dict[str, dict[str, Any]] = {}
        """Control programs the CMS created, by id."""

    # ------------------------------------------------------------------ model

    def level(self, lamp: Lamp, now: float) -> int:
        """The level a lamp gives now: 0 when failed, else an override or the night schedule."""
        if lamp.failed:
            return 0
        if lamp.override is not None:
            return lamp.override
        scheduled = self.calendar_level(lamp.calendar, now) if lamp.calendar else None
        return night_level(now) if scheduled is None else scheduled

    def calendar_level(self, calendar_id: str, now: float) -> int | None:
        """The level a calendar's first matching rule sets at ``now`` (Paris time); None when no rule applies."""
        calendar = self.calendars.get(calendar_id)
        if calendar is None:
            return None
        local = datetime.fromtimestamp(now, tz=PARIS)
        day, month_day = local.strftime("%Y-%m-%d"), local.strftime("--%m-%d")
        program_id = calendar.get("defaultProgram")
        for rule in calendar.get("rules") or []:
            start, end = str(rule.get("startDate", "--01-01")), str(rule.get("endDate", "--12-31"))
            today = month_day if start.startswith("--") else day
            inside = start <= today <= end if start <= end else (today >= start or today <= end)
            if inside:
                program_id = rule.get("program")
                break
        program = self.programs.get(str(program_id))
        controls = sorted((str(c["startTime"]), int(c["command"]["state"]["value"]))
                          for c in (program or {}).get("fixedTimeControls") or [])
        if not controls:
            return None
        clock = local.strftime("%H:%M:%S")
        earlier = [level for start, level in controls if start <= clock]
        return earlier[-1] if earlier else controls[-1][1]  # before the first control: the last one of the day

    def advance(self, now: float) -> None:
        """Grow the energy and burning-hour counters by the time since the last report."""
        hours = max(0.0, now - self._last) / 3600
        self._last = now
        total = 0.0
        for lamp in self.lamps:
            level = self.level(lamp, now)
            if level > 0:
                lamp.hours += hours
                used = lamp.watts * (0.1 + 0.9 * level / 100) * hours / 1000
                lamp.energy_kwh += used
                total += used
        self.cabinet_energy += total

    def devices(self) -> list[dict[str, Any]]:
        """The TALQ Devices of this network (lamps, then the cabinet)."""
        out: list[dict[str, Any]] = []
        for lamp in self.lamps:
            row, col = divmod(lamp.index, 6)
            out.append({"address": lamp.address, "name": f"Candélabre {lamp.index + 1:02d}, quai du Lez",
                        "class": "OutdoorLuminaireController",
                        "functions": [
                            {"id": "lampActuator1", "type": "LampActuatorFunction"},
                            {"id": "lampMonitor1", "type": "LampMonitorFunction"},
                            {"id": "location1", "type": "LocationSensorFunction",
                             "location": {"type": "AttributeLocation",
                                          "value": {"latitude": round(LAT0 + row * 0.00025, 6),
                                                    "longitude": round(LON0 + col * 0.0003, 6)}}},
                        ]})
        out.append({"address": self.cabinet, "name": "Armoire de commande AC-01", "class": "LightingCabinet",
                    "functions": [
                        {"id": "cabinetMonitor1", "type": "CabinetMonitorFunction"},
                        {"id": "meter1", "type": "ElectricalMeterFunction"},
                        {"id": "location1", "type": "LocationSensorFunction",
                         "location": {"type": "AttributeLocation",
                                      "value": {"latitude": LAT0 - 0.0002, "longitude": LON0 - 0.0002}}},
                    ]})
        return out

    def groups(self) -> list[dict[str, Any]]:
        """The TALQ Group of every lamp."""
        return [{"address": self.group, "ownerCMS": self.cms_address or address("cms"),
                 "members": [{"resource": "devices", "address": lamp.address} for lamp in self.lamps]
                 + [{"resource": "devices", "address": self.cabinet}]}]

    def log_report(self, now: float) -> dict[str, Any]:
        """One LogReport with every lamp's state, power, energy and failure and the cabinet's meter."""
        self.advance(now)
        when = datetime.fromtimestamp(now, tz=UTC).isoformat().replace("+00:00", "Z")
        entries: list[dict[str, Any]] = []

        def add(device: str, function_id: str, name: str, value: dict[str, Any]) -> None:
            entries.append({"data": {"type": "AttributeLogData", "srcAddress": f"{device}/{function_id}",
                                     "timestamp": when, "attributeName": name, "attributeValue": value}})

        total_w = 0.0
        self.reports_built += 1
        if len(self.lamps) > 3:  # lamp 4 fails now and then (one report in 20) and recovers: a flaky driver
            self.lamps[3].failed = self.reports_built % 20 == 0
        for lamp in self.lamps:
            level = self.level(lamp, now)
            power = 0.0 if level == 0 else round(lamp.watts * (0.1 + 0.9 * level / 100), 1)
            total_w += power
            volts = 229.0 + (lamp.index % 5) * 0.6
            add(lamp.address, "lampActuator1", "actualLightState",
                attr("AttributeLevelState", {"name": "LevelState", "value": level}, when))
            add(lamp.address, "lampMonitor1", "activePower", attr("AttributeFloat", power, when))
            add(lamp.address, "lampMonitor1", "supplyVoltage", attr("AttributeFloat", volts, when))
            add(lamp.address, "lampMonitor1", "supplyCurrent",
                attr("AttributeFloat", round(power / volts, 3), when))
            add(lamp.address, "lampMonitor1", "activeEnergy", attr("AttributeFloat", round(lamp.energy_kwh, 3), when))
            add(lamp.address, "lampMonitor1", "operatingHours", attr("AttributeFloat", round(lamp.hours, 2), when))
            add(lamp.address, "lampMonitor1", "lampFailure", attr("AttributeBoolean", lamp.failed, when))
            if level > 0 and not lamp.lit:  # an OFF -> ON cycle
                lamp.switches += 1
            lamp.lit = level > 0
            add(lamp.address, "lampMonitor1", "switchOnCounter",
                attr("AttributeInteger", 3650 + 2 * lamp.index + lamp.switches, when))
        add(self.cabinet, "meter1", "totalPower", attr("AttributeFloat", round(total_w / 1000, 3), when))
        add(self.cabinet, "meter1", "totalActiveEnergy", attr("AttributeFloat", round(self.cabinet_energy, 2), when))
        add(self.cabinet, "meter1", "frequency", attr("AttributeFloat", 50.0, when))
        add(self.cabinet, "meter1", "totalPowerFactor", attr("AttributeFloat", 0.95 if total_w else 1.0, when))
        for phase in (1, 2, 3):
            add(self.cabinet, "meter1", f"phase{phase}Voltage", attr("AttributeFloat", 230.0 - phase * 0.4, when))
        add(self.cabinet, "cabinetMonitor1", "cabinetDoorOpen", attr("AttributeBoolean", False, when))
        return {"address": address("logger-1"), "entries": entries}

    # ------------------------------------------------------------------ client side (to the CMS)

    def _keep(self, trail: list[Any], item: Any) -> None:
        trail.append(item)
        del trail[:-200]

    async def _call(self, method: str, path: str, body: Any) -> int:
        assert self._http is not None
        headers = {"talq-api-version": API_VERSION}
        if self.settings.cms_token:
            headers["Authorization"] = f"Bearer {self.settings.cms_token}"
        params = {"clientAddress": self.address, "talqRequestId": str(uuid.uuid4())}
        self._keep(self.sent, (method, path, body))
        async with self._http.request(method, self.settings.cms_url.rstrip("/") + path, json=body,
                                      params=params, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=15)) as response:
            await response.read()
            return response.status

    async def register(self) -> bool:
        """POST the devices to the CMS (it reads the group back with GET /groups); True when accepted."""
        ok = await self._call("POST", "/devices", self.devices()) in (200, 201)
        if ok:
            self.stats["registered"] += 1
            self.registered.set()
        return ok

    async def report_once(self) -> int:
        """POST one log report now; the CMS's status."""
        status = await self._call("POST", "/log-reports", self.log_report(self.settings.clock()))
        self.stats["reports" if status == 201 else "report_failures"] += 1
        return status

    async def _loop(self) -> None:
        delay = 0.5
        while not self.registered.is_set():  # the CMS may start after the gateway
            try:
                if await self.register():
                    break
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.debug("talq gateway: CMS not reachable yet: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        while True:
            try:
                await self.report_once()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.stats["report_failures"] += 1
                log.debug("talq gateway: report not sent: %s", exc)
            await asyncio.sleep(self.settings.interval)

    # ------------------------------------------------------------------ server side (the gateway API)

    def _answer(self, request: web.Request, status: int, body: Any = None) -> web.Response:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
        self._keep(self.answers, (request.method, route, status, body))
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status)

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.settings.token and request.headers.get("Authorization") != f"Bearer {self.settings.token}":
            return self._answer(request, 401, [{"key": "unauthorized"}])
        if "talq-api-version" not in request.headers:
            return self._answer(request, 400, [{"key": "headerMissing"}])
        if not request.query.get("clientAddress"):
            return self._answer(request, 400, [{"key": "parameterMissing"}])
        if request.method != "GET" and not request.query.get("talqRequestId"):
            return self._answer(request, 400, [{"key": "parameterMissing"}])
        if request.method == "GET" and not self.cms_address:
            self.cms_address = request.query["clientAddress"]
        return None

    async def _get_list(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        what = request.path.rstrip("/").rsplit("/", 1)[-1]
        lists: dict[str, Any] = {
            "devices": self.devices(), "groups": self.groups(),
            "calendars": [{"id": address("calendar-1"), "ownerCMS": self.cms_address or address("cms"),
                           "defaultProgram": address("program-night")}, *self.calendars.values()],
            "control-programs": [{"type": "TimeControlProgram", "id": address("program-night"),
                                  "ownerCMS": self.cms_address or address("cms")}, *self.programs.values()],
            "services": [{"name": "ControlService"}, {"name": "DataCollectService"},
                         {"name": "GroupManagementService"}],
        }
        return self._answer(request, 200, lists[what])

    async def _override(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
            targets = body["addresses"]
            state = body["targetCommand"]["state"]
            level = state["value"]
            if state["name"] != "LevelState" or not isinstance(level, int) or not 0 <= level <= 100:
                raise ValueError("a LevelState of 0..100 is expected")
        except (ValueError, KeyError, TypeError) as exc:
            return self._answer(request, 400, [{"key": "payloadError", "references": [
                {"address": {"resource": "override-commands", "address": "/targetCommand"}, "tag": str(exc)}]}])
        self._keep(self.received, ("POST", "/override-commands", body))
        by_address = {lamp.address: lamp for lamp in self.lamps}
        for target in targets:
            if not isinstance(target, Mapping):
                continue
            if target.get("resource") == "groups" and target.get("address") == self.group:
                for lamp in self.lamps:
                    lamp.override = level
            elif target.get("resource") == "devices" and target.get("address") in by_address:
                by_address[target["address"]].override = level
            else:
                return self._answer(request, 422, [{"key": "resourceNotFound", "references": [
                    {"address": {"resource": str(target.get("resource")), "address": str(target.get("address"))}}]}])
        self.stats["commands"] += 1
        return self._answer(request, 201)

    async def _patch_attribute(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        device, function_id, name = (request.match_info[k] for k in ("device", "function", "attribute"))
        lamp = next((lamp for lamp in self.lamps if lamp.address == device), None)
        if lamp is None:
            return self._answer(request, 404, [{"key": "resourceNotFound"}])
        try:
            body = await request.json()
            level = body["value"]["state"]["value"]
            if function_id != "lampActuator1" or name != "targetLightCommand" or not isinstance(level, int):
                raise ValueError("only lampActuator1/targetLightCommand is writable here")
        except (ValueError, KeyError, TypeError) as exc:
            return self._answer(request, 422, [{"key": "payloadError", "references": [
                {"address": {"resource": "devices", "address": device}, "tag": str(exc)}]}])
        self._keep(self.received, ("PATCH", request.path.removeprefix("/talq"), body))
        lamp.override = level
        self.stats["commands"] += 1
        return self._answer(request, 200)

    async def _store(self, request: web.Request) -> web.Response:
        """POST (create, 409 if one exists) or PUT (update, 404 if one is missing) calendars or control programs."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        what = request.path.rstrip("/").rsplit("/", 1)[-1]
        kept = self.calendars if what == "calendars" else self.programs
        try:
            body = await request.json()
            if not isinstance(body, list) or not all(isinstance(i, Mapping) and isinstance(i.get("id"), str)
                                                     for i in body):
                raise ValueError("an array of objects with an id is expected")
        except ValueError as exc:
            return self._answer(request, 400, [{"key": "payloadError", "references": [
                {"address": {"resource": what, "address": "/"}, "tag": str(exc)}]}])
        self._keep(self.received, (request.method, f"/{what}", body))
        clash = [i["id"] for i in body if (i["id"] in kept) == (request.method == "POST")]
        if clash:
            return self._answer(request, 409 if request.method == "POST" else 404, [
                {"key": "resourceConflict" if request.method == "POST" else "resourceNotFound",
                 "references": [{"address": {"resource": what, "address": clash[0]}}]}])
        for item in body:
            kept[item["id"]] = dict(item)
        return self._answer(request, 201 if request.method == "POST" else 200, body)  # the OAS: the items

    async def _assign(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await request.json()
        self._keep(self.received, ("POST", "/assign-commands", body))
        entity = body.get("entity") if isinstance(body, Mapping) else None
        if isinstance(entity, Mapping) and entity.get("resource") == "calendars":
            calendar = str(entity.get("address") or "") or None  # no address: de-assign
            if calendar == address("calendar-1"):  # the built-in night schedule
                calendar = None
            elif calendar is not None and calendar not in self.calendars:
                return self._answer(request, 422, [{"key": "relatedResourceNotFound", "references": [
                    {"address": {"resource": "calendars", "address": calendar}}]}])
            by_address = {lamp.address: lamp for lamp in self.lamps}
            for target in body.get("addresses") or []:
                if not isinstance(target, Mapping):
                    continue
                chosen = (self.lamps if target.get("resource") == "groups" and target.get("address") == self.group
                          else [by_address[target["address"]]] if target.get("address") in by_address else [])
                for lamp in chosen:  # the calendar takes over from an earlier override
                    lamp.calendar, lamp.override = calendar, None
            self.stats["commands"] += 1
        return self._answer(request, 201)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Serve the gateway API and start registering and reporting to the CMS."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=1 << 20)
        for what in ("devices", "groups", "calendars", "control-programs", "services"):
            app.router.add_get(f"/talq/{what}", self._get_list)
        app.router.add_post("/talq/override-commands", self._override)
        app.router.add_post("/talq/assign-commands", self._assign)
        for what in ("calendars", "control-programs"):
            app.router.add_post(f"/talq/{what}", self._store)
            app.router.add_put(f"/talq/{what}", self._store)
        app.router.add_patch("/talq/devices/{device}/{function}/{attribute}", self._patch_attribute)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.settings.host}:{port}/talq"
        self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._loop(), name="talq-gateway-simulator")

    async def stop(self) -> None:
        """Stop reporting and serving; idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def create(config: Mapping[str, Any] | None = None) -> SimulatedGateway:
    """Build (not start) a simulated gateway; ``await gw.start()`` then read ``gw.url``."""
    return SimulatedGateway(GatewaySettings.from_config(config))
