"""Open311 through the real gateway: endpoint, pipeline, validation, embedded store, no personal data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from gateway.contract import discover
from tests.conftest import free_port
from tests.runtime.support import config, eventually, running

LINK = '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; ' \
       'type="application/ld+json"'
EMAIL = "smit333@sfgov.edu"


async def entities(base: str, entity_type: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(
        f"{base}/ngsi-ld/v1/entities", params={"type": entity_type, "limit": "100"}, headers={"Link": LINK}
    ) as resp:
        return list(await resp.json()) if resp.status == 200 else []


async def test_citizen_reports_reach_the_store_without_personal_data(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(tmp_path, sources=[{"name": "signalements", "adapter": "open311", "tenant": "", "config": {
        "jurisdiction_id": "city.gov",
        "listen": {"host": "127.0.0.1", "port": port, "api_keys": "xyz",
                   "services": [{"service_code": "001", "service_name": "Cans left out 24x7"}]}}}])
    form = {"api_key": "xyz", "jurisdiction_id": "city.gov", "service_code": "001", "lat": "37.76524078",
            "long": "-122.4212043", "email": EMAIL, "first_name": "john", "last_name": "smith",
            "phone": "111111111", "device_id": "tt222111", "account_id": "123456",
            "description": "A large sinkhole is destroying the street"}
    async with running(cfg, adapters=discover()) as (base, _app):
        async def posted() -> Any:
            try:
                async with aiohttp.ClientSession() as http, http.post(
                    f"http://127.0.0.1:{port}/open311/v2/requests.json", data=form
                ) as resp:
                    return (await resp.json())[0]["service_request_id"] if resp.status == 200 else None
            except aiohttp.ClientError:
                return None

        request_id = await eventually(posted, what="the endpoint to accept a report")
        stored = await eventually(lambda: entities(base, "service_requests"), what="the entity in the store")
    (item,) = stored
    assert item["id"] == f"urn:ngsi-ld:service_requests:city.gov:{request_id}"
    assert item["status"]["value"] == "open"
    text = str(stored)
    for personal in (EMAIL, "smith", "111111111", "tt222111", "123456"):
        assert personal not in text, f"{personal!r} reached the store"
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert EMAIL.encode() not in path.read_bytes(), f"{EMAIL} written to {path.name}"
