"""TALQ Smart City Protocol 2.7.1: jonction as the Central Management Software (CMS) of TALQ gateways.

The adapter serves the TALQ CMS API that outdoor-device-network gateways call (``/devices``,
``/groups``, ``/log-reports``, ``/services``, ``/data-packages``, ``/device-classes`` and the type
resources such as ``/lamp-types``) on its own listener, and calls the TALQ gateway API for what a
CMS reads and writes (``gateway_api.py``): devices, groups, calendars, control programs, and
commands (``send_command``). Devices and logged attribute values become Smart Data Models
entities (``translate.py``, pure: what a log report alone does not say travels in the RawMessage
metadata as the registry's context).

The published OpenAPI files define no security scheme: transport security is TLS (``http.tls``
with a certificate and key), and the adapter asks for a bearer token (or a ``Basic`` value) as
configured, mandatory when listening beyond loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import aiohttp
from aiohttp import web

from adapters.kit.payload import ParsedBodies, load_json
from adapters.kit.push import Authenticate, BodyTooLarge, PushReceiver, header_token
from adapters.talq.calendar import calendar_for
from adapters.talq.gateway_api import GatewayClient, GatewayError
from adapters.talq.translate import device_context, translate
from gateway.contract import Emit, Manifest, load_config_schema
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import Entity, RawMessage, epoch_time

__all__ = ["TalqAdapter", "talq_errors"]

API_VERSION: Final = "2.7.1"
CONTEXT_KEY: Final = "talq_context"
RESOURCE_KEY: Final = "talq_resource"
_WRITES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_COMMANDABLE: Final = ["powerState", "dimmingLevel"]


def talq_errors(status: int, key: str, reason: str = "", pointer: str = "", resource: str = "") -> web.Response:
    """A TALQ error answer: an array of ``TALQErrorMessage`` (the pointer and reason in a reference)."""
    message: dict[str, Any] = {"key": key}
    if reason or pointer:
        message["references"] = [{"address": {"resource": resource or "request", "address": pointer or "/"},
                                   "tag": f"{pointer or '/'}: {reason}" if reason else pointer}]
    return web.json_response([message], status=status)


def _tls_context(tls: Mapping[str, Any] | None) -> ssl.SSLContext | None:
    if not tls:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls["cert_file"]), tls.get("key_file"))
        if tls.get("client_ca_file"):  # mutual TLS: gateways present a certificate signed by this CA
            context.load_verify_locations(cafile=str(tls["client_ca_file"]))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError, KeyError) as exc:
        raise ConfigInvalid(f"talq http.tls: {exc}",
                            ["/http/tls: cert_file and key_file must be readable PEM"]) from exc
    return context


class TalqAdapter:
    """jonction as a TALQ CMS: receives devices and log reports from TALQ gateways, sends them commands."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)

    def __init__(self, config: Mapping[str, Any], *, http: aiohttp.ClientSession | None = None,
                 log: logging.Logger | None = None) -> None:
        self.config = config
        self.log = log or logging.getLogger("jonction.adapters.talq")
        self.source = str(config.get("name", "talq"))
        self.tenant = str(config.get("tenant", ""))
        http_config: Mapping[str, Any] = config.get("http") or {}
        self.receiver = PushReceiver(http_config, default_port=8443, default_path="/talq", log=self.log,
                                     name=self.source, default_max_body=1048576)
        self._http_config = http_config
        self._authenticate: Authenticate | None = None
        """The credential check, read from the secret when the listener starts (no I/O in __init__)."""
        self._tls = http_config.get("tls")
        loc = config.get("default_location")
        self.default_location: list[float] | None = [float(loc["lon"]), float(loc["lat"])] if loc else None
        self.devices: dict[str, dict[str, Any]] = {}
        """Registered devices by address: the TALQ Device as sent and its context (functions, location, status)."""
        self.groups: dict[str, dict[str, Any]] = {}
        self.group_of: dict[str, str] = {}
        self.services: list[Any] = []
        self.types: dict[str, dict[str, Any]] = {}
        """Type resources (lamp-types, luminaire-types, device-classes...) kept as sent, by address or name."""
        state_dir = config.get("state_dir")
        self.state_file: Path | None = Path(state_dir) / "talq-registry.json" if state_dir else None
        """Where the device registry survives a restart (gateways register once, then only report)."""
        gw = config.get("gateway")
        self.gateway: GatewayClient | None = GatewayClient(gw, http=http, log=self.log) if gw else None
        self._emit: Emit | None = None
        self._sync: asyncio.Task[None] | None = None
        self.parsed = ParsedBodies()
        self.stats: dict[str, int] = {"requests": 0, "refused": 0, "log_values": 0}

    # ------------------------------------------------------------------ lifecycle

    async def check(self) -> None:
        """Refuse a listener beyond loopback without a token, and unreadable TLS files."""
        self._authenticate = header_token(self._http_config, self.source)
        self.receiver.check_exposure(self._authenticate is not None)
        _tls_context(self._tls)

    async def run(self, emit: Emit) -> None:
        """Serve the TALQ CMS API until :meth:`stop`."""
        await self.check()
        self._emit = emit
        self._load()
        self.receiver.ssl_context = _tls_context(self._tls)
        await self.receiver.serve_routes(self.routes())

    async def stop(self) -> None:
        """Stop listening and close the gateway client; idempotent."""
        await self.receiver.stop()
        if self._sync is not None:
            self._sync.cancel()
            await asyncio.gather(self._sync, return_exceptions=True)
        if self.gateway is not None:
            await self.gateway.close()

    def _load(self) -> None:
        """Read the registry kept by an earlier run (a corrupt file is set aside, not fatal)."""
        if self.state_file is None or not self.state_file.is_file():
            return
        try:
            kept = json.loads(self.state_file.read_text(encoding="utf-8"))
            self.devices.update(kept.get("devices") or {})
            self.groups.update(kept.get("groups") or {})
            self.group_of.update(kept.get("group_of") or {})
        except (OSError, ValueError, AttributeError) as exc:
            self.log.error("%s: device registry %s unreadable (%s): gateways must register again",
                           self.source, self.state_file, exc)

    def _save(self) -> None:
        """Write the registry atomically (on registrations and lamp status changes, which are rare)."""
        if self.state_file is None:
            return
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.state_file.with_suffix(".tmp")
            temporary.write_text(json.dumps({"devices": self.devices, "groups": self.groups,
                                             "group_of": self.group_of}, ensure_ascii=False), encoding="utf-8")
            os.replace(temporary, self.state_file)
        except OSError as exc:
            self.log.error("%s: device registry not saved: %s", self.source, exc)

    # ------------------------------------------------------------------ translation

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Entities of one accepted request (pure: the registry context travels in ``raw.metadata``)."""
        body = self.parsed.load(raw.payload)
        return translate(raw.metadata.get(RESOURCE_KEY, ""), body, raw.metadata.get(CONTEXT_KEY))

    # ------------------------------------------------------------------ commands

    def command_attributes(self) -> dict[str, list[str]]:
        """Entity type -> the attributes a command can write through the TALQ gateway API."""
        return {"Streetlight": list(_COMMANDABLE), "StreetlightGroup": [*_COMMANDABLE, "switchingOnHours"]}

    async def send_command(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Send one command to the gateway (an override, or a group calendar); the outcome as a plain dict."""
        if self.gateway is None:
            return {"status": "failed", "detail": "no gateway configured for this source", "retry": False}
        entity_type = str(command.get("entity_type", ""))
        entity_id = str(command.get("entity_id", ""))
        if entity_type not in ("Streetlight", "StreetlightGroup"):
            return {"status": "failed", "detail": f"{entity_type} cannot be commanded through TALQ", "retry": False}
        prefix = f"urn:ngsi-ld:{entity_type}:"
        if not entity_id.startswith(prefix):
            return {"status": "failed", "detail": f"entity id {entity_id!r} is not a TALQ {entity_type}",
                    "retry": False}
        if entity_type == "StreetlightGroup" and command.get("attribute") == "switchingOnHours":
            return await self._send_calendar(entity_id[len(prefix):], command)
        try:
            level = command_level(str(command.get("attribute", "")), command.get("value"))
        except ValueError as exc:
            return {"status": "failed", "detail": str(exc), "retry": False}
        resource = "devices" if entity_type == "Streetlight" else "groups"
        try:
            status = await self.gateway.override(resource, entity_id[len(prefix):], level,
                                                 ref=str(command.get("id", "")))
        except GatewayError as exc:
            return {"status": "failed", "detail": str(exc), "retry": exc.retry}
        if status == 201:
            return {"status": "acknowledged", "detail": f"gateway applied level {level} %", "retry": False}
        return {"status": "sent", "detail": f"gateway accepted level {level} % (202)", "retry": False}

    async def _send_calendar(self, group: str, command: Mapping[str, Any]) -> dict[str, Any]:
        """A group's ``switchingOnHours``: its control programs and calendar stored on the gateway, then assigned."""
        assert self.gateway is not None
        try:
            programs, calendar = calendar_for(group, command.get("value"), self.gateway.cms_address)
        except ValueError as exc:
            return {"status": "failed", "detail": str(exc), "retry": False}
        try:
            # programs first: the calendar's rules name them; every step is idempotent, so a retry redoes all
            await self.gateway.store("control-programs", programs)
            await self.gateway.store("calendars", [calendar])
            status = await self.gateway.assign({"resource": "calendars", "address": calendar["id"]},
                                               [{"resource": "groups", "address": group}],
                                               ref=str(command.get("id", "")))
        except GatewayError as exc:
            return {"status": "failed", "detail": str(exc), "retry": exc.retry}
        detail = f"calendar {calendar['id']} ({len(programs)} control program(s)) assigned to group {group}"
        if status == 201:
            return {"status": "acknowledged", "detail": detail, "retry": False}
        return {"status": "sent", "detail": detail + " (202)", "retry": False}

    # ------------------------------------------------------------------ the CMS API

    def routes(self) -> list[web.RouteDef]:
        """The TALQ CMS API routes under the listener's path."""
        base = self.receiver.path.rstrip("/")
        return [
            web.post(f"{base}/devices", self._devices), web.put(f"{base}/devices", self._devices),
            web.patch(f"{base}/devices", self._devices),
            web.get(f"{base}/devices", self._list_devices),
            web.get(base + "/devices/{address}", self._get_device),
            web.delete(base + "/devices/{address}", self._delete_device),
            web.get(f"{base}/groups", self._list_groups),
            web.post(f"{base}/log-reports", self._log_report),
            web.post(f"{base}/services", self._services),
            web.get(f"{base}/data-packages", self._data_packages),
            web.get(base + "/data-packages/{address}", self._not_found),
            web.route("*", base + "/{kind:device-classes|[a-z0-9-]+-types}", self._types),
            web.route("*", base + "/{kind:device-classes|[a-z0-9-]+-types}/{address}", self._type),
        ]

    def _refusal(self, request: web.Request, body: bytes) -> web.Response | None:
        """401 without the configured credential; 400 without TALQ's mandatory header and parameters."""
        self.stats["requests"] += 1
        if self._authenticate is not None:
            reason = self._authenticate(request, body)
            if reason is not None:
                self.stats["refused"] += 1
                response = talq_errors(401, "unauthorized", reason)
                response.headers["WWW-Authenticate"] = 'Bearer realm="talq"'
                return response
        if "talq-api-version" not in request.headers:
            return talq_errors(400, "headerMissing", "talq-api-version header is missing", "/headers/talq-api-version")
        if not request.query.get("clientAddress"):
            return talq_errors(400, "parameterMissing", "clientAddress is missing", "/query/clientAddress")
        if request.method in _WRITES and not request.query.get("talqRequestId"):
            return talq_errors(400, "parameterMissing", "talqRequestId is missing", "/query/talqRequestId")
        return None

    async def _read(self, request: web.Request) -> tuple[bytes, web.Response | None]:
        try:
            body = await self.receiver.read_body(request)
        except BodyTooLarge as exc:
            return b"", talq_errors(413, "payloadError", str(exc))
        return body, self._refusal(request, body)

    def _context(self, addresses: list[str], request: web.Request) -> str:
        return self._context_of(addresses, request.query.get("clientAddress", ""))

    def _context_of(self, addresses: list[str], gateway: str) -> str:
        devices = {a: self.devices[a]["context"] for a in addresses if a in self.devices}
        links = {a: {"group": self.group_of[a]} for a in addresses if a in self.group_of}
        return json.dumps({"devices": devices, "links_by_device": links, "default_location": self.default_location,
                           "gateway": gateway}, separators=(",", ":"))

    async def _accept(self, request: web.Request, resource: str, body: bytes, parsed: Any,
                      addresses: list[str], problem: TranslationError | None) -> web.Response | None:
        """Emit the request as a RawMessage (a bad one too: the runtime keeps it as a dead letter)."""
        # the context goes with a bad payload too, so that its dead letter names the same problem
        metadata = {RESOURCE_KEY: resource, "talq_method": request.method,
                    CONTEXT_KEY: self._context(addresses, request)}
        request_id = request.query.get("talqRequestId", "")
        key = hashlib.blake2b(f"{resource}\0{request_id}\0".encode() + body, digest_size=16).hexdigest()
        raw = RawMessage(source=self.source, tenant=self.tenant, received_at=epoch_time(time.time()),
                         payload=body, idempotency_key=key, metadata=metadata)
        if problem is None:
            self.parsed.keep(body, parsed)  # the pipeline's translation does not parse the same bytes again
        try:
            if self._emit is None:
                raise RuntimeError("not running")
            await self._emit(raw)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.error("%s: %s not accepted: %s: %s", self.source, resource, type(exc).__name__, exc)
            return talq_errors(503, "serviceUnavailable", "not accepted, retry later")
        if problem is not None:
            return talq_errors(400, "payloadError", problem.reason, problem.pointer, resource)
        return None

    def _problem(self, parsed: Any, resource: str, addresses: list[str]) -> TranslationError | None:
        """The problem a translation finds in a parsed body (checked before the answer, not after)."""
        context = {"devices": {a: self.devices[a]["context"] for a in addresses if a in self.devices},
                   "default_location": self.default_location}
        try:
            translate(resource, parsed, json.dumps(context))
        except TranslationError as exc:
            return exc
        return None

    async def _devices(self, request: web.Request) -> web.Response:
        body, refused = await self._read(request)
        if refused is not None:
            return refused
        try:
            parsed: Any = load_json(body)
        except TranslationError as exc:
            return await self._accept(request, "devices", body, None, [], exc) or web.Response(status=400)
        items = parsed if isinstance(parsed, list) else [parsed]
        fresh = {d["address"]: d for d in items if isinstance(d, Mapping) and isinstance(d.get("address"), str)}
        previous = {a: self.devices.get(a) for a in fresh}
        for address, device in fresh.items():
            context = device_context(device)
            old = previous[address]
            if context["location"] is None and old is not None:
                context["location"] = old["context"].get("location")
            context["status"] = (old or {}).get("context", {}).get("status", "ok")
            self.devices[address] = {"device": device, "context": context}
        problem = self._problem(parsed, "devices", list(fresh))
        if problem is not None:  # not registered after all
            for address, old in previous.items():
                if old is None:
                    self.devices.pop(address, None)
                else:
                    self.devices[address] = old
        if problem is None:
            self._save()
        failed = await self._accept(request, "devices", body, parsed, list(fresh), problem)
        if failed is not None:
            return failed
        self._after_registration()
        if request.method == "PATCH":
            return web.Response(status=200)
        return web.json_response(items, status=201 if request.method == "POST" else 200)

    async def _list_devices(self, request: web.Request) -> web.Response:
        refused = self._refusal(request, b"")
        return refused or web.json_response([d["device"] for d in self.devices.values()])

    async def _get_device(self, request: web.Request) -> web.Response:
        refused = self._refusal(request, b"")
        if refused is not None:
            return refused
        found = self.devices.get(request.match_info["address"])
        return web.json_response(found["device"]) if found else talq_errors(404, "resourceNotFound")

    async def _delete_device(self, request: web.Request) -> web.Response:
        refused = self._refusal(request, b"")
        if refused is not None:
            return refused
        found = self.devices.pop(request.match_info["address"], None)
        self._save()
        return web.json_response(found["device"]) if found else talq_errors(404, "resourceNotFound")

    async def sync_groups(self) -> int:
        """Read the gateway's groups (``GET /groups`` of the gateway API) and emit them; how many there were.

        In TALQ the CMS owns groups and the gateway does not post them: the CMS reads them (or
        writes them) through the gateway API. A group lists its member devices, which learn
        their ``refStreetlightGroup`` from it.
        """
        if self.gateway is None:
            return 0
        groups = await self.gateway.list_groups()
        body = json.dumps(groups, separators=(",", ":"), ensure_ascii=False).encode()
        members = [m["address"] for g in groups if isinstance(g, Mapping) and isinstance(g.get("members"), list)
                   for m in g["members"] if isinstance(m, Mapping) and isinstance(m.get("address"), str)]
        problem = self._problem(groups, "groups", members)
        if problem is None:
            for group in groups:
                self.groups[group["address"]] = group
                for member in group["members"]:
                    self.group_of[member["address"]] = group["address"]
            self._save()
        metadata = {RESOURCE_KEY: "groups", "talq_method": "GET"}
        if problem is None:
            metadata[CONTEXT_KEY] = self._context_of(members, "")
        raw = RawMessage(source=self.source, tenant=self.tenant, received_at=epoch_time(time.time()), payload=body,
                         idempotency_key=hashlib.blake2b(b"groups\0" + body, digest_size=16).hexdigest(),
                         metadata=metadata)
        await self.emit(raw)
        return len(groups)

    def _after_registration(self) -> None:
        """Read the gateway's groups once devices are known (in the background, at most one at a time)."""
        if self.gateway is None or (self._sync is not None and not self._sync.done()):
            return

        async def sync() -> None:
            try:
                await self.sync_groups()
            except GatewayError as exc:
                self.log.warning("%s: groups not read from the gateway: %s", self.source, exc)
            except Exception as exc:  # a background task must not die silently
                self.log.error("%s: groups not read: %s: %s", self.source, type(exc).__name__, exc)

        self._sync = asyncio.create_task(sync(), name=f"{self.source}-groups")

    @property
    def emit(self) -> Emit:
        """The runtime's emit (set by :meth:`run`)."""
        if self._emit is None:
            raise RuntimeError("the adapter is not running")
        return self._emit

    async def _list_groups(self, request: web.Request) -> web.Response:
        refused = self._refusal(request, b"")
        return refused or web.json_response(list(self.groups.values()))

    async def _log_report(self, request: web.Request) -> web.Response:
        body, refused = await self._read(request)
        if refused is not None:
            return refused
        try:
            parsed: Any = load_json(body)
        except TranslationError as exc:
            return await self._accept(request, "log-reports", body, None, [], exc) or web.Response(status=400)
        addresses: set[str] = set()
        failures: dict[str, bool] = {}
        entries = parsed.get("entries") if isinstance(parsed, Mapping) else None
        for entry in entries if isinstance(entries, list) else []:
            data = entry.get("data") if isinstance(entry, Mapping) else None
            if not isinstance(data, Mapping):
                continue
            src = data.get("srcAddress")
            if isinstance(src, str):
                device = src.removeprefix("talq://").strip("/").split("/")
                address = device[-2] if len(device) >= 2 else device[-1]
                addresses.add(address)
                value = data.get("attributeValue")
                if data.get("attributeName") == "lampFailure" and isinstance(value, Mapping) \
                        and isinstance(value.get("value"), bool):
                    failures[address] = value["value"]
                elif data.get("eventType") == "lampFailure" and isinstance(data.get("startEndFlag", True), bool):
                    failures[address] = bool(data.get("startEndFlag", True))
        problem = self._problem(parsed, "log-reports", sorted(addresses))
        if problem is None:
            changed = False
            for address, failed_lamp in failures.items():
                if address in self.devices:  # the Streetlight's status until the next lampFailure value
                    status = "defectiveLamp" if failed_lamp else "ok"
                    changed |= self.devices[address]["context"].get("status") != status
                    self.devices[address]["context"]["status"] = status
            if changed:
                self._save()
            self.stats["log_values"] += len(entries) if isinstance(entries, list) else 0
        failed = await self._accept(request, "log-reports", body, parsed, sorted(addresses), problem)
        return failed or web.Response(status=201)

    async def _services(self, request: web.Request) -> web.Response:
        body, refused = await self._read(request)
        if refused is not None:
            return refused
        try:
            parsed = load_json(body)
        except TranslationError as exc:
            return talq_errors(400, "payloadError", exc.reason, exc.pointer, "services")
        if not isinstance(parsed, list):
            return talq_errors(400, "payloadError", "an array of Service objects is expected", "/", "services")
        self.services = parsed
        return web.Response(status=201)

    async def _data_packages(self, request: web.Request) -> web.Response:
        refused = self._refusal(request, b"")
        return refused or web.json_response([])

    async def _not_found(self, request: web.Request) -> web.Response:
        refused = self._refusal(request, b"")
        return refused or talq_errors(404, "resourceNotFound")

    async def _types(self, request: web.Request) -> web.Response:
        """GET, POST, PUT of a type collection (``/lamp-types``...), kept as sent."""
        kind = request.match_info["kind"]
        body, refused = await self._read(request)
        if refused is not None:
            return refused
        kept = self.types.setdefault(kind, {})
        if request.method == "GET":
            return web.json_response(list(kept.values()))
        if request.method not in ("POST", "PUT"):
            return talq_errors(405, "methodNotAllowed")
        try:
            parsed = load_json(body)
        except TranslationError as exc:
            return talq_errors(400, "payloadError", exc.reason, exc.pointer, kind)
        if not isinstance(parsed, list):
            return talq_errors(400, "payloadError", "an array is expected", "/", kind)
        for i, item in enumerate(parsed):
            key = item.get("address", item.get("name")) if isinstance(item, Mapping) else None
            if not isinstance(key, str):
                return talq_errors(400, "payloadError", "an object with an address (or name) is expected",
                                   f"/{i}", kind)
        for item in parsed:
            kept[item.get("address", item.get("name"))] = item
        return web.json_response(parsed, status=201 if request.method == "POST" else 200)

    async def _type(self, request: web.Request) -> web.Response:
        """GET, PUT, DELETE of one type (``/lamp-types/{address}``), and the ``count`` of a collection."""
        kind, address = request.match_info["kind"], request.match_info["address"]
        body, refused = await self._read(request)
        if refused is not None:
            return refused
        kept = self.types.setdefault(kind, {})
        if request.method == "GET" and address == "count":
            return web.json_response(len(kept))
        if request.method == "GET":
            return web.json_response(kept[address]) if address in kept else talq_errors(404, "resourceNotFound")
        if request.method == "DELETE":
            return web.json_response(kept.pop(address)) if address in kept else talq_errors(404, "resourceNotFound")
        if request.method == "PUT":
            try:
                parsed = load_json(body)
            except TranslationError as exc:
                return talq_errors(400, "payloadError", exc.reason, exc.pointer, kind)
            if not isinstance(parsed, Mapping):
                return talq_errors(400, "payloadError", "an object is expected", "/", kind)
            kept[address] = dict(parsed)
            return web.json_response(parsed)
        return talq_errors(405, "methodNotAllowed")


def command_level(attribute: str, value: Any) -> int:
    """The TALQ dim level (0..100 %) a command on ``attribute`` asks for; ValueError when it cannot."""
    if attribute == "powerState":
        if value not in ("on", "off"):
            raise ValueError("powerState is 'on' or 'off'")
        return 100 if value == "on" else 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{attribute} needs a number")
    if attribute == "dimmingLevel" and 0 <= value <= 100:
        return round(value)
    if attribute == "illuminanceLevel" and 0 <= value <= 1:
        return round(value * 100)
    raise ValueError(f"{attribute} out of range (dimmingLevel 0..100 %, illuminanceLevel 0..1)"
                     if attribute in ("dimmingLevel", "illuminanceLevel") else f"{attribute} cannot be commanded")
