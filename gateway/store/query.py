"""The NGSI-LD query languages: ``q`` (§4.9), ``scopeQ`` (§4.19) and type expressions (§4.17).

Pure code, no I/O: each parser turns the text of a request parameter into a small immutable tree
that evaluates against the *expanded* normalized entity the store keeps (attribute names are IRIs,
multi-instance attributes are lists). Terms are expanded through the ``expand`` callable the caller
builds from the request's @context, so the same tree serves every context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final

from gateway.model import VALUE_KEY
from gateway.store import patterns
from gateway.store.problems import NgsiError

Expand = Callable[[str], str]
"""Expands a term (attribute name, type name) to its IRI with the request's @context."""

MAX_Q_LENGTH: Final = 4096
"""Longest ``q`` (or scopeQ / type expression) accepted; longer ones are TooComplexQuery."""
MAX_TERMS: Final = 64
"""Most query terms in one expression."""
MAX_DEPTH: Final = 16
"""Deepest nesting of parentheses."""
MAX_REGEX_LENGTH: Final = patterns.MAX_PATTERN_LENGTH
"""Longest pattern after ``~=`` (patterns run on RE2, see :mod:`gateway.store.patterns`)."""

CORE: Final = "https://uri.etsi.org/ngsi-ld/"
META_MEMBERS: Final = frozenset(
    {"observedAt", "unitCode", "datasetId", "createdAt", "modifiedAt", "deletedAt", "instanceId", "lang"}
)
"""Members of an attribute that a query path may address like sub-properties."""
_TIME_MEMBERS: Final = frozenset({"observedAt", "createdAt", "modifiedAt", "deletedAt"})


class QuerySyntaxError(NgsiError, ValueError):
    """A query text that does not follow the grammar (BadRequestData 400); names the position."""

    def __init__(self, message: str, text: str, position: int) -> None:
        self.position = position
        self.text = text
        super().__init__("BadRequestData", f"{message} at position {position} in {text!r}")


class TooComplex(NgsiError, ValueError):
    """A query beyond the limits (length, terms, nesting): TooComplexQuery 403."""

    def __init__(self, detail: str) -> None:
        super().__init__("TooComplexQuery", detail)


# --------------------------------------------------------------------------- literals


@dataclass(frozen=True, slots=True)
class Literal:
    """A value written in a query: its kind decides how it compares (numbers never equal strings)."""

    kind: str
    """One of ``number``, ``string``, ``datetime``, ``date``, ``time``, ``boolean``, ``uri``."""
    value: Any
    text: str


_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[Zz]|[+-]\d{2}:?\d{2})?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:-#/@%")
_IRI_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+\-]*://[^\s=!<>~;|()\[\]\",]+")


def parse_datetime(text: str) -> datetime | None:
    """An aware UTC datetime for an RFC 3339 text (no zone → UTC), or None when it is not one."""
    if not isinstance(text, str) or not _DATETIME.fullmatch(text):
        return None
    value = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _parse_time_of_day(text: str) -> time | None:
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        return None
    value = text[:-1] if text[-1] in "Zz" else text
    try:
        return time.fromisoformat(value)
    except ValueError:
        return None


_SPACE_OFFSET = re.compile(r"^(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


def _classify(raw: str, text: str, position: int) -> Literal:
    # an unencoded "+" of a time zone offset arrives as a space after URL decoding
    raw = _SPACE_OFFSET.sub(r"\1+\2", raw)
    if raw in ("true", "false"):
        return Literal("boolean", raw == "true", raw)
    if _NUMBER.fullmatch(raw):
        return Literal("number", float(raw) if any(c in raw for c in ".eE") else int(raw), raw)
    if _DATETIME.fullmatch(raw):
        parsed = parse_datetime(raw)
        if parsed is None:
            raise QuerySyntaxError(f"invalid date-time {raw!r}", text, position)
        return Literal("datetime", parsed, raw)
    if _DATE.fullmatch(raw):
        try:
            return Literal("date", date.fromisoformat(raw), raw)
        except ValueError:
            raise QuerySyntaxError(f"invalid date {raw!r}", text, position) from None
    if _TIME.fullmatch(raw):
        parsed_time = _parse_time_of_day(raw)
        if parsed_time is None:
            raise QuerySyntaxError(f"invalid time {raw!r}", text, position)
        return Literal("time", parsed_time, raw)
    if _URI.fullmatch(raw):
        return Literal("uri", raw, raw)
    if raw == "":
        raise QuerySyntaxError("missing value", text, position)
    raise QuerySyntaxError(
        f"unquoted value {raw!r} (strings must be in double quotes; numbers, dates, true/false and "
        "URIs are written bare)",
        text,
        position,
    )


# --------------------------------------------------------------------------- the q tree


@dataclass(frozen=True, slots=True)
class AttrPath:
    """``attr.sub.sub[trail.path]``: an attribute, sub-properties, then a path into its JSON value."""

    attr: str
    sub: tuple[str, ...] = ()
    trail: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = ".".join((self.attr, *self.sub))
        return text + (f"[{'.'.join(self.trail)}]" if self.trail else "")


@dataclass(frozen=True, slots=True)
class Term:
    """One query term: existence (no operator), comparison, range, value list or pattern."""

    path: AttrPath
    op: str | None = None
    """``==``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``~=``, ``!~=``, ``!`` (absence) or None (exists)."""
    values: tuple[Literal, ...] = ()
    range: tuple[Literal, Literal] | None = None
    pattern: patterns.Matcher | None = None

    def evaluate(self, item: Mapping[str, Any], expand: Expand) -> bool:
        """True when the entity satisfies this term."""
        targets = _resolve(item, self.path, expand)
        if self.op is None:
            return bool(targets)
        if self.op == "!":
            return not targets
        if not targets:
            return False  # spec: a term over a target that does not exist never matches
        flat = _flatten(targets)
        if self.op == "~=":
            return any(_pattern_match(self.pattern, v) for v in flat)
        if self.op == "!~=":
            return not any(_pattern_match(self.pattern, v) for v in flat)
        if self.op in ("==", "!="):
            if self.range is not None:
                low, high = self.range
                hit = any(_compare(v, low, ">=", expand) and _compare(v, high, "<=", expand) for v in flat)
            else:
                hit = any(_compare(v, lit, "==", expand) for v in flat for lit in self.values)
            return hit if self.op == "==" else not hit
        return any(_compare(v, self.values[0], self.op, expand) for v in flat)


@dataclass(frozen=True, slots=True)
class Logical:
    """``;`` (and) or ``|`` (or) over two or more sub-expressions."""

    op: str
    parts: tuple[Term | Logical, ...]

    def evaluate(self, item: Mapping[str, Any], expand: Expand) -> bool:
        """True when the entity satisfies the combination."""
        if self.op == ";":
            return all(p.evaluate(item, expand) for p in self.parts)
        return any(p.evaluate(item, expand) for p in self.parts)


@dataclass(frozen=True, slots=True)
class QExpr:
    """A parsed ``q`` expression."""

    root: Term | Logical
    text: str

    def attributes(self) -> set[str]:
        """The attribute names (unexpanded terms, first path segment) the expression uses."""
        return {t.path.attr for t in self.terms()}

    def terms(self) -> list[Term]:
        """Every term of the expression, left to right."""
        out: list[Term] = []
        stack: list[Term | Logical] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Term):
                out.append(node)
            else:
                stack.extend(reversed(node.parts))
        return out

    def evaluate(self, item: Mapping[str, Any], expand: Expand) -> bool:
        """True when the expanded normalized entity matches the expression."""
        return self.root.evaluate(item, expand)


# --------------------------------------------------------------------------- evaluation helpers


def _get(mapping: Mapping[str, Any], name: str, expand: Expand) -> Any:
    """Look a member up by expanded IRI, then by the bare term (stores differ on core members)."""
    if name in META_MEMBERS:
        for key in (name, CORE + name):
            if key in mapping:
                return mapping[key]
        return None
    iri = expand(name)
    if iri in mapping:
        return mapping[iri]
    return mapping.get(name)


def _unwrap(value: Any) -> Any:
    """Drop JSON-LD value objects (``{"@value": ..., "@type": ...}``) to their plain value."""
    if isinstance(value, Mapping) and "@value" in value:
        return value["@value"]
    return value


def _attr_type(attr: Mapping[str, Any]) -> str:
    kind = attr.get("type", attr.get("@type", "Property"))
    if isinstance(kind, list):
        kind = kind[0] if kind else "Property"
    kind = str(kind)
    return kind[len(CORE) :] if kind.startswith(CORE) else kind


def attribute_target(attr: Any) -> Any:
    """The value a query compares for one attribute instance (value, object, languageMap...)."""
    if not isinstance(attr, Mapping):
        return _unwrap(attr)
    kind = _attr_type(attr)
    member = VALUE_KEY.get(kind, "value")
    value = attr.get(member)
    if value is None:
        value = attr.get(CORE + member, attr.get("value"))
    if kind == "ListRelationship" and isinstance(value, list):
        return [v.get("object") if isinstance(v, Mapping) else v for v in value]
    if kind == "JsonProperty":
        return value
    if kind == "VocabProperty":
        # vocab values are stored expanded: compare them as IRIs (the literal gets expanded too)
        return [("vocab", v) for v in value] if isinstance(value, list) else ("vocab", value)
    return _unwrap(value)


_MISSING: Final = object()


def _resolve(item: Mapping[str, Any], path: AttrPath, expand: Expand) -> list[Any]:
    """Every target value the path reaches (one per attribute instance), empty when none exists."""
    attr = _get(item, path.attr, expand)
    if attr is None:
        return []
    nodes: list[Any] = list(attr) if isinstance(attr, list) else [attr]
    for index, segment in enumerate(path.sub):
        is_last = index == len(path.sub) - 1
        found: list[Any] = []
        for node in nodes:
            if not isinstance(node, Mapping):
                continue
            child = _get(node, segment, expand)
            if child is None:
                continue
            if segment in META_MEMBERS:
                if is_last:
                    found.append(("meta", segment, child))
                continue
            found.extend(child if isinstance(child, list) else [child])
        nodes = found
        if not nodes:
            return []
    targets: list[Any] = []
    for node in nodes:
        if isinstance(node, tuple) and len(node) == 3 and node[0] == "meta":
            value: Any = _unwrap(node[2])
            targets.append(("datetime", value) if node[1] in _TIME_MEMBERS else value)
            continue
        value = attribute_target(node)
        if not path.trail and isinstance(node, Mapping) and _attr_type(node) == "LanguageProperty":
            # without a language tag, a comparison matches the string of any language
            if isinstance(value, Mapping):
                targets.extend(value.values())
            continue
        for segment in path.trail:
            value = _descend(value, segment, expand)
            if value is _MISSING:
                break
        if value is not _MISSING and value is not None:
            targets.append(value)
    return targets


def _descend(value: Any, segment: str, expand: Expand) -> Any:
    if isinstance(value, list):
        picked = [_descend(v, segment, expand) for v in value]
        picked = [p for p in picked if p is not _MISSING]
        return picked if picked else _MISSING
    if isinstance(value, Mapping):
        for key in (segment, expand(segment)):
            if key in value:
                return _unwrap(value[key])
    return _MISSING


def _flatten(targets: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for target in targets:
        if isinstance(target, list):
            out.extend(_unwrap(t) for t in target)
        else:
            out.append(target)
    return out


def _pattern_match(pattern: patterns.Matcher | None, value: Any) -> bool:
    if isinstance(value, tuple):
        value = value[1]
    if pattern is None or not isinstance(value, str):
        return False
    return pattern.search(value)


def _order(left: Any, right: Any, op: str) -> bool:
    if op in ("==",):
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == ">":
        return bool(left > right)
    if op == ">=":
        return bool(left >= right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    return False


def _compare(value: Any, lit: Literal, op: str, expand: Expand) -> bool:
    """Compare one target value to a literal with NGSI-LD typing: kinds must agree."""
    if isinstance(value, tuple):  # a time member (observedAt...) or a vocab IRI
        if value[0] == "vocab":
            return op in ("==", "!=") and lit.kind in ("string", "uri") and (
                (value[1] in (lit.value, expand(lit.value))) is (op == "==")
            )
        value = value[1]
    kind = lit.kind
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return _order(value, lit.value, op)
    if kind == "boolean":
        return isinstance(value, bool) and op in ("==",) and value is lit.value
    if kind == "string":
        return isinstance(value, str) and _order(value, lit.value, op)
    if kind == "uri":
        if not isinstance(value, str):
            return False
        if op == "==":
            return value == lit.value or value == expand(lit.value)
        return _order(value, lit.value, op)
    if kind == "datetime":
        moment = parse_datetime(value) if isinstance(value, str) else None
        return moment is not None and _order(moment, lit.value, op)
    if kind == "date":
        if not isinstance(value, str):
            return False
        if _DATE.fullmatch(value):
            try:
                return _order(date.fromisoformat(value), lit.value, op)
            except ValueError:
                return False
        moment = parse_datetime(value)
        return moment is not None and _order(moment.date(), lit.value, op)
    if kind == "time":
        parsed = _parse_time_of_day(value) if isinstance(value, str) else None
        return parsed is not None and _order(parsed, lit.value, op)
    return False


# --------------------------------------------------------------------------- orderBy


def sort_rank(value: Any) -> tuple[int, Any]:
    """A total order over JSON values for orderBy: missing < numbers < strings < others."""
    if value is None:
        return 0, 0
    if isinstance(value, bool):
        return 1, int(value)
    if isinstance(value, int | float):
        return 1, value
    if isinstance(value, str):
        return 2, value
    return 3, repr(value)


class OrderKey:
    """A multi-item orderBy key (§4.23): compares item by item, each ascending or descending."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[tuple[tuple[int, Any], bool], ...]) -> None:
        self.items = items

    def __lt__(self, other: OrderKey) -> bool:
        for (mine, desc), (theirs, _) in zip(self.items, other.items, strict=True):
            if mine != theirs:
                return bool(mine > theirs) if desc else bool(mine < theirs)
        return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OrderKey) and self.items == other.items

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------- the q parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.terms = 0
        self.depth = 0

    def error(self, message: str, position: int | None = None) -> QuerySyntaxError:
        return QuerySyntaxError(message, self.text, self.pos if position is None else position)

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def parse(self) -> Term | Logical:
        node = self.parse_or()
        self.skip_ws()
        if self.pos != len(self.text):
            raise self.error(f"unexpected {self.text[self.pos]!r}")
        return node

    def parse_or(self) -> Term | Logical:
        parts = [self.parse_and()]
        self.skip_ws()
        while self.peek() == "|":
            self.pos += 1
            parts.append(self.parse_and())
            self.skip_ws()
        return parts[0] if len(parts) == 1 else Logical("|", tuple(parts))

    def parse_and(self) -> Term | Logical:
        parts = [self.parse_primary()]
        self.skip_ws()
        while self.peek() == ";":
            self.pos += 1
            parts.append(self.parse_primary())
            self.skip_ws()
        return parts[0] if len(parts) == 1 else Logical(";", tuple(parts))

    def parse_primary(self) -> Term | Logical:
        self.skip_ws()
        if self.peek() == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise TooComplex(f"more than {MAX_DEPTH} nested parentheses")
            self.pos += 1
            node = self.parse_or()
            self.skip_ws()
            if self.peek() != ")":
                raise self.error("missing ')'")
            self.pos += 1
            self.depth -= 1
            return node
        return self.parse_term()

    def parse_name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _NAME_CHARS:
            self.pos += 1
        if self.pos == start:
            found = self.text[self.pos] if self.pos < len(self.text) else "end of query"
            raise self.error(f"expected an attribute name, found {found!r}")
        return self.text[start : self.pos]

    def parse_path(self) -> AttrPath:
        iri = _IRI_NAME.match(self.text, self.pos)
        if iri is not None:
            # an attribute named by its full IRI: dots belong to the IRI, not to a path
            self.pos = iri.end()
            attr = iri.group()
        else:
            attr = self.parse_name()
        subs: list[str] = []
        while self.peek() == ".":
            self.pos += 1
            subs.append(self.parse_name())
        trail: list[str] = []
        if self.peek() == "[":
            self.pos += 1
            trail.append(self.parse_name())
            while self.peek() == ".":
                self.pos += 1
                trail.append(self.parse_name())
            if self.peek() != "]":
                raise self.error("missing ']'")
            self.pos += 1
            # the older compound form a[b][c] is the same as a[b.c]
            while self.peek() == "[":
                self.pos += 1
                trail.append(self.parse_name())
                if self.peek() != "]":
                    raise self.error("missing ']'")
                self.pos += 1
        return AttrPath(attr, tuple(subs), tuple(trail))

    def parse_term(self) -> Term:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise TooComplex(f"more than {MAX_TERMS} query terms")
        if self.peek() == "!" and self.peek(2) not in ("!=",) and self.peek(3) != "!~=":
            self.pos += 1
            return Term(self.parse_path(), "!")
        path = self.parse_path()
        self.skip_ws()
        for op in ("!~=", "==", "!=", ">=", "<=", "~=", ">", "<"):
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                break
        else:
            if self.pos < len(self.text) and self.text[self.pos] not in ";|)":
                raise self.error(f"expected an operator after {str(path)!r}")
            return Term(path)
        self.skip_ws()
        if op in ("~=", "!~="):
            return Term(path, op, pattern=self.parse_regex())
        start = self.pos
        first = self.parse_value()
        if op in ("==", "!=") and self.peek(2) == "..":
            self.pos += 2
            second = self.parse_value()
            if first.kind != second.kind:
                raise self.error("range bounds of different kinds", start)
            if first.kind not in ("number", "string", "datetime", "date", "time"):
                raise self.error("a range needs numbers, strings, dates or times", start)
            return Term(path, op, range=(first, second))
        values = [first]
        while op in ("==", "!=") and self.peek() == ",":
            self.pos += 1
            values.append(self.parse_value())
        if op not in ("==", "!=") and first.kind in ("boolean", "uri"):
            raise self.error(f"{op} needs a number, string, date or time", start)
        return Term(path, op, values=tuple(values))

    def parse_value(self) -> Literal:
        start = self.pos
        if self.peek() == '"':
            return Literal("string", self.parse_quoted(), self.text[start : self.pos])
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in ";|),\"" or self.text.startswith("..", self.pos):
                break
            self.pos += 1
        raw = self.text[start : self.pos].strip()
        return _classify(raw, self.text, start)

    def parse_quoted(self) -> str:
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if ch == '"':
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise self.error("unterminated string", start)

    def parse_regex(self) -> patterns.Matcher:
        start = self.pos
        if self.peek() == '"':
            source = self.parse_quoted()
        else:
            depth = 0
            in_class = False
            while self.pos < len(self.text):
                ch = self.text[self.pos]
                if ch == "\\":
                    self.pos += 2
                    continue
                if in_class:
                    in_class = ch != "]"
                elif ch == "[":
                    in_class = True
                elif ch == "(":
                    depth += 1
                elif ch == ")":
                    if depth == 0:
                        break
                    depth -= 1
                elif ch in ";|" and depth == 0:
                    break
                self.pos += 1
            self.pos = min(self.pos, len(self.text))
            source = self.text[start : self.pos]
        if not source:
            raise self.error("missing pattern", start)
        if len(source) > MAX_REGEX_LENGTH:
            raise TooComplex(f"pattern longer than {MAX_REGEX_LENGTH} characters")
        try:
            return patterns.compile_user_pattern(source, "pattern")
        except NgsiError as exc:
            if exc.type != "BadRequestData":
                raise
            raise self.error(f"invalid pattern: {exc.detail}", start) from None


def _check_length(text: str, what: str) -> None:
    if len(text) > MAX_Q_LENGTH:
        raise TooComplex(f"{what} longer than {MAX_Q_LENGTH} characters")


def parse_q(text: str) -> QExpr:
    """Parse an NGSI-LD ``q`` expression (§4.9); raise QuerySyntaxError or TooComplex."""
    _check_length(text, "q")
    if not text.strip():
        raise QuerySyntaxError("empty query", text, 0)
    return QExpr(_Parser(text).parse(), text)


# --------------------------------------------------------------------------- scopeQ (§4.19)


@dataclass(frozen=True, slots=True)
class ScopeTerm:
    """One scope pattern: ``/A/B`` exact, ``/A/#`` A and descendants, ``+`` any one segment (``/A/+/C``)."""

    segments: tuple[str, ...]
    """The segments; ``+`` matches any single segment."""
    wildcard: str = ""
    """``""`` (exact length) or ``"#"`` (this and every level below)."""

    def matches(self, scopes: Iterable[str]) -> bool:
        """True when any of the entity's scopes fits the pattern."""
        n = len(self.segments)
        for scope in scopes:
            parts = tuple(scope.split("/")[1:]) if scope.startswith("/") else ()
            if not parts:
                continue
            if self.wildcard == "#":
                if len(parts) < n:
                    continue
            elif len(parts) != n:
                continue
            if all(want == "+" or want == got for want, got in zip(self.segments, parts, strict=False)):
                return True
        return False


@dataclass(frozen=True, slots=True)
class ScopeLogical:
    """``;`` (and) or ``,`` / ``|`` (or) over scope terms."""

    op: str
    parts: tuple[ScopeTerm | ScopeLogical, ...]

    def matches(self, scopes: Iterable[str]) -> bool:
        """True when the combination holds for the entity's scopes."""
        listed = list(scopes)
        if self.op == ";":
            return all(p.matches(listed) for p in self.parts)
        return any(p.matches(listed) for p in self.parts)


@dataclass(frozen=True, slots=True)
class ScopeExpr:
    """A parsed ``scopeQ``."""

    root: ScopeTerm | ScopeLogical
    text: str

    def matches(self, scopes: Iterable[str] | str | None) -> bool:
        """True when an entity with these scopes matches (an entity without scope never does)."""
        if scopes is None:
            return False
        return self.root.matches([scopes] if isinstance(scopes, str) else list(scopes))


_SCOPE_SEGMENT = re.compile(r"[^/;,|()#+\s]+")


class _GroupParser:
    """Shared recursive descent for scopeQ and type expressions (and, or, parentheses)."""

    def __init__(self, text: str, or_ops: str, what: str) -> None:
        self.text = text
        self.pos = 0
        self.or_ops = or_ops
        self.what = what
        self.depth = 0
        self.terms = 0

    def error(self, message: str, position: int | None = None) -> QuerySyntaxError:
        return QuerySyntaxError(message, self.text, self.pos if position is None else position)

    def parse(self) -> Any:
        node = self.parse_or()
        if self.pos != len(self.text):
            raise self.error(f"unexpected {self.text[self.pos]!r}")
        return node

    def combine(self, op: str, parts: list[Any]) -> Any:
        raise NotImplementedError

    def term(self) -> Any:
        raise NotImplementedError

    def parse_or(self) -> Any:
        parts = [self.parse_and()]
        while self.pos < len(self.text) and self.text[self.pos] in self.or_ops:
            self.pos += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else self.combine("|", parts)

    def parse_and(self) -> Any:
        parts = [self.parse_primary()]
        while self.pos < len(self.text) and self.text[self.pos] == ";":
            self.pos += 1
            parts.append(self.parse_primary())
        return parts[0] if len(parts) == 1 else self.combine(";", parts)

    def parse_primary(self) -> Any:
        if self.pos < len(self.text) and self.text[self.pos] == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise TooComplex(f"more than {MAX_DEPTH} nested parentheses in {self.what}")
            self.pos += 1
            node = self.parse_or()
            if self.pos >= len(self.text) or self.text[self.pos] != ")":
                raise self.error("missing ')'")
            self.pos += 1
            self.depth -= 1
            return node
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise TooComplex(f"more than {MAX_TERMS} terms in {self.what}")
        return self.term()


class _ScopeParser(_GroupParser):
    def combine(self, op: str, parts: list[Any]) -> Any:
        return ScopeLogical(op, tuple(parts))

    def term(self) -> ScopeTerm:
        start = self.pos
        if self.pos >= len(self.text) or self.text[self.pos] != "/":
            raise self.error("a scope starts with '/'")
        segments: list[str] = []
        wildcard = ""
        while self.pos < len(self.text) and self.text[self.pos] == "/":
            self.pos += 1
            if self.pos < len(self.text) and self.text[self.pos] == "#":
                wildcard = "#"  # '#' only ends a scope pattern
                self.pos += 1
                break
            if self.pos < len(self.text) and self.text[self.pos] == "+":
                segments.append("+")
                self.pos += 1
                continue
            match = _SCOPE_SEGMENT.match(self.text, self.pos)
            if match is None:
                raise self.error("empty scope segment")
            segments.append(match.group())
            self.pos = match.end()
        if not segments and wildcard != "#":
            raise self.error("a scope needs at least one segment (or '/#')", start)
        return ScopeTerm(tuple(segments), wildcard)


def parse_scope_q(text: str) -> ScopeExpr:
    """Parse a ``scopeQ`` (§4.19): ``/A/B``, ``/A/#``, ``/A/+``, ``;`` and, ``,`` or, parentheses."""
    _check_length(text, "scopeQ")
    if not text:
        raise QuerySyntaxError("empty scopeQ", text, 0)
    return ScopeExpr(_ScopeParser(text, ",|", "scopeQ").parse(), text)


# --------------------------------------------------------------------------- type expressions (§4.17)


@dataclass(frozen=True, slots=True)
class TypeName:
    """One entity type name (a term or an IRI)."""

    name: str

    def holds(self, types: frozenset[str], expand: Expand) -> bool:
        """True when the entity has this type."""
        return self.name in types or expand(self.name) in types


@dataclass(frozen=True, slots=True)
class TypeLogical:
    """``;`` (and: the entity has all types) or ``,`` / ``|`` (or) over type names."""

    op: str
    parts: tuple[TypeName | TypeLogical, ...]

    def holds(self, types: frozenset[str], expand: Expand) -> bool:
        """True when the combination holds."""
        if self.op == ";":
            return all(p.holds(types, expand) for p in self.parts)
        return any(p.holds(types, expand) for p in self.parts)


@dataclass(frozen=True, slots=True)
class TypeExpr:
    """A parsed ``type`` parameter."""

    root: TypeName | TypeLogical
    text: str

    def types(self) -> set[str]:
        """Every type name the expression mentions (unexpanded)."""
        out: set[str] = set()
        stack: list[TypeName | TypeLogical] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, TypeName):
                out.add(node.name)
            else:
                stack.extend(node.parts)
        return out

    def is_simple(self) -> bool:
        """True for a plain name or a list of alternatives (SQL can prefilter with ``IN``)."""
        return isinstance(self.root, TypeName) or (
            self.root.op == "|" and all(isinstance(p, TypeName) for p in self.root.parts)
        )

    def matches(self, entity_types: Iterable[str] | str, expand: Expand) -> bool:
        """True when an entity with these (expanded) types matches."""
        types = frozenset([entity_types] if isinstance(entity_types, str) else entity_types)
        return self.root.holds(types, expand)


_TYPE_NAME = re.compile(r"[^,;|()\s]+")


class _TypeParser(_GroupParser):
    def combine(self, op: str, parts: list[Any]) -> Any:
        return TypeLogical(op, tuple(parts))

    def term(self) -> TypeName:
        match = _TYPE_NAME.match(self.text, self.pos)
        if match is None:
            found = self.text[self.pos] if self.pos < len(self.text) else "end of expression"
            raise self.error(f"expected a type name, found {found!r}")
        self.pos = match.end()
        return TypeName(match.group())


def parse_type_expression(text: str) -> TypeExpr:
    """Parse the ``type`` parameter (§4.17): ``,`` and ``|`` or, ``;`` and, parentheses."""
    _check_length(text, "type")
    if not text:
        raise QuerySyntaxError("empty type expression", text, 0)
    return TypeExpr(_TypeParser(text, ",|", "type").parse(), text)
