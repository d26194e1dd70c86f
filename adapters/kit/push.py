"""A small aiohttp receiver for push integrations (network-server HTTP integrations, webhooks).

It listens on ``listen: {host, port, path}``, refuses bodies over ``max_body_bytes`` with 413,
unauthenticated requests with 401 (the adapter supplies the check: a shared header token, or a
vendor signature), and answers 2xx only after the adapter's ``accept`` — which awaits the
runtime's ``emit`` — has returned; a failure there is a 503 so that the sender retries.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from gateway.errors import ConfigInvalid, InputError
from gateway.problems import problem_response
from gateway.secrets import read_secret

Authenticate = Callable[[web.Request, bytes], "str | None"]
"""Returns None when the request is authentic, else the reason it is not (sent with the 401)."""
Accept = Callable[[web.Request, bytes], Awaitable[None]]
"""Turns one request into RawMessages and awaits ``emit``; InputError → 400."""

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

HTTP_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "listen": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "host": {"type": "string", "default": "127.0.0.1"},
                "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                "path": {"type": "string", "pattern": "^/"},
            },
        },
        "token": {"type": "string", "writeOnly": True,
                  "description": "shared token the network server sends in `header` (prefer token_file)"},
        "token_file": {"type": "string"},
        "token_env": {"type": "string"},
        "header": {"type": "string", "default": "Authorization",
                   "description": "request header carrying the token (Authorization: Bearer <token>, or a "
                                  "custom header the integration is configured to send)"},
        "max_body_bytes": {"type": "integer", "minimum": 1024, "maximum": 67108864, "default": 262144},
    },
}
"""JSON Schema of the ``http`` member of a push adapter config."""


def header_token(config: Mapping[str, Any], name: str) -> Authenticate | None:
    """A shared-token check on one header (``Authorization: Bearer <t>`` or ``<Header>: <t>``); None if no token."""
    token = read_secret(config, "token", where=f"{name}: http.")
    if not token:
        return None
    header = str(config.get("header", "Authorization"))
    accepted = [token.encode()]
    if header.lower() == "authorization" and not token.lower().startswith(("bearer ", "basic ")):
        accepted = [f"Bearer {token}".encode()]

    def check(request: web.Request, body: bytes) -> str | None:
        given = request.headers.get(header)
        if given is None:
            return f"missing {header} header"
        if not any(hmac.compare_digest(given.encode(), a) for a in accepted):
            return f"wrong token in {header}"
        return None

    return check


class PushReceiver:
    """One aiohttp site serving one POST path for a push adapter."""

    def __init__(self, config: Mapping[str, Any], *, default_port: int, default_path: str,
                 log: logging.Logger, name: str) -> None:
        listen = config.get("listen") or {}
        self.host: str = str(listen.get("host", "127.0.0.1"))
        self.port: int = int(listen.get("port", default_port))
        self.path: str = str(listen.get("path", default_path))
        self.max_body: int = int(config.get("max_body_bytes", 262144))
        self.log = log
        self.name = name
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self.started = asyncio.Event()
        """Set once the site listens; ``bound_port`` is then the real port (for port 0)."""
        self.bound_port: int | None = None

    def check_exposure(self, authenticated: bool) -> None:
        """Refuse to listen beyond loopback without authentication."""
        if self.host not in LOOPBACK and not authenticated:
            raise ConfigInvalid(f"{self.name}: authentication is required when listening on {self.host}",
                                ["/http/token: required when /http/listen/host is not loopback"])

    async def serve(self, authenticate: Authenticate | None, accept: Accept) -> None:
        """Serve until :meth:`stop`."""
        self._stopped.clear()

        async def receive(request: web.Request) -> web.StreamResponse:
            if request.content_length is not None and request.content_length > self.max_body:
                return problem_response(413, "Payload Too Large", f"body over {self.max_body} bytes")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return problem_response(413, "Payload Too Large", f"body over {self.max_body} bytes")
            if authenticate is not None:
                reason = authenticate(request, body)
                if reason is not None:
                    response = problem_response(401, "Unauthorized", reason)
                    response.headers["WWW-Authenticate"] = 'Bearer realm="jonction"'
                    return response
            try:
                await accept(request, body)
            except InputError as exc:
                return problem_response(400, "Bad Request", str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not accepted: the sender must retry
                self.log.error("%s: message not accepted: %s: %s", self.name, type(exc).__name__, exc)
                return problem_response(503, "Service Unavailable", "message not accepted, retry later")
            return web.json_response({"accepted": True})

        app = web.Application(client_max_size=self.max_body)
        app.router.add_post(self.path, receive)
        # Integrations that post each message kind to its own sub-path (webhooks: /uplink, /join...)
        app.router.add_post(self.path.rstrip("/") + "/{kind:[A-Za-z0-9_/-]+}", receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = int(sockets[0].getsockname()[1]) if sockets else self.port
        self.started.set()
        self.log.info("%s: listening on http://%s:%s%s", self.name, self.host, self.bound_port, self.path)
        try:
            await self._stopped.wait()
        finally:
            await self._cleanup()

    async def _cleanup(self) -> None:
        runner, self._runner = self._runner, None
        self.started.clear()
        if runner is not None:
            await runner.cleanup()

    async def stop(self) -> None:
        """Close the site; idempotent."""
        self._stopped.set()
        await self._cleanup()
