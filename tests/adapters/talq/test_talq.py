"""The TALQ adapter's CMS API and gateway client against the simulated gateway, and their contract with the OAS."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.talq import TalqAdapter, command_level
from adapters.talq.gateway_api import GatewayError
from adapters.talq.simulator import SimulatedGateway, address, create
from adapters.talq.translate import translate
from gateway.errors import TranslationError
from gateway.model import RawMessage
from gateway.validation import validate
from tests.conftest import free_port, needs_shared
from tests.runtime.support import eventually

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "adapters/talq/fixtures"
NIGHT = 1733180400.0  # 2024-12-02 23:00 UTC: midnight in Paris, lamps at 50 %


class Collector:
    """An emit callback that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[RawMessage] = []

    async def __call__(self, raw: RawMessage) -> None:
        self.messages.append(raw)


def _params(gw: str = "8d3c6d0e-7f55-4b5e-8a0c-0000000000ff") -> dict[str, str]:
    return {"clientAddress": gw, "talqRequestId": str(uuid.uuid4())}


HEADERS = {"talq-api-version": "2.7.1", "Authorization": "Bearer cms-token-for-tests"}


@pytest.fixture
async def cms() -> AsyncIterator[tuple[TalqAdapter, Collector, str]]:
    """A running TALQ CMS adapter (token required) and the simulated gateway it commands, not reporting."""
    emit = Collector()
    gw_port = free_port()
    adapter = TalqAdapter({"name": "talq", "http": {"listen": {"host": "127.0.0.1", "port": 0, "path": "/talq"},
                                                    "token": "cms-token-for-tests"},
                           "gateway": {"url": f"http://127.0.0.1:{gw_port}/talq", "timeout": 5}})
    task = asyncio.create_task(adapter.run(emit))
    await asyncio.wait_for(adapter.receiver.started.wait(), 10)
    try:
        yield adapter, emit, f"http://127.0.0.1:{adapter.receiver.bound_port}/talq"
    finally:
        await adapter.stop()
        await asyncio.wait_for(task, 10)


async def _gateway(cms_url: str, port: int = 0, **options: Any) -> SimulatedGateway:
    gw = create({"cms_url": cms_url, "cms_token": "cms-token-for-tests", "port": port, "lamps": 4,
                 "interval": 3600, **options})
    await gw.start()
    return gw


# ---------------------------------------------------------------- without ../shared


def test_fixtures_translate_to_valid_entities_with_uncefact_units() -> None:
    meta = json.loads((FIXTURES / "log_report.meta.json").read_text())["metadata"]
    entities = translate("log-reports", json.loads((FIXTURES / "log_report.json").read_text()), meta["talq_context"])
    by_type = {e["type"]: e for e in entities}
    lamp, cabinet = by_type["Streetlight"], by_type["StreetlightControlCabinet"]
    assert lamp["illuminanceLevel"]["value"] == 0.5 and lamp["powerState"]["value"] == "on"
    assert lamp["powerConsumption"]["unitCode"] == "WTT" and lamp["voltage"]["unitCode"] == "VLT"
    assert lamp["current"]["unitCode"] == "AMP" and lamp["lifetimePowerConsumption"]["unitCode"] == "KWH"
    assert cabinet["energyConsumed"]["unitCode"] == "KWH" and cabinet["totalActivePower"]["unitCode"] == "KWT"
    assert cabinet["frequency"] == {"type": "Property", "value": 50.0, "unitCode": "HTZ",
                                    "observedAt": "2024-12-02T23:00:00Z"}
    assert all(validate(e, strict=True).valid for e in entities)


@pytest.mark.parametrize(("body", "pointer"), [
    ({"entries": [{"data": {"type": "AttributeLogData", "srcAddress": "nobody/f", "attributeName": "x",
                            "attributeValue": {"type": "AttributeFloat", "value": 1}}}]}, "/entries/0/data/srcAddress"),
    ({"entries": [{"data": {"type": "Nonsense", "srcAddress": "a/b"}}]}, "/entries/0/data/type"),
    ({"entries": {"not": "a list"}}, "/entries"),
])
def test_a_bad_log_report_names_its_json_pointer(body: Any, pointer: str) -> None:
    with pytest.raises(TranslationError) as caught:
        translate("log-reports", body, json.dumps({"devices": {}}))
    assert caught.value.pointer == pointer


def test_a_dim_level_out_of_range_is_refused_with_its_pointer() -> None:
    meta = json.loads((FIXTURES / "log_report.meta.json").read_text())["metadata"]
    body = json.loads((FIXTURES / "log_report.json").read_text())
    body["entries"][0]["data"]["attributeValue"]["value"]["value"] = 140
    with pytest.raises(TranslationError) as caught:
        translate("log-reports", body, meta["talq_context"])
    assert caught.value.pointer == "/entries/0/data/attributeValue/value/value"


def test_command_levels() -> None:
    assert command_level("powerState", "off") == 0 and command_level("powerState", "on") == 100
    assert command_level("dimmingLevel", 35) == 35 and command_level("illuminanceLevel", 0.4) == 40
    for attribute, value in (("dimmingLevel", 140), ("powerState", "dim"), ("illuminanceLevel", 3), ("colour", 1)):
        with pytest.raises(ValueError):
            command_level(attribute, value)


async def test_the_simulator_registers_reports_and_a_command_changes_what_a_lamp_reports(
    cms: tuple[TalqAdapter, Collector, str],
) -> None:
    adapter, emit, url = cms
    gw = await _gateway(url, port=int(adapter.gateway.url.split(":")[2].split("/")[0]) if adapter.gateway else 0)
    try:
        await asyncio.wait_for(gw.registered.wait(), 20)
        assert await gw.report_once() == 201
        lamp = gw.lamps[0]
        lamp_id = f"urn:ngsi-ld:Streetlight:{lamp.address}"
        result = await adapter.send_command({"id": "cmd-1", "tenant": "", "entity_id": lamp_id,
                                             "entity_type": "Streetlight", "attribute": "dimmingLevel", "value": 30,
                                             "issued_at": "2024-12-02T23:00:00Z"})
        assert result["status"] == "acknowledged" and result["retry"] is False
        group = await adapter.send_command({"id": "cmd-2", "tenant": "",
                                            "entity_id": f"urn:ngsi-ld:StreetlightGroup:{gw.group}",
                                            "entity_type": "StreetlightGroup", "attribute": "powerState",
                                            "value": "off", "issued_at": "2024-12-02T23:00:00Z"})
        assert group["status"] == "acknowledged"
        assert all(lamp.override == 0 for lamp in gw.lamps)
        await adapter.send_command({"id": "cmd-3", "tenant": "", "entity_id": lamp_id, "entity_type": "Streetlight",
                                    "attribute": "illuminanceLevel", "value": 0.3,
                                    "issued_at": "2024-12-02T23:00:00Z"})
        assert await gw.report_once() == 201
        last = [m for m in emit.messages if m.metadata.get("talq_resource") == "log-reports"][-1]
        entities = adapter.to_entities(last)
        dimmed = next(e for e in entities if e["id"] == lamp_id)
        assert dimmed["illuminanceLevel"]["value"] == 0.3 and dimmed["powerState"]["value"] == "on"
        # the group was read back from the gateway and its members learnt it
        await eventually(lambda: any(m.metadata.get("talq_resource") == "groups" for m in emit.messages),
                         what="the groups read back")
        groups = next(m for m in emit.messages if m.metadata.get("talq_resource") == "groups")
        linked = adapter.to_entities(groups)
        assert {e["type"] for e in linked} == {"StreetlightGroup", "Streetlight", "StreetlightControlCabinet"}
        assert all(validate(e).valid for e in linked)
    finally:
        await gw.stop()


async def test_an_unreachable_gateway_is_a_failure_worth_retrying_and_a_refusal_is_not(
    cms: tuple[TalqAdapter, Collector, str],
) -> None:
    adapter, _, url = cms
    command = {"id": "cmd-9", "tenant": "", "entity_id": "urn:ngsi-ld:Streetlight:8d3c6d0e-7f55-4b5e-8a0c-00000000dead",
               "entity_type": "Streetlight", "attribute": "powerState", "value": "on",
               "issued_at": "2024-12-02T23:00:00Z"}
    down = await adapter.send_command(command)  # nothing listens on the gateway port yet
    assert down["status"] == "failed" and down["retry"] is True and "unreachable" in down["detail"]
    assert adapter.gateway is not None
    gw = await _gateway(url, port=int(adapter.gateway.url.split(":")[2].split("/")[0]))
    try:
        unknown = await adapter.send_command(command)  # the gateway has no such device: 422, not retried
        assert unknown["status"] == "failed" and unknown["retry"] is False and "422" in unknown["detail"]
        wrong = await adapter.send_command({**command, "attribute": "dimmingLevel", "value": 250})
        assert wrong["status"] == "failed" and wrong["retry"] is False
    finally:
        await gw.stop()
    assert adapter.command_attributes()["Streetlight"] == ["powerState", "dimmingLevel"]


async def test_a_bad_payload_is_400_naming_its_pointer_and_is_emitted_for_the_dead_letters(
    cms: tuple[TalqAdapter, Collector, str],
) -> None:
    adapter, emit, url = cms
    body = {"address": "logger", "entries": [{"data": {"type": "AttributeLogData", "srcAddress": "unknown/f1",
                                                       "attributeName": "activePower",
                                                       "attributeValue": {"type": "AttributeFloat", "value": 3}}}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/log-reports", json=body, params=_params(), headers=HEADERS) as resp:
            assert resp.status == 400
            answer = await resp.json()
        async with http.post(f"{url}/log-reports", data=b'{"entries": [1,', params=_params(), headers=HEADERS) as resp:
            assert resp.status == 400
        async with http.post(f"{url}/log-reports", json=body, params=_params(),
                             headers={"talq-api-version": "2.7.1"}) as resp:
            assert resp.status == 401
        async with http.post(f"{url}/log-reports", json=body, params={"clientAddress": "x"},
                             headers=HEADERS) as resp:
            assert resp.status == 400 and (await resp.json())[0]["key"] == "parameterMissing"
    assert answer[0]["key"] == "payloadError"
    assert answer[0]["references"][0]["address"]["address"] == "/entries/0/data/srcAddress"
    assert len(emit.messages) == 2  # both bad payloads, for the runtime to keep as dead letters
    for raw in emit.messages:
        with pytest.raises(TranslationError):
            adapter.to_entities(raw)


async def test_type_resources_are_kept_and_served(cms: tuple[TalqAdapter, Collector, str]) -> None:
    _, _, url = cms
    lamp_type = {"address": "9a7e6c2e-1c64-4d52-8f6e-3a1f0c0d5e01", "name": "LED 60 W", "ownerCMS": "cms"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/lamp-types", json=[lamp_type], params=_params(), headers=HEADERS) as resp:
            assert resp.status == 201
        async with http.get(f"{url}/lamp-types/{lamp_type['address']}", params=_params(), headers=HEADERS) as resp:
            assert resp.status == 200 and (await resp.json())["name"] == "LED 60 W"
        async with http.get(f"{url}/lamp-types/count", params=_params(), headers=HEADERS) as resp:
            assert await resp.json() == 1
        async with http.get(f"{url}/luminaire-types/nothing", params=_params(), headers=HEADERS) as resp:
            assert resp.status == 404


# ---------------------------------------------------------------- against the published OAS (../shared)


@needs_shared
async def test_every_request_and_answer_of_both_interfaces_follows_the_published_oas(
    cms: tuple[TalqAdapter, Collector, str],
) -> None:
    from tests.adapters.talq import oas

    adapter, _, url = cms
    assert adapter.gateway is not None
    gw = await _gateway(url, port=int(adapter.gateway.url.split(":")[2].split("/")[0]))
    problems: list[str] = []
    try:
        await asyncio.wait_for(gw.registered.wait(), 20)
        await gw.report_once()
        # the CMS side: what the simulated gateway sends, and what our CMS answers to it
        async with aiohttp.ClientSession() as http:
            for method, path, body in list(gw.sent):
                problems += [f"request {method} {path}: {e}" for e in oas.request_errors("cms", method, path, body)]
                for where, name in oas.required_parameters("cms", method, path):
                    assert (where, name) in (("header", "talq-api-version"), ("query", "clientAddress"),
                                             ("query", "talqRequestId")), (where, name)
                async with http.request(method, url + path, json=body, params=_params(gw.address),
                                        headers=HEADERS) as resp:
                    answer = await resp.json() if resp.content_type == "application/json" else None
                    problems += [f"answer {method} {path}: {e}"
                                 for e in oas.response_errors("cms", method, path, resp.status, answer)]
            for method, path, body, status in (
                ("GET", "/devices", None, None), ("GET", "/groups", None, None), ("GET", "/data-packages", None, None),
                ("POST", "/log-reports", {"entries": [{"data": {"type": "AttributeLogData", "srcAddress": "x/y",
                                                                "attributeName": "a",
                                                                "attributeValue": {"type": "AttributeFloat"}}}]}, 400),
                ("GET", f"/devices/{gw.lamps[0].address}", None, 200),
                ("GET", "/devices/8d3c6d0e-7f55-4b5e-8a0c-000000000000", None, 404),
            ):
                async with http.request(method, url + path, json=body, params=_params(gw.address),
                                        headers=HEADERS) as resp:
                    answer = await resp.json() if resp.content_type == "application/json" else None
                    assert status is None or resp.status == status
                    problems += [f"answer {method} {path}: {e}"
                                 for e in oas.response_errors("cms", method, path, resp.status, answer)]
        # the gateway side: what our client sends, and what the simulated gateway answers
        client = adapter.gateway
        assert len(await client.list_devices()) == 5 and len(await client.list_groups()) == 1
        assert await client.list_calendars() and await client.list_control_programs()
        await client.override("devices", gw.lamps[1].address, 40, ref="c-1")
        await client.override("groups", gw.group, 70)
        attribute = {"type": "AttributeCommand", "value": {"state": {"name": "LevelState", "value": 20},
                                                           "reason": "override"}}
        written = await client.write_attribute(gw.lamps[2].address, "lampActuator1", "targetLightCommand", attribute)
        assert written == 200
        assert await client.assign({"resource": "calendars", "address": address("calendar-1")},
                                   [{"resource": "groups", "address": gw.group}]) == 201
        with pytest.raises(GatewayError):
            await client.override("devices", "8d3c6d0e-7f55-4b5e-8a0c-000000000000", 10)
        for method, path, body in gw.received:
            problems += [f"client {method} {path}: {e}" for e in oas.request_errors("gateway", method, path, body)]
        for method, route, status, body in gw.answers:
            concrete = route.replace("{device}", "d").replace("{function}", "f").replace("{attribute}", "a")
            problems += [f"gateway answer {method} {route}: {e}"
                         for e in oas.response_errors("gateway", method, concrete.removeprefix("/talq"), status, body)]
        assert len(gw.received) == 5 and len(gw.answers) >= 9  # the refused override is recorded too
    finally:
        await gw.stop()
    assert not problems, problems


async def test_the_device_registry_survives_a_restart(tmp_path: Path) -> None:
    sim = create({"lamps": 3})
    params = {"clientAddress": sim.address}
    headers = {"talq-api-version": "2.7.1"}
    answers: list[int] = []
    for round_ in range(2):  # the gateway registers once, then only reports: after a restart too
        emit = Collector()
        adapter = TalqAdapter({"http": {"listen": {"host": "127.0.0.1", "port": 0}}, "state_dir": str(tmp_path)})
        task = asyncio.create_task(adapter.run(emit))
        await asyncio.wait_for(adapter.receiver.started.wait(), 10)
        try:
            async with aiohttp.ClientSession() as http:
                if round_ == 0:
                    async with http.post(f"{adapter.receiver.url}/devices", json=sim.devices(), headers=headers,
                                         params={**params, "talqRequestId": str(uuid.uuid4())}) as resp:
                        answers.append(resp.status)
                async with http.post(f"{adapter.receiver.url}/log-reports", json=sim.log_report(NIGHT),
                                     headers=headers, params={**params, "talqRequestId": str(uuid.uuid4())}) as resp:
                    answers.append(resp.status)
        finally:
            await adapter.stop()
            await asyncio.wait_for(task, 10)
        entities = adapter.to_entities(emit.messages[-1])
        kinds = sorted(e["type"] for e in entities)  # 3 lamps and their 2 counters each, the cabinet and its door
        assert kinds == ["DeviceMeasurement"] * 7 + ["Streetlight"] * 3 + ["StreetlightControlCabinet"]
        assert all(validate(e).valid for e in entities)
    assert answers == [201, 201, 201]


@needs_shared
@pytest.mark.parametrize(("fixture", "method", "path"), [
    ("devices", "POST", "/devices"), ("log_report", "POST", "/log-reports"),
    ("sensors_report", "POST", "/log-reports"),
])
def test_the_recorded_fixtures_are_valid_talq_requests(fixture: str, method: str, path: str) -> None:
    from tests.adapters.talq import oas

    body = json.loads((FIXTURES / f"{fixture}.json").read_text(encoding="utf-8"))
    assert oas.request_errors("cms", method, path, body) == []
    groups = json.loads((FIXTURES / "groups.json").read_text(encoding="utf-8"))
    assert oas.response_errors("gateway", "GET", "/groups", 200, groups) == []
