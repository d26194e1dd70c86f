"""The gateway serves its @context and remote sinks use it: a broker that fetches contexts gets right IRIs.

The broker is ``OrionLikeBroker`` (tests/interop/broker.py): it fetches the Link @context over
HTTP, caches it for a minute, answers 503 LdContextNotAvailable when it cannot get it, and stores
entities expanded by an independent JSON-LD processor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.runtime.app import create_app
from gateway.runtime.config import parse
from gateway.runtime.sinks import RemoteBrokerSink, RemoteSettings, SinkUnavailable
from gateway.runtime.state import RUNTIME
from schemas import contexts
from tests.conftest import REFERENCE, free_port
from tests.interop.broker import OrionLikeBroker
from tests.runtime.support import FakeAdapter, eventually

SDM = "https://smartdatamodels.org/dataModel.WasteManagement/"
CORE = "https://uri.etsi.org/ngsi-ld/"
UPSTREAM_WASTE = REFERENCE / "smart-data-models" / "WasteManagement" / "context.jsonld"


@asynccontextmanager
async def gateway(tmp: Path, sinks: list[dict[str, Any]], **server: Any) -> AsyncIterator[tuple[str, web.Application]]:
    """``jonction run`` in process on a known loopback port, so the default public URL is its own."""
    port = free_port()
    cfg = parse({
        "server": {"host": "127.0.0.1", "port": port, **server},
        "data_dir": str(tmp / "data"),
        "publisher": {"linger": 0.005, "backoff_initial": 0.05, "backoff_max": 0.3, "breaker_threshold": 50},
        "shutdown": {"drain_timeout": 5},
        "embedded_store": {"enabled": False},
        "sinks": sinks,
        "sources": [{"name": "bins", "adapter": "fake", "tenant": ""}],
    })
    FakeAdapter.instances.clear()
    runner = web.AppRunner(create_app(cfg, adapters={"fake": FakeAdapter}), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", runner.app
    finally:
        await runner.cleanup()


async def send(device: str, fill: int, temp: float = 12.5) -> None:
    await FakeAdapter.instances["bins"].send(
        {"id": f"{device}-{fill}", "device": device, "fill": fill, "temp": temp, "at": "2026-01-01T10:00:00Z"})


def value(expanded: dict[str, Any], iri: str) -> Any:
    """The value of the first instance of an expanded attribute."""
    instance = expanded[iri][0]
    return instance[CORE + "hasValue"][0]["@value"]


def check_waste_container(expanded: dict[str, Any], fill: float) -> None:
    """The IRIs the Smart Data Models WasteManagement @context gives, after a real JSON-LD expansion."""
    assert expanded["@type"] == [SDM + "WasteContainer"]
    assert value(expanded, SDM + "fillingLevel") == fill
    assert expanded[SDM + "fillingLevel"][0][CORE + "observedAt"][0]["@value"] == "2026-01-01T10:00:00Z"
    assert CORE + "location" in expanded
    # No term fell through to the core context's default vocabulary: every one was defined.
    leaked = [k for k in expanded if k.startswith(CORE + "default-context/")]
    assert leaked == [], leaked
    if UPSTREAM_WASTE.is_file():
        upstream = json.loads(UPSTREAM_WASTE.read_text(encoding="utf-8"))["@context"]
        assert SDM + "fillingLevel" == upstream["fillingLevel"]
        assert SDM + "WasteContainer" == upstream["WasteContainer"]


async def test_gateway_serves_its_context_without_a_token(tmp_path: Path) -> None:
    broker = OrionLikeBroker()
    await broker.start()
    try:
        async with gateway(tmp_path, [{"name": "orion", "url": broker.url}]) as (base, app):
            cfg = app[RUNTIME].config
            assert cfg.context_url == f"{base}/contexts/jonction.jsonld"
            async with aiohttp.ClientSession() as http:
                async with http.get(cfg.context_url) as resp:
                    assert resp.status == 200
                    assert resp.content_type == "application/ld+json"
                    document = json.loads(await resp.read())
                    etag = resp.headers["ETag"]
                async with http.get(cfg.context_url, headers={"If-None-Match": etag}) as again:
                    assert again.status == 304
            assert document == contexts.bundled_context(contexts.JONCTION_CONTEXT_IRI)
    finally:
        await broker.stop()


async def test_default_sink_delivers_entities_a_fetching_broker_expands_right(tmp_path: Path) -> None:
    broker = OrionLikeBroker()
    await broker.start()
    try:
        async with gateway(tmp_path, [{"name": "orion", "url": broker.url, "profile": "orion-ld"}]) as (_, app):
            cfg = app[RUNTIME].config
            await send("bin-1", 40)
            await eventually(lambda: "urn:ngsi-ld:WasteContainer:bin-1" in broker.entities, what="first delivery")
            await send("bin-2", 70)
            await send("bin-1", 55)
            await eventually(lambda: "urn:ngsi-ld:WasteContainer:bin-2" in broker.entities
                             and value(broker.entities["urn:ngsi-ld:WasteContainer:bin-1"],
                                       SDM + "fillingLevel") == 0.55, what="later deliveries")
        headers, _ = broker.bodies[0]
        assert headers["Link"].startswith(f"<{cfg.context_url}>")
        assert broker.refusals == []
        # Fetched once over HTTP from the gateway, then served from the broker's one-minute cache.
        assert broker.fetches == [cfg.context_url]
        assert len(broker.bodies) >= 2
        check_waste_container(broker.entities["urn:ngsi-ld:WasteContainer:bin-1"], 0.55)
        check_waste_container(broker.entities["urn:ngsi-ld:WasteContainer:bin-2"], 0.7)
    finally:
        await broker.stop()


async def test_public_url_is_what_sinks_announce(tmp_path: Path) -> None:
    broker = OrionLikeBroker()
    await broker.start()
    try:
        async with gateway(tmp_path, [{"name": "orion", "url": broker.url}],
                           public_url="https://gw.example.org/jonction/") as (_, app):
            sink = app[RUNTIME].publishers["orion"].sink
            assert isinstance(sink, RemoteBrokerSink)
            assert sink.settings.context == "https://gw.example.org/jonction/contexts/jonction.jsonld"
    finally:
        await broker.stop()


async def test_inline_context_needs_no_fetch(tmp_path: Path) -> None:
    broker = OrionLikeBroker()
    await broker.start()
    try:
        async with gateway(tmp_path, [{"name": "orion", "url": broker.url, "context": "inline"}]):
            await send("bin-3", 25)
            await eventually(lambda: "urn:ngsi-ld:WasteContainer:bin-3" in broker.entities, what="delivery")
        headers, body = broker.bodies[0]
        assert headers["Content-Type"].startswith("application/ld+json")
        assert "Link" not in headers
        # Only the terms the entity uses, not the whole 45 kB document.
        assert set(body[0]["@context"]) == {"WasteContainer", "fillingLevel", "temperature"}
        assert broker.fetches == []
        check_waste_container(broker.entities["urn:ngsi-ld:WasteContainer:bin-3"], 0.25)
    finally:
        await broker.stop()


@pytest.mark.parametrize("status", [503, 504])
async def test_unavailable_context_is_retried_not_dropped(status: int) -> None:
    """A broker that cannot fetch the context answers 503 (Orion-LD) or 504 (CIM 009 V1.9.1): retry later."""
    broker = OrionLikeBroker(unavailable_status=status)
    await broker.start()
    body = json.dumps(contexts.bundled_context(contexts.JONCTION_CONTEXT_IRI)).encode()

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/ld+json")

    served = web.Application()
    served.router.add_get("/ctx.jsonld", serve)
    port = free_port()
    url = f"http://127.0.0.1:{port}/ctx.jsonld"
    sink = RemoteBrokerSink("orion", RemoteSettings(url=broker.url, profile="orion-ld", context=url))
    runner = web.AppRunner(served, access_log=None)
    item: dict[str, Any] = {"id": "urn:ngsi-ld:WasteContainer:x", "type": "WasteContainer",
            "fillingLevel": {"type": "Property", "value": 0.5}}
    try:
        with pytest.raises(SinkUnavailable, match=f"HTTP {status}"):
            await sink.upsert("", [item], "c1")
        assert broker.refusals == [url] and broker.entities == {}
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()  # the context becomes reachable
        assert (await sink.upsert("", [item], "c2")).failed == {}
        assert broker.entities[item["id"]]["@type"] == [SDM + "WasteContainer"]
    finally:
        await sink.close()
        await runner.cleanup()
        await broker.stop()


async def test_broker_cache_keeps_a_context_one_minute(tmp_path: Path) -> None:
    now = [1000.0]
    broker = OrionLikeBroker(clock=lambda: now[0])
    await broker.start()
    try:
        async with gateway(tmp_path, [{"name": "orion", "url": broker.url}]) as (_, app):
            sink = app[RUNTIME].publishers["orion"].sink
            item = {"id": "urn:ngsi-ld:WasteContainer:c", "type": "WasteContainer",
                    "fillingLevel": {"type": "Property", "value": 0.1}}
            await sink.upsert("", [item], "a")
            now[0] += 59
            await sink.upsert("", [item], "b")
            assert len(broker.fetches) == 1
            now[0] += 2  # 61 s after the fetch: stale, fetched again
            await sink.upsert("", [item], "c")
            assert len(broker.fetches) == 2
    finally:
        await broker.stop()


def test_config_checks_the_new_keys() -> None:
    from gateway.errors import ConfigInvalid

    base = {"embedded_store": {"enabled": False}}
    with pytest.raises(ConfigInvalid) as bad:
        parse({**base, "server": {"public_url": "ftp://gw.example.org"},
               "sinks": [{"name": "a", "url": "http://b.example", "context": "sometimes"}]})
    text = "\n".join(bad.value.problems)
    assert "/server/public_url" in text and "/sinks/0/context" in text, text
    cfg = parse({**base, "server": {"host": "127.0.0.1", "port": 8099}, "sinks": [
        {"name": "a", "url": "http://b.example"},
        {"name": "b", "url": "http://b.example", "context": "inline"},
        {"name": "c", "url": "http://b.example", "context": "https://ctx.example/j.jsonld"},
        {"name": "d", "url": "http://b.example", "profile": "jonction"}]})
    settings = {s.name: s.settings for s in cfg.sinks}
    assert (settings["a"].context, settings["a"].context_mode) == ("http://127.0.0.1:8099/contexts/jonction.jsonld",
                                                                   "link")
    assert (settings["b"].context, settings["b"].context_mode) == (None, "inline")
    assert settings["c"].context == "https://ctx.example/j.jsonld"
    sink = RemoteBrokerSink("d", settings["d"])
    assert sink.settings.context == contexts.JONCTION_CONTEXT_IRI  # a jonction store knows it offline
    wildcard = parse({**base, "server": {"host": "0.0.0.0", "port": 80, "public_url": "https://gw.example.org/"},
                      "admin": {"token": "t0ken-for-the-test"}, "sinks": [{"name": "a", "url": "http://b.example"}]})
    assert wildcard.context_url == "https://gw.example.org/contexts/jonction.jsonld"
    assert parse({**base, "server": {"host": "::1", "port": 8080},
                  "sinks": [{"name": "a", "url": "http://b.example"}]}).base_url == "http://[::1]:8080"


def test_inline_context_holds_every_term_an_entity_uses() -> None:
    from gateway.runtime.sinks import entity_terms

    entity = {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight",
              "powerState": {"type": "Property", "value": "on",
                             "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:1"}},
              "address": {"type": "Property", "value": {"streetAddress": "1 rue", "addressLocality": "Sète"}},
              "lanternHeight": [{"type": "Property", "value": 8, "datasetId": "urn:a"}],
              "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.7, 43.4]}}}
    terms = entity_terms(entity)
    assert {"Streetlight", "powerState", "refDevice", "address", "streetAddress", "addressLocality",
            "lanternHeight"} <= terms
    inline = contexts.inline_context(terms)
    assert inline["refDevice"] == contexts.expand_term("refDevice")
    assert "location" not in inline and "type" not in inline  # core terms: the core context has them
