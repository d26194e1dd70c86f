"""Client of the TALQ 2.7.1 gateway API: what a CMS reads from and writes to a TALQ gateway.

Every request carries TALQ's ``talq-api-version`` header and the ``clientAddress`` (the CMS's
address) query parameter; writes also carry a fresh ``talqRequestId``. Commands are override
commands (``POST /override-commands``: a ``LevelState`` for devices or groups), attribute writes
(``PATCH /devices/{deviceAddress}/{functionId}/{attributeName}``) and assignments
(``POST /assign-commands``, e.g. a calendar to a group), after the calendar and its control programs
are created or updated (``POST``, then ``PUT`` on 409, of ``/calendars`` and ``/control-programs``).
"""

from __future__ import annotations

import json
import logging
import ssl
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import aiohttp

from gateway.secrets import read_secret

__all__ = ["GatewayClient", "GatewayError"]

API_VERSION: Final = "2.7.1"
_RETRYABLE: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


class GatewayError(Exception):
    """A gateway call that failed; ``retry`` says whether the same call may succeed later."""

    def __init__(self, message: str, *, retry: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status


class GatewayClient:
    """Calls one TALQ gateway's API (``url`` is its base, e.g. ``https://gw.example/talq``)."""

    def __init__(self, config: Mapping[str, Any], *, http: aiohttp.ClientSession | None = None,
                 log: logging.Logger | None = None) -> None:
        self.url = str(config["url"]).rstrip("/")
        self.cms_address = str(config.get("cms_address", "00000000-0000-4000-8000-00000000c3a5"))
        self.timeout = float(config.get("timeout", 10))
        self._config = config
        self._token: str | None = None
        self.ca_file = config.get("ca_file")
        self.log = log or logging.getLogger("jonction.adapters.talq")
        self._http = http
        self._own: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is not None and not self._http.closed:
            return self._http
        if self._own is None or self._own.closed:
            context: ssl.SSLContext | bool = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
            self._own = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=8))
        return self._own

    async def close(self) -> None:
        """Close the session this client opened (not one it was given)."""
        if self._own is not None:
            await self._own.close()
            self._own = None

    def _headers(self) -> dict[str, str]:
        headers = {"talq-api-version": API_VERSION}
        if self._token is None:  # read when first needed: no I/O in the constructor
            self._token = read_secret(self._config, "token", where="talq: gateway.") or ""
        if self._token:
            scheme_given = self._token.lower().startswith(("bearer ", "basic "))
            headers["Authorization"] = self._token if scheme_given else f"Bearer {self._token}"
        return headers

    async def request(self, method: str, path: str, body: Any = None, *, write: bool = False) -> tuple[int, Any]:
        """One call; (status, parsed JSON body or None). GatewayError on a transport failure or an error status."""
        params = {"clientAddress": self.cms_address}
        if write:
            params["talqRequestId"] = str(uuid.uuid4())
        try:
            async with self._session().request(
                method, self.url + path, params=params, json=body, headers=self._headers(),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise GatewayError(f"gateway unreachable: {type(exc).__name__}: {exc}", retry=True) from None
        if status >= 400:
            raise GatewayError(f"gateway answered {status} to {method} {path}: {text[:300]}",
                               retry=status in _RETRYABLE, status=status)
        try:
            parsed = json.loads(text) if text.strip() else None
        except ValueError:
            parsed = None
        return status, parsed

    async def _list(self, path: str) -> list[Any]:
        _, body = await self.request("GET", path)
        if not isinstance(body, list):
            raise GatewayError(f"GET {path}: an array was expected", retry=False)
        return body

    async def list_devices(self) -> list[Any]:
        """GET /devices."""
        return await self._list("/devices")

    async def list_groups(self) -> list[Any]:
        """GET /groups."""
        return await self._list("/groups")

    async def list_calendars(self) -> list[Any]:
        """GET /calendars."""
        return await self._list("/calendars")

    async def list_control_programs(self) -> list[Any]:
        """GET /control-programs."""
        return await self._list("/control-programs")

    async def get_attribute(self, device: str, function_id: str, attribute: str) -> Any:
        """GET /devices/{deviceAddress}/{functionId}/{attributeName}."""
        _, body = await self.request("GET", f"/devices/{device}/{function_id}/{attribute}")
        return body

    async def write_attribute(self, device: str, function_id: str, attribute: str, value: Mapping[str, Any]) -> int:
        """PATCH /devices/{deviceAddress}/{functionId}/{attributeName} with a TALQ Attribute; the status."""
        status, _ = await self.request("PATCH", f"/devices/{device}/{function_id}/{attribute}", dict(value),
                                       write=True)
        return status

    async def override(self, resource: str, address: str, level: int, *, ref: str = "") -> int:
        """POST /override-commands: light level ``level`` % on a device or group; the status (201 or 202)."""
        command: dict[str, Any] = {"state": {"name": "LevelState", "value": int(level)}, "reason": "override"}
        if ref:
            command["cmsRefId"] = ref
        body = {"addresses": [{"resource": resource, "address": address}], "targetCommand": command}
        status, _ = await self.request("POST", "/override-commands", body, write=True)
        return status

    async def store(self, collection: str, items: Sequence[Mapping[str, Any]]) -> int:
        """Create ``items`` in ``/calendars`` or ``/control-programs`` (POST), or update them (PUT) if they exist."""
        try:
            status, _ = await self.request("POST", f"/{collection}", [dict(i) for i in items], write=True)
        except GatewayError as exc:
            if exc.status != 409:  # 409: already there (an earlier command or a retry): update instead
                raise
            status, _ = await self.request("PUT", f"/{collection}", [dict(i) for i in items], write=True)
        return status

    async def assign(self, entity: Mapping[str, str], addresses: list[Mapping[str, str]], *, ref: str = "") -> int:
        """POST /assign-commands: assign an entity (e.g. a calendar) to devices or groups; the status."""
        body: dict[str, Any] = {"addresses": [dict(a) for a in addresses], "entity": dict(entity)}
        if ref:
            body["cmsRefId"] = ref
        status, _ = await self.request("POST", "/assign-commands", body, write=True)
        return status
