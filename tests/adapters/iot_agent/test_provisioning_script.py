"""A provisioning script written for a FIWARE IoT Agent, replayed unchanged against jonction."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.runtime.state import RUNTIME
from tests.adapters.iot_agent.test_end_to_end import gateway
from tests.runtime.support import eventually

SCRIPT = Path(__file__).parent / "scripts" / "provision_store.sh"


@dataclass
class Curl:
    """One curl command of the script."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    data: str | None = None


def curl_commands(text: str) -> list[Curl]:
    """The curl commands of a shell script (``-X``/``-iX``, ``-H``, ``-d``), as the shell splits them."""
    words_all = shlex.split(text.replace("\\\n", " "), comments=True)
    starts = [i for i, word in enumerate(words_all) if word == "curl"]
    commands = []
    for start, end in zip(starts, [*starts[1:], len(words_all)], strict=True):
        words = words_all[start + 1:end]
        command = Curl("GET", "")
        i = 0
        while i < len(words):
            word = words[i]
            if word in ("-X", "-iX"):
                command.method, i = words[i + 1], i + 2
            elif word == "-H":
                name, _, value = words[i + 1].partition(":")
                command.headers[name.strip()] = value.strip()
                i += 2
            elif word == "-d":
                command.data, i = words[i + 1], i + 2
                if command.method == "GET":
                    command.method = "POST"
            else:
                command.url, i = word, i + 1
        commands.append(command)
    return commands


async def test_the_tutorial_script_runs_unchanged(tmp_path: Path) -> None:
    commands = curl_commands(SCRIPT.read_text())
    assert len(commands) == 13
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        ports = {"http://localhost:4041": gw.north, "http://localhost:7896": gw.south}
        statuses: list[int] = []
        answers: list[Any] = []
        for command in commands:
            url = command.url
            for old, new in ports.items():
                url = url.replace(old, new)
            async with http.request(command.method, url, headers=command.headers,
                                    data=command.data.encode() if command.data is not None else None) as r:
                statuses.append(r.status)
                answers.append(await r.text())
        expected = [200, 201, 201, 201, 200, 200, 200, 204, 200, 204, 200, 204, 200]
        assert statuses == expected, list(zip(statuses, answers, strict=True))
        store = gw.app[RUNTIME].embedded_store

        async def motion_counted_twice() -> Any:
            found = await store.get("openiot", "urn:ngsi-ld:Motion:001")
            return found if found and found["count"]["value"] == 2 else None

        motion = await eventually(motion_counted_twice, what="the second motion count")
        assert motion["refStore"]["type"] == "Relationship" and motion["refStore"]["object"] == "urn:ngsi-ld:Store:002"
        temperature = await gw.entity("openiot", "urn:ngsi-ld:Temperature:001")
        assert temperature["temperature"]["value"] == 18.5 and temperature["temperature"]["unitCode"] == "CEL"
        door = await gw.entity("openiot", "urn:ngsi-ld:Thing:door001")
        assert door["s"]["value"] == "OPEN"
        bell = await gw.entity("openiot", "urn:ngsi-ld:Bell:001")
        assert bell["ring_status"]["value"] == "PENDING"
        device_ids = sorted(d.device_id for d in gw.adapter.registry.list_devices("openiot", "/"))
        assert device_ids == ["bell001", "motion001", "temperature001"]
