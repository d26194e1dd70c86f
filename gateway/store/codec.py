"""JSON encoding of stored documents and responses: orjson when installed, else the standard library.

orjson is several times faster on the store's hot paths (documents written per batch, documents
read per query, response bodies). The standard library stays the fallback for what orjson refuses
(integers beyond 64 bits) and for installations without it.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:  # pragma: no cover - depends on the installation
    import orjson
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> str:
    """Compact JSON text (UTF-8 characters kept)."""
    if orjson is not None:
        try:
            return orjson.dumps(value).decode()
        except TypeError:
            pass  # e.g. an integer beyond 64 bits: the standard library writes it
    return _encode(value)


def dumps_bytes(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes (response bodies)."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:
            pass
    return _encode(value).encode()


def loads(text: str | bytes) -> Any:
    """Parse JSON written by :func:`dumps` (stored documents)."""
    if orjson is not None:
        return orjson.loads(text)
    return json.loads(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def loads_strict(data: bytes) -> Any:
    """Parse a request body: strict JSON (no NaN/Infinity), ValueError or RecursionError otherwise.

    A ``\\ud800``-style escape that is not half of a surrogate pair is refused too: json.loads
    accepts it, but such a string is not Unicode text and no UTF-8 storage can keep it.
    """
    value = json.loads(data, parse_constant=_no_constant)
    if _SURROGATE_ESCAPE.search(data):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("a string holds a lone UTF-16 surrogate escape: not Unicode text") from exc
    return value
