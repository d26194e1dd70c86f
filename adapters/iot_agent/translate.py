"""The pure translation: one measure of a provisioned device → NGSI-LD entities (Smart Data Models).

The transport resolves the device when the message arrives and records its *effective
definition* (service group and device merged, see ``provisioning.effective``) in the
``RawMessage`` metadata as JSON; the translation reads only the message, so it is pure and a
replay from the raw archive gives the entities the device's provisioning gave at the time.

Rules, those of the IoT Agents unless said otherwise:

- a measure key is matched to a provisioned attribute by ``object_id`` (then by ``name``); the
  attribute's ``name`` and ``type`` apply. An unprovisioned key keeps its name, unless
  ``explicitAttrs`` is true (or a list of the names to keep).
- types: ``Number``/``Float``/``Integer``/``Double`` convert text to numbers, ``Boolean`` converts
  ``true``/``false``/``1``/``0``, ``DateTime``/``ISO8601`` normalize to RFC 3339 UTC,
  ``geo:point`` (``"lat, lon"``) and ``geo:json``/``GeoProperty`` become GeoProperties,
  ``Relationship`` a Relationship (a bare id becomes ``urn:ngsi-ld:<Target>:<id>``). UltraLight
  values of undeclared attributes that read as numbers or booleans are converted (the IoT Agents'
  ``autocast``); JSON values keep their JSON type.
- ``metadata.unitCode`` of an attribute becomes its ``unitCode``.
- an attribute with an ``expression`` takes the expression's value (``expressions.py``); one with
  an expression and no ``object_id`` is derived from the measure; a null result leaves it out.
- time: the measure's ``TimeInstant``, else the group's time (UltraLight), else the ``t`` query
  parameter, else the time of receipt; it is every measured attribute's ``observedAt``. With
  ``timestamp: true`` the entity also gets a ``TimeInstant`` property. A Smart Data Model that
  has ``dateObserved`` gets it set to that time when the measure does not carry it (jonction's
  policy, so that ``AirQualityObserved`` and friends validate).
- static attributes are added to every entity (``location`` as a GeoProperty).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import schemas
from adapters.iot_agent.expressions import Expression, compile_expression
from adapters.kit.payload import token
from gateway.errors import TranslationError
from gateway.model import Entity, ModelError, is_uri, urn, utc_time

NUMERIC_TYPES: Final = frozenset({"Number", "Float", "Integer", "Double", "number", "float", "integer", "Percentage"})
BOOLEAN_TYPES: Final = frozenset({"Boolean", "boolean", "Bool"})
TIME_TYPES: Final = frozenset({"DateTime", "ISO8601", "Date", "Time"})
GEO_JSON_TYPES: Final = frozenset({"geo:json", "GeoProperty", "geo:geojson", "GeoJSON"})
GEO_POINT_TYPES: Final = frozenset({"geo:point"})
RELATIONSHIP_TYPES: Final = frozenset({"Relationship"})
TIME_KEY: Final = "TimeInstant"
_TRUE: Final = frozenset({"true", "1", "True", "TRUE"})
_FALSE: Final = frozenset({"false", "0", "False", "FALSE"})
_RESERVED: Final = frozenset({"id", "type", "@context", "scope", "createdAt", "modifiedAt", "deletedAt",
                              "@id", "@type"})


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One provisioned attribute: where its value comes from and what it becomes."""

    name: str
    type: str | None
    object_id: str | None
    expression: Expression | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class Definition:
    """A device's effective definition, compiled once (cached by its JSON text)."""

    device_id: str
    service: str
    subservice: str
    entity_id: str
    entity_type: str
    by_key: Mapping[str, AttributeSpec]
    derived: tuple[AttributeSpec, ...]
    static: Mapping[str, Any]
    """Static attributes as NGSI-LD attributes."""
    static_values: Mapping[str, Any]
    """Static attributes' plain values (for expressions)."""
    explicit: bool | frozenset[str]
    timestamp: bool
    commands: frozenset[str]
    date_observed: bool
    """The entity type's Smart Data Model has ``dateObserved``."""


def _object_id(attr_name: str, value: str) -> str:
    if value.startswith(("urn:", "http://", "https://")) and is_uri(value):
        return value
    target = attr_name[3:] if attr_name.startswith("ref") and len(attr_name) > 3 else "Thing"
    return urn(target[0].upper() + target[1:], value)


def _geo_point(value: Any, pointer: str) -> dict[str, Any]:
    if isinstance(value, list | tuple) and len(value) == 2:
        lat, lon = value
    else:
        try:
            lat, lon = (float(part) for part in str(value).split(","))
        except ValueError:
            raise TranslationError(f"geo:point {str(value)[:60]!r} must be 'lat, lon'", pointer) from None
    try:
        lat, lon = float(lat), float(lon)
    except (TypeError, ValueError):
        raise TranslationError("geo:point coordinates must be numbers", pointer) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # also refuses NaN, which compares false
        raise TranslationError(f"geo:point {str(value)[:60]!r} is not a WGS84 position", pointer)
    return {"type": "Point", "coordinates": [lon, lat]}


def _geo_json(value: Any, pointer: str) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise TranslationError("a geo:json value must be a GeoJSON geometry", pointer) from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str) or "coordinates" not in value:
        raise TranslationError("a geo:json value must be a GeoJSON geometry {type, coordinates}", pointer)
    return value


def _number(value: Any, kind: str, pointer: str) -> int | float:
    if isinstance(value, bool):
        raise TranslationError(f"a {kind} attribute cannot hold a boolean", pointer)
    if isinstance(value, int | float):
        number: int | float = value
    elif isinstance(value, str):
        try:
            # "30" stays an integer (as JavaScript prints it), "30.5" and "3e1" are doubles.
            number = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise TranslationError(f"{value[:60]!r} is not a number ({kind})", pointer) from None
    else:
        raise TranslationError(f"a {kind} attribute must hold a number", pointer)
    if isinstance(number, float):
        if not math.isfinite(number):
            raise TranslationError(f"{value!r} is not a finite number", pointer)
        if kind == "Integer":
            if not number.is_integer():
                raise TranslationError(f"{value!r} is not an integer", pointer)
            number = int(number)
    if isinstance(number, int) and abs(number) > 2**63:
        raise TranslationError("number beyond 64 bits", pointer)
    return number


def _autocast(value: str) -> Any:
    """An UltraLight text value as a number or boolean when it reads as one (IoT Agent ``autocast``)."""
    if value in ("true", "false"):
        return value == "true"
    try:
        number = float(value)
    except ValueError:
        return value
    if not math.isfinite(number) or value.strip() != value or value.lower().startswith(("0x", "nan", "inf")):
        return value
    if number.is_integer() and abs(number) < 2**53 and "." not in value and "e" not in value.lower():
        return int(number)
    return number


def attribute(name: str, kind: str | None, value: Any, pointer: str, *, observed_at: str | None,
              unit: str | None, from_text: bool) -> dict[str, Any]:
    """One NGSI-LD attribute from a provisioned type and a measured (or static) value."""
    if kind in RELATIONSHIP_TYPES:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise TranslationError("a Relationship value must be an entity id", pointer)
        try:
            out: dict[str, Any] = {"type": "Relationship", "object": _object_id(name, str(value))}
        except ModelError as exc:
            raise TranslationError(str(exc), pointer) from exc
    elif kind in GEO_POINT_TYPES:
        out = {"type": "GeoProperty", "value": _geo_point(value, pointer)}
    elif kind in GEO_JSON_TYPES:
        out = {"type": "GeoProperty", "value": _geo_json(value, pointer)}
    elif kind in NUMERIC_TYPES:
        out = {"type": "Property", "value": _number(value, kind, pointer)}
    elif kind in BOOLEAN_TYPES:
        if isinstance(value, bool):
            flag = value
        elif isinstance(value, str | int) and str(value) in _TRUE | _FALSE:
            flag = str(value) in _TRUE
        else:
            raise TranslationError(f"{str(value)[:60]!r} is not a boolean", pointer)
        out = {"type": "Property", "value": flag}
    elif kind in TIME_TYPES:
        try:
            out = {"type": "Property", "value": utc_time(str(value))}
        except ModelError as exc:
            raise TranslationError(str(exc), pointer) from exc
    else:
        if from_text and kind is None and isinstance(value, str):
            value = _autocast(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise TranslationError("not a finite number", pointer)
        out = {"type": "Property", "value": value}
    if observed_at is not None:
        out["observedAt"] = observed_at
    if unit:
        out["unitCode"] = unit
    return out


def _unit(spec: Mapping[str, Any]) -> str | None:
    meta = spec.get("metadata")
    if isinstance(meta, Mapping):
        code = meta.get("unitCode")
        if isinstance(code, Mapping):
            code = code.get("value")
        if isinstance(code, str) and code:
            return code
    return None


def _static(items: Sequence[Mapping[str, Any]], device_json_pointer: str) -> tuple[dict[str, Any], dict[str, Any]]:
    attrs: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for i, item in enumerate(items):
        name = str(item.get("name", ""))
        pointer = f"{device_json_pointer}/{i}"
        if not name or name in _RESERVED:
            raise TranslationError(f"static attribute name {name!r} cannot be an NGSI-LD attribute", pointer)
        kind = item.get("type")
        attrs[name] = attribute(name, str(kind) if kind is not None else None, item.get("value"), pointer,
                                observed_at=None, unit=_unit(item), from_text=False)
        values[name] = item.get("value")
    return attrs, values


@functools.lru_cache(maxsize=4096)
def definition(text: str) -> Definition:
    """The compiled definition from its JSON (TranslationError if it cannot be used)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise TranslationError("the device definition recorded with the message is not JSON", "") from None
    if not isinstance(doc, dict):
        raise TranslationError("the device definition recorded with the message is not an object", "")
    try:
        return _definition(doc)
    except (TypeError, AttributeError, KeyError, ValueError, RecursionError) as exc:
        raise TranslationError(f"the device definition recorded with the message is malformed: {exc}", "") \
            from None


def entity_id_of(definition_json: str) -> str:
    """The entity id of a definition ("" when it has none that can be built)."""
    try:
        return definition(definition_json).entity_id
    except TranslationError:
        return ""


def _entity_id(doc: Mapping[str, Any], entity_type: str) -> str:
    """``entity_name`` when it is a URI, else ``urn:ngsi-ld:<type>:<entity_name or device_id>``."""
    name = doc.get("entity_name")
    try:
        if isinstance(name, str) and name:
            if name.startswith(("urn:", "http://", "https://")) and is_uri(name):
                return name
            return urn(entity_type, name)
        return urn(entity_type, str(doc.get("device_id") or ""))
    except ModelError as exc:
        raise TranslationError(str(exc), "/entity_name") from exc


def _definition(doc: Mapping[str, Any]) -> Definition:
    entity_type = str(doc.get("entity_type") or "Thing")
    device_id = str(doc.get("device_id") or "")
    entity_id = _entity_id(doc, entity_type)
    by_key: dict[str, AttributeSpec] = {}
    derived: list[AttributeSpec] = []
    for i, item in enumerate(doc.get("attributes") or []):
        expression = item.get("expression")
        try:
            compiled = compile_expression(expression) if isinstance(expression, str) and expression else None
        except ValueError as exc:
            raise TranslationError(f"attribute expression: {exc}", f"/attributes/{i}/expression") from exc
        attr_name = str(item.get("name") or item.get("object_id") or "")
        if not attr_name or attr_name in _RESERVED:
            raise TranslationError(f"attribute name {attr_name!r} cannot be an NGSI-LD attribute",
                                   f"/attributes/{i}/name")
        object_id = item.get("object_id")
        spec = AttributeSpec(attr_name, item.get("type"), str(object_id) if object_id is not None else None,
                             compiled, _unit(item))
        if spec.object_id is not None:
            by_key[spec.object_id] = spec
        by_key.setdefault(attr_name, spec)
        if compiled is not None and spec.object_id is None:
            derived.append(spec)
    static, static_values = _static(doc.get("static_attributes") or [], "/static_attributes")
    explicit_raw = doc.get("explicitAttrs", False)
    explicit: bool | frozenset[str] = (frozenset(str(x) for x in explicit_raw) if isinstance(explicit_raw, list)
                                       else bool(explicit_raw))
    has_date = entity_type in schemas.MODELS and "dateObserved" in schemas.model(entity_type).attributes
    return Definition(
        device_id=device_id, service=str(doc.get("service", "")), subservice=str(doc.get("subservice", "/")),
        entity_id=entity_id, entity_type=entity_type, by_key=by_key, derived=tuple(derived), static=static,
        static_values=static_values, explicit=explicit, timestamp=bool(doc.get("timestamp", False)),
        commands=frozenset(str(c.get("name")) for c in doc.get("commands") or [] if isinstance(c, dict)),
        date_observed=has_date)


def _check_text(name: str, pointer: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise TranslationError(f"attribute name {name!a} is not Unicode text", pointer) from None


def _time(value: Any, pointer: str) -> str:
    try:
        return utc_time(str(value))
    except ModelError as exc:
        raise TranslationError(f"invalid ISO8601 timestamp: {exc}", pointer) from exc


def measure_entity(d: Definition, values: Mapping[str, Any], *, observed_at: str, pointer: str,
                   from_text: bool) -> Entity:
    """The entity for one measure (a JSON object, or one UltraLight group) of the device ``d``."""
    if TIME_KEY in values:
        observed_at = _time(values[TIME_KEY], pointer + token(TIME_KEY))
    entity: Entity = {"id": d.entity_id, "type": d.entity_type}
    context: dict[str, Any] = {**d.static_values, "id": d.device_id, "type": d.entity_type,
                               "service": d.service, "subservice": d.subservice, "entity_name": d.entity_id}
    for key, value in values.items():
        context[key] = value
        spec = d.by_key.get(key)
        if spec is not None:
            context[spec.name] = value
    for key, value in values.items():
        if key == TIME_KEY:
            continue
        where = pointer + token(key)
        spec = d.by_key.get(key)
        if spec is None:
            if d.explicit is True or (isinstance(d.explicit, frozenset) and key not in d.explicit):
                continue
            name, kind, unit = key, None, None
        else:
            name, kind, unit = spec.name, spec.type, spec.unit
            if d.explicit is not True and isinstance(d.explicit, frozenset) and name not in d.explicit:
                continue
            if spec.expression is not None:
                value = spec.expression.evaluate(context)
                if value is None:
                    continue
        if name in d.commands or name in _RESERVED or not name:
            continue
        if not name.isascii():
            _check_text(name, where)
        entity[name] = attribute(name, kind, value, where, observed_at=observed_at, unit=unit,
                                 from_text=from_text and spec is None)
    for spec in d.derived:
        if spec.name in entity:
            continue
        value = spec.expression.evaluate(context) if spec.expression is not None else None
        if value is None:
            continue
        entity[spec.name] = attribute(spec.name, spec.type, value, pointer, observed_at=observed_at,
                                      unit=spec.unit, from_text=False)
    for name, attr in d.static.items():
        entity.setdefault(name, attr)
    if d.timestamp:
        entity[TIME_KEY] = {"type": "Property", "value": observed_at}
    if d.date_observed and "dateObserved" not in entity:
        entity["dateObserved"] = {"type": "Property", "value": observed_at}
    return entity


def command_entity(d: Definition, results: Mapping[str, Any], *, status: str, observed_at: str,
                   pointer: str) -> Entity:
    """``<cmd>_status`` and ``<cmd>_info`` attributes for command results (or a status change).

    A model whose required attributes are measured (``dateObserved``...) makes such an entity a
    dead letter: commands belong to actuators, whose required attributes are static.
    """
    entity: Entity = {"id": d.entity_id, "type": d.entity_type}
    for command, info in results.items():
        if command not in d.commands:
            raise TranslationError(f"device {d.device_id!r} has no command {command!r}", pointer + token(command))
        entity[f"{command}_status"] = {"type": "Property", "value": status, "observedAt": observed_at}
        if info is not None:
            if isinstance(info, float) and not math.isfinite(info):
                raise TranslationError("not a finite number", pointer + token(command))
            entity[f"{command}_info"] = {"type": "Property", "value": info, "observedAt": observed_at}
    # The static attributes too: the entity stays valid against its model (location, status...).
    for name, attr in d.static.items():
        entity.setdefault(name, attr)
    return entity
