"""Tenancy (NGSILD-Tenant) and access control (bearer tokens) over HTTP."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from gateway.errors import ConfigInvalid
from gateway.store.app import StoreSettings, create_store_app, load_tokens
from gateway.store.security import token_matches
from tests.store.conftest import BACKENDS, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

A = {"NGSILD-Tenant": "commune-a"}
B = {"NGSILD-Tenant": "commune-b"}


async def test_tenant_echoed_and_created_implicitly(server: StoreServer) -> None:
    r = await server.post("/entities", streetlight(1), headers=A)
    assert r.status == 201
    assert r.headers["NGSILD-Tenant"] == "commune-a"
    r = await server.get("/entities/urn:ngsi-ld:Streetlight:1", headers=A)
    assert r.status == 200
    assert r.headers["NGSILD-Tenant"] == "commune-a"


async def test_tenants_are_isolated(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1), headers=A)
    await server.post("/entities", streetlight(2), headers=B)
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).status == 404
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:2", headers=A)).status == 404
    r = await server.get("/entities?type=Streetlight", headers=B)
    assert [e["id"] for e in r.json] == ["urn:ngsi-ld:Streetlight:2"]
    # Same id in two tenants: two entities.
    assert (await server.post("/entities", streetlight(2), headers=A)).status == 201
    await server.patch("/entities/urn:ngsi-ld:Streetlight:2/attrs", {"powerState": "off"}, headers=A)
    b_view = (await server.get("/entities/urn:ngsi-ld:Streetlight:2", headers=B)).json
    assert b_view["powerState"]["value"] == "on"
    types_b = (await server.get("/types", headers=B)).json["typeList"]
    assert types_b == ["Streetlight"]
    assert (await server.get("/types")).json["typeList"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/entities/urn:ngsi-ld:Streetlight:1", None),
        ("GET", "/entities?type=Streetlight", None),
        ("PATCH", "/entities/urn:ngsi-ld:Streetlight:1/attrs", {"a": 1}),
        ("POST", "/entities/urn:ngsi-ld:Streetlight:1/attrs", {"a": 1}),
        ("PATCH", "/entities/urn:ngsi-ld:Streetlight:1", {"a": 1}),
        ("PUT", "/entities/urn:ngsi-ld:Streetlight:1", {"a": 1}),
        ("DELETE", "/entities/urn:ngsi-ld:Streetlight:1", None),
        ("DELETE", "/entities/urn:ngsi-ld:Streetlight:1/attrs/a", None),
        ("POST", "/entityOperations/update", [{"id": "urn:ngsi-ld:Streetlight:1", "a": 1}]),
        ("POST", "/entityOperations/delete", ["urn:ngsi-ld:Streetlight:1"]),
        ("POST", "/entityOperations/merge", [{"id": "urn:ngsi-ld:Streetlight:1", "a": 1}]),
        ("POST", "/entityOperations/query", {"type": "Query", "entities": [{"type": "X"}]}),
        ("GET", "/types", None),
        ("GET", "/attributes", None),
    ],
)
async def test_unknown_tenant_is_nonexistent_tenant(server: StoreServer, method: str, path: str, body: object) -> None:
    r = await server.request(method, path, json_body=body, headers={"NGSILD-Tenant": "ghost"})
    assert r.status == 404
    assert r.problem() == "NonexistentTenant"
    assert r.headers["NGSILD-Tenant"] == "ghost"


@pytest.mark.parametrize("path", ["/entityOperations/create", "/entityOperations/upsert"])
async def test_batch_create_and_upsert_create_the_tenant(server: StoreServer, path: str) -> None:
    r = await server.post(path, [streetlight(1)], headers={"NGSILD-Tenant": "new-one"})
    assert r.status == 201
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:1", headers={"NGSILD-Tenant": "new-one"})).status == 200


async def test_failed_create_does_not_leave_entity(server: StoreServer) -> None:
    r = await server.post("/entities", {"id": "bad"}, headers={"NGSILD-Tenant": "t1"})
    assert r.status == 400


@pytest.mark.parametrize("tenant", ["bad tenant", "a" * 200, "é"])
async def test_malformed_tenant_is_bad_request(server: StoreServer, tenant: str) -> None:
    r = await server.get("/entities?type=X", headers={"NGSILD-Tenant": tenant})
    assert r.status == 400


async def test_tenant_survives_restart(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1), headers=A)
    await server.restart()
    r = await server.get("/entities/urn:ngsi-ld:Streetlight:1", headers=A)
    assert r.status == 200


# --------------------------------------------------------------------------- security


async def test_writes_need_a_token(secured: StoreServer) -> None:
    r = await secured.post("/entities", streetlight(1))
    assert r.status == 401
    assert r.problem() == "Unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await secured.post("/entities", streetlight(1), headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    r = await secured.post("/entities", streetlight(1), headers={"Authorization": "Bearer sesame"})
    assert r.status == 201
    r = await secured.post("/entities", streetlight(2), headers={"Authorization": "Basic sesame"})
    assert r.status == 401


async def test_reads_open_by_default(secured: StoreServer) -> None:
    await secured.post("/entities", streetlight(1), headers={"Authorization": "Bearer sesame"})
    assert (await secured.get("/entities/urn:ngsi-ld:Streetlight:1")).status == 200


async def test_tenant_token_only_for_its_tenant(secured: StoreServer) -> None:
    auth = {"Authorization": "Bearer alpha"}
    assert (await secured.post("/entities", streetlight(1), headers={**auth, **A})).status == 201
    assert (await secured.post("/entities", streetlight(1), headers={**auth, **B})).status == 401
    assert (await secured.post("/entities", streetlight(1), headers=auth)).status == 401


async def test_protected_reads(tmp_path: Path) -> None:
    settings = StoreSettings(data_dir=tmp_path, auth_required=True, protect_reads=True, tokens=frozenset({"k"}))
    srv = StoreServer(settings)
    await srv.start()
    try:
        assert (await srv.get("/types")).status == 401
        assert (await srv.get("/types", headers={"Authorization": "Bearer k"})).status == 200
    finally:
        await srv.close()


def test_non_loopback_without_token_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match="bearer token"):
        create_store_app(StoreSettings(data_dir=tmp_path, host="0.0.0.0"))
    app = create_store_app(StoreSettings(data_dir=tmp_path, host="0.0.0.0", tokens=frozenset({"t"})))
    assert app is not None


@pytest.mark.parametrize(
    ("host", "required"), [("127.0.0.1", False), ("::1", False), ("localhost", False), ("0.0.0.0", True),
                           ("192.168.1.10", True), ("", True)]
)
def test_auth_required_unless_loopback(host: str, required: bool) -> None:
    assert StoreSettings(host=host).requires_auth is required
    assert replace(StoreSettings(host=host), auth_required=False).requires_auth is False


def test_load_tokens(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    f.write_text("# comment\nglobal-token\ncommune-a alpha  # inline\n- default-only\n\n")
    everyone, per = load_tokens(f, env={"JONCTION_STORE_TOKEN": " from-env "})
    assert everyone == {"global-token", "from-env"}
    assert per == {"commune-a": {"alpha"}, "": {"default-only"}}
    f.write_text("a b c\n")
    with pytest.raises(ConfigInvalid, match=":1:"):
        load_tokens(f, env={})
    with pytest.raises(ConfigInvalid, match="cannot read"):
        load_tokens(tmp_path / "missing", env={})


def test_token_matches() -> None:
    assert token_matches("abc", frozenset({"x", "abc"}))
    assert not token_matches("abcd", frozenset({"abc"}))
    assert not token_matches("", frozenset())


async def test_tokens_never_logged(secured: StoreServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    await secured.post("/entities", streetlight(1), headers={"Authorization": "Bearer sesame"})
    await secured.post("/entities", streetlight(2), headers={"Authorization": "Bearer wrong-secret"})
    assert "sesame" not in caplog.text and "wrong-secret" not in caplog.text
