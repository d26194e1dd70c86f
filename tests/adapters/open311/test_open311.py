"""Open311 GeoReport v2: City import (JSON/XML, date windows) and the served endpoint, on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web

from adapters.open311 import Open311Adapter
from adapters.open311.georeport import parse_json, parse_requests, parse_xml, to_xml
from gateway.errors import AuthFailed, InputError
from gateway.model import RawMessage, parse_time
from gateway.validation import validate
from tests.conftest import SAMPLES, needs_shared
from tests.loopback import Loopback

PERSONAL = ("first_name", "last_name", "email", "phone", "device_id", "account_id")
EMAIL = "camille.martin@example.org"
T0 = datetime(2024, 5, 1, tzinfo=UTC)


async def wait_for(predicate: Callable[[], Any], what: str, limit: float = 30.0) -> None:
    """Poll until ``predicate`` holds (generous limit; no timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class FakeCity(Loopback):
    """A City's GeoReport v2 server: real formats, date-window filter, a cap per answer."""

    def __init__(self, requests: list[dict[str, Any]], *, api_key: str = "city-key", cap: int = 4) -> None:
        super().__init__()
        self.items = requests
        self.api_key = api_key
        self.cap = cap
        self.windows: list[tuple[str, str]] = []

    def routes(self, app: web.Application) -> None:
        """The requests and services lists, in either format."""
        app.router.add_get("/open311/v2/requests.{fmt}", self.requests)
        app.router.add_get("/open311/v2/services.{fmt}", self.services)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/open311/v2"

    def _denied(self, request: web.Request) -> web.Response | None:
        if request.query.get("api_key") != self.api_key:
            return web.json_response([{"code": 403, "description": "Invalid api_key received"}], status=403)
        return None

    async def services(self, request: web.Request) -> web.Response:
        return self._denied(request) or web.json_response([{"service_code": "001", "service_name": "Voirie"}])

    async def requests(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        start, end = request.query["start_date"], request.query["end_date"]
        self.windows.append((start, end))
        lo, hi = parse_time(start), parse_time(end)
        picked = [r for r in self.items if lo <= parse_time(r["requested_datetime"]) < hi][: self.cap]
        if request.match_info["fmt"] == "xml":
            return web.Response(body=to_xml("service_requests", "request", picked), content_type="text/xml")
        return web.json_response(picked)


def city_requests(count: int) -> list[dict[str, Any]]:
    """Requests every 4 hours from T0, each with the personal data real servers send."""
    out = []
    for n in range(count):
        moment = (T0 + timedelta(hours=4 * n)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
        out.append({
            "service_request_id": str(1000 + n), "status": "open", "service_code": "001",
            "service_name": "Nid de poule", "description": f"Trou n°{n}", "requested_datetime": moment,
            "updated_datetime": moment, "address": f"{n} avenue de la République", "zipcode": "69001",
            "lat": 45.76 + n / 1000, "long": 4.83, "email": EMAIL, "first_name": "Camille",
            "last_name": "Martin", "phone": "+33611223344", "device_id": "dev-77", "account_id": "acc-42",
        })
    return out


class Collector:
    def __init__(self) -> None:
        self.messages: list[RawMessage] = []

    async def __call__(self, raw: RawMessage) -> None:
        self.messages.append(raw)


@pytest.fixture
async def city() -> AsyncIterator[FakeCity]:
    server = FakeCity(city_requests(25))
    await server.start()
    yield server
    await server.stop()


def import_config(city: FakeCity, fmt: str = "json", **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"name": "lyon", "jurisdiction_id": "lyon.fr", "city": {
        "base_url": city.base_url, "format": fmt, "api_key": "city-key", "start": "2024-04-30T00:00:00Z",
        "window_hours": 24, "lookback_hours": 0, "interval_s": 0.05, "page_limit": 4, **extra}}
    return cfg


def fixed_clock(adapter: Open311Adapter, moment: datetime) -> None:
    adapter.clock = lambda: moment


@pytest.mark.parametrize("fmt", ["json", "xml"])
async def test_import_pages_by_date_window_without_personal_data(
    city: FakeCity, fmt: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = Open311Adapter(import_config(city, fmt))
    fixed_clock(adapter, T0 + timedelta(days=5))
    out = Collector()
    task = asyncio.create_task(adapter.run(out))
    await wait_for(lambda: len(out.messages) >= 25, "the 25 requests")
    await asyncio.sleep(0.2)  # a few more passes: they must add nothing
    await adapter.stop()
    await asyncio.wait_for(task, 10)
    ids = [json.loads(m.payload)["request"]["service_request_id"] for m in out.messages]
    assert sorted(ids) == sorted(str(1000 + n) for n in range(25)), "each request once, none missing"
    assert len({m.idempotency_key for m in out.messages}) == 25
    # Six requests per day and a cap of four: every day was split into smaller windows.
    assert any(parse_time(e) - parse_time(s) < timedelta(hours=24) for s, e in city.windows)
    for raw in out.messages:
        assert EMAIL.encode() not in raw.payload and b"Camille" not in raw.payload
        (item,) = adapter.to_entities(raw)
        assert validate(item).valid, validate(item).errors
        assert not set(PERSONAL) & set(item)
        assert EMAIL not in json.dumps(item)
    assert EMAIL not in caplog.text and "+33611223344" not in caplog.text, "personal data never logged"
    first = adapter.to_entities(next(m for m in out.messages if b'"1000"' in m.payload))[0]
    assert first["id"] == "urn:ngsi-ld:service_requests:lyon.fr:1000"
    assert first["requested_datetime"]["value"] == "2024-04-30T22:00:00Z"
    assert first["location"]["value"]["coordinates"] == [4.83, 45.76]


async def test_lookback_sees_status_changes_once(city: FakeCity) -> None:
    adapter = Open311Adapter(import_config(city, lookback_hours=240))
    now = T0 + timedelta(days=5)
    fixed_clock(adapter, now)
    out = Collector()
    task = asyncio.create_task(adapter.run(out))
    await wait_for(lambda: len(out.messages) >= 25, "the first import")
    city.items[3] = dict(city.items[3], status="closed", updated_datetime="2024-05-04T10:00:00Z")
    await wait_for(lambda: len(out.messages) >= 26, "the closed request")
    await asyncio.sleep(0.2)
    await adapter.stop()
    await asyncio.wait_for(task, 10)
    assert len(out.messages) == 26, "re-reading the lookback emits only what changed"
    (closed,) = adapter.to_entities(out.messages[-1])
    assert closed["status"]["value"] == "closed" and closed["service_request_id"]["value"] == "1003"


async def test_wrong_city_key_is_an_auth_failure_logged_once(
    city: FakeCity, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = import_config(city)
    cfg["city"]["api_key"] = "wrong"
    adapter = Open311Adapter(cfg)
    with pytest.raises(AuthFailed):
        await adapter.check()
    caplog.set_level(logging.INFO, logger="jonction.adapters.open311")
    out = Collector()
    task = asyncio.create_task(adapter.run(out))
    await wait_for(lambda: any(r.getMessage() == "unavailable" for r in caplog.records), "the failure")
    cfg["city"]["api_key"] = "city-key"  # the operator fixes the key: the import resumes
    await wait_for(lambda: len(out.messages) >= 25, "the import after the fix", limit=60)
    await adapter.stop()
    await asyncio.wait_for(task, 10)
    messages = [r.getMessage() for r in caplog.records if r.name == "jonction.adapters.open311"]
    assert messages.count("unavailable") == 1 and messages.count("recovered") == 1
    assert "wrong" not in caplog.text


def test_codes_written_with_leading_zeros_stay_text() -> None:
    """GeoReport v2 servers (and the spec's own examples) write bare numbers such as 006: not JSON, read as text."""
    body = (b'[{"service_request_id":638344,"status":"open","service_code":006,"service_name":"Graffiti",'
            b'"requested_datetime":"2025-03-01T08:00:00+01:00","lat":45.7573,"long":4.8475},'
            b'{"service_request_id":638345,"status":"closed","service_code":010,"lat":45.76,"long":4.85}]')
    with pytest.raises(ValueError):
        json.loads(body)
    requests = parse_requests(body, "application/json")
    assert [r["service_code"] for r in requests] == ["006", "010"]
    assert requests[0]["service_request_id"] == 638344 and requests[1]["status"] == "closed"
    services = parse_json(b'[{"service_code":001,"service_name":"Voirie","group":"voirie"}]')
    assert [s["service_code"] for s in services] == ["001"]


def test_xml_services_parse() -> None:
    body = (b'<?xml version="1.0" encoding="utf-8"?><services>'
            b'<service><service_code>001</service_code><service_name>D\xc3\xa9p\xc3\xb4t sauvage</service_name>'
            b'<metadata>false</metadata><type>realtime</type><group>proprete</group></service>'
            b'<service><service_code>002</service_code><service_name>Lampadaire</service_name>'
            b'<metadata>true</metadata><type>batch</type><group>eclairage</group></service></services>')
    services = parse_xml(body, "service")
    assert [s["service_code"] for s in services] == ["001", "002"]
    assert services[0]["group"] == "proprete" and services[0]["service_name"] == "Dépôt sauvage"


@needs_shared
def test_upstream_examples_with_leading_zeros_are_a_known_defect() -> None:
    body = (SAMPLES / "open311_georeport_v2" / "GET_requests_response.json").read_bytes()
    with pytest.raises(ValueError):
        json.loads(body)  # "service_code":006 is not JSON: the spec's own example
    requests = parse_requests(body, "application/json")
    assert [r["service_code"] for r in requests] == ["006", "006"]
    assert requests[0]["service_request_id"] == 638344
    services = parse_json((SAMPLES / "open311_georeport_v2" / "GET_services_response.json").read_bytes())
    assert [s["service_code"] for s in services] == ["001", "002", "003"]


@needs_shared
def test_upstream_xml_services_parse() -> None:
    body = (SAMPLES / "open311_georeport_v2" / "GET_services_response.xml").read_bytes()
    services = parse_xml(body, "service")
    assert [s["service_code"] for s in services] == ["001", "002", "003"]
    assert services[0]["group"] == "sanitation"


def test_xml_with_entities_is_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><service_requests></service_requests>'
    with pytest.raises(InputError, match="DOCTYPE"):
        parse_requests(bomb, "text/xml")
    with pytest.raises(InputError, match="malformed"):
        parse_requests(b"<service_requests><request>", "text/xml")
    with pytest.raises(InputError, match="list"):
        parse_requests(b'{"error": "x"}', "application/json")


# --------------------------------------------------------------------------- the endpoint

ENDPOINT: dict[str, Any] = {
    "name": "signalements", "jurisdiction_id": "city.gov",
    "listen": {"host": "127.0.0.1", "port": 0, "api_keys": ["xyz", "other-app"], "max_body_bytes": 4096,
               "service_notice": "Merci.", "services": [
                   {"service_code": "001", "service_name": "Cans left out 24x7", "group": "sanitation"},
                   {"service_code": "002", "service_name": "Streetlight", "attributes": [
                       {"code": "POLE", "datatype": "string", "required": True, "order": 1,
                        "description": "Pole number"}]}]},
}


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[Open311Adapter, Collector, str]]:
    adapter = Open311Adapter(ENDPOINT)
    out = Collector()
    task = asyncio.create_task(adapter.run(out))
    await wait_for(lambda: adapter.port is not None, "the endpoint")
    yield adapter, out, f"http://127.0.0.1:{adapter.port}/open311/v2"
    await adapter.stop()
    await asyncio.wait_for(task, 10)
    await adapter.stop()


FORM = {"api_key": "xyz", "jurisdiction_id": "city.gov", "service_code": "001", "lat": "37.76524078",
        "long": "-122.4212043", "address_string": "1234 5th street", "email": EMAIL, "device_id": "tt222111",
        "account_id": "123456", "first_name": "john", "last_name": "smith", "phone": "111111111",
        "description": "A large sinkhole is destroying the street"}


async def test_services_in_json_and_xml(endpoint: tuple[Open311Adapter, Collector, str]) -> None:
    _, _, base = endpoint
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/services.json") as resp:
            services = await resp.json()
        assert [s["service_code"] for s in services] == ["001", "002"]
        assert services[1]["metadata"] is True
        async with http.get(f"{base}/services.xml") as resp:
            root = ET.fromstring(await resp.read())
        assert [e.text for e in root.iter("service_code")] == ["001", "002"]
        async with http.get(f"{base}/services/002.json") as resp:
            definition = await resp.json()
        assert definition["attributes"][0]["code"] == "POLE"
        async with http.get(f"{base}/services/002.xml") as resp:
            definition_xml = ET.fromstring(await resp.read())
        assert definition_xml.tag == "service_definition"
        assert definition_xml.find("attributes/attribute/code").text == "POLE"  # type: ignore[union-attr]
        async with http.get(f"{base}/services/999.json") as resp:
            assert resp.status == 404


async def test_post_requires_an_api_key(endpoint: tuple[Open311Adapter, Collector, str]) -> None:
    _, out, base = endpoint
    async with aiohttp.ClientSession() as http:
        without = {k: v for k, v in FORM.items() if k != "api_key"}
        async with http.post(f"{base}/requests.json", data=without) as resp:
            assert resp.status == 401
            assert "api_key is required" in (await resp.json())[0]["description"]
        async with http.post(f"{base}/requests.json", data=dict(FORM, api_key="nope")) as resp:
            assert resp.status == 403
            assert "Invalid api_key" in (await resp.json())[0]["description"]
        async with http.post(f"{base}/requests.xml", data=dict(FORM, api_key="nope")) as resp:
            assert resp.status == 403
            assert ET.fromstring(await resp.read()).find("error/code").text == "403"  # type: ignore[union-attr]
    assert out.messages == []


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"service_code": ""}, 400, "service_code is required"),
        ({"service_code": "404"}, 404, "not found"),
        ({"lat": "", "long": "", "address_string": ""}, 400, "location is required"),
        ({"lat": "north"}, 400, "decimal degrees"),
        ({"lat": "95"}, 400, "within"),
        ({"jurisdiction_id": "elsewhere.gov"}, 404, "jurisdiction_id"),
        ({"service_code": "002"}, 400, "POLE"),
        ({"description": "x" * 5000}, 413, "over"),
    ],
)
async def test_bad_posts_are_refused_clearly(
    endpoint: tuple[Open311Adapter, Collector, str], change: dict[str, str], status: int, words: str
) -> None:
    _, out, base = endpoint
    async with aiohttp.ClientSession() as http, http.post(f"{base}/requests.json", data=dict(FORM, **change)) as resp:
        assert resp.status == status
        assert words in (await resp.json())[0]["description"]
    assert out.messages == []


OWN_REPORT = urlencode({**FORM, "email": "smit333@sfgov.edu",
                        "media_url": "https://photos.ville.example/nid-de-poule.jpg",
                        "attribute[WHISPAWN]": "123456", "attribute[WHISDORN]": "COISL001"})
"""A citizen app's report in the GeoReport v2 POST parameters, written by us (same personal data as the spec's)."""


@pytest.mark.parametrize("source", ["own", pytest.param("upstream", marks=needs_shared)])
async def test_a_citizen_report_becomes_an_entity_without_personal_data(
    endpoint: tuple[Open311Adapter, Collector, str], caplog: pytest.LogCaptureFixture, source: str
) -> None:
    adapter, out, base = endpoint
    caplog.set_level(logging.DEBUG)
    body = OWN_REPORT
    if source == "upstream":
        # The spec's own POST example, as a citizen app would send it.
        example = (SAMPLES / "open311_georeport_v2" / "POST_requests_example_request.txt").read_text()
        body = example.strip().splitlines()[-1]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/requests.json", data=body.encode(),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
            assert resp.status == 200
            (created,) = await resp.json()
        request_id = created["service_request_id"]
        assert created["service_notice"] == "Merci." and created["account_id"] is None
        async with http.get(f"{base}/requests/{request_id}.json") as resp:
            (listed,) = await resp.json()
        async with http.get(f"{base}/requests.xml", params={"status": "open"}) as resp:
            xml_body = await resp.read()
        async with http.get(f"{base}/requests.json", params={"service_request_id": request_id}) as resp:
            assert [r["service_request_id"] for r in await resp.json()] == [request_id]
        async with http.get(f"{base}/requests/unknown.json") as resp:
            assert resp.status == 404
    assert listed["service_code"] == "001" and listed["lat"] == 37.76524078
    assert ET.fromstring(xml_body).find("request/service_request_id").text == request_id  # type: ignore[union-attr]
    (raw,) = out.messages
    (item,) = adapter.to_entities(raw)
    assert validate(item).valid, validate(item).errors
    assert item["location"]["value"]["coordinates"] == [-122.4212043, 37.76524078]
    assert item["attributes"]["value"] == [{"code": "WHISDORN", "values": [{"name": "COISL001"}]},
                                           {"code": "WHISPAWN", "values": [{"name": "123456"}]}]
    everything = raw.payload.decode() + json.dumps(item) + json.dumps(listed) + xml_body.decode() + caplog.text
    for secret in ("smit333", "sfgov.edu", "tt222111", "smith", "111111111"):
        assert secret not in everything, f"personal data {secret!r} leaked"


async def test_a_report_is_not_acknowledged_if_it_cannot_be_stored() -> None:
    adapter = Open311Adapter(ENDPOINT)

    async def failing(raw: RawMessage) -> None:
        raise OSError("disk full")

    task = asyncio.create_task(adapter.run(failing))
    await wait_for(lambda: adapter.port is not None, "the endpoint")
    try:
        async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{adapter.port}/open311/v2/requests.json", data=FORM
        ) as resp:
            assert resp.status == 503
        assert not adapter.requests
    finally:
        await adapter.stop()
        await asyncio.wait_for(task, 10)


async def test_search_rejects_windows_over_ninety_days(endpoint: tuple[Open311Adapter, Collector, str]) -> None:
    _, _, base = endpoint
    params = {"start_date": "2024-01-01T00:00:00Z", "end_date": "2024-06-01T00:00:00Z"}
    async with aiohttp.ClientSession() as http, http.get(f"{base}/requests.json", params=params) as resp:
        assert resp.status == 400
        assert "90 days" in (await resp.json())[0]["description"]


async def test_the_import_cursor_survives_a_restart(city: FakeCity, tmp_path: Any) -> None:
    cfg = import_config(city)
    cfg["state_dir"] = str(tmp_path / "state")
    first = Open311Adapter(cfg)
    fixed_clock(first, T0 + timedelta(days=5))
    out = Collector()
    task = asyncio.create_task(first.run(out))
    await wait_for(lambda: len(out.messages) >= 25 and (tmp_path / "state" / "open311-cursor.json").exists(),
                   "the first import and its cursor")
    await first.stop()
    await asyncio.wait_for(task, 10)
    windows_before = len(city.windows)
    second = Open311Adapter(cfg)
    fixed_clock(second, T0 + timedelta(days=5, hours=1))
    task = asyncio.create_task(second.run(out))
    await wait_for(lambda: len(city.windows) > windows_before, "a pass of the restarted adapter")
    await second.stop()
    await asyncio.wait_for(task, 10)
    later = city.windows[windows_before:]
    assert all(parse_time(start) >= T0 + timedelta(days=5) for start, _ in later), "no re-import from the start"


async def test_received_requests_are_listed_after_a_restart(tmp_path: Any) -> None:
    cfg = dict(ENDPOINT, state_dir=str(tmp_path / "state"))
    ids = []
    for _ in range(2):
        adapter = Open311Adapter(cfg)
        task = asyncio.create_task(adapter.run(Collector()))
        await wait_for(lambda a=adapter: a.port is not None, "the endpoint")  # type: ignore[misc]  # binds this loop's adapter
        base = f"http://127.0.0.1:{adapter.port}/open311/v2"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/requests.json", data=FORM) as resp:
                ids.append((await resp.json())[0]["service_request_id"])
            async with http.get(f"{base}/requests.json", params={"service_request_id": ",".join(ids)}) as resp:
                listed = [r["service_request_id"] for r in await resp.json()]
        await adapter.stop()
        await asyncio.wait_for(task, 10)
        assert listed == ids, "requests received before the restart are still listed"
    saved = (tmp_path / "state" / "open311-requests.jsonl").read_text()
    assert EMAIL not in saved and "smith" not in saved


async def test_posts_are_rate_limited_per_api_key() -> None:
    cfg = {**ENDPOINT, "listen": {**ENDPOINT["listen"], "max_posts_per_minute": 1, "max_posts_burst": 3}}
    adapter = Open311Adapter(cfg)
    out = Collector()
    task = asyncio.create_task(adapter.run(out))
    await asyncio.wait_for(adapter.ready.wait(), 10)
    url = f"http://127.0.0.1:{adapter.port}/open311/v2/requests.json"
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(5):
                async with http.post(url, data=FORM) as resp:
                    statuses.append(resp.status)
                    retry_after = resp.headers.get("Retry-After")
            async with http.post(url, data=dict(FORM, api_key="other-app")) as resp:
                other = resp.status
    finally:
        await adapter.stop()
        await asyncio.wait_for(task, 10)
    assert statuses == [200, 200, 200, 429, 429] and retry_after == "60"
    assert other == 200, "each app has its own allowance"
    assert len(out.messages) == 4


def test_only_web_media_links_are_kept() -> None:
    from adapters.open311.translate import to_entities

    doc = {"jurisdiction_id": "x", "request": {"service_request_id": "1", "media_url": "javascript:alert(1)"}}
    raw = RawMessage(source="t", tenant="", received_at="2024-01-01T00:00:00Z",
                     payload=json.dumps(doc).encode(), idempotency_key="k")
    assert "media_url" not in to_entities(raw)[0]
