"""A fast yes/no check for the JSON Schema subset our schemas use, compiled once into closures.

jsonschema's validators interpret the schema on every call (descend, evolve, reference lookups),
which costs hundreds of microseconds per entity. The gateway validates tens of thousands of
entities per second, almost all of them valid, so the hot path asks this compiled predicate first
and only runs jsonschema (for its exact messages) when the predicate says no. The predicate is
never more lenient than jsonschema: a schema using any keyword it does not implement compiles to
``None`` and callers fall back to jsonschema for every document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from referencing import Registry
from referencing.exceptions import Unresolvable

Check = Callable[[Any], bool]

_IGNORED: Final = frozenset(
    {
        "$schema", "$id", "$defs", "definitions", "$comment", "title", "description", "examples", "default",
        "deprecated", "readOnly", "writeOnly", "$anchor", "$schemaVersion", "modelTags", "derivedFrom", "license",
        "contentMediaType", "contentEncoding",
    }
)


class _Unsupported(Exception):
    """The schema uses a keyword this compiler does not implement."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


_TYPES: Final[Mapping[str, Check]] = {
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": _is_integer,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema applies it: booleans never equal numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and bool(a == b)


def _unique(items: list[Any]) -> bool:
    for i, first in enumerate(items):
        for second in items[i + 1:]:
            if _json_equal(first, second):
                return False
    return True


def _conjunction(checks: list[Check]) -> Check:
    """All checks, without a generator per call (this runs millions of times)."""
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)
    if len(checks) == 3:
        first, second, third = checks
        return lambda v: first(v) and second(v) and third(v)
    frozen = tuple(checks)

    def every(v: Any) -> bool:
        for check in frozen:
            if not check(v):
                return False
        return True

    return every


def _numeric(schema: Mapping[str, Any]) -> Check | None:
    """``{type: number|integer, minimum?, maximum?}`` (most model attributes) as one comparison."""
    keys = {k for k in schema if k not in _IGNORED and not k.startswith("x-")}
    if not keys or not keys <= {"type", "minimum", "maximum"} or schema.get("type") not in ("number", "integer"):
        return None
    low = schema.get("minimum", float("-inf"))
    high = schema.get("maximum", float("inf"))
    if not (_is_number(low) and _is_number(high)):
        return None
    if schema["type"] == "integer":
        return lambda v: (type(v) is int or (type(v) is float and v.is_integer())) and low <= v <= high
    return lambda v: (type(v) is float or type(v) is int) and low <= v <= high


class Compiler:
    """Compiles schemas against one registry; ``format_check(value, format) -> bool`` checks formats."""

    def __init__(self, registry: Registry[Any], format_check: Callable[[Any, str], bool]) -> None:
        self._registry = registry
        self._format = format_check
        self._memo: dict[tuple[int, str], list[Check]] = {}

    def compile(self, schema: Mapping[str, Any] | bool, base_uri: str) -> Check | None:
        """A predicate equivalent to (or stricter than) the schema, or None if not compilable."""
        try:
            return self._compile(schema, base_uri)
        except (_Unsupported, Unresolvable, re.error):
            return None

    def _compile(self, schema: Any, base: str) -> Check:
        if schema is True:
            return lambda v: True
        if schema is False:
            return lambda v: False
        if not isinstance(schema, Mapping):
            raise _Unsupported(repr(schema))
        key = (id(schema), base)
        cell = self._memo.get(key)
        if cell is not None:
            # Recursive schema: defer to the slot filled once compilation finishes.
            return lambda v: cell[0](v)
        slot: list[Check] = [lambda v: False]
        self._memo[key] = slot
        checks: list[Check] = []
        for keyword, value in schema.items():
            if keyword in _IGNORED or keyword.startswith("x-"):
                continue
            checks.extend(self._keyword(keyword, value, schema, base))
        numeric = _numeric(schema)
        if numeric is not None:
            compiled: Check = numeric
        else:
            compiled = _conjunction(checks)
        slot[0] = compiled
        return compiled

    def _keyword(self, keyword: str, value: Any, schema: Mapping[str, Any], base: str) -> list[Check]:
        if keyword == "$ref":
            resolved = self._registry.resolver(base).lookup(value)
            # The target document's base URI keys the memo, so recursive schemas compile once.
            target_base = str(resolved.resolver._base_uri)
            return [self._compile(resolved.contents, target_base)]
        if keyword == "type":
            names = [value] if isinstance(value, str) else list(value)
            tests = tuple(_TYPES[n] for n in names)
            return [tests[0]] if len(tests) == 1 else [lambda v: any(t(v) for t in tests)]
        if keyword == "enum":
            options = list(value)
            if all(isinstance(o, str) for o in options):
                strings = frozenset(options)
                return [lambda v: isinstance(v, str) and v in strings]
            return [lambda v: any(_json_equal(v, o) for o in options)]
        if keyword == "const":
            if isinstance(value, str):
                return [lambda v: isinstance(v, str) and v == value]
            return [lambda v: _json_equal(v, value)]
        if keyword == "minimum":
            return [lambda v: not _is_number(v) or v >= value]
        if keyword == "maximum":
            return [lambda v: not _is_number(v) or v <= value]
        if keyword == "exclusiveMinimum":
            return [lambda v: not _is_number(v) or v > value]
        if keyword == "exclusiveMaximum":
            return [lambda v: not _is_number(v) or v < value]
        if keyword == "minLength":
            return [lambda v: not isinstance(v, str) or len(v) >= value]
        if keyword == "maxLength":
            return [lambda v: not isinstance(v, str) or len(v) <= value]
        if keyword == "pattern":
            regex = re.compile(value)
            return [lambda v: not isinstance(v, str) or regex.search(v) is not None]
        if keyword == "format":
            fmt = str(value)
            check_format = self._format
            return [lambda v: check_format(v, fmt)]
        if keyword == "minItems":
            return [lambda v: not isinstance(v, list) or len(v) >= value]
        if keyword == "maxItems":
            return [lambda v: not isinstance(v, list) or len(v) <= value]
        if keyword == "uniqueItems":
            return [lambda v: not isinstance(v, list) or _unique(v)] if value else []
        if keyword == "items":
            if "prefixItems" in schema:
                raise _Unsupported("prefixItems")
            item = self._compile(value, base)
            return [lambda v: not isinstance(v, list) or all(item(i) for i in v)]
        if keyword == "required":
            members = tuple(value)
            return [lambda v: not isinstance(v, dict) or all(n in v for n in members)]
        if keyword == "properties":
            props = {name: self._compile(sub, base) for name, sub in value.items()}

            def properties(v: Any) -> bool:
                # Walk the instance's members, not the schema's: entities carry a handful of the
                # fifty attributes a model defines.
                if not isinstance(v, dict):
                    return True
                for name, member in v.items():
                    check = props.get(name)
                    if check is not None and not check(member):
                        return False
                return True

            return [properties]
        if keyword == "additionalProperties":
            if "patternProperties" in schema:
                raise _Unsupported("patternProperties")
            known = frozenset(schema.get("properties", {}))
            extra = self._compile(value, base)
            return [lambda v: not isinstance(v, dict) or all(extra(x) for k, x in v.items() if k not in known)]
        if keyword == "allOf":
            dispatch = self._discriminated(value, base)
            if dispatch is not None:
                return [dispatch]
            parts = tuple(self._compile(s, base) for s in value)
            return [lambda v: all(p(v) for p in parts)]
        if keyword == "anyOf":
            parts = tuple(self._compile(s, base) for s in value)
            return [lambda v: any(p(v) for p in parts)]
        if keyword == "oneOf":
            parts = tuple(self._compile(s, base) for s in value)
            return [lambda v: sum(1 for p in parts if p(v)) == 1]
        if keyword == "not":
            inner = self._compile(value, base)
            return [lambda v: not inner(v)]
        if keyword == "if":
            condition = self._compile(value, base)
            then = self._compile(schema.get("then", True), base)
            otherwise = self._compile(schema.get("else", True), base)
            return [lambda v: then(v) if condition(v) else otherwise(v)]
        if keyword in ("then", "else"):
            return []  # compiled with "if"; alone they have no effect
        raise _Unsupported(keyword)

    def _discriminated(self, parts: Any, base: str) -> Check | None:
        """``allOf: [{if: {properties: {P: {const: c}}, required: [P]}, then: S}, ...]`` as a dict lookup.

        This is how our GeoJSON Geometry dispatches on ``type``; evaluating six ``if`` schemas per
        value would dominate the cost of validating an entity.
        """
        if not isinstance(parts, list) or not parts:
            return None
        member: str | None = None
        table: dict[str, Check] = {}
        for part in parts:
            if not isinstance(part, Mapping) or set(part) != {"if", "then"}:
                return None
            condition = part["if"]
            if not isinstance(condition, Mapping) or set(condition) != {"properties", "required"}:
                return None
            props = condition["properties"]
            if not isinstance(props, Mapping) or len(props) != 1 or list(condition["required"]) != list(props):
                return None
            ((name, test),) = props.items()
            if not isinstance(test, Mapping) or set(test) != {"const"} or not isinstance(test["const"], str):
                return None
            if member is not None and name != member:
                return None
            member = name
            if test["const"] in table:
                return None
            table[test["const"]] = self._compile(part["then"], base)
        key = member

        def dispatch(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            tag = v.get(key)
            if not isinstance(tag, str):
                return True  # no condition matches: allOf of if/then without a match holds
            check = table.get(tag)
            return True if check is None else check(v)

        return dispatch
