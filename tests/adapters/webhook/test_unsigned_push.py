"""Unsigned pushes over real loopback HTTP: API key in a header or the query string, auth: none, push context."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from adapters.webhook import WebhookAdapter
from gateway.errors import ConfigInvalid
from gateway.model import RawMessage
from gateway.runtime.config import schema_problems
from gateway.secrets import redact
from gateway.validation import validate

KEY = "device-fleet-key-7f3a9c"
MISSING_HEADER = "the API key is required in the header X-API-Key"
MEASURES: dict[str, Any] = {
    "entity_type": "AirQualityObserved",
    "id": "urn:ngsi-ld:AirQualityObserved:{$query.i}",
    "tenant": "$headers.fiware-service",
    "attributes": {
        "temperature": {"select": "t", "unit": "CEL"},
        "no2": {"select": "no2", "unit": "GQ"},
        "dateObserved": {"select": "ts", "epoch": "ms"},
        "source": {"select": "$headers.X-Forwarded-Gateway"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.8767, 43.6108]}},
    },
}


class Collector:
    """An emit callback that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[RawMessage] = []

    async def __call__(self, raw: RawMessage) -> None:
        self.messages.append(raw)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _started(config: dict[str, Any], emit: Collector) -> tuple[WebhookAdapter, asyncio.Task[None]]:
    adapter = WebhookAdapter({"listen": {"port": 0, "path": "/iot/json"}, "mapping": MEASURES, **config})
    task = asyncio.create_task(adapter.run(emit))
    await asyncio.wait_for(adapter.ready.wait(), 10)
    return adapter, task


async def _stop(adapter: WebhookAdapter, task: asyncio.Task[None]) -> None:
    await adapter.stop()
    await asyncio.wait_for(task, 10)


def _body(**values: Any) -> bytes:
    return json.dumps({"t": 21.5, "no2": 30, "ts": 1764756000000, **values}).encode()


async def test_api_key_in_a_header_is_accepted_and_query_and_headers_reach_the_entity(
    client: aiohttp.ClientSession,
) -> None:
    emit = Collector()
    adapter, task = await _started({"auth": {"type": "api_key", "in": "header", "name": "X-API-Key",
                                             "api_key": KEY}}, emit)
    try:
        headers = {"X-API-Key": KEY, "Fiware-Service": "openiot", "X-Forwarded-Gateway": "gw-3",
                   "Authorization": "Bearer something-else", "Cookie": "session=abc", "X-Unread": "not kept"}
        async with client.post(f"{adapter.url}?i=aq-17&unused=1", data=_body(), headers=headers) as resp:
            assert resp.status == 202
            assert await resp.json() == {"status": "accepted", "messages": 1}
        (raw,) = emit.messages
        assert raw.tenant == "openiot"
        # Only what the mapping reads is kept with the message: no key, no Authorization, no cookie.
        assert {k: v for k, v in raw.metadata.items() if "." in k} == {
            "query.i": "aq-17", "headers.fiware-service": "openiot", "headers.x-forwarded-gateway": "gw-3"}
        kept = repr(raw)
        for secret in (KEY, "something-else", "session=abc", "not kept", "unused"):
            assert secret not in kept
        (entity,) = adapter.to_entities(raw)
        assert entity["id"] == "urn:ngsi-ld:AirQualityObserved:aq-17"
        assert entity["source"]["value"] == "gw-3"
        assert entity["dateObserved"]["value"] == "2025-12-03T10:00:00Z"
        assert entity["location"]["value"]["coordinates"] == [3.8767, 43.6108]
        assert validate(entity).valid, validate(entity).errors
    finally:
        await _stop(adapter, task)


async def test_api_key_in_the_query_string_is_accepted_and_never_kept(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    # The shipped example mapping for such devices.
    adapter, task = await _started({"auth": {"type": "api_key", "in": "query", "name": "k", "api_key": KEY},
                                    "mapping": None, "mapping_file": "builtin:device_measures.yaml"}, emit)
    try:
        async with client.post(adapter.url, params={"k": KEY, "i": "aq-18"}, data=_body(),
                                headers={"Fiware-Service": "openiot"}) as resp:
            assert resp.status == 202
        (raw,) = emit.messages
        assert KEY not in repr(raw)
        assert raw.tenant == "openiot"
        (entity,) = adapter.to_entities(raw)
        assert entity["id"] == "urn:ngsi-ld:AirQualityObserved:aq-18"
        assert entity["no2"] == {"type": "Property", "value": 30, "unitCode": "GQ",
                                 "observedAt": "2025-12-03T10:00:00Z"}
        assert entity["typeofLocation"] == {"type": "Property", "value": "outdoor"}
        assert validate(entity).valid, validate(entity).errors
        # The key in a header does not count when the config says the query string.
        async with client.post(adapter.url, params={"i": "aq-18"}, data=_body(), headers={"k": KEY}) as resp:
            assert resp.status == 401
    finally:
        await _stop(adapter, task)


@pytest.mark.parametrize(
    ("where", "send", "counter", "detail"),
    [
        ("header", {"headers": {"X-API-Key": KEY + "x"}}, "bad_api_key", "wrong API key in the header X-API-Key"),
        ("header", {"headers": {"X-API-Key": ""}}, "missing_api_key", MISSING_HEADER),
        ("header", {}, "missing_api_key", MISSING_HEADER),
        ("query", {"params": {"k": KEY[:-1]}}, "bad_api_key", "wrong API key in the query k"),
        ("query", {"params": {"i": "aq-1"}}, "missing_api_key", "the API key is required in the query k"),
    ],
)
async def test_a_wrong_or_missing_key_is_401_with_a_problem_and_nothing_is_emitted(
    client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, where: str, send: dict[str, Any],
    counter: str, detail: str,
) -> None:
    emit = Collector()
    name = "X-API-Key" if where == "header" else "k"
    adapter, task = await _started({"auth": {"type": "api_key", "in": where, "name": name, "api_key": KEY}}, emit)
    try:
        with caplog.at_level(logging.WARNING):
            async with client.post(adapter.url, data=_body(), **send) as resp:
                assert resp.status == 401
                assert resp.content_type == "application/problem+json"
                problem = await resp.json()
        assert problem["status"] == 401 and problem["title"] == detail
        assert emit.messages == []  # no message, so no dead letter of the payload either
        assert adapter.stats[counter] == 1 and adapter.rejected == 1
        assert KEY[:-1] not in caplog.text
    finally:
        await _stop(adapter, task)


async def test_the_key_comes_from_the_secrets_resolver_and_is_masked(
    client: aiohttp.ClientSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("key-from-a-file-91c2\n")
    monkeypatch.setenv("FLEET_KEY", "key-from-the-environment-44d1")
    for auth in ({"api_key_file": str(key_file)}, {"api_key_env": "FLEET_KEY"}, {"api_key": "${FLEET_KEY}"}):
        emit = Collector()
        adapter, task = await _started({"auth": {"type": "api_key", **auth}}, emit)
        expected = "key-from-a-file-91c2" if "api_key_file" in auth else "key-from-the-environment-44d1"
        try:
            async with client.post(adapter.url, params={"i": "a"}, data=_body(),
                                   headers={"X-API-Key": expected}) as resp:
                assert resp.status == 202, auth
            assert redact(f"key={expected}") == "key=***"
        finally:
            await _stop(adapter, task)


async def test_a_sender_may_name_its_deliveries_so_that_retries_are_not_imported_twice(
    client: aiohttp.ClientSession,
) -> None:
    emit = Collector()
    adapter, task = await _started({"auth": {"type": "api_key", "api_key": KEY}}, emit)
    try:
        headers = {"X-API-Key": KEY, "Idempotency-Key": "reading-42"}
        for expected in (202, 200):
            async with client.post(adapter.url, params={"i": "a"}, data=_body(), headers=headers) as resp:
                assert resp.status == expected
        # Without a name, two equal readings are two messages with distinct idempotency keys.
        for _ in range(2):
            async with client.post(adapter.url, params={"i": "a"}, data=_body(), headers={"X-API-Key": KEY}) as resp:
                assert resp.status == 202
        assert len(emit.messages) == 3
        assert len({m.idempotency_key for m in emit.messages}) == 3
    finally:
        await _stop(adapter, task)


async def test_auth_none_on_loopback_accepts_but_refuses_a_cross_site_browser_post(
    client: aiohttp.ClientSession,
) -> None:
    emit = Collector()
    adapter, task = await _started({"auth": "none"}, emit)
    try:
        async with client.post(adapter.url, params={"i": "a"}, data=_body()) as resp:
            assert resp.status == 202
        async with client.post(adapter.url, params={"i": "b"}, data=_body(),
                                headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403
        assert len(emit.messages) == 1 and adapter.stats["cross_site"] == 1
    finally:
        await _stop(adapter, task)


@pytest.mark.parametrize(
    ("config", "problems"),
    [
        ({}, ["/secret: give secret (or secret_file, secret_env) for signed pushes, or auth"]),
        ({"auth": "none", "listen": {"host": "0.0.0.0"}}, ["/listen/host: auth: none only listens on a loopback"]),
        ({"auth": {"type": "none"}, "listen": {"host": "192.0.2.7"}}, ["/listen/host: auth: none only listens"]),
        ({"auth": {"type": "api_key"}}, ["/auth/api_key: give api_key, api_key_file or api_key_env"]),
        ({"auth": {"type": "api_key", "api_key": KEY}, "secret": "whsec_AAAA"},
         ["/auth: give either secret (signed pushes) or auth, not both"]),
    ],
)
def test_a_source_without_authentication_is_refused_before_any_io(
    config: dict[str, Any], problems: list[str]
) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        WebhookAdapter({"mapping": MEASURES, **config})
    assert len(caught.value.problems) == len(problems)
    for got, expected in zip(caught.value.problems, problems, strict=True):
        assert got.startswith(expected), got


def test_the_config_schema_says_the_same_to_the_runtime() -> None:
    schema = WebhookAdapter.config_schema
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema_problems(schema, {"mapping": MEASURES}) == [
        "/: missing key: give 'secret' or 'secret_file' or 'secret_env' or 'auth'"]
    assert any(p.startswith("/listen/host:") for p in
               schema_problems(schema, {"mapping": MEASURES, "auth": "none", "listen": {"host": "0.0.0.0"}}))
    assert schema_problems(schema, {"mapping": MEASURES, "auth": "none"}) == []
    assert schema_problems(schema, {"mapping": MEASURES, "auth": {"type": "api_key", "in": "query", "name": "k",
                                                                  "api_key_file": "/run/secrets/k"}}) == []
    assert schema["properties"]["auth"]["oneOf"][1]["properties"]["api_key"]["writeOnly"] is True


@pytest.mark.parametrize(
    ("auth", "selector"),
    [({"type": "api_key", "in": "query", "name": "k", "api_key": KEY}, "$query.k"),
     ({"type": "api_key", "in": "header", "name": "X-Device-Pass", "api_key": KEY}, "$headers.x-device-pass")],
)
def test_a_mapping_may_not_read_the_api_key(auth: dict[str, Any], selector: str) -> None:
    mapping = {**MEASURES, "attributes": {**MEASURES["attributes"], "leak": {"select": selector}}}
    with pytest.raises(ConfigInvalid) as caught:
        WebhookAdapter({"mapping": mapping, "auth": auth})
    (problem,) = caught.value.problems
    assert problem.startswith("/mapping/attributes/leak/select: reads the API key")


async def test_an_unauthenticated_request_is_refused_before_its_body_is_read(client: aiohttp.ClientSession) -> None:
    emit = Collector()
    adapter, task = await _started({"auth": {"type": "api_key", "api_key": KEY}, "max_body_bytes": 1024}, emit)
    try:
        big = b"x" * 4096
        async with client.post(adapter.url, data=big, headers={"X-API-Key": "guess"}) as resp:
            assert resp.status == 401  # not 413: a stranger learns nothing about the limits
        async with client.post(adapter.url, data=big, headers={"X-API-Key": KEY}) as resp:
            assert resp.status == 413
        assert adapter.stats["bad_api_key"] == 1 and adapter.stats["too_large"] == 1 and emit.messages == []
    finally:
        await _stop(adapter, task)
