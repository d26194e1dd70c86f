"""Small assertions the checks share: statuses, ProblemDetails, media types, links, attributes."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urljoin

from conformance.context import CONTEXT_REL, ERRORS, RunContext
from conformance.http import Response
from conformance.registry import Fail, Skip

ATTRIBUTE_TYPES = frozenset({"Property", "Relationship", "GeoProperty", "LanguageProperty", "VocabProperty",
                             "ListProperty", "ListRelationship", "JsonProperty"})
META = frozenset({"id", "type", "@context", "scope", "createdAt", "modifiedAt", "deletedAt"})


def expect(cond: object, message: str) -> None:
    """Fail with ``message`` unless ``cond`` holds."""
    if not cond:
        raise Fail(message)


def status(resp: Response, *codes: int) -> None:
    """Fail unless the response status is one of ``codes``."""
    if resp.status not in codes:
        wanted = " or ".join(str(c) for c in codes)
        raise Fail(f"expected HTTP {wanted}, got {resp.status}" + _problem_hint(resp))


def _problem_hint(resp: Response) -> str:
    body = resp.json()
    if isinstance(body, dict) and "type" in body:
        return f" ({body.get('type')})"
    return ""


def problem(resp: Response, code: int, *names: str) -> None:
    """Fail unless the response is HTTP ``code`` with a ProblemDetails of one of the error ``names``."""
    status(resp, code)
    body = resp.json()
    expect(isinstance(body, dict), f"HTTP {code} without a ProblemDetails JSON object body")
    wanted = [ERRORS + n for n in names]
    got = body.get("type")
    expect(got in wanted, f"error type {got!r}, expected {' or '.join(wanted)}")


def bare_status(resp: Response, code: int) -> None:
    """Fail unless the response has status ``code`` (the body is not judged)."""
    status(resp, code)


def json_list(resp: Response) -> list[dict[str, Any]]:
    """The body as a list of JSON objects (after checking 200)."""
    status(resp, 200)
    body = resp.json()
    expect(isinstance(body, list), f"expected a JSON array, got {type(body).__name__}")
    expect(all(isinstance(x, dict) for x in body), "the array holds something other than JSON objects")
    return list(body)


def json_object(resp: Response, code: int = 200) -> dict[str, Any]:
    """The body as a JSON object (after checking ``code``)."""
    status(resp, code)
    body = resp.json()
    expect(isinstance(body, dict), f"expected a JSON object, got {type(body).__name__}")
    return dict(body)


def context_links(resp: Response) -> list[tuple[str, dict[str, str]]]:
    """Link header entries whose rel is the JSON-LD context relation."""
    return [(u, p) for u, p in resp.links() if p.get("rel") == CONTEXT_REL]


def rel_link(resp: Response, rel: str) -> str | None:
    """The absolute URL of the Link with relation ``rel`` (RFC 8288), or None."""
    for uri, params in resp.links():
        if rel in params.get("rel", "").split():
            return uri
    return None


def resolve(ctx: RunContext, uri: str) -> str:
    """Resolve a (possibly relative) link against the API's base URL."""
    base = ctx.endpoint.url + "/ngsi-ld/v1/entities"
    return urljoin(base, uri)


def attrs_of(ent: dict[str, Any]) -> dict[str, Any]:
    """The attributes of an entity (members that are not id, type, @context or system ones)."""
    return {k: v for k, v in ent.items() if k not in META}


def scalar_attr(ent: dict[str, Any], kind: type) -> tuple[str, Any]:
    """The first Property (by name) whose value is of ``kind``; Skip when there is none."""
    for name in sorted(attrs_of(ent)):
        attr = ent[name]
        if isinstance(attr, dict) and attr.get("type") == "Property":
            value = attr.get("value")
            if isinstance(value, kind) and not isinstance(value, bool):
                if kind is str and not value:
                    continue
                return name, value
    raise Skip(f"entity {ent.get('id')} has no Property with a {kind.__name__} value to query on")


def number_attr(ent: dict[str, Any]) -> tuple[str, float]:
    """The first numeric Property of an entity."""
    for kind in (float, int):
        try:
            name, value = scalar_attr(ent, kind)
            return name, float(value)
        except Skip:
            continue
    raise Skip(f"entity {ent.get('id')} has no numeric Property to query on")


def point_of(ent: dict[str, Any]) -> tuple[float, float]:
    """The lon/lat of an entity's ``location`` Point; Skip when it has none."""
    loc = ent.get("location")
    if isinstance(loc, dict) and loc.get("type") == "GeoProperty":
        value = loc.get("value")
        if isinstance(value, dict) and value.get("type") == "Point":
            coords = value.get("coordinates")
            if isinstance(coords, list) and len(coords) >= 2:
                return float(coords[0]), float(coords[1])
    raise Skip(f"entity {ent.get('id')} has no location Point")


def value_of(ent: dict[str, Any], name: str) -> Any:
    """The value of attribute ``name`` in a normalized entity (None when absent)."""
    attr = ent.get(name)
    if isinstance(attr, dict):
        return attr.get("value", attr.get("object"))
    return None


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres between two lon/lat points (haversine)."""
    lon1, lat1, lon2, lat2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371008.8 * math.asin(math.sqrt(h))


def q_literal(value: Any) -> str:
    """A value written as an NGSI-LD q literal (strings quoted)."""
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ids(items: list[dict[str, Any]]) -> list[str]:
    """The ids of a list of entities."""
    return [str(e.get("id")) for e in items]


def is_normalized(ent: dict[str, Any]) -> list[str]:
    """Attributes of ``ent`` not in normalized form (no attribute type)."""
    bad = []
    for name, attr in attrs_of(ent).items():
        for inst in attr if isinstance(attr, list) else [attr]:
            if not (isinstance(inst, dict) and inst.get("type") in ATTRIBUTE_TYPES):
                bad.append(name)
    return bad
