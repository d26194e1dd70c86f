"""The SQLite history's write path: one pass over a batch, known series from the writer's cache, SQL NULLs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.store import history
from gateway.store.history import Series, TimeFilter

V = "https://example.org/v/"
TEMP = V + "temperature"
STATE = V + "state"
NOW = "2026-12-03T10:00:00Z"


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    history.ensure_schema(conn)
    return conn


def _series(conn: sqlite3.Connection) -> dict[tuple[str, str, str, str], int]:
    return {
        (t, e, a, d): sid
        for sid, t, e, a, d in conn.execute("SELECT series_id, tenant, entity_id, attr, dataset_id FROM history_series")
    }


def _write(conn: sqlite3.Connection, cache: history.WriteCache, rows: Sequence[history.HistoryRow]) -> bool:
    """One write transaction of the store's writer; True when the cache was forgotten (another connection wrote)."""
    conn.execute("BEGIN IMMEDIATE")
    forgotten = cache.check(conn)
    history.record_many(conn, rows, cache)
    conn.execute("COMMIT")
    return forgotten


def _values(conn: sqlite3.Connection, series_id: int) -> list[Any]:
    rows = conn.execute("SELECT value FROM history_instances WHERE series_id=? ORDER BY rowid", (series_id,))
    return [json.loads(v) for (v,) in rows]


def test_absent_members_are_stored_as_sql_null_and_read_back_unchanged(tmp_path: Path) -> None:
    """An instance without observedAt, instanceId, metadata or number leaves SQL NULLs (not NaN, not text)."""
    conn = _open(tmp_path / "store.sqlite")
    bare = {"type": "Property", "value": "on", "createdAt": NOW, "modifiedAt": NOW}
    full = {
        "type": "Property",
        "value": 21.5,
        "observedAt": "2026-12-03T09:59:00.250Z",
        "unitCode": "CEL",
        "instanceId": "urn:ngsi-ld:Instance:mine",
        "createdAt": NOW,
        "modifiedAt": NOW,
    }
    relation = {"type": "Relationship", "object": "urn:ngsi-ld:Device:1", "createdAt": NOW, "modifiedAt": NOW}
    conn.execute("BEGIN")
    assert (
        history.record_many(
            conn,
            [
                ("", "urn:a", [V + "T"], STATE, bare),
                ("", "urn:a", [V + "T"], TEMP, full),
                ("", "urn:a", [V + "T"], V + "device", relation),
            ],
        )
        == 3
    )
    conn.execute("COMMIT")
    kinds = conn.execute(
        "SELECT typeof(observed_at), typeof(num), typeof(value), typeof(instance_id), typeof(extra) "
        "FROM history_instances ORDER BY rowid"
    ).fetchall()
    assert kinds == [
        ("null", "null", "text", "null", "null"),
        ("integer", "real", "text", "text", "text"),
        ("null", "null", "text", "null", "null"),
    ]
    # the time index puts NULL observedAt first: a NaN stored there would sort as a number
    assert conn.execute("SELECT count(*) FROM history_instances WHERE observed_at IS NULL").fetchone() == (2,)
    series = _series(conn)
    (state,) = history.instances(conn, Series(series[("", "urn:a", STATE, "")], "urn:a", STATE, ""), TimeFilter())
    assert state.expanded() == {"type": "Property", "value": "on", "instanceId": state.instance_id}
    assert state.instance_id.startswith(history.INSTANCE_PREFIX)
    (temp,) = history.instances(conn, Series(series[("", "urn:a", TEMP, "")], "urn:a", TEMP, ""), TimeFilter())
    assert temp.expanded() == {
        "type": "Property",
        "value": 21.5,
        "unitCode": "CEL",
        "observedAt": "2026-12-03T09:59:00.250Z",
        "instanceId": "urn:ngsi-ld:Instance:mine",
    }
    # aggregation reads the numeric projection: the string instance has none, so no sum
    (bucket,) = history.aggregate(
        conn, Series(series[("", "urn:a", STATE, "")], "urn:a", STATE, ""), TimeFilter(), history.Duration()
    )
    assert (bucket.count, bucket.numbers, bucket.low, bucket.high) == (1, 0, "on", "on")
    conn.close()


def test_batch_mixing_cached_and_new_series_keeps_order_and_ids(tmp_path: Path) -> None:
    """Known series (from the writer's cache) and new ones interleave in one batch; rows keep batch order."""
    conn = _open(tmp_path / "store.sqlite")
    cache = history.WriteCache()
    inst = {"type": "Property", "value": 1, "modifiedAt": NOW}
    _write(conn, cache, [("", "urn:a", [V + "T"], TEMP, inst)])
    known = _series(conn)[("", "urn:a", TEMP, "")]
    assert cache.series == {("", "urn:a", TEMP, ""): known}
    batch = [
        ("", "urn:b", [V + "T"], TEMP, {**inst, "value": 10}),  # new entity, before a known series
        ("", "urn:a", [V + "T"], TEMP, {**inst, "value": 2}),  # known (cached)
        ("", "urn:a", [V + "T"], STATE, {**inst, "value": "on"}),  # new attribute of a known entity
        ("", "urn:a", [V + "T"], TEMP, {**inst, "value": 3, "datasetId": "urn:ds:1"}),  # new datasetId
        ("", "urn:b", [V + "T"], TEMP, {**inst, "value": 11}),  # the new entity's series again
        ("", "urn:a", [V + "T"], TEMP, {**inst, "value": 4}),  # known again
    ]
    assert not _write(conn, cache, batch)  # nobody else wrote: the cache is trusted
    series = _series(conn)
    assert series[("", "urn:a", TEMP, "")] == known
    assert len(series) == 4 and len(set(series.values())) == 4
    assert cache.series == series  # the new series were remembered
    assert _values(conn, known) == [1, 2, 4]
    assert _values(conn, series[("", "urn:b", TEMP, "")]) == [10, 11]
    assert _values(conn, series[("", "urn:a", STATE, "")]) == ["on"]
    assert _values(conn, series[("", "urn:a", TEMP, "urn:ds:1")]) == [3]
    # every row of the batch went to the table in batch order (instanceIds follow the row ids)
    order = [json.loads(v) for (v,) in conn.execute("SELECT value FROM history_instances ORDER BY rowid")]
    assert order == [1, 10, 2, "on", 3, 11, 4]
    assert cache.types == {("", "urn:a"): json.dumps([V + "T"]), ("", "urn:b"): json.dumps([V + "T"])}
    conn.close()


def test_series_deleted_by_another_connection_is_not_written_through_the_cache(tmp_path: Path) -> None:
    """The temporal API (its own connection) deletes an entity's history: the writer's next batch makes a new series."""
    path = tmp_path / "store.sqlite"
    writer, other = _open(path), _open(path)
    cache = history.WriteCache()
    inst = {"type": "Property", "value": 1, "modifiedAt": NOW}
    _write(writer, cache, [("", "urn:a", [V + "T"], TEMP, inst)])
    other.execute("BEGIN IMMEDIATE")
    assert history.delete_entity(other, "", "urn:a")
    other.execute("COMMIT")
    # the other connection's commit is seen and the cache forgotten
    assert _write(writer, cache, [("", "urn:a", [V + "T"], TEMP, {**inst, "value": 2})])
    series = _series(writer)
    assert list(series) == [("", "urn:a", TEMP, "")]
    assert _values(writer, series[("", "urn:a", TEMP, "")]) == [2]
    assert history.entity_types(writer, "", "urn:a") == [V + "T"]  # the entity's types written again too
    writer.close()
    other.close()
