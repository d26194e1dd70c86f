"""Pure translation of recorded OPC UA data changes into NGSI-LD entities (no I/O, no clock).

A RawMessage payload is one JSON object the transport writes for each data change::

    {"server": "usine", "ref": "<node or browse path as configured>", "node": "ns=2;s=Pump1.Speed",
     "value": 1450.0, "datatype": "Double", "status": {"code": 0, "name": "Good"},
     "source_ts": "2024-05-01T08:00:00.125Z", "server_ts": "...", "eu": {"namespace": "...",
     "unit_id": 5394509, "display": "r/min"}, "initial": false}

The configured mapping (``servers[].nodes[]``) says which entity attribute the node feeds.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import schemas
from adapters.kit.payload import finite, load_json
from gateway.errors import TranslationError
from gateway.model import Entity, ModelError, RawMessage, from_concise, is_uri, urn, utc_time
from gateway.units import UnitError, convert

MAX_PAYLOAD: Final = 1 << 20
"""Largest payload accepted (a data change with a big array stays far below)."""

UNECE_NAMESPACE: Final = "http://www.opcfoundation.org/UA/units/un/cefact"
"""EUInformation namespace whose UnitId encodes a UN/CEFACT common code."""

SAFE_INTEGER: Final = 2**53 - 1
"""Largest integer every JSON consumer reads exactly (IEEE 754 double mantissa)."""

_COMMON_CODE = re.compile(r"^[A-Z0-9]{2,3}$")
_SEVERITY = {0: "Good", 1: "Uncertain", 2: "Bad", 3: "Bad"}
_SIXTY_FOUR = frozenset({"Int64", "UInt64"})


def decode_unit_id(unit_id: int) -> str | None:
    """Decode an EUInformation ``UnitId`` into its UN/CEFACT common code (OPC 10000-8 §5.6.3).

    The UnitId packs the code's ASCII characters into an Int32, most significant first
    (``MTR`` → 0x004D5452 = 5067858). Returns None when the number is not such an encoding.
    """
    if not isinstance(unit_id, int) or isinstance(unit_id, bool) or unit_id <= 0 or unit_id >= 1 << 24:
        return None
    chars = []
    while unit_id:
        chars.append(chr(unit_id & 0xFF))
        unit_id >>= 8
    code = "".join(reversed(chars))
    return code if _COMMON_CODE.match(code) else None


def severity(code: int) -> str:
    """The OPC UA severity of a StatusCode: the top two bits (Part 4 §7.39)."""
    return _SEVERITY[(int(code) >> 30) & 0b11]


@dataclass(frozen=True, slots=True)
class NodeMapping:
    """Where one node's values go: entity id and type, attribute, unit override, dataset."""

    entity_id: str
    entity_type: str
    attribute: str
    unit: str | None = None
    dataset_id: str | None = None
    scale: float | None = None
    convert_to: str | None = None


@dataclass(frozen=True, slots=True)
class EventMapping:
    """How the events of one subscribed source become Alert entities."""

    category: str
    sub_category: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    default_source: str | None = None


@dataclass(slots=True)
class Mappings:
    """Node mappings by (server name, configured reference), and static entity attributes."""

    nodes: dict[tuple[str, str], NodeMapping] = field(default_factory=dict)
    statics: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[tuple[str, str], EventMapping] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Mappings:
        """Build the lookup tables from a validated adapter config."""
        out = cls()
        for entity_id, spec in (config.get("entities") or {}).items():
            attrs = dict(spec.get("attributes") or {})
            out.statics[entity_id] = from_concise(attrs)
        for server in config.get("servers", []):
            for spec in server.get("events", []):
                out.events[(server["name"], str(spec.get("source", "i=2253")))] = EventMapping(
                    category=spec.get("category", "environment"),
                    sub_category=spec.get("sub_category"),
                    sources=dict(spec.get("alert_sources", {})),
                    default_source=spec.get("alert_source"),
                )
            for node in server.get("nodes", []):
                ref = node_ref(node)
                out.nodes[(server["name"], ref)] = NodeMapping(
                    entity_id=node["entity"],
                    entity_type=node["type"],
                    attribute=node["attribute"],
                    unit=node.get("unit"),
                    dataset_id=node.get("dataset_id"),
                    scale=node.get("scale"),
                    convert_to=node.get("convert_to"),
                )
        return out


def node_ref(node: Mapping[str, Any]) -> str:
    """The configured reference of a node mapping: its node id, else its browse path."""
    return str(node.get("node") or node.get("browse_path"))


def _status(doc: Mapping[str, Any]) -> tuple[int, str]:
    status = doc.get("status", {"code": 0})
    if not isinstance(status, Mapping) or not isinstance(status.get("code", 0), int):
        raise TranslationError("status must be {code: integer, name: string}", "/status")
    code = int(status.get("code", 0))
    name = str(status.get("name") or severity(code))
    return code, name


def _not_finite(value: Any, datatype: Any) -> bool:
    """A float the transport wrote as text because JSON has no NaN/Infinity (text nodes excluded)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    return (
        isinstance(value, str)
        and value in ("NaN", "Infinity", "-Infinity")
        and datatype in (None, "Float", "Double")
    )


def _time(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    try:
        return utc_time(value)
    except ModelError as exc:
        raise TranslationError(str(exc), f"/{key}") from exc


def to_entities(raw: RawMessage, mappings: Mappings) -> list[Entity]:
    """Translate one recorded data change into the entity (one attribute) it updates."""
    if len(raw.payload) > MAX_PAYLOAD:
        raise TranslationError(f"payload over {MAX_PAYLOAD} bytes")
    doc = load_json(raw.payload)
    if not isinstance(doc, dict):
        raise TranslationError("payload must be a JSON object", "")
    for key in ("server", "ref") if doc.get("kind") == "event" else ("server", "ref", "node"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise TranslationError(f"missing or empty string '{key}'", f"/{key}")
    if doc.get("kind") == "event":
        return [_alert(doc, mappings, raw)]
    mapping = mappings.nodes.get((doc["server"], doc["ref"]))
    if mapping is None:
        raise TranslationError(
            f"no mapping configured for node {doc['ref']!r} of server {doc['server']!r}", "/ref"
        )
    if not is_uri(mapping.entity_id):
        raise TranslationError(f"configured entity id {mapping.entity_id!r} is not a URI", "/ref")
    code, status_name = _status(doc)
    level = severity(code)
    observed = _time(doc, "source_ts") or _time(doc, "server_ts") or utc_time(raw.received_at)
    server_ts = _time(doc, "server_ts")
    value = doc.get("value")
    datatype = doc.get("datatype")
    if datatype is not None and not isinstance(datatype, str):
        raise TranslationError("datatype must be the name of an OPC UA built-in type", "/datatype")

    status_attr: dict[str, Any] = {"type": "Property", "value": level}
    if status_name != level:
        status_attr["statusCode"] = {"type": "Property", "value": status_name}

    item: Entity = {"id": mapping.entity_id, "type": mapping.entity_type}
    # A deep copy: the pipeline may normalize entities in place, the config must stay intact.
    item.update(copy.deepcopy(mappings.statics.get(mapping.entity_id, {})))

    if value is None or _not_finite(value, datatype):
        # No usable value (a Bad status usually carries none): NGSI-LD has no null value, so the
        # status itself is kept, as an instance of opcuaStatus tagged with the attribute's name.
        status_attr["observedAt"] = observed
        status_attr["datasetId"] = f"urn:ngsi-ld:opcua:{mapping.attribute}"
        if value is not None:
            status_attr["rawValue"] = {"type": "Property", "value": str(value)}
        item["opcuaStatus"] = status_attr
        return [item]

    if mapping.scale is not None and _is_numeric(value):
        value = _scaled(value, mapping.scale)
        _finite(value, "/value")
    unit = mapping.unit or _unit_from_eu(doc.get("eu"))
    if mapping.convert_to and _is_numeric(value):
        value = _converted(value, unit, mapping.convert_to)
        _finite(value, "/value")
        unit = mapping.convert_to
    exact = isinstance(value, int) and not isinstance(value, bool) and abs(value) > SAFE_INTEGER
    # The EPANET models describe observed quantities (pressure, level, flow...) as an object
    # {"value": number, "observedBy": id} in their keyValues form; the value is shaped so.
    shaped = {"value": value} if _observation_object(mapping.entity_type, mapping.attribute) else value
    attr: dict[str, Any] = {"type": "Property", "value": shaped}
    if unit and _is_numeric(value):
        attr["unitCode"] = unit
    attr["observedAt"] = observed
    if mapping.dataset_id:
        attr["datasetId"] = mapping.dataset_id
    attr["opcuaStatus"] = status_attr
    if server_ts is not None and server_ts != observed:
        attr["serverTimestamp"] = {"type": "Property", "value": server_ts}
    if datatype in _SIXTY_FOUR:
        attr["opcuaDataType"] = {"type": "Property", "value": datatype}
    if exact:
        # A 64-bit counter past 2**53 is written with all its digits, but JavaScript and many
        # JSON readers round it to a double: the exact decimal string travels beside it.
        attr["exactValue"] = {"type": "Property", "value": str(value)}
    item[mapping.attribute] = attr
    return [item]


_ALERT_LEVELS: Final = ((800, "critical"), (600, "high"), (400, "medium"), (200, "low"), (0, "informational"))


def alert_severity(severity: int) -> str:
    """OPC UA event severity (1-1000) to the Alert model's words (five equal bands)."""
    return next(word for floor, word in _ALERT_LEVELS if severity >= floor)


def _alert(doc: Mapping[str, Any], mappings: Mappings, raw: RawMessage) -> Entity:
    mapping = mappings.events.get((doc["server"], doc["ref"]))
    if mapping is None:
        raise TranslationError(f"no event mapping for source {doc['ref']!r} of server {doc['server']!r}", "/ref")
    event_id = doc.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise TranslationError("an event needs its event_id", "/event_id")
    severity = doc.get("severity", 0)
    if not isinstance(severity, int) or isinstance(severity, bool) or not 0 <= severity <= 1000:
        raise TranslationError("severity must be an integer (1-1000)", "/severity")
    source_name = str(doc.get("source_name") or "")
    alert_source = mapping.sources.get(source_name) or mapping.default_source or urn(
        "Device", f"{doc['server']}-{source_name or 'server'}"
    )
    issued = _time(doc, "time") or _time(doc, "receive_time") or utc_time(raw.received_at)
    item: Entity = {
        "id": urn("Alert", f"{doc['server']}:{event_id}"),
        "type": "Alert",
        "alertSource": {"type": "Relationship", "object": alert_source},
        "category": {"type": "Property", "value": mapping.category},
        "severity": {"type": "Property", "value": alert_severity(severity)},
        "dateIssued": {"type": "Property", "value": issued},
    }
    if mapping.sub_category:
        item["subCategory"] = {"type": "Property", "value": mapping.sub_category}
    if doc.get("message"):
        item["description"] = {"type": "Property", "value": str(doc["message"])}
    if source_name:
        item["name"] = {"type": "Property", "value": source_name}
    item["data"] = {"type": "Property", "value": {
        "opcuaSeverity": severity, "eventType": doc.get("event_type"), "sourceNode": doc.get("source_node")}}
    return item


@cache
def _observation_object(entity_type: str, attribute: str) -> bool:
    """True when the model wants this attribute as ``{"value": number, ...}`` (EPANET observations)."""
    if entity_type not in schemas.MODELS:
        return False
    spec = schemas.model(entity_type).schema.get("properties", {}).get(attribute)
    if not isinstance(spec, Mapping) or spec.get("type") != "object":
        return False
    inner = spec.get("properties", {}).get("value")
    return isinstance(inner, Mapping) and inner.get("type") == "number"


def _converted(value: Any, unit: str | None, target: str) -> Any:
    """``value`` (a number or a list of numbers) converted from ``unit`` to ``target``."""
    if unit is None:
        raise TranslationError(f"cannot convert to {target}: the node has no unit (EngineeringUnits)", "/eu")
    def each(item: Any) -> Any:  # arrays of arrays (matrices) keep their shape, like _scaled
        return [each(v) for v in item] if isinstance(item, list) else convert(item, unit, target)

    try:
        return each(value)
    except UnitError as exc:
        raise TranslationError(str(exc), "/eu") from exc


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, list):
        return [_scaled(v, factor) for v in value]
    # Rounded to 12 significant digits so that 62.0 * 0.01 reads 0.62, not 0.6200000000000001.
    return float(f"{value * factor:.12g}")


def _finite(value: Any, pointer: str) -> None:
    """Refuse a scaled or converted reading that overflowed (a huge value times a factor)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            finite(item, pointer)


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, list) and bool(value) and all(_is_numeric(v) for v in value)


def _unit_from_eu(eu: Any) -> str | None:
    if not isinstance(eu, Mapping):
        return None
    namespace = eu.get("namespace")
    if namespace not in (None, "", UNECE_NAMESPACE):
        return None
    return decode_unit_id(eu.get("unit_id", 0))
