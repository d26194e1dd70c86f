"""PushReceiver over real loopback HTTP: the standard endpoint, an adapter's own routes, limits, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import pytest
from aiohttp import web

from adapters.kit.push import BodyTooLarge, PushReceiver, PushRequest
from gateway.errors import InputError
from gateway.problems import problem_response

LOG = logging.getLogger("test.push")


def _receiver(**config: object) -> PushReceiver:
    return PushReceiver({"listen": {"port": 0, "path": "/in"}, **config}, default_port=1, default_path="/x",
                        log=LOG, name="test")


async def test_standard_endpoint_answers_after_accept_and_maps_errors() -> None:
    receiver = _receiver(max_body_bytes=2048)
    seen: list[bytes] = []

    async def accept(request: PushRequest, body: bytes) -> None:
        if body == b"bad":
            raise InputError("not a message")
        if body == b"boom":
            raise RuntimeError("outbox down")
        seen.append(body)

    def authenticate(request: PushRequest, body: bytes) -> str | None:
        return None if request.headers.get("X-Token") == "t" else "missing X-Token header"

    task = asyncio.create_task(receiver.serve(authenticate, accept))
    await asyncio.wait_for(receiver.started.wait(), 10)
    headers = {"X-Token": "t"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(receiver.url, data=b"ok", headers=headers) as resp:
                assert resp.status == 200 and await resp.json() == {"accepted": True}
            async with http.post(receiver.url + "/uplink", data=b"ok2", headers=headers) as resp:
                assert resp.status == 200  # sub-paths reach the same endpoint
            async with http.post(receiver.url, data=b"ok") as resp:
                assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await resp.json())["detail"] == "missing X-Token header"
            async with http.post(receiver.url, data=b"bad", headers=headers) as resp:
                assert resp.status == 400 and resp.content_type == "application/problem+json"
            async with http.post(receiver.url, data=b"boom", headers=headers) as resp:
                assert resp.status == 503
            async with http.post(receiver.url, data=b"x" * 4096, headers=headers) as resp:
                assert resp.status == 413
        assert seen == [b"ok", b"ok2"]
    finally:
        await receiver.stop()
        await asyncio.wait_for(task, 10)
    assert not receiver.started.is_set()


async def test_own_routes_share_the_body_limit_and_can_restart() -> None:
    receiver = _receiver(max_body_bytes=1024)

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            body = await receiver.read_body(request)
        except BodyTooLarge as exc:
            return problem_response(413, str(exc))
        return web.json_response({"length": len(body)})

    async def ping(request: web.Request) -> web.StreamResponse:
        return web.Response(text="pong")

    routes = [web.post("/in", handler), web.get("/in/ping", ping)]
    for _ in range(2):  # the runtime restarts a source with stop() then run() on the same instance
        task = await receiver.start(routes)
        assert receiver.started.is_set() and receiver.bound_port
        async with aiohttp.ClientSession() as http:
            async with http.post(receiver.url, data=b"abc") as resp:
                assert await resp.json() == {"length": 3}
            async with http.get(receiver.url + "/ping") as resp:
                assert await resp.text() == "pong"
            async with http.post(receiver.url, data=b"x" * 2048) as resp:
                assert resp.status == 413
                assert await resp.json() == {"type": "about:blank", "title": "body over 1024 bytes", "status": 413}
        await receiver.stop()
        await asyncio.wait_for(task, 10)
        assert not receiver.started.is_set()


async def test_start_raises_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        receiver = PushReceiver({"listen": {"port": port}}, default_port=1, default_path="/in", log=LOG, name="t")
        with pytest.raises(OSError):
            await receiver.start([])
    assert not receiver.started.is_set()
    await receiver.stop()  # still idempotent


async def test_stop_before_serving_and_twice() -> None:
    receiver = _receiver()
    await receiver.stop()
    await receiver.stop()
    assert receiver.url == ""


async def test_an_endpoint_without_token_refuses_what_only_a_browser_sends() -> None:
    receiver = _receiver()
    seen: list[bytes] = []

    async def accept(request: PushRequest, body: bytes) -> None:
        seen.append(body)

    task = asyncio.create_task(receiver.serve(None, accept))
    await asyncio.wait_for(receiver.started.wait(), 10)
    try:
        async with aiohttp.ClientSession() as http:
            for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
                async with http.post(receiver.url, data=b"forged", headers=headers) as resp:
                    assert resp.status == 403 and resp.content_type == "application/problem+json"
            # A machine client (no Origin), or a page of the receiver's own origin, is served.
            async with http.post(receiver.url, data=b"a", headers={"Host": "gateway.example:8668"}) as resp:
                assert resp.status == 200
            own = f"http://127.0.0.1:{receiver.bound_port}"
            async with http.post(receiver.url, data=b"b", headers={"Origin": own}) as resp:
                assert resp.status == 200
        assert seen == [b"a", b"b"]
    finally:
        await receiver.stop()
        await asyncio.wait_for(task, 10)
