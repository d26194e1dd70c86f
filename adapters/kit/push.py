"""The kit's one HTTP listener for push integrations (network-server HTTP integrations, webhooks, endpoints).

``PushReceiver`` listens on ``listen: {host, port, path}`` and owns the site's lifecycle (bind,
real port for port 0, ``started``, idempotent ``stop``) and the body limit (``max_body_bytes``).
Adapters use it in one of two ways:

- ``serve(authenticate, accept)``: the standard endpoint, served by the kit's lean HTTP/1.1 server
  (``adapters.kit.http1``: a fifth of aiohttp's CPU per request). Bodies over the limit get 413,
  unauthenticated requests 401 (the adapter supplies the check: a shared header token, or a
  vendor signature), and the answer is 2xx only after the adapter's ``accept`` — which awaits the
  runtime's ``emit`` — has returned; a failure there is a 503 so that the sender retries.
- ``serve_routes(routes)`` / ``start(routes)``: the adapter's own routes (a protocol with its own
  answers, such as Standard Webhooks or Open311 GeoReport), read through ``read_body`` so that the
  limit is enforced the same way.

A standard endpoint without authentication (allowed on loopback only) refuses what only a browser
sends — an ``Origin`` naming another site, ``Sec-Fetch-Site: cross-site`` — with 403, so that a web
page cannot post forged messages to it (``gateway.crosssite``, as for the admin APIs). Its ``Host``
is not checked: a receiver behind a reverse proxy sees the proxy's public name, and there is no
allowed-hosts setting for receivers; a token (or a vendor signature) is the real protection, and
DNS rebinding is only stopped by one.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping
from yarl import URL

from adapters.kit import http1
from gateway.contract import SHARED_PORTS
from gateway.crosssite import HostPolicy, refusal
from gateway.errors import ConfigInvalid, InputError
from gateway.problems import problem_response
from gateway.secrets import read_secret


class PushRequest(Protocol):
    """What adapters read of a push request: aiohttp's ``web.Request`` and ``http1.Request`` both have it."""

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The request headers (case-insensitive)."""

    @property
    def path(self) -> str:
        """The path, percent-decoded."""

    @property
    def query(self) -> MultiMapping[str]:
        """The query parameters, decoded."""

    @property
    def rel_url(self) -> URL:
        """Path and query as a relative URL (``raw_query_string`` is the query as sent)."""

    @property
    def match_info(self) -> Mapping[str, str]:
        """The route's variables (``kind`` for a sub-path of the standard endpoint)."""

    @property
    def scheme(self) -> str:
        """``http`` or ``https``."""


Authenticate = Callable[[PushRequest, bytes], "str | None"]
"""Returns None when the request is authentic, else the reason it is not (sent with the 401)."""
Accept = Callable[[PushRequest, bytes], Awaitable[None]]
"""Turns one request into RawMessages and awaits ``emit``; InputError → 400."""

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_ACCEPTED = http1.Response(200, json.dumps({"accepted": True}).encode(), "application/json; charset=utf-8")
"""The answer to every accepted message (what ``web.json_response`` writes), encoded once."""
_ANY_HOST = HostPolicy.of("0.0.0.0", ["*"])
"""Receivers accept any Host (see the module docstring); only the Origin checks apply."""

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


def cross_site_reason(request: PushRequest) -> str | None:
    """Why a request is what only a browser on another site sends (refused without authentication), else None."""
    headers = request.headers
    if "Origin" not in headers and "Sec-Fetch-Site" not in headers:
        return None  # what network servers and brokers send: nothing to check (any Host is accepted)
    return refusal(_ANY_HOST, host=headers.get("Host"), origin=headers.get("Origin"),
                   scheme=request.scheme, fetch_site=headers.get("Sec-Fetch-Site"))


def cross_site_refusal(request: web.Request) -> web.Response | None:
    """403 for what only a browser on another site sends (an endpoint without authentication uses it), else None."""
    refused = cross_site_reason(request)
    return None if refused is None else problem_response(403, "Forbidden", refused)


class BodyTooLarge(Exception):
    """A request body over the receiver's ``max_body_bytes``."""


def header_token(config: Mapping[str, Any], name: str) -> Authenticate | None:
    """A shared-token check on one header (``Authorization: Bearer <t>`` or ``<Header>: <t>``); None if no token."""
    token = read_secret(config, "token", where=f"{name}: http.")
    if not token:
        return None
    header = str(config.get("header", "Authorization"))
    accepted = [token.encode()]
    if header.lower() == "authorization" and not token.lower().startswith(("bearer ", "basic ")):
        accepted = [f"Bearer {token}".encode()]

    def check(request: PushRequest, body: bytes) -> str | None:  # noqa: ARG001  # PushReceiver check signature
        given = request.headers.get(header)
        if given is None:
            return f"missing {header} header"
        if not any(hmac.compare_digest(given.encode(), a) for a in accepted):
            return f"wrong token in {header}"
        return None

    return check


class PushReceiver:
    """One aiohttp site serving a push adapter's routes: the standard POST endpoint, or the adapter's own."""

    def __init__(self, config: Mapping[str, Any], *, default_port: int, default_path: str,
                 log: logging.Logger, name: str, default_max_body: int = 262144) -> None:
        listen = config.get("listen") or {}
        self.host: str = str(listen.get("host", "127.0.0.1"))
        self.port: int = int(listen.get("port", default_port))
        self.path: str = str(listen.get("path", default_path))
        self.max_body: int = int(config.get("max_body_bytes", default_max_body))
        self.log = log
        self.name = name
        """Name of the source it serves (in logs)."""
        self._runner: web.AppRunner | None = None
        self._lean: http1.Http1Server | None = None
        self._stopped = asyncio.Event()
        self.started = asyncio.Event()
        """Set once the site listens; ``bound_port`` is then the real port (for port 0)."""
        self.bound_port: int | None = None
        self.ssl_context: ssl.SSLContext | None = None
        """Set before serving to listen with TLS (https)."""

    @property
    def url(self) -> str:
        """``http://host:port/path`` once listening, else ""."""
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.bound_port}{self.path}" if self.bound_port is not None else ""

    def check_exposure(self, authenticated: bool) -> None:
        """Refuse to listen beyond loopback without authentication."""
        if self.host not in LOOPBACK and not authenticated:
            raise ConfigInvalid(f"{self.name}: authentication is required when listening on {self.host}",
                                ["/http/token: required when /http/listen/host is not loopback"])

    async def read_body(self, request: web.Request) -> bytes:
        """The request body; BodyTooLarge when it is over ``max_body_bytes`` (declared or streamed)."""
        if request.content_length is not None and request.content_length > self.max_body:
            raise BodyTooLarge(f"body over {self.max_body} bytes")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BodyTooLarge(f"body over {self.max_body} bytes") from None

    async def serve(self, authenticate: Authenticate | None, accept: Accept) -> None:
        """Serve the standard endpoint (``path`` and its sub-paths) until :meth:`stop`."""

        async def receive(request: http1.Request, body: bytes) -> http1.Response:
            if authenticate is None:
                forbidden = cross_site_reason(request)
                if forbidden is not None:
                    return http1.problem(403, "Forbidden", forbidden)
            else:
                reason = authenticate(request, body)
                if reason is not None:
                    return http1.problem(401, "Unauthorized", reason,
                                         headers=(("WWW-Authenticate", 'Bearer realm="jonction"'),))
            try:
                await accept(request, body)
            except InputError as exc:
                return http1.problem(400, "Bad Request", str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not accepted: the sender must retry
                self.log.error("%s: message not accepted: %s: %s", self.name, type(exc).__name__, exc)
                return http1.problem(503, "Service Unavailable", "message not accepted, retry later")
            return _ACCEPTED

        self._stopped.clear()
        server = self._lean = http1.Http1Server(receive, path=self.path, max_body=self.max_body,
                                                 scheme="https" if self.ssl_context is not None else "http")
        try:
            # Workers of one gateway share the port (``jonction run --workers``): SO_REUSEPORT.
            self.bound_port = await server.listen(self.host, self.port, ssl_context=self.ssl_context,
                                                  reuse_port=SHARED_PORTS.get() or None)
            self.started.set()
            self.log.info("%s: listening on %s", self.name, self.url)
            await self._stopped.wait()
        finally:
            self.started.clear()
            if self._lean is server:  # else stop() took it and closes it
                self._lean = None
                await server.close()

    async def serve_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        """Serve the adapter's own ``routes`` until :meth:`stop` (bodies bounded by ``max_body_bytes``)."""
        # The runtime restarts a source by calling stop() then run() again on the same instance.
        self._stopped.clear()
        app = web.Application(client_max_size=self.max_body)
        app.router.add_routes(routes)
        runner = self._runner = web.AppRunner(app, access_log=None)
        try:
            await runner.setup()
            # Workers of one gateway share the port (``jonction run --workers``): SO_REUSEPORT.
            await web.TCPSite(runner, self.host, self.port, reuse_port=SHARED_PORTS.get() or None,
                              ssl_context=self.ssl_context).start()
            addresses = runner.addresses
            self.bound_port = int(addresses[0][1]) if addresses else self.port
            self.started.set()
            self.log.info("%s: listening on %s", self.name, self.url)
            await self._stopped.wait()
        finally:
            self.started.clear()
            if self._runner is runner:  # else stop() took it and cleans it up
                self._runner = None
                await runner.cleanup()

    async def start(self, routes: Iterable[web.AbstractRouteDef]) -> asyncio.Task[None]:
        """Serve ``routes`` in a task; return it once listening (raise at once if the site cannot bind)."""
        task = asyncio.create_task(self.serve_routes(routes), name=f"{self.name}-listener")
        started = asyncio.create_task(self.started.wait())
        try:
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the caller was cancelled while waiting: take the listener down too
            task.cancel()
            raise
        finally:
            started.cancel()
        if task.done():
            task.result()  # the bind error (or an early stop, which returns None)
        return task

    async def _cleanup(self) -> None:
        runner, self._runner = self._runner, None
        lean, self._lean = self._lean, None
        self.started.clear()
        if runner is not None:
            await runner.cleanup()
        if lean is not None:
            await lean.close()

    async def stop(self) -> None:
        """Close the site; idempotent, safe before serving."""
        self._stopped.set()
        await self._cleanup()
