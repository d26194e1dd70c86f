"""UltraLight 2.0, the IoT Agent for UltraLight's text format: measures, commands and their results.

A measure payload is one or more *groups* separated by ``#``; a group is ``key|value`` pairs
separated by ``|`` (``t|21.5|h|40#t|21.7|h|41``). A group with an odd number of fields starts
with its observation time (``2024-05-14T06:00:00Z|t|21.5``), as the recent IoT Agents accept.
A value cannot hold ``|`` or ``#`` literally: percent-encode them (``%7C``, ``%23``); any
``%XX`` sequence in a key or value is decoded. Values stay text here: the provisioned attribute
type decides the conversion (see ``translate.py``).

A command is ``<device_id>@<command>|<value>`` or ``<device_id>@<command>|k=v|k2=v2``; its
result is ``<device_id>@<command>|<result>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from gateway.errors import TranslationError
from gateway.model import ModelError, utc_time

MAX_GROUPS = 1000
"""Groups one payload may hold (each becomes one observation)."""


@dataclass(frozen=True, slots=True)
class Group:
    """One measure group: its optional time and its key → text pairs, in order."""

    values: Mapping[str, str]
    time: str | None = None
    """RFC 3339 UTC."""


def _decode(text: str) -> str:
    return unquote(text, errors="strict") if "%" in text else text


def parse_measures(payload: str) -> list[Group]:
    """The groups of an UltraLight 2.0 measure payload; TranslationError names the bad group."""
    text = payload.strip()
    if not text:
        raise TranslationError("empty UltraLight payload", "")
    raw_groups = text.split("#")
    if len(raw_groups) > MAX_GROUPS:
        raise TranslationError(f"more than {MAX_GROUPS} UltraLight groups in one payload", "")
    groups: list[Group] = []
    for index, raw in enumerate(raw_groups):
        where = f"/{index}"
        body = raw.strip().removeprefix("|")
        fields = body.split("|")
        if not body or any(not f.strip() for f in fields[::2]):
            raise TranslationError(f"UltraLight group {index} {raw[:60]!r}: a key is empty", where)
        time: str | None = None
        if len(fields) % 2 == 1:
            # An odd group starts with its time; otherwise its last key has no value.
            try:
                time = utc_time(fields[0].strip())
            except ModelError:
                raise TranslationError(f"UltraLight group {index} {raw[:60]!r}: a key has no value "
                                       "(or the group's first field is not an ISO 8601 time)", where) from None
            fields = fields[1:]
            if not fields:
                raise TranslationError(f"UltraLight group {index} {raw[:60]!r}: a time without measures", where)
        values: dict[str, str] = {}
        try:
            for key, value in zip(fields[::2], fields[1::2], strict=True):
                values[_decode(key.strip())] = _decode(value)
        except UnicodeDecodeError:
            raise TranslationError(f"UltraLight group {index}: a %-escape is not UTF-8", where) from None
        groups.append(Group(values, time))
    return groups


@dataclass(frozen=True, slots=True)
class CommandResult:
    """A device's answer to a command: ``<device>@<command>|<result>``."""

    device_id: str
    command: str
    result: str


def parse_command_result(payload: str) -> CommandResult:
    """Parse ``device@command|result``; TranslationError when it is not that."""
    head, _, rest = payload.strip().partition("|")
    device_id, at, command = head.partition("@")
    if not at or not command.strip():
        raise TranslationError(f"UltraLight command result {payload[:60]!r}: expected <device>@<command>|<result>",
                               "")
    try:
        return CommandResult(_decode(device_id.strip()), _decode(command.strip()), _decode(rest))
    except UnicodeDecodeError:
        raise TranslationError("UltraLight command result: a %-escape is not UTF-8", "") from None


def _encode(value: Any) -> str:
    text = value if isinstance(value, str) else ("true" if value is True else "false" if value is False
                                                 else "" if value is None else str(value))
    return quote(text, safe=" !$&'()*+,-./:;<=>?@[]^_`{}~") if any(c in text for c in "|#%") else text


def format_command(device_id: str, command: str, value: Any) -> str:
    """The UltraLight command payload for ``command`` with ``value`` (a mapping gives ``k=v`` pairs)."""
    head = f"{device_id}@{command}"
    if isinstance(value, Mapping):
        return head + "".join(f"|{_encode(k)}={_encode(v)}" for k, v in value.items())
    return f"{head}|{_encode(value)}"
