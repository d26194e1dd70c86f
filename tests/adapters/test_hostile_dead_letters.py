"""Hostile payloads through the real gateway: each becomes a dead letter that says where the problem is.

An Orion notification reaches the ngsi_v2 adapter over loopback HTTP; the pipeline keeps what the
translation refuses (NaN, a number that overflows, a lone surrogate, nesting too deep) as a dead
letter with the adapter's JSON pointer, and nothing of it reaches the store.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from adapters.ngsi_v2 import NgsiV2Adapter
from gateway.runtime.state import RUNTIME
from tests.conftest import free_port
from tests.runtime.support import config, running


def _notification(value: str) -> bytes:
    """A v2 notification whose second entity's temperature carries ``value`` verbatim."""
    return (
        '{"subscriptionId": "sub-1", "data": ['
        '{"id": "ok-1", "type": "AirQualityObserved", "dateObserved": {"type": "DateTime", '
        '"value": "2024-05-02T06:00:00Z"}},'
        '{"id": "aq-2", "type": "AirQualityObserved", "temperature": {"type": "Number", "value": ' + value + "}}"
        "]}"
    ).encode()


async def test_hostile_values_become_dead_letters_with_pointers(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(tmp_path, sources=[{"name": "orion", "adapter": "ngsi_v2", "tenant": "",
                                     "config": {"listen": {"host": "127.0.0.1", "port": port}}}])
    url = f"http://127.0.0.1:{port}/v2/notify"
    cases = {
        "NaN": "/data/1/temperature/value",
        "-Infinity": "/data/1/temperature/value",
        "1e400": "/data/1/temperature/value",
        "18446744073709551616": "/data/1/temperature/value",  # 2**64
        '"caf\\udce9"': "/data/1/temperature/value",
        # 64 levels are accepted: the 65th container (4 levels down to the value, 60 inside it) is named.
        "[" * 70 + "]" * 70: "/data/1/temperature/value" + "/0" * 60,
        '{"deep": ' * 70 + "1" + "}" * 70: "/data/1/temperature/value" + "/deep" * 60,
    }
    async with running(cfg, adapters={"ngsi_v2": NgsiV2Adapter}) as (base, app):
        async with aiohttp.ClientSession() as http:
            for value in cases:
                for _ in range(100):  # the listener starts with the source
                    try:
                        async with http.post(url, data=_notification(value),
                                             headers={"Content-Type": "application/json"}) as resp:
                            assert resp.status == 200, await resp.text()
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)
            async with http.get(f"{base}/admin/deadletters") as resp:
                letters = (await resp.json())["deadLetters"]
        rt = app[RUNTIME]
        # The 200 answers once the message is durably dead-lettered: the list is complete.
        assert [(d["stage"], d["pointer"]) for d in letters] == [("translation", p) for p in cases.values()]
        assert all("adapter error" not in d["reason"] for d in letters), [d["reason"] for d in letters]
        # The whole notification is one message: its valid entity waits for the fixed payload too.
        assert await rt.embedded_store.get("", "urn:ngsi-ld:AirQualityObserved:ok-1") is None
