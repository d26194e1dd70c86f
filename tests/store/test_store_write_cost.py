"""The cheaper write path keeps its answers: expansion caches, the geometry fast path, heap-only updates.

A name or a type seen once is not checked again in that context; these tests make sure a second
entity still gets every error the first one would have got, with the same JSON pointer, and that
the PostgreSQL schema of migration 9 keeps history and queries right.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.store import jsonld, open_storage
from gateway.store.app import StoreSettings
from gateway.store.problems import NgsiError
from gateway.store.records import QuerySpec

STORE_BACKENDS = ("sqlite", "postgresql")


def _ctx() -> jsonld.Context:
    return jsonld.ContextCache().get([jsonld.jonction_context_iri()])


def _light(n: int, **attrs: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight", **attrs}


def _error(ctx: jsonld.Context, item: dict[str, Any]) -> str:
    with pytest.raises(NgsiError) as caught:
        ctx.expand_entity(item)
    return str(caught.value.detail)


def test_a_known_attribute_name_still_reports_its_bad_value_with_its_pointer() -> None:
    """The second entity with the same name: the value is checked, and the pointer escapes the name."""
    ctx = _ctx()
    good = ctx.expand_entity(_light(1, **{"a/b": {"type": "Property", "value": 1}}))
    assert any(k.endswith("a/b") for k in good)
    detail = _error(ctx, _light(2, **{"a/b": {"type": "Relationship", "object": "not a uri"}}))
    assert detail.startswith("/a~1b/object:"), detail
    detail = _error(ctx, _light(3, **{"a/b": {"type": "Property", "value": None}}))
    assert detail.startswith("/a~1b/value:"), detail


def test_an_invalid_name_is_refused_every_time_and_after_its_value_errors() -> None:
    """An invalid name is never remembered; a bad value under it is reported first, as before."""
    ctx = _ctx()
    for n in range(2):
        assert "invalid attribute name" in _error(ctx, _light(n, **{"bad name": {"type": "Property", "value": 1}}))
    assert "null is not a valid attribute value" in _error(ctx, _light(3, **{"bad name": None}))


def test_a_known_entity_type_is_expanded_alike_and_keywords_stay_refused() -> None:
    """A cached type gives the same IRI list (a fresh list each time); a keyword type is refused each time."""
    ctx = _ctx()
    first = ctx.expand_entity(_light(1))["type"]
    second = ctx.expand_entity(_light(2))["type"]
    assert first == second == [ctx.expand_term("Streetlight")]
    first.append("mutated")
    assert ctx.expand_entity(_light(3))["type"] == [ctx.expand_term("Streetlight")]
    for n in range(2):
        assert "invalid entity type" in _error(ctx, {"id": f"urn:x:{n}", "type": "@id"})


@pytest.mark.parametrize(
    ("value", "wrong"),
    [
        ({"type": "Point", "coordinates": [200.0, 10.0]}, "coordinates"),
        ({"type": "Point", "coordinates": [2.3, -91]}, "coordinates"),
        ({"type": "Point", "coordinates": [2.3, True]}, "coordinates"),
        ({"type": "Point", "coordinates": [2.3]}, "coordinates"),
        ({"type": "Point", "coordinates": "2.3,48.8"}, "coordinates"),
        ({"type": "Point"}, "GeoJSON geometry"),
    ],
)
def test_the_point_fast_path_refuses_what_the_general_check_refuses(value: dict[str, Any], wrong: str) -> None:
    """Only valid points skip the general walk: every invalid one gets the general check's error."""
    ctx = _ctx()
    ctx.expand_entity(_light(0, location={"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2, 48]}}))
    detail = _error(ctx, _light(1, location={"type": "GeoProperty", "value": value}))
    assert detail.startswith("/location/value") and wrong in detail, detail


def test_plain_and_rich_instances_expand_as_before() -> None:
    """A plain instance is copied whole; sub-attributes and system members still take the member walk."""
    ctx = _ctx()
    plain = {"type": "Property", "value": 3, "unitCode": "P1", "observedAt": "2026-11-22T02:00:00Z"}
    out = ctx.expand_entity(_light(1, level=plain))
    inst = out[ctx.expand_term("level")][0]
    assert inst == plain and inst is not plain
    rich = {"type": "Property", "value": 3, "createdAt": "2020-01-01T00:00:00Z", "instanceId": "urn:i:1",
            "accuracy": {"type": "Property", "value": 0.5}}
    inst = ctx.expand_entity(_light(2, level=rich))[ctx.expand_term("level")][0]
    assert "createdAt" not in inst and "instanceId" not in inst
    assert inst[ctx.expand_term("accuracy")] == {"type": "Property", "value": 0.5}


async def test_repeated_updates_keep_state_history_and_type_queries(store_backend: str, tmp_path: Path,
                                                                    store_settings: StoreSettings) -> None:
    """Updates that keep types (heap-only on PostgreSQL) and one that adds a type: state, history, queries right."""
    database = store_settings.database or tmp_path / "s.sqlite"
    storage = await open_storage(database)
    try:
        ids = [f"urn:ngsi-ld:Streetlight:{n}" for n in range(50)]
        for level in range(3):
            batch = [{"id": i, "type": "Streetlight", "level": {"type": "Property", "value": level}} for i in ids]
            assert not (await storage.upsert("", batch)).errors
        changed = {"id": ids[0], "type": ["Streetlight", "Lamp"], "level": {"type": "Property", "value": 3}}
        assert not (await storage.upsert("", [changed])).errors
        ctx = _ctx()
        level_iri = ctx.expand_term("level")
        for eid in ids:
            doc = await storage.get_doc("", eid)
            assert doc is not None and doc[level_iri][0]["value"] == (3 if eid == ids[0] else 2)
        lamps = await storage.query("", QuerySpec(types=[ctx.expand_term("Lamp")], count=True))
        assert [d["id"] for d in lamps.docs] == [ids[0]] and lamps.count == 1
        lights = await storage.query("", QuerySpec(types=[ctx.expand_term("Streetlight")], count=True))
        assert lights.count == 50
        history = await storage.history_slice("", [ids[0]], None, None)
        if history is not None:  # PostgreSQL: four instances, and the entity's types as they are now
            series = {sid for sid, _, _, attr, _ in history.series if attr == level_iri}
            assert len([i for i in history.instances if i[0] in series]) == 4
            assert [json.loads(types) for _, eid, types in history.entities if eid == ids[0]] == [
                [ctx.expand_term("Streetlight"), ctx.expand_term("Lamp")]
            ]
        if store_backend == "postgresql":
            import asyncpg

            conn = await asyncpg.connect(str(database))
            try:
                options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'entities'")
                assert "fillfactor=70" in options
                assert await conn.fetchval("SELECT to_regclass('entities_type')") is None
                assert await conn.fetchval("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'entities'") \
                    is not None
            finally:
                await conn.close()
    finally:
        await storage.close()
