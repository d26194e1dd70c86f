"""The PostgreSQL backend beyond the shared suite: migrations, history, SQL aggregation, two processes,
the same answers as SQLite for q/geo queries, migrate-data, and the database URLs."""

from __future__ import annotations

import asyncio
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")

from gateway.cli import main as cli_main  # noqa: E402  (after the skip: the backend imports asyncpg)
from gateway.errors import ConfigInvalid  # noqa: E402
from gateway.store.backends import describe, open_storage, sqlite_path  # noqa: E402
from gateway.store.base import QuerySpec, Storage  # noqa: E402
from gateway.store.postgres import PostgresStorage, migrations  # noqa: E402
from gateway.store.postgres.history import aggregate, partition_sql  # noqa: E402
from gateway.store.problems import NgsiError  # noqa: E402
from tests.store.conftest import LINK_JONCTION, StoreServer, streetlight  # noqa: E402
from tests.store.test_store_migrate_to_sqlite import CSOURCE_SUBSCRIPTION, REGISTRATION  # noqa: E402
from tests.store.test_subscriptions import Receiver, create, receiver, sensor, sub  # noqa: E402

__all__ = ["receiver"]  # the notification receiver fixture, shared with the subscription tests

JC = "https://smartdatamodels.org/dataModel.Streetlighting/"


async def _fetch(url: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def test_urls_choose_the_backend_and_hide_passwords() -> None:
    """sqlite:/// URLs and plain paths are files; a PostgreSQL URL's password never reaches a message."""
    assert sqlite_path("sqlite:///data/store.sqlite") == Path("data/store.sqlite")
    assert sqlite_path("sqlite:////var/lib/jonction/store.sqlite") == Path("/var/lib/jonction/store.sqlite")
    assert sqlite_path(Path("x.sqlite")) == Path("x.sqlite")
    with pytest.raises(ConfigInvalid):
        sqlite_path("mysql://host/db")
    assert describe("postgresql://jc:s3cret@db:5432/territoire") == "postgresql://jc:***@db:5432/territoire"
    assert "s3cret" not in describe("postgres://jc:s3cret@db/t")


async def test_migrations_apply_once_and_refuse_a_newer_schema(postgres_url: str) -> None:
    """Opening twice applies every migration once; a schema newer than the code is refused, not written."""
    storage = await open_storage(postgres_url)
    await storage.close()
    storage = await open_storage(postgres_url)
    await storage.close()
    rows = await _fetch(postgres_url, "SELECT version FROM jonction_schema ORDER BY version")
    assert [r[0] for r in rows] == [m.version for m in migrations.MIGRATIONS]
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("INSERT INTO jonction_schema(version, name) VALUES($1, 'from the future')",
                           migrations.LATEST + 1)
    finally:
        await conn.close()
    with pytest.raises(ConfigInvalid, match="newer"):
        await open_storage(postgres_url)


def test_cli_migrate_applies_and_exits(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``jonction store --migrate --database URL`` creates the tables and returns."""
    assert cli_main(["store", "--migrate", "--database", postgres_url]) == 0
    assert "is migrated" in capsys.readouterr().out


async def test_history_is_recorded_by_month_and_aggregated_in_sql(postgres_url: str) -> None:
    """Each write appends its instances to the month's partition; aggregatedValues come from SQL."""
    storage = await open_storage(postgres_url)
    start = datetime(2026, 1, 31, 12, tzinfo=UTC)
    try:
        for hour in range(48):  # two days across a month boundary
            moment = (start + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:%M:%SZ")
            entity = streetlight(1)
            entity["powerState"] = {"type": "Property", "value": hour, "observedAt": moment}
            result = await storage.upsert("t", [entity], context="https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld")
            assert not result.errors, result
        await storage.update_entities("t", [])  # nothing to do: no history row
        partitions = {r[0] for r in await _fetch(
            postgres_url, "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'history'::regclass")}
        assert {"history_y2026m01", "history_y2026m02"} <= partitions
        attr = "https://uri.etsi.org/ngsi-ld/default-context/powerState"
        count = (await _fetch(postgres_url, "SELECT count(*) FROM history WHERE attr = $1", attr))[0][0]
        assert count == 48
        assert storage.__class__ is PostgresStorage
        pool = storage._db()  # type: ignore[attr-defined]
        async with pool.acquire() as conn:
            buckets = await aggregate(conn, "t", ["urn:ngsi-ld:Streetlight:1"], attr, start, start + timedelta(days=2),
                                      timedelta(days=1))
        assert [(b.count, b.minimum, b.maximum, b.avg) for b in buckets] == [(24, 0, 23, 11.5), (24, 24, 47, 35.5)]
        assert buckets[0].total == sum(range(24))
    finally:
        await storage.close()


def test_partitions_are_calendar_months() -> None:
    """December's partition ends on the first of January of the next year."""
    assert "FROM ('2026-12-01') TO ('2027-01-01')" in partition_sql(2026, 12)


async def test_two_processes_on_one_database_see_each_other(postgres_url: str) -> None:
    """Two storages (as two store processes) on one database: tenants and writes of one are read by the other."""
    first = await open_storage(postgres_url)
    second = await open_storage(postgres_url)
    try:
        assert not await second.tenant_exists("commune-b")
        await first.upsert("commune-b", [streetlight(n) for n in range(5)])
        assert await second.tenant_exists("commune-b")
        assert await second.count("commune-b", "Streetlight") == 5
        await second.delete_entities("commune-b", ["urn:ngsi-ld:Streetlight:0"])
        assert await first.get("commune-b", "urn:ngsi-ld:Streetlight:0") is None
        assert "commune-b" in await first.tenants()
    finally:
        await first.close()
        await second.close()


async def test_hosted_contexts_and_nul_characters(postgres_url: str) -> None:
    """A context hosted through one process is served by the other; U+0000 is a 400, not a 500."""
    first = await open_storage(postgres_url)
    second = await open_storage(postgres_url)
    second.context_refresh = 0.1  # type: ignore[attr-defined]
    try:
        await asyncio.sleep(0.3)  # the follower has read the (empty) set once
        await first.put_context("ctx-1", {"@context": {"lum": "https://example.org/lum"}})
        await _wait_for(lambda: "ctx-1" in second.hosted_contexts(), 5)
        entity = streetlight(1)
        entity["powerState"]["value"] = "o\x00n"
        with pytest.raises(NgsiError) as caught:
            await first.upsert("", [entity])
        assert caught.value.type == "BadRequestData"
    finally:
        await first.close()
        await second.close()


@pytest.fixture
async def both(tmp_path: Path, postgres_url: str) -> Any:
    """The same random territory in a SQLite store and a PostgreSQL store."""
    rng = random.Random(7)
    entities = []
    for n in range(300):
        entity = streetlight(n)
        entity["location"]["value"]["coordinates"] = [round(2.2 + rng.random() * 0.3, 5),
                                                      round(48.75 + rng.random() * 0.2, 5)]
        kind = n % 6
        if kind == 0:
            entity["illuminanceLevel"] = {"type": "Property", "value": rng.randint(0, 100)}
        elif kind == 1:
            entity["illuminanceLevel"] = {"type": "Property", "value": str(rng.randint(0, 100))}
        elif kind == 2:
            entity["illuminanceLevel"] = [
                {"type": "Property", "value": rng.randint(0, 100), "datasetId": "urn:ngsi-ld:Dataset:a"},
                {"type": "Property", "value": rng.randint(0, 100), "datasetId": "urn:ngsi-ld:Dataset:b"},
            ]
        elif kind == 3:
            entity["illuminanceLevel"] = {"type": "Property", "value": [rng.randint(0, 100), 7]}
        elif kind == 4:
            entity["illuminanceLevel"] = {"type": "Property", "value": rng.random() * 100,
                                          "observedAt": "2026-11-22T02:00:00Z"}
        entity["powerState"]["value"] = rng.choice(["on", "off", "dimmed"])
        if n % 7 == 0:
            entity["scope"] = rng.choice(["/Paris/Nord", "/Paris/Sud", "/Lyon"])
        entities.append(entity)
    stores: list[Storage] = [await open_storage(tmp_path / "store.sqlite"), await open_storage(postgres_url)]
    for storage in stores:
        result = await storage.upsert("", entities)
        assert not result.errors
    yield stores
    for storage in stores:
        await storage.close()


QUERIES = [
    {"type": "Streetlight", "q": "illuminanceLevel>50"},
    {"type": "Streetlight", "q": "illuminanceLevel==10..40", "count": "true"},
    {"type": "Streetlight", "q": "illuminanceLevel==7,12,50"},
    {"type": "Streetlight", "q": "illuminanceLevel<20;powerState==\"on\""},
    {"type": "Streetlight", "q": "illuminanceLevel>=90|powerState==\"dimmed\"", "limit": "7", "offset": "3"},
    {"type": "Streetlight", "q": "!illuminanceLevel", "count": "true"},
    {"type": "Streetlight", "q": "illuminanceLevel.observedAt>2026-01-01T00:00:00Z"},
    {"type": "Streetlight", "q": "illuminanceLevel~=^1"},
    {"type": "Streetlight", "scopeQ": "/Paris/#"},
    {"type": "Streetlight", "georel": "near;maxDistance==2000", "geometry": "Point", "coordinates": "[2.35,48.85]",
     "count": "true"},
    {"type": "Streetlight", "georel": "within", "geometry": "Polygon",
     "coordinates": "[[[2.2,48.75],[2.35,48.75],[2.35,48.85],[2.2,48.85],[2.2,48.75]]]", "q": "illuminanceLevel>30"},
    {"type": "Streetlight", "q": "illuminanceLevel>20", "orderBy": "illuminanceLevel;desc,id", "limit": "50"},
    {"attrs": "illuminanceLevel", "count": "true", "limit": "100"},
    {"idPattern": "Streetlight:1[0-9]$"},
]


@pytest.mark.parametrize("params", QUERIES, ids=[str(i) for i in range(len(QUERIES))])
async def test_postgresql_answers_what_sqlite_answers(tmp_path: Path, postgres_url: str,
                                                      params: dict[str, str]) -> None:
    """Over HTTP, every query answers the same entities, in the same order, with the same count."""
    from gateway.store.settings import StoreSettings

    answers = []
    for database in (None, postgres_url):
        server = StoreServer(StoreSettings(data_dir=tmp_path / "data", allow_unfiltered_queries=True,
                                           database=database))
        await server.start()
        try:
            entities = _territory()
            reply = await server.post("/entityOperations/upsert", entities, headers={"Link": LINK_JONCTION})
            assert reply.status == 201, reply.raw
            reply = await server.get("/entities", params={"limit": "1000", **params},
                                     headers={"Link": LINK_JONCTION})
            assert reply.status == 200, reply.raw
            answers.append(([e["id"] for e in reply.json], reply.headers.get("NGSILD-Results-Count")))
        finally:
            await server.close()
    assert answers[0] == answers[1]
    assert answers[0][0] or params.get("q") == "illuminanceLevel~=^1", "the query should find something"


def _territory() -> list[dict[str, Any]]:
    rng = random.Random(11)
    out = []
    for n in range(200):
        entity = streetlight(n)
        entity["location"]["value"]["coordinates"] = [round(2.2 + rng.random() * 0.3, 5),
                                                      round(48.75 + rng.random() * 0.2, 5)]
        kind = n % 5
        if kind == 0:
            entity["illuminanceLevel"] = {"type": "Property", "value": rng.randint(0, 100)}
        elif kind == 1:
            entity["illuminanceLevel"] = {"type": "Property", "value": str(rng.randint(0, 100))}
        elif kind == 2:
            entity["illuminanceLevel"] = [
                {"type": "Property", "value": rng.randint(0, 100), "datasetId": "urn:ngsi-ld:Dataset:a"},
                {"type": "Property", "value": rng.randint(0, 100), "datasetId": "urn:ngsi-ld:Dataset:b"},
            ]
        elif kind == 3:
            entity["illuminanceLevel"] = {"type": "Property", "value": rng.random() * 100,
                                          "observedAt": "2026-11-22T02:00:00Z"}
        entity["powerState"]["value"] = rng.choice(["on", "off", "dimmed"])
        if n % 7 == 0:
            entity["scope"] = rng.choice(["/Paris/Nord", "/Paris/Sud", "/Lyon"])
        out.append(entity)
    return out


async def test_storage_queries_agree(both: list[Storage]) -> None:
    """The storage-level prefilters (types, attrs, bbox, counts, paging) agree between the backends."""
    sqlite, postgres = both
    t = [JC + "Streetlight"]
    for spec in (
        QuerySpec(types=t, limit=10, offset=25, count=True),
        QuerySpec(types=t, id_pattern="[05]$", limit=4, count=True),
        QuerySpec(bbox=(2.3, 48.8, 2.4, 48.9), geoproperty="https://uri.etsi.org/ngsi-ld/location", count=True,
                  limit=1000),
        QuerySpec(attrs=["https://uri.etsi.org/ngsi-ld/default-context/illuminanceLevel"], count=True, limit=5),
    ):
        a = await sqlite.query("", spec)
        b = await postgres.query("", spec)
        assert ([d["id"] for d in a.docs], a.count, a.more) == ([d["id"] for d in b.docs], b.count, b.more)
    assert await sqlite.type_info("") == await postgres.type_info("")


async def _wait_for(predicate: Any, seconds: float = 8.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_two_store_processes_notify_once_and_hand_over(tmp_path: Path, postgres_url: str,
                                                             receiver: Receiver) -> None:
    """Two stores on one database: a subscription made through one notifies once for writes through
    the other; when the notifying one stops, the other takes over without losing the writes meanwhile."""
    from gateway.store.settings import StoreSettings

    first = StoreServer(StoreSettings(data_dir=tmp_path / "a", database=postgres_url))
    second = StoreServer(StoreSettings(data_dir=tmp_path / "b", database=postgres_url))
    await first.start()  # takes the notifier lock first
    await asyncio.sleep(0.3)
    await second.start()
    try:
        sub_id = await create(first, sub(receiver, "/both"))
        assert (await second.get(f"/subscriptions/{sub_id}")).status in (200, 404)  # followed within a tick
        await asyncio.sleep(1.5)  # the other process follows the new subscription on its next tick
        assert (await second.get(f"/subscriptions/{sub_id}")).status == 200
        reply = await second.post("/entities", sensor(1, temperature=20))
        assert reply.status == 201, reply.raw
        await _wait_for(lambda: len(receiver.at("/both")) >= 1)
        await asyncio.sleep(1.0)
        assert len(receiver.at("/both")) == 1  # once, though both processes have the subscription
        await first.stop()  # the notifying process goes away; its session's lock is released
        reply = await second.patch("/entities/urn:ngsi-ld:Sensor:1/attrs", {"temperature": {"type": "Property",
                                                                                           "value": 21}})
        assert reply.status == 204, reply.raw
        await _wait_for(lambda: len(receiver.at("/both")) >= 2)
        await asyncio.sleep(1.0)
        got = receiver.at("/both")
        assert len(got) == 2
        assert got[1].body["data"][0]["temperature"]["value"] == 21
    finally:
        await first.close()
        await second.close()


@pytest.mark.slow
async def test_killing_the_notifying_process_hands_over(tmp_path: Path, postgres_url: str,
                                                        receiver: Receiver) -> None:
    """Two ``jonction store`` processes on one database; SIGKILL the one that notifies: the other takes over."""
    import aiohttp

    from tests.conftest import free_port

    ports = [free_port(), free_port()]
    procs = []
    for index, port in enumerate(ports):
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "store", "--port", str(port), "--data", str(tmp_path / str(index)),
            "--database", postgres_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        ))
        assert procs[-1].stdout is not None
        line = await asyncio.wait_for(procs[-1].stdout.readline(), 60)
        assert b"serving NGSI-LD" in line, line
        await asyncio.sleep(0.5)  # the first one takes the notifier lock
    bases = [f"http://127.0.0.1:{port}/ngsi-ld/v1" for port in ports]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(bases[1] + "/subscriptions", json=sub(receiver, "/kill")) as resp:
                assert resp.status == 201, await resp.text()
            await asyncio.sleep(1.5)
            procs[0].kill()  # the notifier dies without closing anything
            await procs[0].wait()
            async with http.post(bases[1] + "/entities", json=sensor(7, temperature=3)) as resp:
                assert resp.status == 201, await resp.text()
            await _wait_for(lambda: len(receiver.at("/kill")) >= 1, 15)
            await asyncio.sleep(1.5)
            assert len(receiver.at("/kill")) == 1
            assert receiver.at("/kill")[0].body["data"][0]["id"] == "urn:ngsi-ld:Sensor:7"
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()


async def test_migrate_data_copies_a_territory_with_its_history(tmp_path: Path, postgres_url: str,
                                                                receiver: Receiver,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``jonction store migrate-data`` copies entities, history, contexts and subscriptions, and verifies them."""
    from gateway.store.settings import StoreSettings

    server = StoreServer(StoreSettings(data_dir=tmp_path / "data"))
    await server.start()
    try:
        for tenant in ("", "commune-a"):
            headers = {"NGSILD-Tenant": tenant} if tenant else {}
            for step in range(3):
                batch = [streetlight(n, illuminanceLevel={"type": "Property", "value": n + step,
                                                          "observedAt": f"2026-0{step + 1}-15T00:00:00Z"})
                         for n in range(20)]
                reply = await server.post("/entityOperations/upsert", batch, headers=headers)
                assert reply.status in (201, 204), reply.raw
            reply = await server.delete("/entities/urn:ngsi-ld:Streetlight:3/attrs/powerState", headers=headers)
            assert reply.status == 204, reply.raw
        await create(server, sub(receiver, "/moved"))
        reply = await server.post("/csourceRegistrations", REGISTRATION)
        assert reply.status == 201, reply.raw
        reply = await server.post("/csourceSubscriptions", CSOURCE_SUBSCRIPTION)
        assert reply.status == 201, reply.raw
        reply = await server.post("/jsonldContexts", {"@context": {"lum": "https://example.org/lum"}})
        assert reply.status == 201, reply.raw
        before = (await server.get("/entities/urn:ngsi-ld:Streetlight:3", params={"options": "sysAttrs"},
                                   headers={"NGSILD-Tenant": "commune-a"})).json
    finally:
        await server.close()
    source = f"sqlite:///{tmp_path / 'data' / 'store.sqlite'}"
    assert await asyncio.to_thread(cli_main, ["store", "migrate-data", "--from", source, "--to", postgres_url]) == 0
    out = capsys.readouterr().out
    assert "tenant commune-a: 20 entities" in out and "verified" in out, out
    assert "1 hosted @contexts, 1 subscriptions, 1 context source registrations, 1 context source subscriptions" in out
    storage = await open_storage(postgres_url)
    try:
        assert await storage.count("commune-a") == 20
        after = await storage.get("commune-a", "urn:ngsi-ld:Streetlight:3",
                                  context="https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld")
        assert after == before  # createdAt/modifiedAt kept
        rows = await _fetch(postgres_url, "SELECT count(*) FROM history WHERE tenant = 'commune-a'")
        assert rows[0][0] >= 20 * 3 * 2  # two attributes per write, three writes, and the deletion mark
        assert len(await storage.subscription_records().load_all()) == 1  # type: ignore[union-attr]
        assert await storage.registration_records().get("", REGISTRATION["id"]) is not None  # type: ignore[attr-defined]
        csub = await storage.csource_subscription_records().get("", CSOURCE_SUBSCRIPTION["id"])  # type: ignore[attr-defined]
        assert csub is not None
    finally:
        await storage.close()
    # a second copy into the same database is refused rather than mixed
    assert await asyncio.to_thread(cli_main, ["store", "migrate-data", "--from", source, "--to", postgres_url]) != 0


def test_gateway_config_selects_the_database() -> None:
    """``embedded_store.database`` in the gateway config chooses the backend; other URLs are refused."""
    from gateway.runtime.config import parse

    assert parse({"embedded_store": {"database": "postgresql://jc@db/territoire"}}).embedded_database == (
        "postgresql://jc@db/territoire"
    )
    assert parse({}).embedded_database is None
    with pytest.raises(ConfigInvalid, match="embedded_store/database"):
        parse({"embedded_store": {"database": "mysql://db/t"}})


async def test_jonction_run_writes_into_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """With ``embedded_store.database`` the gateway's pipeline writes into PostgreSQL and serves it."""
    import aiohttp

    from gateway.runtime.state import RUNTIME
    from tests.runtime.support import FakeAdapter, config, eventually, running

    FakeAdapter.instances.clear()
    cfg = config(tmp_path, embedded_store={"database": postgres_url})
    async with running(cfg) as (base, app):
        rt = app[RUNTIME]
        await FakeAdapter.instances["bins"].send({"id": "m1", "device": "bin-9", "fill": 42,
                                                  "at": "2026-01-01T10:00:00Z"})
        stored = await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:bin-9"),
                                  what="store write")
        assert stored["fillingLevel"]["value"] == 0.42
        async with aiohttp.ClientSession() as http, http.get(
            f"{base}/ngsi-ld/v1/entities/urn:ngsi-ld:WasteContainer:bin-9"
        ) as resp:
            assert resp.status == 200
    rows = await _fetch(postgres_url, "SELECT count(*) FROM entities WHERE id = 'urn:ngsi-ld:WasteContainer:bin-9'")
    assert rows[0][0] == 1
    assert not (tmp_path / "data" / "store.sqlite").exists()


async def test_a_subscription_made_elsewhere_notifies_the_next_write(tmp_path: Path, postgres_url: str,
                                                                     receiver: Receiver) -> None:
    """Subscribe through the process that does not notify, write at once: the notifying one knows it."""
    from gateway.store.settings import StoreSettings

    first = StoreServer(StoreSettings(data_dir=tmp_path / "a", database=postgres_url))
    second = StoreServer(StoreSettings(data_dir=tmp_path / "b", database=postgres_url))
    await first.start()  # takes the notifier lock
    await asyncio.sleep(0.3)
    await second.start()
    try:
        await create(second, sub(receiver, "/at-once"))
        reply = await second.post("/entities", sensor(2, temperature=5))
        assert reply.status == 201, reply.raw
        await _wait_for(lambda: len(receiver.at("/at-once")) >= 1, 5)
        await asyncio.sleep(0.5)
        assert len(receiver.at("/at-once")) == 1
    finally:
        await first.close()
        await second.close()
