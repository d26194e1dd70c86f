"""Indicator definitions: YAML data checked against a JSON Schema before any store is opened.

The package ships ``defaults.yaml``; a territory adds its own file (``--definitions``), whose
indicators come after the defaults and replace a default of the same id. Every problem is reported
together, each with the JSON pointer of the key at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from jsonschema import Draft202012Validator

from gateway.errors import ConfigInvalid
from gateway.pointer import pointer

MAX_DEFINITIONS_BYTES: Final = 1 << 20
DEFAULTS: Final = Path(__file__).with_name("defaults.yaml")
"""The indicators shipped with jonction."""

_DURATION: Final = r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$"
_LOCAL_TIME: Final = r"^([01]\d|2[0-3]):[0-5]\d$"
_TEXT: Final = {"type": "string", "minLength": 1, "maxLength": 4000}
_NUMBER: Final = {"type": "number"}
_FRACTION: Final = {"type": "number", "minimum": 0, "maximum": 1}
_DURATION_SCHEMA: Final = {"type": "string", "pattern": _DURATION, "not": {"enum": ["P", "PT"]}}
_SCALE: Final = {"type": "number", "exclusiveMinimum": 0}


def _params(properties: Mapping[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required),
            "additionalProperties": False}


KIND_PARAMS: Final[dict[str, dict[str, Any]]] = {
    "meter": _params({"scale": _SCALE, "reset_tolerance": {"type": "number", "minimum": 0}}),
    "sum": _params({"scale": _SCALE}),
    "mean": _params({"scale": _SCALE}),
    "hours_when": {
        **_params({"at_least": _NUMBER, "values": {"type": "array", "minItems": 1, "maxItems": 100},
                   "max_hold": _DURATION_SCHEMA}),
        "oneOf": [{"required": ["at_least"]}, {"required": ["values"]}],
    },
    "rolling_mean_above": _params(
        {"threshold": _NUMBER, "averaging_hours": {"type": "integer", "minimum": 1, "maximum": 168},
         "min_coverage": _FRACTION},
        ["threshold", "averaging_hours"],
    ),
    "night_minimum": _params({"window": {"type": "array", "items": {"type": "string", "pattern": _LOCAL_TIME},
                                         "minItems": 2, "maxItems": 2}, "scale": _SCALE}),
    "collections": _params(
        {"measure": {"enum": ["level", "share_below", "count"]}, "below": _FRACTION,
         "drop": {"type": "number", "exclusiveMinimum": 0}, "max_gap": _DURATION_SCHEMA, "scale": _SCALE},
        ["measure"],
    ),
    "availability": _params(
        {"measure": {"enum": ["uptime", "completeness", "freshness"]}, "interval": _DURATION_SCHEMA,
         "down_after": {"type": "number", "minimum": 1}, "tolerance": {"type": "number", "minimum": 0},
         "scale": _SCALE},
        ["measure", "interval"],
    ),
    "linear_trend": _params({"replacement_jump": {"type": "number", "exclusiveMinimum": 0}, "scale": _NUMBER}),
    "repairs": _params({"measure": {"enum": ["failures", "failed_entities", "mean_hours"]},
                        "ok_values": {"type": "array", "minItems": 1, "maxItems": 100}}, ["measure"]),
}
"""Each computation kind and the parameters it accepts."""

_LOCALIZED: Final = {"type": "object", "properties": {"fr": _TEXT, "en": _TEXT}, "required": ["fr", "en"],
                     "additionalProperties": False}
_NAMES: Final = {"type": "array", "items": {"type": "string", "pattern": r"^[^\s]{1,200}$"}, "minItems": 1,
                 "maxItems": 20, "uniqueItems": True}

SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "indicators": {
            "type": "array",
            "maxItems": 500,
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": r"^[a-z][a-z0-9_.-]{0,99}$"},
                    "theme": {"type": "string", "pattern": r"^[a-z][a-z0-9_-]{0,49}$"},
                    "title": _LOCALIZED,
                    "method": _LOCALIZED,
                    "unit": {"type": "string", "maxLength": 40},
                    "types": _NAMES,
                    "attributes": _NAMES,
                    "kind": {"enum": sorted(KIND_PARAMS)},
                    "params": {"type": "object"},
                    "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
                    "per_entity": {"type": "boolean"},
                    "per_month": {"type": "boolean"},
                    "better": {"enum": ["lower", "higher", "none"]},
                },
                "required": ["id", "title", "method", "unit", "types", "attributes", "kind"],
                "additionalProperties": False,
                "allOf": [
                    {"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                     "then": {"properties": {"params": params}}}
                    for kind, params in KIND_PARAMS.items()
                ],
            },
        },
    },
    "required": ["indicators"],
    "additionalProperties": False,
}
"""The schema of a definitions file."""

TOTAL_KINDS: Final = frozenset({"meter", "sum", "hours_when", "rolling_mean_above"})
"""Kinds whose figure is a total (``num``), not a ratio (``num / den``)."""


@dataclass(frozen=True, slots=True)
class Definition:
    """One indicator, as declared."""

    id: str
    theme: str
    title: Mapping[str, str]
    method: Mapping[str, str]
    unit: str
    types: tuple[str, ...]
    attributes: tuple[str, ...]
    """Candidate attributes: the first one an entity has history for is used."""
    kind: str
    params: Mapping[str, Any]
    timezone: str = "Europe/Paris"
    per_entity: bool = False
    per_month: bool = False
    better: str = "none"

    @property
    def is_total(self) -> bool:
        """True when the figure adds up (a total), False when it is a ratio of sums."""
        if self.kind == "collections":
            return self.params.get("measure") == "count"
        if self.kind == "repairs":
            return self.params.get("measure") != "mean_hours"
        return self.kind in TOTAL_KINDS


def duration_micros(text: str) -> int:
    """µs of an ISO 8601 duration of days, hours, minutes and seconds (checked by the schema)."""
    match = re.match(_DURATION, text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like PT15M or P1D")
    d, h, m, s = (int(g or 0) for g in match.groups())
    return ((d * 24 + h) * 60 + m) * 60_000_000 + s * 1_000_000


def _semantic(doc: Mapping[str, Any]) -> list[str]:
    """What the schema cannot say: known timezones, non-zero durations, ordered night windows."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    problems: list[str] = []
    for index, item in enumerate(doc.get("indicators", [])):
        zone = item.get("timezone")
        if zone is not None:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                problems.append(f"{pointer(['indicators', index, 'timezone'])}: unknown timezone {zone!r}")
        params = item.get("params", {})
        for key in ("interval", "max_hold", "max_gap"):
            if isinstance(params.get(key), str) and duration_micros(params[key]) <= 0:
                problems.append(f"{pointer(['indicators', index, 'params', key])}: the duration must not be zero")
        window = params.get("window")
        ordered = isinstance(window, list) and len(window) == 2 and window[0] < window[1]
        if item.get("kind") == "night_minimum" and window is not None and not ordered:
            problems.append(f"{pointer(['indicators', index, 'params', 'window'])}: the window must start before "
                            "it ends, within one night (e.g. [\"02:00\", \"04:00\"])")
    return problems


def parse(doc: Any, source: str) -> list[Definition]:
    """Check one definitions document (all problems together) and build its definitions."""
    validator = Draft202012Validator(SCHEMA)
    problems = [
        f"{pointer(err.absolute_path)}: {err.message}"
        for err in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    ]
    if not problems:
        problems = _semantic(doc)
    if problems:
        raise ConfigInvalid(f"{source}: the indicator definitions do not validate", problems)
    seen: set[str] = set()
    out: list[Definition] = []
    for index, item in enumerate(doc["indicators"]):
        if item["id"] in seen:
            raise ConfigInvalid(f"{source}: the indicator definitions do not validate",
                                [f"{pointer(['indicators', index, 'id'])}: {item['id']!r} is defined twice"])
        seen.add(item["id"])
        out.append(Definition(
            id=item["id"], theme=item.get("theme", "other"), title=item["title"], method=item["method"],
            unit=item["unit"], types=tuple(item["types"]), attributes=tuple(item["attributes"]), kind=item["kind"],
            params=item.get("params", {}), timezone=item.get("timezone", "Europe/Paris"),
            per_entity=item.get("per_entity", False), per_month=item.get("per_month", False),
            better=item.get("better", "none"),
        ))
    return out


def read(path: Path) -> list[Definition]:
    """Read and check one definitions file."""
    try:
        if path.stat().st_size > MAX_DEFINITIONS_BYTES:
            raise ConfigInvalid(f"{path}: larger than {MAX_DEFINITIONS_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigInvalid(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigInvalid(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    return parse(doc, str(path))


def load(extra: Path | None = None) -> list[Definition]:
    """The shipped definitions, then those of ``extra`` (an id already defined is replaced in place)."""
    merged = {d.id: d for d in read(DEFAULTS)}
    if extra is not None:
        for d in read(extra):
            merged[d.id] = d
    return list(merged.values())
