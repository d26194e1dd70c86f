"""User regular expressions run on RE2 (gateway/store/patterns.py): syntax limits, search semantics, no ReDoS."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.store.patterns import compile_user_pattern
from gateway.store.problems import NgsiError
from tests.conftest import ROOT, free_port
from tests.store.conftest import BACKENDS, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

EVIL = "(a+)+b"
"""Exponential on a backtracking engine against a run of a's without a final b."""
RUN = "a" * 27


def test_pattern_is_searched_anywhere() -> None:
    matcher = compile_user_pattern("Streetlight:1")
    assert matcher.search("urn:ngsi-ld:Streetlight:1")
    assert matcher.search("urn:ngsi-ld:Streetlight:12")  # not anchored: a search, as brokers do
    assert not compile_user_pattern("^Streetlight").search("urn:ngsi-ld:Streetlight:1")


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (r"(a)\1", "BadRequestData"),  # backreference
        ("(?=a)b", "BadRequestData"),  # lookahead
        ("(?<!a)b", "BadRequestData"),  # lookbehind
        ("[", "BadRequestData"),
        ("", "BadRequestData"),
        ("a" * 300, "TooComplexQuery"),
        ("((a{100}){100}){100}", "TooComplexQuery"),
    ],
)
def test_patterns_outside_re2_are_refused(source: str, error: str) -> None:
    with pytest.raises(NgsiError) as caught:
        compile_user_pattern(source, "idPattern")
    assert caught.value.type == error
    assert "idPattern" in caught.value.detail


@pytest.mark.timeout(60)
def test_evil_pattern_answers_correctly() -> None:
    """A backtracking engine would need ~2**64 steps on the long run; RE2 is linear."""
    matcher = compile_user_pattern(EVIL)
    assert not matcher.search(RUN)
    assert not matcher.search("a" * 64)
    assert matcher.search(RUN + "b")


async def test_q_and_id_pattern_over_http(server: StoreServer) -> None:
    for n in (1, 2, 12):
        entity = streetlight(n, name={"type": "Property", "value": f"lamp {n}"})
        assert (await server.post("/entities", entity)).status == 201
    r = await server.get("/entities", params={"type": "Streetlight", "idPattern": "Streetlight:1"})
    assert sorted(e["id"] for e in r.json) == ["urn:ngsi-ld:Streetlight:1", "urn:ngsi-ld:Streetlight:12"]
    r = await server.get("/entities", params={"type": "Streetlight", "q": 'name~="lamp 1$"'})
    assert [e["id"] for e in r.json] == ["urn:ngsi-ld:Streetlight:1"]
    r = await server.get("/entities", params={"type": "Streetlight", "q": 'name~="(?=lamp)"'})
    assert r.status == 400 and r.problem() == "BadRequestData"
    assert "lookaround" in r.json["detail"]
    r = await server.get("/entities", params={"type": "Streetlight", "idPattern": r"(S)\1"})
    assert r.status == 400 and r.problem() == "BadRequestData"
    r = await server.post("/entityOperations/query", {"type": "Query", "entities": [
        {"type": "Streetlight", "idPattern": "(?!x)"}]})
    assert r.status == 400 and r.problem() == "BadRequestData"


async def test_subscription_id_pattern_must_be_re2(server: StoreServer) -> None:
    sub = {"type": "Subscription", "entities": [{"type": "Streetlight", "idPattern": r"(a)\1"}],
           "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}}
    r = await server.post("/subscriptions", sub)
    assert r.status == 400 and r.problem() == "BadRequestData"


async def _get(session: aiohttp.ClientSession, url: str, params: dict[str, str], done: list[str],
               name: str) -> tuple[int, Any]:
    async with session.get(url, params=params) as resp:
        body = await resp.json()
        done.append(name)
        return resp.status, body


@pytest.mark.timeout(180)
async def test_redos_query_does_not_stall_a_real_server(tmp_path: Path) -> None:
    """The evil pattern as q and as idPattern answers correctly, and GET /types is served alongside."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "store", "--port", str(port), "--data", str(tmp_path),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert b"serving NGSI-LD" in await asyncio.wait_for(proc.stdout.readline(), 60)
        async with aiohttp.ClientSession() as session:
            entities = [
                {"id": f"urn:ngsi-ld:Thing:{RUN}", "type": "Thing", "name": {"type": "Property", "value": RUN}},
                {"id": "urn:ngsi-ld:Thing:aaab", "type": "Thing", "name": {"type": "Property", "value": "aaab"}},
            ]
            async with session.post(base + "/entityOperations/create", json=entities) as resp:
                assert resp.status == 201
            done: list[str] = []
            evil_q = asyncio.create_task(
                _get(session, base + "/entities", {"type": "Thing", "q": f'name~="{EVIL}"'}, done, "q"))
            evil_id = asyncio.create_task(
                _get(session, base + "/entities", {"type": "Thing", "idPattern": EVIL}, done, "idPattern"))
            await asyncio.sleep(0)  # both evil requests are on their way before /types is asked
            types = asyncio.create_task(_get(session, base + "/types", {}, done, "types"))
            (q_status, q_body), (id_status, id_body), (t_status, t_body) = await asyncio.gather(evil_q, evil_id, types)
        assert sorted(done) == ["idPattern", "q", "types"]
        assert q_status == 200 and [e["id"] for e in q_body] == ["urn:ngsi-ld:Thing:aaab"]
        assert id_status == 200 and [e["id"] for e in id_body] == ["urn:ngsi-ld:Thing:aaab"]
        assert t_status == 200 and t_body["typeList"] == ["Thing"]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
