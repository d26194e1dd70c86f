"""L1 — data: entities validate against NGSI-LD and the named Smart Data Models; units, times, CRS.

Structural findings come from the public validator (``gateway.validation.validate``); each check
owns a disjoint set of its rules, so one defect fails one check. Model checks have one id per
Smart Data Model (``MODEL_CHECKS``, data: ids are never reused).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from conformance.context import RunContext, is_failure
from conformance.registry import Fail, NotApplicable, Skip, add, check
from gateway.model import ENTITY_MEMBERS, is_uri, parse_time

D = ("entities",)
MAX_LISTED: Final = 10
"""Findings quoted in a failure message (the evidence keeps up to EVIDENCE_LIMIT)."""
EVIDENCE_LIMIT: Final = 200
FUTURE_TOLERANCE: Final = timedelta(minutes=5)

MODEL_CHECKS: Final[dict[str, str]] = {
    "AirQualityObserved": "L1-SDM-001",
    "Alert": "L1-SDM-002",
    "Building": "L1-SDM-003",
    "Device": "L1-SDM-004",
    "DeviceMeasurement": "L1-SDM-005",
    "IndoorEnvironmentObserved": "L1-SDM-006",
    "Junction": "L1-SDM-007",
    "NoiseLevelObserved": "L1-SDM-008",
    "OnStreetParking": "L1-SDM-009",
    "ParkingSpot": "L1-SDM-010",
    "Pipe": "L1-SDM-011",
    "Pump": "L1-SDM-012",
    "Streetlight": "L1-SDM-013",
    "StreetlightControlCabinet": "L1-SDM-014",
    "StreetlightGroup": "L1-SDM-015",
    "Tank": "L1-SDM-016",
    "ThreePhaseAcMeasurement": "L1-SDM-017",
    "TrafficFlowObserved": "L1-SDM-018",
    "Valve": "L1-SDM-019",
    "WasteContainer": "L1-SDM-020",
    "WaterConsumptionObserved": "L1-SDM-021",
    "WaterQualityObserved": "L1-SDM-022",
    "service_requests": "L1-SDM-023",
    "EVChargingStation": "L1-SDM-024",
    "OffStreetParking": "L1-SDM-025",
}
"""Smart Data Model -> the id of the check that validates entities against it (never reused)."""

_ENT_RULES: Final = frozenset({"entity", "id-required", "type-required", "type", "unknown-model"})
_STRICT_MODEL_RULES: Final = frozenset({"unknown-attribute", "ngsi-type"})
"""Errors only in strict mode, owned by the model check of the entity's type."""
_UNIT_RULES: Final = frozenset({"unit-dimension", "unit-mismatch", "unit-unconvertible"})
"""Unit findings against the model: L1-UNT-002 owns them (it compares units itself)."""
_TIME_RULES: Final = frozenset({"observedat", "createdat", "modifiedat", "deletedat"})
_OWN: Final = _ENT_RULES | _TIME_RULES | _STRICT_MODEL_RULES | _UNIT_RULES | frozenset({
    "id-uri", "relationship-object", "dataset-id", "dataset-id-unique", "unit-code", "geojson-ring", "wgs84-range"})
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,255}$")
_DATE_NAME: Final = re.compile(r"^(date[A-Z]\w*|\w+At)$")


async def _records(ctx: RunContext) -> list[tuple[str, Any]]:
    data = await ctx.data_entities()
    if not data:
        what = ", ".join(ctx.profile.model_names) or "any type"
        raise Skip(f"no entities to judge (entities of {what} on the target)")
    return data


async def _verdicts(ctx: RunContext) -> list[tuple[str, Any, Any]]:
    """(location, record, verdict or None) for every record; computed once per run."""
    if "verdicts" not in ctx._cache:
        from gateway.validation import validate, validate_strict

        # A strict profile holds the data to its models: unknown types, undefined attributes and
        # units the model does not use are errors (each owned by one check below), not warnings.
        check = validate_strict if ctx.profile.strict else validate
        out = []
        for loc, rec in await _records(ctx):
            out.append((loc, rec, None if is_failure(rec) else check(rec)))
        ctx._cache["verdicts"] = out
    cached: list[tuple[str, Any, Any]] = ctx._cache["verdicts"]
    return cached


def _report(ctx: RunContext, findings: list[str], what: str, total: int) -> str | None:
    if findings:
        ctx.measurements.append({"findings": findings[:EVIDENCE_LIMIT], "count": len(findings), "judged": total})
        shown = "; ".join(findings[:MAX_LISTED])
        more = f" (and {len(findings) - MAX_LISTED} more)" if len(findings) > MAX_LISTED else ""
        raise Fail(f"{len(findings)} {what}: {shown}{more}")
    return f"{total} entities judged"


def _rule_findings(verdicts: Iterable[tuple[str, Any, Any]], pick: Any) -> list[str]:
    out = []
    for loc, _, verdict in verdicts:
        if verdict is None:
            continue
        for p in verdict.errors:
            if pick(p.rule):
                out.append(f"{loc}{p.pointer}: {p.message}")
    return out


@check("L1-ENT-001", "Every record is an NGSI-LD entity with id and type", needs=D,
       sends="(no request) the records delivered or read from the target",
       expects="each record is a JSON object with an id and a type; every payload translates",
       explain="Data that is not even shaped as an entity cannot be used by any standard tool.")
async def _ent_shape(ctx: RunContext) -> str | None:
    v = await _verdicts(ctx)
    findings = [f"{loc}: {rec.reason}" for loc, rec, _ in v if is_failure(rec)]
    findings += _rule_findings(v, lambda r: r in _ENT_RULES)
    return _report(ctx, findings, "records are not entities", len(v))


@check("L1-ENT-002", "Entity ids are URIs", needs=D,
       sends="(no request) the records delivered or read",
       expects="every id is an absolute URI (e.g. urn:ngsi-ld:WasteContainer:42)",
       explain="URIs make identifiers unique across vendors and territories.")
async def _ent_uri(ctx: RunContext) -> str | None:
    v = await _verdicts(ctx)
    return _report(ctx, _rule_findings(v, lambda r: r == "id-uri"), "ids are not URIs", len(v))


@check("L1-ENT-003", "Entity ids are unique in a delivery", needs=D,
       sends="(no request) the records delivered or read",
       expects="no id twice for the same observation time (a series of one id at successive times is fine)",
       explain="Two objects with one identifier overwrite each other downstream.")
async def _ent_unique(ctx: RunContext) -> str | None:
    seen: dict[tuple[str, str], str] = {}
    findings = []
    records = await _records(ctx)
    # an export holds one file per tenant: two communes may both have a container 42
    per_file = ctx.target.kind == "export"
    for loc, rec in records:
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            # A delivery may be a time series: the same id at successive observation times.
            scope = loc.rsplit(":", 1)[0] + "\x00" if per_file else ""
            key = (scope + rec["id"], max((t for _, t in _observed(rec)), default=""))
            if key in seen:
                findings.append(f"{loc}: {rec['id']} already at {seen[key]}")
            seen.setdefault(key, loc)
    return _report(ctx, findings, "duplicated ids", len(records))


@check("L1-ATT-001", "Attributes follow the NGSI-LD structure", needs=D,
       sends="(no request) the records delivered or read",
       expects="every attribute has a valid NGSI-LD type and the value member that type requires",
       explain="Typed attributes (Property, Relationship, GeoProperty…) are what makes the data self-describing.")
async def _att_structure(ctx: RunContext) -> str | None:
    v = await _verdicts(ctx)
    findings = _rule_findings(v, lambda r: r not in _OWN and not r.startswith(("schema:", "geojson", "id-")))
    return _report(ctx, findings, "attribute structure errors", len(v))


@check("L1-ATT-002", "Relationships point at URIs", needs=D,
       sends="(no request) the records delivered or read",
       expects="every Relationship object (and objectList item) is a URI",
       explain="A link to 'container 12' cannot be followed; a link to a URI can.")
async def _att_rel(ctx: RunContext) -> str | None:
    v = await _verdicts(ctx)
    return _report(ctx, _rule_findings(v, lambda r: r == "relationship-object"), "relationships are not URIs", len(v))


@check("L1-ATT-003", "datasetId values are URIs, one instance per datasetId", needs=D,
       sends="(no request) the records delivered or read",
       expects="datasetId is a URI and never repeated within one attribute",
       explain="Multiple sources for one quantity must stay distinguishable.")
async def _att_dataset(ctx: RunContext) -> str | None:
    v = await _verdicts(ctx)
    return _report(ctx, _rule_findings(v, lambda r: r.startswith("dataset-id")), "datasetId errors", len(v))


@check("L1-ATT-004", "Attribute names are valid terms", needs=D,
       sends="(no request) the records delivered or read",
       expects="names made of letters, digits, '_' and '-' starting with a letter or '_', or absolute IRIs",
       explain="Names with spaces, dots or quotes break queries (q=a.b means a sub-attribute) and databases.")
async def _att_names(ctx: RunContext) -> str | None:
    findings = []
    records = await _records(ctx)
    for loc, rec in records:
        if isinstance(rec, dict):
            for name in rec:
                if name not in ENTITY_MEMBERS and not _NAME.match(name) and not is_uri(name):
                    findings.append(f"{loc}: {name!r}")
    return _report(ctx, findings, "invalid attribute names", len(records))


@check("L1-TIM-001", "Times are RFC 3339 with a time zone", needs=D,
       sends="(no request) the records delivered or read",
       expects="observedAt, createdAt, modifiedAt parse as RFC 3339 date-times with Z or an offset",
       explain="A time without a zone is ambiguous by one or two hours in France (summer time).")
async def _tim_zone(ctx: RunContext) -> str | None:
    v = await _verdicts(ctx)
    return _report(ctx, _rule_findings(v, lambda r: r in _TIME_RULES), "times without zone or unparsable", len(v))


def _observed(rec: Any) -> Iterable[tuple[str, str]]:
    if not isinstance(rec, dict):
        return
    for name, attr in rec.items():
        if name in ENTITY_MEMBERS:
            continue
        for inst in attr if isinstance(attr, list) else [attr]:
            if isinstance(inst, dict) and isinstance(inst.get("observedAt"), str):
                yield name, inst["observedAt"]


@check("L1-TIM-002", "No observation is dated in the future", needs=D,
       sends="(no request) the records delivered or read",
       expects="every observedAt is at most 5 minutes ahead of the checker's clock",
       explain="Future dates reveal a wrong device clock or a time-zone error.")
async def _tim_future(ctx: RunContext) -> str | None:
    limit = datetime.now(UTC) + FUTURE_TOLERANCE
    findings = []
    records = await _records(ctx)
    for loc, rec in records:
        for name, moment in _observed(rec):
            try:
                if parse_time(moment) > limit:
                    findings.append(f"{loc}/{name}: {moment}")
            except ValueError:
                continue  # L1-TIM-001 reports unparsable times
    return _report(ctx, findings, "observations dated in the future", len(records))


@check("L1-TIM-003", "Date-valued properties carry a time zone", needs=D,
       sends="(no request) the records delivered or read",
       expects="properties named date… or …At holding a date-time string are RFC 3339 with a zone",
       explain="Dates such as dateObserved or dateLastEmptying are compared across systems; they need a zone.")
async def _tim_dates(ctx: RunContext) -> str | None:
    findings = []
    records = await _records(ctx)
    for loc, rec in records:
        if not isinstance(rec, dict):
            continue
        for name, attr in rec.items():
            if name in ENTITY_MEMBERS or not _DATE_NAME.match(name):
                continue
            value = attr.get("value") if isinstance(attr, dict) else attr
            if isinstance(value, dict) and "@value" in value:
                value = value["@value"]
            if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", value):
                try:
                    parse_time(value)
                except ValueError as exc:
                    findings.append(f"{loc}/{name}: {exc}")
    return _report(ctx, findings, "date-time values without zone", len(records))


@check("L1-UNT-001", "unitCode is a UN/CEFACT common code", needs=D,
       sends="(no request) the records delivered or read",
       expects="every unitCode is a UN/CEFACT Recommendation 20 code (CEL, KWH, GQ…), not a symbol",
       explain="Symbols such as '°C' or 'Celsius' are not machine-comparable; the UN/CEFACT code is.")
async def _unt_code(ctx: RunContext) -> str | None:
    v = await _verdicts(ctx)
    return _report(ctx, _rule_findings(v, lambda r: r == "unit-code"), "invalid unit codes", len(v))


def _expected_unit(ctx: RunContext, etype: str, name: str) -> str | None:
    for decl in ctx.profile.quality.get("declarations", []):
        if decl.get("type") == etype:
            unit = (decl.get("ranges", {}).get(name) or {}).get("unit")
            if unit:
                return str(unit)
    try:
        import schemas

        spec = schemas.model(etype).attributes.get(name)
    except Exception:  # a type without a bundled model has no expected unit
        return None
    if spec is None:
        return None
    from gateway.validation import CONVENTIONAL_UNITS

    return spec.unit or CONVENTIONAL_UNITS.get(name)


@check("L1-UNT-002", "Units are those the model (or the vendor sheet) specifies", needs=D,
       sends="(no request) the records delivered or read",
       expects="each unitCode equals the unit the Smart Data Model or the vendor declaration gives",
       explain="A temperature in °F where °C is expected would be read 30 degrees off.")
async def _unt_expected(ctx: RunContext) -> str | None:
    findings = []
    records = await _records(ctx)
    for loc, rec in records:
        if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
            continue
        for name, attr in rec.items():
            if name in ENTITY_MEMBERS:
                continue
            for inst in attr if isinstance(attr, list) else [attr]:
                code = inst.get("unitCode") if isinstance(inst, dict) else None
                if isinstance(code, str):
                    want = _expected_unit(ctx, rec["type"], name)
                    if want is not None and code != want:
                        findings.append(f"{loc}/{name}: {code} instead of {want}")
    return _report(ctx, findings, "unexpected units", len(records))


@check("L1-GEO-001", "Geometries are valid GeoJSON", needs=D,
       sends="(no request) the records delivered or read",
       expects="every GeoProperty holds a GeoJSON geometry (RFC 7946) with well-formed positions",
       explain="Maps and spatial queries only work on valid geometries.")
async def _geo_valid(ctx: RunContext) -> str | None:
    v = await _verdicts(ctx)
    return _report(ctx, _rule_findings(v, lambda r: r.startswith("geojson") and r != "geojson-ring"),
                   "invalid geometries", len(v))


def _positions(value: Any) -> Iterable[list[Any]]:
    if isinstance(value, list):
        if value and all(isinstance(x, int | float) for x in value):
            yield value
        else:
            for item in value:
                yield from _positions(item)


@check("L1-GEO-002", "Coordinates are WGS84 longitude/latitude", needs=D,
       sends="(no request) the records delivered or read",
       expects="longitude within [-180, 180] and latitude within [-90, 90] for every position",
       explain="Lambert-93 metres sent as degrees put a lamp post in outer space; NGSI-LD requires WGS84.")
async def _geo_wgs84(ctx: RunContext) -> str | None:
    findings = []
    records = await _records(ctx)
    for loc, rec in records:
        if not isinstance(rec, dict):
            continue
        for name, attr in rec.items():
            for inst in attr if isinstance(attr, list) else [attr]:
                if isinstance(inst, dict) and inst.get("type") == "GeoProperty" and isinstance(inst.get("value"),
                                                                                              dict):
                    for pos in _positions(inst["value"].get("coordinates")):
                        if len(pos) >= 2 and not (-180 <= pos[0] <= 180 and -90 <= pos[1] <= 90):
                            findings.append(f"{loc}/{name}: {pos[:2]}")
                            break
    return _report(ctx, findings, "positions outside WGS84 bounds", len(records))


@check("L1-GEO-003", "Polygon rings are closed", needs=D,
       sends="(no request) the records delivered or read",
       expects="every linear ring has four or more positions and ends where it starts",
       explain="Open rings are not polygons; GIS software rejects them.")
async def _geo_rings(ctx: RunContext) -> str | None:
    v = await _verdicts(ctx)
    return _report(ctx, _rule_findings(v, lambda r: r == "geojson-ring"), "open or short rings", len(v))


def _model_check(model: str) -> Any:
    async def run(ctx: RunContext) -> str | None:
        v = [t for t in await _verdicts(ctx) if isinstance(t[1], dict) and t[1].get("type") == model]
        if not v:
            why = ctx.profile.must_deliver(model)
            if why is not None:  # a model the target must deliver and does not: a required check that cannot run
                raise Skip(f"no entity of type {model} in the data, but {why}")
            raise NotApplicable(f"no {model} entity delivered: the profile asks {model} entities to conform "
                                "when delivered, and neither it nor the vendor sheet says they are supplied")
        findings = _rule_findings(v, lambda r: r.startswith("schema:") or r in _STRICT_MODEL_RULES)
        return _report(ctx, findings, f"violations of the {model} model", len(v))

    return run


def _version(model: str) -> str:
    try:
        import schemas

        return schemas.model(model).upstream_version or "?"
    except Exception:  # the model may not be bundled in this installation
        return "?"


for _model, _cid in MODEL_CHECKS.items():
    add(_cid, f"Entities of type {_model} follow the Smart Data Model {_model}", _model_check(_model),
        needs=D, model=_model,
        sends=f"(no request) the {_model} entities delivered or read",
        expects=f"each {_model} entity, projected to keyValues, validates against the {_model} schema "
                f"(version {_version(_model)})",
        explain="Following the shared model is what lets any application reuse the data without a custom mapping.")
