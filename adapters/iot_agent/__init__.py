"""Generic devices the FIWARE IoT Agent way: JSON and UltraLight 2.0 over HTTP and MQTT, IoT Agent provisioning.

Three listeners, one adapter: the southbound HTTP port (``/iot/json``, ``/iot/d``, as the IoT
Agents for JSON and UltraLight serve on 7896), an optional MQTT subscription (``/<apikey>/<device>/
attrs``...), and the northbound provisioning API (``/iot/services``, ``/iot/devices``, ``/iot/about``
and the command entry points, as the IoT Agents serve on 4041). Each measure is resolved to its
provisioned device when it arrives (``provisioning.py``), and the device's effective definition
travels with the RawMessage, so that :meth:`IotAgentAdapter.to_entities` is pure
(``translate.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

import aiohttp
import aiomqtt
from aiohttp import web

from adapters.iot_agent import ultralight
from adapters.iot_agent.commands import NgsiCommands
from adapters.iot_agent.north import NorthApi
from adapters.iot_agent.provisioning import Device, ProvisioningError, Registry
from adapters.iot_agent.translate import command_entity, definition, measure_entity
from adapters.kit.mqtt import MqttSettings, MqttSubscriber, payload_of, topic_text
from adapters.kit.payload import ParsedBodies, load_json
from adapters.kit.push import BodyTooLarge, PushReceiver
from gateway.contract import Emit, Manifest, load_config_schema
from gateway.crosssite import HostPolicy, refusal
from gateway.errors import TranslationError
from gateway.model import Entity, ModelError, RawMessage, epoch_time, utc_time
from gateway.secrets import read_secret

__all__ = ["IotAgentAdapter"]

JSON: Final = "json"
UL: Final = "ul"
DEFAULT_TOPICS: Final = tuple(
    f"{prefix}+/+/{kind}"
    for prefix in ("/", "/json/", "/ul/", "")
    for kind in ("attrs", "attrs/+", "cmdexe")
)
"""The IoT Agents' topics: ``/<apikey>/<device_id>/attrs[/<object_id>]``, ``.../cmdexe``, prefixed or not."""
_ANY_HOST: Final = HostPolicy.of("0.0.0.0", ["*"])
_EMPTY: Final = b""


def _key(*parts: str | bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return digest.hexdigest()


def iota_error(name: str, message: str, status: int) -> web.Response:
    """An answer in the IoT Agents' error shape: ``{"name", "message"}``."""
    return web.json_response({"name": name, "message": message}, status=status)


class IotAgentAdapter(NgsiCommands):
    """Speaks what the FIWARE IoT Agents for JSON and UltraLight speak, south and north."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.http = http
        self.log = log or logging.getLogger("jonction.adapters.iot_agent")
        self.source = str(config.get("name", "iot_agent"))
        self.tenant = str(config.get("tenant", ""))
        self.autoprovision = bool(config.get("autoprovision", True))
        south = config.get("http") or {}
        self.resources: dict[str, str] = {
            str(south.get("json_resource", "/iot/json")): JSON,
            str(south.get("ul_resource", "/iot/d")): UL,
        }
        self.south = PushReceiver({"listen": {"host": south.get("host", "127.0.0.1"),
                                              "port": south.get("port", 7896), "path": "/iot"},
                                   "max_body_bytes": south.get("max_body_bytes", 262144)},
                                  default_port=7896, default_path="/iot", log=self.log, name=self.source)
        state_dir = config.get("state_dir")
        self.registry = Registry(Path(state_dir) / "iot_agent.sqlite" if state_dir else None)
        self.registry.load_configured(config.get("services") or [], config.get("devices") or [])
        self.north = NorthApi(self, config.get("north") or {})
        self.mqtt: MqttSubscriber | None = None
        self._mqtt_settings: MqttSettings | None = None
        if isinstance(config.get("mqtt"), Mapping):
            self._mqtt_settings = MqttSettings.from_config(config["mqtt"], client_id=f"jonction-{self.source}",
                                                           default_topics=DEFAULT_TOPICS)
            self.mqtt = MqttSubscriber(self._mqtt_settings, log=self.log, name=self.source)
        self._emit: Emit | None = None
        self.ready = asyncio.Event()
        """Set while the listeners are bound."""
        self.stats: dict[str, int] = {"measures": 0, "refused": 0, "malformed": 0, "commands": 0}
        self.parsed = ParsedBodies()

    # ------------------------------------------------------------------ lifecycle

    async def check(self) -> None:
        """Refuse a provisioning API open beyond loopback without a token; probe the MQTT broker."""
        self.north.check_exposure()
        if self.mqtt is not None:
            await self.mqtt.check()

    async def run(self, emit: Emit) -> None:
        """Serve the three listeners until :meth:`stop`."""
        self.north.check_exposure()
        self._emit = emit
        self.registry.open()
        tasks: list[asyncio.Future[None]] = []
        try:
            tasks.append(await self.north.receiver.start(self.north.routes()))
            tasks.append(await self.south.start(self._south_routes()))
            if self.mqtt is not None:
                tasks.append(asyncio.ensure_future(self.mqtt.run(self._on_mqtt)))
            self.ready.set()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop()

    async def stop(self) -> None:
        """Stop every listener and close the provisioning database; idempotent."""
        self.ready.clear()
        await self.north.receiver.stop()
        await self.south.stop()
        if self.mqtt is not None:
            await self.mqtt.stop()
        self.registry.close()

    @property
    def emit(self) -> Emit:
        """The runtime's emit (set by :meth:`run`)."""
        if self._emit is None:
            raise RuntimeError("the adapter is not running")
        return self._emit

    # ------------------------------------------------------------------ messages

    def message(self, *, tenant: str, payload: bytes, kind: str, fmt: str, definition_json: str | None,
                device_key: str, extra: Mapping[str, str] | None = None, time_param: str | None = None,
                error: str | None = None) -> RawMessage:
        """A RawMessage carrying the device's effective definition (so the translation stays pure)."""
        received_at = epoch_time(time.time())
        metadata: dict[str, str] = {"kind": kind, "format": fmt}
        if definition_json is not None:
            metadata["device"] = definition_json
        if time_param:
            metadata["t"] = time_param
        if error:
            metadata["error"] = error
        if extra:
            metadata.update(extra)
        # No message id in the IoT Agents' protocols: a retry carrying its time (t=, TimeInstant)
        # is recognised; without one, each arrival is a distinct measure.
        key = _key(device_key, kind, payload, time_param or "", received_at if not time_param else "",
                   *(extra or {}).values())
        return RawMessage(source=self.source, tenant=tenant or self.tenant, received_at=received_at,
                          payload=payload, idempotency_key=key,
                          content_type="application/json" if fmt == JSON else "text/plain", metadata=metadata)

    def _definition(self, apikey: str, device_id: str, resource: str | None) -> tuple[str, str, str]:
        return self.registry.definition(apikey, device_id, resource, self.autoprovision)

    async def accept_measure(self, *, apikey: str, device_id: str, resource: str | None, fmt: str,
                             payload: bytes, kind: str = "measure", time_param: str | None = None,
                             object_id: str | None = None) -> str | None:
        """Resolve, emit and return None; or the parse problem (the message was still kept as a dead letter).

        ProvisioningError for an unknown apikey or device (nothing emitted).
        """
        service, _, definition_json = self._definition(apikey, device_id, resource)
        problem, doc = _parse(payload, fmt, kind)
        if doc is not None:
            self.parsed.keep(payload, doc)  # the translation takes it instead of parsing again
        extra = {"object_id": object_id} if object_id is not None else None
        await self.emit(self.message(tenant=service, payload=payload, kind=kind, fmt=fmt,
                                     definition_json=definition_json, device_key=f"{apikey}\0{device_id}",
                                     extra=extra, time_param=time_param))
        if kind == "cmdexe" and problem is None:
            self.note_command_result(service, device_id, fmt, payload)
        if problem is not None:
            self.stats["malformed"] += 1
        else:
            self.stats["measures"] += 1
        return problem

    # ------------------------------------------------------------------ southbound HTTP

    def _south_routes(self) -> list[web.RouteDef]:
        routes: list[web.RouteDef] = []
        for resource, fmt in self.resources.items():
            routes += [
                web.post(resource, self._south_handler(resource, fmt, "measure")),
                web.get(resource, self._south_handler(resource, fmt, "measure")),
                web.post(resource + "/commands", self._south_handler(resource, fmt, "cmdexe")),
                web.post(resource + "/attrs/{attr}", self._south_handler(resource, fmt, "attr")),
            ]
        return routes

    def _south_handler(self, resource: str, fmt: str, kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            refused = refusal(_ANY_HOST, host=request.headers.get("Host"), origin=request.headers.get("Origin"),
                              scheme=request.scheme, fetch_site=request.headers.get("Sec-Fetch-Site"))
            if refused is not None:
                return iota_error("FORBIDDEN", refused, 403)
            try:
                body = await self.south.read_body(request)
            except BodyTooLarge as exc:
                return iota_error("PAYLOAD_TOO_LARGE", f"request entity too large: {exc}", 413)
            query = request.query
            apikey, device_id = query.get("k", ""), query.get("i", "")
            missing = [name for name, value in (("API Key", apikey), ("Device Id", device_id)) if not value]
            if request.method == "GET" and "d" not in query and query.get("getCmd") != "1":
                missing.append("Payload")
            if missing:
                return iota_error("MANDATORY_PARAMS_NOT_FOUND",
                                  f"Some of the mandatory params weren't found in the request: {json.dumps(missing)}",
                                  400)
            time_param = query.get("t")
            if time_param is not None:
                try:
                    utc_time(time_param)
                except ModelError:
                    return iota_error("BAD_TIMESTAMP", f"Invalid ISO8601 timestamp[{time_param[:64]}]", 400)
            if request.method == "GET" and "d" in query:
                body = query["d"].encode("utf-8", "surrogatepass")  # a lone surrogate is refused when parsed
                if len(body) > self.south.max_body:
                    return iota_error("PAYLOAD_TOO_LARGE", "request entity too large", 413)
            try:
                problem = None
                if body or request.method == "POST":
                    problem = await self.accept_measure(
                        apikey=apikey, device_id=device_id, resource=resource, fmt=fmt, payload=body,
                        kind=kind, time_param=time_param, object_id=request.match_info.get("attr"))
                elif query.get("getCmd") == "1":
                    self._definition(apikey, device_id, resource)  # the device must exist (or be created)
            except ProvisioningError as exc:
                self.stats["refused"] += 1
                return iota_error(exc.name, exc.message, exc.code)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not durably accepted: the device must retry
                self.log.error("%s: measure not accepted: %s: %s", self.source, type(exc).__name__, exc)
                return iota_error("SERVICE_UNAVAILABLE", "measure not accepted, retry later", 503)
            if problem is not None:
                name = "PARSE_ERROR" if fmt == UL else "BAD_REQUEST"
                return iota_error(name, problem, 400)
            if query.get("getCmd") == "1":
                return await self._pending_for_polling(apikey, device_id, fmt)
            return web.Response(status=200, text="")

        return handle

    async def _pending_for_polling(self, apikey: str, device_id: str, fmt: str) -> web.Response:
        """The commands queued for a polling device (then marked delivered)."""
        device = self._device(apikey, device_id)
        commands = self.registry.pending_commands(device) if device is not None else []
        if not commands or device is None:
            return web.Response(status=200, text="" if fmt == UL else "{}",
                                content_type="text/plain" if fmt == UL else "application/json")
        self.registry.set_command_status([c.id for c in commands], "DELIVERED")
        await self.command_status(device, {c.name: None for c in commands}, "DELIVERED")
        if fmt == UL:
            text = "#".join(ultralight.format_command(device_id, c.name, c.value) for c in commands)
            return web.Response(status=200, text=text, content_type="text/plain")
        return web.json_response({c.name: c.value for c in commands})

    def _device(self, apikey: str, device_id: str) -> Device | None:
        return self.registry.device_by_key(apikey, device_id)

    # ------------------------------------------------------------------ southbound MQTT

    async def _on_mqtt(self, message: aiomqtt.Message) -> None:
        topic = topic_text(message)
        body = payload_of(message)
        levels = topic.split("/")
        if levels and levels[0] == "":
            levels = levels[1:]
        fmt: str | None = None
        if levels and levels[0] in (JSON, UL) and len(levels) >= 4:
            fmt, levels = levels[0], levels[1:]
        if len(levels) not in (3, 4) or levels[2] not in ("attrs", "cmdexe") or (
                len(levels) == 4 and levels[2] != "attrs"):
            self.log.warning("%s: ignoring a message on topic %r (not an IoT Agent topic)", self.source, topic[:200])
            return
        apikey, device_id, kind_name = levels[0], levels[1], levels[2]
        object_id = levels[3] if len(levels) == 4 else None
        kind = "cmdexe" if kind_name == "cmdexe" else ("attr" if object_id is not None else "measure")
        if fmt is None:
            fmt = _guess_format(body)
        if len(body) > (self._mqtt_settings.max_message_bytes if self._mqtt_settings else 262144):
            body, error = _EMPTY, f"message over {len(body)} bytes"
            await self.emit(self.message(tenant="", payload=body, kind=kind, fmt=fmt, definition_json=None,
                                         device_key=f"{apikey}\0{device_id}", error=error))
            return
        try:
            await self.accept_measure(apikey=apikey, device_id=device_id, resource=None, fmt=fmt, payload=body,
                                      kind=kind, object_id=object_id)
        except ProvisioningError as exc:
            if exc.code >= 500:
                raise  # not accepted: unacknowledged, the broker delivers it again
            # No one to answer on MQTT: keep it as a dead letter that says why.
            self.stats["refused"] += 1
            await self.emit(self.message(tenant=self.tenant, payload=body, kind=kind, fmt=fmt, definition_json=None,
                                         device_key=f"{apikey}\0{device_id}",
                                         error=f"{exc.name}: {exc.message}",
                                         extra={"topic": topic[:512]}))

    # ------------------------------------------------------------------ commands

    async def command_status(self, device: Device, commands: Mapping[str, Any], status: str) -> None:
        """Emit ``<cmd>_status`` (and ``<cmd>_info`` when given) for a device's entity."""
        body = json.dumps(commands, separators=(",", ":")).encode()
        await self.emit(self.message(tenant=device.service, payload=body, kind="cmdstatus", fmt=JSON,
                                     definition_json=self.registry.definition_of(device),
                                     device_key=f"{device.service}\0{device.subservice}\0{device.device_id}",
                                     extra={"status": status, "at": str(time.monotonic_ns())}))

    async def send_device_command(self, device: Device, name: str, value: Any) -> str:
        """Send one command the way the device takes it (MQTT, HTTP endpoint, or queued for polling).

        Returns the command status: PENDING (published, or queued for polling), OK (an HTTP endpoint
        answered), ERROR.
        """
        self.stats["commands"] += 1
        doc = device.doc
        apikey = self.registry.apikey_of(device) or ""
        fmt = UL if "ul" in str(doc.get("protocol", "")).lower() else JSON
        transport = str(doc.get("transport", "MQTT" if self.mqtt is not None else "HTTP")).upper()
        if transport == "MQTT":
            if self._mqtt_settings is None:
                await self.command_status(device, {name: "no MQTT broker configured"}, "ERROR")
                return "ERROR"
            payload = (ultralight.format_command(device.device_id, name, value) if fmt == UL
                       else json.dumps({name: value}))
            prefix = f"/{fmt}" if doc.get("mqtt_prefix") else ""
            topic = f"{prefix}/{apikey}/{device.device_id}/cmd"
            await self.command_status(device, {name: None}, "PENDING")
            try:
                await publish(self._mqtt_settings, topic, payload.encode(), client_id=f"jonction-{self.source}-cmd")
            except aiomqtt.MqttError as exc:
                self.log.warning("%s: command %s for %s not published: %s", self.source, name, device.device_id, exc)
                await self.command_status(device, {name: f"not published: {exc}"}, "ERROR")
                return "ERROR"
            return "PENDING"
        endpoint = doc.get("endpoint")
        if endpoint and self.http is not None:
            return await self._http_command(device, str(endpoint), name, value, fmt)
        self.registry.queue_command(device, name, value, "PENDING")
        await self.command_status(device, {name: None}, "PENDING")
        return "PENDING"

    async def _http_command(self, device: Device, endpoint: str, name: str, value: Any, fmt: str) -> str:
        assert self.http is not None
        payload = (ultralight.format_command(device.device_id, name, value) if fmt == UL
                   else json.dumps({name: value}))
        await self.command_status(device, {name: None}, "PENDING")
        headers = {"fiware-service": device.service, "fiware-servicepath": device.subservice,
                   "Content-Type": "text/plain" if fmt == UL else "application/json"}
        try:
            async with self.http.post(endpoint, data=payload.encode(), headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=10)) as response:
                answer = (await response.content.read(65536)).decode("utf-8", "replace")
                ok = response.status in (200, 201)
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self.command_status(device, {name: f"device endpoint unreachable: {exc}"}, "ERROR")
            return "ERROR"
        if not ok:
            await self.command_status(device, {name: f"device endpoint answered {response.status}"}, "ERROR")
            return "ERROR"
        info: Any = answer
        if fmt == UL and "@" in answer:
            info = ultralight.parse_command_result(answer).result
        else:
            try:
                parsed = json.loads(answer)
                info = parsed.get(name, parsed) if isinstance(parsed, dict) else parsed
            except ValueError:
                pass
        await self.command_status(device, {name: info}, "OK")
        return "OK"

    # ------------------------------------------------------------------ pure translation

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Translate one measure, single attribute, command result or command status (pure)."""
        meta = raw.metadata
        error = meta.get("error")
        if error:
            raise TranslationError(error)
        device_json = meta.get("device")
        if not device_json:
            raise TranslationError("no device definition recorded with the message")
        d = definition(device_json)
        kind = meta.get("kind", "measure")
        fmt = meta.get("format", JSON)
        time_param = meta.get("t")
        try:
            observed = utc_time(time_param) if time_param else utc_time(raw.received_at)
        except ModelError as exc:
            raise TranslationError(f"invalid ISO8601 timestamp in t: {exc}", "/t") from exc
        text = fmt == UL
        if kind == "cmdstatus":
            doc = load_json(raw.payload)
            if not isinstance(doc, dict):
                raise TranslationError("a command status must be a JSON object")
            return [command_entity(d, doc, status=meta.get("status", "PENDING"), observed_at=observed,
                                   pointer="")]
        if kind == "cmdexe":
            if text:
                result = ultralight.parse_command_result(_text(raw.payload))
                results: Mapping[str, Any] = {result.command: result.result}
            else:
                doc = self.parsed.load(raw.payload)
                if not isinstance(doc, dict):
                    raise TranslationError("a command result must be a JSON object {command: result}")
                results = doc
            return [command_entity(d, results, status="OK", observed_at=observed, pointer="")]
        if kind == "attr":
            object_id = meta.get("object_id", "")
            if not object_id:
                raise TranslationError("no attribute named for a single-attribute message")
            value: Any = _text(raw.payload)
            if not text:
                try:
                    value = load_json(raw.payload)
                except TranslationError:
                    pass  # the IoT Agent for JSON takes a bare text value as it is
            return [measure_entity(d, {object_id: value}, observed_at=observed, pointer="", from_text=text)]
        if text:
            return [measure_entity(d, group.values, observed_at=_group_time(group.time, observed, i),
                                   pointer=f"/{i}", from_text=True)
                    for i, group in enumerate(ultralight.parse_measures(_text(raw.payload)))]
        doc = self.parsed.load(raw.payload)
        if isinstance(doc, dict):
            return [measure_entity(d, doc, observed_at=observed, pointer="", from_text=False)]
        if isinstance(doc, list) and doc and all(isinstance(item, dict) for item in doc):
            return [measure_entity(d, item, observed_at=observed, pointer=f"/{i}", from_text=False)
                    for i, item in enumerate(doc)]
        raise TranslationError("a JSON measure must be an object of measures (or an array of them)")


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TranslationError(f"payload is not UTF-8 text (byte {exc.start})") from None


def _group_time(value: str | None, default: str, index: int) -> str:
    if value is None:
        return default
    try:
        return utc_time(value)
    except ModelError as exc:
        raise TranslationError(f"invalid ISO8601 timestamp: {exc}", f"/{index}") from exc


def _guess_format(body: bytes) -> str:
    """The format of an unprefixed MQTT payload: JSON when it parses as a JSON object, else UltraLight."""
    stripped = body.lstrip()
    if stripped[:1] in (b"{", b"["):
        return JSON
    return UL


def _parse(payload: bytes, fmt: str, kind: str) -> tuple[str | None, Any]:
    """(why the payload does not parse — to answer 400 after keeping it —, the parsed JSON document)."""
    doc: Any = None
    try:
        if kind == "attr":
            _text(payload)
        elif fmt == UL:
            text = _text(payload)
            if kind == "cmdexe":
                ultralight.parse_command_result(text)
            else:
                ultralight.parse_measures(text)
        else:
            doc = load_json(payload)
            if not isinstance(doc, dict | list):
                return "a JSON measure must be an object of measures (or an array of them)", None
    except TranslationError as exc:
        return f"There was a syntax error in the request: {exc}", None
    return None, doc


async def publish(settings: MqttSettings, topic: str, payload: bytes, *, client_id: str) -> None:
    """Publish one message at QoS 1 on a short-lived connection (commands are rare)."""
    password = read_secret({"password": settings.password, "password_file": settings.password_file,
                            "password_env": settings.password_env}, "password", where="mqtt.")
    async with aiomqtt.Client(settings.host, settings.port, username=settings.username, password=password,
                              identifier=f"{client_id}-{time.monotonic_ns()}",
                              tls_context=settings.ssl_context(), timeout=10) as client:
        await client.publish(topic, payload, qos=1)

