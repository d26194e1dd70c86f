"""Export, import into a fresh store, export again: every entity and history instance equal, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.store import history
from tests.reversibility.territory import (
    LIGHTS,
    READINGS,
    TENANTS,
    at,
    content_sums,
    feed,
    jonction,
    lines,
    manifest,
    store_args,
)
from tests.store.conftest import BACKENDS, StoreServer

STORE_BACKENDS = BACKENDS
"""Every test here that takes ``store_backend`` runs on SQLite and on PostgreSQL."""


def _second_database(store_backend: str, request: pytest.FixtureRequest) -> str | None:
    return request.getfixturevalue("postgres_server").new_database() if store_backend == "postgresql" else None


async def test_round_trip_keeps_every_entity_and_instance(
    server: StoreServer, tmp_path: Path, store_backend: str, request: pytest.FixtureRequest
) -> None:
    expected = await feed(server)
    await server.stop()
    source = store_args(server.settings.data_dir, server.settings.database)
    out = tmp_path / "export"
    jonction("export", *source, "--out", out)
    first = manifest(out)
    for tenant in TENANTS:
        facts = first["tenants"][tenant]
        assert facts["entities"] == {"Streetlight": LIGHTS, "WasteContainer": 1}
        assert facts["history_total"] == expected[tenant]
        assert facts["subscriptions"] == 1
        assert facts["time_range"] == {"first": "2025-02-28T23:00:00Z", "last": at(READINGS - 1)}
    # the readings themselves, read independently of the exporter: light 1's powerState over time
    history = [r for f in first["files"] if f["kind"] == "history" and f["tenant"] == "ville-a"
               for r in lines(out / f["path"])]
    power = sorted((r["powerState"]["observedAt"], r["powerState"]["value"]) for r in history
                   if r["id"] == "urn:ngsi-ld:Streetlight:test:1" and "powerState" in r)
    assert power == [(at(i), "on" if i % 2 else "off") for i in range(READINGS)]
    assert all(r["@context"] == first["context"] for r in history)

    fresh = tmp_path / "fresh"
    target_db = _second_database(store_backend, request)
    target = store_args(fresh, target_db)
    done = jonction("import", out, *target)
    assert "verified and imported" in done.stdout
    again = tmp_path / "again"
    jonction("export", *target, "--out", again)
    assert content_sums(again) == content_sums(out)  # byte for byte: same entities, same instances
    assert manifest(again)["tenants"] == first["tenants"]

    # a re-import (journal ignored) changes nothing
    jonction("import", out, *target, "--restart")
    third = tmp_path / "third"
    jonction("export", *target, "--out", third)
    assert content_sums(third) == content_sums(out)
    # and with its journal, a second run knows it is done
    assert "already imported" in jonction("import", out, *target).stdout


async def test_history_read_in_small_windows_is_the_same(
    server: StoreServer, store_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's history is read one entity and a bounded number of instances at a time."""
    from gateway.reversibility import embedded
    from gateway.store.backends import open_storage
    from gateway.store.jsonld import jonction_context_iri

    expected = await feed(server)
    await server.stop()
    storage = await open_storage(server.settings.database or server.settings.data_dir / "store.sqlite",
                                 gc_tuning=False)
    try:
        reader = embedded.EmbeddedReader(storage, jonction_context_iri())
        whole = [json.dumps(r, sort_keys=True) async for r in reader.history("ville-a", None, None, None)]
        monkeypatch.setattr(embedded, "SLICE_ROWS", 3)
        pieces = [json.dumps(r, sort_keys=True) async for r in reader.history("ville-a", None, None, None)]
        bounded = [r async for r in reader.history("ville-a", None, history.to_micros(at(2)), history.to_micros(at(4)))]
    finally:
        await storage.close()
    assert len(whole) == expected["ville-a"] and len(set(whole)) == len(whole)
    assert sorted(pieces) == sorted(whole)
    observed = {next(v["observedAt"] for k, v in r.items() if isinstance(v, dict)) for r in bounded
                if any(isinstance(v, dict) and "observedAt" in v for v in r.values())}
    assert observed == {at(2), at(3)}
