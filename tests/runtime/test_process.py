"""The gateway as a process: `jonction run --config`, killed with SIGKILL or stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import ROOT, free_port
from tests.runtime.support import RecordingBroker, eventually

JONCTION = str(Path(sys.executable).with_name("jonction"))


def notification(i: int) -> dict[str, Any]:
    """One NGSI v2 notification carrying one WasteContainer."""
    return {"subscriptionId": "sub-kill", "data": [{
        "id": f"urn:ngsi-ld:WasteContainer:wc-{i}", "type": "WasteContainer",
        "fillingLevel": {"type": "Number", "value": (i % 100) / 100,
                         "metadata": {"TimeInstant": {"type": "DateTime", "value": "2026-01-01T10:00:00Z"}}},
        "location": {"type": "geo:json", "value": {"type": "Point", "coordinates": [3.87, 43.6]}}}]}


def write_config(tmp: Path, broker: RecordingBroker, port: int, notify_port: int) -> Path:
    doc = {
        "server": {"host": "127.0.0.1", "port": port},
        "data_dir": str(tmp / "data"),
        "embedded_store": {"enabled": False},
        "publisher": {"linger": 0.01, "backoff_initial": 0.05, "backoff_max": 0.5, "breaker_cooldown": 0.5},
        "shutdown": {"drain_timeout": 10},
        "sinks": [{"name": "city", "url": broker.url}],
        "sources": [{"name": "orion", "adapter": "ngsi_v2",
                     "config": {"listen": {"host": "127.0.0.1", "port": notify_port, "path": "/v2/notify"}}}],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([JONCTION, "run", "--config", str(config)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=sink)


async def wait_ready(port: int) -> None:
    async def ready() -> bool:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False
    await eventually(ready, within=60, what="gateway ready")


async def send_until(notify_port: int, stop: asyncio.Event, acked: list[int], start_at: int = 0) -> None:
    """Post notifications one after another; remember those answered 2xx (acknowledged)."""
    i = start_at
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while not stop.is_set():
            try:
                async with http.post(f"http://127.0.0.1:{notify_port}/v2/notify", json=notification(i)) as resp:
                    if resp.status < 300:
                        acked.append(i)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.01)
                if stop.is_set():
                    break
            i += 1


@pytest.mark.slow
async def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    broker = RecordingBroker()
    await broker.start()
    port, notify_port = free_port(), free_port()
    config = write_config(tmp_path, broker, port, notify_port)
    log = tmp_path / "gateway.log"
    proc = start(config, log)
    acked: list[int] = []
    try:
        await wait_ready(port)
        await eventually(lambda: _port_open(notify_port), what="notify listener")
        stop = asyncio.Event()
        sender = asyncio.create_task(send_until(notify_port, stop, acked))
        await eventually(lambda: len(acked) >= 300, within=60, what="300 acknowledged messages")
        workers = await worker_pids(port)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: requests in flight are lost, but never acked ones
        proc.wait(timeout=10)
        # Its workers stop too (they were reporting commits: the parent dies with reports unread, and
        # their link is reset rather than closed). One left running would keep its share of the push
        # port and take connections nobody answers.
        await eventually(lambda: not any(_alive(pid) for pid in workers), within=30,
                         what=f"workers {workers} stopped after their parent's SIGKILL")
        await asyncio.sleep(0.3)  # the source keeps trying while the gateway is down: no ack
        stop.set()
        await sender
        proc = start(config, log)
        await wait_ready(port)
        expected = {f"urn:ngsi-ld:WasteContainer:wc-{i}" for i in acked}
        await eventually(lambda: expected <= set(broker.state.get("", {})), within=60,
                         what="every acknowledged entity at the broker")
        received = set(broker.state[""])
        assert expected <= received
        # nothing invented: whatever arrived was sent (a message in flight at the kill may arrive unacked)
        assert all(int(i.rsplit("-", 1)[1]) < max(acked) + 5 for i in received)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        await broker.stop()


@pytest.mark.slow
async def test_sigterm_drains_in_flight_batches(tmp_path: Path) -> None:
    broker = RecordingBroker()
    await broker.start()
    port, notify_port = free_port(), free_port()
    config = write_config(tmp_path, broker, port, notify_port)
    log = tmp_path / "gateway.log"
    proc = start(config, log)
    try:
        await wait_ready(port)
        await eventually(lambda: _port_open(notify_port), what="notify listener")
        async with aiohttp.ClientSession() as http:
            for i in range(50):
                async with http.post(f"http://127.0.0.1:{notify_port}/v2/notify", json=notification(i)) as resp:
                    assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.to_thread(proc.wait, 30)
        assert code == 0
        assert time.monotonic() - started < 30
        assert len(broker.state[""]) == 50
        lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.startswith("{")]
        assert any("drained" in line["msg"] for line in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await broker.stop()


async def worker_pids(port: int) -> list[int]:
    """The pids of the gateway's ingestion workers (none on a one-core machine)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/admin/workers") as resp:
        return [int(w["pid"]) for w in (await resp.json())["workers"] if w.get("pid")]


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's reaper may be slow, or absent in a container)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
