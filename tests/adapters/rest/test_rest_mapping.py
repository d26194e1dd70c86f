"""The REST mapping poller against real loopback servers: auth, pagination, throttling, watermark."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from adapters.kit.simulators.streetlighting import create as create_simulator
from adapters.rest_mapping import RestMappingAdapter
from gateway.errors import AuthFailed, ConfigInvalid, InputError, Unavailable
from gateway.model import RawMessage
from gateway.validation import validate

MAPPING = {
    "entity_type": "Streetlight",
    "items": "items",
    "id": "urn:ngsi-ld:Streetlight:{code}",
    "attributes": {
        "location": {"point": {"x": "lon", "y": "lat"}},
        "status": {"value": "ok"},
        "illuminanceLevel": {"select": "dim", "scale": 0.01, "observed_at": "updatedAt"},
    },
}


def _item(n: int, updated: str = "2025-03-01T10:00:00+01:00") -> dict[str, Any]:
    return {"code": f"SL-{n}", "lon": 2.35 + n / 1000, "lat": 48.85, "dim": n * 10 % 101, "updatedAt": updated}


ITEMS = [_item(n) for n in range(7)]


class Collector:
    """An emit callback that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[RawMessage] = []

    async def __call__(self, raw: RawMessage) -> None:
        self.messages.append(raw)


Serve = Callable[[web.Application], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


def _adapter(url: str, **extra: Any) -> RestMappingAdapter:
    config: dict[str, Any] = {"name": "test-source", "url": url, "mapping": MAPPING,
                              "retry": {"initial_delay": 0.01, "max_delay": 0.05}}
    config.update(extra)
    return RestMappingAdapter(config)


def _ids(adapter: RestMappingAdapter, messages: list[RawMessage]) -> list[str]:
    return [e["id"] for raw in messages for e in adapter.to_entities(raw)]


EXPECTED_IDS = [f"urn:ngsi-ld:Streetlight:SL-{n}" for n in range(7)]

# --------------------------------------------------------------------------- the vendor simulator


async def test_oauth2_token_expiring_mid_poll_loses_no_page() -> None:
    sim = create_simulator({"token_max_uses": 2, "count": 23, "page_size": 5})
    await sim.start()
    try:
        adapter = RestMappingAdapter({
            "name": "luminarias", "url": f"{sim.url}/api/v1/luminarias", "mapping_file": "builtin:luminarias.yaml",
            "auth": {"type": "oauth2", "token_url": f"{sim.url}/oauth/token", "client_id": "jonction-demo",
                     "client_secret": "demo-secret"},
            "pagination": {"style": "page", "param": "pagina", "total_pages": "totalPaginas"},
        })
        emit = Collector()
        assert await adapter.poll_once(emit) == 23  # one message per item (the default split)
        ids = _ids(adapter, emit.messages)
        assert ids == [f"urn:ngsi-ld:Streetlight:LUM-{n:04d}" for n in range(1, 24)]
        # Tokens wore out twice during the poll: each 401 was answered by one renewal and a retry.
        assert sim.stats["rejected_tokens"] >= 2
        assert sim.stats["tokens_issued"] == sim.stats["rejected_tokens"] + 1
        assert sim.stats["pages_served"] == 5
        await adapter.stop()
    finally:
        await sim.stop()


async def test_oauth2_token_expiring_by_time_on_the_vendor_clock() -> None:
    ticks = iter(range(0, 10_000, 40))
    sim = create_simulator({"token_ttl": 100, "count": 12, "page_size": 3, "clock": lambda: float(next(ticks))})
    await sim.start()
    try:
        adapter = RestMappingAdapter({
            "url": f"{sim.url}/api/v1/luminarias", "mapping_file": "builtin:luminarias.yaml",
            "auth": {"type": "oauth2", "token_url": f"{sim.url}/oauth/token", "client_id": "jonction-demo",
                     "client_secret": "demo-secret", "client_auth": "body"},
            "pagination": {"style": "page", "param": "pagina", "size_param": "tamano", "size": 3},
        })
        emit = Collector()
        await adapter.poll_once(emit)
        assert len(_ids(adapter, emit.messages)) == 12
        assert sim.stats["rejected_tokens"] >= 1
        for entity in adapter.to_entities(emit.messages[0]):
            assert validate(entity).valid
        await adapter.stop()
    finally:
        await sim.stop()


async def test_wrong_client_secret_is_auth_failed(tmp_path: Path) -> None:
    sim = create_simulator({})
    await sim.start()
    secret = tmp_path / "secret"
    secret.write_text("not-the-secret\n")
    try:
        adapter = RestMappingAdapter({
            "url": f"{sim.url}/api/v1/luminarias", "mapping_file": "builtin:luminarias.yaml",
            "auth": {"type": "oauth2", "token_url": f"{sim.url}/oauth/token", "client_id": "jonction-demo",
                     "client_secret_file": str(secret)},
        })
        with pytest.raises(AuthFailed, match="invalid_client") as caught:
            await adapter.check()
        assert "not-the-secret" not in str(caught.value)
    finally:
        await sim.stop()


async def test_secret_from_an_unset_environment_variable_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JONCTION_TEST_UNSET", raising=False)
    adapter = _adapter("http://127.0.0.1:9/x", auth={"type": "basic", "username": "u",
                                                      "password": "${JONCTION_TEST_UNSET}"})
    with pytest.raises(ConfigInvalid) as caught:
        await adapter.check()
    assert caught.value.problems == ["auth.password: environment variable JONCTION_TEST_UNSET is unset"]


# --------------------------------------------------------------------------- pagination styles


def _paging_app(seen: list[dict[str, str]]) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        number = int(request.query.get("page", "1"))
        chunk = ITEMS[(number - 1) * 3 : number * 3]
        return web.json_response({"items": chunk, "pages": 3})

    async def short_pages(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        number, size = int(request.query["p"]), int(request.query["per_page"])
        return web.json_response({"items": ITEMS[number * size : (number + 1) * size]})

    async def offset(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        start, limit = int(request.query["offset"]), int(request.query["limit"])
        return web.json_response({"items": ITEMS[start : start + limit], "count": len(ITEMS)})

    async def cursor(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        start = int(request.query.get("after", "0"))
        nxt = start + 3 if start + 3 < len(ITEMS) else None
        return web.json_response({"items": ITEMS[start : start + 3], "meta": {"next": str(nxt) if nxt else None}})

    async def link(request: web.Request) -> web.Response:
        seen.append(dict(request.query))
        start = int(request.query.get("from", "0"))
        headers = {}
        if start + 3 < len(ITEMS):
            headers["Link"] = f'<{request.path}?from={start + 3}&key=abc>; rel="next", </first>; rel="first"'
        return web.json_response({"items": ITEMS[start : start + 3]}, headers=headers)

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/short", short_pages)
    app.router.add_get("/offset", offset)
    app.router.add_get("/cursor", cursor)
    app.router.add_get("/link", link)
    return app


@pytest.mark.parametrize(
    ("path", "pagination", "requests"),
    [
        ("/page", {"style": "page", "total_pages": "pages"}, 3),
        ("/short", {"style": "page", "param": "p", "start": 0, "size_param": "per_page", "size": 3}, 3),
        ("/offset", {"style": "offset", "size_param": "limit", "size": 3, "total": "count"}, 3),
        ("/cursor", {"style": "cursor", "param": "after", "next": "meta.next"}, 3),
        ("/link", {"style": "link"}, 3),
    ],
)
async def test_pagination_styles(serve: Serve, path: str, pagination: dict[str, Any], requests: int) -> None:
    seen: list[dict[str, str]] = []
    base = await serve(_paging_app(seen))
    adapter = _adapter(base + path, pagination=pagination)
    emit = Collector()
    await adapter.poll_once(emit)
    assert _ids(adapter, emit.messages) == EXPECTED_IDS
    assert len(seen) == requests
    assert len({m.idempotency_key for m in emit.messages}) == len(emit.messages)
    await adapter.stop()


async def test_link_to_another_origin_is_refused(serve: Serve) -> None:
    async def evil(request: web.Request) -> web.Response:
        return web.json_response({"items": ITEMS[:1]}, headers={"Link": '<http://127.0.0.2:1/steal>; rel="next"'})

    app = web.Application()
    app.router.add_get("/evil", evil)
    adapter = _adapter(await serve(app) + "/evil", pagination={"style": "link"})
    with pytest.raises(Unavailable, match="leaves the configured origin"):
        await adapter.poll_once(Collector())
    await adapter.stop()


@pytest.mark.parametrize(
    ("auth", "check"),
    [
        ({"type": "api_key", "api_key": "k-123"}, lambda r: r.headers.get("X-API-Key") == "k-123"),
        ({"type": "api_key", "in": "query", "name": "apikey", "api_key": "k-123"},
         lambda r: r.query.get("apikey") == "k-123"),
        ({"type": "basic", "username": "ville", "password": "s3cret"},
         lambda r: r.headers.get("Authorization") == "Basic dmlsbGU6czNjcmV0"),
    ],
)
async def test_static_credentials(serve: Serve, auth: dict[str, Any], check: Callable[[web.Request], bool]) -> None:
    async def guarded(request: web.Request) -> web.Response:
        if not check(request):
            return web.json_response({"error": "who are you"}, status=401)
        return web.json_response({"items": ITEMS})

    app = web.Application()
    app.router.add_get("/data", guarded)
    adapter = _adapter(await serve(app) + "/data", auth=auth)
    emit = Collector()
    await adapter.poll_once(emit)
    assert _ids(adapter, emit.messages) == EXPECTED_IDS
    assert "k-123" not in emit.messages[0].metadata["url"]  # the archive never holds the key
    refused = _adapter(adapter.url, auth={**auth, ("api_key" if "api_key" in auth else "password"): "wrong"})
    with pytest.raises(AuthFailed):
        await refused.poll_once(Collector())
    await adapter.stop()
    await refused.stop()


# --------------------------------------------------------------------------- throttling and failures


async def test_429_storm_is_waited_out(serve: Serve) -> None:
    answers = ["1", "0", "1", "0", "0"]
    requests = 0

    async def throttled(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        if answers:
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": answers.pop(0)})
        number = int(request.query["page"])
        return web.json_response({"items": ITEMS[(number - 1) * 4 : number * 4], "pages": 2})

    app = web.Application()
    app.router.add_get("/data", throttled)
    adapter = _adapter(await serve(app) + "/data", pagination={"style": "page", "total_pages": "pages"},
                       retry={"max_delay": 5})
    emit = Collector()
    await adapter.poll_once(emit)
    assert _ids(adapter, emit.messages) == EXPECTED_IDS
    assert adapter.stats["throttled"] == 5
    assert requests == 7
    await adapter.stop()


async def test_endless_429_gives_up_as_unavailable(serve: Serve) -> None:
    async def throttled(request: web.Request) -> web.Response:
        return web.json_response({}, status=429, headers={"Retry-After": "0"})

    app = web.Application()
    app.router.add_get("/data", throttled)
    adapter = _adapter(await serve(app) + "/data", retry={"max_throttled": 3})
    with pytest.raises(Unavailable, match="429"):
        await adapter.poll_once(Collector())
    await adapter.stop()


async def test_5xx_is_retried_with_backoff(serve: Serve) -> None:
    failures = [503, 500]

    async def flaky(request: web.Request) -> web.Response:
        if failures:
            return web.json_response({}, status=failures.pop(0))
        return web.json_response({"items": ITEMS})

    app = web.Application()
    app.router.add_get("/data", flaky)
    adapter = _adapter(await serve(app) + "/data")
    emit = Collector()
    await adapter.poll_once(emit)
    assert _ids(adapter, emit.messages) == EXPECTED_IDS
    assert adapter.stats["retries"] == 2
    await adapter.stop()


async def test_response_over_the_size_limit_is_refused(serve: Serve) -> None:
    async def big(request: web.Request) -> web.Response:
        return web.json_response({"items": [_item(n) for n in range(100)]})

    app = web.Application()
    app.router.add_get("/data", big)
    adapter = _adapter(await serve(app) + "/data", max_response_bytes=2048)
    with pytest.raises(InputError, match="max_response_bytes"):
        await adapter.poll_once(Collector())
    await adapter.stop()


async def test_run_logs_unavailable_once_and_recovered_once(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    down = 4

    async def outage(request: web.Request) -> web.Response:
        nonlocal down
        if down:
            down -= 1
            return web.json_response({}, status=503)
        return web.json_response({"items": ITEMS})

    app = web.Application()
    app.router.add_get("/data", outage)
    adapter = _adapter(await serve(app) + "/data", interval=60, retry={"attempts": 1, "initial_delay": 0.01,
                                                                       "max_delay": 0.02})
    emit = Collector()
    caplog.set_level(logging.DEBUG, logger="jonction.adapters.rest_mapping")
    task = asyncio.create_task(adapter.run(emit))
    for _ in range(500):
        if emit.messages:
            break
        await asyncio.sleep(0.01)
    await adapter.stop()
    await asyncio.wait_for(task, 5)
    assert _ids(adapter, emit.messages) == EXPECTED_IDS
    texts = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("unavailable" in t for t in texts) == 1
    assert sum("recovered" in t for t in texts) == 1


# --------------------------------------------------------------------------- incremental watermark


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_watermark_persists_across_restarts(serve: Serve, tmp_path: Path) -> None:
    data = [_item(n, f"2025-03-01T1{n}:00:00+01:00") for n in range(3)]
    sinces: list[str | None] = []

    async def changes(request: web.Request) -> web.Response:
        since = request.query.get("since")
        sinces.append(since)
        rows = [d for d in data if since is None or _instant(d["updatedAt"]) > _instant(since)]
        return web.json_response({"items": rows})

    app = web.Application()
    app.router.add_get("/changes", changes)
    url = await serve(app) + "/changes"
    config = {"state_dir": str(tmp_path), "incremental": {"select": "items[].updatedAt", "param": "since"}}

    first = _adapter(url, **config)
    emit = Collector()
    await first.poll_once(emit)
    assert len(_ids(first, emit.messages)) == 3
    await first.stop()
    stored = json.loads((tmp_path / "test-source.json").read_text())
    assert stored == {"watermark": "2025-03-01T12:00:00+01:00"}

    # A new instance (a restart) resumes from the persisted watermark: nothing is imported again.
    second = _adapter(url, **config)
    emit = Collector()
    assert await second.poll_once(emit) == 0
    assert sinces[-1] == "2025-03-01T12:00:00+01:00"
    # A later change arrives (written with another offset: instants, not strings, are compared).
    data.append(_item(9, "2025-03-01T11:30:00Z"))
    assert await second.poll_once(emit) == 1
    assert _ids(second, emit.messages) == ["urn:ngsi-ld:Streetlight:SL-9"]
    assert json.loads((tmp_path / "test-source.json").read_text()) == {"watermark": "2025-03-01T11:30:00Z"}
    await second.stop()


async def test_same_content_same_position_same_idempotency_key(serve: Serve) -> None:
    async def data(request: web.Request) -> web.Response:
        return web.json_response({"items": ITEMS})

    app = web.Application()
    app.router.add_get("/data", data)
    adapter = _adapter(await serve(app) + "/data")
    emit = Collector()
    await adapter.poll_once(emit)
    await adapter.poll_once(emit)
    assert emit.messages[0].idempotency_key == emit.messages[len(ITEMS)].idempotency_key
    assert len({m.idempotency_key for m in emit.messages}) == len(ITEMS)
    await adapter.stop()


async def test_tenant_selector_splits_items_per_tenant(serve: Serve) -> None:
    rows = [{**_item(n), "commune": "34172" if n % 2 else "34057"} for n in range(4)]

    async def data(request: web.Request) -> web.Response:
        return web.json_response({"items": rows})

    app = web.Application()
    app.router.add_get("/data", data)
    adapter = _adapter(await serve(app) + "/data", tenant="syndicat", mapping={**MAPPING, "tenant": "commune"})
    emit = Collector()
    assert await adapter.poll_once(emit) == 4
    assert [m.tenant for m in emit.messages] == ["34057", "34172", "34057", "34172"]
    assert [e["id"] for m in emit.messages for e in adapter.to_entities(m)] == EXPECTED_IDS[:4]
    await adapter.stop()


def test_invalid_mapping_reports_every_problem() -> None:
    bad = {**MAPPING, "items": "items[", "attributes": {"x": {"select": "a", "from_unit": "furlong", "unit": "KWH"}}}
    with pytest.raises(ConfigInvalid) as caught:
        _adapter("http://127.0.0.1:9/x", mapping=bad)
    problems = caught.value.problems
    # Each problem names its key with a JSON pointer into the source config.
    assert any(p.startswith("/mapping/items:") for p in problems)
    assert any(p.startswith("/mapping/attributes/x/from_unit:") for p in problems)


async def test_run_again_after_stop_as_the_supervisor_restarts_a_source(serve: Serve) -> None:
    async def data(request: web.Request) -> web.Response:
        return web.json_response({"items": ITEMS})

    app = web.Application()
    app.router.add_get("/data", data)
    adapter = _adapter(await serve(app) + "/data", interval=60)
    for round_ in (1, 2):
        emit = Collector()
        await adapter.check()
        task = asyncio.create_task(adapter.run(emit))
        for _ in range(500):
            if emit.messages:
                break
            await asyncio.sleep(0.01)
        await adapter.stop()
        await asyncio.wait_for(task, 5)
        assert len(emit.messages) == len(ITEMS), f"round {round_}"


async def test_network_errors_back_off_until_the_api_comes_up() -> None:
    from tests.conftest import free_port

    port = free_port()
    adapter = _adapter(f"http://127.0.0.1:{port}/data", retry={"attempts": 50, "initial_delay": 0.02,
                                                                "max_delay": 0.1})
    emit = Collector()
    poll = asyncio.create_task(adapter.poll_once(emit))
    for _ in range(500):
        if adapter.stats["retries"] >= 2:
            break
        await asyncio.sleep(0.01)
    assert adapter.stats["retries"] >= 2 and not poll.done()

    async def data(request: web.Request) -> web.Response:
        return web.json_response({"items": ITEMS})

    app = web.Application()
    app.router.add_get("/data", data)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        assert await asyncio.wait_for(poll, 10) == len(ITEMS)
        assert _ids(adapter, emit.messages) == EXPECTED_IDS
    finally:
        await adapter.stop()
        await runner.cleanup()


async def test_unreachable_api_is_unavailable_after_its_attempts() -> None:
    from tests.conftest import free_port

    adapter = _adapter(f"http://127.0.0.1:{free_port()}/data", retry={"attempts": 3, "initial_delay": 0.01})
    with pytest.raises(Unavailable, match="after 3 attempts"):
        await adapter.poll_once(Collector())
    assert adapter.stats["retries"] == 2
    await adapter.stop()
