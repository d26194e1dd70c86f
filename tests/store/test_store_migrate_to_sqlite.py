"""``jonction store migrate-data --from postgresql://… --to sqlite:///…``: the way back, verified."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")

from gateway.cli import main as cli_main  # (after the skip: the backend imports asyncpg)
from gateway.store.settings import StoreSettings
from tests.store.conftest import StoreServer, streetlight
from tests.store.test_subscriptions import Receiver, create, receiver, sub

REGISTRATION = {"id": "urn:ngsi-ld:ContextSourceRegistration:neighbour", "type": "ContextSourceRegistration",
                "information": [{"entities": [{"type": "Streetlight"}]}], "endpoint": "http://neighbour.example/ngsi"}
"""A context source registration: migrate-data carries it like a subscription."""
CSOURCE_SUBSCRIPTION = {"id": "urn:ngsi-ld:Subscription:neighbours", "type": "Subscription",
                        "entities": [{"type": "Parking"}],
                        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}}
"""A subscription to registrations (none matches Parking, so nothing is notified): carried too."""

__all__ = ["receiver"]  # the fixture, imported for the test below

LAMP = "urn:ngsi-ld:Streetlight:3"
AGGREGATED = {"timerel": "between", "timeAt": "2026-01-01T00:00:00Z", "endTimeAt": "2026-04-01T00:00:00Z",
              "options": "aggregatedValues", "aggrMethods": "totalCount,sum,max", "aggrPeriodDuration": "P1M"}


async def test_a_postgresql_store_is_copied_into_sqlite_and_verified(
    tmp_path: Path, postgres_url: str, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    pg = StoreServer(StoreSettings(data_dir=tmp_path / "pg", database=postgres_url))
    await pg.start()
    answers = {}
    try:
        for tenant in ("", "commune-a"):
            headers = {"NGSILD-Tenant": tenant} if tenant else {}
            for step in range(3):
                batch = [streetlight(n, illuminanceLevel={"type": "Property", "value": n + step,
                                                          "observedAt": f"2026-0{step + 1}-15T00:00:00Z"})
                         for n in range(20)]
                reply = await pg.post("/entityOperations/upsert", batch, headers=headers)
                assert reply.status in (201, 204), reply.raw
            reply = await pg.delete(f"/entities/{LAMP}/attrs/powerState", headers=headers)
            assert reply.status == 204, reply.raw
        await create(pg, sub(receiver, "/back"))
        reply = await pg.post("/csourceRegistrations", REGISTRATION, headers={"NGSILD-Tenant": "commune-a"})
        assert reply.status == 201, reply.raw
        reply = await pg.post("/csourceSubscriptions", CSOURCE_SUBSCRIPTION)
        assert reply.status == 201, reply.raw
        reply = await pg.post("/jsonldContexts", {"@context": {"lum": "https://example.org/lum"}})
        assert reply.status == 201, reply.raw
        tenant_a = {"NGSILD-Tenant": "commune-a"}
        answers["entity"] = (await pg.get(f"/entities/{LAMP}", params={"options": "sysAttrs"},
                                          headers=tenant_a)).json
        answers["history"] = (await pg.get(f"/temporal/entities/{LAMP}", params={"options": "sysAttrs"},
                                           headers=tenant_a)).json
        answers["aggregated"] = (await pg.get(f"/temporal/entities/{LAMP}", params=AGGREGATED)).json
    finally:
        await pg.close()

    target = f"sqlite:///{tmp_path / 'lite' / 'store.sqlite'}"
    (tmp_path / "lite").mkdir()
    code = await asyncio.to_thread(cli_main, ["store", "migrate-data", "--from", postgres_url, "--to", target])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tenant commune-a: 20 entities" in out and ": ok" in out and "verified" in out, out
    assert "1 hosted @contexts, 1 subscriptions, 1 context source registrations, 1 context source subscriptions" in out

    lite = StoreServer(StoreSettings(data_dir=tmp_path / "lite"))
    await lite.start()
    try:
        tenant_a = {"NGSILD-Tenant": "commune-a"}
        entity = (await lite.get(f"/entities/{LAMP}", params={"options": "sysAttrs"}, headers=tenant_a)).json
        assert entity == answers["entity"]  # createdAt/modifiedAt kept
        history = (await lite.get(f"/temporal/entities/{LAMP}", params={"options": "sysAttrs"}, headers=tenant_a)).json
        assert history == answers["history"]  # instanceIds and times kept
        assert (await lite.get(f"/temporal/entities/{LAMP}", params=AGGREGATED)).json == answers["aggregated"]
        subscriptions = (await lite.get("/subscriptions")).json
        assert [s["notification"]["endpoint"]["uri"] for s in subscriptions] == [receiver.url("/back")]
        assert (await lite.get("/jsonldContexts")).status == 200
        registration = (await lite.get(f"/csourceRegistrations/{REGISTRATION['id']}", headers=tenant_a)).json
        assert registration["endpoint"] == REGISTRATION["endpoint"]
        csub = (await lite.get(f"/csourceSubscriptions/{CSOURCE_SUBSCRIPTION['id']}")).json
        assert csub["entities"] == [{"type": "Parking"}]
    finally:
        await lite.close()
    # a second copy into the same store is refused rather than mixed
    again = await asyncio.to_thread(cli_main, ["store", "migrate-data", "--from", postgres_url, "--to", target])
    assert again != 0
    assert "already holds entities" in capsys.readouterr().err
