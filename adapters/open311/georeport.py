"""Open311 GeoReport v2 formats: tolerant JSON and XML parsing, XML writing, and privacy.

Personal data (``first_name``, ``last_name``, ``email``, ``phone``, ``device_id``,
``account_id``) is dropped here, at parse time, so that it never reaches a raw message,
the archive, the store or a log line.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway.errors import InputError

PERSONAL_FIELDS: Final = frozenset({"first_name", "last_name", "email", "phone", "device_id", "account_id"})
"""Fields of a service request that identify a person: never kept."""

MAX_BODY: Final = 8 << 20
"""Largest GeoReport document read (a 1000-request page is well below)."""

MAX_REQUESTS: Final = 10_000
"""Most service requests accepted in one document."""

# The spec's own examples write codes as bare numbers with leading zeros ("service_code":006),
# which is not JSON; real servers copied them. Such numbers are turned into strings.
_LEADING_ZERO = re.compile(r'([:\[,]\s*)(-?0\d+(?:\.\d+)?)(\s*[,}\]])')


def strip_personal(request: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``request`` without any personal field (``attribute[...]`` answers are kept)."""
    return {k: v for k, v in request.items() if k not in PERSONAL_FIELDS}


def parse_json(body: bytes) -> Any:
    """Parse a GeoReport JSON body, tolerating the spec's leading-zero numbers."""
    if len(body) > MAX_BODY:
        raise InputError(f"GeoReport document over {MAX_BODY} bytes")
    text = body.decode("utf-8-sig")
    try:
        return json.loads(text)
    except ValueError as first:
        repaired = text
        # Applied twice: in "[006,007]" the comma is shared by two neighbouring matches.
        for _ in range(2):
            repaired = _LEADING_ZERO.sub(r'\1"\2"\3', repaired)
        try:
            return json.loads(repaired)
        except ValueError:
            raise InputError(f"GeoReport JSON is malformed: {first}") from first


def _element_value(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        return (element.text or "").strip()
    if element.tag in ("attributes", "values"):
        return [_element_value(child) for child in children]
    return {child.tag: _element_value(child) for child in children}


def parse_xml(body: bytes, item_tag: str) -> list[dict[str, Any]]:
    """Parse a GeoReport XML list (``<service_requests><request>...``) into dicts of text."""
    if len(body) > MAX_BODY:
        raise InputError(f"GeoReport document over {MAX_BODY} bytes")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        # No DTD is needed by GeoReport; refusing them closes entity-expansion attacks.
        raise InputError("GeoReport XML with a DOCTYPE or ENTITY declaration is refused")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise InputError(f"GeoReport XML is malformed: {exc}") from exc
    items = [child for child in root if child.tag == item_tag]
    if len(items) > MAX_REQUESTS:
        raise InputError(f"more than {MAX_REQUESTS} items in one document")
    out: list[dict[str, Any]] = []
    for item in items:
        doc: dict[str, Any] = {}
        for child in item:
            value = _element_value(child)
            doc[child.tag] = None if value == "" else value
        out.append(doc)
    return out


def parse_requests(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """Service requests from a ``requests.json`` or ``requests.xml`` answer, without personal data."""
    if "xml" in content_type:
        items: Any = parse_xml(body, "request")
    else:
        items = parse_json(body)
        if isinstance(items, Mapping) and isinstance(items.get("service_requests"), list):
            items = items["service_requests"]  # a few servers wrap the list
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise InputError("GeoReport requests answer must be a list of objects")
    if len(items) > MAX_REQUESTS:
        raise InputError(f"more than {MAX_REQUESTS} requests in one answer")
    return [strip_personal(item) for item in items]


def to_xml(root_tag: str, item_tag: str, items: Iterable[Mapping[str, Any]]) -> bytes:
    """Write a GeoReport XML list document."""
    root = ET.Element(root_tag)
    for item in items:
        node = ET.SubElement(root, item_tag)
        for key, value in item.items():
            _xml_value(ET.SubElement(node, key), value)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _xml_value(element: ET.Element, value: Any) -> None:
    if isinstance(value, list):
        singular = {"attributes": "attribute", "values": "value"}.get(element.tag, "item")
        for entry in value:
            _xml_value(ET.SubElement(element, singular), entry)
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            _xml_value(ET.SubElement(element, key), sub)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)
