"""A small HTTP/1.1 server for the standard push endpoint: one POST path and its sub-paths, nothing else.

Why it exists: a push source answers one request per message, and aiohttp's web layer (request
object, router, middlewares, response machinery) cost 58 to 83 µs of CPU per request on the 2-core
reference machine, against 30 to 38 µs for this protocol on ``httptools`` (llhttp, the parser of
Node.js) answering with pre-encoded bytes (``bench/bench_http1.py``, both on uvloop). The receivers with
routes of their own (webhooks, TALQ, Open311, the IoT Agent) stay on aiohttp.

What it does, and its limits:

* ``POST <path>`` and ``POST <path>/<kind>`` (``kind`` of ``[A-Za-z0-9_/-]``, as the aiohttp route
  did); another method is 405, another path 404. Keep-alive, chunked bodies, ``Expect:
  100-continue``, HTTP/1.0, TLS (an ``ssl.SSLContext``) and ``SO_REUSEPORT`` (several workers on
  one port) are supported.
* A connection's requests are answered in order, one at a time: pipelined requests queue (up to
  :data:`PIPELINE_DEPTH`, then the connection stops being read until they are answered).
* Limits: request line 8 KiB (414), headers 100 fields or 32 KiB (431), body ``max_body`` bytes,
  declared, streamed or once inflated (413; ``Content-Encoding`` gzip and deflate are inflated, as
  aiohttp does, another is 415), a transfer coding other than chunked (501). A request not complete
  within :data:`READ_TIMEOUT_S` gets 408; an idle keep-alive connection is closed after
  :data:`KEEPALIVE_S`. An unparsable request gets 400.
  Every refusal before the body was read closes the connection (what follows it cannot be framed).
* The handler is never cancelled by a client that goes away: the message it is committing is
  committed, and only the answer is lost (the sender retries; deduplication keeps it once).
* :meth:`Http1Server.close` stops listening, closes idle connections, lets the requests being
  handled finish (at most ``grace`` seconds) and then closes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import re
import ssl
import time
import urllib.parse
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy
from yarl import URL

from gateway.problems import PROBLEM_JSON, problem_details

MAX_URL: Final = 8192
MAX_HEADERS: Final = 100
MAX_HEADER_BYTES: Final = 32768
READ_TIMEOUT_S: Final = 60.0
"""A request must be read whole within this time once it has begun (slow senders are cut off)."""
KEEPALIVE_S: Final = 75.0
"""An idle keep-alive connection is closed after this long (aiohttp's default too)."""
PIPELINE_DEPTH: Final = 16
SWEEP_S: Final = 1.0
"""How often the server looks for expired connections (so timeouts are exact to about a second)."""
_KIND: Final = re.compile(r"[A-Za-z0-9_/-]+")
_REASONS: Final[Mapping[int, str]] = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Payload Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable",
}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_DECODERS: Final[Mapping[bytes, int]] = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS,
                                          b"deflate": zlib.MAX_WBITS}
"""Content codings inflated before the handler sees the body (as aiohttp's server does), with zlib's wbits."""

log = logging.getLogger("jonction.http1")


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: status, body, content type and extra headers (already safe header text)."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


def problem(status: int, title: str, detail: str | None = None,
            headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A problem-details answer (RFC 9457), the document ``gateway.problems`` writes for aiohttp."""
    document = problem_details(status, title, detail)
    return Response(status, json.dumps(document, ensure_ascii=False).encode(), PROBLEM_JSON, headers)


class Request:
    """One received request, read the way adapters read aiohttp's ``web.Request`` (headers, path, query...)."""

    __slots__ = ("_query", "headers", "match_info", "path", "raw_query", "scheme")

    def __init__(self, path: str, raw_query: str, headers: CIMultiDict[str], match_info: Mapping[str, str],
                 scheme: str) -> None:
        self.path = path
        """The path, percent-decoded (as aiohttp's ``request.path``)."""
        self.raw_query = raw_query
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(headers)
        self.match_info = match_info
        """``{"kind": ...}`` for a request to a sub-path of the endpoint, else empty."""
        self.scheme = scheme
        self._query: MultiDictProxy[str] | None = None

    @property
    def query(self) -> MultiDictProxy[str]:
        """The query parameters, decoded (parsed on first use)."""
        if self._query is None:
            self._query = MultiDictProxy(MultiDict(urllib.parse.parse_qsl(self.raw_query, keep_blank_values=True)))
        return self._query

    @property
    def rel_url(self) -> URL:
        """Path and query as a relative URL (``raw_query_string`` is the query as sent)."""
        return URL.build(path=urllib.parse.quote(self.path), query_string=self.raw_query, encoded=True)


Handler = Callable[[Request, bytes], Awaitable[Response]]
"""Answers one complete request (its body read whole and within the limit)."""


class _Clock:
    """The ``Date`` header, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._text = email.utils.formatdate(now, usegmt=True).encode()
        return self._text


_CLOCK: Final = _Clock()


def encode(response: Response, *, close: bool) -> bytes:
    """The response's bytes: status line, headers, body."""
    head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n".encode(),
            b"Date: ", _CLOCK.date(), b"\r\nServer: jonction\r\nContent-Type: ", response.content_type.encode(),
            b"\r\nContent-Length: ", str(len(response.body)).encode(), b"\r\n"]
    for name, value in response.headers:
        head.append(f"{name}: {value}\r\n".encode("latin-1"))
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(response.body)
    return b"".join(head)


class Http1Server:
    """Serves one POST endpoint (``path`` and its sub-paths) with ``handler``; see the module docstring."""

    def __init__(self, handler: Handler, *, path: str, max_body: int, scheme: str = "http") -> None:
        self.handler = handler
        self.path = path
        self.base = path.rstrip("/") + "/"
        self.max_body = max_body
        self.scheme = scheme
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    async def listen(self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                     reuse_port: bool | None = None) -> int:
        """Bind and start serving; return the bound port (the real one for port 0)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, ssl=ssl_context,
                                                reuse_port=reuse_port, reuse_address=True)
        self._sweeper = loop.call_later(SWEEP_S, self._sweep)
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _sweep(self) -> None:
        """Expire the connections past their deadline (idle, or a request too slow to arrive)."""
        now = time.monotonic()
        for conn in [c for c in self.connections if c.deadline <= now]:
            conn.expire()
        if self._server is not None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def route(self, path: str) -> dict[str, str] | None:
        """The match info of a request path on this endpoint, or None when the path is not ours."""
        if path == self.path:
            return {}
        if path.startswith(self.base) and _KIND.fullmatch(path, len(self.base)):
            return {"kind": path[len(self.base):]}
        return None

    async def close(self, grace: float = 10.0) -> None:
        """Stop listening; let requests being handled finish (at most ``grace`` s); close every connection."""
        server, self._server = self._server, None
        if self._sweeper is not None:
            self._sweeper.cancel()
        if server is not None:
            server.close()
        for conn in list(self.connections):
            conn.shut()
        busy = [c.done for c in self.connections if not c.done.done()]
        if busy:
            await asyncio.wait(busy, timeout=grace)
        for conn in list(self.connections):
            conn.abort()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)


class _Refused(Exception):
    """A request refused before its body was read: answered, then the connection is closed."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Connection(asyncio.Protocol):
    """One client connection: parses with httptools, answers its requests in order."""

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.route: dict[str, str] | None = None
        self.target_path = ""
        self.target_query = ""
        self.coding: bytes | None = None
        self.queue: deque[tuple[Request, bytes, bool]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.paused = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deadline = 0.0
        """When this connection expires (``time.monotonic()``); the server's sweeper checks it every second."""

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the keep-alive clock."""
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        self._arm(KEEPALIVE_S)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; a handler running keeps running (its answer is dropped)."""
        self.closing = True
        self.server.connections.discard(self)
        if self.worker is None or self.worker.done():
            self._finish()

    def data_received(self, data: bytes) -> None:
        """Feed the parser; a malformed request is answered 400 and the connection closed."""
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # httptools wraps what a callback raises; our refusals carry their answer
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.response)
            else:
                log.error("push endpoint: parser callback failed: %r", cause)
                self._refuse(problem(500, "Internal Server Error", "unexpected error"))
        except httptools.HttpParserUpgrade:
            self._refuse(problem(400, "Bad Request", "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._refuse(problem(400, "Bad Request", f"malformed HTTP request: {exc}"))

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        """A request begins: it must be read whole within READ_TIMEOUT_S."""
        self.coding = None
        self.url.clear()
        self.headers = []
        self.header_bytes = 0
        self.body = []
        self.body_bytes = 0
        self.route = None
        self._arm(READ_TIMEOUT_S)

    def on_url(self, url: bytes) -> None:
        """Collect the request target."""
        self.url += url
        if len(self.url) > MAX_URL:
            raise _Refused(problem(414, "URI Too Long", f"request target over {MAX_URL} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        """Collect one header field (bounded in number and size)."""
        self.header_bytes += len(name) + len(value)
        self.headers.append((name, value))
        if len(self.headers) > MAX_HEADERS or self.header_bytes > MAX_HEADER_BYTES:
            raise _Refused(problem(431, "Request Header Fields Too Large",
                                   f"over {MAX_HEADERS} header fields or {MAX_HEADER_BYTES} bytes of headers"))

    def on_headers_complete(self) -> None:
        """Route the request and check its declared length before any body byte is read."""
        server = self.server
        parsed = httptools.parse_url(bytes(self.url))
        raw_path = parsed.path.decode("latin-1")
        path = self.target_path = urllib.parse.unquote(raw_path) if "%" in raw_path else raw_path
        self.target_query = (parsed.query or b"").decode("latin-1")
        route = server.route(path)
        if route is None:
            raise _Refused(problem(404, "Not Found", f"no endpoint at {path}"))
        if self.parser.should_upgrade():
            raise _Refused(problem(400, "Bad Request", "protocol upgrades are not supported"))
        if self.parser.get_method() != b"POST":
            raise _Refused(problem(405, "Method Not Allowed", "this endpoint takes POST",
                                   headers=(("Allow", "POST"),)))
        expects = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" and value.strip().isdigit() and int(value) > server.max_body:
                raise _Refused(problem(413, "Payload Too Large", f"body over {server.max_body} bytes"))
            expects = expects or (lowered == b"expect" and value.strip().lower() == b"100-continue")
            if lowered == b"content-encoding":
                coding = value.strip().lower()
                if coding not in _DECODERS and coding != b"identity":
                    raise _Refused(problem(415, "Unsupported Media Type",
                                           "Content-Encoding must be gzip, deflate or identity"))
                self.coding = coding if coding != b"identity" else None
            if lowered == b"transfer-encoding" and value.strip().lower() != b"chunked":
                # gzip and the other transfer codings are not decoded: refused, not passed on still coded
                raise _Refused(problem(501, "Not Implemented", "only the chunked transfer coding is supported"))
        if expects and self.transport is not None:
            self.transport.write(_CONTINUE)
        self.route = route

    def on_body(self, chunk: bytes) -> None:
        """Collect the body (bounded: a streamed body over the limit is refused at once)."""
        self.body_bytes += len(chunk)
        if self.body_bytes > self.server.max_body:
            raise _Refused(problem(413, "Payload Too Large", f"body over {self.server.max_body} bytes"))
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        """Queue the request for its answer (in order with the connection's others)."""
        headers: CIMultiDict[str] = CIMultiDict(
            [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.headers])
        request = Request(self.target_path, self.target_query, headers, self.route or {}, self.server.scheme)
        body = b"".join(self.body)
        if self.coding is not None:
            body = self._decoded(body)
        self.url.clear()
        self.headers = []
        self.body = []
        self.body_bytes = 0
        self.queue.append((request, body, self.parser.should_keep_alive()))
        self._arm(KEEPALIVE_S)
        if len(self.queue) >= PIPELINE_DEPTH and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self._answer())

    def _decoded(self, body: bytes) -> bytes:
        """A gzip or deflate body, inflated within the body limit (a small bomb does not grow past it)."""
        assert self.coding is not None
        limit = self.server.max_body
        inflater = zlib.decompressobj(_DECODERS[self.coding])
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            reason = f"body does not inflate ({self.coding.decode()}): {exc}"
            raise _Refused(problem(400, "Bad Request", reason)) from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise _Refused(problem(413, "Payload Too Large", f"body over {limit} bytes once inflated"))
        return out

    # ------------------------------------------------------------ answering

    async def _answer(self) -> None:
        try:
            while self.queue:
                request, body, keep_alive = self.queue.popleft()
                try:
                    response = await self.server.handler(request, body)
                except Exception:  # the handler's own errors are answers; this is a bug: say so, keep serving
                    log.exception("push endpoint: unexpected error")
                    response = problem(500, "Internal Server Error", "unexpected error")
                close = not keep_alive or (self.closing and not self.queue)
                transport = self.transport
                if transport is None or transport.is_closing():
                    continue  # the client left: the message is committed, its answer is lost
                transport.write(encode(response, close=close))
                if close:
                    self.queue.clear()
                    transport.close()
                    break
                if self.paused and len(self.queue) < PIPELINE_DEPTH // 2:
                    self.paused = False
                    transport.resume_reading()
        finally:
            if self.closing or self.transport is None or self.transport.is_closing():
                self._finish()

    def _refuse(self, response: Response) -> None:
        """Answer a refusal after what is already queued, then close (the rest cannot be framed)."""
        self.closing = True
        transport = self.transport
        if transport is None:
            return
        if self.worker is not None and not self.worker.done():
            worker = self.worker

            def later(_: asyncio.Task[None]) -> None:
                if not transport.is_closing():
                    transport.write(encode(response, close=True))
                    transport.close()

            worker.add_done_callback(later)
            return
        transport.write(encode(response, close=True))
        transport.close()

    def _arm(self, seconds: float) -> None:
        # A deadline the server's sweeper reads, not a timer per request: rescheduling a loop
        # timer twice per request cost about 4 % of a worker's CPU.
        self.deadline = time.monotonic() + seconds

    def expire(self) -> None:
        """Close an idle connection; answer 408 to a request that did not arrive whole in time."""
        if self.closing:
            return
        if self.worker is not None and not self.worker.done():
            self._arm(KEEPALIVE_S)  # busy answering: the clock restarts after
            return
        if self.url or self.headers or self.body_bytes:
            self._refuse(problem(408, "Request Timeout", f"request not received within {READ_TIMEOUT_S:g}s"))
        elif self.transport is not None:
            self.closing = True
            self.transport.close()

    def shut(self) -> None:
        """Close when idle, or after the requests being answered (server shutdown)."""
        self.closing = True
        if (self.worker is None or self.worker.done()) and self.transport is not None:
            self.transport.close()
            self._finish()

    def abort(self) -> None:
        """Close at once (after the grace period)."""
        if self.transport is not None:
            self.transport.abort()
        self._finish()

    def _finish(self) -> None:
        self.server.connections.discard(self)
        if not self.done.done():
            self.done.set_result(None)
