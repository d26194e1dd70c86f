"""Hostile mutations of recorded payloads, and the checks every adapter's translation must pass.

The mutation engine draws through a small ``Chooser`` so that the same code runs under
hypothesis (shrinkable draws, reproducible in CI) and under a plain ``random.Random`` (the
``make fuzz`` soak and quick exploration). A mutated payload is bytes, as a transport delivers it.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gateway.errors import TranslationError

T = TypeVar("T")

POINTER = re.compile(r"^(/([^~/]|~[01])*)*$")
"""RFC 6901 syntax: "" is the whole document, every other pointer starts with '/'."""

INT_MIN, INT_MAX = -(2**63), 2**64 - 1
"""Integers a store can keep exactly (signed 64-bit up to unsigned 64-bit): larger ones are 'huge'."""

MAX_OUTPUT_DEPTH = 100
"""An entity nested deeper than this was built from hostile nesting the adapter let through."""


class Chooser(Protocol):
    """Where the mutation engine gets its choices from."""

    def pick(self, options: Sequence[T]) -> T:
        """One of ``options`` (earlier options are the simpler ones)."""

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""

    def text(self) -> str:
        """Arbitrary text, lone surrogates included."""

    def number(self) -> float:
        """Any float, NaN and infinities included."""


class RandomChooser:
    """Choices from a seeded ``random.Random`` (the soak run and exploration)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, options: Sequence[T]) -> T:
        """One of ``options``."""
        return options[self.rng.randrange(len(options))]

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return self.rng.randint(low, high)

    def text(self) -> str:
        """Up to 12 code points from the whole range, surrogates included."""
        ranges = ((0, 0x7F), (0x80, 0x7FF), (0xD800, 0xDFFF), (0xE000, 0x10FFFF))
        out = []
        for _ in range(self.rng.randint(0, 12)):
            low, high = ranges[self.rng.randrange(len(ranges))]
            out.append(chr(self.rng.randint(low, high)))
        return "".join(out)

    def number(self) -> float:
        """A float from the interesting corners or uniformly on the bit patterns."""
        corners = (math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, -1e308, 5e-324, 1.5)
        if self.rng.random() < 0.5:
            return corners[self.rng.randrange(len(corners))]
        import struct

        value: float = struct.unpack("<d", self.rng.getrandbits(64).to_bytes(8, "little"))[0]
        return value


@dataclass(frozen=True, slots=True)
class Raw:
    """Text spliced verbatim into the serialized payload (what ``json.dumps`` cannot write)."""

    text: str


def deep(kind: str, levels: int) -> Raw:
    """A value nested ``levels`` times in arrays or objects."""
    if kind == "list":
        return Raw("[" * levels + "1" + "]" * levels)
    return Raw('{"a":' * levels + "1" + "}" * levels)


HOSTILE: tuple[Any, ...] = (
    None, "", [], {}, 0, True, False, -1, "x", 1.5, "0", " ",
    math.nan, math.inf, -math.inf, Raw("NaN"), Raw("-Infinity"), Raw("1e400"), Raw("-1e999"),
    2**63, 2**64, -(2**63) - 1, 10**30, 10**400, Raw("9" * 5000), Raw("-" + "1" * 4400), 1e308, -1e308, 5e-324,
    "\ud800", "\udfff", "ab\ud83d", "\udc00cd", "\x00", "\u202e", "\ufeff", "NaN", "Infinity", "1e400", "-0",
    "9" * 400, "é" * 3000, [None], [[]], {"": None}, {"value": math.nan}, [math.inf], {"\ud800": 1},
    deep("list", 60), deep("dict", 60), deep("list", 600), deep("dict", 600),
    deep("list", 2500), deep("dict", 2500), deep("list", 100_000),
)
"""Replacement values, simplest first (hypothesis shrinks towards the start)."""


# --------------------------------------------------------------------------- paths


Path = tuple[str | int, ...]


def paths(doc: Any, limit: int = 4000) -> list[Path]:
    """Every location in ``doc`` (root first), breadth-first, at most ``limit`` of them."""
    found: list[Path] = [()]
    queue: list[tuple[Path, Any]] = [((), doc)]
    while queue and len(found) < limit:
        here, value = queue.pop(0)
        children: list[tuple[str | int, Any]] = []
        if isinstance(value, dict):
            children = list(value.items())
        elif isinstance(value, list):
            children = list(enumerate(value))
        for key, child in children:
            found.append((*here, key))
            queue.append(((*here, key), child))
    return found


def get(doc: Any, path: Path) -> Any:
    """The value at ``path``."""
    for key in path:
        doc = doc[key]
    return doc


def put(doc: Any, path: Path, value: Any) -> Any:
    """``doc`` with the value at ``path`` replaced (the root is replaced by returning it)."""
    if not path:
        return value
    get(doc, path[:-1])[path[-1]] = value
    return doc


def drop(doc: Any, path: Path) -> Any:
    """``doc`` without the member or item at ``path`` (dropping the root empties it)."""
    if not path:
        return {} if isinstance(doc, dict) else None
    parent = get(doc, path[:-1])
    del parent[path[-1]]
    return doc


# --------------------------------------------------------------------------- mutations


def retyped(value: Any, choose: Chooser) -> Any:
    """The same content under another JSON type (or at another scale)."""
    if isinstance(value, bool):
        return choose.pick((int(value), str(value).lower(), None))
    if isinstance(value, int | float):
        scaled = value * 10**20 if isinstance(value, int) else value * 1e300
        return choose.pick((str(value), -value, [value], {"value": value}, scaled, value + 1, math.inf))
    if isinstance(value, str):
        number: Any = len(value)
        try:
            number = float(value)
            number = int(value)
        except ValueError:
            pass
        return choose.pick((number, [value], {"value": value}, value + "\ud800", value * 50, value[:1], value.upper()))
    if isinstance(value, list):
        return choose.pick(({str(i): v for i, v in enumerate(value)}, value[0] if value else None, value * 3,
                            [value], list(reversed(value))))
    if isinstance(value, dict):
        return choose.pick((list(value.values()), [value], {"value": value}, {k: None for k in value},
                            {k: str(v) for k, v in value.items()}))
    return choose.pick(("null", 0, False))


def _embedded(value: Any) -> Any:
    """The JSON document a string carries (ChirpStack v3 ``objectJSON``), or None."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return None
    return None


def mutate_doc(doc: Any, choose: Chooser, rounds: int) -> Any:
    """``doc`` (not modified) after ``rounds`` structural mutations at random locations."""
    doc = copy.deepcopy(doc)
    for _ in range(rounds):
        where = choose.pick(paths(doc))
        here = get(doc, where)
        op = choose.pick(("replace", "drop", "retype", "key", "text", "number", "integer", "embedded", "nest",
                      "add", "graft"))
        if op == "replace":
            doc = put(doc, where, copy.deepcopy(choose.pick(HOSTILE)))  # later rounds may edit it in place
        elif op == "drop":
            doc = drop(doc, where)
        elif op == "retype":
            doc = put(doc, where, retyped(here, choose))
        elif op == "key" and where and isinstance(get(doc, where[:-1]), dict):
            parent = get(doc, where[:-1])
            new_key = choose.pick(("", "\ud800", str(where[-1]) + "\udfff", "~1/", "a~b", str(where[-1]).upper()))
            parent[new_key] = parent.pop(where[-1])
        elif op == "text":
            doc = put(doc, where, choose.text())
        elif op == "number":
            doc = put(doc, where, choose.number())
        elif op == "integer":
            doc = put(doc, where, choose.integer(-(2**70), 2**70))
        elif op == "embedded" and (inner := _embedded(here)) is not None:
            mutated = mutate_doc(inner, choose, 1)
            doc = put(doc, where, serialize(mutated, choose).decode("utf-8", "surrogatepass"))
        elif op == "add" and isinstance(here, dict):
            # A member the adapter knows from elsewhere in the document (adapters branch on presence).
            names = sorted({str(p[-1]) for p in paths(doc) if p and isinstance(p[-1], str)} | {"kind", "type"})
            here[choose.pick(names)] = copy.deepcopy(choose.pick(HOSTILE))
        elif op == "graft":
            # Another part of the same document in this place: well-formed, but the wrong shape here.
            donor = choose.pick(paths(doc))
            doc = put(doc, where, copy.deepcopy(get(doc, donor)))
        elif op == "nest":
            levels = choose.pick((70, 1200, 3000))
            doc = put(doc, where, Raw("[" * levels + json.dumps(here, allow_nan=True) + "]" * levels)
                      if not _has_raw(here) else deep("list", levels))
    return doc


def _has_raw(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Raw):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def serialize(doc: Any, choose: Chooser) -> bytes:
    """Write ``doc`` as a transport would deliver it, splicing ``Raw`` texts in."""
    spliced: dict[str, str] = {}

    def hide(value: Any) -> Any:
        if isinstance(value, Raw):
            marker = f"@@raw{len(spliced)}@@"
            spliced[json.dumps(marker)] = value.text
            return marker
        if isinstance(value, dict):
            return {k: hide(v) for k, v in value.items()}
        if isinstance(value, list):
            return [hide(v) for v in value]
        return value

    text = json.dumps(hide(doc), allow_nan=True, ensure_ascii=choose.pick((True, False)))
    for marker, raw in spliced.items():
        text = text.replace(marker, raw)
    return text.encode("utf-8", "surrogatepass")


def mutate_bytes(payload: bytes, choose: Chooser) -> bytes:
    """Byte-level damage: truncation, invalid UTF-8, a BOM, nothing at all."""
    op = choose.pick(("truncate", "invalid", "bom", "empty", "garbage"))
    if op == "truncate":
        return payload[: choose.integer(0, max(0, len(payload) - 1))]
    if op == "invalid":
        at = choose.integer(0, len(payload))
        return payload[:at] + choose.pick((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00")) + payload[at:]
    if op == "bom":
        return b"\xef\xbb\xbf" + payload
    if op == "empty":
        return b""
    return choose.pick((b"null", b"[]", b"1e999", b"NaN", b'"x"', b"<html>", b"[" * 200_000))


def mutate_metadata(metadata: Mapping[str, str], choose: Chooser) -> dict[str, str]:
    """Transport facts with one hostile value (topics and paths are input too)."""
    out = dict(metadata)
    key = choose.pick((*sorted(out), "event", "split", "index", "page", "format", "line"))
    out[key] = choose.pick(("", "\ud800", "NaN", "-1", "9" * 5000, "up", "item", "x" * 300, choose.text()))
    return out


def mutate(doc: Any, metadata: Mapping[str, str], choose: Chooser) -> tuple[bytes, dict[str, str]]:
    """One hostile (payload, metadata) derived from a parsed fixture and its transport facts."""
    kind = choose.pick(("doc", "doc", "doc", "doc", "bytes", "metadata"))
    if kind == "metadata":
        return serialize(mutate_doc(doc, choose, choose.integer(0, 1)), choose), mutate_metadata(metadata, choose)
    payload = serialize(mutate_doc(doc, choose, choose.integer(1, 3)), choose)
    if kind == "bytes":
        payload = mutate_bytes(payload, choose)
    return payload, dict(metadata)


SWEEP: tuple[Any, ...] = (
    None, "", [], {}, True, 0, -1, 1.5, "x", [None], {"": 1}, math.nan, math.inf, 2**64, 10**400, "\ud800",
    deep("list", 80), deep("dict", 2500),
)
"""The values the exhaustive sweep puts at every place of every fixture (one at a time)."""


META_SWEEP: tuple[str, ...] = ("", "\ud800", "NaN", "-1", "9" * 5000, "x" * 300, "item", "up")
"""The values the sweep gives each transport fact (MQTT event, file line, page index...)."""


def single_mutations(doc: Any, metadata: Mapping[str, str]) -> Iterator[tuple[str, bytes, dict[str, str]]]:
    """(label, payload, metadata) for each place of ``doc`` and each SWEEP value (or the place dropped),
    then for each transport fact and each META_SWEEP value."""
    for where in paths(doc):
        for index, value in enumerate((*SWEEP, _DROP)):
            mutated = copy.deepcopy(doc)
            mutated = drop(mutated, where) if value is _DROP else put(mutated, where, copy.deepcopy(value))
            label = "/" + "/".join(map(str, where)) + (" dropped" if value is _DROP else f" = SWEEP[{index}]")
            yield label, serialize(mutated, _ASCII), dict(metadata)
    payload = serialize(doc, _ASCII)
    for key in sorted({*metadata, "event", "split", "index"}):
        for index, text in enumerate(META_SWEEP):
            yield f"metadata {key} = META_SWEEP[{index}]", payload, {**metadata, key: text}


class _Ascii:
    """The chooser of a sweep: escapes every non-ASCII character, as most servers do."""

    def pick(self, options: Sequence[T]) -> T:
        return options[0]

    def integer(self, low: int, high: int) -> int:
        return low

    def text(self) -> str:
        return ""

    def number(self) -> float:
        return 0.0


_ASCII = _Ascii()
_DROP = object()


# --------------------------------------------------------------------------- checks


def strict_json_problem(value: Any) -> str | None:
    """Why ``value`` is not strict, storable JSON (None when it is)."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        where, item, depth = stack.pop()
        if depth > MAX_OUTPUT_DEPTH:
            return f"{where}: nested deeper than {MAX_OUTPUT_DEPTH}"
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"{where}: key {key!r} is not a string"
                if not _utf8(key):
                    return f"{where}: key {key!r} is not UTF-8 text"
                stack.append((f"{where}/{key}", child, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}/{i}", child, depth + 1) for i, child in enumerate(item))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                return f"{where}: integer of {len(str(abs(item)) if abs(item) < 10**4000 else 'many')} digits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{where}: {item} is not a JSON number"
        elif isinstance(item, str):
            if not _utf8(item):
                return f"{where}: {item!r} is not UTF-8 text"
        else:
            return f"{where}: {type(item).__name__} is not a JSON type"
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:
        return f"not strict JSON: {exc}"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def contract_problem(translate: Callable[[], Any]) -> str | None:
    """Run one translation; say how it broke the contract (None when it kept it)."""
    try:
        produced = translate()
    except TranslationError as exc:
        if not isinstance(exc.reason, str) or not exc.reason:
            return f"TranslationError without a reason: {exc.reason!r}"
        if not isinstance(exc.pointer, str) or not POINTER.match(exc.pointer):
            return f"TranslationError pointer {exc.pointer!r} is not a JSON pointer"
        if not _utf8(exc.reason) or not _utf8(exc.pointer):
            return f"TranslationError text is not UTF-8 (a dead letter cannot store it): {exc.reason!r}"
        return None
    if not isinstance(produced, list) or not all(isinstance(e, dict) for e in produced):
        return f"to_entities returned {type(produced).__name__}, not a list of objects"
    problem = strict_json_problem(produced)
    return f"entity is not strict JSON: {problem}" if problem else None
