"""Normalization of what network servers disagree on: DevEUIs, payload encodings, numbers, times."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from adapters.kit.payload import finite
from gateway.errors import TranslationError
from gateway.model import ModelError, utc_time

_HEX16 = re.compile(r"^[0-9a-fA-F]{16}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})*$")
_EUI_PREFIXES = ("urn:lo:nsid:lora:", "urn:lora:", "urn:dev:deveui:", "eui-")


def dev_eui(value: Any, pointer: str = "") -> str:
    """A DevEUI as 16 lower-case hex digits, whatever form the server used.

    Accepts hex in either case (with ``-`` or ``:`` separators), the 12-character base64 form of
    ChirpStack v3 (protobuf bytes), ``eui-…`` (The Things Stack device ids) and Live Objects
    stream ids (``urn:lo:nsid:lora:<EUI>``, optionally followed by ``!uplink``).
    """
    if not isinstance(value, str) or not value:
        raise TranslationError("DevEUI missing or not a string", pointer)
    text = value.strip().split("!", 1)[0]
    lowered = text.lower()
    for prefix in _EUI_PREFIXES:
        if lowered.startswith(prefix):
            text = text[len(prefix):]
            break
    compact = text.replace("-", "").replace(":", "")
    if _HEX16.match(compact):
        return compact.lower()
    if len(text) == 12 and text.endswith("="):
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 8:
            return raw.hex()
    raise TranslationError(f"{value!r} is not a DevEUI (16 hex digits or 8 base64 bytes)", pointer)


def payload_bytes(value: Any, pointer: str = "", *, encoding: str = "auto") -> bytes:
    """Decode an application payload given as base64 (ChirpStack, TTS) or hex (ThingPark, Live Objects).

    ``encoding`` is ``"base64"``, ``"hex"`` or ``"auto"`` (hex when the text is only hex digits of
    even length, else base64) — servers document one encoding each, so callers name it.
    """
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise TranslationError("payload must be a string", pointer)
    text = value.strip()
    try:
        if encoding == "hex" or (encoding == "auto" and _HEX.match(text)):
            return bytes.fromhex(text)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TranslationError(f"payload is neither valid {encoding if encoding != 'auto' else 'hex nor base64'}",
                               pointer) from exc


def number(value: Any, pointer: str = "") -> float | int | None:
    """A number that a server may have sent as a string ("-80.000000", "868300000"); None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TranslationError("expected a number, got a boolean", pointer)
    if isinstance(value, int | float):
        return finite(value, pointer)
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 40:  # no number a server sends is longer; int() of thousands of digits is slow
            raise TranslationError(f"{value[:20]!r}... is not a number", pointer)
        try:
            return finite(int(text), pointer)
        except ValueError:
            pass
        try:
            parsed = float(text)
        except ValueError as exc:
            raise TranslationError(f"{value!r} is not a number", pointer) from exc
        finite(parsed, pointer)
        return int(parsed) if parsed.is_integer() and "." not in text and "e" not in text.lower() else parsed
    raise TranslationError(f"expected a number, got {type(value).__name__}", pointer)


def integer(value: Any, pointer: str = "", default: int | None = None) -> int | None:
    """An integer (frame counters, ports) that may arrive as a string or be omitted when zero."""
    parsed = number(value, pointer)
    if parsed is None:
        return default
    if isinstance(parsed, float):
        if not parsed.is_integer():
            raise TranslationError(f"{value!r} is not an integer", pointer)
        return finite(int(parsed), pointer)
    return parsed


def timestamp(value: Any, pointer: str = "") -> str | None:
    """An RFC 3339 time with any offset, normalized to UTC ``Z``; None when absent."""
    if value is None or value == "":
        return None
    try:
        return utc_time(str(value))
    except ModelError as exc:
        raise TranslationError(str(exc), pointer) from exc


def flag(value: Any) -> bool:
    """A boolean that servers send as true/1/"1"/"true"."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)
