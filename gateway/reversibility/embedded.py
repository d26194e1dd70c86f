"""The embedded store (SQLite or PostgreSQL) as an export source and an import destination.

Entities are read through :class:`gateway.store.base.Storage` (``query`` in pages ordered by id,
the same on both backends) and written with ``Storage.apply`` as stored documents, system times
kept. The history is read and written where each backend keeps it: the SQLite file's history
tables (:mod:`gateway.store.history`, the rows the temporal API reads, walked one series at a time
on its time index), or PostgreSQL's through ``Storage.history_slice`` per entity and time window
and ``Storage.history_writes()``. Going through the storage rather than the HTTP API keeps a year of
readings from turning into millions of JSON requests and answers, and needs no server.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Final

from gateway.model import VALUE_KEY
from gateway.store import history, jsonld
from gateway.store.base import Storage
from gateway.store.records import Change, Doc, Mutation, QuerySpec
from gateway.store.subscriptions.parsing import ensure_schema as subscriptions_schema

PAGE: Final = 500
"""Entities per query page (and per write transaction on import)."""
SLICE_ROWS: Final = 50_000
"""History read from PostgreSQL one entity and about this many instances at a time (bounded memory)."""
_MARKS: Final = history.DELETION_MARK


def _sqlite_path(storage: Storage) -> Path | None:
    """The SQLite file of the storage, or None for a database backend (which answers history_slice)."""
    path = getattr(storage, "path", None)
    return Path(path) if isinstance(path, Path | str) and storage.history_writes() is None else None


class EmbeddedReader:
    """Reads one embedded store for an export."""

    def __init__(self, storage: Storage, context: str) -> None:
        self.storage = storage
        self.context = context
        self.ctx = storage.contexts.get([context])
        self._sqlite = _sqlite_path(storage)

    def describe(self) -> dict[str, Any]:
        """The source as the manifest records it."""
        return {"kind": "embedded", "backend": "sqlite" if self._sqlite else "postgresql"}

    async def tenants(self) -> list[str]:
        """Every tenant of the store."""
        return sorted(await self.storage.tenants())

    def type_iris(self, types: Sequence[str] | None) -> list[str] | None:
        """Type terms (of the export's context) or IRIs as IRIs."""
        if not types:
            return None
        return [iri for t in types for iri in self.ctx.expand_type(t)]

    async def entities(self, tenant: str, types: Sequence[str] | None) -> AsyncIterator[dict[str, Any]]:
        """The tenant's entities (of ``types``) as export lines, by id, one page in memory at a time."""
        iris = self.type_iris(types)
        offset = 0
        while True:
            page = await self.storage.query(tenant, QuerySpec(types=iris, limit=PAGE, offset=offset))
            for doc in page.docs:
                yield _entity_line(self.ctx, doc, self.context)
            if not page.more:
                return
            offset += len(page.docs)

    async def history(
        self, tenant: str, types: Sequence[str] | None, since: int | None, until: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Every history instance of the tenant (entities of ``types``; time in [since, until)) as lines."""
        iris = set(self.type_iris(types) or ())
        if self._sqlite is not None:
            conn = sqlite3.connect(f"file:{self._sqlite}?mode=ro", uri=True)
            # names compacted once per series and type list, not once per instance (millions of them)
            names: dict[str, str] = {}
            kinds: dict[str, Any] = {}
            try:
                for entity_id, types_, attr, inst, extra in _sqlite_history(conn, tenant, iris, since, until):
                    name = names.get(attr)
                    if name is None:
                        name = names[attr] = self.ctx.compact_iri(attr)
                    key = "\x1e".join(types_)
                    compact = kinds.get(key)
                    if compact is None:
                        found = [self.ctx.compact_iri(t) for t in types_]
                        compact = kinds[key] = found[0] if len(found) == 1 else found
                    if extra or inst["type"] == "VocabProperty":
                        inst = self.ctx.compact_instance(inst, sys_attrs=True)  # sub-attributes, vocab values
                    yield {"id": entity_id, "type": compact, name: inst, "@context": self.context}
            finally:
                conn.close()
            return
        async for entity_id, types_, attr, inst in self._slices(tenant, iris, since, until):
            yield _instance_line(self.ctx, entity_id, types_, attr, inst, self.context)

    async def _slices(
        self, tenant: str, iris: set[str], since: int | None, until: int | None
    ) -> AsyncIterator[tuple[str, list[str], str, dict[str, Any]]]:
        everyone = await self.storage.history_slice(tenant, None, 0, 1, types=sorted(iris) if iris else None)
        if everyone is None:
            return
        entities = sorted((e, json.loads(t)) for _, e, t in everyone.entities)
        for entity_id, types_ in entities:
            for start, end in await self._windows(tenant, entity_id, since, until):
                part = await self.storage.history_slice(tenant, [entity_id], start, end)
                if part is None:
                    return
                series = {sid: (attr, dataset) for sid, _, _, attr, dataset in part.series}
                for sid, observed, created, modified, kind, _num, value, instance_id, extra in part.instances:
                    attr, dataset = series[sid]
                    if dataset.startswith(_MARKS):
                        continue
                    yield entity_id, types_, attr, _instance(
                        kind, value, observed, created, modified, dataset, instance_id, extra, None
                    )

    async def _windows(
        self, tenant: str, entity_id: str, since: int | None, until: int | None
    ) -> list[tuple[int | None, int | None]]:
        """Time windows over one entity's history holding about SLICE_ROWS instances each.

        The backend counts the instances and finds their span (one aggregation, no rows read);
        the first and last windows stay open so that instances outside the span (without
        observedAt, placed at their write time) are read too.
        """
        from gateway.store.records import AggregationQuery

        writes = self.storage.history_writes()
        if writes is None:
            return [(since, until)]
        query = AggregationQuery(tenant, [entity_id], None, None, None, False, "observed_at", since, until, 0, 0,
                                 ["totalCount"])
        buckets = [b for found in (await writes.aggregate(query)).buckets.values() for b in found]
        total = sum(b[2] for b in buckets)
        if not buckets or total <= SLICE_ROWS:
            return [(since, until)]
        low = min(b[0] for b in buckets)
        high = max(b[1] for b in buckets)
        count = -(-total // SLICE_ROWS)
        width = max(1, -(-(high - low) // count))
        edges = [low + i * width for i in range(1, count)]
        bounds: list[int | None] = [since, *edges, until]
        return list(pairwise(bounds))

    async def subscriptions(self, tenant: str, removed: list[str]) -> AsyncIterator[dict[str, Any]]:
        """The tenant's subscriptions as export lines, by id (credentials removed, listed in ``removed``)."""
        from gateway.reversibility.records import subscription_line

        records = self.storage.subscription_records()
        if records is not None:
            rows = await records.load_all()
        elif self._sqlite is not None:
            conn = sqlite3.connect(f"file:{self._sqlite}?mode=ro", uri=True)
            try:
                has = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'subscriptions'").fetchone()
                rows = list(conn.execute("SELECT tenant, id, doc FROM subscriptions")) if has else []
            finally:
                conn.close()
        else:
            rows = []
        for sub_id, doc in sorted((i, d) for t, i, d in rows if t == tenant):
            yield subscription_line(json.loads(doc), sub_id, removed, f"subscription {sub_id}")

    def hosted_contexts(self) -> dict[str, Any]:
        """The @contexts the store hosts (id → document)."""
        return {k: dict(v) for k, v in self.storage.hosted_contexts().items()}


def _entity_line(ctx: jsonld.Context, doc: Mapping[str, Any], context: str) -> dict[str, Any]:
    from gateway.reversibility.records import entity_line

    return entity_line(ctx, doc, context)


def _instance_line(
    ctx: jsonld.Context, entity_id: str, types: list[str], attr: str, inst: Mapping[str, Any], context: str
) -> dict[str, Any]:
    from gateway.reversibility.records import instance_line

    return instance_line(ctx, entity_id, types, attr, inst, context)


_time = lru_cache(maxsize=1 << 16)(history.from_micros)
"""Times repeat (observedAt across entities, createdAt equal to modifiedAt): each formatted once."""


def _instance(
    kind: str, value: Any, observed: int | None, created: int, modified: int, dataset: str,
    instance_id: str | None, extra: Any, rowid: int | None,
) -> dict[str, Any]:
    """An expanded instance from the history columns (the shape the temporal API reads)."""
    inst: dict[str, Any] = {"type": kind, VALUE_KEY.get(kind, "value"): None if value is None else json.loads(value)}
    if extra:
        inst.update(json.loads(extra) if isinstance(extra, str) else extra)
    if observed is not None:
        inst["observedAt"] = _time(observed)
    if dataset:
        inst["datasetId"] = dataset
    inst["instanceId"] = instance_id or f"{history.INSTANCE_PREFIX}{rowid}"
    inst["createdAt"] = _time(created)
    inst["modifiedAt"] = _time(modified)
    return inst


def _sqlite_history(
    conn: sqlite3.Connection, tenant: str, iris: set[str], since: int | None, until: int | None
) -> Iterator[tuple[str, list[str], str, dict[str, Any], bool]]:
    """The history of one tenant in the SQLite file: series by (entity, attribute, datasetId), each on its
    (series_id, observed_at) index (instances without observedAt first, then by time, ties by row); the last
    member says whether the instance has more members (sub-attributes, unitCode…) to compact."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'history_instances'").fetchone() is None:
        return
    types = {e: json.loads(t) for e, t in conn.execute(
        "SELECT entity_id, types FROM history_entities WHERE tenant = ?", (tenant,))}
    series = conn.execute(
        "SELECT series_id, entity_id, attr, dataset_id FROM history_series WHERE tenant = ?"
        + history.marks_sql(False) + " ORDER BY entity_id, attr, dataset_id", (tenant,)
    ).fetchall()
    where = ""
    args: list[Any] = []
    # a bound applies to observedAt, or to the write time of an instance that has none
    if since is not None:
        where += " AND COALESCE(observed_at, modified_at) >= ?"
        args.append(since)
    if until is not None:
        where += " AND COALESCE(observed_at, modified_at) < ?"
        args.append(until)
    for series_id, entity_id, attr, dataset in series:
        entity_types = types.get(entity_id, [])
        if iris and not iris.intersection(entity_types):
            continue
        cursor = conn.execute(
            "SELECT rowid, observed_at, created_at, modified_at, kind, value, instance_id, extra "
            f"FROM history_instances WHERE series_id = ?{where} ORDER BY observed_at, rowid", (series_id, *args),
        )
        while rows := cursor.fetchmany(2000):
            for rowid, observed, created, modified, kind, value, instance_id, extra in rows:
                yield entity_id, entity_types, attr, _instance(
                    kind, value, observed, created, modified, dataset, instance_id, extra, rowid
                ), bool(extra)


# --------------------------------------------------------------------------- import


def _put(doc: Doc) -> Change:
    """A change storing ``doc`` as it is (its system times kept, no history row); unchanged when equal."""

    def mutate(current: Doc | None, now: str) -> Mutation:  # noqa: ARG001  # the Mutator signature
        if current == doc:
            return Mutation(current, "unchanged")
        return Mutation(doc, "created" if current is None else "updated")

    return Change(doc["id"], mutate)


class EmbeddedWriter:
    """Writes a bundle's records into an embedded store (fresh or existing), idempotently."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._sqlite = _sqlite_path(storage)
        self._names: dict[tuple[str, str, str], tuple[Any, list[str], str]] = {}

    def describe(self) -> str:
        """The destination in messages."""
        return f"the embedded store ({'sqlite' if self._sqlite else 'postgresql'})"

    async def entities(self, tenant: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Store entity lines as they were exported (system times kept); the number that failed is 0 or raises."""
        from gateway.reversibility.records import restore_times

        docs = []
        for line in lines:
            context = line.get("@context")
            ctx = self.storage.contexts.get(_entries(context))
            body = {k: v for k, v in line.items() if k != "@context"}
            docs.append(restore_times(ctx.expand_entity(body), body, ctx))
        results = await self.storage.apply(tenant, [_put(d) for d in docs], create_tenant=True)
        failed = [r for r in results if r.error is not None]
        if failed:
            raise ValueError(f"{failed[0].entity_id}: {failed[0].error}")
        return len(docs)

    async def history(self, tenant: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Add history lines; an instance already there (same series and instanceId) is replaced, not doubled."""
        from gateway.reversibility.records import split_instance

        rows: list[history.HistoryRow] = []
        for line in lines:
            entity_id, type_, attr_name, instance = split_instance(line)
            context = line.get("@context")
            # the same context, types and names on every line: expanded once per batch
            key = (context if isinstance(context, str) else json.dumps(context), str(type_), attr_name)
            known = self._names.get(key)
            if known is None:
                ctx = self.storage.contexts.get(_entries(context))
                known = (ctx, ctx.expand_type(type_), ctx.expand_attr_name(attr_name, f"/{attr_name}"))
                if len(self._names) > 10_000:
                    self._names.clear()
                self._names[key] = known
            ctx, types, attr = known
            (expanded,) = ctx.expand_attribute(instance, f"/{attr_name}")
            expanded = dict(expanded)
            for member in ("instanceId", "createdAt", "modifiedAt"):
                if isinstance(instance.get(member), str):
                    expanded[member] = instance[member]
            rows.append((tenant, entity_id, types, attr, expanded))
        if not rows:
            return 0
        if self._sqlite is not None:
            _sqlite_append(self._sqlite, rows)
            return len(rows)
        writes = self.storage.history_writes()
        if writes is None:
            raise ValueError("this store backend takes no history writes")
        by_entity: dict[str, list[history.HistoryRow]] = {}
        for row in rows:
            by_entity.setdefault(row[1], []).append(row)
        for entity_id, own in by_entity.items():
            # the writes replace an instance of the same series and observedAt; one without
            # observedAt is matched by its instanceId instead
            for _, _, _, attr, inst in own:
                if not isinstance(inst.get("observedAt"), str):
                    await writes.delete_instance(tenant, entity_id, attr, str(inst["instanceId"]))
            recorded = own[0][2]
            await writes.write(tenant, entity_id, [recorded] if isinstance(recorded, str) else list(recorded), own)
        return len(rows)

    async def subscriptions(self, tenant: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Store subscription lines (replacing one with the same id); read by the store at its next start."""
        from gateway.reversibility.records import subscription_stored

        await self.storage.ensure_tenant(tenant)
        records = self.storage.subscription_records()
        for line in lines:
            sub_id, stored = subscription_stored(line)
            document = json.dumps(stored, separators=(",", ":"))
            if records is not None:
                await records.save(tenant, sub_id, document)
            elif self._sqlite is not None:
                conn = sqlite3.connect(self._sqlite, isolation_level=None, timeout=30)
                try:
                    subscriptions_schema(conn)
                    conn.execute("INSERT OR REPLACE INTO subscriptions (tenant, id, doc) VALUES (?, ?, ?)",
                                 (tenant, sub_id, document))
                finally:
                    conn.close()
        return len(lines)

    async def contexts(self, documents: Mapping[str, Any]) -> None:
        """Host the exported @contexts again."""
        for context_id, document in documents.items():
            await self.storage.put_context(context_id, document)


def _entries(context: Any) -> list[Any]:
    if context is None:
        return []
    return list(context) if isinstance(context, list) else [context]


def _sqlite_append(path: Path, rows: Sequence[history.HistoryRow]) -> None:
    """Append rows to the SQLite history in one transaction, first removing the same instances.

    An instance is the same when it has the series, the observedAt (the time index finds it) and
    the instanceId: a re-import replaces what it wrote, and two distinct readings that happen to
    share an observedAt both survive (unlike the temporal API's same-moment rule).
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        history.ensure_schema(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            keys = {(t, e, a, str(i.get("datasetId") or "")) for t, e, _, a, i in rows}
            series = history.resolve_series(conn, keys)
            timed, untimed = [], []
            for t, e, _, a, inst in rows:
                observed = inst.get("observedAt")
                sid = series[(t, e, a, str(inst.get("datasetId") or ""))]
                if isinstance(observed, str):
                    timed.append((sid, history.to_micros(observed), inst["instanceId"]))
                else:
                    untimed.append((sid, inst["instanceId"]))
            # two statements, each a seek on the (series_id, observed_at) index
            conn.executemany(
                "DELETE FROM history_instances WHERE series_id = ? AND observed_at = ? AND instance_id = ?", timed
            )
            conn.executemany(
                "DELETE FROM history_instances WHERE series_id = ? AND observed_at IS NULL AND instance_id = ?", untimed
            )
            history.record_many(conn, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
