"""CPU per request of the push endpoint's HTTP server: aiohttp's web layer against ``adapters.kit.http1``.

Each server runs in its own process (uvloop when installed, as the gateway's workers do) with a
handler that reads the body and answers the gateway's ``{"accepted": true}``; an aiohttp client
posts an NGSI v2 notification-sized body with ``--concurrency`` requests in flight over keep-alive
connections. Printed: requests/s and the server's CPU per request (user + system, from /proc),
alternating the two servers ``--repeat`` times.

    python bench/bench_http1.py [--requests 20000] [--concurrency 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable

import aiohttp

BODY = (b'{"subscriptionId":"5f","data":[{"id":"urn:ngsi-ld:WasteContainer:w1","type":"WasteContainer",'
        b'"fillingLevel":{"type":"Number","value":0.42,"metadata":{"TimeInstant":{"type":"DateTime",'
        b'"value":"2026-12-03T10:00:00Z"}}}}]}')


def serve(kind: str, port: int) -> None:
    """The server process: one POST endpoint on ``port``."""
    async def main() -> None:
        if kind == "aiohttp":
            from aiohttp import web

            async def handler(request: web.Request) -> web.Response:
                await request.read()
                return web.Response(text='{"accepted": true}', content_type="application/json")

            app = web.Application()
            app.router.add_post("/in", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        else:
            from adapters.kit import http1

            accepted = http1.Response(200, b'{"accepted": true}', "application/json; charset=utf-8")

            async def answer(request: http1.Request, body: bytes) -> http1.Response:  # noqa: ARG001
                return accepted

            await http1.Http1Server(answer, path="/in", max_body=262144).listen("127.0.0.1", port)
        print("ready", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop
        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, requests: int, concurrency: int, pid: int) -> tuple[float, float]:
    """Post ``requests`` bodies; return (requests/s, server µs of CPU per request)."""
    remaining = iter(range(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def client() -> None:
            for _ in remaining:
                async with http.post(f"http://127.0.0.1:{port}/in", data=BODY,
                                     headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    assert resp.status == 200

        await asyncio.gather(*(client() for _ in range(min(concurrency, 5))))  # warm up the connections
        remaining = iter(range(requests))
        cpu, began = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return requests / (time.perf_counter() - began), (cpu_seconds(pid) - cpu) / requests * 1e6


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    """Parse the options: serve (the child process) or measure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serve", choices=["aiohttp", "http1"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
    else:
        asyncio.run(measure(args))


async def measure(args: argparse.Namespace) -> None:
    """Alternate the two servers, print every run and the medians."""
    print(f"{os.cpu_count()} cores; {args.requests} POSTs of {len(BODY)} bytes, {args.concurrency} in flight; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "http1": []}
    for run in range(args.repeat):
        for kind in results:
            port = free_port()
            proc = await asyncio.create_subprocess_exec(sys.executable, __file__, "--serve", kind, "--port", str(port),
                                                        stdout=asyncio.subprocess.PIPE)
            try:
                assert proc.stdout is not None and (await proc.stdout.readline()).strip() == b"ready"
                rate, us = await load(port, args.requests, args.concurrency, proc.pid)
            finally:
                proc.terminate()
                await proc.wait()
            results[kind].append((rate, us))
            print(f"{kind:8} run {run + 1}: {rate:,.0f} requests/s, server CPU {us:.1f} µs per request", flush=True)
    for kind, runs in results.items():
        print(f"median {kind:8}: {statistics.median(r for r, _ in runs):,.0f} requests/s, "
              f"{statistics.median(u for _, u in runs):.1f} µs per request")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
