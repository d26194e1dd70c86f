"""A StreetlightGroup's ``switchingOnHours`` as a TALQ calendar and its control programs (pure).

The Smart Data Models StreetlightGroup has no dimming-calendar attribute; its calendar is
``switchingOnHours``: a list of ``{"from", "to", "hours"}`` (dates or ``--MM-DD`` month-days, and
the hours lamps are on). jonction reads ``hours`` as one or more ``HH:MM-HH:MM`` ranges (an
optional leading day spec such as ``Mo-Su`` is accepted and ignored: TALQ rules here apply every
day) and an optional ``dimmingLevel`` (0..100 %, default 100) on each item: the level during those
hours; lamps are off outside them. Each item becomes a TALQ ``ControlProgramOne`` (fixed-time
controls: the level at the start of each range, 0 at its end) and a ``CalendarRule`` of one
calendar per group, in the order given (TALQ: the first matching rule wins).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MAX_ITEMS", "calendar_for", "calendar_id"]

MAX_ITEMS: Final = 24
_NS: Final = uuid.UUID("1d0f3c44-2b7e-4a8e-9d61-5a3b8c2e7f01")
_DAY: Final = re.compile(r"^(\d{4}-\d{2}-\d{2}|--\d{2}-\d{2})$")
_RANGE: Final = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")
_DAYS: Final = re.compile(r"^(Mo|Tu|We|Th|Fr|Sa|Su)(-(Mo|Tu|We|Th|Fr|Sa|Su))?$")


def calendar_id(group: str) -> str:
    """The stable TALQ calendar id jonction uses for a group (an update replaces it, not adds one)."""
    return str(uuid.uuid5(_NS, f"calendar/{group}"))


def _ranges(hours: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(hours, str) or not hours.strip():
        raise ValueError(f"{where}/hours: a string of HH:MM-HH:MM ranges is expected")
    words = hours.replace(",", " ").split()
    if words and _DAYS.match(words[0]):
        words = words[1:]
    out: list[tuple[str, str]] = []
    for word in words:
        m = _RANGE.match(word)
        if m is None or (m.group(3) == "24" and m.group(4) != "00"):
            raise ValueError(f"{where}/hours: {word!r} is not an HH:MM-HH:MM range")
        end = "00:00" if m.group(3) == "24" else f"{m.group(3)}:{m.group(4)}"
        out.append((f"{m.group(1)}:{m.group(2)}:00", f"{end}:00"))
    if not out:
        raise ValueError(f"{where}/hours: no HH:MM-HH:MM range")
    return out


def calendar_for(group: str, value: Any, owner: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(TALQ control programs, TALQ calendar) for ``switchingOnHours`` ``value``; ValueError naming the item."""
    if not isinstance(value, list) or not value:
        raise ValueError("switchingOnHours: a non-empty list of {from, to, hours} is expected")
    if len(value) > MAX_ITEMS:
        raise ValueError(f"switchingOnHours: at most {MAX_ITEMS} items")
    programs: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"switchingOnHours/{i}"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: an object {{from, to, hours}} is expected")
        for key in ("from", "to"):
            if not isinstance(item.get(key), str) or not _DAY.match(item[key]):
                raise ValueError(f"{where}/{key}: a date (YYYY-MM-DD) or a month-day (--MM-DD) is expected")
        level = item.get("dimmingLevel", 100)
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 100:
            raise ValueError(f"{where}/dimmingLevel: a number 0..100 (%) is expected")
        controls: list[dict[str, Any]] = []
        for start, end in _ranges(item.get("hours"), where):
            controls.append({"startTime": start, "command": {"state": {"name": "LevelState", "value": round(level)}}})
            controls.append({"startTime": end, "command": {"state": {"name": "LevelState", "value": 0}}})
        program = str(uuid.uuid5(_NS, f"program/{group}/{i}"))
        programs.append({"type": "ControlProgramOne", "id": program, "ownerCMS": owner,
                         "activePeriods": [{"name": "AbsoluteActivePeriod", "startTime": "00:00:00",
                                            "endTime": "23:59:59"}],
                         "fixedTimeControls": controls})
        rules.append({"startDate": item["from"], "endDate": item["to"], "program": program})
    return programs, {"id": calendar_id(group), "ownerCMS": owner, "rules": rules}
