"""Distributed operations between real stores on loopback (CIM 009 V1.9.1 §4.3.6, §6.3.18).

A syndicat store registers two commune stores; queries merge their entities tagged by commune; a
neighbour that is down or slow gives a partial answer naming it; a registration loop ends through
the Via header; writes follow the registration modes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.store.app import StoreSettings
from gateway.store.federation import store_identity
from tests.conftest import free_port
from tests.store.conftest import StoreServer

REGS = "/csourceRegistrations"
AQ = "AirQualityObserved"


def air(commune: str, n: int, no2: float = 20.0) -> dict[str, Any]:
    """An AirQualityObserved entity of a commune."""
    return {
        "id": f"urn:ngsi-ld:{AQ}:{commune}-{n}",
        "type": AQ,
        "no2": {"type": "Property", "value": no2},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.12, 45.9]}},
    }


def registration(n: str, endpoint: str, *, commune: str | None = None, mode: str = "inclusive",
                 entities: list[dict[str, Any]] | None = None, **members: Any) -> dict[str, Any]:
    """A registration of a store's AirQualityObserved entities (optionally tagged by commune)."""
    reg: dict[str, Any] = {
        "id": f"urn:ngsi-ld:ContextSourceRegistration:{n}",
        "type": "ContextSourceRegistration",
        "information": [{"entities": entities or [{"type": AQ}]}],
        "endpoint": endpoint,
        "mode": mode,
    }
    if commune is not None:
        reg["contextSourceInfo"] = [{"key": "jonction:commune", "value": commune}]
    reg.update(members)
    return reg


def root(server: StoreServer) -> str:
    """The registration endpoint of a store (its API is under /ngsi-ld/v1)."""
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[list[StoreServer]]:
    """Three running stores: a syndicat and two communes, each with its own data folder."""
    servers = [StoreServer(replace(StoreSettings(data_dir=tmp_path / name), federation_timeout=1.0))
               for name in ("syndicat", "annecy", "seynod")]
    for s in servers:
        await s.start()
    try:
        yield servers
    finally:
        for s in servers:
            await s.close()


def by_id(body: Any) -> dict[str, Any]:
    """Entities of an answer by id."""
    return {e["id"]: e for e in body}


async def test_syndicat_query_merges_communes_tagged(stores: list[StoreServer]) -> None:
    syndicat, annecy, seynod = stores
    for e in (air("annecy", 1), air("annecy", 2)):
        assert (await annecy.post("/entities", e)).status == 201
    assert (await seynod.post("/entities", air("seynod", 1, 35.0))).status == 201
    assert (await syndicat.post("/entities", air("syndicat", 1))).status == 201
    assert (await syndicat.post(REGS, registration("annecy", root(annecy), commune="Annecy"))).status == 201
    assert (await syndicat.post(REGS, registration("seynod", root(seynod), commune="Seynod"))).status == 201

    got = await syndicat.get("/entities", params={"type": AQ, "count": "true"})
    assert got.status == 200, got.raw
    found = by_id(got.json)
    assert sorted(found) == sorted([f"urn:ngsi-ld:{AQ}:annecy-1", f"urn:ngsi-ld:{AQ}:annecy-2",
                                    f"urn:ngsi-ld:{AQ}:seynod-1", f"urn:ngsi-ld:{AQ}:syndicat-1"])
    assert found[f"urn:ngsi-ld:{AQ}:annecy-1"]["commune"] == {"type": "Property", "value": "Annecy"}
    assert found[f"urn:ngsi-ld:{AQ}:seynod-1"]["commune"]["value"] == "Seynod"
    assert found[f"urn:ngsi-ld:{AQ}:seynod-1"]["no2"]["value"] == 35.0
    assert "commune" not in found[f"urn:ngsi-ld:{AQ}:syndicat-1"]
    assert got.headers["NGSILD-Results-Count"] == "4"
    assert "NGSILD-Warning" not in got.headers

    simple = await syndicat.get("/entities", params={"type": AQ, "options": "keyValues", "q": "no2>30"})
    assert [(e["id"], e["commune"], e["no2"]) for e in simple.json] == [(f"urn:ngsi-ld:{AQ}:seynod-1", "Seynod", 35.0)]

    local = await syndicat.get("/entities", params={"type": AQ, "local": "true"})
    assert [e["id"] for e in local.json] == [f"urn:ngsi-ld:{AQ}:syndicat-1"]

    one = await syndicat.get(f"/entities/urn:ngsi-ld:{AQ}:annecy-2")
    assert one.status == 200, one.raw
    assert one.json["commune"]["value"] == "Annecy" and one.json["no2"]["value"] == 20.0
    missing = await syndicat.get(f"/entities/urn:ngsi-ld:{AQ}:nowhere")
    assert missing.status == 404 and missing.problem() == "ResourceNotFound"
    assert (await syndicat.get(f"/entities/urn:ngsi-ld:{AQ}:annecy-2", params={"local": "true"})).status == 404


async def test_down_and_slow_neighbours_give_a_partial_answer(stores: list[StoreServer]) -> None:
    syndicat, annecy, _ = stores
    assert (await annecy.post("/entities", air("annecy", 1))).status == 201
    assert (await syndicat.post("/entities", air("syndicat", 1))).status == 201
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()  # never answers within the federation timeout
        return web.json_response([])

    app = web.Application()
    app.router.add_get("/ngsi-ld/v1/entities", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    slow_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", slow_port).start()
    try:
        down = f"http://127.0.0.1:{free_port()}"
        for reg in (registration("annecy", root(annecy), commune="Annecy"),
                    registration("down", down, commune="Down"),
                    registration("slow", f"http://127.0.0.1:{slow_port}", commune="Slow")):
            assert (await syndicat.post(REGS, reg)).status == 201
        got = await syndicat.get("/entities", params={"type": AQ})
        assert got.status == 200, got.raw
        assert sorted(by_id(got.json)) == [f"urn:ngsi-ld:{AQ}:annecy-1", f"urn:ngsi-ld:{AQ}:syndicat-1"]
        warning = got.headers["NGSILD-Warning"]
        assert "urn:ngsi-ld:ContextSourceRegistration:down" in warning and "unreachable" in warning
        assert "urn:ngsi-ld:ContextSourceRegistration:slow" in warning and "no answer within" in warning
        assert "ContextSourceRegistration:annecy" not in warning
    finally:
        release.set()
        await runner.cleanup()


async def test_registration_loop_is_detected_and_ends(stores: list[StoreServer]) -> None:
    a, b, _ = stores
    assert (await a.post("/entities", air("a", 1))).status == 201
    assert (await b.post("/entities", air("b", 1))).status == 201
    assert (await a.post(REGS, registration("to-b", root(b)))).status == 201
    assert (await b.post(REGS, registration("to-a", root(a)))).status == 201

    got = await a.get("/entities", params={"type": AQ})
    assert got.status == 200, got.raw
    assert sorted(by_id(got.json)) == [f"urn:ngsi-ld:{AQ}:a-1", f"urn:ngsi-ld:{AQ}:b-1"]

    # a request that already went through a store is refused by it: LoopDetected (508)
    me = store_identity(a.settings)
    via = f"1.1 {store_identity(b.settings)}, 1.1 {me}"
    looped = await a.get("/entities", params={"type": AQ}, headers={"Via": via})
    assert looped.status == 508 and looped.problem() == "LoopDetected"
    # B, asked directly, tells that its forward to A came back as a loop
    from_b = await b.get("/entities", params={"type": AQ})
    assert sorted(by_id(from_b.json)) == [f"urn:ngsi-ld:{AQ}:a-1", f"urn:ngsi-ld:{AQ}:b-1"]


@pytest.mark.parametrize(("mode", "local_copy", "remote_copy"), [
    ("exclusive", False, True), ("redirect", False, True), ("inclusive", True, True), ("auxiliary", True, False),
])
async def test_write_modes(stores: list[StoreServer], mode: str, local_copy: bool, remote_copy: bool) -> None:
    syndicat, annecy, _ = stores
    entity_id = f"urn:ngsi-ld:{AQ}:annecy-9"
    reg = registration("w", root(annecy), mode=mode, entities=[{"type": AQ, "id": entity_id}])
    assert (await syndicat.post(REGS, reg)).status == 201

    created = await syndicat.post("/entities", air("annecy", 9))
    assert created.status == 201, created.raw
    assert created.headers["Location"].endswith(entity_id)
    assert ((await syndicat.get(f"/entities/{entity_id}", params={"local": "true"})).status == 200) == local_copy
    assert ((await annecy.get(f"/entities/{entity_id}")).status == 200) == remote_copy

    patched = await syndicat.patch(f"/entities/{entity_id}/attrs", {"no2": {"type": "Property", "value": 50.0}})
    assert patched.status == 204, patched.raw
    if remote_copy:
        assert (await annecy.get(f"/entities/{entity_id}")).json["no2"]["value"] == 50.0
    if local_copy:
        mine = await syndicat.get(f"/entities/{entity_id}", params={"local": "true"})
        assert mine.json["no2"]["value"] == 50.0

    assert (await syndicat.delete(f"/entities/{entity_id}")).status == 204
    assert (await syndicat.get(f"/entities/{entity_id}", params={"local": "true"})).status == 404
    assert (await annecy.get(f"/entities/{entity_id}")).status == 404


async def test_context_source_info_travels_as_headers(stores: list[StoreServer], tmp_path: Path) -> None:
    """A neighbour that requires a token is reached with the token of the registration's contextSourceInfo."""
    syndicat = stores[0]
    secured = StoreServer(replace(StoreSettings(data_dir=tmp_path / "secured"), tokens=frozenset({"s3cret"}),
                                  protect_reads=True, auth_required=True))
    await secured.start()
    try:
        auth = {"Authorization": "Bearer s3cret"}
        assert (await secured.post("/entities", air("secured", 1), headers=auth)).status == 201
        reg = registration("secured", root(secured), commune="Secured")
        reg["contextSourceInfo"].append({"key": "Authorization", "value": "Bearer s3cret"})
        assert (await syndicat.post(REGS, reg)).status == 201
        got = await syndicat.get("/entities", params={"type": AQ})
        assert [e["id"] for e in got.json] == [f"urn:ngsi-ld:{AQ}:secured-1"], got.headers.get("NGSILD-Warning")
        # readers of the registration see the token masked; sending the masked value back keeps the token
        reg_url = f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:secured"
        shown = (await syndicat.get(reg_url)).json["contextSourceInfo"]
        assert {"key": "Authorization", "value": "***"} in shown
        assert (await syndicat.patch(reg_url, {"contextSourceInfo": shown, "registrationName": "s"})).status == 204
        again = await syndicat.get("/entities", params={"type": AQ})
        assert [e["id"] for e in again.json] == [f"urn:ngsi-ld:{AQ}:secured-1"], again.headers.get("NGSILD-Warning")
        # a wrong token is a named partial failure, not an error of the whole query
        bad = registration("secured", root(secured), commune="Secured")
        bad["contextSourceInfo"].append({"key": "Authorization", "value": "Bearer wrong"})
        assert (await syndicat.patch(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:secured",
                                     {"contextSourceInfo": bad["contextSourceInfo"]})).status == 204
        partial = await syndicat.get("/entities", params={"type": AQ})
        assert partial.status == 200 and partial.json == []
        assert "HTTP 401" in partial.headers["NGSILD-Warning"]
    finally:
        await secured.close()


async def test_temporal_queries_are_federated(stores: list[StoreServer]) -> None:
    syndicat, annecy, _ = stores
    for value, at in ((20.0, "2026-01-01T00:00:00Z"), (25.0, "2026-01-01T01:00:00Z")):
        reading = air("annecy", 1, value)
        reading["no2"]["observedAt"] = at
        assert (await annecy.post("/entityOperations/upsert", [reading])).status in (201, 204)
    mine = air("syndicat", 1)
    mine["no2"]["observedAt"] = "2026-01-01T00:30:00Z"
    assert (await syndicat.post("/entities", mine)).status == 201
    assert (await syndicat.post(REGS, registration("annecy", root(annecy), commune="Annecy"))).status == 201
    params = {"type": AQ, "timerel": "after", "timeAt": "2025-12-31T00:00:00Z"}
    got = await syndicat.get("/temporal/entities", params=params)
    assert got.status == 200, got.raw
    found = by_id(got.json)
    assert sorted(found) == [f"urn:ngsi-ld:{AQ}:annecy-1", f"urn:ngsi-ld:{AQ}:syndicat-1"]
    assert sorted(i["value"] for i in found[f"urn:ngsi-ld:{AQ}:annecy-1"]["no2"]) == [20.0, 25.0]
    assert found[f"urn:ngsi-ld:{AQ}:annecy-1"]["commune"]["value"] == "Annecy"
    one = await syndicat.get(f"/temporal/entities/urn:ngsi-ld:{AQ}:annecy-1", params={"timerel": "after",
                                                                                      "timeAt": "2025-12-31T00:00:00Z"})
    assert one.status == 200 and len(one.json["no2"]) == 2
    local = await syndicat.get("/temporal/entities", params={**params, "local": "true"})
    assert [e["id"] for e in local.json] == [f"urn:ngsi-ld:{AQ}:syndicat-1"]


async def test_inclusive_write_partial_failures_answer_207(stores: list[StoreServer]) -> None:
    syndicat, annecy, _ = stores
    entity_id = f"urn:ngsi-ld:{AQ}:annecy-7"
    assert (await syndicat.post("/entities", air("annecy", 7), params={"local": "true"})).status == 201
    assert (await syndicat.post(REGS, registration("inc", root(annecy), entities=[{"type": AQ}]))).status == 201
    # exists locally (409 here) and is created at the source: 207 naming the local failure
    created = await syndicat.post("/entities", air("annecy", 7))
    assert created.status == 207, created.raw
    assert created.json["errors"][0]["error"]["status"] == 409
    assert (await annecy.get(f"/entities/{entity_id}")).status == 200
    # a malformed entity goes nowhere
    bad = await syndicat.post("/entities", {"id": "not a uri", "type": AQ})
    assert bad.status == 400 and bad.problem() == "BadRequestData"
    # a source that is down: the local write stands, the answer names the registration that failed
    down = registration("down", f"http://127.0.0.1:{free_port()}", entities=[{"type": AQ}])
    assert (await syndicat.post(REGS, down)).status == 201
    patched = await syndicat.patch(f"/entities/{entity_id}/attrs", {"no2": {"type": "Property", "value": 60.0}})
    assert patched.status == 207, patched.raw
    errors = patched.json["errors"]
    assert [e.get("registrationId") for e in errors] == ["urn:ngsi-ld:ContextSourceRegistration:down"]
    assert errors[0]["error"]["status"] == 502 and "unreachable" in errors[0]["error"]["detail"]
    assert (await syndicat.get(f"/entities/{entity_id}", params={"local": "true"})).json["no2"]["value"] == 60.0
    assert (await annecy.get(f"/entities/{entity_id}")).json["no2"]["value"] == 60.0


async def test_exclusive_registered_attributes_live_at_the_source(stores: list[StoreServer]) -> None:
    """An exclusive registration of one attribute: that attribute goes to the source, the rest stays here."""
    syndicat, annecy, _ = stores
    entity_id = f"urn:ngsi-ld:{AQ}:annecy-5"
    reg = registration("no2", root(annecy), mode="exclusive", entities=[{"type": AQ, "id": entity_id}],
                       commune="Annecy")
    reg["information"][0]["propertyNames"] = ["no2"]
    assert (await syndicat.post(REGS, reg)).status == 201
    assert (await syndicat.post("/entities", air("annecy", 5))).status == 201
    remote = (await annecy.get(f"/entities/{entity_id}")).json
    assert "no2" in remote and "location" not in remote
    mine = (await syndicat.get(f"/entities/{entity_id}", params={"local": "true"})).json
    assert "location" in mine and "no2" not in mine
    merged = (await syndicat.get(f"/entities/{entity_id}")).json
    assert merged["no2"]["value"] == 20.0 and "location" in merged and merged["commune"]["value"] == "Annecy"

    patched = await syndicat.patch(f"/entities/{entity_id}/attrs", {"no2": {"type": "Property", "value": 40.0}})
    assert patched.status == 204, patched.raw
    assert (await annecy.get(f"/entities/{entity_id}")).json["no2"]["value"] == 40.0
    assert "no2" not in (await syndicat.get(f"/entities/{entity_id}", params={"local": "true"})).json
    assert (await syndicat.delete(f"/entities/{entity_id}/attrs/no2")).status == 204
    assert "no2" not in (await annecy.get(f"/entities/{entity_id}")).json


async def test_batch_operations_follow_the_modes(stores: list[StoreServer]) -> None:
    """A batch upsert at the syndicat: exclusive entities go to their commune, inclusive ones to both."""
    syndicat, annecy, seynod = stores
    exclusive = registration("exc", root(annecy), mode="exclusive", entities=[{"type": AQ, "idPattern": ".*annecy.*"}])
    inclusive = registration("inc", root(seynod), entities=[{"type": AQ, "idPattern": ".*seynod.*"}])
    for reg in (exclusive, inclusive):
        assert (await syndicat.post(REGS, reg)).status == 201
    batch = [air("annecy", 1), air("seynod", 1), air("syndicat", 1)]
    created = await syndicat.post("/entityOperations/create", batch)
    assert created.status == 201, created.raw
    assert sorted(created.json) == sorted(e["id"] for e in batch)
    local = await syndicat.get("/entities", params={"type": AQ, "local": "true"})
    assert sorted(e["id"] for e in local.json) == [f"urn:ngsi-ld:{AQ}:seynod-1", f"urn:ngsi-ld:{AQ}:syndicat-1"]
    for store, name in ((annecy, "annecy"), (seynod, "seynod")):
        assert [e["id"] for e in (await store.get("/entities", params={"type": AQ})).json] == [
            f"urn:ngsi-ld:{AQ}:{name}-1"]

    # seynod down: its part of the batch fails and is named, the rest is applied
    await seynod.stop()
    upserted = await syndicat.post("/entityOperations/upsert", [air("annecy", 1, 50.0), air("seynod", 1, 50.0)])
    assert upserted.status == 207, upserted.raw
    assert upserted.json["success"] == [f"urn:ngsi-ld:{AQ}:annecy-1"]
    assert [(e["entityId"], e["registrationId"]) for e in upserted.json["errors"]] == [
        (f"urn:ngsi-ld:{AQ}:seynod-1", "urn:ngsi-ld:ContextSourceRegistration:inc")]
    assert (await annecy.get(f"/entities/urn:ngsi-ld:{AQ}:annecy-1")).json["no2"]["value"] == 50.0
    await seynod.start()
    deleted = await syndicat.post("/entityOperations/delete", [f"urn:ngsi-ld:{AQ}:annecy-1"])
    assert deleted.status == 204, deleted.raw
    assert (await annecy.get(f"/entities/urn:ngsi-ld:{AQ}:annecy-1")).status == 404


async def test_purge_reaches_the_sources(stores: list[StoreServer]) -> None:
    syndicat, annecy, seynod = stores
    assert (await annecy.post("/entities", air("annecy", 1))).status == 201
    assert (await seynod.post("/entities", air("seynod", 1))).status == 201
    assert (await syndicat.post("/entities", air("syndicat", 1))).status == 201
    assert (await syndicat.post(REGS, registration("inc", root(annecy)))).status == 201
    assert (await syndicat.post(REGS, registration("aux", root(seynod), mode="auxiliary"))).status == 201
    assert (await syndicat.delete("/entities", params={"type": AQ})).status == 204
    assert (await syndicat.get("/entities", params={"type": AQ, "local": "true"})).json == []
    assert (await annecy.get("/entities", params={"type": AQ})).json == []
    assert len((await seynod.get("/entities", params={"type": AQ})).json) == 1  # auxiliary: never written
    # local=true alone still purges this store only
    made = await syndicat.post("/entities", air("syndicat", 2))
    assert made.status == 201, made.raw
    assert (await syndicat.delete("/entities", params={"local": "true"})).status == 204
    assert len((await annecy.get("/entities", params={"type": AQ})).json) == 1


async def test_non_owner_readers_under_a_sharing_policy_get_local_answers_only(
    stores: list[StoreServer], tmp_path: Path
) -> None:
    """Sources answer with the syndicat's credentials: a public reader must not get their data through it."""
    from gateway.store import sharing

    _, annecy, _ = stores
    policy = tmp_path / "sharing.yaml"
    policy.write_text("version: 1\ntenants:\n  '':\n    share:\n      - with: [public]\n"
                      f"        types: [{AQ}]\n", encoding="utf-8")
    syndicat = StoreServer(replace(StoreSettings(data_dir=tmp_path / "policed"), tokens=frozenset({"own3r"}),
                                   sharing=sharing.load(policy)))
    await syndicat.start()
    try:
        owner = {"Authorization": "Bearer own3r"}
        assert (await annecy.post("/entities", air("annecy", 1))).status == 201
        assert (await syndicat.post("/entities", air("syndicat", 1), headers=owner)).status == 201
        reg = registration("annecy", root(annecy), commune="Annecy")
        assert (await syndicat.post(REGS, reg, headers=owner)).status == 201
        public = await syndicat.get("/entities", params={"type": AQ})
        assert public.status == 200 and [e["id"] for e in public.json] == [f"urn:ngsi-ld:{AQ}:syndicat-1"]
        mine = await syndicat.get("/entities", params={"type": AQ}, headers=owner)
        assert sorted(by_id(mine.json)) == [f"urn:ngsi-ld:{AQ}:annecy-1", f"urn:ngsi-ld:{AQ}:syndicat-1"]
    finally:
        await syndicat.close()


async def test_federated_reads_are_audited_per_registration(stores: list[StoreServer], tmp_path: Path) -> None:
    """Who read what, when and through which registration: one audit row per source, readable by the operator."""
    _, annecy, seynod = stores
    token = "audit-operator-token-0123456789"
    syndicat = StoreServer(replace(StoreSettings(data_dir=tmp_path / "audited", tokens=frozenset({token})),
                                   federation_timeout=1.0))
    await syndicat.start()
    auth = {"Authorization": f"Bearer {token}"}
    try:
        assert (await annecy.post("/entities", air("annecy", 1))).status == 201
        for name, server in (("annecy", annecy), ("seynod", seynod)):
            made = await syndicat.request("POST", REGS, json_body=registration(name, root(server), commune=name),
                                          headers=auth)
            assert made.status == 201, made.raw
        await seynod.stop()  # a failed source is audited too, with its failure status
        got = await syndicat.get("/entities", params={"type": AQ, "q": "no2>1"})
        assert got.status == 200 and [e["id"] for e in got.json] == [f"urn:ngsi-ld:{AQ}:annecy-1"]

        assert (await syndicat.get("/jonction/audit")).status == 401
        log = await syndicat.request("GET", "/jonction/audit", headers=auth)
        assert log.status == 200, log.raw
        rows = {row["via"]: row for row in log.json}
        assert set(rows) == {f"urn:ngsi-ld:ContextSourceRegistration:{n}" for n in ("annecy", "seynod")}
        annecy_row = rows["urn:ngsi-ld:ContextSourceRegistration:annecy"]
        assert (annecy_row["principal"], annecy_row["path"], annecy_row["returned"], annecy_row["status"]) == (
            "owner", "/entities", 1, 200)
        assert rows["urn:ngsi-ld:ContextSourceRegistration:seynod"]["status"] >= 500
        assert annecy_row["query"] == "type=AirQualityObserved&q=no2%3E1"
        assert token.encode() not in log.raw
    finally:
        await syndicat.close()
