"""The audit log of cross-tenant reads: written for every non-owner read, queryable by the owner, no token in it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.store import audit
from gateway.store.app import StoreSettings
from gateway.store.backends import create_storage
from tests.store.conftest import BACKENDS, StoreServer
from tests.store.test_sharing_reads import (
    OWNER_TOKEN,
    SYNDICAT_TOKEN,
    TENANT_A_TOKEN,
    VOISIN_TOKEN,
    air,
    bearer,
    policies,
)

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

A = {"NGSILD-Tenant": "commune-a"}


@pytest.fixture
async def shared(store_settings: StoreSettings, tmp_path: Path) -> AsyncIterator[StoreServer]:
    """A store with the sharing policy and two air-quality stations in commune-a."""
    settings = replace(store_settings, tokens=frozenset({OWNER_TOKEN}),
                       tenant_tokens={"commune-a": frozenset({TENANT_A_TOKEN})}, sharing=policies(tmp_path))
    srv = StoreServer(settings)
    await srv.start()
    try:
        for entity in (air(1, 10), air(2, 30)):
            assert (await srv.post("/entities", entity, headers={**A, **bearer(OWNER_TOKEN)})).status == 201
        yield srv
    finally:
        await srv.close()


async def test_cross_tenant_reads_are_audited_and_tokens_never_kept(shared: StoreServer) -> None:
    await shared.get("/entities", headers={**A, **bearer(SYNDICAT_TOKEN)},
                     params={"type": "AirQualityObserved", "q": f'pm25>0|x=="{VOISIN_TOKEN}"'})
    await shared.get("/entities/urn:ngsi-ld:AirQualityObserved:1", headers=A)
    await shared.get("/entities/urn:ngsi-ld:Open311ServiceRequest:r1", headers=A)
    await shared.get("/entities", headers={**A, **bearer(TENANT_A_TOKEN)}, params={"type": "AirQualityObserved"})
    reply = await shared.get("/jonction/audit", headers=bearer(OWNER_TOKEN))
    assert reply.status == 200, reply.raw
    rows = reply.json
    assert [(r["principal"], r["tenant"], r["status"], r["returned"]) for r in rows] == [
        ("public", "commune-a", 404, 0),
        ("public", "commune-a", 200, 1),
        ("syndicat", "commune-a", 200, 2),
    ]  # newest first; the owner's own read is not a cross-tenant read
    assert rows[2]["path"] == "/ngsi-ld/v1/entities" and "type=AirQualityObserved" in rows[2]["query"]
    assert rows[1]["path"] == "/ngsi-ld/v1/entities/urn:ngsi-ld:AirQualityObserved:1"
    assert all(r["at"].endswith("Z") for r in rows)
    for secret in (SYNDICAT_TOKEN, VOISIN_TOKEN, OWNER_TOKEN, TENANT_A_TOKEN, "access_token"):
        assert secret not in reply.raw.decode()
    only = await shared.get("/jonction/audit", headers=bearer(OWNER_TOKEN),
                            params={"principal": "syndicat", "tenant": "commune-a", "limit": "5"})
    assert [r["principal"] for r in only.json] == ["syndicat"]
    later = await shared.get("/jonction/audit", headers=bearer(OWNER_TOKEN), params={"since": "2999-01-01T00:00:00Z"})
    assert later.json == []


async def test_only_a_global_store_token_reads_the_audit_log(shared: StoreServer) -> None:
    for headers in ({}, bearer(SYNDICAT_TOKEN), bearer(TENANT_A_TOKEN)):
        reply = await shared.get("/jonction/audit", headers=headers)
        assert reply.status == 401
    assert (await shared.get("/jonction/audit", headers=bearer(OWNER_TOKEN), params={"limit": "0"})).status == 400
    since = await shared.get("/jonction/audit", headers=bearer(OWNER_TOKEN), params={"since": "yesterday"})
    assert since.status == 400


async def test_federated_reads_record_their_registration_and_old_rows_are_pruned(
    shared: StoreServer, store_settings: StoreSettings
) -> None:
    storage = create_storage(store_settings.database_url)
    await storage.start()
    try:
        await audit.record(storage, principal="voisin", tenant="commune-a", path="/ngsi-ld/v1/entities",
                           query="type=ParkingSpot", returned=4, via="urn:ngsi-ld:ContextSourceRegistration:n1")
        old = datetime.now(UTC) - timedelta(days=400)  # written after this hour's prune: kept until the next
        await audit.record(storage, principal="voisin", tenant="commune-a", path="/ngsi-ld/v1/entities", at=old)
        rows = await audit.search(storage, principal="voisin")
        assert [r["via"] for r in rows] == [None, "urn:ngsi-ld:ContextSourceRegistration:n1"]
        assert rows[1]["returned"] == 4
        audit.prune_now(storage)
        await audit.record(storage, principal="voisin", tenant="commune-a", path="/p", retention_days=365)
        rows = await audit.search(storage, principal="voisin")
        assert [(r["path"], r["returned"]) for r in rows] == [("/p", 0), ("/ngsi-ld/v1/entities", 4)]  # old one gone
    finally:
        await storage.close()


def test_query_strings_lose_credentials() -> None:
    cleaned = audit.clean_query('type=A&access_token=abc&apiKey=def&q=x=="s3cr3t-value"', secrets=["s3cr3t-value"])
    assert cleaned == "type=A&q=x%3D%3D%22%2A%2A%2A%22"
