"""NGSI-LD entity model: builders, URN ids, UTC times and lossless form conversions.

Entities are plain ``dict`` objects in the *normalized* NGSI-LD form with compacted terms
(the hot path stays allocation-light); the helpers here build them, read them and convert
between normalized, concise and keyValues forms following ETSI GS CIM 009 V1.9.1 §4.5.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

Entity = dict[str, Any]
"""An NGSI-LD entity in normalized form (compacted terms)."""

ATTRIBUTE_TYPES: Final = frozenset(
    {
        "Property",
        "Relationship",
        "GeoProperty",
        "LanguageProperty",
        "VocabProperty",
        "ListProperty",
        "ListRelationship",
        "JsonProperty",
    }
)
"""The attribute types of NGSI-LD 1.9 (§4.5)."""

VALUE_KEY: Final[Mapping[str, str]] = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "VocabProperty": "vocab",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
    "JsonProperty": "json",
}
"""Which member carries the attribute's value, per attribute type (the one table)."""
VALUE_MEMBERS: Final = tuple(dict.fromkeys(VALUE_KEY.values()))
"""The members that can carry an attribute's value, in ``VALUE_KEY`` order."""

ENTITY_MEMBERS: Final = frozenset(
    {"id", "type", "@context", "scope", "createdAt", "modifiedAt", "deletedAt", "@id", "@type"}
)
"""Top-level members of an entity that are not attributes."""

ATTRIBUTE_MEMBERS: Final = frozenset(
    {
        "type",
        "value",
        "object",
        "languageMap",
        "vocab",
        "valueList",
        "objectList",
        "json",
        "observedAt",
        "unitCode",
        "datasetId",
        "createdAt",
        "modifiedAt",
        "deletedAt",
        "instanceId",
        "objectType",
        "lang",
        "previousValue",
        "previousObject",
        "previousLanguageMap",
        "previousVocab",
        "previousValueList",
        "previousObjectList",
        "previousJson",
    }
)
"""Members of an attribute that are not sub-attributes."""

GEOJSON_TYPES: Final = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection"}
)
"""GeoJSON geometry types (RFC 7946 §1.4) accepted as GeoProperty values."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s]+$")
# RFC 8141 NSS: unreserved, sub-delims, ":" and "@" stay; "/" is escaped too, so that an id
# never looks like a path segment to brokers that route on it.
_NSS_SAFE: Final = "-._~!$&'()*+,;=:@"


class ModelError(ValueError):
    """An entity or attribute that does not follow the NGSI-LD structure."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as a source delivered it, before any translation."""

    source: str
    """Name of the configured source (adapter instance) that received it."""
    tenant: str
    """Tenant (commune) the message routes to; "" is the default tenant."""
    received_at: str
    """RFC 3339 UTC time of receipt, set by the transport (never by the translation)."""
    payload: bytes
    """The bytes exactly as received."""
    idempotency_key: str
    """Key that identifies this message across redeliveries (e.g. ChirpStack deduplicationId)."""
    content_type: str = "application/json"
    """Media type of the payload."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Transport facts the translation may use (MQTT topic, HTTP path, OPC UA node id...)."""


# --------------------------------------------------------------------------- ids


def urn(entity_type: str, local_id: str | int) -> str:
    """Build ``urn:ngsi-ld:<Type>:<local-id>`` with the local id safely percent-escaped."""
    if not entity_type or not re.fullmatch(r"[A-Za-z0-9_\-]+", entity_type):
        raise ModelError(f"entity type {entity_type!r} cannot be used in a URN")
    local = str(local_id)
    if not local:
        raise ModelError("empty local id")
    try:
        escaped = quote(local, safe=_NSS_SAFE)
    except UnicodeEncodeError:  # a lone UTF-16 surrogate has no UTF-8 form to percent-escape
        raise ModelError(f"local id {local!a} is not Unicode text") from None
    return f"urn:ngsi-ld:{entity_type}:{escaped}"


def is_uri(value: object) -> bool:
    """True when ``value`` is an absolute URI (RFC 3986 scheme, no whitespace)."""
    return isinstance(value, str) and _SCHEME.match(value) is not None


# --------------------------------------------------------------------------- times


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 date-time that carries a time zone; raise ModelError otherwise."""
    if not isinstance(value, str) or len(value) < 19 or value[10] not in "Tt ":
        raise ModelError(f"{value!r} is not an RFC 3339 date-time")
    text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ModelError(f"{value!r} is not an RFC 3339 date-time") from exc
    if parsed.tzinfo is None:
        raise ModelError(f"{value!r} has no time zone (RFC 3339 requires Z or an offset)")
    return parsed


def format_time(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with ``Z`` and no needless fraction."""
    if moment.tzinfo is None:
        raise ModelError("naive datetime: a time zone is required")
    utc = moment.astimezone(UTC)
    # What strftime("%Y-%m-%dT%H:%M:%S") writes (the year unpadded, as glibc does), without its cost.
    base = f"{utc.year}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    micro = utc.microsecond
    if micro == 0:
        return base + "Z"
    if micro % 1000 == 0:
        return f"{base}.{micro // 1000:03d}Z"
    return f"{base}.{micro:06d}Z"


def utc_time(value: str | datetime) -> str:
    """Normalize an RFC 3339 date-time (string or aware datetime) to UTC with ``Z``."""
    return format_time(value if isinstance(value, datetime) else parse_time(value))


def epoch_time(seconds: float) -> str:
    """Format a POSIX timestamp in seconds as RFC 3339 UTC; ModelError outside years 1-9999."""
    try:
        return format_time(datetime.fromtimestamp(seconds, tz=UTC))
    except (OverflowError, OSError, ValueError) as exc:
        raise ModelError(f"{seconds!r} seconds is not a representable time: {exc}") from None


# --------------------------------------------------------------------------- builders


def _with_meta(
    attr: dict[str, Any],
    unit: str | None,
    observed_at: str | None,
    dataset_id: str | None,
    sub: Mapping[str, Any],
) -> dict[str, Any]:
    if unit is not None:
        attr["unitCode"] = unit
    if observed_at is not None:
        attr["observedAt"] = utc_time(observed_at)
    if dataset_id is not None:
        attr["datasetId"] = dataset_id
    for name, value in sub.items():
        attr[name] = value
    return attr


def prop(
    value: Any,
    *,
    unit: str | None = None,
    observed_at: str | None = None,
    dataset_id: str | None = None,
    **sub: Any,
) -> dict[str, Any]:
    """A Property; ``unit`` is a UN/CEFACT code, extra keywords become sub-attributes."""
    return _with_meta({"type": "Property", "value": value}, unit, observed_at, dataset_id, sub)


def rel(
    obj: str, *, observed_at: str | None = None, dataset_id: str | None = None, **sub: Any
) -> dict[str, Any]:
    """A Relationship pointing at the entity id ``obj``."""
    return _with_meta({"type": "Relationship", "object": obj}, None, observed_at, dataset_id, sub)


def geo(
    geometry: Mapping[str, Any], *, observed_at: str | None = None, dataset_id: str | None = None
) -> dict[str, Any]:
    """A GeoProperty holding a GeoJSON geometry (lon, lat order)."""
    return _with_meta({"type": "GeoProperty", "value": dict(geometry)}, None, observed_at, dataset_id, {})


def point(lon: float, lat: float) -> dict[str, Any]:
    """A GeoJSON Point in WGS84 lon/lat order."""
    return {"type": "Point", "coordinates": [lon, lat]}


def lang_prop(language_map: Mapping[str, str], **sub: Any) -> dict[str, Any]:
    """A LanguageProperty (``languageMap`` of BCP 47 tag to string)."""
    return _with_meta({"type": "LanguageProperty", "languageMap": dict(language_map)}, None, None, None, sub)


def vocab_prop(vocab: str | list[str], **sub: Any) -> dict[str, Any]:
    """A VocabProperty (a term or list of terms expanded against the @context)."""
    return _with_meta({"type": "VocabProperty", "vocab": vocab}, None, None, None, sub)


def list_prop(values: list[Any], **sub: Any) -> dict[str, Any]:
    """A ListProperty (ordered ``valueList``)."""
    return _with_meta({"type": "ListProperty", "valueList": list(values)}, None, None, None, sub)


def json_prop(document: Any, **sub: Any) -> dict[str, Any]:
    """A JsonProperty whose ``json`` member is never expanded or compacted."""
    return _with_meta({"type": "JsonProperty", "json": document}, None, None, None, sub)


def entity(entity_type: str, entity_id: str, /, **attributes: Any) -> Entity:
    """Build a normalized entity; attribute values must already be attribute objects."""
    if not is_uri(entity_id):
        raise ModelError(f"entity id {entity_id!r} is not a URI")
    built: Entity = {"id": entity_id, "type": entity_type}
    built.update(attributes)
    return built


# --------------------------------------------------------------------------- reading


def attributes(item: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, attribute-or-list-of-instances)`` for every attribute of an entity."""
    for name, value in item.items():
        if name not in ENTITY_MEMBERS:
            yield name, value


def sub_attributes(attr: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, value)`` for every sub-attribute of an attribute."""
    for name, value in attr.items():
        if name not in ATTRIBUTE_MEMBERS:
            yield name, value


def instances(value: Any) -> list[Any]:
    """The instances of an attribute: a multi-attribute (datasetId) list, or one instance."""
    return value if isinstance(value, list) else [value]


def attribute_value(attr: Mapping[str, Any]) -> Any:
    """The value carried by an attribute, whatever its type."""
    key = VALUE_KEY.get(str(attr.get("type")), "value")
    return attr.get(key)


def is_geojson(value: Any) -> bool:
    """True for a mapping that looks like a GeoJSON geometry."""
    return isinstance(value, Mapping) and str(value.get("type")) in GEOJSON_TYPES and (
        "coordinates" in value or "geometries" in value
    )


# --------------------------------------------------------------------------- conversions


def _kv_attr(attr: Any) -> Any:
    if not isinstance(attr, Mapping):
        return attr
    return attribute_value(attr)


def to_key_values(item: Mapping[str, Any]) -> dict[str, Any]:
    """Project an entity to keyValues (simplified): each attribute becomes its value.

    A multi-attribute (several datasetIds, CIM 009 V1.9.1 §4.5.4) becomes
    ``{"dataset": {datasetId: value}}``, the default instance under ``@none``, so that nothing
    but metadata is dropped; keyValues is by definition the form without metadata.
    """
    out: dict[str, Any] = {}
    for name, value in item.items():
        if name in ENTITY_MEMBERS:
            out[name] = value
        elif isinstance(value, list):
            if len(value) == 1:
                out[name] = _kv_attr(value[0])
            elif all(isinstance(v, Mapping) for v in value):
                out[name] = {"dataset": {str(v.get("datasetId", "@none")): _kv_attr(v) for v in value}}
            else:
                out[name] = [_kv_attr(v) for v in value]
        else:
            out[name] = _kv_attr(value)
    return out


def _concise_attr(attr: Any) -> Any:
    if not isinstance(attr, Mapping):
        return attr
    attr_type = attr.get("type")
    out: dict[str, Any] = {}
    for key, val in attr.items():
        if key == "type" and attr_type in ATTRIBUTE_TYPES:
            continue
        out[key] = val if key in ATTRIBUTE_MEMBERS else _concise_attr_any(val)
    if attr_type == "Property" and list(out) == ["value"] and not isinstance(out["value"], Mapping | list):
        return out["value"]
    if attr_type == "GeoProperty" and list(out) == ["value"] and is_geojson(out["value"]):
        return out["value"]
    return out


def _concise_attr_any(value: Any) -> Any:
    if isinstance(value, list):
        return [_concise_attr(v) for v in value]
    return _concise_attr(value)


def to_concise(item: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a normalized entity to the concise form (§4.5.2.2), losslessly."""
    return {
        name: value if name in ENTITY_MEMBERS else _concise_attr_any(value) for name, value in item.items()
    }


_MEMBER_TO_TYPE: Final[tuple[tuple[str, str], ...]] = (
    ("object", "Relationship"),
    ("languageMap", "LanguageProperty"),
    ("vocab", "VocabProperty"),
    ("valueList", "ListProperty"),
    ("objectList", "ListRelationship"),
    ("json", "JsonProperty"),
)


def _normalize_attr(attr: Any) -> Any:
    if isinstance(attr, list):
        # A list of attribute objects is a multi-attribute only when every member is an
        # attribute object; otherwise it is the value of a Property.
        if attr and all(isinstance(v, Mapping) and _looks_like_attribute(v) for v in attr):
            return [_normalize_attr(v) for v in attr]
        return {"type": "Property", "value": attr}
    if not isinstance(attr, Mapping):
        return {"type": "Property", "value": attr}
    if is_geojson(attr):
        return {"type": "GeoProperty", "value": dict(attr)}
    if not _looks_like_attribute(attr):
        return {"type": "Property", "value": dict(attr)}
    out: dict[str, Any] = {}
    attr_type = attr.get("type")
    if attr_type not in ATTRIBUTE_TYPES:
        attr_type = next((t for k, t in _MEMBER_TO_TYPE if k in attr), None)
        if attr_type is None:
            attr_type = "GeoProperty" if is_geojson(attr.get("value")) else "Property"
    out["type"] = attr_type
    for key, val in attr.items():
        if key == "type":
            continue
        out[key] = val if key in ATTRIBUTE_MEMBERS else _normalize_attr(val)
    return out


def _looks_like_attribute(attr: Mapping[str, Any]) -> bool:
    if attr.get("type") in ATTRIBUTE_TYPES:
        return True
    return any(k in attr for k in VALUE_MEMBERS)


def from_concise(item: Mapping[str, Any]) -> Entity:
    """Convert a concise (or already normalized) entity to the normalized form."""
    return {name: value if name in ENTITY_MEMBERS else _normalize_attr(value) for name, value in item.items()}


def from_key_values(item: Mapping[str, Any], ngsi_types: Mapping[str, str] | None = None) -> Entity:
    """Build a normalized entity from keyValues, using the model's NGSI type per attribute.

    ``ngsi_types`` maps attribute names to their NGSI-LD type as a Smart Data Model declares it
    (see ``schemas``); without it, GeoJSON values become GeoProperty and others Property.
    """
    types = ngsi_types or {}
    out: Entity = {}
    for name, value in item.items():
        if name in ENTITY_MEMBERS:
            out[name] = value
            continue
        declared = types.get(name)
        if declared == "Relationship" and isinstance(value, str):
            out[name] = {"type": "Relationship", "object": value}
        elif declared == "Relationship" and isinstance(value, list):
            out[name] = {"type": "ListRelationship", "objectList": [{"object": v} for v in value]}
        elif declared == "GeoProperty" or (declared is None and is_geojson(value)):
            out[name] = {"type": "GeoProperty", "value": value}
        elif declared == "LanguageProperty" and isinstance(value, Mapping):
            out[name] = {"type": "LanguageProperty", "languageMap": dict(value)}
        else:
            out[name] = {"type": "Property", "value": value}
    return out
