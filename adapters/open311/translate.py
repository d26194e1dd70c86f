"""Pure translation of one Open311 service request into a ``service_requests`` entity.

A RawMessage payload is ``{"origin": "city" | "endpoint", "jurisdiction_id": "...",
"request": {...}}`` where ``request`` is a GeoReport v2 service request already stripped of
personal data; translation strips it again, so a hand-made payload cannot carry any either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from adapters.kit.payload import load_json
from gateway.errors import TranslationError
from gateway.model import Entity, ModelError, RawMessage, urn, utc_time

from .georeport import PERSONAL_FIELDS

MAX_PAYLOAD: Final = 256 * 1024
"""Largest payload for one request (descriptions are short; media are URLs)."""

MAX_TEXT: Final = 10_000
"""Longest text field kept (longer is cut, with a trailing ellipsis)."""

_CLOSED = frozenset({"closed", "resolved", "completed", "done", "archived"})
_TEXT_FIELDS = ("service_name", "agency_responsible", "service_notice", "status_notes", "description")
_TIME_FIELDS = ("requested_datetime", "updated_datetime", "expected_datetime")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _number(value: Any, pointer: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise TranslationError(f"{value!r} is not a number", pointer) from exc
    if not math.isfinite(number):
        raise TranslationError(f"{value!r} is not a finite number", pointer)
    return number


def _prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


def request_entity_id(jurisdiction: str, request_id: str) -> str:
    """The entity id of a service request: jurisdiction and id, so cities never collide."""
    return urn("service_requests", f"{jurisdiction}:{request_id}" if jurisdiction else request_id)


def to_entities(raw: RawMessage) -> list[Entity]:
    """Translate one recorded service request into its ``service_requests`` entity."""
    if len(raw.payload) > MAX_PAYLOAD:
        raise TranslationError(f"payload over {MAX_PAYLOAD} bytes")
    doc = load_json(raw.payload)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("request"), Mapping):
        raise TranslationError("payload must be {origin, jurisdiction_id, request: {...}}", "/request")
    request = {k: v for k, v in doc["request"].items() if k not in PERSONAL_FIELDS}
    jurisdiction = _text(doc.get("jurisdiction_id") or request.get("jurisdiction_id")) or ""
    request_id = _text(request.get("service_request_id"))
    if request_id is None:
        raise TranslationError("service_request_id is missing", "/request/service_request_id")

    item: Entity = {"id": request_entity_id(jurisdiction, request_id), "type": "service_requests"}
    item["service_request_id"] = _prop(request_id)
    if jurisdiction:
        item["jurisdiction_id"] = _prop(jurisdiction)
    code = _text(request.get("service_code"))
    if code is not None:
        item["service_code"] = _prop(code)
    for name in _TEXT_FIELDS:
        text = _text(request.get(name))
        if text is not None:
            item[name] = _prop(text)

    status = _text(request.get("status"))
    if status is not None:
        normalized = "closed" if status.lower() in _CLOSED else "open"
        item["status"] = _prop(normalized)
        if status.lower() not in ("open", "closed"):
            # The model knows only open/closed; the city's own word is kept beside it.
            item["status"]["vendorStatus"] = _prop(status)

    for name in _TIME_FIELDS:
        value = request.get(name)
        if value in (None, ""):
            continue
        try:
            item[name] = _prop(utc_time(str(value)))
        except ModelError as exc:
            raise TranslationError(str(exc), f"/request/{name}") from exc
    if "requested_datetime" in item:
        item["dateCreated"] = _prop(item["requested_datetime"]["value"])
    if "updated_datetime" in item:
        item["dateModified"] = _prop(item["updated_datetime"]["value"])

    media = _text(request.get("media_url"))
    if media is not None and media.lower().startswith(("http://", "https://")) and " " not in media:
        # Only web links: a javascript: or data: URL would be served to every dashboard.
        item["media_url"] = _prop(media)
    address = _text(request.get("address_string") or request.get("address"))
    if address is not None:
        item["address_string"] = _prop(address)
    postal = _text(request.get("zipcode"))
    if postal is not None:
        item["address"] = _prop({"postalCode": postal})

    lat = _number(request.get("lat"), "/request/lat")
    lon = _number(request.get("long"), "/request/long")
    if lat is not None and lon is not None:
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise TranslationError(f"lat {lat}, long {lon} is not a WGS84 position", "/request/lat")
        item["location"] = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}

    answers = request.get("attributes")
    if isinstance(answers, Mapping) and answers:
        item["attributes"] = _prop(
            [{"code": str(code), "values": [{"name": str(v)} for v in (val if isinstance(val, list) else [val])]}
             for code, val in sorted(answers.items())]
        )
    return [item]
