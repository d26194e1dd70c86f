"""Versioned schema of the PostgreSQL backend, applied in order on start (``jonction store --migrate`` alone).

Each migration runs once, in its own transaction, under an advisory lock so that several store
processes starting together apply it once. The applied versions are rows of ``jonction_schema``;
a database migrated by a newer jonction (a version this code does not know) is refused rather
than written with an older layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from gateway.errors import ConfigInvalid

MIGRATION_LOCK: Final = 0x6A6F6E6374_01
"""Advisory lock key held while migrating ("jonct" + 1)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: a version number, what it does, and its SQL."""

    version: int
    name: str
    sql: str
    after: str = ""
    """SQL run once the step is committed, outside any transaction (``VACUUM``), when it was applied now."""


_V1 = """
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE TABLE tenants(
    name text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Tenants are a key column (leading every key and index), not schemas: tenants appear at run time
-- with any creation, and one set of tables keeps migrations, prepared statements and backups single.
CREATE TABLE entities(
    tenant text NOT NULL,
    id text COLLATE "C" NOT NULL,  -- byte order, as SQLite: pages and answers in the same order
    type text NOT NULL,
    types text[] NOT NULL,
    attrs jsonb NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX entities_type ON entities(tenant, type, id);
CREATE INDEX entities_types ON entities USING gin(types);
CREATE INDEX entities_attrs ON entities USING gin(attrs);
CREATE INDEX entities_doc ON entities USING gin(doc jsonb_path_ops);
-- The bounding box of every GeoProperty instance (k-th of attribute attr), the geo-query prefilter.
CREATE TABLE geo(
    tenant text NOT NULL,
    id text NOT NULL,
    attr text NOT NULL,
    k integer NOT NULL,
    geom geometry(Polygon, 4326) NOT NULL,
    PRIMARY KEY (tenant, id, attr, k),
    FOREIGN KEY (tenant, id) REFERENCES entities(tenant, id) ON DELETE CASCADE
);
CREATE INDEX geo_geom ON geo USING gist(geom);
CREATE TABLE contexts(
    id text PRIMARY KEY,
    doc jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

_V2 = """
CREATE TABLE subscriptions(
    tenant text NOT NULL,
    id text NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
"""

_V3 = """
-- One row per written attribute instance, partitioned by month of ts (observedAt, else write time);
-- the month partitions are created on first use (gateway.store.postgres.history).
CREATE TABLE history(
    tenant text NOT NULL,
    entity_id text NOT NULL,
    attr text NOT NULL,
    dataset_id text NOT NULL DEFAULT '',
    ts timestamptz NOT NULL,
    observed_at timestamptz,
    created_at timestamptz NOT NULL,
    modified_at timestamptz NOT NULL,
    kind text NOT NULL,
    num double precision,
    value jsonb,
    instance_id text,
    extra jsonb
) PARTITION BY RANGE (ts);
CREATE INDEX history_series ON history(tenant, entity_id, attr, ts);
CREATE TABLE history_entities(
    tenant text NOT NULL,
    entity_id text NOT NULL,
    types text[] NOT NULL,
    PRIMARY KEY (tenant, entity_id)
);
"""

_V4 = """
-- Committed changes of tenants that have subscriptions, for the one process that notifies (it holds
-- an advisory lock); seq follows commit order (writers take a lock before appending), xid groups a commit,
-- notified_by names the process that notified at commit (the notifying one writing itself).
CREATE TABLE change_log(
    seq bigserial PRIMARY KEY,
    xid bigint NOT NULL DEFAULT txid_current(),
    tenant text NOT NULL,
    entity_id text NOT NULL,
    entity_type text NOT NULL,
    before jsonb,
    after jsonb,
    notified_by text
);
CREATE TABLE notifier_cursor(
    name text PRIMARY KEY,
    seq bigint NOT NULL
);
"""

_V5 = """
-- A daily roll-up of the history for aggregatedValues over long windows: per series and UTC day of
-- observedAt, the counts, sums, sums of squares and extremes (numbers; strings by their JSON text).
-- history_daily_state counts the writes of each tenant and day (version, bumped by every writer in
-- its transaction) and the count the roll-up of that day was built from (built): a day is read from
-- the roll-up only when they are equal, else from the history. After dropping a month partition,
-- delete that month's rows of both tables (the roll-up is rebuilt from what is left).
CREATE TABLE history_daily(
    tenant text NOT NULL,
    entity_id text NOT NULL,
    attr text NOT NULL,
    dataset_id text NOT NULL,
    day date NOT NULL,
    n bigint NOT NULL,
    numbers bigint NOT NULL,
    total double precision,
    squares double precision,
    low double precision,
    high double precision,
    slow text COLLATE "C",
    shigh text COLLATE "C",
    first_at timestamptz NOT NULL,
    last_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, entity_id, attr, dataset_id, day)
);
CREATE TABLE history_daily_state(
    tenant text NOT NULL,
    day date NOT NULL,
    version bigint NOT NULL,
    built bigint,
    PRIMARY KEY (tenant, day)
);
INSERT INTO history_daily_state(tenant, day, version)
SELECT DISTINCT tenant, (observed_at AT TIME ZONE 'UTC')::date, 1 FROM history WHERE observed_at IS NOT NULL;
"""

_V6 = """
-- Write cost (measured with bench/bench_store.py): the boxes' foreign key ran one check per box inserted
-- (about two thirds of the insert's time); the store deletes an entity's boxes itself. No query reads the
-- whole-document GIN index (the attrs and types indexes serve them), and every write updated it.
ALTER TABLE geo DROP CONSTRAINT IF EXISTS geo_tenant_id_fkey;
DROP INDEX IF EXISTS entities_doc;
"""

_V7 = """
CREATE TABLE csource_registrations(
    tenant text NOT NULL,
    id text NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
"""

_V8 = """
-- The audit log of cross-tenant reads (sharing policies, syndicat views, federated reads): who read
-- what and when; tokens never stored. Pruned by the store at write (audit_retention_days).
CREATE TABLE sharing_audit(
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    principal text NOT NULL,
    tenant text NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    query text NOT NULL,
    status integer NOT NULL,
    returned integer NOT NULL,
    via text
);
CREATE INDEX sharing_audit_at ON sharing_audit(at);
"""

_V9_HOT_UPDATES = """
-- Write cost, measured with bench/bench_store.py (30,000 entities updated twice): with full pages no
-- update could stay on its page, so every telemetry update rewrote every index of the row (0 of 60,000
-- updates were HOT). With room left on each page, an update that keeps the types and the attribute
-- summary (the usual reading) is a heap-only tuple: about 78 % of them, and the UPDATE statement took
-- 23-31 us per entity instead of 60-98 at the same load. (Three such entities fit a page at 60 or 70;
-- 85 made 34 % HOT, 50 made all of them HOT for half again the heap at creation.) New pages get the room;
-- to give it to the pages of an existing table, rewrite it once in a quiet moment (VACUUM FULL entities).
ALTER TABLE entities SET (fillfactor = 70);
-- No query reads (tenant, type, id): type queries test the types array (its GIN index) and page by the
-- primary key. Every insert and every non-HOT update paid for it.
DROP INDEX IF EXISTS entities_type;
"""

_V10 = """
CREATE TABLE csource_subscriptions(
    tenant text NOT NULL,
    id text NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (tenant, id)
);
"""

_V11_BOXES = """
-- The geo-query prefilter as an index-only scan. A GiST index on PostGIS geometries cannot return them
-- (its 2-D opclass stores float4 boxes), so each box the index found was a heap read, and boxes sit on
-- the heap in creation order: at 1,000,000 entities a near query read 2,554 heap pages for 2,644 boxes
-- (bench/bench_store.py; p50 20-23 ms, 13-19 ms after a manual CLUSTER). The core box type's GiST
-- opclass stores the box itself and gives it back, and the columns the query needs are included, so
-- the candidates come from the few index pages that hold one area (the GiST tree groups neighbours)
-- and the heap is read only for pages the visibility map does not cover. box(geometry) is exact (the
-- polygon's double coordinates); box && is a fuzzy (1e-6) overlap, a superset as the prefilter needs.
DROP INDEX IF EXISTS geo_geom;
ALTER TABLE geo ALTER COLUMN geom TYPE box USING box(geom);
ALTER TABLE geo RENAME COLUMN geom TO bbox;
CREATE INDEX geo_bbox ON geo USING gist(bbox) INCLUDE (tenant, attr, id);
-- An index-only scan reads the heap for each page not marked all-visible; boxes are only inserted (by a
-- new entity) or deleted (an entity moved or gone), so the insert-driven autovacuum keeps the map; by
-- default it waits for 20 % of the table (200,000 boxes at 1,000,000), which a fleet that grows slowly
-- may never insert after a bulk load.
ALTER TABLE geo SET (autovacuum_vacuum_insert_scale_factor = 0.02);
"""
_V11_AFTER = """
-- the rewrite above leaves no page marked all-visible: mark them now rather than at the next autovacuum
VACUUM (ANALYZE) geo;
"""

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(1, "tenants, entities (JSONB, GIN), geometry boxes (PostGIS, GiST), hosted contexts", _V1),
    Migration(2, "subscriptions (definition and delivery state, one JSONB document each)", _V2),
    Migration(3, "attribute history, partitioned by month", _V3),
    Migration(4, "change log and cursor of the notifying process", _V4),
    Migration(5, "daily roll-up of the attribute history (aggregatedValues over long windows)", _V5),
    Migration(6, "cheaper writes: no foreign key on geometry boxes, no whole-document GIN index", _V6),
    Migration(7, "context source registrations (one JSONB document each)", _V7),
    Migration(8, "sharing audit log of cross-tenant reads", _V8),
    Migration(9, "cheaper updates: room for heap-only updates of entities, no unused (tenant, type, id) index",
              _V9_HOT_UPDATES),
    Migration(10, "context source registration subscriptions (one JSONB document each)", _V10),
    Migration(
        11,
        "geometry boxes as box (GiST with included columns): the geo prefilter as an index-only scan",
        _V11_BOXES,
        _V11_AFTER,
    ),
)
"""Every migration, in order; append new ones, never edit an applied one."""

LATEST: Final = MIGRATIONS[-1].version


async def applied(conn: Any) -> list[int]:
    """The versions recorded in the database (empty when it was never migrated)."""
    exists = await conn.fetchval("SELECT to_regclass('jonction_schema') IS NOT NULL")
    if not exists:
        return []
    return [int(r[0]) for r in await conn.fetch("SELECT version FROM jonction_schema ORDER BY version")]


async def migrate(conn: Any) -> list[int]:
    """Apply the missing migrations in order; return the versions applied now."""
    done_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        # a schema change is flushed at commit even where the store commits asynchronously; and only
        # flushed commits let the VACUUM of a step's ``after`` mark the rows it wrote all-visible
        await conn.execute("SET LOCAL synchronous_commit = on")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS jonction_schema(version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = set(await applied(conn))
        newer = sorted(v for v in done if v > LATEST)
        if newer:
            raise ConfigInvalid(
                f"the database schema is at version {newer[-1]}, newer than this jonction knows ({LATEST}): "
                "upgrade jonction"
            )
        for step in MIGRATIONS:
            if step.version in done:
                continue
            await conn.execute(step.sql)
            await conn.execute("INSERT INTO jonction_schema(version, name) VALUES($1, $2)", step.version, step.name)
            done_now.append(step.version)
    # VACUUM cannot run in a transaction: after the commit, by the process that applied the step (if it
    # stops before, autovacuum does the same later)
    for step in MIGRATIONS:
        if step.version in done_now and step.after:
            await conn.execute(step.after)
    return done_now
