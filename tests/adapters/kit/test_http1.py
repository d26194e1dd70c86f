"""The push endpoint's HTTP/1.1 server on real loopback sockets: framing, order, limits, shutdown, TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from adapters.kit import http1

Handler = Callable[[http1.Request, bytes], Awaitable[http1.Response]]


async def echo(request: http1.Request, body: bytes) -> http1.Response:
    """Answers with what it read, so a test sees the server's view of the request."""
    return http1.Response(200, b"%s|%s|%s|%s" % (request.path.encode(), request.match_info.get("kind", "").encode(),
                                                 request.raw_query.encode(), body), "text/plain")


@asynccontextmanager
async def serving(handler: Handler = echo, *, max_body: int = 1024, path: str = "/in",
                  ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[tuple[http1.Http1Server, int]]:
    server = http1.Http1Server(handler, path=path, max_body=max_body,
                               scheme="https" if ssl_context else "http")
    port = await server.listen("127.0.0.1", 0, ssl_context=ssl_context)
    try:
        yield server, port
    finally:
        await server.close(grace=5)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One response off a raw connection: status, headers (lower-case names), body."""
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def post(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_keep_alive_and_pipelined_requests_are_answered_in_order() -> None:
    order: list[bytes] = []

    async def slow_first(request: http1.Request, body: bytes) -> http1.Response:
        if body == b"one":
            await asyncio.sleep(0.2)  # the later requests must still wait for this answer
        order.append(body)
        return await echo(request, body)

    async with serving(slow_first) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/in", b"one") + post("/in/uplink?x=1", b"two") + post("/in/a/b", b"three"))
        answers = [await read_response(reader) for _ in range(3)]
        assert [a[2] for a in answers] == [b"/in|||one", b"/in/uplink|uplink|x=1|two", b"/in/a/b|a/b||three"]
        assert order == [b"one", b"two", b"three"]
        assert all(a[0] == 200 and "date" in a[1] and "connection" not in a[1] for a in answers)
        writer.write(post("/in", b"four"))  # the same connection stays open
        assert (await read_response(reader))[2] == b"/in|||four"
        writer.close()


async def test_chunked_body_and_expect_continue() -> None:
    async with serving() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        assert (await read_response(reader))[2] == b"/in|||abcdefg"
        writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ok")
        assert (await read_response(reader))[2] == b"/in|||ok"
        writer.close()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (post("/in", b"x" * 2000), 413),                                    # declared over the limit
    (b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"200\r\n" + b"y" * 512 + b"\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n",
     413),                                                               # streamed over the limit
    (post("/other", b"{}"), 404),
    (post("/in/a.b", b"{}"), 404),                                      # not a kind the route takes
    (b"GET /in HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"POST /in HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),  # smuggling attempt
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"POST /in HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    (b"POST /in HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
    (b"POST /in HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501),  # not decoded
    (b"POST /in HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /in HTTP/1.1\r\nHost: x\r\n Content-Length: 2\r\n\r\nab", 400),     # obsolete line folding
    (post("/in", b"", *(f"X-H{i}: v" for i in range(150))), 431),
    (post("/in?" + "q" * 9000, b""), 414),
    (b"POST /in HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n", 400),
])
async def test_refusals_name_the_problem_and_close_the_connection(request_bytes: bytes, status: int) -> None:
    called: list[bytes] = []

    async def handler(request: http1.Request, body: bytes) -> http1.Response:
        called.append(body)
        return await echo(request, body)

    async with serving(handler) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        code, headers, body = await read_response(reader)
        assert code == status, body
        assert headers["content-type"] == "application/problem+json" and headers["connection"] == "close"
        assert b'"status": %d' % status in body
        if status == 405:
            assert headers["allow"] == "POST"
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
        assert called == []
        writer.close()


async def test_http_1_0_closes_and_a_handler_bug_is_a_500_not_a_dead_connection() -> None:
    async def buggy(request: http1.Request, body: bytes) -> http1.Response:
        if body == b"bug":
            raise KeyError("oops")
        return await echo(request, body)

    async with serving(buggy) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/in", b"bug"))
        assert (await read_response(reader))[0] == 500
        writer.write(post("/in", b"fine"))  # the connection still serves
        assert (await read_response(reader))[2] == b"/in|||fine"
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/in", b"old", version="1.0"))
        code, headers, _ = await read_response(reader)
        assert code == 200 and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()


async def test_a_client_that_leaves_does_not_cancel_the_handler_and_close_waits_for_it() -> None:
    release = asyncio.Event()
    finished: list[bytes] = []

    async def committing(request: http1.Request, body: bytes) -> http1.Response:
        await release.wait()
        finished.append(body)
        return await echo(request, body)

    server = http1.Http1Server(committing, path="/in", max_body=1024)
    port = await server.listen("127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/in", b"gone"))
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()  # the sender gives up before the answer
    await asyncio.sleep(0.1)
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
    writer2.write(post("/in", b"stays"))
    await writer2.drain()
    await asyncio.sleep(0.1)
    closing = asyncio.create_task(server.close(grace=10))
    await asyncio.sleep(0.1)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)  # no longer listening
    release.set()
    code, headers, body = await read_response(reader2)  # the request in flight is answered, then closed
    assert code == 200 and body == b"/in|||stays" and headers["connection"] == "close"
    await asyncio.wait_for(closing, 10)
    assert sorted(finished) == [b"gone", b"stays"]
    writer2.close()


async def test_many_keep_alive_clients_through_aiohttp() -> None:
    async with serving() as (_, port):
        async def one_client(k: int) -> list[int]:
            async with aiohttp.ClientSession() as http:
                statuses = []
                for i in range(30):
                    async with http.post(f"http://127.0.0.1:{port}/in/up", json={"k": k, "i": i}) as resp:
                        assert await resp.read() == b'/in/up|up||{"k": %d, "i": %d}' % (k, i)
                        statuses.append(resp.status)
                return statuses
        results = await asyncio.gather(*(one_client(k) for k in range(8)))
        assert [s for r in results for s in r] == [200] * 240


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made by the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


async def test_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with serving(ssl_context=server_ctx) as (_, port), aiohttp.ClientSession() as http:
        async with http.post(f"https://127.0.0.1:{port}/in", data=b"secret", ssl=client_ctx) as resp:
            assert resp.status == 200 and await resp.read() == b"/in|||secret"


async def test_slow_requests_get_408_and_idle_connections_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "SWEEP_S", 0.1)
    monkeypatch.setattr(http1, "READ_TIMEOUT_S", 0.5)
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.8)
    async with serving() as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")  # 7 bytes never come
        code, headers, body = await read_response(reader)
        assert code == 408 and headers["connection"] == "close" and b"not received within" in body
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/in", b"one"))
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 10) == b""  # idle past the keep-alive time: closed
        writer.close()


async def test_gzip_and_deflate_bodies_are_inflated_within_the_limit() -> None:
    import gzip
    import zlib

    async with serving(max_body=1024) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/in", gzip.compress(b'{"a": 1}'), "Content-Encoding: gzip"))
        assert (await read_response(reader))[2] == b'/in|||{"a": 1}'
        writer.write(post("/in", zlib.compress(b"deflated"), "Content-Encoding: deflate"))
        assert (await read_response(reader))[2] == b"/in|||deflated"
        writer.write(post("/in", gzip.compress(b"x" * 100_000), "Content-Encoding: gzip"))  # 100 kB from ~100 bytes
        code, headers, body = await read_response(reader)
        assert code == 413 and b"once inflated" in body and headers["connection"] == "close"
        writer.close()
        for coding, data, status in (("gzip", b"not gzip at all", 400), ("br", b"...", 415)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/in", data, f"Content-Encoding: {coding}"))
            assert (await read_response(reader))[0] == status
            writer.close()
