"""The northbound provisioning API of the IoT Agents, on its own port (the IoT Agents' 4041).

``/iot/services`` (service groups) and ``/iot/devices`` with GET, POST, PUT and DELETE scoped by
the ``fiware-service`` and ``fiware-servicepath`` headers; ``/iot/about``; and the two ways a
command reaches an IoT Agent: the NGSI v2 forward of a context broker (``POST /v2/op/update``)
and an NGSI-LD attribute update (``PATCH /ngsi-ld/v1/entities/{id}/attrs``, tenant in
``NGSILD-Tenant``). Answers and errors are the IoT Agents' (``{"name", "message"}``).

Security, as the gateway's admin API: beyond loopback a token is required (``Authorization:
Bearer <token>``, or ``X-Auth-Token: <token>`` as scripts written for a Keystone-secured IoT
Agent send it); with or without one, requests a web page could forge are refused (``Host`` not
naming this server, a foreign ``Origin``, ``Sec-Fetch-Site: cross-site``, a write whose body is
not JSON).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from adapters.iot_agent.provisioning import DEFAULT_SUBSERVICE, Device, ProvisioningError
from adapters.iot_agent.translate import definition
from adapters.kit.payload import load_json
from adapters.kit.push import LOOPBACK, BodyTooLarge, PushReceiver
from gateway import __version__
from gateway.crosssite import HostPolicy, json_content_type, refusal, simple_content_type
from gateway.errors import ConfigInvalid, TranslationError
from gateway.secrets import read_secret

if TYPE_CHECKING:
    from adapters.iot_agent import IotAgentAdapter

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SERVICE: Final = re.compile(r"^[a-z0-9_]{0,50}$")
_SUBSERVICE: Final = re.compile(r"^(/[A-Za-z0-9_]*)+$|^/\*$")
_WRITES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_LIMIT: Final = 1000


def _error(exc: ProvisioningError) -> web.Response:
    return web.json_response(exc.to_json(), status=exc.code)


def _missing_headers(message: str) -> ProvisioningError:
    return ProvisioningError("MISSING_HEADERS", f"Some headers were missing from the request: {message}", 400)


class NorthApi:
    """The provisioning and command API of one ``iot_agent`` source."""

    def __init__(self, adapter: IotAgentAdapter, config: Mapping[str, Any]) -> None:
        self.adapter = adapter
        self.config = config
        self.receiver = PushReceiver({"listen": {"host": config.get("host", "127.0.0.1"),
                                                 "port": config.get("port", 4041), "path": "/iot"},
                                      "max_body_bytes": config.get("max_body_bytes", 1 << 20)},
                                     default_port=4041, default_path="/iot", log=adapter.log,
                                     name=f"{adapter.source} (provisioning)")
        self.policy = HostPolicy.of(self.receiver.host, config.get("allowed_hosts") or ())

    def _token(self) -> str | None:
        return read_secret(self.config, "token", where=f"{self.adapter.source}: north.")

    def check_exposure(self) -> None:
        """Refuse to serve the provisioning API beyond loopback without a token."""
        if self.receiver.host not in LOOPBACK and not self._token():
            raise ConfigInvalid(f"{self.adapter.source}: the provisioning API needs a token when listening on "
                                f"{self.receiver.host}", ["/north/token: required when /north/host is not loopback"])

    # ------------------------------------------------------------------ plumbing

    def _guard(self, handler: _Handler) -> _Handler:
        token = self._token()
        accepted = [f"Bearer {token}".encode(), token.encode()] if token else []

        async def guarded(request: web.Request) -> web.StreamResponse:
            reason = refusal(self.policy, host=request.headers.get("Host"), origin=request.headers.get("Origin"),
                             scheme=request.scheme, fetch_site=request.headers.get("Sec-Fetch-Site"))
            if reason is None and request.method in _WRITES:
                ctype = request.headers.get("Content-Type")
                has_body = (request.content_length or 0) > 0 or "chunked" in request.headers.get(
                    "Transfer-Encoding", "").lower()
                if simple_content_type(ctype) or (has_body and not json_content_type(ctype)):
                    reason = "requests with a body must be JSON (Content-Type: application/json)"
            if reason is not None:
                return web.json_response({"name": "FORBIDDEN", "message": reason}, status=403)
            if accepted:
                given = request.headers.get("Authorization")
                if given is not None:
                    ok = hmac.compare_digest(given.encode(), accepted[0])
                else:
                    ok = hmac.compare_digest(request.headers.get("X-Auth-Token", "").encode(), accepted[1])
                if not ok:
                    response = web.json_response({"name": "UNAUTHORIZED",
                                                  "message": "a valid bearer token is required"}, status=401)
                    response.headers["WWW-Authenticate"] = 'Bearer realm="jonction"'
                    return response
            try:
                answer = await handler(request)
                if request.method in _WRITES and answer.status < 300:
                    self.adapter.log.info("%s: %s %s (service %r)", self.adapter.source, request.method,
                                          request.path, request.headers.get("fiware-service", ""))
                return answer
            except ProvisioningError as exc:
                return _error(exc)
            except BodyTooLarge as exc:
                return web.json_response({"name": "PAYLOAD_TOO_LARGE", "message": str(exc)}, status=413)

        return guarded

    async def _body(self, request: web.Request) -> Any:
        raw = await self.receiver.read_body(request)
        try:
            # Strict JSON: a NaN or a 400-digit number in a static attribute would reach every entity.
            return load_json(raw, what="body")
        except TranslationError as exc:
            raise ProvisioningError("WRONG_SYNTAX", f"Wrong syntax in request: {exc}", 400) from None

    @staticmethod
    def scope(request: web.Request, *, listing: bool = False) -> tuple[str, str | None]:
        """(service, service path) from the fiware headers (MISSING_HEADERS if absent or malformed)."""
        service = request.headers.get("fiware-service")
        subservice = request.headers.get("fiware-servicepath")
        missing = [name for name, value in (("fiware-service", service), ("fiware-servicepath", subservice))
                   if value is None]
        if missing and not (listing and service is not None):
            raise _missing_headers(", ".join(missing))
        service = (service or "").strip().lower()
        if not _SERVICE.match(service):
            raise ProvisioningError("WRONG_SYNTAX", "Wrong syntax in request: fiware-service must be at most 50 "
                                                    "letters, digits or '_'", 400)
        path = (subservice or "").strip() or None
        if path is not None and not _SUBSERVICE.match(path):
            raise ProvisioningError("WRONG_SYNTAX", "Wrong syntax in request: fiware-servicepath must be a path "
                                                    "such as '/' or '/gardens'", 400)
        return service, path

    @staticmethod
    def _page(request: web.Request, items: list[Any]) -> list[Any]:
        try:
            offset = max(0, int(request.query.get("offset", "0")))
            limit = min(MAX_LIMIT, max(0, int(request.query.get("limit", str(MAX_LIMIT)))))
        except ValueError:
            raise ProvisioningError("BAD_REQUEST", "limit and offset must be integers", 400) from None
        return items[offset:offset + limit]

    def routes(self) -> list[web.RouteDef]:
        """The API's routes, each behind the security checks."""
        g = self._guard
        return [
            web.get("/iot/about", g(self.about)),
            web.get("/iot/services", g(self.list_groups)),
            web.post("/iot/services", g(self.add_groups)),
            web.put("/iot/services", g(self.update_group)),
            web.delete("/iot/services", g(self.delete_group)),
            web.get("/iot/devices", g(self.list_devices)),
            web.post("/iot/devices", g(self.add_devices)),
            web.get("/iot/devices/{device_id}", g(self.get_device)),
            web.put("/iot/devices/{device_id}", g(self.update_device)),
            web.delete("/iot/devices/{device_id}", g(self.delete_device)),
            web.post("/v2/op/update", g(self.v2_update)),
            web.patch("/ngsi-ld/v1/entities/{entity_id}/attrs", g(self.ld_patch)),
            web.patch("/ngsi-ld/v1/entities/{entity_id}/attrs/{attr}", g(self.ld_patch)),
        ]

    # ------------------------------------------------------------------ handlers

    async def about(self, request: web.Request) -> web.Response:  # aiohttp handler signature
        """What the IoT Agents answer on ``/iot/about`` (with jonction's version)."""
        return web.json_response({"libVersion": __version__, "port": str(self.receiver.bound_port or ""),
                                  "baseRoot": "/", "version": __version__, "name": "jonction iot_agent",
                                  "protocols": ["IoTA-JSON", "PDI-IoTA-UltraLight"]})

    async def list_groups(self, request: web.Request) -> web.Response:
        """``GET /iot/services`` (filter with ``resource`` and ``apikey``)."""
        service, subservice = self.scope(request, listing=True)
        groups = [g for g in self.adapter.registry.list_groups(service, subservice)
                  if request.query.get("resource") in (None, g.resource)
                  and request.query.get("apikey") in (None, g.apikey)]
        items = [{**g.doc, "service": g.service, "subservice": g.subservice} for g in groups]
        return web.json_response({"count": len(items), "services": self._page(request, items)})

    async def add_groups(self, request: web.Request) -> web.Response:
        """``POST /iot/services`` with ``{"services": [...]}``."""
        service, subservice = self.scope(request)
        body = await self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("services"), list) or not body["services"]:
            raise ProvisioningError("WRONG_SYNTAX", "Wrong syntax in request: expected {\"services\": [...]}", 400)
        self.adapter.registry.add_groups(service, subservice or DEFAULT_SUBSERVICE, body["services"])
        return web.json_response({}, status=201)

    async def update_group(self, request: web.Request) -> web.Response:
        """``PUT /iot/services?resource=…&apikey=…`` with the fields to change."""
        service, subservice = self.scope(request)
        body = await self._body(request)
        self.adapter.registry.update_group(service, subservice or DEFAULT_SUBSERVICE, request.query.get("resource"),
                                           request.query.get("apikey"), body)
        return web.Response(status=204)

    async def delete_group(self, request: web.Request) -> web.Response:
        """``DELETE /iot/services?resource=…&apikey=…[&device=true]``."""
        service, subservice = self.scope(request)
        if not request.query.get("apikey") and not request.query.get("resource"):
            raise ProvisioningError("MISSING_CONFIG_PARAMS", "The following mandatory configuration parameters "
                                                             "were missing: [\"resource\",\"apikey\"]", 400)
        self.adapter.registry.delete_group(service, subservice or DEFAULT_SUBSERVICE, request.query.get("resource"),
                                           request.query.get("apikey"),
                                           with_devices=request.query.get("device") == "true")
        return web.Response(status=204)

    @staticmethod
    def _device_json(device: Device) -> dict[str, Any]:
        return {**device.doc, "service": device.service, "service_path": device.subservice}

    async def list_devices(self, request: web.Request) -> web.Response:
        """``GET /iot/devices``."""
        service, subservice = self.scope(request, listing=True)
        items = [self._device_json(d) for d in self.adapter.registry.list_devices(service, subservice)]
        return web.json_response({"count": len(items), "devices": self._page(request, items)})

    async def add_devices(self, request: web.Request) -> web.Response:
        """``POST /iot/devices`` with ``{"devices": [...]}``."""
        service, subservice = self.scope(request)
        body = await self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("devices"), list) or not body["devices"]:
            raise ProvisioningError("WRONG_SYNTAX", "Wrong syntax in request: expected {\"devices\": [...]}", 400)
        self.adapter.registry.add_devices(service, subservice or DEFAULT_SUBSERVICE, body["devices"])
        return web.json_response({}, status=201)

    async def get_device(self, request: web.Request) -> web.Response:
        """``GET /iot/devices/{device_id}``."""
        service, subservice = self.scope(request, listing=True)
        device = self.adapter.registry.get_device(service, subservice, request.match_info["device_id"])
        return web.json_response(self._device_json(device))

    async def update_device(self, request: web.Request) -> web.Response:
        """``PUT /iot/devices/{device_id}``."""
        service, subservice = self.scope(request)
        body = await self._body(request)
        self.adapter.registry.update_device(service, subservice, request.match_info["device_id"], body)
        return web.Response(status=204)

    async def delete_device(self, request: web.Request) -> web.Response:
        """``DELETE /iot/devices/{device_id}``."""
        service, subservice = self.scope(request)
        self.adapter.registry.delete_device(service, subservice, request.match_info["device_id"])
        return web.Response(status=204)

    # ------------------------------------------------------------------ commands

    def _device_by_entity(self, service: str, entity_id: str) -> Device:
        device = self.adapter.registry.device_by_entity(service, entity_id)
        if device is None:
            raise ProvisioningError("DEVICE_NOT_FOUND", f"No device was found with entity id:{entity_id}", 404)
        return device

    async def _commands(self, device: Device, requested: Mapping[str, Any]) -> None:
        declared = definition(self.adapter.registry.definition_of(device)).commands
        for name in requested:
            if name not in declared:
                raise ProvisioningError("COMMAND_NOT_FOUND", f"Couldn't update the command because no command with "
                                                             f"the name [{name}] was found.", 400)
        for name, value in requested.items():
            await self.adapter.send_device_command(device, name, value)

    async def v2_update(self, request: web.Request) -> web.Response:
        """``POST /v2/op/update``: the commands a context broker forwards (NGSI v2 registration)."""
        service, _ = self.scope(request)
        body = await self._body(request)
        entities = body.get("entities") if isinstance(body, dict) else None
        if not isinstance(entities, list):
            raise ProvisioningError("WRONG_SYNTAX", "Wrong syntax in request: expected {actionType, entities}", 400)
        for i, item in enumerate(entities):
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise ProvisioningError("WRONG_SYNTAX", f"Wrong syntax in request: /entities/{i} needs an id", 400)
            device = self._device_by_entity(service, item["id"])
            requested = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in item.items()
                         if k not in ("id", "type")}
            await self._commands(device, requested)
        return web.Response(status=204)

    async def ld_patch(self, request: web.Request) -> web.Response:
        """``PATCH /ngsi-ld/v1/entities/{id}/attrs[/{attr}]``: commands as NGSI-LD attribute updates."""
        service = (request.headers.get("NGSILD-Tenant") or request.headers.get("fiware-service") or "").lower()
        if not _SERVICE.match(service):
            raise ProvisioningError("WRONG_SYNTAX", "Wrong syntax in request: bad tenant", 400)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise ProvisioningError("WRONG_SYNTAX", "Wrong syntax in request: expected an object", 400)
        attr = request.match_info.get("attr")
        items: Mapping[str, Any] = {attr: body} if attr else body
        requested = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in items.items()
                     if k not in ("id", "type", "@context")}
        device = self._device_by_entity(service, request.match_info["entity_id"])
        await self._commands(device, requested)
        return web.Response(status=204)
