"""Oversized request lines and headers: answered 400/431 by ``jonction run`` and ``jonction store``, logged as
one warning line each, never a traceback (nor the 64 KiB of the offending line)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiohttp import web

from gateway.runtime.logging import MalformedRequestFilter, quiet_malformed_requests
from tests.conftest import ROOT, free_port

BAD_REQUESTS = {
    "request line over 64 KiB": b"GET /ngsi-ld/v1/entities?q=" + b"a" * 70_000
    + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "one header over 16 KiB": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n",
    "too many headers": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n",
}


def send_raw(port: int, payload: bytes) -> int:
    """Send bytes on a fresh loopback connection; the HTTP status of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    assert match, answer[:200]
    return int(match.group(1))


@contextmanager
def serving(args: list[str], ready: str) -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    """Run a ``jonction`` server command; yield it once ``ready`` appeared, with the lines read so far."""
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode("utf-8", "replace")
            if not line:
                break
            lines.append(line)
            if ready in line:
                break
        assert any(ready in line for line in lines), "".join(lines)
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        lines.extend(rest.decode("utf-8", "replace").splitlines(keepends=True))


def assert_quiet(log: str, bad: int) -> None:
    assert "Traceback" not in log, log[-3000:]
    assert "a" * 1000 not in log and "b" * 1000 not in log  # the offending bytes are not echoed
    warnings = [line for line in log.splitlines() if "malformed HTTP request" in line]
    assert len(warnings) == bad, log[-3000:]
    assert all(len(line) < 600 for line in warnings)


def test_jonction_store_answers_and_logs_one_line(tmp_path: Path) -> None:
    port = free_port()
    args = ["store", "--host", "127.0.0.1", "--port", str(port), "--data", str(tmp_path), "--durability", "normal"]
    with serving(args, "serving NGSI-LD") as (_proc, lines):
        for what, payload in BAD_REQUESTS.items():
            assert send_raw(port, payload) in (400, 431), what
        # the server still serves
        assert send_raw(port, b"GET /ngsi-ld/v1/types HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 200
    assert_quiet("".join(lines), len(BAD_REQUESTS))


def test_jonction_run_answers_and_logs_one_warning_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"server: {{host: 127.0.0.1, port: 0}}\ndata_dir: {json.dumps(str(tmp_path / 'data'))}\n"
                      "sources: []\n", encoding="utf-8")
    with serving(["run", "--config", str(config)], "listening on") as (_proc, lines):
        port = int(re.search(r"127\.0\.0\.1:(\d+)", "".join(lines)).group(1))  # type: ignore[union-attr]
        for what, payload in BAD_REQUESTS.items():
            assert send_raw(port, payload) in (400, 431), what
        assert send_raw(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 200
    log = "".join(lines)
    assert_quiet(log, len(BAD_REQUESTS))
    records = [json.loads(line) for line in log.splitlines() if "malformed HTTP request" in line]
    assert {r["level"] for r in records} == {"warning"} and all("error" not in r for r in records)


async def test_the_filter_in_process(caplog: pytest.LogCaptureFixture) -> None:
    """The same rule inside a process: an app on loopback, a raw socket, the captured records."""
    quiet_malformed_requests()
    quiet_malformed_requests()  # idempotent
    assert sum(isinstance(f, MalformedRequestFilter) for f in logging.getLogger("aiohttp.server").filters) == 1
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(handler_args={"max_line_size": 65536})
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        caplog.set_level(logging.DEBUG, logger="aiohttp.server")
        status = await asyncio.to_thread(send_raw, port, BAD_REQUESTS["request line over 64 KiB"])
        assert status == 400  # aiohttp logs before it answers: the record is there
    finally:
        await runner.cleanup()
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "LineTooLong" in record.getMessage() and "65536" in record.getMessage()
    assert len(record.getMessage()) < 300
