"""Strict JSON for what a source delivers: parsed once, refused with a JSON pointer when hostile.

Python's ``json`` accepts more than RFC 8259 JSON: ``NaN``, ``Infinity``, numbers that overflow
to infinity (``1e400``), integers of thousands of digits, lone UTF-16 surrogates (``"\\ud800"``)
and nesting as deep as the interpreter's stack. None of these can be stored or sent on as an
NGSI-LD entity, and some crash the code that walks the document. Every adapter parses its
payload here, so a translation sees only finite numbers, storable integers, UTF-8 text and
bounded nesting, and anything else becomes a dead letter that says where the problem is.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final, TypeVar

import orjson

from gateway.errors import TranslationError
from gateway.pointer import join

MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and objects accepted (real payloads nest fewer than ten levels)."""

INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
"""Integers kept exactly by the store and by JSON codecs: signed 64-bit up to unsigned 64-bit."""

_T = TypeVar("_T")

_MAX_INT_DIGITS: Final = 20
"""Digits of INT_MAX: a longer literal is refused before Python converts it (slow past 4,300)."""

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE: Final = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


class NotJson(TranslationError):
    """The payload is not JSON text at all (a caller may then try another format)."""


class _Refused:
    """A literal the parser read but a translation must never see (kept to report its pointer)."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a JSON number")


def _int(text: str) -> int | _Refused:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        return _Refused(f"integer of {len(text.lstrip('-'))} digits is too large")
    return int(text)


_MISSING: Final = object()

_DECODER: Final = json.JSONDecoder(parse_constant=_constant)
_COUNTING_DECODER: Final = json.JSONDecoder(parse_constant=_constant, parse_int=_int)


def _parse(data: bytes | str, decoder: json.JSONDecoder) -> Any:
    """``json.loads`` with a prebuilt decoder (json.loads builds one per call when given hooks)."""
    if isinstance(data, str):
        if data.startswith("\ufeff"):
            raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
        return decoder.decode(data)
    return decoder.decode(data.decode(json.detect_encoding(data), "surrogatepass"))


def token(key: str | int) -> str:
    """One reference token of a JSON pointer (RFC 6901 §3: ``~`` and ``/`` escaped)."""
    return join("", key)


def finite(value: _T, pointer: str) -> _T:
    """``value`` unchanged; TranslationError if it is a non-finite float or an integer beyond 64 bits.

    For numbers a translation computes (a decoder's float32, a scaled reading), which no parser saw.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise TranslationError(f"{value} is not a finite number", pointer)
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        raise TranslationError("integer is outside 64 bits", pointer)
    return value


_LONG_DIGITS_TEXT: Final = re.compile(f"[0-9]{{{_MAX_INT_DIGITS - 1}}}")
_LONG_DIGITS: Final = re.compile(_LONG_DIGITS_TEXT.pattern.encode())


def _fast(data: bytes | str) -> Any:
    """``data`` parsed by orjson when the result is surely what the strict path returns, else _MISSING.

    orjson refuses by itself what the strict path refuses (NaN, Infinity, numbers that overflow,
    lone surrogates, invalid UTF-8, a BOM) but reads an integer beyond 64 bits as a float and
    nests as deep as 1,024 levels: a body with a run of 19 digits, or with as many brackets as
    MAX_DEPTH, takes the strict path instead (which also words every refusal).
    """
    if isinstance(data, bytes):
        if _LONG_DIGITS.search(data) is not None or data.count(b"[") + data.count(b"{") >= MAX_DEPTH:
            return _MISSING
    elif _LONG_DIGITS_TEXT.search(data) is not None or data.count("[") + data.count("{") >= MAX_DEPTH:
        return _MISSING
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _MISSING


def load_json(data: bytes | str, *, base: str = "", what: str = "payload") -> Any:
    """Parse ``data`` as strict JSON; TranslationError with a pointer (prefixed by ``base``) otherwise."""
    # Most payloads are plain JSON: orjson parses them several times faster, and no walk over the
    # document is needed to know it holds nothing hostile.
    doc = _fast(data)
    if doc is not _MISSING:
        return doc
    try:
        try:
            doc = _parse(data, _DECODER)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4,300 digits
            if "digits" not in str(exc):
                raise
            # Parse again with a hook (a call per number, so only now) that marks the long literal.
            doc = _parse(data, _COUNTING_DECODER)
    except RecursionError:
        raise TranslationError(f"{what} is nested too deeply (more than {MAX_DEPTH} levels)", base) from None
    except ValueError as exc:
        raise NotJson(f"{what} is not JSON: {exc}", base) from None
    # Lone surrogates come only from \uD800-\uDFFF escapes, or from their raw bytes (ED A0..BF,
    # invalid UTF-8 that json decodes with "surrogatepass"): strings are searched for them only
    # when one of these, or another encoding than UTF-8, is there.
    if isinstance(data, str):
        surrogates = "\\u" in data or _SURROGATE.search(data) is not None
    else:
        surrogates = b"\x00" in data[:4] or data[:2] in (b"\xff\xfe", b"\xfe\xff") or (
            (b"\\u" in data or b"\xed" in data) and _SURROGATE_ESCAPE.search(data) is not None)
    if not _acceptable(doc, surrogates):
        _refuse(doc, base, surrogates, what)
    return doc


class ParsedBodies:
    """Documents a transport has parsed, handed once to the translation of the same bytes.

    A push transport parses a body to answer 400 or to find its idempotency key; keeping the
    result lets ``to_entities`` skip a second parse of the same bytes. Each document is handed
    out once (then parsed afresh, as on a replay), so no two translations share one; memory is
    bounded by ``limit`` bodies (all forgotten when it is reached).
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._docs: dict[bytes, Any] = {}

    def keep(self, body: bytes, doc: Any) -> None:
        """Remember ``doc`` as what ``load_json(body)`` returned."""
        if len(self._docs) >= self.limit:
            self._docs.clear()
        self._docs[body] = doc

    def load(self, body: bytes, *, base: str = "", what: str = "payload") -> Any:
        """The document kept for ``body`` (forgotten once handed out), else ``load_json(body)``."""
        doc = self._docs.pop(body, _MISSING) if self._docs else _MISSING
        return load_json(body, base=base, what=what) if doc is _MISSING else doc


def _bad_scalar(value: Any, surrogates: bool) -> bool:
    kind = type(value)
    if kind is float:
        return not math.isfinite(value)
    if kind is int:
        return not INT_MIN <= value <= INT_MAX
    if kind is str:
        return surrogates and _SURROGATE.search(value) is not None
    return kind is _Refused


def _acceptable(doc: Any, surrogates: bool) -> bool:
    """True when ``doc`` holds nothing hostile: the fast pass, without building pointers."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is dict:
            if depth >= MAX_DEPTH or (surrogates and any(_SURROGATE.search(k) for k in value)):
                return False
            children = value.values()
        elif kind is list:
            if depth >= MAX_DEPTH:
                return False
            children = value
        else:
            if _bad_scalar(value, surrogates):
                return False
            continue
        for child in children:
            if type(child) in (dict, list):
                stack.append((child, depth + 1))
            elif _bad_scalar(child, surrogates):
                return False
    return True


def _refuse(doc: Any, base: str, surrogates: bool, what: str) -> None:
    """Walk ``doc`` again, with pointers, and raise the TranslationError of the first hostile value."""
    stack: list[tuple[str, Any, int]] = [(base, doc, 0)]
    while stack:
        pointer, value, depth = stack.pop()
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                raise TranslationError(f"{what} is nested more than {MAX_DEPTH} levels deep", pointer)
            for key, child in reversed(value.items()):
                if surrogates and _SURROGATE.search(key):
                    raise TranslationError(f"member name {key!a} holds a lone UTF-16 surrogate", pointer)
                stack.append((pointer + token(key), child, depth + 1))
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise TranslationError(f"{what} is nested more than {MAX_DEPTH} levels deep", pointer)
            stack.extend((pointer + token(index), value[index], depth + 1) for index in reversed(range(len(value))))
        elif isinstance(value, _Refused):
            raise TranslationError(value.why, pointer)
        elif type(value) is float and not math.isfinite(value):
            raise TranslationError("number overflows a double", pointer)
        elif type(value) is int and not INT_MIN <= value <= INT_MAX:
            raise TranslationError(f"integer {value} is outside 64 bits", pointer)
        elif surrogates and isinstance(value, str) and _SURROGATE.search(value):
            raise TranslationError(f"string {value[:60]!a} holds a lone UTF-16 surrogate", pointer)
