"""The declarative mapping engine: a small YAML language from vendor documents to NGSI-LD entities.

A mapping names the entity type, an id template, where the items are (JMESPath), and for each
attribute where its value is and how to clean it (value map, type, scale, unit, CRS, time,
``epoch: s|ms``), or a constant (a static attribute). A push's query parameters and headers are
read with ``$query.<name>`` and ``$headers.<name>`` from the context the transport gives.
``compile_mapping`` checks a mapping once — static attributes included, built there — and reports
every problem together, each named by the JSON pointer of its key; ``apply_mapping`` is then a pure
function of the document (and of the push context).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jmespath
import jsonschema
import yaml
from jmespath.exceptions import JMESPathError
from jmespath.visitor import Options, TreeInterpreter

import schemas
from adapters.kit.payload import INT_MAX, INT_MIN, load_json
from gateway.crs import point_from, to_wgs84
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import Entity, ModelError, epoch_time, format_time, is_uri, urn
from gateway.pointer import pointer
from gateway.units import UNIT_ALIASES, UnitError, convert, is_uncefact

MAPPING_SCHEMA: Final[Mapping[str, Any]] = json.loads(
    files(__package__).joinpath("mapping.schema.json").read_text(encoding="utf-8")
)
"""The JSON Schema every mapping document must follow."""

# The unreserved and sub-delimiter characters RFC 8141 allows in a URN's NSS; "/" is escaped so
# that an id never looks like a path to brokers that route on it (as gateway.model.urn does).
_NSS_SAFE: Final = "-._~!$&'()*+,;=:@"
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
_NGSI_URN: Final = re.compile(r"^urn:ngsi-ld:([A-Za-z0-9_\-]+):(.*)$", re.S)
_SIMPLE_PATH: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_DECIMAL_COMMA: Final = re.compile(r"^[+-]?\d+,\d+$")
_LONG_FRACTION: Final = re.compile(r"(\.\d{7,})")
_TRUE: Final = frozenset({"true", "1", "yes", "oui", "vrai", "y", "o"})
_FALSE: Final = frozenset({"false", "0", "no", "non", "faux", "n"})
_SOURCES: Final = ("select", "value", "point", "geometry")
_WGS84: Final = "EPSG:4326"
# $query.<parameter> and $headers.<header name> (an HTTP token, RFC 9110).
_CONTEXT_SELECTOR: Final = re.compile(r"^\$(query|headers)\.([!#$%&'*+.^_`|~0-9A-Za-z-]+)$")
_SECRET_NAME: Final = re.compile(
    r"authorization|authentication|cookie|signature|token|secret|password|passwd|api[-_]?key|credential|session",
    re.IGNORECASE,
)
"""Header and query names a mapping may not read: credentials must never reach entities or dead letters."""
_NO_CONTEXT: Final[Mapping[str, str]] = {}
_ABSENT: Final[Mapping[str, Any]] = {}
_SCALARS: Final = frozenset({str, int, float, bool})
"""JSON scalar types, tested by ``type()`` before the dearer Mapping ABC check on hot paths."""


# One interpreter for every search: jmespath builds a new one per call otherwise, which costs
# more than most mapping expressions themselves.
_INTERPRETER: Final = TreeInterpreter(Options())


def context_key(text: str) -> str | None:
    """The push-context key a ``$query.<name>`` / ``$headers.<name>`` selector reads, else None.

    Header names are case-insensitive (RFC 9110), so their key is lower-cased; a query parameter
    name is kept as written. The key is also the ``RawMessage.metadata`` key a transport fills.
    """
    match = _CONTEXT_SELECTOR.match(text)
    if match is None:
        return None
    scope, name = match.groups()
    return f"headers.{name.lower()}" if scope == "headers" else f"query.{name}"


class Selector:
    """A compiled JMESPath expression; plain dotted paths take a direct, faster route.

    ``$query.<name>`` and ``$headers.<name>`` are not JMESPath: they read the push's query
    string and headers from the context a transport gives (``RawMessage.metadata``).
    """

    __slots__ = ("_keys", "_tree", "context", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.context: str | None = context_key(text)
        """The push-context key this selector reads (``query.i``, ``headers.fiware-service``), else None."""
        if self.context is not None:
            self._tree: Any = None
            self._keys: tuple[str, ...] | None = None
            return
        if text.startswith("$"):
            raise JMESPathError(f"{text!r}: only $query.<name> and $headers.<name> start with $")
        compiled = jmespath.compile(text)  # raises JMESPathError on a bad expression
        self._tree = compiled.parsed
        self._keys = () if text == "@" else tuple(text.split(".")) if _SIMPLE_PATH.match(text) else None

    def search(self, value: Any, context: Mapping[str, str] = _NO_CONTEXT) -> Any:
        """Evaluate on ``value`` (None when the path does not exist); context selectors read ``context``."""
        # Documents are parsed JSON, so a dict: the type test spares the Mapping ABC check (~10x dearer).
        if self.context is not None:
            return context.get(self.context)
        if self._keys is None:
            return _INTERPRETER.visit(self._tree, value)
        for key in self._keys:
            if type(value) is not dict and not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 booleans: vendor codes such as ON, OFF, NO stay strings."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_json(data: str | bytes) -> Any:
    """``json.loads`` that reports absurd nesting as a ValueError like any other bad JSON."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _embedded_json(text: str) -> Any:
    """JSON carried in a string value, as strictly as a payload (no NaN, huge numbers, surrogates)."""
    try:
        return load_json(text, what="JSON text")
    except TranslationError as exc:
        raise ValueError(f"{exc.reason} (at {exc.pointer or 'its root'})") from None


def load_yaml(text: str) -> Any:
    """Parse YAML with YAML 1.2 booleans (only true/false), so that ``ON:`` stays the string ON."""
    return yaml.load(text, Loader=_Yaml12Loader)


# --------------------------------------------------------------------------- compiled form


@dataclass(frozen=True, slots=True)
class TimeSpec:
    """Where an item's time is, and how to read it."""

    expr: Selector
    text: str
    fmt: str | None = None
    epoch: str | None = None
    timezone: ZoneInfo | None = None


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One compiled attribute rule."""

    name: str
    ngsi_type: str
    source: str
    select: Selector | None = None
    select_text: str = ""
    constant: Any = None
    point: Mapping[str, Selector] = field(default_factory=dict)
    crs: str = _WGS84
    required: bool = False
    has_default: bool = False
    default: Any = None
    pattern: re.Pattern[str] | None = None
    value_map: Mapping[str, Any] | None = None
    has_map_default: bool = False
    map_default: Any = None
    coerce: str | None = None
    scale: float | None = None
    offset: float | None = None
    from_unit: str | None = None
    unit: str | None = None
    digits: int | None = None
    template: str | None = None
    epoch: str | None = None
    """``s`` or ``ms``: the value is a POSIX time, written as an RFC 3339 UTC date-time."""
    observed_at: TimeSpec | None = None
    inherit_time: bool = True
    null_values: frozenset[str] = frozenset()
    lang: str | None = None
    static: Mapping[str, Any] | None = None
    """A constant attribute built at compile time (empty when it is never present); copied per entity."""


@dataclass(frozen=True, slots=True)
class EntityMapping:
    """A checked mapping, ready to apply; build it with ``compile_mapping`` or ``load_mapping``."""

    entity_type: str
    id_template: str
    id_parts: tuple[tuple[str, Selector | None], ...]
    items: Selector
    items_text: str
    attributes: tuple[AttributeSpec, ...]
    tenant: Selector | None = None
    timezone: ZoneInfo | None = None
    observed_at: TimeSpec | None = None
    document: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, str] = field(default_factory=dict)
    """Push-context keys the mapping reads (``query.i``, ``headers.fiware-service``) -> where (JSON pointer)."""


# --------------------------------------------------------------------------- compiling


def _schema_problems(doc: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(MAPPING_SCHEMA)
    problems = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        problems.append(f"{json_pointer(*error.absolute_path) or '/'}: {error.message}")
    return problems


def json_pointer(*parts: str | int) -> str:
    """RFC 6901 pointer of a key path (``/attributes/location/value``); "" for the root."""
    return pointer(parts)


def _compile_expr(text: Any, where: str, problems: list[str], *, context: bool = True) -> Selector | None:
    if not isinstance(text, str):
        return None
    try:
        selector = Selector(text)
    except JMESPathError as exc:
        problems.append(f"{where}: {text!r} is not a valid JMESPath expression ({_one_line(exc)})")
        return None
    if selector.context is None:
        return selector
    if not context:
        problems.append(f"{where}: {text!r} reads the push's query string or headers, which only an item's "
                        "values, id, tenant and times may do")
        return None
    if _SECRET_NAME.search(selector.context.split(".", 1)[1]):
        problems.append(f"{where}: {text!r} names a credential; authentication headers and parameters are "
                        "never given to a mapping (nor kept with the message)")
        return None
    return selector


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _zone(name: Any, where: str, problems: list[str]) -> ZoneInfo | None:
    if not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{where}: unknown time zone {name!r} (use an IANA name such as Europe/Paris)")
        return None


def _time_spec(raw: Any, where: str, problems: list[str]) -> TimeSpec | None:
    if isinstance(raw, str):
        expr = _compile_expr(raw, where, problems)
        return TimeSpec(expr, raw) if expr is not None else None
    if isinstance(raw, Mapping):
        expr = _compile_expr(raw.get("select"), f"{where}/select", problems)
        zone = _zone(raw.get("timezone"), f"{where}/timezone", problems)
        if expr is None:
            return None
        return TimeSpec(expr, str(raw["select"]), raw.get("format"), raw.get("epoch"), zone)
    return None


def _model_types(entity_type: str) -> Mapping[str, str]:
    """NGSI-LD attribute types the Smart Data Model declares; none for a type without a bundled schema.

    A mapping may target a type jonction bundles no schema for (a vendor's own model): its
    attributes then default to Property unless the mapping says otherwise.
    """
    if entity_type not in schemas.MODELS:
        return {}
    return schemas.ngsi_types(entity_type)


def _check_unit(from_unit: str | None, unit: str | None, where: str, problems: list[str]) -> str | None:
    if from_unit is None:
        return None
    code = UNIT_ALIASES.get(from_unit, from_unit)
    if not is_uncefact(code):
        problems.append(f"{where}/from_unit: unknown unit {from_unit!r}")
        return None
    if unit is None:
        problems.append(f"{where}/from_unit: needs unit (the UN/CEFACT code to convert to)")
        return code
    try:
        convert(1.0, code, UNIT_ALIASES.get(unit, unit))
    except UnitError as exc:  # unknown target unit, or no linear conversion between the two
        problems.append(f"{where}: cannot convert {from_unit!r} to {unit!r} ({_one_line(exc)})")
    return code


def _check_crs(crs: str, where: str, problems: list[str]) -> None:
    if crs == _WGS84:
        return
    import pyproj

    try:
        pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError:
        problems.append(f"{where}/crs: unknown coordinate reference system {crs!r}")


def _map_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _attribute(
    name: str, raw: Mapping[str, Any], model: Mapping[str, str], nulls: frozenset[str], problems: list[str]
) -> AttributeSpec:
    where = json_pointer("attributes", name)
    given = [key for key in _SOURCES if key in raw]
    if len(given) != 1:
        problems.append(
            f"{where}: give exactly one of select, value, point or geometry (found {', '.join(given) or 'none'})"
        )
    source = given[0] if given else "value"
    geometric = source in ("point", "geometry")
    ngsi_type = raw.get("type") or ("GeoProperty" if geometric else model.get(name, "Property"))
    if ngsi_type not in ("Property", "Relationship", "GeoProperty", "LanguageProperty", "ListProperty", "JsonProperty"):
        ngsi_type = "Property"
    if geometric and ngsi_type != "GeoProperty":
        problems.append(f"{where}/type: point and geometry build a GeoProperty, not a {ngsi_type}")
    if "lang" in raw and ngsi_type != "LanguageProperty":
        problems.append(f"{where}/lang: only meaningful with type: LanguageProperty")
    if "crs" in raw and not geometric and not (source == "value" and ngsi_type == "GeoProperty"):
        problems.append(f"{where}/crs: only meaningful with point, geometry or a constant GeoProperty value")
    point: dict[str, Selector] = {}
    if source == "point" and isinstance(raw.get("point"), Mapping):
        keys = set(raw["point"])
        if keys not in ({"x", "y"}, {"xy"}):
            problems.append(f"{where}/point: give either x and y, or xy")
        for key in sorted(keys):
            expr = _compile_expr(raw["point"][key], f"{where}/point/{key}", problems)
            if expr is not None:
                point[key] = expr
    select_text = str(raw.get("select") or raw.get("geometry") or "")
    if source == "point" and isinstance(raw.get("point"), Mapping):
        select_text = ", ".join(str(raw["point"][k]) for k in ("x", "y", "xy") if k in raw["point"])
    select = (
        _compile_expr(raw.get(source), f"{where}/{source}", problems) if source in ("select", "geometry") else None
    )
    crs = str(raw.get("crs", _WGS84))
    if "crs" in raw:
        _check_crs(crs, where, problems)
    pattern = None
    if "pattern" in raw:
        try:
            pattern = re.compile(str(raw["pattern"]))
        except re.error as exc:
            problems.append(f"{where}/pattern: not a regular expression ({exc})")
    value_map = None
    if isinstance(raw.get("map"), Mapping):
        value_map = {_map_key(k): v for k, v in raw["map"].items()}
    if "map_default" in raw and value_map is None:
        problems.append(f"{where}/map_default: only meaningful with map")
    numeric = any(k in raw for k in ("scale", "offset", "from_unit", "round"))
    if numeric and ngsi_type != "Property":
        problems.append(f"{where}: scale, offset, from_unit and round apply to a Property's number")
    if "unit" in raw and ngsi_type != "Property":
        problems.append(f"{where}/unit: a unitCode belongs to a Property")
    from_unit = _check_unit(raw.get("from_unit"), raw.get("unit"), where, problems)
    if "unit" in raw and not is_uncefact(raw["unit"]):
        problems.append(f"{where}/unit: {raw['unit']!r} is not a UN/CEFACT common code (e.g. KWH, WTT, CEL)")
    epoch = raw.get("epoch")
    if epoch is not None:
        # A POSIX time becomes an RFC 3339 date-time text: nothing numeric may follow it.
        if raw.get("as", "datetime") != "datetime":
            problems.append(f"{where}/epoch: builds a date-time, which contradicts as: {raw['as']}")
        clashes = [k for k in ("scale", "offset", "from_unit", "unit", "round", "template") if k in raw]
        if clashes:
            problems.append(f"{where}/epoch: cannot be combined with {', '.join(clashes)} (the value becomes a "
                            "date-time text)")
        if ngsi_type != "Property" or geometric:
            problems.append(f"{where}/epoch: a date-time is the value of a Property, not a {ngsi_type}")
    observed_raw = raw.get("observed_at")
    observed = _time_spec(observed_raw, f"{where}/observed_at", problems) if observed_raw is not False else None
    return AttributeSpec(
        name=name,
        ngsi_type=ngsi_type,
        source=source,
        select=select,
        select_text=select_text,
        constant=raw.get("value"),
        point=point,
        crs=crs,
        required=bool(raw.get("required", False)),
        has_default="default" in raw,
        default=raw.get("default"),
        pattern=pattern,
        value_map=value_map,
        has_map_default="map_default" in raw,
        map_default=raw.get("map_default"),
        coerce=raw.get("as"),
        scale=raw.get("scale"),
        offset=raw.get("offset"),
        from_unit=from_unit,
        unit=raw.get("unit"),
        digits=raw.get("round"),
        template=raw.get("template"),
        epoch=epoch,
        observed_at=observed,
        inherit_time=observed_raw is not False,
        null_values=nulls | {_map_key(v) for v in raw.get("null_values", ())},
        lang=raw.get("lang"),
    )


def _static(spec: AttributeSpec, zone: ZoneInfo | None, problems: list[str]) -> AttributeSpec:
    """Build a constant attribute once, at compile time: a bad constant is a config problem, not a dead letter."""
    if spec.source != "value":
        return spec
    where = json_pointer("attributes", spec.name, "value")
    try:
        built = _build(spec, _value(spec, None, zone), None)
    except _Skip:
        if spec.required:
            problems.append(f"{where}: a required attribute needs a constant value (or a default)")
        return replace(spec, static=_ABSENT)
    except (ValueError, TypeError, ArithmeticError) as exc:  # ModelError and CRSError are ValueErrors
        problems.append(f"{where}: {_one_line(exc)}")
        return spec
    try:
        json.dumps(built, allow_nan=False)
    except ValueError as exc:
        problems.append(f"{where}: {_one_line(exc)}")
        return spec
    return replace(spec, static=built)


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _copy(v) if isinstance(v, dict | list) else v for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) if isinstance(v, dict | list) else v for v in value]
    return value


def _id_parts(template: str, problems: list[str]) -> tuple[tuple[str, Selector | None], ...]:
    parts: list[tuple[str, Selector | None]] = []
    cursor = 0
    for match in _PLACEHOLDER.finditer(template):
        parts.append((template[cursor : match.start()], None))
        text = match.group(1).strip()
        if not text:
            problems.append("/id: empty placeholder {} (name the field, e.g. {identificador})")
        expr = _compile_expr(text, f"/id: placeholder {{{text}}}", problems) if text else None
        if expr is not None:
            parts.append((text, expr))
        cursor = match.end()
    parts.append((template[cursor:], None))
    if not any(expr is not None for _, expr in parts) and not problems:
        problems.append("/id: the template has no {placeholder}, so every item would get the same id")
    literal = "".join(text for text, expr in parts if expr is None)
    if "{" in literal or "}" in literal:
        problems.append("/id: unbalanced braces in the template")
    if not template.startswith(("urn:", "http://", "https://")):
        problems.append("/id: the template must build a URI, e.g. urn:ngsi-ld:Streetlight:{id}")
    return tuple(parts)


def compile_mapping(doc: Any) -> EntityMapping:
    """Check a mapping document and compile it; ConfigInvalid lists every problem, naming the key."""
    problems = _schema_problems(doc)
    if problems or not isinstance(doc, Mapping):
        raise ConfigInvalid("invalid mapping", problems or ["/: a mapping must be an object"])
    entity_type = str(doc["entity_type"])
    model = _model_types(entity_type)
    id_parts = _id_parts(str(doc["id"]), problems)
    items_text = str(doc.get("items", "@"))
    items = _compile_expr(items_text, "/items", problems, context=False)
    tenant = _compile_expr(doc.get("tenant"), "/tenant", problems)
    zone = _zone(doc.get("timezone"), "/timezone", problems)
    observed = _time_spec(doc.get("observed_at"), "/observed_at", problems)
    nulls = frozenset(_map_key(v) for v in doc.get("null_values", ()))
    attributes = tuple(_attribute(name, raw, model, nulls, problems) for name, raw in doc["attributes"].items())
    if problems or items is None:
        raise ConfigInvalid("invalid mapping", problems)
    attributes = tuple(_static(spec, zone, problems) for spec in attributes)
    if problems:
        raise ConfigInvalid("invalid mapping", problems)
    return EntityMapping(
        entity_type=entity_type,
        id_template=str(doc["id"]),
        id_parts=id_parts,
        items=items,
        items_text=items_text,
        attributes=attributes,
        tenant=tenant,
        timezone=zone,
        observed_at=observed,
        document=dict(doc),
        context=_context_uses(tenant, observed, id_parts, attributes),
    )


def _context_uses(
    tenant: Selector | None,
    observed: TimeSpec | None,
    id_parts: tuple[tuple[str, Selector | None], ...],
    attributes: tuple[AttributeSpec, ...],
) -> dict[str, str]:
    """Every push-context key the mapping reads, with the JSON pointer of (one) place that reads it."""
    uses: list[tuple[Selector | None, str]] = [(expr, "/id") for _, expr in id_parts]
    uses.append((tenant, "/tenant"))
    uses.append((observed.expr if observed else None, "/observed_at"))
    for spec in attributes:
        where = json_pointer("attributes", spec.name)
        uses.append((spec.select, f"{where}/{spec.source}"))
        uses += [(expr, f"{where}/point/{key}") for key, expr in spec.point.items()]
        uses.append((spec.observed_at.expr if spec.observed_at else None, f"{where}/observed_at"))
    found: dict[str, str] = {}
    for selector, where in uses:
        if selector is not None and selector.context is not None:
            found.setdefault(selector.context, where)
    return found


def load_mapping(source: str | Path | Mapping[str, Any]) -> EntityMapping:
    """Compile a mapping given inline (an object) or as a YAML/JSON file path."""
    if isinstance(source, Mapping):
        return compile_mapping(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(f"cannot read mapping file {path}", [f"/mapping_file: {exc.strerror}: {path}"]) from exc
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigInvalid(f"mapping file {path} is not YAML", [f"{path}: {_one_line(exc)}"]) from exc
    try:
        return compile_mapping(doc)
    except ConfigInvalid as exc:
        raise ConfigInvalid(f"invalid mapping {path}", exc.problems) from exc


# --------------------------------------------------------------------------- applying


class _Skip(Exception):
    """The attribute has no value for this item and is left out."""


def _problem(where: str, spec: AttributeSpec, message: str) -> str:
    selector = f" (select {spec.select_text!r})" if spec.select_text else ""
    return f"{where}: attribute {spec.name!r}{selector}: {message}"


def _to_number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        return _storable(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:  # no quantity is written with more digits; int() of thousands of them is slow
            raise ValueError(f"{value[:20]!r}... is not a number")
        if _DECIMAL_COMMA.match(text):
            text = text.replace(",", ".")
        try:
            return _storable(int(text))
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if math.isfinite(number):
            return number
    raise ValueError(f"{value!r} is not a number")


def _storable(number: float | int) -> float | int:
    """``number`` if a store can keep it: finite, and within 64 bits for an integer."""
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError(f"{number!r} is not a finite number")
    if isinstance(number, int) and not INT_MIN <= number <= INT_MAX:
        raise ValueError("integer is outside 64 bits")
    return number


def _clean(number: float | int) -> float | int:
    """Drop binary noise (0.57000000000000001) left by scaling; keeps 12 significant digits."""
    if isinstance(number, int):
        return _storable(number)
    return _storable(float(f"{number:.12g}"))


def parse_time(value: Any, spec: TimeSpec | None, default_zone: ZoneInfo | None) -> str:
    """Read a source time (ISO 8601, strptime format or epoch) and return RFC 3339 UTC."""
    epoch = spec.epoch if spec else None
    if epoch is not None:
        return _epoch(value, epoch)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a date-time text (set epoch: s or ms for numbers)")
    text = value.strip()
    fmt = spec.fmt if spec else None
    if fmt is None:
        # Go and Java clocks write up to nanoseconds; Python reads at most microseconds.
        text = _LONG_FRACTION.sub(lambda m: m.group(1)[:7], text)
    try:
        moment = datetime.strptime(text, fmt) if fmt else datetime.fromisoformat(text)
    except ValueError:
        expected = f"the format {fmt!r}" if fmt else "ISO 8601"
        raise ValueError(f"{value!r} does not follow {expected}") from None
    if moment.tzinfo is None:
        zone = (spec.timezone if spec else None) or default_zone
        if zone is None:
            raise ValueError(f"{value!r} has no time zone offset (set timezone, e.g. Europe/Paris)")
        moment = moment.replace(tzinfo=zone)
    return format_time(moment)


def _epoch(value: Any, unit: str) -> str:
    """A POSIX time in seconds (``s``) or milliseconds (``ms``) as RFC 3339 UTC; ValueError says why not."""
    try:
        number = _to_number(value)
    except ValueError:
        raise ValueError(f"{_short(value)} is not a number (epoch: {unit} reads POSIX time in "
                         f"{'seconds' if unit == 's' else 'milliseconds'})") from None
    seconds = float(number) / 1000 if unit == "ms" else float(number)
    try:
        return epoch_time(seconds)
    except ModelError:
        raise ValueError(f"{number!r} is out of range for epoch: {unit} (years 1 to 9999; "
                         f"{'ms given as s?' if unit == 's' else 'not milliseconds?'})") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _coerce(value: Any, kind: str, zone: ZoneInfo | None) -> Any:
    if kind == "number":
        return _to_number(value)
    if kind == "integer":
        number = _to_number(value)
        if isinstance(number, float):
            if not number.is_integer():
                raise ValueError(f"{value!r} is not an integer")
            number = _storable(int(number))
        return number
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = _map_key(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (true/false, oui/non, 1/0)")
    if kind == "string":
        return _map_key(value) if not isinstance(value, str) else value
    if kind == "json":
        if not isinstance(value, str):
            return value
        return _embedded_json(value)
    if kind == "datetime":
        return parse_time(value, None, zone)
    raise ValueError(f"unknown conversion {kind!r}")


def _escape(value: Any) -> str:
    return quote(_map_key(value), safe=_NSS_SAFE)


def _fill(template: str, value: Any) -> str:
    match = _NGSI_URN.match(template)
    if match and match.group(2) == "{}":
        return urn(match.group(1), _map_key(value))
    return template.replace("{}", _escape(value))


def _wgs84_point(x: Any, y: Any, crs: str) -> dict[str, Any]:
    fx, fy = float(_to_number(x)), float(_to_number(y))
    if crs == _WGS84:
        geometry: dict[str, Any] = {"type": "Point", "coordinates": [fx, fy]}
    else:
        geometry = dict(point_from(fx, fy, crs))
    return _checked_wgs84(geometry)


def _positions(coords: Any) -> Iterator[list[Any]]:
    if isinstance(coords, list) and coords and isinstance(coords[0], int | float):
        yield coords
    elif isinstance(coords, list):
        for sub in coords:
            yield from _positions(sub)


def _checked_wgs84(geometry: Mapping[str, Any]) -> dict[str, Any]:
    for position in _positions(geometry.get("coordinates")):
        lon, lat = position[0], position[1]
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise ValueError(f"coordinates {position[:2]} are outside WGS84 (is crs right?)")
    return dict(geometry)


def _blank_none(value: Any) -> Any:
    return None if value == "" else value


def _geometry(spec: AttributeSpec, item: Any, context: Mapping[str, str]) -> dict[str, Any]:
    if spec.source == "point":
        if "xy" in spec.point:
            pair = _blank_none(spec.point["xy"].search(item, context))
            if pair is None:
                raise _Skip
            if isinstance(pair, str):
                pair = _embedded_json(pair)
            if not isinstance(pair, list) or len(pair) < 2:
                raise ValueError(f"{pair!r} is not an [x, y] pair")
            return _wgs84_point(pair[0], pair[1], spec.crs)
        x, y = (_blank_none(spec.point[k].search(item, context)) for k in ("x", "y"))
        if x is None and y is None:
            raise _Skip
        if x is None or y is None:
            raise ValueError("only one of x and y is present")
        return _wgs84_point(x, y, spec.crs)
    assert spec.select is not None
    found = spec.select.search(item, context)
    if found is None:
        raise _Skip
    if not isinstance(found, Mapping) or not isinstance(found.get("type"), str):
        raise ValueError("not a GeoJSON geometry")
    if spec.crs == _WGS84:
        return _checked_wgs84(found)
    return _checked_wgs84(to_wgs84(dict(found), spec.crs))


def _drop_nulls(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _drop_nulls(v) if isinstance(v, Mapping) else v for k, v in value.items() if v is not None}


def _value(spec: AttributeSpec, item: Any, zone: ZoneInfo | None, context: Mapping[str, str] = _NO_CONTEXT) -> Any:
    if spec.source in ("point", "geometry"):
        return _geometry(spec, item, context)
    value = spec.constant if spec.source == "value" else spec.select.search(item, context) if spec.select else None
    if type(value) is dict or isinstance(value, Mapping):
        # A multiselect such as {street: calle, city: 'X'} yields null for absent fields: drop them.
        value = _drop_nulls(value) or None
    if value is None or value == "" or (spec.null_values and _map_key(value) in spec.null_values):
        if spec.has_default:
            value = spec.default
        elif spec.required:
            raise ValueError("required value is missing")
        else:
            raise _Skip
        if value is None:
            raise _Skip
    if spec.pattern is not None and not spec.pattern.fullmatch(_map_key(value)):
        raise ValueError(f"{value!r} does not match the pattern {spec.pattern.pattern!r}")
    if spec.value_map is not None:
        key = _map_key(value)
        if key in spec.value_map:
            value = spec.value_map[key]
        elif spec.has_map_default:
            value = spec.map_default
        else:
            known = ", ".join(sorted(spec.value_map))
            raise ValueError(f"{value!r} is not in the value map ({known})")
        if value is None:
            raise _Skip
    if spec.epoch is not None:
        return _epoch(value, spec.epoch)
    if spec.coerce is not None:
        value = _coerce(value, spec.coerce, zone)
    if spec.ngsi_type == "GeoProperty" and spec.source == "value":
        # A constant GeoJSON geometry (a static location): checked, and reprojected when crs says so.
        if not isinstance(value, Mapping):
            raise ValueError(f"{_short(value)} is not a GeoJSON geometry")
        return to_wgs84(value, spec.crs)
    if spec.scale is not None or spec.offset is not None or spec.from_unit is not None:
        number = _to_number(value)
        if spec.scale is not None:
            number = number * spec.scale
        if spec.offset is not None:
            number = number + spec.offset
        if spec.from_unit is not None and spec.unit is not None:
            number = convert(number, spec.from_unit, UNIT_ALIASES.get(spec.unit, spec.unit))
        value = _clean(number)
    if spec.digits is not None:
        value = _storable(round(_to_number(value), spec.digits))
    if spec.template is not None:
        value = _fill(spec.template, value)
    return value


def _build(spec: AttributeSpec, value: Any, observed: str | None) -> dict[str, Any]:
    if spec.ngsi_type == "Relationship":
        targets = value if isinstance(value, list) else [value]
        for target in targets:
            if not is_uri(target):
                raise ValueError(f"{target!r} is not a URI (add template: urn:ngsi-ld:<Type>:{{}})")
        attr: dict[str, Any] = (
            {"type": "ListRelationship", "objectList": [{"object": t} for t in targets]}
            if isinstance(value, list)
            else {"type": "Relationship", "object": value}
        )
    elif spec.ngsi_type == "GeoProperty":
        attr = {"type": "GeoProperty", "value": value}
    elif spec.ngsi_type == "LanguageProperty":
        if isinstance(value, Mapping):
            attr = {"type": "LanguageProperty", "languageMap": dict(value)}
        elif spec.lang is not None:
            attr = {"type": "LanguageProperty", "languageMap": {spec.lang: _map_key(value)}}
        else:
            raise ValueError("a LanguageProperty needs an object {lang: text} or lang: <tag>")
    elif spec.ngsi_type == "ListProperty":
        attr = {"type": "ListProperty", "valueList": value if isinstance(value, list) else [value]}
    elif spec.ngsi_type == "JsonProperty":
        attr = {"type": "JsonProperty", "json": value}
    else:
        attr = {"type": "Property", "value": value}
    if spec.unit is not None:
        attr["unitCode"] = spec.unit
    if observed is not None:
        attr["observedAt"] = observed
    return attr


def _time_of(spec: TimeSpec, item: Any, zone: ZoneInfo | None, context: Mapping[str, str]) -> str | None:
    found = spec.expr.search(item, context)
    if found is None or found == "":
        return None
    return parse_time(found, spec, zone)


def _entity_id(mapping: EntityMapping, item: Any, where: str, context: Mapping[str, str]) -> str:
    pieces: list[str] = []
    for text, expr in mapping.id_parts:
        if expr is None:
            pieces.append(text)
            continue
        found = expr.search(item, context)
        if found is None or found == "" or (type(found) not in _SCALARS and isinstance(found, Mapping | list)):
            state = "missing" if found is None or found == "" else "not a scalar"
            raise TranslationError(f"{where}: id placeholder {{{text}}} is {state}", _pointer_hint(text))
        pieces.append(_map_key(found))
    template_match = _NGSI_URN.match(mapping.id_template)
    try:
        if template_match:
            # The local part is escaped as one NSS: literal ':' separators are kept, '/' escaped.
            prefix = f"urn:ngsi-ld:{template_match.group(1)}:"
            rendered = "".join(pieces)
            return urn(template_match.group(1), rendered[len(prefix) :])
        out: list[str] = []
        for (_text, expr), piece in zip(mapping.id_parts, pieces, strict=True):
            out.append(piece if expr is None else _escape(piece))
        return "".join(out)
    except ModelError as exc:
        raise TranslationError(f"{where}: {exc}", "/id") from exc


def _pointer_hint(selector: str) -> str:
    return "/" + selector.replace(".", "/") if _SIMPLE_PATH.match(selector) else ""


def item_tenant(mapping: EntityMapping, item: Any, context: Mapping[str, str] = _NO_CONTEXT) -> str | None:
    """The tenant an item belongs to, when the mapping has a tenant selector and the item (or push) names one."""
    if mapping.tenant is None:
        return None
    found = mapping.tenant.search(item, context)
    return None if found is None or found == "" else _map_key(found)


def select_items(mapping: EntityMapping, document: Any) -> list[Any]:
    """The items of a document: the ``items`` selector's list, or its single object."""
    found = mapping.items.search(document)
    if found is None:
        raise TranslationError(f"items selector {mapping.items_text!r} found nothing in the document")
    if isinstance(found, list):
        return found
    if isinstance(found, Mapping):
        return [found]
    raise TranslationError(f"items selector {mapping.items_text!r} gave a {type(found).__name__}, not a list")


def map_item(
    mapping: EntityMapping,
    item: Any,
    *,
    where: str = "item 0",
    pointer: str = "",
    context: Mapping[str, str] = _NO_CONTEXT,
) -> Entity:
    """Translate one item; TranslationError names ``where`` (item index, line) and the selector.

    ``context`` holds what ``$query.<name>`` and ``$headers.<name>`` selectors read: the
    ``RawMessage.metadata`` of a push, whose transport filled the keys in ``mapping.context``.
    """
    if type(item) is not dict and not isinstance(item, Mapping):
        raise TranslationError(f"{where}: an item must be an object, not {type(item).__name__}", pointer)
    try:
        entity_id = _entity_id(mapping, item, where, context)
    except TranslationError as exc:
        raise TranslationError(exc.reason, pointer + exc.pointer) from exc
    default_time: str | None = None
    if mapping.observed_at is not None:
        try:
            default_time = _time_of(mapping.observed_at, item, mapping.timezone, context)
        except ValueError as exc:
            raise TranslationError(
                f"{where}: observed_at (select {mapping.observed_at.text!r}): {exc}",
                pointer + _pointer_hint(mapping.observed_at.text),
            ) from exc
    out: Entity = {"id": entity_id, "type": mapping.entity_type}
    for spec in mapping.attributes:
        hint = spec.select_text
        try:
            if spec.static is not None:
                if not spec.static:
                    continue
                # A fresh copy per entity: later stages may change an attribute in place.
                attr = _copy(spec.static)
            else:
                attr = _build(spec, _value(spec, item, mapping.timezone, context), None)
            observed = default_time if spec.inherit_time else None
            if spec.observed_at is not None:
                hint = spec.observed_at.text
                observed = _time_of(spec.observed_at, item, mapping.timezone, context)
            if observed is not None:
                attr["observedAt"] = observed
            out[spec.name] = attr
        except _Skip:
            if spec.required:
                message = _problem(where, spec, "required value is missing")
                raise TranslationError(message, pointer + _pointer_hint(spec.select_text)) from None
            continue
        except (ValueError, TypeError, ArithmeticError, ModelError) as exc:
            raise TranslationError(_problem(where, spec, str(exc)), pointer + _pointer_hint(hint)) from exc
    return out


def items_pointer(mapping: EntityMapping, document: Any) -> str | None:
    """JSON pointer of the item list in a document, when the items selector is a plain path."""
    if mapping.items_text == "@":
        return "" if isinstance(document, list) else None
    if _SIMPLE_PATH.match(mapping.items_text):
        return "/" + mapping.items_text.replace(".", "/")
    return None


def apply_mapping(
    mapping: EntityMapping | Mapping[str, Any], document: Any, context: Mapping[str, str] = _NO_CONTEXT
) -> list[Entity]:
    """Translate a whole document (pure): one entity per item, in document order (``context``: see map_item)."""
    compiled = mapping if isinstance(mapping, EntityMapping) else compile_mapping(mapping)
    items = select_items(compiled, document)
    base = items_pointer(compiled, document)
    entities = []
    failed: list[TranslationError] = []
    for index, item in enumerate(items):
        pointer = f"{base}/{index}" if base is not None else ""
        try:
            entities.append(map_item(compiled, item, where=f"item {index}", pointer=pointer, context=context))
        except TranslationError as exc:
            failed.append(exc)
    if failed:
        # The whole document is one message: report the first problem in full and name the
        # other bad items, so that one look at the dead letter shows everything to fix.
        first = failed[0]
        others = [exc.reason.split(":", 1)[0] for exc in failed[1:]]
        more = f" (also untranslatable: {', '.join(others[:20])}{', ...' if len(others) > 20 else ''})"
        raise TranslationError(first.reason + (more if others else ""), first.pointer)
    return entities
