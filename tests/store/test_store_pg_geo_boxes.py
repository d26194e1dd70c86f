"""The PostgreSQL geo-query prefilter (migration 11): boxes in a ``box`` column whose GiST index returns
them, so that PostgreSQL answers the prefilter from the index alone; a moved entity's old box is gone,
a telemetry update leaves its box row untouched, and an existing database's geometries become the same
boxes."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

asyncpg = pytest.importorskip("asyncpg", reason="asyncpg absent: pip install 'jonction[postgresql]'")

from gateway.store.backends import open_storage  # noqa: E402  (after the skip: the backend imports asyncpg)
from gateway.store.base import QuerySpec, Storage  # noqa: E402
from gateway.store.postgres.compile import compile_spec  # noqa: E402
from tests.store.conftest import jonction_iri, streetlight  # noqa: E402

LOCATION = jonction_iri("location")
AREA = (2.20, 48.75, 2.47, 48.93)
"""Where the lights stand (min lon, min lat, max lon, max lat)."""
SMALL = (2.30, 48.80, 2.32, 48.82)
"""A query box of about 1/200 of the area."""


def _lights(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` lights at random points of AREA (six decimals, as devices send them)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        light = streetlight(f"{i:05d}")
        light["location"]["value"]["coordinates"] = [
            round(AREA[0] + rng.random() * (AREA[2] - AREA[0]), 6),
            round(AREA[1] + rng.random() * (AREA[3] - AREA[1]), 6),
        ]
        out.append(light)
    return out


def _inside(light: dict[str, Any], box: tuple[float, float, float, float]) -> bool:
    lon, lat = light["location"]["value"]["coordinates"]
    return bool(box[0] <= lon <= box[2] and box[1] <= lat <= box[3])


async def _write(storage: Storage, entities: list[dict[str, Any]]) -> None:
    for i in range(0, len(entities), 1000):
        result = await storage.upsert("", entities[i : i + 1000])
        assert not result.errors, result.errors


async def _candidates(conn: Any, box: tuple[float, float, float, float]) -> tuple[list[str], dict[str, Any]]:
    """The ids the SQL prefilter of ``box`` keeps, and the plan node that read ``geo`` (EXPLAIN ANALYZE)."""
    where = compile_spec("", QuerySpec(bbox=box, geoproperty=LOCATION))
    sql = f"SELECT e.id FROM {where.source()} WHERE {where.sql()} ORDER BY e.id"
    ids = [r[0] for r in await conn.fetch(sql, *where.params)]
    plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *where.params)
    root = json.loads(plan)[0]["Plan"]
    nodes = [root]
    while nodes:
        node = nodes.pop()
        if node.get("Relation Name") == "geo" or node.get("Index Name") == "geo_bbox":
            return ids, node
        nodes.extend(node.get("Plans", []))
    raise AssertionError(f"no scan of geo in the plan: {root}")


async def _box_rows(conn: Any) -> dict[tuple[str, str, int], tuple[float, float, float, float]]:
    rows = await conn.fetch("SELECT id, attr, k, (bbox[1])[0], (bbox[1])[1], (bbox[0])[0], (bbox[0])[1] FROM geo")
    return {(r[0], r[1], r[2]): (r[3], r[4], r[5], r[6]) for r in rows}


async def test_prefilter_is_an_index_only_scan(postgres_url: str) -> None:
    """The box prefilter reads geo by an Index Only Scan of geo_bbox, no heap page once vacuumed, exact ids."""
    lights = _lights(4000)
    storage = await open_storage(postgres_url)
    try:
        await _write(storage, lights)
    finally:
        await storage.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        # The test server commits asynchronously: VACUUM marks a page all-visible only once the commits of
        # its rows are flushed (what a durable server does at each commit); CHECKPOINT flushes them.
        await conn.execute("CHECKPOINT")
        await conn.execute("VACUUM (ANALYZE) geo")  # what autovacuum does after inserts (migration 11)
        ids, node = await _candidates(conn, SMALL)
    finally:
        await conn.close()
    assert node["Node Type"] == "Index Only Scan", json.dumps(node, indent=1)
    assert node["Index Name"] == "geo_bbox"
    assert node["Heap Fetches"] == 0
    assert node["Actual Rows"] == len(ids)
    expected = sorted(light["id"] for light in lights if _inside(light, SMALL))
    assert len(expected) > 5, "the box should hold a few lights"
    assert ids == expected


async def test_moved_entity_leaves_its_old_box(postgres_url: str) -> None:
    """A move replaces the entity's box (the old place no longer finds it); a reading keeps the row as is."""
    here, there = [2.301, 48.801], [2.401, 48.901]
    far = (2.39, 48.89, 2.41, 48.91)
    light = streetlight("moving", illuminanceLevel={"type": "Property", "value": 10})
    light["location"]["value"]["coordinates"] = here
    storage = await open_storage(postgres_url)
    conn = await asyncpg.connect(postgres_url)
    try:
        await _write(storage, [light])
        assert (await _candidates(conn, SMALL))[0] == [light["id"]]
        row = await conn.fetchrow("SELECT ctid::text, xmin::text FROM geo WHERE id = $1", light["id"])

        light["illuminanceLevel"]["value"] = 90  # a telemetry update: the location is the same
        await _write(storage, [light])
        assert await conn.fetchrow("SELECT ctid::text, xmin::text FROM geo WHERE id = $1", light["id"]) == row

        light["location"]["value"]["coordinates"] = there
        await _write(storage, [light])
        assert (await _candidates(conn, SMALL))[0] == []
        assert (await _candidates(conn, far))[0] == [light["id"]]
        assert await conn.fetchval("SELECT count(*) FROM geo WHERE id = $1", light["id"]) == 1
    finally:
        await conn.close()
        await storage.close()


_OLD_LAYOUT = """
DROP INDEX geo_bbox;
ALTER TABLE geo RESET (autovacuum_vacuum_insert_scale_factor);
ALTER TABLE geo ALTER COLUMN bbox TYPE geometry(Polygon, 4326)
    USING ST_MakeEnvelope((bbox[1])[0], (bbox[1])[1], (bbox[0])[0], (bbox[0])[1], 4326);
ALTER TABLE geo RENAME COLUMN bbox TO geom;
CREATE INDEX geo_geom ON geo USING gist(geom);
DELETE FROM jonction_schema WHERE version = 11;
"""
"""Back to the layout of migrations 1-10 (PostGIS polygons), the boxes kept: a database of an older jonction."""


async def test_migration_turns_stored_geometries_into_the_same_boxes(postgres_url: str) -> None:
    """Migration 11 on a database with polygons: the same boxes (antimeridian, poles, polygons), read index-only."""
    lights = _lights(3000, seed=8)  # enough rows for the index to be the cheaper plan
    odd = [
        streetlight(
            "antimeridian",
            location={
                "type": "GeoProperty",
                "value": {"type": "LineString", "coordinates": [[179.5, -16.1], [-179.75, -16.3]]},
            },
        ),
        streetlight("pole", location={"type": "GeoProperty", "value": {"type": "Point", "coordinates": [0.0, 90.0]}}),
        streetlight(
            "area",
            location={
                "type": "GeoProperty",
                "value": {
                    "type": "Polygon",
                    "coordinates": [[[2.3, 48.8], [2.31, 48.79], [2.32, 48.815], [2.3, 48.8]]],
                },
            },
        ),
    ]
    storage = await open_storage(postgres_url)
    try:
        await _write(storage, lights + odd)
    finally:
        await storage.close()
    conn = await asyncpg.connect(postgres_url)
    try:
        before = await _box_rows(conn)
        async with conn.transaction():
            await conn.execute(_OLD_LAYOUT)
        assert (
            await conn.fetchval(
                "SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'geo'::regclass AND attname = 'geom'"
            )
            == "geometry"
        )
        storage = await open_storage(postgres_url)  # applies migration 11
        await storage.close()
        assert await conn.fetchval("SELECT max(version) FROM jonction_schema") == 11
        assert await _box_rows(conn) == before
        assert before[("urn:ngsi-ld:Streetlight:antimeridian", LOCATION, 0)] == (-179.75, -16.3, 179.5, -16.1)
        assert before[("urn:ngsi-ld:Streetlight:pole", LOCATION, 0)] == (0.0, 90.0, 0.0, 90.0)
        ids, node = await _candidates(conn, SMALL)
        # the migration vacuumed the rewritten table: no heap read for the visibility of a box
        assert node["Node Type"] == "Index Only Scan" and node["Heap Fetches"] == 0, node
        expected = sorted(light["id"] for light in lights if _inside(light, SMALL))
        assert ids == sorted([*expected, "urn:ngsi-ld:Streetlight:area"])
        # a line over the antimeridian keeps the box of its coordinates, from -179.75 to 179.5, as PostGIS
        # had it: a superset the exact test narrows, and nothing left out
        assert (await _candidates(conn, (10.0, -16.25, 10.1, -16.15)))[0] == ["urn:ngsi-ld:Streetlight:antimeridian"]
        assert (await _candidates(conn, (-180.0, 89.99, 180.0, 90.0)))[0] == ["urn:ngsi-ld:Streetlight:pole"]
    finally:
        await conn.close()
