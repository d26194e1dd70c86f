"""The NGSI-LD temporal API (ETSI GS CIM 009 V1.9.1 §5.6.11 to §5.7.4, §6.18 to §6.24, §4.5.7 to §4.5.19).

Reads the attribute history the store records on every write (``gateway.store.history``) and
renders it as the temporal representation: normalized (arrays of instances), temporalValues
(``values: [[v, t], ...]``) or aggregatedValues (``avg: [[v, start, end], ...]``). Temporal writes
(POST /temporal/entities...) add instances to the history; the first one also creates the entity
when it does not exist (from its newest instances), later ones leave the current state alone.
Answers are cut at a per-attribute instance limit with one shared time range (206, §6.3.10).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from gateway import model
from gateway.store import geo as geo_mod
from gateway.store import history, http, operations, readers
from gateway.store.base import Change, Doc, HistorySlice, Mutation, Storage
from gateway.store.history import Database, EntitySelector, Instance, Series, TimeFilter
from gateway.store.jsonld import Context
from gateway.store.patterns import compile_user_pattern
from gateway.store.problems import NgsiError, bad_request, invalid_request, not_found
from gateway.store.query import QExpr, parse_q, parse_type_expression
from gateway.store.records import AggregateBucket, AggregationQuery

MAX_INSTANCES: Final = 10_000
"""Most instances per attribute in one answer; beyond, 206 with a Content-Range (§6.3.10.3)."""
MAX_RESPONSE_INSTANCES: Final = 200_000
"""Most instances in one answer, all entities together (bounds memory for wide type queries)."""
MAX_LAST_N: Final = 10_000
MAX_BUCKETS: Final = 100_000
"""Most aggregation periods per attribute (e.g. PT1M over ten years is refused)."""
_VALUES_KEY: Final[Mapping[str, str]] = {
    "Property": "values",
    "GeoProperty": "values",
    "Relationship": "objects",
    "LanguageProperty": "languageMaps",
    "VocabProperty": "vocabs",
    "ListProperty": "valueLists",
    "ListRelationship": "objectLists",
    "JsonProperty": "jsons",
}
_TIME_PARAMS: Final = ("timerel", "timeAt", "endTimeAt", "timeproperty")
_READ_PARAMS: Final = frozenset(
    {*_TIME_PARAMS, "attrs", "pick", "omit", "options", "format", "lastN", "aggrMethods", "aggrPeriodDuration",
     "datasetId", "local", "lang"}
)
_QUERY_PARAMS: Final = frozenset(
    {*_READ_PARAMS, "id", "type", "idPattern", "q", "limit", "offset", "count", "orderBy", "georel", "geometry",
     "coordinates", "geoproperty"}
)
_UNSUPPORTED_PARAMS: Final = frozenset({"scopeQ"})
_CORE_MEMBERS: Final = ("id", "type", "scope")
"""Entity members that ``pick``/``omit`` name besides attributes (§4.21)."""
_REPRESENTATIONS: Final = ("normalized", "temporalValues", "aggregatedValues")


class DatabaseHolder:
    """Set up with the app, filled once the app starts (its state cannot change after)."""

    db: Database | None = None


DB_KEY: Final = web.AppKey("jonction.store.temporal_db", DatabaseHolder)
"""The temporal API's own connection to the store file."""
EntityMatch = Callable[[str, Sequence[str]], bool]
"""(entity id, type IRIs) → whether an entity is selected."""


# --------------------------------------------------------------------------- parameters


@dataclass(slots=True)
class TemporalRequest:
    """Everything a temporal read needs, validated."""

    selector: EntitySelector
    tf: TimeFilter
    representation: str = "normalized"
    """normalized, temporalValues or aggregatedValues."""
    sys_attrs: bool = False
    last_n: int | None = None
    methods: list[str] = field(default_factory=list)
    period: history.Duration = field(default_factory=history.Duration)
    q: QExpr | None = None
    time_property: str = "observedAt"
    instance_limit: int = MAX_INSTANCES
    """Most instances per attribute before the answer is cut (206, §6.3.10)."""
    pick_attrs: frozenset[str] | None = None
    """Attribute IRIs ``pick`` keeps (None: all)."""
    omit_attrs: frozenset[str] = frozenset()
    members: frozenset[str] = frozenset(_CORE_MEMBERS)
    """Core members (id, type, scope) left after pick/omit."""
    entity_match: EntityMatch | None = None
    """Extra entity selection: POST query selectors, geo-query (applied after the SQL selection)."""
    geo: tuple[str, geo_mod.GeoQuery] | None = None
    """(geoproperty IRI, query): the entity's GeoProperty matched at some time in the window."""
    order_by: list[tuple[str, bool]] = field(default_factory=list)
    """(path, descending) keys of ``orderBy`` (§4.23)."""
    local: bool = False
    lang: str | None = None
    """``lang`` (§4.15): LanguageProperty instances become Properties in the chosen language."""
    buckets: Mapping[int, Sequence[AggregateBucket]] | None = None
    """aggregatedValues a database backend computed, by series id (None: aggregate the history read)."""
    policy: readers.TemporalPolicy | None = None
    """A non-owner's sharing policy: entities, attributes and coarsening it sees (None: the owner)."""


def _representation(options: str | None, fmt: str | None) -> tuple[str, bool]:
    """``options`` and ``format`` → (representation, sysAttrs); ``format`` wins (§6.3.12)."""
    representation: str | None = None
    sys_attrs = False
    for item in (options or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item in _REPRESENTATIONS:
            if representation is not None and representation != item:
                raise bad_request(f"options: {representation} and {item} cannot be combined")
            representation = item
        elif item == "sysAttrs":
            sys_attrs = True
        elif item == "count":
            continue  # FIWARE clients' options=count, read as count=true by http.paging
        elif item in ("keyValues", "concise", "simplified"):
            representation = _same(representation, "temporalValues")
        else:
            raise invalid_request(f"options: unknown or unsupported option {item!r} for the temporal API")
    if fmt is not None:
        chosen = {"normalized": "normalized", "temporalValues": "temporalValues", "simplified": "temporalValues",
                  "aggregatedValues": "aggregatedValues"}.get(fmt)
        if chosen is None:
            raise invalid_request(f"format: {fmt!r} is not one of normalized, temporalValues, aggregatedValues")
        representation = chosen  # the format parameter takes precedence over options (§6.3.12)
    return representation or "normalized", sys_attrs


def _same(current: str | None, chosen: str) -> str:
    if current is not None and current != chosen:
        raise bad_request(f"the temporal representations {current} and {chosen} cannot be combined")
    return chosen


def _names(value: Any, what: str, limit: int) -> list[str] | None:
    """A comma-separated parameter (or a JSON list from a POST body) as names."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [a.strip() for a in value.split(",") if a.strip()]
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise bad_request(f"{what} must be a list of names")
    if len(value) > limit:
        raise NgsiError("TooComplexQuery", f"{what}: more than {limit} names")
    return value


def _read_request(
    ngsi: http.NgsiContext, ctx: Context, params: Mapping[str, Any], temporal_q: Mapping[str, Any] | None = None
) -> TemporalRequest:
    source = temporal_q if temporal_q is not None else params
    tf = history.time_filter(
        _opt_str(source, "timerel"), _opt_str(source, "timeAt"), _opt_str(source, "endTimeAt"),
        _opt_str(source, "timeproperty"),
    )
    representation, sys_attrs = _representation(_opt_str(params, "options"), _opt_str(params, "format"))
    req = TemporalRequest(EntitySelector(ngsi.tenant), tf, representation, sys_attrs)
    req.time_property = _opt_str(source, "timeproperty") or "observedAt"
    req.selector.deletions = req.time_property == "deletedAt"
    req.instance_limit = max(1, min(MAX_INSTANCES, ngsi.settings.temporal_instance_limit))
    req.last_n = history.check_limit(_opt_str(source, "lastN") or _opt_str(params, "lastN"), "lastN", MAX_LAST_N)
    if representation == "aggregatedValues":
        req.methods = history.parse_methods(_opt_str(params, "aggrMethods"))
        req.period = history.parse_duration(_opt_str(params, "aggrPeriodDuration") or "P0D")
    elif ("aggrMethods" in params or "aggrPeriodDuration" in params) and "aggregatedValues" not in (
        f"{params.get('options')},{params.get('format')}"
    ):
        # (with format=temporalValues overriding options=aggregatedValues they are simply unused)
        raise bad_request("aggrMethods and aggrPeriodDuration need options=aggregatedValues")
    limit = ngsi.settings.max_ids
    attrs = _names(params.get("attrs"), "attrs", limit)
    pick = _names(params.get("pick"), "pick", limit)
    omit = _names(params.get("omit"), "omit", limit)
    if pick is not None and attrs is not None:
        raise bad_request("pick and attrs cannot be combined")
    if omit is not None and attrs is not None:
        raise bad_request("omit and attrs cannot be combined")
    if pick is not None and omit is not None and set(pick) & set(omit):
        raise bad_request(f"{sorted(set(pick) & set(omit))[0]} is both in pick and in omit")
    if attrs is not None:
        req.selector.attrs = sorted({ctx.expand_attr_name(a, "attrs") for a in attrs})
    if pick is not None:
        req.members = frozenset(p for p in pick if p in _CORE_MEMBERS)
        req.pick_attrs = frozenset(ctx.expand_attr_name(p, "pick") for p in pick if p not in _CORE_MEMBERS)
    if omit is not None:
        req.members = req.members - set(omit)
        req.omit_attrs = frozenset(ctx.expand_attr_name(o, "omit") for o in omit if o not in _CORE_MEMBERS)
    dataset_ids = _opt_str(params, "datasetId")
    if dataset_ids is not None:
        req.selector.dataset_ids = [d for d in dataset_ids.split(",") if d]
    local = _opt_str(params, "local")
    if local not in (None, "true", "false"):
        raise bad_request(f"local must be true or false, got {local!r}")
    req.local = local == "true"
    lang = _opt_str(params, "lang")
    if lang is not None and (not lang or len(lang) > 100):
        raise bad_request("lang must be a language tag (or a comma-separated list of them)")
    req.lang = None if lang == "*" else lang
    req.policy = readers.temporal_policy(ngsi.tenant)
    if req.policy is not None and representation == "aggregatedValues" and not req.period.is_zero \
            and req.period.months == 0 and req.period.micros < _HOUR and req.policy.any_hourly():
        raise bad_request("aggrPeriodDuration: what is shared with this reader is averaged per hour; "
                          "ask for PT1H or longer")
    return req


def _opt_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    return value


def _check_unsupported(params: Mapping[str, Any]) -> None:
    for name in _UNSUPPORTED_PARAMS:
        if name in params:
            raise NgsiError("NotImplemented", f"{name} is not supported by this store's temporal API")


def _parse_order_by(text: str | None) -> list[tuple[str, bool]]:
    """``orderBy=path[;asc|;desc],...`` (§4.23) → [(path, descending)]."""
    if text is None:
        return []
    keys: list[tuple[str, bool]] = []
    for part in text.split(","):
        path, _, direction = part.strip().partition(";")
        if not path or direction not in ("", "asc", "desc") or len(keys) >= 16:
            raise bad_request(f"orderBy {text!r}: expected <member>[;asc|;desc],...")
        keys.append((path, direction == "desc"))
    return keys


def _entity_filters(ngsi: http.NgsiContext, ctx: Context, req: TemporalRequest, params: Mapping[str, Any]) -> None:
    ids = params.get("id")
    if isinstance(ids, str):
        ids = [i for i in ids.split(",") if i]
    if ids is not None:
        if len(ids) > ngsi.settings.max_ids:
            raise NgsiError("TooComplexQuery", f"id: more than {ngsi.settings.max_ids} ids")
        for entity_id in ids:
            if not model.is_uri(entity_id):
                raise bad_request(f"id: {entity_id!r} is not a URI")
        req.selector.ids = list(ids)
    types = _opt_str(params, "type")
    if types is not None:
        texpr = parse_type_expression(types)
        expand = ctx.expand_term
        req.selector.type_match = lambda found: texpr.matches(found, expand)
        req.selector.type_names = sorted({n for name in texpr.types() for n in (name, expand(name))})
    pattern = _opt_str(params, "idPattern")
    if pattern is not None:
        req.selector.id_pattern = _check_pattern(ngsi, pattern)
    q = _opt_str(params, "q")
    if q is not None:
        req.q = parse_q(q)
    georel = params.get("georel")
    if georel is not None or params.get("geometry") is not None or params.get("coordinates") is not None:
        gq = geo_mod.parse_geo_query(
            _opt_str(params, "georel"), _opt_str(params, "geometry"), params.get("coordinates"),
            _opt_str(params, "geoproperty") or "location",
        )
        req.geo = (ctx.expand_attr_name(gq.geoproperty, "geoproperty"), gq)
    elif params.get("geoproperty") is not None:
        raise bad_request("geoproperty given without georel, geometry and coordinates")
    req.order_by = _parse_order_by(_opt_str(params, "orderBy"))


def _check_pattern(ngsi: http.NgsiContext, pattern: str) -> str:
    if len(pattern) > ngsi.settings.max_id_pattern:
        raise NgsiError("TooComplexQuery", "idPattern too long")
    compile_user_pattern(pattern, "idPattern")  # RE2 syntax, linear time
    return pattern


def _needs_filter(req: TemporalRequest) -> None:
    """A query names entity types, attributes, a q or a geo-query unless it is local (§5.7.4, §6.18.3.2)."""
    sel = req.selector
    if req.local or sel.type_match is not None or sel.attrs is not None or req.q is not None or req.geo is not None:
        return
    if req.entity_match is not None:
        return  # POST query: at least one selector with a type was checked by the caller
    raise bad_request("a temporal query needs type, attrs, q or a geo-query (or local=true)")


# --------------------------------------------------------------------------- reading


@dataclass(slots=True)
class _Page:
    entities: list[dict[str, Any]]
    total: int
    content_range: str | None = None
    """The ``Content-Range`` value when attributes were cut at the instance limit (206)."""


@dataclass(slots=True)
class _Fetched:
    """The instances read for one series, before the answer's time range is applied."""

    series: Series
    insts: list[Instance]
    reached: bool = False


def _window_sql(tf: TimeFilter) -> tuple[str, list[Any]]:
    """Whether a series has an instance in the time window (index-friendly on both branches)."""
    where, args = tf.sql()
    if tf.column != "observed_at":
        return f"EXISTS (SELECT 1 FROM history_instances i WHERE i.series_id = s.series_id{where})", args
    # instances without observedAt count at the moment they were written (as when reading them)
    alt = TimeFilter("created_at", tf.start, tf.end).sql()
    return (
        f"(EXISTS (SELECT 1 FROM history_instances i WHERE i.series_id = s.series_id{where.replace(' AND ', ' AND i.')}"
        f" AND i.observed_at IS NOT NULL) OR EXISTS (SELECT 1 FROM history_instances i "
        f"WHERE i.series_id = s.series_id AND i.observed_at IS NULL{alt[0].replace(' AND ', ' AND i.')}))",
        [*args, *alt[1]],
    )


def _with_instances(conn: sqlite3.Connection, req: TemporalRequest, entity_ids: Sequence[str]) -> set[str]:
    """The entities having at least one selected instance in the time window."""
    sel = req.selector
    exists, exists_args = _window_sql(req.tf)
    found: set[str] = set()
    for start in range(0, len(entity_ids), 500):
        chunk = list(entity_ids[start : start + 500])
        sql = (
            "SELECT DISTINCT s.entity_id FROM history_series s WHERE s.tenant=? "
            f"AND s.entity_id IN ({','.join('?' * len(chunk))})"
        )
        args: list[Any] = [sel.tenant, *chunk]
        if sel.attrs is not None:
            sql += f" AND s.attr IN ({','.join('?' * len(sel.attrs))})"
            args.extend(sel.attrs)
        if sel.dataset_ids is not None:
            mark = history.DELETION_MARK if sel.deletions else ""
            wanted = [mark + ("" if d == "@none" else d) for d in sel.dataset_ids]
            sql += f" AND s.dataset_id IN ({','.join('?' * len(wanted))})"
            args.extend(wanted)
        else:
            sql += history.marks_sql(sel.deletions, "s.dataset_id")
        found.update(r[0] for r in conn.execute(f"{sql} AND {exists}", [*args, *exists_args]))
    return found


def _matches_q_or_geo(
    conn: sqlite3.Connection, req: TemporalRequest, entity_id: str, types: list[str], expand: Callable[[str], str]
) -> bool:
    """q and geo-query hold when some instance in the window satisfies them ("at some time")."""
    if req.q is not None:
        q_attrs = sorted({expand(a) for a in req.q.attributes()})
        doc: dict[str, Any] = {"id": entity_id, "type": types}
        for series in history.series_of(conn, EntitySelector(req.selector.tenant, attrs=q_attrs), [entity_id]):
            if req.policy is not None and not req.policy.attribute_visible(types, series.attr):
                continue  # a hidden attribute cannot be probed: as if it did not exist
            insts = history.instances(conn, series, req.tf, limit=MAX_INSTANCES)
            doc.setdefault(series.attr, []).extend(i.expanded() for i in insts)
        if not req.q.evaluate(doc, expand):
            return False
    if req.geo is not None:
        geo_iri, gq = req.geo
        grid = req.policy.grid(types) if req.policy is not None else None
        for series in history.series_of(conn, EntitySelector(req.selector.tenant, attrs=[geo_iri]), [entity_id]):
            if req.policy is not None and not req.policy.attribute_visible(types, series.attr):
                continue
            for inst in history.instances(conn, series, req.tf, limit=MAX_INSTANCES):
                value = readers.snap_geometry(inst.value, grid) if grid else inst.value
                if inst.kind == "GeoProperty" and gq.matches(value):
                    return True
        return False
    return True


def _select(
    conn: sqlite3.Connection, req: TemporalRequest, expand: Callable[[str], str], *, query: bool
) -> list[tuple[str, list[str]]]:
    """The selected entities (id, type IRIs), in answer order."""
    found = history.find_entities(conn, req.selector)
    if req.policy is not None:
        policy = req.policy
        found = [(e, t) for e, t in found if policy.entity_visible(t)]
    if req.entity_match is not None:
        match = req.entity_match
        found = [(e, t) for e, t in found if match(e, t)]
    if req.q is not None or req.geo is not None:
        found = [(e, t) for e, t in found if _matches_q_or_geo(conn, req, e, t, expand)]
    if query and found:
        # an entity without any instance in the window (or of the asked attributes/datasets) is not a match
        present = _with_instances(conn, req, [e for e, _ in found])
        found = [(e, t) for e, t in found if e in present]
    if req.order_by:
        found = _ordered(conn, req, found, expand)
    return found


def _read_entities(
    conn: sqlite3.Connection,
    req: TemporalRequest,
    ctx: Context,
    *,
    limit: int | None,
    offset: int,
    expand: Callable[[str], str],
    query: bool = True,
) -> _Page:
    found = _select(conn, req, expand, query=query)
    total = len(found)
    page = found[offset:] if limit is None else found[offset : offset + limit]
    types_of = dict(page)
    series_by_entity: dict[str, list[Series]] = {}
    for series in history.series_of(conn, req.selector, [e for e, _ in page]):
        if req.policy is not None and not req.policy.attribute_visible(types_of[series.entity_id], series.attr):
            continue
        if series.attr == history.SCOPE_IRI:
            # a deleted scope's marks (deletedAt) follow the scope member under pick/omit
            if "scope" in req.members:
                series_by_entity.setdefault(series.entity_id, []).append(series)
            continue
        if req.pick_attrs is not None and series.attr not in req.pick_attrs:
            continue
        if series.attr in req.omit_attrs:
            continue
        series_by_entity.setdefault(series.entity_id, []).append(series)
    if req.representation == "aggregatedValues":
        out = [_render_aggregated(conn, req, ctx, e, t, series_by_entity.get(e, [])) for e, t in page]
        return _Page(out, total)
    n_series = sum(len(v) for v in series_by_entity.values())
    # the per-attribute cap also bounds the whole answer (wide type queries)
    cap = max(1, min(req.instance_limit, MAX_RESPONSE_INSTANCES // max(1, n_series)))
    fetched: dict[str, list[_Fetched]] = {}
    for entity_id, _ in page:
        fetched[entity_id] = [_fetch(conn, req, s, cap) for s in series_by_entity.get(entity_id, [])]
        if req.policy is not None:
            _coarsen(req, req.policy, types_of[entity_id], fetched[entity_id])
    content_range = _cut(req, [f for group in fetched.values() for f in group])
    out = [_render_entity(req, ctx, e, t, fetched[e], cut=content_range is not None) for e, t in page]
    return _Page(out, total, content_range)


def _fetch(conn: sqlite3.Connection, req: TemporalRequest, series: Series, cap: int) -> _Fetched:
    """At most ``cap`` instances of one series, and whether more were left out."""
    if req.last_n is None:
        insts = history.instances(conn, series, req.tf, limit=cap + 1)
        if len(insts) > cap:
            return _Fetched(series, insts[:cap], True)
        return _Fetched(series, insts)
    if req.last_n <= cap:
        return _Fetched(series, history.instances(conn, series, req.tf, last_n=req.last_n))
    insts = history.instances(conn, series, req.tf, last_n=cap + 1)
    if len(insts) > cap:
        return _Fetched(series, insts[1:], True)  # ascending order: the oldest one is the extra
    return _Fetched(series, insts)


_HOUR: Final = 3_600_000_000
"""One hour in microseconds (the history's time unit)."""


def _coarsen(req: TemporalRequest, policy: readers.TemporalPolicy, types: Sequence[str],
             fetched: Sequence[_Fetched]) -> None:
    """Apply the reader's coarsening to what was read: positions snapped, values averaged per hour."""
    grid = policy.grid(types)
    hourly = policy.hourly(types)
    for f in fetched:
        insts = f.insts
        if grid:
            insts = [dataclasses.replace(i, value=readers.snap_geometry(i.value, grid)) if i.kind == "GeoProperty"
                     else i for i in insts]
        if hourly:
            insts = _hourly(f.series, insts, req.time_property)
        f.insts = insts


def _hourly(series: Series, insts: Sequence[Instance], time_property: str) -> list[Instance]:
    """One instance per hour: the mean of its numbers (the last value of the hour when not numbers)."""
    by_hour: dict[int, list[Instance]] = {}
    for inst in insts:
        by_hour.setdefault(_moment(inst, time_property) // _HOUR * _HOUR, []).append(inst)
    out: list[Instance] = []
    for hour, group in by_hour.items():
        numbers = [i.value for i in group if isinstance(i.value, int | float) and not isinstance(i.value, bool)]
        value = sum(numbers) / len(numbers) if numbers and len(numbers) == len(group) else group[-1].value
        out.append(Instance(series.attr, series.dataset_id, hour, hour, hour, group[-1].kind, value,
                            f"urn:ngsi-ld:hourly:{series.series_id}:{hour // _HOUR}", None))
    return out


def _cut(req: TemporalRequest, fetched: Sequence[_Fetched]) -> str | None:
    """Apply one time range to every attribute when some were cut; the Content-Range (§6.3.10).

    Attributes that reached the limit decide the range, so that a client asking again from the
    range's end gets the next instances of every attribute (none skipped, none twice).
    """
    reached = [f for f in fetched if f.reached and f.insts]
    if not reached:
        return None
    tp = req.time_property
    firsts = [_moment(f.insts[0], tp) for f in reached]
    lasts = [_moment(f.insts[-1], tp) for f in reached]
    if req.last_n is None:
        start = req.tf.start if req.tf.start is not None else min(firsts)
        end = min(lasts)
        low, high = start, end
        size = "*"
    else:
        # lastN: newest first; the range runs backwards from the window's end (or the newest instance)
        start = req.tf.end if req.tf.end is not None else max(lasts)
        end = max(firsts)
        low, high = end, start
        size = str(req.last_n)
    for f in fetched:
        f.insts = [i for i in f.insts if low <= _moment(i, tp) <= high]
    return f"date-time {history.from_micros(start)}-{history.from_micros(end)}/{size}"


def _moment(inst: Instance, time_property: str) -> int:
    if time_property in ("createdAt", "deletedAt"):
        return inst.created_at
    if time_property == "modifiedAt":
        return inst.modified_at
    return inst.observed_at if inst.observed_at is not None else inst.created_at


def _entity_head(req: TemporalRequest, ctx: Context, entity_id: str, types: Sequence[str]) -> dict[str, Any]:
    compact_types = [ctx.compact_iri(t) for t in types]
    entity: dict[str, Any] = {}
    if "id" in req.members:
        entity["id"] = entity_id
    if "type" in req.members:
        entity["type"] = compact_types[0] if len(compact_types) == 1 else compact_types
    return entity


def _render_entity(
    req: TemporalRequest, ctx: Context, entity_id: str, types: Sequence[str], fetched: Sequence[_Fetched],
    *, cut: bool = False,
) -> dict[str, Any]:
    entity = _entity_head(req, ctx, entity_id, types)
    by_name: dict[str, list[Any]] = {}
    for f in fetched:
        name = ctx.compact_iri(f.series.attr)
        group = by_name.setdefault(name, [])
        if req.representation == "temporalValues":
            if f.insts or cut:
                group.append(_temporal_values(ctx, f.series, f.insts, req.time_property, req.lang))
        elif req.lang is not None:
            group.extend(ctx.compact_instance(_in_language(i.expanded(sys_attrs=req.sys_attrs), req.lang))
                         for i in f.insts)
        else:
            group.extend(ctx.compact_instance(i.expanded(sys_attrs=req.sys_attrs)) for i in f.insts)
    for name, value in by_name.items():
        if not value and not cut:
            continue  # nothing in the window; after a cut an emptied attribute stays, as an empty list
        # one dataset: the attribute is one object in the simplified forms; normalized stays an array
        entity[name] = value[0] if req.representation != "normalized" and len(value) == 1 else value
    return entity


def _temporal_values(
    ctx: Context, series: Series, insts: Sequence[Instance], time_property: str, lang: str | None = None
) -> dict[str, Any]:
    kind = insts[-1].kind if insts else "Property"
    if kind == "LanguageProperty" and lang is not None:
        kind = "Property"  # one language chosen: plain strings (§4.15)
    out: dict[str, Any] = {"type": kind}
    values = []
    for inst in insts:
        value = inst.value
        if inst.kind == "LanguageProperty" and lang is not None:
            value = _language_value(value, lang)[1] if isinstance(value, Mapping) else value
        if kind == "VocabProperty":
            value = ctx.compact_iri(value) if isinstance(value, str) else [ctx.compact_iri(v) for v in value]
        if kind in _WRAPPED:
            # these values are objects or lists themselves: keyed, so a pair cannot be mistaken (§4.5.9)
            value = {_WRAPPED[kind]: value}
        values.append([value, history.from_micros(_moment(inst, time_property))])
    out[_VALUES_KEY.get(kind, "values")] = values
    if series.dataset_id:
        out["datasetId"] = series.dataset_id
    return out


def _language_value(language_map: Mapping[str, Any], lang: str) -> tuple[str, Any]:
    """(tag, string) of a languageMap best matching ``lang`` (a tag list); @none or the first else."""
    for tag in lang.split(","):
        tag = tag.split(";", 1)[0].strip()
        if tag in language_map:
            return tag, language_map[tag]
        for key in language_map:
            if key.split("-")[0] == tag.split("-")[0]:
                return key, language_map[key]
    if "@none" in language_map:
        return "@none", language_map["@none"]
    for key, value in language_map.items():
        return key, value
    return "@none", None


def _in_language(inst: dict[str, Any], lang: str) -> dict[str, Any]:
    """A LanguageProperty instance as a Property in one language (§4.15); other kinds unchanged."""
    language_map = inst.get("languageMap")
    if inst.get("type") != "LanguageProperty" or not isinstance(language_map, Mapping):
        return inst
    tag, value = _language_value(language_map, lang)
    out = {"type": "Property", "value": value, **{k: v for k, v in inst.items() if k not in ("type", "languageMap")}}
    if tag != "@none":
        out["lang"] = tag
    return out


_WRAPPED: Final[Mapping[str, str]] = {"LanguageProperty": "languageMap", "VocabProperty": "vocab",
                                      "JsonProperty": "json"}


def _render_aggregated(
    conn: sqlite3.Connection, req: TemporalRequest, ctx: Context, entity_id: str, types: Sequence[str],
    series_list: Sequence[Series],
) -> dict[str, Any]:
    entity = _entity_head(req, ctx, entity_id, types)
    for series in series_list:
        item = _aggregated(conn, req, series)
        if item is not None:
            entity.setdefault(ctx.compact_iri(series.attr), []).append(item)
    for key, value in list(entity.items()):
        if key not in ("id", "type") and len(value) == 1:
            entity[key] = value[0]
    return entity


_period_bound: Final = functools.lru_cache(maxsize=8192)(history.from_micros)
"""Period bounds as text: the same few hundred repeat over every series of an answer."""


def _aggregated(conn: sqlite3.Connection, req: TemporalRequest, series: Series) -> dict[str, Any] | None:
    span = history.time_span(conn, series, req.tf)
    if span is None:
        return None
    period = req.period
    if not period.is_zero and period.months == 0:
        start = req.tf.start if req.tf.start is not None else span[0]
        stop = req.tf.end if req.tf.end is not None else span[1] + 1
        if (stop - start) // max(period.micros, 1) > MAX_BUCKETS:
            raise NgsiError("TooComplexQuery", f"more than {MAX_BUCKETS} aggregation periods per attribute")
    if req.buckets is not None:
        buckets = [
            history.Bucket(start, end, count, total, squares, numbers, low, high, distinct)
            for start, end, count, distinct, numbers, total, squares, low, high in req.buckets.get(series.series_id, ())
        ]
    else:
        buckets = history.aggregate(conn, series, req.tf, period, methods=req.methods)
    kind_row = conn.execute(
        "SELECT kind FROM history_instances WHERE series_id=? ORDER BY rowid DESC LIMIT 1", (series.series_id,)
    ).fetchone()
    out: dict[str, Any] = {"type": kind_row[0] if kind_row else "Property"}
    bounds = [(_period_bound(b.start), _period_bound(b.end)) for b in buckets]  # once, not per method
    for method in req.methods:
        out[method] = [[b.result(method), start, end] for b, (start, end) in zip(buckets, bounds, strict=True)]
    if series.dataset_id:
        out["datasetId"] = series.dataset_id
    return out


# --------------------------------------------------------------------------- orderBy


def _ordered(
    conn: sqlite3.Connection, req: TemporalRequest, found: list[tuple[str, list[str]]], expand: Callable[[str], str]
) -> list[tuple[str, list[str]]]:
    """Sort the selected entities by the ``orderBy`` keys (§4.23); entities lacking a key come last."""
    tenant = req.selector.tenant
    keyed = [(_sort_values(conn, tenant, e, t, req.order_by, expand), (e, t)) for e, t in found]
    if req.policy is not None:
        # a hidden attribute sorts as absent: orderBy cannot probe it either
        policy = req.policy
        for values, (_, types) in keyed:
            for index, (path, _) in enumerate(req.order_by):
                head = path.partition(".")[0]
                if head not in ("id", "type", "createdAt", "modifiedAt") \
                        and not policy.attribute_visible(types, expand(head)):
                    values[index] = None
    for index in reversed(range(len(req.order_by))):
        descending = req.order_by[index][1]
        present = [k for k in keyed if k[0][index] is not None]
        absent = [k for k in keyed if k[0][index] is None]
        present.sort(key=lambda k: _comparable(k[0][index]), reverse=descending)
        keyed = present + absent
    return [item for _, item in keyed]


def _comparable(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, history.dumps(value))


def _sort_values(
    conn: sqlite3.Connection, tenant: str, entity_id: str, types: list[str], keys: Sequence[tuple[str, bool]],
    expand: Callable[[str], str],
) -> list[Any]:
    out: list[Any] = []
    for path, _ in keys:
        if path == "id":
            out.append(entity_id)
        elif path == "type":
            out.append(sorted(types)[0] if types else None)
        elif path in ("createdAt", "modifiedAt"):
            out.append(_entity_time(conn, tenant, entity_id, None, path))
        else:
            attr, _, sub = path.partition(".")
            iri = expand(attr)
            if sub in ("createdAt", "modifiedAt", "observedAt"):
                out.append(_entity_time(conn, tenant, entity_id, iri, sub))
                continue
            latest = _latest(conn, tenant, entity_id, iri)
            if latest is None:
                out.append(None)
            elif not sub:
                out.append(latest.value)
            else:
                out.append(_sub_value((latest.extra or {}).get(expand(sub))))
    return out


def _sub_value(member: Any) -> Any:
    if isinstance(member, list):
        member = member[0] if member else None
    if isinstance(member, Mapping):
        for key in ("value", "object", "languageMap", "vocab", "json"):
            if key in member:
                return member[key]
        return None
    return member


def _entity_time(conn: sqlite3.Connection, tenant: str, entity_id: str, attr: str | None, which: str) -> int | None:
    column = {"createdAt": "MIN(i.created_at)", "modifiedAt": "MAX(i.modified_at)",
              "observedAt": "MAX(i.observed_at)"}[which]
    sql = (f"SELECT {column} FROM history_instances i JOIN history_series s ON s.series_id = i.series_id "
           "WHERE s.tenant=? AND s.entity_id=?")
    args: list[Any] = [tenant, entity_id]
    if attr is not None:
        sql += " AND s.attr=?"
        args.append(attr)
    row = conn.execute(sql, args).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _latest(conn: sqlite3.Connection, tenant: str, entity_id: str, attr: str) -> Instance | None:
    """The newest instance of an attribute (its default instance when it has one)."""
    found: Instance | None = None
    for series in history.series_of(conn, EntitySelector(tenant, attrs=[attr]), [entity_id]):
        insts = history.instances(conn, series, TimeFilter(), last_n=1)
        if insts and (found is None or not series.dataset_id):
            found = insts[0]
            if not series.dataset_id:
                break
    return found


# --------------------------------------------------------------------------- handlers


def _db(request: web.Request) -> Database:
    holder = request.config_dict.get(DB_KEY)
    db = holder.db if holder is not None else None
    if db is None:
        raise NgsiError("NotImplemented", "temporal writes are not implemented on this store backend yet (SQLite only)")
    return db


@contextlib.asynccontextmanager
async def _reading(request: web.Request, ngsi: http.NgsiContext, req: TemporalRequest) -> AsyncIterator[Database]:
    """The history to read: the SQLite store's own, or the slice a database backend hands over.

    Another backend's rows are loaded into an in-memory SQLite database with the same tables, so
    that every temporal read (representations, aggregation, lastN, 206 ranges) is the same code.
    """
    holder = request.config_dict.get(DB_KEY)
    if holder is not None and holder.db is not None:
        yield holder.db
        return
    writes = ngsi.storage.history_writes()
    part: HistorySlice | None
    if writes is not None and req.representation == "aggregatedValues" and req.q is None and req.geo is None \
            and not req.order_by:
        # aggregated in the database: only each series' span comes back, not its instances
        found = await writes.aggregate(_aggregation_query(req))
        part, req.buckets = found.slice, found.buckets
    else:
        window = (req.tf.start, req.tf.end) if req.tf.column == "observed_at" else (None, None)
        part = await ngsi.storage.history_slice(
            req.selector.tenant, req.selector.ids, *window, types=req.selector.type_names
        )
    if part is None:
        raise NgsiError("NotImplemented", "the temporal API is not implemented on this store backend")
    db = Database(Path(":memory:"), setup=history.ensure_schema)
    try:
        await db.write(lambda conn: _load_slice(conn, part))
        yield db
    finally:
        await db.close()


def _aggregation_query(req: TemporalRequest) -> AggregationQuery:
    """The aggregatedValues read a database backend computes (q, geo-query and orderBy read instances)."""
    sel = req.selector
    mark = history.DELETION_MARK if sel.deletions else ""
    datasets = None if sel.dataset_ids is None else [mark + ("" if d == "@none" else d) for d in sel.dataset_ids]
    return AggregationQuery(
        sel.tenant, sel.ids, sel.type_names, sel.attrs, datasets, sel.deletions, req.tf.column, req.tf.start,
        req.tf.end, req.period.months, req.period.micros, req.methods,
    )


def _load_slice(conn: sqlite3.Connection, part: HistorySlice) -> None:
    conn.executemany("INSERT INTO history_entities (tenant, entity_id, types) VALUES (?, ?, ?)", part.entities)
    conn.executemany(
        "INSERT INTO history_series (series_id, tenant, entity_id, attr, dataset_id) VALUES (?, ?, ?, ?, ?)",
        part.series,
    )
    conn.executemany(
        "INSERT INTO history_instances (series_id, observed_at, created_at, modified_at, kind, num, value, "
        "instance_id, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        part.instances,
    )


async def _known_tenant(ngsi: http.NgsiContext, db: Database) -> None:
    if await ngsi.storage.tenant_exists(ngsi.tenant):
        return
    tenant = ngsi.tenant

    def run(conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT 1 FROM history_entities WHERE tenant=? LIMIT 1", (tenant,)).fetchone() is not None

    if not await db.read(run):
        raise NgsiError("NonexistentTenant", f"tenant {ngsi.tenant!r} does not exist")


async def _view_page(
    request: web.Request, ngsi: http.NgsiContext, ctx: Context, req: TemporalRequest, policy: readers.TemporalPolicy,
    *, limit: int | None, offset: int, query: bool = True,
) -> _Page:
    """A sharing view's answer: each member tenant read as the view's principal, tagged, merged by id."""
    end = None if limit is None else offset + limit
    entities: list[dict[str, Any]] = []
    total = 0
    content_range = None
    for member in policy.members():
        one = dataclasses.replace(req, selector=dataclasses.replace(req.selector, tenant=member),
                                  policy=policy.for_member(member))
        async with _reading(request, ngsi, one) as db:
            page = await db.read(functools.partial(_read_entities, req=one, ctx=ctx, limit=end, offset=0,
                                                   expand=ctx.expand_term, query=query))
        tag, label = policy.tag(member)
        entities.extend({**e, ctx.compact_iri(tag): {"type": "Property", "value": label}} for e in page.entities)
        total += page.total
        content_range = content_range or page.content_range
    entities.sort(key=lambda e: str(e.get("id", "")))
    return _Page(entities[offset:end], total, content_range)


async def _query(
    request: web.Request, ngsi: http.NgsiContext, ctx: Context, req: TemporalRequest, media: str
) -> web.Response:
    _needs_filter(req)
    limit, offset, count = http.paging(ngsi)
    if req.policy is not None and req.policy.is_view:
        page = await _view_page(request, ngsi, ctx, req, req.policy, limit=limit, offset=offset)
    else:
        async with _reading(request, ngsi, req) as db:
            await _known_tenant(ngsi, db)
            page = await db.read(
                lambda conn: _read_entities(conn, req, ctx, limit=limit, offset=offset, expand=ctx.expand_term)
            )
    headers = {http.COUNT_HEADER: str(page.total)} if count else {}
    if page.content_range is not None:
        headers["Content-Range"] = page.content_range
    links = http.page_links(ngsi, limit, offset, offset + limit < page.total)
    response = http.respond(ngsi, page.entities, media=media, headers=headers, links=links)
    if page.content_range is not None:
        response.set_status(206)
    return response


async def query_temporal(request: web.Request) -> web.Response:
    """GET /temporal/entities (§6.18.3.2)."""
    _check_unsupported(request.query)
    http.check_params(request, _QUERY_PARAMS)
    ngsi = await http.ngsi_context(request, must_exist=False)
    media = http.negotiate(request)
    ctx = ngsi.context()
    req = _read_request(ngsi, ctx, request.query)
    _entity_filters(ngsi, ctx, req, request.query)
    return await _query(request, ngsi, ctx, req, media)


_QUERY_MEMBERS: Final = frozenset(
    {"type", "id", "entities", "attrs", "pick", "omit", "q", "temporalQ", "@context", "geoQ", "scopeQ", "lang",
     "csf", "datasetId", "local"}
)


async def query_temporal_post(request: web.Request) -> web.Response:
    """POST /temporal/entityOperations/query (§6.24.3.1): a Query body with temporalQ."""
    http.check_params(request, {"limit", "offset", "count", "options", "format", "lastN", "aggrMethods",
                               "aggrPeriodDuration", "local", "orderBy"})
    ngsi = await http.ngsi_context(request, must_exist=False)
    media = http.negotiate(request)
    body = await http.read_body(request)
    data = body.data
    if not isinstance(data, Mapping) or data.get("type") != "Query":
        raise bad_request("the body must be a Query object (type 'Query')")
    unknown = sorted(set(data) - _QUERY_MEMBERS)
    if unknown:
        raise bad_request(f"/{unknown[0]}: is not a member of a Query")
    for name in ("scopeQ", "lang", "csf"):
        if name in data:
            raise NgsiError("NotImplemented", f"/{name} is not supported by this store's temporal API")
    ctx = body.context_for(ngsi)
    temporal_q = data.get("temporalQ") or {}
    if not isinstance(temporal_q, Mapping):
        raise bad_request("/temporalQ must be an object")
    params: dict[str, Any] = dict(request.query)
    for name in ("attrs", "pick", "omit"):
        if name in data:
            params[name] = data[name]
    if isinstance(data.get("datasetId"), list):
        params["datasetId"] = ",".join(str(d) for d in data["datasetId"])
    if data.get("local") is True:
        params["local"] = "true"
    req = _read_request(ngsi, ctx, params, temporal_q)
    filters: dict[str, Any] = {}
    if "q" in data:
        filters["q"] = data["q"]
    geo_q = data.get("geoQ")
    if geo_q is not None:
        if not isinstance(geo_q, Mapping):
            raise bad_request("/geoQ must be an object")
        filters.update({k: geo_q.get(k) for k in ("georel", "geometry", "coordinates", "geoproperty")})
    if "orderBy" in request.query:
        filters["orderBy"] = request.query["orderBy"]
    _entity_filters(ngsi, ctx, req, filters)
    entities = data.get("entities")
    if entities is not None:
        req.entity_match = _selectors(ngsi, ctx, entities)
        if not any(isinstance(e, Mapping) and "type" in e for e in entities) and req.selector.attrs is None \
                and req.q is None and req.geo is None and not req.local:
            raise bad_request("/entities: a temporal query needs an entity type, attrs, q or a geoQ")
    return await _query(request, ngsi, ctx, req, media)


def _selectors(ngsi: http.NgsiContext, ctx: Context, entities: Any) -> EntityMatch:
    """The ``entities`` of a Query (EntitySelectors, §5.2.33): an entity matches any one of them."""
    if not isinstance(entities, list) or not entities or len(entities) > ngsi.settings.max_ids:
        raise bad_request("/entities must be a non-empty array of EntitySelectors")
    tests: list[EntityMatch] = []
    expand = ctx.expand_term
    for index, selector in enumerate(entities):
        if not isinstance(selector, Mapping) or not set(selector) <= {"id", "idPattern", "type"}:
            raise bad_request(f"/entities/{index}: an EntitySelector has id, idPattern and type only")
        wanted_id = selector.get("id")
        if wanted_id is not None and not model.is_uri(wanted_id):
            raise bad_request(f"/entities/{index}/id: {wanted_id!r} is not a URI")
        pattern = selector.get("idPattern")
        compiled = (compile_user_pattern(_check_pattern(ngsi, pattern), "idPattern") if isinstance(pattern, str)
                    else None)
        texpr = parse_type_expression(selector["type"]) if isinstance(selector.get("type"), str) else None
        if "type" in selector and texpr is None:
            raise bad_request(f"/entities/{index}/type must be a string")

        def test(entity_id: str, types: Sequence[str], wanted_id: Any = wanted_id, compiled: Any = compiled,
                 texpr: Any = texpr) -> bool:
            if wanted_id is not None and entity_id != wanted_id:
                return False
            if compiled is not None and not compiled.search(entity_id):
                return False
            return texpr is None or bool(texpr.matches(types, expand))

        tests.append(test)
    return lambda entity_id, types: any(t(entity_id, types) for t in tests)


def _entity_id(request: web.Request) -> str:
    entity_id = request.match_info["entity_id"]
    if not model.is_uri(entity_id):
        raise bad_request(f"entity id {entity_id!r} is not a URI")
    return entity_id


def _instance_id(request: web.Request) -> str:
    instance_id = request.match_info["instance_id"]
    if not model.is_uri(instance_id):
        raise bad_request(f"instanceId {instance_id!r} is not a URI")
    return instance_id


def _attr_name(request: web.Request) -> str:
    name = request.match_info["attr"]
    if not name:
        raise bad_request("the attribute name is missing")
    return name


async def retrieve_temporal(request: web.Request) -> web.Response:
    """GET /temporal/entities/{id} (§6.19.3.1)."""
    _check_unsupported(request.query)
    http.check_params(request, _READ_PARAMS | {"type"})
    ngsi = await http.ngsi_context(request, must_exist=False)
    media = http.negotiate(request)
    holder = request.config_dict.get(DB_KEY)
    if holder is not None and holder.db is not None:
        await _known_tenant(ngsi, holder.db)  # an unknown tenant first, as before the parameters
    ctx = ngsi.context()
    entity_id = _entity_id(request)
    req = _read_request(ngsi, ctx, request.query)
    req.selector.ids = [entity_id]
    _entity_filters(ngsi, ctx, req, {"type": request.query["type"]} if "type" in request.query else {})
    if req.policy is not None and req.policy.is_view:
        page = await _view_page(request, ngsi, ctx, req, req.policy, limit=1, offset=0, query=False)
    else:
        async with _reading(request, ngsi, req) as db:
            await _known_tenant(ngsi, db)
            page = await db.read(
                lambda conn: _read_entities(conn, req, ctx, limit=None, offset=0, expand=ctx.expand_term, query=False)
            )
    if not page.entities:
        raise not_found(f"entity {entity_id} has no temporal evolution here")
    entity = page.entities[0]
    if not entity and (req.pick_attrs is not None or req.omit_attrs or req.members != frozenset(_CORE_MEMBERS)):
        raise not_found(f"nothing of entity {entity_id} is left after pick and omit")
    headers = {"Content-Range": page.content_range} if page.content_range is not None else {}
    response = http.respond(ngsi, entity, media=media, headers=headers)
    if page.content_range is not None:
        response.set_status(206)
    return response


async def create_temporal(request: web.Request) -> web.Response:
    """POST /temporal/entities (§6.18.3.1): 201 when new, 204 when instances were added."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    body = await http.read_body(request)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be one temporal entity (a JSON object)")
    ctx = body.context_for(ngsi)
    data = {k: v for k, v in body.data.items() if k != "@context"}
    entity_id = data.get("id")
    if not model.is_uri(entity_id):
        raise bad_request(f"/id: entity id {entity_id!r} is missing or not a URI")
    now = _now()
    types, rows = history.temporal_rows(ctx, ngsi.tenant, data, str(entity_id), None, now)
    tenant = ngsi.tenant
    writes = ngsi.storage.history_writes()

    def run(conn: sqlite3.Connection) -> bool:
        existed = history.entity_types(conn, tenant, str(entity_id))
        if existed is not None:
            merged = existed + [t for t in types if t not in existed]
            rows[:] = [(t, e, merged, a, i) for t, e, _, a, i in rows]
            if not rows:
                conn.execute("UPDATE history_entities SET types=? WHERE tenant=? AND entity_id=?",
                             (history.dumps(merged), tenant, entity_id))
        elif not rows:
            conn.execute("INSERT INTO history_entities (tenant, entity_id, types) VALUES (?, ?, ?)",
                         (tenant, entity_id, history.dumps(types)))
        history.forget_same_moments(conn, rows)
        history.record_many(conn, rows)
        return existed is None

    if writes is not None:
        created = await writes.write(tenant, str(entity_id), types, rows)
    else:
        created = await _db(request).write(run)
    await _mirror(ngsi, str(entity_id), types, rows, data.get("scope"))
    if not created:
        return http.no_content()
    response = web.Response(status=201)
    response.headers["Location"] = (
        f"{ngsi.settings.base_path}/temporal/entities/{quote(str(entity_id), safe=':@!$&()*+,;=-._~')}"
    )
    return response


async def _mirror(
    ngsi: http.NgsiContext, entity_id: str, types: list[str], rows: Sequence[history.HistoryRow], scope: Any
) -> None:
    """Create the entity in the current state when it is not there, from its newest instances.

    A temporal entity is an entity (§5.6.11): it can then be read, updated and deleted through
    /entities, and those changes (deletions included) continue its temporal evolution. An entity
    that exists already keeps its current state: temporal writes may well be back-fills.
    """
    newest: dict[tuple[str, Any], tuple[int, int, dict[str, Any]]] = {}
    for index, (_, _, _, attr, inst) in enumerate(rows):
        observed = inst.get("observedAt")
        moment = history.to_micros(observed) if isinstance(observed, str) else -1
        key = (attr, inst.get("datasetId"))
        if key not in newest or (moment, index) >= newest[key][:2]:
            newest[key] = (moment, index, {k: v for k, v in inst.items() if k != "instanceId"})
    doc: dict[str, Any] = {"id": entity_id, "type": list(types)}
    if isinstance(scope, str) or (isinstance(scope, list) and all(isinstance(x, str) for x in scope)):
        doc["scope"] = [scope] if isinstance(scope, str) else list(scope)
    for (attr, _), (_, _, inst) in newest.items():
        doc.setdefault(attr, []).append(inst)
    make = operations.create(doc)

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is not None:
            return Mutation(current, "unchanged")
        mutation = make(None, now)
        mutation.written = []  # the temporal write recorded these instances already
        return mutation

    await ngsi.storage.apply(ngsi.tenant, [Change(entity_id, mutate)], create_tenant=True)


async def append_temporal_attrs(request: web.Request) -> web.Response:
    """POST /temporal/entities/{id}/attrs (§6.20.3.1): add instances; 204."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    writes = ngsi.storage.history_writes()
    db = _db(request) if writes is None else None
    entity_id = _entity_id(request)
    body = await http.read_body(request)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be a JSON object of attributes")
    ctx = body.context_for(ngsi)
    data = {k: v for k, v in body.data.items() if k not in ("@context", "id", "type")}
    tenant = ngsi.tenant
    now = _now()

    def run(conn: sqlite3.Connection) -> None:
        types = history.entity_types(conn, tenant, entity_id)
        if types is None:
            raise not_found(f"entity {entity_id} has no temporal evolution here")
        _, rows = history.temporal_rows(ctx, tenant, data, entity_id, types, now)
        history.append_instances(conn, rows)

    if writes is not None:
        known = await writes.entity_types(tenant, entity_id)
        if known is None:
            raise not_found(f"entity {entity_id} has no temporal evolution here")
        await writes.write(tenant, entity_id, known, history.temporal_rows(ctx, tenant, data, entity_id, known, now)[1])
    else:
        assert db is not None
        await db.write(run)
    return http.no_content()


async def delete_temporal(request: web.Request) -> web.Response:
    """DELETE /temporal/entities/{id} (§6.19.3.2): forget the whole temporal evolution."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    writes = ngsi.storage.history_writes()
    db = _db(request) if writes is None else None
    entity_id = _entity_id(request)
    tenant = ngsi.tenant
    if writes is not None:
        found = await writes.delete(tenant, entity_id)
    else:
        assert db is not None
        found = await db.write(lambda conn: history.delete_entity(conn, tenant, entity_id))
    if not found:
        raise not_found(f"entity {entity_id} has no temporal evolution here")
    return http.no_content()


async def delete_temporal_attr(request: web.Request) -> web.Response:
    """DELETE /temporal/entities/{id}/attrs/{attr} (§6.21.3.1), with datasetId or deleteAll."""
    http.check_params(request, ("datasetId", "deleteAll"))
    ngsi = await http.ngsi_context(request, must_exist=False)
    writes = ngsi.storage.history_writes()
    db = _db(request) if writes is None else None
    entity_id = _entity_id(request)
    iri = ngsi.context().expand_attr_name(_attr_name(request), "attrId")
    delete_all = request.query.get("deleteAll", "false") == "true"
    dataset = request.query.get("datasetId")
    if delete_all and dataset is not None:
        raise bad_request("datasetId and deleteAll cannot be combined")
    tenant = ngsi.tenant
    target = None if delete_all else (dataset or "")
    if writes is not None:
        found = await writes.delete(tenant, entity_id, iri, target, every_dataset=delete_all)
    else:
        assert db is not None
        found = await db.write(lambda conn: history.delete_attribute(conn, tenant, entity_id, iri, target))
    if not found:
        raise not_found(f"attribute {request.match_info['attr']} of {entity_id} has no temporal evolution here")
    return http.no_content()


async def delete_temporal_instance(request: web.Request) -> web.Response:
    """DELETE /temporal/entities/{id}/attrs/{attr}/{instanceId} (§6.22.3.2)."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    writes = ngsi.storage.history_writes()
    db = _db(request) if writes is None else None
    entity_id = _entity_id(request)
    iri = ngsi.context().expand_attr_name(_attr_name(request), "attrId")
    instance_id = _instance_id(request)
    tenant = ngsi.tenant

    def run(conn: sqlite3.Connection) -> bool:
        rowid = history.find_instance(conn, tenant, entity_id, iri, instance_id)
        if rowid is None:
            return False
        conn.execute("DELETE FROM history_instances WHERE rowid=?", (rowid,))
        return True

    if writes is not None:
        found = await writes.delete_instance(tenant, entity_id, iri, instance_id)
    else:
        assert db is not None
        found = await db.write(run)
    if not found:
        raise not_found(f"instance {instance_id} of {request.match_info['attr']} does not exist")
    return http.no_content()


async def patch_temporal_instance(request: web.Request) -> web.Response:
    """PATCH /temporal/entities/{id}/attrs/{attr}/{instanceId} (§6.22.3.1): replace one instance."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    writes = ngsi.storage.history_writes()
    db = _db(request) if writes is None else None
    entity_id = _entity_id(request)
    name = _attr_name(request)
    instance_id = _instance_id(request)
    body = await http.read_body(request, merge_patch=True)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be a JSON object holding the attribute")
    ctx = body.context_for(ngsi)
    iri = ctx.expand_attr_name(name, "attrId")
    data = {k: v for k, v in body.data.items() if k != "@context"}
    fragment = data.get(name, data)
    (instance,) = ctx.expand_attribute(fragment, f"/{name}")
    tenant = ngsi.tenant
    instance = {**instance, "modifiedAt": _now()}

    def run(conn: sqlite3.Connection) -> bool:
        rowid = history.find_instance(conn, tenant, entity_id, iri, instance_id)
        if rowid is None:
            return False
        history.replace_instance(conn, rowid, instance)
        return True

    if writes is not None:
        found = await writes.replace_instance(tenant, entity_id, iri, instance_id, instance)
    else:
        assert db is not None
        found = await db.write(run)
    if not found:
        raise not_found(f"instance {instance_id} of {name} does not exist")
    return http.no_content()


def _now() -> str:
    return history.from_micros(history.now_micros())


def setup_temporal(app: web.Application, storage: Storage) -> None:
    """Add the /temporal routes; the history tables are read through a connection of our own."""

    holder = DatabaseHolder()
    app[DB_KEY] = holder

    async def database(_: web.Application) -> AsyncIterator[None]:
        path = getattr(storage, "path", None)
        holder.db = Database(path, setup=history.ensure_schema) if path is not None else None
        yield
        if holder.db is not None:
            await holder.db.close()
            holder.db = None

    app.cleanup_ctx.append(database)
    r = app.router
    # {entity_id} and {attr} also match an empty segment: a missing id is a 400 BadRequestData
    # (what the request lacks), not a 404 for a path that happens not to exist
    entity = "/temporal/entities/{entity_id:[^/]*}"
    r.add_get("/temporal/entities", query_temporal, allow_head=False)
    r.add_post("/temporal/entities", create_temporal)
    r.add_get("/temporal/entities/{entity_id}", retrieve_temporal, allow_head=False)
    r.add_delete("/temporal/entities/{entity_id}", delete_temporal)
    r.add_post(f"{entity}/attrs", append_temporal_attrs)
    r.add_delete(f"{entity}/attrs/{{attr}}", delete_temporal_attr)
    r.add_patch(f"{entity}/attrs/{{attr}}/{{instance_id}}", patch_temporal_instance)
    # DELETE only with an empty attribute name: a PATCH there finds no method (405), as for .../attrs/{attr}
    r.add_delete(f"{entity}/attrs/{{attr:[^/]*}}/{{instance_id}}", delete_temporal_instance)
    r.add_post("/temporal/entityOperations/query", query_temporal_post)
