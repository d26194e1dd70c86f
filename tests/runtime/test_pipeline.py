"""The data path end to end in one process: emit → archive → validate → outbox → sinks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.runtime.state import RUNTIME
from tests.runtime.support import FakeAdapter, RecordingBroker, config, eventually, running


@pytest.fixture
async def broker() -> Any:
    b = RecordingBroker()
    await b.start()
    yield b
    await b.stop()


def remote(broker: RecordingBroker, **extra: Any) -> dict[str, Any]:
    return {"name": "city", "url": broker.url, "profile": "generic", **extra}


async def test_message_reaches_embedded_store_and_remote_broker(tmp_path: Path, broker: RecordingBroker) -> None:
    async with running(config(tmp_path, sinks=[remote(broker)])) as (base, app):
        rt = app[RUNTIME]
        await FakeAdapter.instances["bins"].send({"id": "m1", "device": "bin-1", "fill": 42,
                                                  "at": "2026-01-01T10:00:00+01:00"})
        stored = await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:bin-1"),
                                  what="store write")
        assert stored["fillingLevel"]["value"] == 0.42
        # normalized to UTC on the way
        assert stored["fillingLevel"]["observedAt"] == "2026-01-01T09:00:00Z"
        await eventually(lambda: broker.state.get("", {}).get("urn:ngsi-ld:WasteContainer:bin-1"), what="broker")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/admin/archive") as resp:
                archive = await resp.json()
        assert [m["idempotencyKey"] for m in archive["messages"]] == ["m1"]


async def test_same_raw_message_twice_is_written_once(tmp_path: Path, broker: RecordingBroker) -> None:
    async with running(config(tmp_path, sinks=[remote(broker)], embedded_store={"enabled": False})) as (_, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        doc = {"id": "dup-1", "device": "bin-7", "fill": 10, "at": "2026-01-01T10:00:00Z"}
        await adapter.send(doc)
        await adapter.send(doc)  # redelivery (MQTT QoS 1, HTTP retry)
        await adapter.send({**doc, "id": "other", "device": "bin-8"})
        await eventually(lambda: rt.outbox is not None and rt.outbox.depth("city") == 0, what="drain")
        written = [i for r in broker.requests for i in r["ids"]]
        assert sorted(written) == ["urn:ngsi-ld:WasteContainer:bin-7", "urn:ngsi-ld:WasteContainer:bin-8"]
        assert rt.metrics.duplicates.get(source="bins") == 1


async def test_207_retries_only_the_failed_entities(tmp_path: Path, broker: RecordingBroker) -> None:
    cfg = config(tmp_path, sinks=[remote(broker)], embedded_store={"enabled": False},
                 publisher={"linger": 0.2, "backoff_initial": 0.05, "backoff_max": 0.2})
    ids = [f"urn:ngsi-ld:WasteContainer:bin-{i}" for i in range(6)]
    broker.fail_ids = {ids[1]: 1, ids[4]: 1}
    async with running(cfg) as (_, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        await adapter.ready()
        import asyncio

        await asyncio.gather(*(adapter.send({"id": f"k{i}", "device": f"bin-{i}", "fill": i,
                                             "at": "2026-01-01T10:00:00Z"}) for i in range(6)))
        await eventually(lambda: len(broker.state.get("", {})) == 6, what="all six written")
        first = broker.requests[0]
        assert sorted(first["ids"]) == sorted(ids)  # coalesced in one batch
        retried = [i for r in broker.requests[1:] for i in r["ids"]]
        assert sorted(retried) == sorted([ids[1], ids[4]])
        assert rt.outbox is not None and rt.outbox.depth("city") == 0


async def test_dead_letters_keep_reason_pointer_and_replay_after_fix(tmp_path: Path) -> None:
    FakeAdapter.DIVISOR = 1.0  # the "mapping bug": a percentage sent as a ratio
    async with running(config(tmp_path)) as (base, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        await adapter.send({"id": "bad-1", "device": "bin-3", "fill": 75, "at": "2026-01-01T10:00:00Z"})
        await adapter.send({"id": "bad-2", "device": "bin-4"})  # untranslatable
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/admin/deadletters") as resp:
                letters = (await resp.json())["deadLetters"]
            assert [(d["stage"], d["pointer"]) for d in letters] == [
                ("validation", "/fillingLevel/value"), ("translation", "/fill")]
            assert "maximum" in letters[0]["reason"]
            assert letters[0]["adapter"] == "fake" and letters[0]["source"] == "bins"
            async with http.get(f"{base}/admin/deadletters/{letters[0]['id']}") as resp:
                detail = await resp.json()
            assert detail["payload"]["fill"] == 75
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert 'jonction_dead_letters_stored{source="bins",stage="validation"} 1' in text
            assert 'jonction_dead_letters_total{source="bins",stage="translation"} 1' in text
            assert await rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:bin-3") is None
            # Replaying before the fix keeps the letter.
            async with http.post(f"{base}/admin/deadletters/{letters[0]['id']}/replay") as resp:
                assert resp.status == 422
            FakeAdapter.DIVISOR = 100.0  # the fix
            async with http.post(f"{base}/admin/deadletters/{letters[0]['id']}/replay") as resp:
                assert resp.status == 200
                assert (await resp.json())["queued"] == ["urn:ngsi-ld:WasteContainer:bin-3"]
            stored = await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:bin-3"),
                                      what="replayed")
            assert stored["fillingLevel"]["value"] == 0.75
            async with http.get(f"{base}/admin/deadletters") as resp:
                left = (await resp.json())["deadLetters"]
            assert [d["stage"] for d in left] == ["translation"]
            async with http.delete(f"{base}/admin/deadletters/{left[0]['id']}") as resp:
                assert resp.status == 204


async def test_older_observation_never_overwrites_newer(tmp_path: Path, broker: RecordingBroker) -> None:
    async with running(config(tmp_path, sinks=[remote(broker)])) as (_, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        await adapter.send({"id": "new", "device": "bin-9", "fill": 80, "at": "2026-01-01T12:00:00Z"})
        await eventually(lambda: rt.outbox is not None and rt.outbox.depth("city") == 0, what="first write")
        # a late packet (gateway buffer, replay) with an older observation
        await adapter.send({"id": "late", "device": "bin-9", "fill": 20, "temp": 9.5,
                            "at": "2026-01-01T11:00:00Z"})
        await eventually(lambda: rt.outbox is not None and rt.outbox.depth("city") == 0
                         and rt.outbox.depth("embedded") == 0, what="late packet handled")
        for stored in (await rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:bin-9"),
                       broker.state[""]["urn:ngsi-ld:WasteContainer:bin-9"]):
            assert stored is not None
            assert stored["fillingLevel"]["value"] == 0.8
            assert stored["temperature"]["value"] == 9.5  # never seen before: kept


async def test_tenant_routes_per_device_and_sink_filters(tmp_path: Path, broker: RecordingBroker) -> None:
    cfg = config(tmp_path, sinks=[remote(broker, tenants=["montpellier"])],
                 sources=[{"name": "bins", "adapter": "fake", "tenant": "montpellier",
                           "routes": [{"entity": "urn:ngsi-ld:WasteContainer:lattes-*", "tenant": "lattes"}]}])
    async with running(cfg) as (base, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        await adapter.send({"id": "a", "device": "mtp-1", "fill": 10, "at": "2026-01-01T10:00:00Z"})
        await adapter.send({"id": "b", "device": "lattes-1", "fill": 20, "at": "2026-01-01T10:00:00Z"})
        await eventually(lambda: rt.embedded_store.get("lattes", "urn:ngsi-ld:WasteContainer:lattes-1"), what="lattes")
        await eventually(lambda: rt.embedded_store.get("montpellier", "urn:ngsi-ld:WasteContainer:mtp-1"), what="mtp")
        assert await rt.embedded_store.get("montpellier", "urn:ngsi-ld:WasteContainer:lattes-1") is None
        await eventually(lambda: "montpellier" in broker.state, what="remote")
        assert set(broker.state) == {"montpellier"}  # the remote broker only takes montpellier
        assert all(r["headers"]["NGSILD-Tenant"] == "montpellier" for r in broker.requests)
        # dead letters are kept per tenant too
        await adapter.send({"id": "c", "device": "lattes-2", "fill": 20, "temp": "warm",
                            "at": "2026-01-01T10:00:00Z"})
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/admin/deadletters", params={"tenant": "lattes"}) as resp:
                lattes = (await resp.json())["deadLetters"]
            async with http.get(f"{base}/admin/deadletters", params={"tenant": "montpellier"}) as resp:
                montpellier = (await resp.json())["deadLetters"]
        assert [d["entityId"] for d in lattes] == ["urn:ngsi-ld:WasteContainer:lattes-2"]
        assert lattes[0]["pointer"] == "/temperature/value"
        assert montpellier == []


async def test_broker_down_buffers_then_drains_without_loss(tmp_path: Path, broker: RecordingBroker) -> None:
    cfg = config(tmp_path, sinks=[remote(broker)], embedded_store={"enabled": False})
    async with running(cfg) as (base, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        await broker.stop()
        for i in range(40):
            await adapter.send({"id": f"m{i}", "device": f"bin-{i % 10}", "fill": i, "at":
                                f"2026-01-01T10:{i:02d}:00Z"})
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: rt.publishers["city"].state == "open", what="circuit open")
            async with http.get(f"{base}/admin/outbox") as resp:
                status = await resp.json()
            assert status["entities"] == 40
            async with http.get(f"{base}/readyz") as resp:
                ready = await resp.json()
            assert resp.status == 200 and ready["checks"]["sinks"]["city"]["status"] == "degraded"
            async with http.get(f"{base}/metrics") as resp:
                text = await resp.text()
            assert 'jonction_outbox_entities{sink="city",tenant=""} 40' in text
            assert 'jonction_sink_circuit_open{sink="city"} 1' in text
        await broker.start()
        await eventually(lambda: rt.outbox is not None and rt.outbox.depth("city") == 0, what="drained")
        state = broker.state[""]
        assert len(state) == 10
        for d in range(10):
            last = max(i for i in range(40) if i % 10 == d)
            assert state[f"urn:ngsi-ld:WasteContainer:bin-{d}"]["fillingLevel"]["value"] == last / 100


async def test_archive_replay_requeues(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as (base, app):
        rt = app[RUNTIME]
        await FakeAdapter.instances["bins"].send({"id": "r1", "device": "bin-r", "fill": 5,
                                                  "at": "2026-01-01T10:00:00Z"})
        await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:bin-r"), what="first")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/admin/archive/replay", json={"source": "bins"}) as resp:
                result = await resp.json()
        assert result == {"messages": 1, "entitiesQueued": 1, "deadLetters": 0, "failed": []}


async def test_adapter_bug_is_a_dead_letter_and_spares_the_rest_of_the_group(tmp_path: Path) -> None:
    import asyncio

    async with running(config(tmp_path)) as (base, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        await adapter.ready()
        await asyncio.gather(
            adapter.send({"id": "poison", "device": "bin-p", "fill": 1, "crash": True}),
            adapter.send({"id": "fine", "device": "bin-f", "fill": 30, "at": "2026-01-01T10:00:00Z"}),
        )
        stored = await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:bin-f"),
                                  what="good one")
        assert stored["fillingLevel"]["value"] == 0.3
        async with aiohttp.ClientSession() as http, http.get(f"{base}/admin/deadletters") as resp:
            letters = (await resp.json())["deadLetters"]
        assert [(d["stage"], d["idempotencyKey"]) for d in letters] == [("translation", "poison")]
        assert letters[0]["reason"] == "adapter error: ZeroDivisionError: a bug in the adapter"


async def test_entity_a_broker_rejects_becomes_a_sink_dead_letter_and_replays(
    tmp_path: Path, broker: RecordingBroker
) -> None:
    bad = "urn:ngsi-ld:WasteContainer:bin-x"
    broker.reject_ids = {bad}
    cfg = config(tmp_path, sinks=[remote(broker)], embedded_store={"enabled": False})
    async with running(cfg) as (base, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        await adapter.send({"id": "x1", "device": "bin-x", "fill": 5, "at": "2026-01-01T10:00:00Z"})
        await adapter.send({"id": "y1", "device": "bin-y", "fill": 6, "at": "2026-01-01T10:00:00Z"})
        async with aiohttp.ClientSession() as http:
            async def letters() -> list[dict[str, Any]]:
                async with http.get(f"{base}/admin/deadletters", params={"stage": "sink"}) as resp:
                    return list((await resp.json())["deadLetters"])
            found = await eventually(letters, what="sink dead letter")
            assert found[0]["entityId"] == bad and found[0]["sink"] == "city"
            assert "BadRequestData" in found[0]["reason"]
            assert rt.outbox is not None and rt.outbox.depth("city") == 0
            assert bad not in broker.state.get("", {})
            broker.reject_ids.clear()  # the broker's policy is fixed
            async with http.post(f"{base}/admin/deadletters/{found[0]['id']}/replay") as resp:
                assert resp.status == 200
        await eventually(lambda: bad in broker.state.get("", {}), what="replayed to the broker")
        assert broker.state[""][bad]["fillingLevel"]["value"] == 0.05


async def test_admin_restarts_a_source_with_a_fresh_adapter(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as (base, app):
        rt = app[RUNTIME]
        first = FakeAdapter.instances["bins"]
        await first.ready()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/admin/sources/bins/restart") as resp:
                assert resp.status == 200
            async with http.post(f"{base}/admin/sources/nope/restart") as resp:
                assert resp.status == 404
        second = FakeAdapter.instances["bins"]
        assert second is not first
        await second.send({"id": "after", "device": "bin-n", "fill": 50, "at": "2026-01-01T10:00:00Z"})
        await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:WasteContainer:bin-n"),
                         what="new instance works")
        assert rt.sources["bins"].status.state == "running"


async def test_whole_batch_400_is_split_to_find_the_bad_entity(tmp_path: Path, broker: RecordingBroker) -> None:
    import asyncio

    poison = "urn:ngsi-ld:WasteContainer:bin-2"
    broker.poison_ids = {poison}
    cfg = config(tmp_path, sinks=[remote(broker)], embedded_store={"enabled": False}, publisher={"linger": 0.2})
    async with running(cfg) as (base, app):
        rt = app[RUNTIME]
        adapter = FakeAdapter.instances["bins"]
        await adapter.ready()
        await asyncio.gather(*(adapter.send({"id": f"p{i}", "device": f"bin-{i}", "fill": i,
                                             "at": "2026-01-01T10:00:00Z"}) for i in range(5)))
        await eventually(lambda: rt.outbox is not None and rt.outbox.depth("city") == 0, what="handled")
        assert sorted(broker.state[""]) == sorted(f"urn:ngsi-ld:WasteContainer:bin-{i}" for i in (0, 1, 3, 4))
        async with aiohttp.ClientSession() as http, http.get(f"{base}/admin/deadletters") as resp:
            letters = (await resp.json())["deadLetters"]
        assert [(d["stage"], d["entityId"]) for d in letters] == [("sink", poison)]
        assert "HTTP 400" in letters[0]["reason"]
