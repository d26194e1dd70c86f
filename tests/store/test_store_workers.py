"""``jonction store --workers N``: real processes sharing one socket and one PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli import main as cli_main
from tests.store.test_subscriptions import Receiver, receiver, sensor, sub

__all__ = ["receiver"]  # the fixture, imported for the tests below


def test_several_workers_need_postgresql(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A SQLite store has one writer: --workers 2 is refused with the reason, before anything is served."""
    code = cli_main(["store", "--workers", "2", "--port", "0", "--data", str(tmp_path)])
    assert code != 0
    err = capsys.readouterr().err
    assert "--workers 2 needs a PostgreSQL database" in err, err
    assert not (tmp_path / "store.sqlite").exists()
    assert cli_main(["store", "--workers", "0", "--data", str(tmp_path)]) != 0


async def _until(check: Callable[[], Any], within: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            result = await check()
        except (aiohttp.ClientError, OSError):
            result = None
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_two_workers_serve_one_port_and_survive_a_kill(
    tmp_path: Path, postgres_url: str, receiver: Receiver
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "store", "--workers", "2", "--port", "0", "--data", str(tmp_path),
        "--database", postgres_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/ngsi-ld/v1 with 2 workers \(pids (\d+), (\d+)\)", line)
        assert found, line
        base = f"http://127.0.0.1:{found[1]}/ngsi-ld/v1"
        pids = [int(found[2]), int(found[3])]
        # one connection per request: the kernel hands them to either worker
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def up() -> bool:
                async with http.get(base + "/types") as resp:
                    return resp.status == 200

            await _until(up)
            async with http.post(base + "/subscriptions", json=sub(receiver, "/w")) as resp:
                assert resp.status == 201, await resp.text()
            await asyncio.sleep(1.5)  # every worker follows the new subscription
            for n in range(20):
                async with http.post(base + "/entities", json=sensor(n, temperature=n)) as resp:
                    assert resp.status == 201, await resp.text()
            for n in range(20):
                async with http.get(f"{base}/entities/urn:ngsi-ld:Sensor:{n}") as resp:
                    assert resp.status == 200 and (await resp.json())["temperature"]["value"] == n
            await receiver.wait("/w", 20)
            await asyncio.sleep(1.5)
            ids = [r.body["data"][0]["id"] for r in receiver.at("/w")]
            assert sorted(ids) == sorted(f"urn:ngsi-ld:Sensor:{n}" for n in range(20))  # each once

            os.kill(pids[0], signal.SIGKILL)  # a worker dies without closing anything
            async with http.post(base + "/entities", json=sensor(99, temperature=1)) as resp:
                assert resp.status == 201, await resp.text()
            async with http.get(base + "/entities/urn:ngsi-ld:Sensor:99") as resp:
                assert resp.status == 200
            await receiver.wait("/w", 21)
            await asyncio.sleep(1.5)
            assert [r.body["data"][0]["id"] for r in receiver.at("/w")].count("urn:ngsi-ld:Sensor:99") == 1
            assert len(receiver.at("/w")) == 21
        restarted = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        while "exited" not in restarted:
            restarted = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert f"worker {pids[0]} exited" in restarted, restarted
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
    for pid in pids[1:]:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the workers stopped with their supervisor
