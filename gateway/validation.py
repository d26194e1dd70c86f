"""Validate NGSI-LD entities: attribute structure first, then the Smart Data Model schema.

Input may be normalized or concise. Every attribute and sub-attribute is checked for the NGSI-LD
structure (ETSI GS CIM 009 V1.9.1 §4.5); the entity is then projected to keyValues without
losing a value (multi-instance attributes are checked instance by instance) and validated against
the model's JSON Schema with format checking on. Every problem carries a JSON pointer into the
entity exactly as the caller sent it.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonschema

import schemas
from gateway.model import (
    ATTRIBUTE_MEMBERS,
    ATTRIBUTE_TYPES,
    ENTITY_MEMBERS,
    VALUE_KEY,
    VALUE_MEMBERS,
    ModelError,
    is_uri,
    parse_time,
)
from gateway.pointer import join
from gateway.units import CODES, UnitError, _dimension, convert, is_uncefact
from schemas.fastcheck import Compiler

__all__ = ["Problem", "Verdict", "strict_verdict", "validate", "validate_batch", "validate_strict"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (JSON pointer into the entity as sent), which rule, what, and what was expected."""

    pointer: str
    rule: str
    message: str
    expected: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"pointer": self.pointer, "rule": self.rule, "message": self.message, "expected": self.expected}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verdict on one entity: valid unless ``errors`` is not empty; warnings never invalidate."""

    valid: bool
    entity_id: str | None
    entity_type: str | None
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "valid": self.valid,
            "id": self.entity_id,
            "type": self.entity_type,
            "errors": [p.to_dict() for p in self.errors],
            "warnings": [p.to_dict() for p in self.warnings],
        }


_MEMBER_TYPE: Final[Mapping[str, str]] = {
    "object": "Relationship",
    "languageMap": "LanguageProperty",
    "vocab": "VocabProperty",
    "valueList": "ListProperty",
    "objectList": "ListRelationship",
    "json": "JsonProperty",
}
_GEO_DEPTH: Final[Mapping[str, int]] = {
    "Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2, "MultiPolygon": 3,
}
_LANG_TAG: Final = re.compile(r"^(@none|[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*)$")
_TIME_MEMBERS: Final = ("observedAt", "createdAt", "modifiedAt", "deletedAt")
_MAX_NESTING: Final = 32
"""Sub-attribute depth we follow (a guard, not a spec limit: real data nests two or three levels)."""
_MAX_DEPTH: Final = 128
"""Deepest JSON nesting checked at all; deeper input is one error (the schema check recurses)."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
INTEGER_RANGE: Final = 2**63
"""Integers must lie in [-2**63, 2**63): what SQLite, Java and Go brokers store exactly; beyond,
JSON parsers disagree (RFC 8259 §6) and Python cannot even print them past 4,300 digits."""


def _tag(value: Any) -> str | None:
    """``value`` if it is a string, else None: safe to look up in sets (lists are unhashable)."""
    return value if type(value) is str else None


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --------------------------------------------------------------------------- numbers


def _number_problem(value: Any) -> str | None:
    """Why a JSON number cannot be stored, or None; never converts a huge integer to text."""
    if type(value) is float or (isinstance(value, float) and not isinstance(value, bool)):
        if math.isfinite(value):
            return None
        return f"{'NaN' if math.isnan(value) else 'Infinity' if value > 0 else '-Infinity'} is not a JSON number"
    if isinstance(value, int) and not isinstance(value, bool) and not -INTEGER_RANGE <= value < INTEGER_RANGE:
        digits = int(value.bit_length() * 0.30103) + 1
        return f"an integer of about {digits} digits is outside the 64-bit range"
    return None


def _clean(entity: Mapping[str, Any]) -> bool:
    """True when no number needs a look and nesting is shallow: the fast path, every entity pays it."""
    if type(entity) is not dict:
        return False
    stack: list[tuple[Any, int]] = [(entity, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        for value in (node.values() if type(node) is dict else node):
            kind = type(value)
            if kind is str:
                if not value.isascii() and _SURROGATE.search(value):
                    return False
                continue
            if kind is dict or kind is list:
                if depth >= _MAX_DEPTH - 1:
                    return False
                push((value, depth + 1))
            elif kind is float:
                if value - value != 0.0:  # NaN and the infinities
                    return False
            elif kind is int:
                if not -INTEGER_RANGE <= value < INTEGER_RANGE:
                    return False
            elif kind is not bool and value is not None:
                return False  # another type (a Mapping, a tuple, a subclass): the careful walk decides
    return True


def _scan(entity: Mapping[str, Any]) -> tuple[list[Problem], Mapping[str, Any]]:
    """Find non-finite and out-of-range numbers and over-deep nesting, without recursion.

    Returns their problems and the entity with each such number replaced by 0, so that the checks
    that follow (messages quoting values, comparisons, the JSON Schema) can neither raise nor flag
    the same number twice. The entity is returned as is (not copied) when nothing was found.
    """
    if _clean(entity):
        return [], entity
    problems: list[Problem] = []
    bad: list[tuple[str | int, ...]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(entity, ())]
    while stack:
        node, path = stack.pop()
        items: Iterable[tuple[Any, Any]] = node.items() if isinstance(node, Mapping) else enumerate(node)
        for key, value in items:
            kind = type(value)
            if isinstance(value, str):
                if not value.isascii() and _SURROGATE.search(value):
                    pointer = join("", *path, key)
                    problems.append(Problem(pointer, "unicode", "a lone UTF-16 surrogate is not a Unicode character "
                                            "(the text cannot be encoded as UTF-8)", "valid Unicode text"))
                continue
            if kind is bool or value is None:
                continue
            if kind is dict or kind is list or isinstance(value, Mapping | list | tuple):
                if len(path) >= _MAX_DEPTH:
                    pointer = join("", *path, key)
                    problems.append(Problem(pointer, "nesting", f"JSON nested deeper than {_MAX_DEPTH} levels",
                                            f"at most {_MAX_DEPTH} levels"))
                    bad.append((*path, key))
                elif value:
                    stack.append((value, (*path, key)))
                continue
            reason = _number_problem(value)
            if reason is not None:
                pointer = join("", *path, key)
                problems.append(Problem(pointer, "number", reason, "a finite number (integers within 64 bits)"))
                bad.append((*path, key))
    if not bad:
        return problems, entity
    problems.sort(key=lambda p: p.pointer)
    return problems, _replaced(entity, bad)


def _replaced(root: Mapping[str, Any], paths: list[tuple[str | int, ...]]) -> dict[str, Any]:
    """A copy of ``root`` with the value at each path set to 0 (only the containers on a path are copied)."""
    copy: dict[str, Any] = dict(root)
    copies: dict[int, Any] = {id(root): copy}
    for path in paths:
        original: Any = root
        current: Any = copy
        for key in path[:-1]:
            child = original[key]
            duplicate = copies.get(id(child))
            if duplicate is None:
                duplicate = dict(child) if isinstance(child, Mapping) else list(child)
                copies[id(child)] = duplicate
            current[key] = duplicate
            original, current = child, duplicate
        current[path[-1]] = 0
    return copy


# --------------------------------------------------------------------------- structure


class _Checker:
    """Collects problems while walking one entity."""

    __slots__ = ("errors", "warnings")

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, pointer: str, rule: str, message: str, expected: str | None = None) -> None:
        self.errors.append(Problem(pointer, rule, message, expected))

    def warn(self, pointer: str, rule: str, message: str, expected: str | None = None) -> None:
        self.warnings.append(Problem(pointer, rule, message, expected))

    # ----------------------------------------------------------------- attributes

    def attribute(self, name: str, value: Any, pointer: str, depth: int) -> str | None:
        """Check one attribute (one or several instances); return its NGSI-LD type if consistent."""
        if isinstance(value, list) and value and all(_is_attribute_object(v) for v in value):
            seen: dict[str | None, int] = {}
            kinds: set[str | None] = set()
            for index, instance in enumerate(value):
                here = join(pointer, index)
                kinds.add(self.instance(name, instance, here, depth))
                dataset = instance.get("datasetId")
                key = dataset if isinstance(dataset, str) else None
                if key in seen:
                    what = f"datasetId {key!r}" if key is not None else "no datasetId (the default instance)"
                    self.error(
                        here + ("/datasetId" if key is not None else ""),
                        "dataset-id-unique",
                        f"instance {index} of {name!r} repeats {what} of instance {seen[key]}",
                        "one instance per datasetId",
                    )
                else:
                    seen[key] = index
            return kinds.pop() if len(kinds) == 1 else None
        return self.instance(name, value, pointer, depth)

    def instance(self, name: str, attr: Any, pointer: str, depth: int) -> str | None:
        """Check one attribute instance; return its (possibly inferred) NGSI-LD type."""
        if type(attr) is not dict and not isinstance(attr, Mapping):
            return "Property"  # concise Property: a bare value (or a plain array of values)
        if _tag(attr.get("type")) not in ATTRIBUTE_TYPES and not _is_attribute_object(attr):
            if "type" in attr and isinstance(attr.get("type"), str) and attr["type"] in _GEO_DEPTH:
                self.geometry(attr, pointer)
                return "GeoProperty"
            return "Property"  # concise Property whose value is a JSON object
        declared = attr.get("type")
        if declared is None:
            kind = next((t for k, t in _MEMBER_TYPE.items() if k in attr), "Property")
            if kind == "Property" and _is_geometry_like(attr.get("value")):
                kind = "GeoProperty"
        elif _tag(declared) not in ATTRIBUTE_TYPES:
            self.error(
                pointer + "/type",
                "attribute-type",
                f"{declared!r} is not an NGSI-LD attribute type" + _v2_hint(declared),
                "one of " + ", ".join(sorted(ATTRIBUTE_TYPES)),
            )
            return None
        else:
            kind = str(declared)
        self.content(kind, attr, pointer)
        if len(attr) > 2:  # more than type and value: metadata or sub-attributes to look at
            self.metadata(attr, pointer)
            for sub, sub_value in attr.items():
                if sub not in ATTRIBUTE_MEMBERS:
                    if depth >= _MAX_NESTING:
                        self.error(pointer, "nesting", f"sub-attributes nest deeper than {_MAX_NESTING} levels")
                        return kind
                    self.attribute(sub, sub_value, join(pointer, sub), depth + 1)
        return kind

    def content(self, kind: str, attr: Mapping[str, Any], pointer: str) -> None:
        """The member that carries the value, per attribute type."""
        key = VALUE_KEY[kind]
        if key not in attr or attr[key] is None:
            hint = ""
            if kind == "Relationship" and "value" in attr:
                hint = " (a Relationship carries its target in 'object', not 'value')"
            self.error(pointer, f"{kind}-{key}".lower(), f"{kind} without {key!r}{hint}", f"a {key!r} member")
            return
        value = attr[key]
        here = pointer + "/" + key
        if kind == "Relationship":
            targets = value if isinstance(value, list) else [value]
            for index, target in enumerate(targets):
                if not is_uri(target):
                    where = join(here, index) if isinstance(value, list) else here
                    self.error(where, "relationship-object", f"{target!r} is not a URI", "an entity id (URI)")
        elif kind == "GeoProperty":
            self.geometry(value, here)
        elif kind == "LanguageProperty":
            if not isinstance(value, Mapping) or not value:
                self.error(here, "language-map", "languageMap must be a non-empty object", "{tag: string}")
                return
            for tag, text in value.items():
                if not _LANG_TAG.match(tag):
                    self.error(join(here, tag), "language-tag", f"{tag!r} is not a BCP 47 language tag", "e.g. fr")
                if not (isinstance(text, str) or (isinstance(text, list) and all(isinstance(t, str) for t in text))):
                    self.error(join(here, tag), "language-map", "languageMap values are strings", "a string")
        elif kind == "VocabProperty":
            terms = value if isinstance(value, list) else [value]
            if not terms or not all(isinstance(t, str) and t for t in terms):
                self.error(here, "vocab", "vocab must be a term or a list of terms", "string or [string]")
        elif kind == "ListProperty":
            if not isinstance(value, list):
                self.error(here, "value-list", "valueList must be an array", "an array")
        elif kind == "ListRelationship":
            if not isinstance(value, list):
                self.error(here, "object-list", "objectList must be an array", "an array")
                return
            for index, item in enumerate(value):
                target = item.get("object") if isinstance(item, Mapping) else item
                if not is_uri(target):
                    where = join(here, index) + ("/object" if isinstance(item, Mapping) else "")
                    self.error(where, "relationship-object", f"{target!r} is not a URI", "an entity id (URI)")

    def metadata(self, attr: Mapping[str, Any], pointer: str) -> None:
        """unitCode, observedAt and the other times, datasetId."""
        unit = attr.get("unitCode")
        if unit is not None and _tag(unit) not in CODES:
            self.error(
                pointer + "/unitCode",
                "unit-code",
                f"{unit!r} is not a UN/CEFACT common code" + _unit_hint(unit),
                "a UN/CEFACT Rec 20 common code such as CEL, KWH, P1",
            )
        for member in _TIME_MEMBERS:
            moment = attr.get(member)
            if moment is not None:
                try:
                    parse_time(moment)
                except ModelError as exc:
                    self.error(
                        pointer + "/" + member, member.lower(), str(exc), "RFC 3339 date-time with Z or an offset"
                    )
        dataset = attr.get("datasetId")
        if dataset is not None and not is_uri(dataset):
            self.error(pointer + "/datasetId", "dataset-id", f"{dataset!r} is not a URI", "a URI")

    def geometry(self, value: Any, pointer: str) -> None:
        """A GeoJSON geometry with WGS84 positions (lon in [-180, 180], lat in [-90, 90])."""
        if not isinstance(value, Mapping):
            self.error(pointer, "geojson", "a GeoProperty value must be a GeoJSON geometry object", "GeoJSON")
            return
        kind = value.get("type")
        if kind == "GeometryCollection":
            parts = value.get("geometries")
            if not isinstance(parts, list):
                self.error(pointer + "/geometries", "geojson", "geometries must be an array", "an array")
                return
            for index, part in enumerate(parts):
                self.geometry(part, f"{pointer}/geometries/{index}")
            return
        if _tag(kind) not in _GEO_DEPTH:
            self.error(pointer + "/type", "geojson", f"{kind!r} is not a GeoJSON geometry type", "Point, Polygon...")
            return
        if "coordinates" not in value:
            self.error(pointer, "geojson", f"{kind} without 'coordinates'", "a 'coordinates' member")
            return
        bbox = value.get("bbox")
        if bbox is not None and not (
            isinstance(bbox, list) and len(bbox) in (4, 6) and all(_num(c) for c in bbox)
        ):
            self.error(pointer + "/bbox", "geojson-bbox", f"{bbox!r} is not a bounding box", "4 or 6 numbers")
        before = len(self.errors)
        self.positions(value["coordinates"], _GEO_DEPTH[str(kind)], pointer + "/coordinates", str(kind))
        if len(self.errors) == before:
            self.shape(value["coordinates"], str(kind), pointer + "/coordinates")

    def shape(self, coordinates: Any, kind: str, pointer: str) -> None:
        """RFC 7946 §3.1.4-§3.1.6: lines need two positions, rings four and must close."""
        if kind in ("LineString", "MultiLineString"):
            lines = [coordinates] if kind == "LineString" else coordinates
            for index, line in enumerate(lines):
                where = pointer if kind == "LineString" else join(pointer, index)
                if len(line) < 2:
                    self.error(where, "geojson-line", "a LineString needs two or more positions", ">= 2 positions")
        elif kind in ("Polygon", "MultiPolygon"):
            polygons = [coordinates] if kind == "Polygon" else coordinates
            for p_index, rings in enumerate(polygons):
                base = pointer if kind == "Polygon" else join(pointer, p_index)
                for r_index, ring in enumerate(rings):
                    where = join(base, r_index)
                    if len(ring) < 4:
                        self.error(where, "geojson-ring", "a linear ring needs four or more positions",
                                   ">= 4 positions")
                    elif ring[0] != ring[-1]:
                        self.error(where, "geojson-ring", "a linear ring must end where it starts",
                                   "first position == last position")

    def positions(self, value: Any, depth: int, pointer: str, kind: str) -> None:
        if depth == 0:
            if not isinstance(value, list) or not 2 <= len(value) <= 3 or not all(_num(c) for c in value):
                self.error(pointer, "geojson-position", f"{value!r} is not a position [lon, lat(, alt)]",
                           "[longitude, latitude]")
                return
            lon, lat = value[0], value[1]
            if not -180 <= lon <= 180:
                message = f"longitude {lon} is outside [-180, 180]" + _crs_hint(lon, lat)
                self.error(pointer + "/0", "wgs84-range", message, "WGS84 longitude in [-180, 180]")
            if not -90 <= lat <= 90:
                message = f"latitude {lat} is outside [-90, 90]" + _crs_hint(lon, lat)
                self.error(pointer + "/1", "wgs84-range", message, "WGS84 latitude in [-90, 90]")
            return
        if not isinstance(value, list):
            self.error(pointer, "geojson", f"{kind} coordinates must be nested arrays", "an array")
            return
        for index, item in enumerate(value):
            self.positions(item, depth - 1, join(pointer, index), kind)


def _is_attribute_object(value: Any) -> bool:
    if type(value) is not dict and not isinstance(value, Mapping):
        return False
    declared = value.get("type")
    if _tag(declared) in ATTRIBUTE_TYPES:
        return True
    return any(k in value for k in VALUE_MEMBERS)


def _is_geometry_like(value: Any) -> bool:
    return isinstance(value, Mapping) and _tag(value.get("type")) in _GEO_DEPTH and "coordinates" in value


_V2_TYPES: Final = frozenset(
    {"Number", "Text", "DateTime", "Integer", "Float", "Boolean", "StructuredValue", "geo:json", "Array", "URL"}
)


def _v2_hint(declared: Any) -> str:
    if _tag(declared) in _V2_TYPES:
        return " (an NGSI-v2 type: in NGSI-LD use Property, Relationship or GeoProperty)"
    return ""


def _unit_hint(unit: Any) -> str:
    from gateway.units import UNIT_ALIASES

    if isinstance(unit, str) and unit.strip() in UNIT_ALIASES:
        return f"; did you mean {UNIT_ALIASES[unit.strip()]!r}?"
    return ""


def _crs_hint(lon: Any, lat: Any) -> str:
    if abs(lon) > 1000 or abs(lat) > 1000:
        return " (projected coordinates such as Lambert-93? reproject to WGS84 lon/lat first)"
    if -90 <= lon <= 90 and not -90 <= lat <= 90 and -180 <= lat <= 180:
        return " (latitude and longitude swapped? GeoJSON is [lon, lat])"
    return ""


# --------------------------------------------------------------------------- projection


def _project(kind: str | None, attr: Any) -> tuple[Any, tuple[str | int, ...], str]:
    """keyValues value of one instance, the pointer prefix of that value, and how lists map."""
    if not _is_attribute_object(attr):
        return attr, (), "same"
    key = VALUE_KEY.get(kind or "", "value")
    if kind is None:
        key = next((k for k in VALUE_MEMBERS if k in attr), "value")
    value = attr.get(key)
    if isinstance(value, Mapping) and "@value" in value:
        # A JSON-LD value object ({"@type": "DateTime", "@value": ...}) projects to its literal.
        return value["@value"], (key, "@value"), "same"
    if key == "objectList" and isinstance(value, list):
        return [v.get("object") if isinstance(v, Mapping) else v for v in value], ("objectList",), "objectList"
    return value, (key,), "same"


def _map_pointer(path: Iterable[str | int], prefixes: Mapping[str, tuple[tuple[str | int, ...], str]]) -> str:
    parts = list(path)
    if not parts:
        return ""
    head = str(parts[0])
    prefix, mode = prefixes.get(head, ((), "same"))
    rest = parts[1:]
    if mode == "wrap":
        rest = rest[1:]
    if mode == "objectList" and rest:
        return join("", head, *prefix, rest[0], "object", *rest[1:])
    return join("", head, *prefix, *rest)


def _expected(error: jsonschema.ValidationError) -> str | None:
    keyword: Any = error.validator
    value: Any = error.validator_value
    if keyword == "type":
        return str(value) if isinstance(value, str) else " or ".join(map(str, value))
    if keyword == "enum":
        return "one of " + ", ".join(map(str, value))
    if keyword == "const":
        return repr(value)
    if keyword in ("minimum", "exclusiveMinimum"):
        return (">= " if keyword == "minimum" else "> ") + str(value)
    if keyword in ("maximum", "exclusiveMaximum"):
        return ("<= " if keyword == "maximum" else "< ") + str(value)
    if keyword == "format":
        return f"format {value}"
    if keyword == "required":
        return "present"
    if keyword == "pattern":
        return f"matching {value}"
    if keyword in ("minItems", "maxItems", "minLength", "maxLength"):
        return f"{keyword} {value}"
    return None


def _schema_problems(
    spec: schemas.ModelSpec,
    document: Mapping[str, Any],
    prefixes: Mapping[str, tuple[tuple[str | int, ...], str]],
    only: str | None = None,
) -> list[Problem]:
    out: list[Problem] = []
    for error in schemas.problems(spec.schema, document):
        path = list(error.absolute_path)
        if only is not None and (not path or path[0] != only):
            continue
        message = error.message
        keyword: Any = error.validator
        bound: Any = error.validator_value
        if keyword == "required" and isinstance(error.instance, Mapping):
            missing = [r for r in bound if r not in error.instance and repr(r) in message]
            name = missing[0] if missing else None
            pointer = _map_pointer([*path, name], {}) if name else _map_pointer(path, prefixes)
            message = f"{name!r} is required by {spec.name}" if name else message
        else:
            pointer = _map_pointer(path, prefixes)
        got: Any = error.instance
        if keyword == "maximum" and bound == 1 and _num(got) and 1 < got <= 100:
            message += " (a ratio 0..1 is expected: was a percentage sent?)"
        out.append(Problem(pointer, f"schema:{keyword}", message, _expected(error)))
    return out


# --------------------------------------------------------------------------- public API


def _model_for(entity_type: Any) -> schemas.ModelSpec | None:
    names = entity_type if isinstance(entity_type, list) else [entity_type]
    for name in names:
        if isinstance(name, str) and name in schemas.MODELS:
            return schemas.model(name)
    return None


def validate(entity: Any, *, strict: bool = False) -> Verdict:
    """Validate one NGSI-LD entity (normalized or concise); never raises on bad input.

    NaN, Infinity, integers beyond 64 bits and nesting deeper than 128 levels are errors with the
    pointer of the offending value; the rest of the entity is still checked. ``strict``: the
    findings of ``STRICT_RULES`` (unknown type, undefined attribute, unit not the model's) are errors.
    """
    if strict:
        return strict_verdict(validate(entity))
    if not isinstance(entity, Mapping):
        problem = Problem("", "entity", f"an entity must be a JSON object, not {type(entity).__name__}", "an object")
        return Verdict(False, None, None, (problem,), ())
    if type(entity) is dict:
        try:
            quick = _fast_validate(entity)
        except Exception:  # odd input the fast path did not foresee: the reference path gives the verdict
            quick = None
        if quick is not None:
            return quick
    return _reference(entity)


def _reference(entity: Mapping[str, Any]) -> Verdict:
    """The full check of one entity: the judge of every verdict, error, warning and pointer."""
    try:
        numbers, entity = _scan(entity)
        return _validate(entity, numbers)
    except Exception as exc:  # a last resort: a verdict, never an exception, whatever the input holds
        problem = Problem("", "uncheckable", f"the entity could not be checked ({type(exc).__name__})")
        entity_id = entity.get("id")
        return Verdict(False, entity_id if isinstance(entity_id, str) else None, None, (problem,), ())


def _validate(entity: Mapping[str, Any], numbers: list[Problem]) -> Verdict:
    check = _Checker()
    check.errors.extend(numbers)
    entity_id = entity.get("id", entity.get("@id"))
    entity_type = entity.get("type", entity.get("@type"))
    if entity_id is None:
        check.error("/id", "id-required", "the entity has no 'id'", "a URI")
    elif not is_uri(entity_id):
        check.error("/id", "id-uri", f"entity id {entity_id!r} is not a URI", "a URI such as urn:ngsi-ld:Type:local-id")
    if entity_type is None:
        check.error("/type", "type-required", "the entity has no 'type'", "an entity type name")
    elif not (isinstance(entity_type, str) and entity_type) and not (
        isinstance(entity_type, list) and entity_type and all(isinstance(t, str) and t for t in entity_type)
    ):
        check.error("/type", "type", f"entity type {entity_type!r} is not a name", "a non-empty string")
    kinds: dict[str, str | None] = {}
    for name, value in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        kinds[name] = check.attribute(name, value, join("", name), 0)
    for member in ("createdAt", "modifiedAt"):
        if member in entity:
            try:
                parse_time(entity[member])
            except ModelError as exc:
                check.error(join("", member), member.lower(), str(exc), "RFC 3339 date-time with Z or an offset")

    spec = _model_for(entity_type)
    shown_id = entity_id if isinstance(entity_id, str) else None
    shown_type = entity_type if isinstance(entity_type, str) else (
        entity_type[0] if isinstance(entity_type, list) and entity_type and isinstance(entity_type[0], str) else None
    )
    if spec is None:
        if entity_type is not None:
            check.warn("/type", "unknown-model", f"no bundled Smart Data Model for type {entity_type!r}: "
                       "only the NGSI-LD structure was checked")
    else:
        _against_model(spec, entity, kinds, check)
    return Verdict(not check.errors, shown_id, shown_type, tuple(check.errors), tuple(check.warnings))


@dataclass(frozen=True, slots=True)
class _ModelInfo:
    """What the hot path needs about a model, computed once."""

    spec: schemas.ModelSpec
    predicate: Callable[[Any], bool] | None
    array_relationships: frozenset[str]
    links: frozenset[str]
    lowered: Mapping[str, str]


_INFO: dict[str, _ModelInfo] = {}


def _info(spec: schemas.ModelSpec) -> _ModelInfo:
    found = _INFO.get(spec.name)
    if found is None:
        found = _ModelInfo(
            spec,
            schemas.fast_check(spec.schema),
            frozenset(n for n, a in spec.attributes.items()
                      if a.ngsi_type in ("Relationship", "Property") and _wants_array(spec, n)),
            frozenset(n for n, a in spec.attributes.items()
                      if a.ngsi_type == "Property" and _holds_entity_ids(spec, n)),
            {name.lower(): name for name in spec.attributes},
        )
        _INFO[spec.name] = found
    return found


def _fast_verdict(info: _ModelInfo, entity: Mapping[str, Any], kinds: Mapping[str, str | None]) -> bool:
    """True when the entity certainly satisfies the model and needs no warning: the common case.

    Anything unusual (unknown or multi-instance attributes, unit or type mismatches, JSON-LD value
    objects) returns False and takes the detailed path, which finds the same verdict with pointers.
    """
    predicate = info.predicate
    if predicate is None:
        return False
    attributes = info.spec.attributes
    document: dict[str, Any] = {"id": entity.get("id"), "type": info.spec.name}
    for name, value in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        declared = attributes.get(name)
        kind = kinds.get(name)
        if declared is None or kind is None:
            return False
        if kind != declared.ngsi_type and not (kind == "Relationship" and name in info.links):
            # A Relationship where the model keeps entity ids in a Property (Device.controlledAsset) is
            # compatible, not unusual: it stays on the fast path instead of paying the detailed one.
            return False
        if type(value) is dict and _tag(value.get("type")) in ATTRIBUTE_TYPES:
            unit = declared.unit or CONVENTIONAL_UNITS.get(name)
            if unit is not None:
                code = value.get("unitCode")
                if code is not None and code != unit:
                    return False
            projected = value.get(VALUE_KEY[kind])
            if type(projected) is dict and "@value" in projected:
                return False
            if kind == "Relationship" and type(projected) is str and name in info.array_relationships:
                projected = [projected]
            document[name] = projected
        elif type(value) is dict or type(value) is list:
            return False
        else:
            document[name] = value
    return predicate(document)


def _against_model(
    spec: schemas.ModelSpec, entity: Mapping[str, Any], kinds: Mapping[str, str | None], check: _Checker
) -> None:
    info = _info(spec)
    if not check.errors and _fast_verdict(info, entity, kinds):
        return
    document: dict[str, Any] = {"id": entity.get("id", entity.get("@id")), "type": spec.name}
    prefixes: dict[str, tuple[tuple[str | int, ...], str]] = {}
    # Values beyond the first of an attribute (other instances, other languages): each must satisfy
    # the model on its own, so nothing the entity carries escapes the schema.
    extra: list[tuple[str, Any, tuple[str | int, ...], str]] = []
    lowered = info.lowered
    for name, value in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        kind = kinds.get(name)
        declared = spec.attributes.get(name)
        if declared is None:
            close = lowered.get(name.lower()) or _closest(spec.name, name)
            hint = f"; did you mean {close}?" if close else ""
            check.warn(join("", name), "unknown-attribute", f"{name!r} is not defined by {spec.name}{hint}", close)
        elif kind is not None and kind != declared.ngsi_type and not _compatible(declared.ngsi_type, kind, spec, name):
            check.warn(join("", name), "ngsi-type", f"{spec.name} declares {name!r} as a {declared.ngsi_type}, "
                       f"not a {kind}", declared.ngsi_type)
        multi = isinstance(value, list) and value and all(_is_attribute_object(v) for v in value)
        for index, instance in enumerate(value if multi else [value]):
            projected, prefix, mode = _project(kind, instance)
            if multi:
                prefix = (index, *prefix)
            if isinstance(projected, str) and kind == "Relationship" and _wants_array(spec, name):
                # One target is a one-element list of targets: NGSI-LD allows either for 'object'.
                projected, mode = [projected], "wrap"
            values = [(projected, prefix)]
            if kind == "LanguageProperty" and isinstance(projected, dict) and projected and _wants_string(spec, name):
                # A LanguageProperty stands for a text attribute: every language's text is checked.
                values = [(text, (*prefix, tag)) for tag, text in projected.items()]
            for position, (item, item_prefix) in enumerate(values):
                if index == 0 and position == 0:
                    document[name] = item
                    prefixes[name] = (item_prefix, mode)
                else:
                    extra.append((name, item, item_prefix, mode))
        if declared is not None:
            _unit_warning(spec, name, value if multi else [value], check)
    # An attribute whose structure is already wrong would only repeat its error through the schema.
    broken = {p.pointer.split("/")[1] for p in check.errors if p.pointer.startswith("/")}

    def fresh(found: list[Problem]) -> list[Problem]:
        return [p for p in found if not p.pointer.startswith("/") or p.pointer.split("/")[1] not in broken]

    check.errors.extend(fresh(_schema_problems(spec, document, prefixes)))
    for name, item, item_prefix, mode in extra:
        variant = dict(document)
        variant[name] = item
        check.errors.extend(fresh(_schema_problems(spec, variant, {name: (item_prefix, mode)}, only=name)))


def _compatible(declared: str, kind: str, spec: schemas.ModelSpec, name: str) -> bool:
    """Richer NGSI-LD forms of what a model declares: a list of relationships, a text in languages,
    a relationship where the model keeps entity ids in a Property (Device.controlledAsset)."""
    if declared == "Relationship" and kind == "ListRelationship":
        return True
    if declared == "Property" and kind in ("Relationship", "ListRelationship") and _holds_entity_ids(spec, name):
        return True
    return declared == "Property" and kind == "LanguageProperty" and _wants_string(spec, name)


def _holds_entity_ids(spec: schemas.ModelSpec, name: str) -> bool:
    """True when the model's schema of ``name`` is an entity id or a list of them (a link in all but name)."""
    subschema = spec.schema.get("properties", {}).get(name)
    if isinstance(subschema, Mapping) and subschema.get("type") == "array":
        subschema = subschema.get("items")
    return isinstance(subschema, Mapping) and str(subschema.get("$ref", "")).endswith("/EntityId")


def _wants_string(spec: schemas.ModelSpec, name: str) -> bool:
    subschema = spec.schema.get("properties", {}).get(name)
    if not isinstance(subschema, Mapping):
        return False
    return subschema.get("type") == "string" or str(subschema.get("$ref", "")).endswith("/Text")


def _wants_array(spec: schemas.ModelSpec, name: str) -> bool:
    subschema = spec.schema.get("properties", {}).get(name)
    return isinstance(subschema, Mapping) and subschema.get("type") == "array"


_CONCENTRATION: Final = frozenset({"C62", "GQ", "M1"})
"""Dimensions that all say how much of a substance there is (ratios such as ppm, mass per volume):
converting between them needs a molar mass, so they are 'not convertible', never 'another quantity'."""


def _family(code: str) -> str | None:
    """The quantity a unit measures (the dimension's first code), concentrations merged; None if unknown."""
    dimension = _dimension(code)
    if dimension is None:
        return None
    first = next(iter(dimension))
    return "concentration" if first in _CONCENTRATION else first


CONVENTIONAL_UNITS: Final[Mapping[str, str]] = {"temperature": "CEL"}
"""Units the Smart Data Models use for an attribute when a model's schema names none (its text says
"Celsius" throughout): a temperature in kelvin is checked as one in any model."""


def _unit_warning(spec: schemas.ModelSpec, name: str, instances: list[Any], check: _Checker) -> None:
    """The unitCode against the model's unit: another quantity is an error; another unit of the same
    quantity is a warning (an error in strict mode, as a unit that cannot be converted)."""
    unit = spec.attributes[name].unit
    source = "" if unit is not None else " (the Smart Data Models convention)"
    unit = unit or CONVENTIONAL_UNITS.get(name)
    if unit is None:
        return
    for index, attr in enumerate(instances):
        code = attr.get("unitCode") if isinstance(attr, Mapping) else None
        if not isinstance(code, str) or code == unit or not is_uncefact(code):
            continue
        where = join("", name, *((index,) if len(instances) > 1 else ()), "unitCode")
        said = f"{spec.name} expresses {name!r} in {unit}{source}"
        theirs, ours = _family(code), _family(unit)
        if theirs is not None and ours is not None and theirs != ours:
            check.error(where, "unit-dimension", f"{said}: {code} measures another quantity", unit)
            continue
        try:
            convert(1.0, code, unit)
        except UnitError:
            check.warn(where, "unit-unconvertible", f"{said}, not {code}, and {code} cannot be converted to it",
                       unit)
            continue
        check.warn(where, "unit-mismatch", f"{said}, not {code} (convert the value to {unit})", unit)


def validate_batch(entities: Iterable[Any], *, strict: bool = False) -> list[Verdict]:
    """One verdict per entity, in order (``strict``: see :func:`validate_strict`)."""
    check = validate_strict if strict else validate
    return [check(item) for item in entities]


STRICT_RULES: Final = frozenset({"unknown-model", "unknown-attribute", "ngsi-type", "unit-mismatch",
                                 "unit-unconvertible"})
"""Warnings that strict mode turns into errors: an unknown entity type, an attribute the model does not
define or declares with another NGSI-LD type, a unit the model does not use (or cannot be converted)."""


def validate_strict(entity: Any) -> Verdict:
    """Validate as :func:`validate`, then hold the entity to its model: every finding of ``STRICT_RULES``
    is an error (what ``jonction validate --strict`` and a ``strict: true`` profile ask)."""
    return strict_verdict(validate(entity))


def strict_verdict(verdict: Verdict) -> Verdict:
    """``verdict`` with the warnings of ``STRICT_RULES`` promoted to errors."""
    promoted = tuple(_with_model_hint(w) for w in verdict.warnings if w.rule in STRICT_RULES)
    if not promoted:
        return verdict
    errors = verdict.errors + promoted
    warnings = tuple(w for w in verdict.warnings if w.rule not in STRICT_RULES)
    return Verdict(False, verdict.entity_id, verdict.entity_type, errors, warnings)


def _with_model_hint(problem: Problem) -> Problem:
    """An unknown type names the bundled model it is closest to (AirQualityObservation → AirQualityObserved)."""
    if problem.rule != "unknown-model" or problem.expected is not None:
        return problem
    match = re.search(r"type '([^']+)'", problem.message)
    close = difflib.get_close_matches(match.group(1), list(schemas.MODELS), n=1, cutoff=0.75) if match else []
    hint = f"; did you mean {close[0]}?" if close else ""
    return Problem(problem.pointer, problem.rule, problem.message + hint, close[0] if close else
                   "a type with a bundled Smart Data Model")


@functools.lru_cache(maxsize=4096)
def _closest(model_name: str, attribute: str) -> str | None:
    """The model's attribute nearest to an unknown name (cached: difflib costs about a millisecond)."""
    names = list(schemas.model(model_name).attributes)
    return next(iter(difflib.get_close_matches(attribute, names, n=1, cutoff=0.8)), None)


# --------------------------------------------------------------------------- the valid-entity fast path
#
# Almost every entity the gateway sees is valid and has the shape its device always sends: a dict of
# Property / GeoProperty / Relationship objects named after the model's attributes. For those, one
# pass per attribute checks exactly what the reference path (``_scan`` → ``_Checker`` →
# ``_fast_verdict``) would, and builds the keyValues document for the model's compiled predicate.
# It only ever answers "valid, no warning" or "don't know": anything unusual (a missing member, a
# concise or multi-instance attribute, a unit other than the model's, a bad time, deep nesting...)
# returns ``_NO`` and the reference path decides, with its exact errors and pointers.

_NO: Final = object()
"""The fast path's "don't know": the reference path decides."""
_FAST_DEPTH: Final = 24
"""Nesting the fast path follows inside a value; deeper values go to the reference path (limit 128)."""
_META_TIMES: Final = frozenset({"observedAt", "createdAt", "modifiedAt", "deletedAt"})
_SIMPLE_KINDS: Final[Mapping[str, str]] = {"Property": "value", "GeoProperty": "value", "Relationship": "object"}


def _pure(value: Any, depth: int = 0) -> bool:
    """True when ``value`` holds only finite 64-bit numbers, valid text and shallow nesting (as ``_clean``)."""
    kind = type(value)
    if kind is str:
        return bool(value.isascii() or _SURROGATE.search(value) is None)
    if kind is float:
        return bool(value - value == 0.0)
    if kind is int:
        return bool(-INTEGER_RANGE <= value < INTEGER_RANGE)
    if kind is bool or value is None:
        return True
    if depth >= _FAST_DEPTH:
        return False
    if kind is dict:
        return all(_pure(item, depth + 1) for item in value.values())
    if kind is list:
        return all(_pure(item, depth + 1) for item in value)
    return False


def _point(value: Any) -> bool:
    """A plain WGS84 GeoJSON Point (no bbox, no other member): the geometry nearly every device sends."""
    if type(value) is not dict or len(value) != 2 or value.get("type") != "Point":
        return False
    position = value.get("coordinates")
    if type(position) is not list or not 2 <= len(position) <= 3:
        return False
    for number in position:
        kind = type(number)
        if kind is float:
            if number - number != 0.0:
                return False
        elif kind is not int or not -INTEGER_RANGE <= number < INTEGER_RANGE:
            return False
    return bool(-180 <= position[0] <= 180 and -90 <= position[1] <= 90)


_TIMES: dict[str, bool] = {}
"""Date-times already judged (one uplink stamps its entities with the same time)."""


def _time_ok(value: str) -> bool:
    """True when ``parse_time`` accepts ``value`` and it is valid Unicode (remembered, bounded)."""
    ok = _TIMES.get(value)
    if ok is None:
        ok = value.isascii() or _SURROGATE.search(value) is None
        if ok:
            try:
                parse_time(value)
            except ModelError:
                ok = False
        if len(_TIMES) >= _MEMO_SIZE:
            _TIMES.clear()
        _TIMES[value] = ok
    return ok


def _fast_instance(attr: dict[str, Any], depth: int) -> tuple[str, Any] | None:
    """(NGSI-LD type, value) of one attribute object the reference path would find no fault in, or None.

    Covers Property, GeoProperty and Relationship with the usual members and sub-attributes.
    """
    kind = attr.get("type")
    key = _SIMPLE_KINDS.get(kind) if type(kind) is str else None
    if key is None:
        return None
    found: Any = _NO
    for member, value in attr.items():
        if member == "type":
            continue
        if member == key:
            if value is None:
                return None
            if kind == "Property":
                # Scalars inline (what almost every value is); containers walked by _pure.
                scalar = type(value)
                if scalar is float:
                    if value - value != 0.0:
                        return None
                elif scalar is str:
                    if not value.isascii() and _SURROGATE.search(value):
                        return None
                elif scalar is int:
                    if not -INTEGER_RANGE <= value < INTEGER_RANGE:
                        return None
                elif not _pure(value, depth + 2):
                    return None
            elif kind == "Relationship":
                if type(value) is str:
                    if not is_uri(value) or not _pure(value):
                        return None
                elif type(value) is list:
                    if not all(type(t) is str and is_uri(t) and _pure(t) for t in value):
                        return None
                else:
                    return None
            elif kind == "GeoProperty":
                if not _point(value):
                    check = _Checker()
                    check.geometry(value, "")
                    if check.errors or not _pure(value, depth + 2):
                        return None
            found = value
        elif member in _META_TIMES:
            if type(value) is not str or not _time_ok(value):
                return None
        elif member == "unitCode":
            if type(value) is not str or value not in CODES:
                return None
        elif member == "datasetId":
            if type(value) is not str or not is_uri(value) or not _pure(value):
                return None
        elif member in ATTRIBUTE_MEMBERS:
            return None  # another member (instanceId, a second value member...): the reference path decides
        else:  # a sub-attribute
            if type(value) is not dict or depth >= _MAX_NESTING or _fast_instance(value, depth + 1) is None:
                return None
    if found is _NO:
        return None
    return str(kind), found


@dataclass(frozen=True, slots=True)
class _FastAttribute:
    """What the fast path needs about one attribute of a model."""

    ngsi_type: str
    unit: str | None
    wrap: bool
    link: bool


@dataclass(frozen=True, slots=True)
class _FastModel:
    """A model's attribute table and compiled predicates, for the fast path.

    ``members`` holds one predicate per schema property when the schema is the flat
    ``{type: object, required, properties}`` our models are: the document is then valid exactly when
    every required member is present and every member satisfies its own predicate, so the document
    need not be built. Otherwise ``members`` is None and the whole-document ``predicate`` is asked.
    """

    name: str
    predicate: Callable[[Any], bool]
    attributes: Mapping[str, _FastAttribute]
    members: Mapping[str, Callable[[Any], bool]] | None
    required: tuple[str, ...]
    memo: dict[tuple[str, Any], bool]


_MEMBER_COMPILER: Final = Compiler(schemas.REGISTRY, schemas.FORMAT_CHECKER.conforms)
"""Compiles the members of model schemas (its own memo, so the shared compiled-check cache stays small)."""
_FLAT_KEYS: Final = frozenset({"$schema", "$id", "title", "description", "type", "required", "properties"})
_MEMO_SIZE: Final = 8192
"""Remembered (member, text) verdicts per model: ids and enumerations repeat, device after device."""


def _member_predicates(schema: Mapping[str, Any]) -> Mapping[str, Callable[[Any], bool]] | None:
    """One compiled predicate per property of a flat object schema (None: not flat, or not compilable)."""
    if schema.get("type") != "object" or not all(k in _FLAT_KEYS or k.startswith("x-") for k in schema):
        return None
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(properties, Mapping) or not isinstance(required, list):
        return None
    base = schema.get("$id", "")
    out: dict[str, Callable[[Any], bool]] = {}
    for name, subschema in properties.items():
        if not isinstance(subschema, Mapping):
            return None
        # Compiled against the model's base URI, exactly as the whole schema's "properties" compiles it.
        predicate = _MEMBER_COMPILER.compile(subschema, str(base))
        if predicate is None:
            return None
        out[name] = predicate
    return out


_FAST_MODELS: dict[str, _FastModel | None] = {}


def _fast_model(name: str) -> _FastModel | None:
    """The fast-path table of model ``name`` (None: no bundled model, or its schema has no predicate)."""
    if name in _FAST_MODELS:
        return _FAST_MODELS[name]
    found: _FastModel | None = None
    if name in schemas.MODELS:
        info = _info(schemas.model(name))
        if info.predicate is not None:
            spec = info.spec
            table = {
                attribute: _FastAttribute(
                    declared.ngsi_type,
                    declared.unit or CONVENTIONAL_UNITS.get(attribute),
                    attribute in info.array_relationships,
                    attribute in info.links,
                )
                for attribute, declared in spec.attributes.items()
                if attribute not in ENTITY_MEMBERS
            }
            members = _member_predicates(spec.schema)
            required = tuple(str(r) for r in spec.schema.get("required", ()))
            found = _FastModel(spec.name, info.predicate, table, members, required, {})
    _FAST_MODELS[name] = found
    return found


def _fast_validate(entity: dict[str, Any]) -> Verdict | None:
    """The verdict of a valid entity of a bundled model with the usual shape, or None ("don't know")."""
    entity_id = entity.get("id")
    entity_type = entity.get("type")
    if type(entity_id) is not str or type(entity_type) is not str or not is_uri(entity_id):
        return None
    if not entity_id.isascii() and _SURROGATE.search(entity_id):
        return None
    model = _fast_model(entity_type)
    if model is None:
        return None
    attributes = model.attributes
    members = model.members
    if members is not None:
        return _fast_members(model, members, entity, entity_id, entity_type)
    document: dict[str, Any] = {"id": entity_id, "type": model.name}
    for name, value in entity.items():
        declared = attributes.get(name)
        if declared is None:
            if name == "id" or name == "type":
                continue
            return None  # unknown attribute, @context, scope, entity times...: the reference path
        projected = _fast_projection(declared, value)
        if projected is _NO:
            return None
        document[name] = projected
    if not model.predicate(document):
        return None
    return Verdict(True, entity_id, entity_type, (), ())


def _fast_projection(declared: _FastAttribute, value: Any) -> Any:
    """The keyValues value of one attribute the reference path would accept unchanged, or ``_NO``."""
    if type(value) is not dict:
        return _NO
    found = _fast_instance(value, 0)
    if found is None:
        return _NO
    kind, projected = found
    if kind != declared.ngsi_type and not (kind == "Relationship" and declared.link):
        return _NO
    if declared.unit is not None:
        code = value.get("unitCode")
        if code is not None and code != declared.unit:
            return _NO
    if type(projected) is dict and "@value" in projected:
        return _NO
    if kind == "Relationship" and declared.wrap and type(projected) is str:
        return [projected]
    return projected


def _member_ok(model: _FastModel, check: Callable[[Any], bool], name: str, value: Any) -> bool:
    """``check(value)``, remembered for text and lists of text (the values that repeat and cost formats)."""
    kind = type(value)
    if kind is str:
        key: tuple[str, Any] = (name, value)
    elif kind is list and all(type(v) is str for v in value):
        key = (name, ("list", *value))
    else:
        return check(value)
    memo = model.memo
    hit = memo.get(key)
    if hit is None:
        hit = check(value)
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = hit
    return hit


def _fast_members(
    model: _FastModel, members: Mapping[str, Callable[[Any], bool]], entity: dict[str, Any],
    entity_id: str, entity_type: str,
) -> Verdict | None:
    """``_fast_validate`` for a flat schema: each member checked on its own, no document built."""
    attributes = model.attributes
    for name in model.required:
        if name not in entity and name != "type":
            return None
    check = members.get("id")
    if check is not None and not _member_ok(model, check, "id", entity_id):
        return None
    check = members.get("type")
    if check is not None and not _member_ok(model, check, "type", model.name):
        return None
    for name, value in entity.items():
        declared = attributes.get(name)
        if declared is None:
            if name == "id" or name == "type":
                continue
            return None
        projected = _fast_projection(declared, value)
        if projected is _NO:
            return None
        check = members.get(name)
        if check is not None:
            kind = type(projected)
            if kind is str or kind is list:
                if not _member_ok(model, check, name, projected):
                    return None
            elif not check(projected):
                return None
    return Verdict(True, entity_id, entity_type, (), ())
