"""The iot_agent adapter through the real runtime: provisioning over HTTP, measures, the embedded store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from adapters.iot_agent import IotAgentAdapter
from gateway.runtime.config import GatewayConfig
from gateway.runtime.state import RUNTIME
from gateway.validation import validate
from tests.conftest import free_port
from tests.runtime.support import config, eventually, running

APIKEY = "4jggokgpepnvsb2uv4s40d59ov"
FIWARE = {"fiware-service": "openiot", "fiware-servicepath": "/", "Content-Type": "application/json"}
AIR_GROUP = {
    "apikey": APIKEY,
    "cbroker": "http://orion:1026",
    "resource": "/iot/json",
    "entity_type": "AirQualityObserved",
    "attributes": [
        {"object_id": "t", "name": "temperature", "type": "Number",
         "metadata": {"unitCode": {"type": "Text", "value": "CEL"}}},
        {"object_id": "no2", "name": "no2", "type": "Number"},
    ],
    "static_attributes": [
        {"name": "location", "type": "geo:json", "value": {"type": "Point", "coordinates": [4.8357, 45.764]}},
    ],
}


class Gateway:
    """A running gateway with one iot_agent source (the issue's configuration contract)."""

    def __init__(self, app: Any, north: int, south: int) -> None:
        self.app = app
        self.north = f"http://127.0.0.1:{north}"
        self.south = f"http://127.0.0.1:{south}"

    @property
    def adapter(self) -> IotAgentAdapter:
        adapter: IotAgentAdapter = self.app[RUNTIME].sources["iota"].adapter
        return adapter

    async def entity(self, tenant: str, entity_id: str) -> dict[str, Any]:
        store = self.app[RUNTIME].embedded_store
        found: dict[str, Any] = await eventually(lambda: store.get(tenant, entity_id), what=f"{entity_id} stored")
        return found

    def dead_letters(self) -> list[Any]:
        return list(self.app[RUNTIME].deadletters.list(source="iota", limit=100))


def iota_config(tmp: Path, north: int, south: int, **extra: Any) -> GatewayConfig:
    source = {"name": "iota", "adapter": "iot_agent",
              "config": {"north": {"host": "127.0.0.1", "port": north},
                         "http": {"host": "127.0.0.1", "port": south, "max_body_bytes": 4096}, **extra}}
    return config(tmp, sources=[source])


@asynccontextmanager
async def gateway(tmp: Path, north: int | None = None, south: int | None = None,
                  **extra: Any) -> AsyncIterator[Gateway]:
    north = north or free_port()
    south = south or free_port()
    async with running(iota_config(tmp, north, south, **extra), adapters={"iot_agent": IotAgentAdapter}) as (_, app):
        gw = Gateway(app, north, south)
        await eventually(lambda: app[RUNTIME].sources["iota"].status.state == "running", what="source running")
        await eventually(lambda: gw.adapter.ready.is_set(), what="listeners bound")
        yield gw


async def test_the_issue_example_gives_an_air_quality_entity_in_tenant_openiot(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]}, headers=FIWARE) as r:
            assert r.status == 201, await r.text()
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=aq-lyon-01", json={"t": 21.5, "no2": 30}) as r:
            assert r.status == 200, await r.text()
        entity = await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:aq-lyon-01")
        assert entity["type"] == "AirQualityObserved"
        assert entity["temperature"]["value"] == 21.5 and entity["temperature"]["unitCode"] == "CEL"
        assert entity["no2"]["value"] == 30
        assert entity["location"]["value"] == {"type": "Point", "coordinates": [4.8357, 45.764]}
        assert entity["dateObserved"]["value"] == entity["temperature"]["observedAt"]
        assert validate(entity).valid
        # Nothing went to the default tenant: the service is the tenant.
        assert await gw.app[RUNTIME].embedded_store.get("", "urn:ngsi-ld:AirQualityObserved:aq-lyon-01") is None


async def test_provisioning_survives_a_restart_and_measures_still_map(tmp_path: Path) -> None:
    north, south = free_port(), free_port()
    device = {"device_id": "aq7", "entity_name": "urn:ngsi-ld:AirQualityObserved:gerland", "attributes": [
        {"object_id": "h", "name": "relativeHumidity", "type": "Number", "expression": "h / 100"}]}
    async with gateway(tmp_path, north, south) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.north}/iot/devices", json={"devices": [device]}, headers=FIWARE) as r:
            assert r.status == 201, await r.text()
    async with gateway(tmp_path, north, south) as gw, aiohttp.ClientSession() as http:
        async with http.get(f"{gw.north}/iot/services", headers=FIWARE) as r:
            listed = await r.json()
        assert listed["count"] == 1 and listed["services"][0]["apikey"] == APIKEY
        assert listed["services"][0]["cbroker"] == "http://orion:1026"  # kept as sent
        async with http.get(f"{gw.north}/iot/devices/aq7", headers=FIWARE) as r:
            assert r.status == 200 and (await r.json())["entity_name"] == "urn:ngsi-ld:AirQualityObserved:gerland"
        async with http.post(f"{gw.south}/iot/d?k={APIKEY}&i=aq7&t=2024-05-14T06:00:00Z", data="t|19|h|40",
                             headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 200
        entity = await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:gerland")
        assert entity["temperature"]["value"] == 19
        assert entity["relativeHumidity"]["value"] == 0.4
        assert entity["temperature"]["observedAt"] == "2024-05-14T06:00:00Z"


async def test_unknown_apikey_and_device_answer_as_the_iot_agents(tmp_path: Path) -> None:
    group = {**AIR_GROUP, "autoprovision": False}
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.north}/iot/services", json={"services": [group]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.south}/iot/json?k=nope&i=d1", json={"t": 1}) as r:
            assert r.status == 404
            body = await r.json()
            assert body["name"] == "DEVICE_GROUP_NOT_FOUND" and "nope" in body["message"]
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=stranger", json={"t": 1}) as r:
            assert r.status == 404 and (await r.json())["name"] == "DEVICE_NOT_FOUND"
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=stranger&t=yesterday", json={"t": 1}) as r:
            assert r.status == 400 and (await r.json())["name"] == "BAD_TIMESTAMP"
        async with http.post(f"{gw.south}/iot/json?i=d1", json={"t": 1}) as r:
            assert r.status == 400 and (await r.json())["name"] == "MANDATORY_PARAMS_NOT_FOUND"
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=stranger", data=b"x" * 5000,
                             headers={"Content-Type": "application/json"}) as r:
            assert r.status == 413
        # Once provisioned, the same device is accepted.
        async with http.post(f"{gw.north}/iot/devices", json={"devices": [{"device_id": "stranger"}]},
                             headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=stranger", json={"t": 2, "no2": 3}) as r:
            assert r.status == 200
        entity = await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:stranger")
        assert entity["temperature"]["value"] == 2
        # Nothing refused was stored, not even as a dead letter.
        assert gw.dead_letters() == []


async def test_autoprovision_creates_the_device_and_lists_it(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=new01", json={"t": 5, "no2": 1}) as r:
            assert r.status == 200
        async with http.get(f"{gw.north}/iot/devices", headers=FIWARE) as r:
            devices = (await r.json())["devices"]
        assert [d["device_id"] for d in devices] == ["new01"]
        assert (await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:new01"))["no2"]["value"] == 1


async def test_autoprovision_off_in_the_source_config(tmp_path: Path) -> None:
    async with gateway(tmp_path, autoprovision=False) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=new01", json={"t": 5}) as r:
            assert r.status == 404 and (await r.json())["name"] == "DEVICE_NOT_FOUND"
        # A group may still say otherwise.
        async with http.put(f"{gw.north}/iot/services?resource=/iot/json&apikey={APIKEY}",
                            json={"autoprovision": True}, headers=FIWARE) as r:
            assert r.status == 204
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=new01", json={"t": 5, "no2": 2}) as r:
            assert r.status == 200


async def test_malformed_ultralight_is_refused_and_kept_as_a_dead_letter(tmp_path: Path) -> None:
    ul_group = {**AIR_GROUP, "resource": "/iot/d"}
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.north}/iot/services", json={"services": [ul_group]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.south}/iot/d?k={APIKEY}&i=ul1", data="t|21.5|no2",
                             headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 400
            assert (await r.json())["name"] == "PARSE_ERROR"
        letters = await eventually(gw.dead_letters, what="the dead letter")
        assert letters[0].stage == "translation" and "no value" in letters[0].reason
        # Several groups, escaped values: each group is an observation.
        async with http.post(f"{gw.south}/iot/d?k={APIKEY}&i=ul1",
                             data="t|21.5|no2|30|name|Gerland%20%7C%20Sud#2024-05-14T06:10:00Z|t|22|no2|31",
                             headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 200
        entity = await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:ul1")
        assert entity["name"]["value"] == "Gerland | Sud"


async def test_get_measure_and_polling_commands(tmp_path: Path) -> None:
    ul_group = {**AIR_GROUP, "resource": "/iot/d"}
    bell = {"device_id": "bell001", "entity_name": "urn:ngsi-ld:Bell:001", "entity_type": "Bell",
            "protocol": "PDI-IoTA-UltraLight", "transport": "HTTP", "commands": [{"name": "ring", "type": "command"}]}
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.north}/iot/services", json={"services": [ul_group]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.north}/iot/devices", json={"devices": [bell]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.get(f"{gw.south}/iot/d?k={APIKEY}&i=gm1&d=t|3|no2|4") as r:
            assert r.status == 200
        assert (await gw.entity("openiot", "urn:ngsi-ld:AirQualityObserved:gm1"))["temperature"]["value"] == 3
        update = {"actionType": "update", "entities": [{"id": "urn:ngsi-ld:Bell:001", "type": "Bell",
                                                        "ring": {"type": "command", "value": ""}}]}
        async with http.post(f"{gw.north}/v2/op/update", json=update, headers=FIWARE) as r:
            assert r.status == 204, await r.text()
        bell_entity = await gw.entity("openiot", "urn:ngsi-ld:Bell:001")
        assert bell_entity["ring_status"]["value"] == "PENDING"
        async with http.get(f"{gw.south}/iot/d?k={APIKEY}&i=bell001&getCmd=1") as r:
            assert r.status == 200 and await r.text() == "bell001@ring|"
        async with http.get(f"{gw.south}/iot/d?k={APIKEY}&i=bell001&getCmd=1") as r:
            assert await r.text() == ""  # delivered once
        async with http.post(f"{gw.south}/iot/d/commands?k={APIKEY}&i=bell001", data="bell001@ring|rung",
                             headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 200

        async def rung() -> bool:
            found = await gw.app[RUNTIME].embedded_store.get("openiot", "urn:ngsi-ld:Bell:001")
            return bool(found and found["ring_status"]["value"] == "OK" and found["ring_info"]["value"] == "rung")

        await eventually(rung, what="the command result")
        # An undeclared command is refused as the IoT Agents do.
        bad = {"actionType": "update", "entities": [{"id": "urn:ngsi-ld:Bell:001", "type": "Bell",
                                                     "explode": {"type": "command", "value": ""}}]}
        async with http.post(f"{gw.north}/v2/op/update", json=bad, headers=FIWARE) as r:
            assert r.status == 400 and (await r.json())["name"] == "COMMAND_NOT_FOUND"


async def test_provisioning_errors_and_headers(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]},
                             headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and (await r.json())["name"] == "MISSING_HEADERS"
        async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]}, headers=FIWARE) as r:
            assert r.status == 409 and (await r.json())["name"] == "DUPLICATE_GROUP"
        bad_expression = {"devices": [{"device_id": "x", "attributes": [
            {"object_id": "a", "name": "b", "type": "Number", "expression": "a * (2"}]}]}
        async with http.post(f"{gw.north}/iot/devices", json=bad_expression, headers=FIWARE) as r:
            assert r.status == 400 and (await r.json())["name"] == "INVALID_EXPRESSION"
        async with http.post(f"{gw.north}/iot/devices", json={"devices": [{"entity_name": "x"}]},
                             headers=FIWARE) as r:
            assert r.status == 400 and (await r.json())["name"] == "WRONG_SYNTAX"
        async with http.get(f"{gw.north}/iot/devices/ghost", headers=FIWARE) as r:
            assert r.status == 404 and (await r.json())["name"] == "DEVICE_NOT_FOUND"
        async with http.delete(f"{gw.north}/iot/services?resource=/iot/json&apikey=other", headers=FIWARE) as r:
            assert r.status == 404 and (await r.json())["name"] == "DEVICE_GROUP_NOT_FOUND"
        # Another service does not see openiot's groups.
        async with http.get(f"{gw.north}/iot/services",
                            headers={"fiware-service": "smartgondor", "fiware-servicepath": "/"}) as r:
            assert (await r.json()) == {"count": 0, "services": []}
        # A form post from a web page is refused.
        async with http.post(f"{gw.north}/iot/services", data="services=x",
                             headers={**FIWARE, "Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 403
        async with http.get(f"{gw.north}/iot/about") as r:
            assert r.status == 200 and "libVersion" in await r.json()


async def test_north_token_is_required_when_configured(tmp_path: Path) -> None:
    token_file = tmp_path / "north-token"
    token_file.write_text("s3cret-north-token\n")
    north, south = free_port(), free_port()
    extra_north = {"host": "127.0.0.1", "port": north, "token_file": str(token_file)}
    source = {"name": "iota", "adapter": "iot_agent",
              "config": {"north": extra_north, "http": {"host": "127.0.0.1", "port": south}}}
    async with running(config(tmp_path, sources=[source]), adapters={"iot_agent": IotAgentAdapter}) as (_, app):
        adapter: IotAgentAdapter = await eventually(lambda: app[RUNTIME].sources["iota"].adapter, what="adapter")
        await eventually(lambda: adapter.ready.is_set(), what="listeners bound")
        url = f"http://127.0.0.1:{north}/iot/services"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers=FIWARE) as r:
                assert r.status == 401
            async with http.get(url, headers={**FIWARE, "Authorization": "Bearer s3cret-north-token"}) as r:
                assert r.status == 200
            async with http.get(url, headers={**FIWARE, "X-Auth-Token": "s3cret-north-token"}) as r:
                assert r.status == 200


async def test_a_public_north_without_token_is_refused() -> None:
    adapter = IotAgentAdapter({"north": {"host": "0.0.0.0", "port": 0}})
    try:
        await adapter.check()
    except Exception as exc:  # ConfigInvalid names the missing setting
        assert "/north/token" in json.dumps(getattr(exc, "problems", [])) or "token" in str(exc)
    else:
        raise AssertionError("a provisioning API open to the network without a token was accepted")


async def test_a_command_to_an_http_device_endpoint(tmp_path: Path) -> None:
    from aiohttp import web

    received: list[tuple[dict[str, str], Any]] = []

    async def device_endpoint(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.json()))
        return web.json_response({"ring": "rung twice"})

    app = web.Application()
    app.router.add_post("/iot/bell002", device_endpoint)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    endpoint_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", endpoint_port).start()
    bell = {"device_id": "bell002", "entity_name": "urn:ngsi-ld:Bell:002", "entity_type": "Bell",
            "protocol": "IoTA-JSON", "transport": "HTTP", "endpoint": f"http://127.0.0.1:{endpoint_port}/iot/bell002",
            "commands": [{"name": "ring", "type": "command"}]}
    try:
        async with gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
            async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]}, headers=FIWARE) as r:
                assert r.status == 201
            async with http.post(f"{gw.north}/iot/devices", json={"devices": [bell]}, headers=FIWARE) as r:
                assert r.status == 201
            update = {"actionType": "update", "entities": [{"id": "urn:ngsi-ld:Bell:002", "type": "Bell",
                                                            "ring": {"type": "command", "value": 2}}]}
            async with http.post(f"{gw.north}/v2/op/update", json=update, headers=FIWARE) as r:
                assert r.status == 204, await r.text()
            headers, body = received[0]
            assert body == {"ring": 2}
            assert headers["fiware-service"] == "openiot" and headers["fiware-servicepath"] == "/"
            store = gw.app[RUNTIME].embedded_store

            async def answered() -> Any:
                found = await store.get("openiot", "urn:ngsi-ld:Bell:002")
                return found if found and found["ring_status"]["value"] == "OK" else None

            done = await eventually(answered, what="the command's result")
            assert done["ring_info"]["value"] == "rung twice"
    finally:
        await runner.cleanup()


async def test_update_and_delete_a_group_with_its_devices(tmp_path: Path) -> None:
    async with gateway(tmp_path) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.north}/iot/services", json={"services": [AIR_GROUP]}, headers=FIWARE) as r:
            assert r.status == 201
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=auto1", json={"t": 1, "no2": 2}) as r:
            assert r.status == 200
        async with http.put(f"{gw.north}/iot/services?resource=/iot/json&apikey={APIKEY}",
                            json={"entity_type": "IndoorEnvironmentObserved"}, headers=FIWARE) as r:
            assert r.status == 204
        async with http.get(f"{gw.north}/iot/services?apikey={APIKEY}", headers=FIWARE) as r:
            assert (await r.json())["services"][0]["entity_type"] == "IndoorEnvironmentObserved"
        async with http.delete(f"{gw.north}/iot/services?resource=/iot/json&apikey={APIKEY}&device=true",
                               headers=FIWARE) as r:
            assert r.status == 204
        async with http.get(f"{gw.north}/iot/devices", headers=FIWARE) as r:
            assert (await r.json())["count"] == 0
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=auto1", json={"t": 1}) as r:
            assert r.status == 404 and (await r.json())["name"] == "DEVICE_GROUP_NOT_FOUND"


async def test_groups_declared_in_the_yaml_serve_and_are_read_only(tmp_path: Path) -> None:
    declared = {**AIR_GROUP, "service": "lyon", "subservice": "/air"}
    headers = {"fiware-service": "lyon", "fiware-servicepath": "/air", "Content-Type": "application/json"}
    async with gateway(tmp_path, services=[declared]) as gw, aiohttp.ClientSession() as http:
        async with http.post(f"{gw.south}/iot/json?k={APIKEY}&i=yaml1", json={"t": 8, "no2": 9}) as r:
            assert r.status == 200
        assert (await gw.entity("lyon", "urn:ngsi-ld:AirQualityObserved:yaml1"))["no2"]["value"] == 9
        async with http.get(f"{gw.north}/iot/services", headers=headers) as r:
            assert (await r.json())["count"] == 1
        async with http.put(f"{gw.north}/iot/services?resource=/iot/json&apikey={APIKEY}",
                            json={"entity_type": "Thing"}, headers=headers) as r:
            assert r.status == 409 and (await r.json())["name"] == "CONFIGURED_IN_GATEWAY"
