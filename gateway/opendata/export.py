"""Export what tenants share with ``public``: GeoJSON (RFC 7946) and CSV per entity type, and a DCAT-AP catalogue.

What is public is decided by the sharing policy file only (:mod:`gateway.store.sharing`): for each
tenant sharing something with ``public``, each entity whose type a public rule covers is kept, with
the attributes that rule allows, locations snapped to the rule's grid. Personal data never leaves:
attributes named in ``policies.personal`` (plus Open311's own contact fields) are dropped, and so
are members of that name inside values and sub-attributes. System attributes are not exported.

Files, in ``out``: ``<Type>.geojson`` and ``<Type>.csv`` for every exported type, then
``catalog.jsonld`` (written last, so that a reader of the catalogue finds every file it names).
Each file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from gateway.errors import ConfigInvalid
from gateway.store import jsonld
from gateway.store.base import QuerySpec, Storage
from gateway.store.sharing import PUBLIC, Policies, Rule, snap

PAGE: Final = 500
"""Entities read per store query."""
OPEN311_PERSONAL: Final = frozenset({"first_name", "last_name", "email", "phone", "account_id", "device_id"})
"""Open311 GeoReport v2 contact fields: never exported even if a policy file forgets them."""
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_SYSTEM: Final = frozenset({"createdAt", "modifiedAt", "deletedAt"})


@dataclass(frozen=True)
class Licence:
    """A licence the export can carry: its name, IRI and how DCAT-AP describes it."""

    key: str
    title: str
    iri: str
    spdx: str
    kinds: tuple[str, ...]
    """ADMS licence types (``http://purl.org/adms/licencetype/...``)."""
    eu_nal: str | None = None
    """The same licence in the EU Publications Office licence table, when it has one."""


_ADMS = "http://purl.org/adms/licencetype/"
LICENCES: Final = {
    "etalab-2.0": Licence("etalab-2.0", "Licence Ouverte / Open Licence version 2.0 (Etalab)",
                          "https://www.etalab.gouv.fr/licence-ouverte-open-licence/", "etalab-2.0",
                          (_ADMS + "Attribution",)),
    "odbl": Licence("odbl", "Open Data Commons Open Database License (ODbL) v1.0",
                    "https://opendatacommons.org/licenses/odbl/1-0/", "ODbL-1.0",
                    (_ADMS + "Attribution", _ADMS + "ShareAlike"),
                    "http://publications.europa.eu/resource/authority/licence/ODC_ODBL"),
}
"""The licences French territories publish under (``--licence`` / ``open_data.licence``)."""


@dataclass(frozen=True)
class OpenDataSettings:
    """Where and how to export."""

    out: Path
    licence: str = "etalab-2.0"
    publisher: str = "jonction"
    title: str = "Open data"
    base_url: str | None = None
    """Where ``out`` is published (distributions' download URLs); None: URLs relative to the catalogue."""
    contact: str | None = None
    """An e-mail address or URL data users can write to (the datasets' dcat:contactPoint)."""

    def __post_init__(self) -> None:
        if self.licence not in LICENCES:
            raise ConfigInvalid(f"unknown licence {self.licence!r} (known: {', '.join(LICENCES)})")
        if self.base_url is not None and not re.match(r"^https?://[^/?#\s]+", self.base_url):
            raise ConfigInvalid(f"--base-url {self.base_url!r} is not an http(s) URL")


@dataclass
class Record:
    """One public entity of one tenant, reduced to what may be published (compacted, normalized form)."""

    tenant: str
    id: str
    type: str
    attributes: dict[str, Any]
    modified: str | None = None


@dataclass
class TypeSummary:
    """What the catalogue says about one exported entity type."""

    name: str
    iri: str
    count: int = 0
    tenants: set[str] = field(default_factory=set)
    bbox: list[float] | None = None
    """[min lon, min lat, max lon, max lat] of the published (coarsened) geometries."""
    first: str | None = None
    last: str | None = None
    """Earliest and latest observedAt (or modification) of the published values (RFC 3339)."""
    modified: str | None = None
    files: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    """Format → (file name, size in bytes, SHA-256)."""


@dataclass
class Report:
    """What one export wrote."""

    out: Path
    types: dict[str, TypeSummary]
    generated: str

    @property
    def entities(self) -> int:
        """Entities exported, every type together."""
        return sum(t.count for t in self.types.values())


# ---------------------------------------------------------------------------- reading and filtering


def _scrub(value: Any, personal: frozenset[str]) -> Any:
    """``value`` without members named like personal data, at any depth."""
    if isinstance(value, dict):
        return {k: _scrub(v, personal) for k, v in value.items() if k not in personal}
    if isinstance(value, list):
        return [_scrub(v, personal) for v in value]
    return value


def _snap_geometry(geometry: Any, grid_m: float) -> Any:
    """Every position of a GeoJSON geometry snapped to the centre of its grid cell."""
    if isinstance(geometry, list):
        if len(geometry) >= 2 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in geometry[:2]):
            return list(snap(float(geometry[0]), float(geometry[1]), grid_m))
        return [_snap_geometry(g, grid_m) for g in geometry]
    if isinstance(geometry, dict):
        return {k: (_snap_geometry(v, grid_m) if k in ("coordinates", "geometries") else v)
                for k, v in geometry.items()}
    return geometry


_HOUR = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}):\d{2}:\d{2}(?:\.\d+)?Z$")


def _coarsen(instance: Any, rule: Rule) -> Any:
    """The instance as ``rule`` lets the public see it: location on the grid, time to the hour."""
    if not isinstance(instance, dict):
        return instance
    grid = rule.coarsen.location_grid_m
    if grid and instance.get("type") == "GeoProperty":
        instance = {**instance, "value": _snap_geometry(instance.get("value"), grid)}
    if rule.coarsen.temporal == "hourly" and isinstance(instance.get("observedAt"), str):
        # values averaged per hour in temporal answers: the current value shows its hour, not its second
        instance = {**instance, "observedAt": _HOUR.sub(r"\1:00:00Z", instance["observedAt"])}
    return instance


def public_record(doc: Mapping[str, Any], tenant: str, policies: Policies, ctx: jsonld.Context) -> Record | None:
    """The publishable part of a stored entity, or None when no public rule covers its type."""
    type_iris = [t for t in doc.get("type", ()) if isinstance(t, str)]
    names = [n for iri in type_iris for n in (ctx.compact_iri(iri), iri)]
    rule = policies.access(tenant, PUBLIC).rule_for(names)
    if rule is None:
        return None
    personal = policies.personal | OPEN311_PERSONAL
    compacted = ctx.compact_entity(doc, sys_attrs=False)
    attributes: dict[str, Any] = {}
    for iri in doc:
        if iri in ("id", "type", "scope", "@context") or iri in _SYSTEM:
            continue
        short = ctx.compact_iri(iri)
        if not rule.allows_attribute((short, iri), personal) or short not in compacted:
            continue
        value = compacted[short]
        instances = value if isinstance(value, list) else [value]
        cleaned = [_coarsen(_scrub(i, personal), rule) for i in instances]
        attributes[short] = cleaned[0] if len(cleaned) == 1 else cleaned
    modified = doc.get("modifiedAt")
    return Record(tenant, str(doc["id"]), ctx.compact_iri(type_iris[0]) if type_iris else "", attributes,
                  modified if isinstance(modified, str) else None)


async def collect(storage: Storage, policies: Policies) -> dict[str, list[Record]]:
    """Every public entity of every tenant sharing with ``public``, by entity type (short name)."""
    ctx = storage.contexts.get([jsonld.jonction_context_iri()])
    by_type: dict[str, list[Record]] = {}
    for tenant in policies.public_tenants():
        if not await storage.tenant_exists(tenant):
            continue
        access = policies.access(tenant, PUBLIC)
        types = sorted({ctx.expand_term(t) for t in access.shared_types()})
        offset = 0
        while True:
            page = await storage.query(tenant, QuerySpec(types=types, limit=PAGE, offset=offset))
            for doc in page.docs:
                record = public_record(doc, tenant, policies, ctx)
                if record is not None:
                    by_type.setdefault(record.type, []).append(record)
            if not page.more or not page.docs:
                break
            offset += len(page.docs)
    return by_type


# ---------------------------------------------------------------------------- formats


def _instances(attribute: Any) -> list[dict[str, Any]]:
    items = attribute if isinstance(attribute, list) else [attribute]
    return [i for i in items if isinstance(i, dict)]


def _plain(instance: Mapping[str, Any]) -> Any:
    """The value of an attribute instance, as a data user reads it (keyValues)."""
    kind = instance.get("type")
    if kind in ("Relationship", "ListRelationship"):
        return instance.get("object", instance.get("objectList"))
    if kind == "LanguageProperty":
        return instance.get("languageMap")
    if kind == "ListProperty":
        return instance.get("valueList")
    if kind == "VocabProperty":
        return instance.get("vocab")
    if kind == "JsonProperty":
        return instance.get("json")
    return instance.get("value")


def geometry_of(record: Record) -> dict[str, Any] | None:
    """The record's geometry for GeoJSON: its ``location`` GeoProperty, else its first GeoProperty."""
    candidates = ["location", *sorted(record.attributes)]
    for name in candidates:
        for inst in _instances(record.attributes.get(name)):
            if inst.get("type") == "GeoProperty" and isinstance(inst.get("value"), dict):
                return rfc7946(inst["value"])
    return None


def _ring_area2(ring: list[Any]) -> float:
    return sum(float(a[0]) * float(b[1]) - float(b[0]) * float(a[1]) for a, b in itertools.pairwise(ring))


def _wind(rings: list[Any]) -> list[Any]:
    """RFC 7946 §3.1.6: exterior rings counterclockwise, holes clockwise."""
    out = []
    for i, ring in enumerate(rings):
        ccw = _ring_area2(ring) > 0
        out.append(ring if ccw == (i == 0) else list(reversed(ring)))
    return out


def _round(value: Any) -> Any:
    if isinstance(value, list):
        return [_round(v) for v in value]
    if isinstance(value, float):
        return round(value, 7)  # ~1 cm: RFC 7946 §11.2 advises no more precision than meaningful
    return value


def rfc7946(geometry: Mapping[str, Any]) -> dict[str, Any]:
    """A geometry as RFC 7946 wants it: longitude first, right-hand rule, no ``crs`` member."""
    kind = geometry.get("type")
    if kind == "GeometryCollection":
        return {"type": kind, "geometries": [rfc7946(g) for g in geometry.get("geometries", [])
                                             if isinstance(g, Mapping)]}
    coords = _round(geometry.get("coordinates"))
    if kind == "Polygon" and isinstance(coords, list):
        coords = _wind(coords)
    elif kind == "MultiPolygon" and isinstance(coords, list):
        coords = [_wind(p) for p in coords]
    return {"type": kind, "coordinates": coords}


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in sorted(value.items()):  # sorted: the same columns whatever order a backend keeps
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, list):
        out[prefix] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        out[prefix] = value


def flat_row(record: Record, label: str, insee: str) -> dict[str, Any]:
    """One CSV row: id, type, commune, INSEE code, then each attribute flattened (``a.b`` for members).

    A Point GeoProperty becomes ``<name>.longitude`` and ``<name>.latitude``; other geometries their
    GeoJSON text. ``<name>.unitCode`` and ``<name>.observedAt`` follow a value that has them.
    """
    row: dict[str, Any] = {"id": record.id, "type": record.type, "commune": label, "insee": insee}
    for name in sorted(record.attributes):
        instances = _instances(record.attributes[name])
        if not instances:
            continue
        inst = instances[0]  # a multi-attribute: the first instance (the GeoJSON keeps them all)
        if inst.get("type") == "GeoProperty":
            geometry = inst.get("value")
            if isinstance(geometry, dict) and geometry.get("type") == "Point":
                coords = _round(geometry.get("coordinates") or [None, None])
                row[f"{name}.longitude"], row[f"{name}.latitude"] = coords[0], coords[1]
            else:
                row[name] = json.dumps(rfc7946(geometry) if isinstance(geometry, dict) else geometry,
                                       ensure_ascii=False, separators=(",", ":"))
            continue
        _flatten(name, _plain(inst), row)
        for meta in ("unitCode", "observedAt"):
            if meta in inst:
                row[f"{name}.{meta}"] = inst[meta]
    return row


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_csv(rows: list[dict[str, Any]]) -> bytes:
    """RFC 4180 CSV in UTF-8: comma separated, CRLF, quoted where needed; columns in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=",", quotechar='"', quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(list(columns))
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buffer.getvalue().encode("utf-8")


def render_geojson(records: list[Record], policies: Policies, licence: Licence, title: str) -> bytes:
    """An RFC 7946 FeatureCollection: one Feature per entity, properties in keyValues form."""
    features = []
    for record in records:
        props: dict[str, Any] = {"id": record.id, "type": record.type, "commune": policies.label(record.tenant)}
        if record.tenant in policies.insee:
            props["insee"] = policies.insee[record.tenant]
        for name in sorted(record.attributes):
            instances = _instances(record.attributes[name])
            if not instances or (name == "location" and instances[0].get("type") == "GeoProperty"):
                continue
            values = [rfc7946(i["value"]) if i.get("type") == "GeoProperty" and isinstance(i.get("value"), dict)
                      else _plain(i) for i in instances]
            props[name] = values[0] if len(values) == 1 else values
            for meta in ("unitCode", "observedAt"):
                if meta in instances[0]:
                    props[f"{name}.{meta}"] = instances[0][meta]
        features.append({"type": "Feature", "id": record.id, "geometry": geometry_of(record), "properties": props})
    # name and licence are foreign members (RFC 7946 §6.1): readers ignore what they do not know.
    doc = {"type": "FeatureCollection", "name": title,
           "licence": {"title": licence.title, "href": licence.iri}, "features": features}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------- summary and files


def _extend_bbox(bbox: list[float] | None, geometry: Any) -> list[float] | None:
    positions: list[tuple[float, float]] = []

    def walk(value: Any) -> None:
        if isinstance(value, list):
            if len(value) >= 2 and all(isinstance(v, int | float) for v in value[:2]):
                positions.append((float(value[0]), float(value[1])))
            else:
                for v in value:
                    walk(v)
        elif isinstance(value, dict):
            walk(value.get("coordinates"))
            for g in value.get("geometries") or []:
                walk(g)

    walk(geometry)
    for x, y in positions:
        if bbox is None:
            bbox = [x, y, x, y]
        else:
            bbox = [min(bbox[0], x), min(bbox[1], y), max(bbox[2], x), max(bbox[3], y)]
    return bbox


def _times(record: Record) -> Iterable[str]:
    for name in record.attributes:
        for inst in _instances(record.attributes[name]):
            if isinstance(inst.get("observedAt"), str):
                yield inst["observedAt"]
    if record.modified:
        yield record.modified


def file_stem(type_name: str) -> str:
    """A safe file name for an entity type (an IRI becomes its last segment)."""
    tail = type_name.rstrip("/#").rsplit("/", 1)[-1].rsplit("#", 1)[-1]
    return _SAFE_NAME.sub("_", tail) or "entities"


def _write(path: Path, data: bytes) -> tuple[str, int, str]:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path.name, len(data), hashlib.sha256(data).hexdigest()


def _render_type(stem: Path, records: list[Record], policies: Policies, licence: Licence,
                 title: str) -> dict[str, tuple[str, int, str]]:
    """Write one type's GeoJSON and CSV files; format → (file name, size, SHA-256)."""
    rows = [flat_row(r, policies.label(r.tenant), policies.insee.get(r.tenant, "")) for r in records]
    geojson = render_geojson(records, policies, licence, title)
    return {"geojson": _write(stem.with_name(stem.name + ".geojson"), geojson),
            "csv": _write(stem.with_name(stem.name + ".csv"), render_csv(rows))}


async def export_open_data(
    storage: Storage, policies: Policies, settings: OpenDataSettings, *, now: datetime | None = None
) -> Report:
    """Export every public entity to ``settings.out`` (GeoJSON, CSV, catalog.jsonld); return what was written."""
    from gateway.opendata.dcat import catalogue

    licence = LICENCES[settings.licence]
    generated = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_type = await collect(storage, policies)
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    ctx = storage.contexts.get([jsonld.jonction_context_iri()])
    summaries: dict[str, TypeSummary] = {}
    stems: set[str] = set()
    for type_name in sorted(by_type):
        records = sorted(by_type[type_name], key=lambda r: (r.tenant, r.id))
        summary = TypeSummary(type_name, ctx.expand_term(type_name), len(records))
        for record in records:
            summary.tenants.add(record.tenant)
            summary.bbox = _extend_bbox(summary.bbox, geometry_of(record))
            for t in _times(record):
                summary.first = t if summary.first is None or t < summary.first else summary.first
                summary.last = t if summary.last is None or t > summary.last else summary.last
            if record.modified and (summary.modified is None or record.modified > summary.modified):
                summary.modified = record.modified
        stem = file_stem(type_name)
        while stem in stems:
            stem += "_"
        stems.add(stem)
        title = f"{settings.title}: {type_name}"
        # In a thread: inside the gateway, rendering a large type must not hold the event loop for seconds.
        summary.files.update(await asyncio.to_thread(_render_type, out / stem, records, policies, licence, title))
        summaries[type_name] = summary
    report = Report(out, summaries, generated)
    previous = _listed_files(out / "catalog.jsonld")
    document = catalogue(report, policies, settings, licence)
    _write(out / "catalog.jsonld", json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8"))
    # A type a commune no longer shares must not stay published: remove the files the previous
    # catalogue listed and this one does not (only those: the folder may hold other files).
    written = {name for s in summaries.values() for name, _, _ in s.files.values()}
    for name in previous - written:
        (out / name).unlink(missing_ok=True)
    return report


def _listed_files(path: Path) -> set[str]:
    """The data files a previous catalogue in ``out`` named (empty when there is none or it is unreadable)."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return set()
    names: set[str] = set()
    datasets = doc.get("dcat:dataset") if isinstance(doc, dict) else None
    for dataset in datasets if isinstance(datasets, list) else []:
        for dist in dataset.get("dcat:distribution", []) if isinstance(dataset, dict) else []:
            url = dist.get("dcat:downloadURL", {}).get("@id") if isinstance(dist, dict) else None
            name = url.rsplit("/", 1)[-1] if isinstance(url, str) else ""
            if re.fullmatch(r"[A-Za-z0-9_.-]+\.(?:geojson|csv)", name) and not name.startswith("."):
                names.add(name)
    return names
