"""Normalization between translation and validation: URN ids, RFC 3339 UTC times, unit codes.

Adapters are expected to produce normalized entities already; this stage makes the common
mistakes harmless (a bare device id, a local time with an offset, a unit written ``°C``, a
Lambert-93 geometry flagged with a legacy GeoJSON ``crs``) and
reports what it cannot fix as a :class:`NormalizeError` with a JSON pointer.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from gateway.crs import to_wgs84
from gateway.model import ENTITY_MEMBERS, Entity, ModelError, is_uri, urn, utc_time
from gateway.pointer import escape
from gateway.units import UnitError, code_for

_TIME_MEMBERS = ("observedAt", "createdAt", "modifiedAt")
# Already canonical (UTC, "Z", no needless fraction): most adapters produce this, and skipping
# the parse/format round trip matters at thousands of messages per second. Range errors (month
# 13) are still reported by the validator, which checks every date-time.
_CANONICAL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?!000Z)\d{3}|\.(?!\d{3}000Z)\d{6})?Z")


class NormalizeError(ValueError):
    """An entity that cannot be normalized; ``pointer`` locates the problem."""

    def __init__(self, reason: str, pointer: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pointer = pointer


def _unit_code(code: str) -> str | None:
    """The UN/CEFACT code of a unit alias (``°C`` → ``CEL``), or None when it is unknown.

    An unknown alias is left as it is: the validator reports it with its pointer.
    """
    try:
        return code_for(code)
    except UnitError:
        return None


def _attr(attr: Any, pointer: str) -> None:
    if isinstance(attr, list):
        for index, instance in enumerate(attr):
            _attr(instance, f"{pointer}/{index}")
        return
    if not isinstance(attr, dict):
        return
    for member in _TIME_MEMBERS:
        value = attr.get(member)
        if value is not None and not (isinstance(value, str) and _CANONICAL.fullmatch(value)):
            try:
                attr[member] = utc_time(value)
            except ModelError as exc:
                raise NormalizeError(str(exc), f"{pointer}/{member}") from exc
    if attr.get("type") == "GeoProperty" and isinstance(attr.get("value"), dict) and "crs" in attr["value"]:
        attr["value"] = _reproject(attr["value"], pointer + "/value")
    unit = attr.get("unitCode")
    if isinstance(unit, str) and unit:
        mapped = _unit_code(unit)
        if mapped:
            attr["unitCode"] = mapped
    for key, sub in attr.items():
        if isinstance(sub, dict) and "type" in sub and key not in ("value", "json"):
            _attr(sub, f"{pointer}/{escape(key)}")


def _reproject(geometry: dict[str, Any], pointer: str) -> dict[str, Any]:
    """A geometry carrying a legacy GeoJSON ``crs`` member, reprojected to WGS84 without it.

    RFC 7946 dropped ``crs`` (coordinates are WGS84 lon/lat), yet vendors still send Lambert-93
    with ``{"crs": {"type": "name", "properties": {"name": "EPSG:2154"}}}``.
    """
    crs = geometry.get("crs")
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else crs
    if not isinstance(name, str | int) or isinstance(name, bool):
        raise NormalizeError("unreadable GeoJSON 'crs' member (expected a named CRS such as EPSG:2154)",
                             pointer + "/crs")
    bare = {k: v for k, v in geometry.items() if k != "crs"}
    try:
        return to_wgs84(bare, name)
    except ModelError as exc:
        raise NormalizeError(str(exc), pointer) from exc


def normalize(item: Entity) -> Entity:
    """Normalize one entity in place and return it."""
    entity_id = item.get("id")
    entity_type = item.get("type")
    if not isinstance(entity_type, str) or not entity_type:
        raise NormalizeError("entity has no type", "/type")
    if isinstance(entity_id, int) or (isinstance(entity_id, str) and entity_id and not is_uri(entity_id)):
        try:
            item["id"] = urn(entity_type, entity_id)
        except ModelError as exc:
            raise NormalizeError(str(exc), "/id") from exc
    elif not isinstance(entity_id, str) or not entity_id:
        raise NormalizeError("entity has no id", "/id")
    for name, value in item.items():
        if name not in ENTITY_MEMBERS:
            _attr(value, "/" + escape(name))
    _check_unicode(item)
    return item


def _check_unicode(item: Entity) -> None:
    """Refuse strings that are not Unicode text (a lone surrogate that ``json.loads`` let through).

    Such a string cannot be stored as UTF-8 by any sink; caught here it is one dead letter,
    instead of a failed commit for every message that shares the group.
    """
    try:
        orjson.dumps(item)
        return
    except TypeError:
        pass  # orjson also refuses integers beyond 64 bits, which are valid JSON: look closer
    text = json.dumps(item, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NormalizeError("a string is not valid Unicode (lone UTF-16 surrogate)",
                             _surrogate_pointer(item, "")) from exc


def _surrogate_pointer(value: Any, pointer: str) -> str:
    """The JSON pointer of the first string or key holding a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return pointer or "/"
        return ""
    if isinstance(value, dict):
        for key, sub in value.items():
            here = f"{pointer}/{escape(str(key))}"
            found = _surrogate_pointer(str(key), here) or _surrogate_pointer(sub, here)
            if found:
                return found
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            found = _surrogate_pointer(sub, f"{pointer}/{index}")
            if found:
                return found
    return ""


def observed_times(item: Entity) -> dict[str, str]:
    """``attribute name → observedAt`` for every attribute that carries one (latest instance)."""
    out: dict[str, str] = {}
    for name, value in item.items():
        if name in ENTITY_MEMBERS:
            continue
        for instance in value if isinstance(value, list) else (value,):
            if isinstance(instance, dict):
                observed = instance.get("observedAt")
                if isinstance(observed, str) and (name not in out or observed > out[name]):
                    out[name] = observed
    return out
