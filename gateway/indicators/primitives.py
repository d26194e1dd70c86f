"""The fixed set of computations an indicator definition may name, as pure functions over one series.

A series is one attribute of one entity over one window: ``(time, value)`` pairs, time in
microseconds since the epoch (UTC, the instance's observedAt). Every function sorts and
de-duplicates its input itself (a late reading sent again for the same moment keeps its last
value), never reads a clock, and returns a :class:`Partial`: a numerator and a denominator that
add up across entities and communes, with the same per local calendar month. Months and night
windows are local wall-clock times in the definition's timezone, so a daylight-saving change moves
them with the clock (the March night from 02:00 to 04:00 lasts one hour, the October one three).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

Point = tuple[int, Any]
"""(time in µs since the epoch, value)."""
HOUR = 3_600_000_000
"""One hour in µs."""
DAY = 86_400_000_000
AVERAGE_MONTH = 365.25 / 12 * DAY
"""The month the per-month rates divide by (30.44 days)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Partial:
    """Additive pieces of one indicator: ``num``/``den`` overall and per local month, and the entities seen."""

    num: float = 0.0
    den: float = 0.0
    entities: int = 0
    """Entities that had data in the window."""
    months: dict[str, list[float]] = field(default_factory=dict)
    """``YYYY-MM`` → [num, den]."""

    def add(self, other: Partial) -> None:
        """Fold ``other`` into this one (across entities, communes)."""
        self.num += other.num
        self.den += other.den
        self.entities += other.entities
        for key, (num, den) in other.months.items():
            slot = self.months.setdefault(key, [0.0, 0.0])
            slot[0] += num
            slot[1] += den

    def put(self, month: str, num: float, den: float = 0.0) -> None:
        """Add to the month ``month`` only."""
        slot = self.months.setdefault(month, [0.0, 0.0])
        slot[0] += num
        slot[1] += den


def micros(moment: datetime) -> int:
    """µs since the epoch of an aware datetime."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class Prepared(list[Point]):
    """Points in time order, one per moment: :func:`prepare` returns them as they are (one check per series)."""

    numeric: list[tuple[int, float]] | None = None
    """The numeric points, computed once by :func:`numbers`."""


def prepare(points: Iterable[Point]) -> Prepared:
    """Points in time order, one per moment (the last given wins, as the store keeps a resent reading)."""
    if isinstance(points, Prepared):
        return points
    listed = list(points)
    times = [t for t, _ in listed]
    if any(a >= b for a, b in itertools.pairwise(times)):
        by_time: dict[int, Any] = {}
        for t, v in listed:
            by_time[t] = v
        listed = sorted(by_time.items())
    return Prepared(listed)


def numbers(points: Iterable[Point]) -> list[tuple[int, float]]:
    """The points whose value is a finite number (booleans and text left out), prepared."""
    prepared = prepare(points)
    if prepared.numeric is None:
        prepared.numeric = [
            (t, float(v)) for t, v in prepared
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
    return prepared.numeric


class Calendar:
    """Local calendar months of a window in one timezone, as µs bounds, found by bisection."""

    def __init__(self, start: int, end: int, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)
        self.start, self.end = start, end
        first = (_EPOCH + timedelta(microseconds=start)).astimezone(self.zone)
        year, month = first.year, first.month
        self.bounds: list[int] = []
        self.keys: list[str] = []
        moment = micros(datetime(year, month, 1, tzinfo=self.zone))
        while moment < end:
            self.bounds.append(moment)
            self.keys.append(f"{year:04d}-{month:02d}")
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            moment = micros(datetime(year, month, 1, tzinfo=self.zone))
        self.bounds.append(moment)
        self._last = 0

    def month(self, t: int) -> str:
        """The local month ``YYYY-MM`` of the moment ``t`` (inside the window)."""
        return self.keys[max(0, bisect.bisect_right(self.bounds, t) - 1)]

    def index(self, t: int) -> int:
        """Index in ``keys`` of the month holding ``t`` (clamped to the window's months)."""
        return min(max(0, bisect.bisect_right(self.bounds, t) - 1), len(self.keys) - 1)

    def split(self, lo: int, hi: int) -> list[tuple[str, int, int]]:
        """``[lo, hi)`` cut at local month boundaries: (month, lo, hi) pieces."""
        bounds = self.bounds
        index = self._last
        if not bounds[index] <= lo < bounds[index + 1]:
            index = self._last = self.index(lo)
        if hi <= bounds[index + 1]:  # the common case, without a search: one month
            return [(self.keys[index], lo, hi)] if hi > lo else []
        pieces = []
        while lo < hi and index < len(self.keys):
            top = min(hi, bounds[index + 1])
            if top > lo:
                pieces.append((self.keys[index], lo, top))
            lo = top
            index += 1
        return pieces

    def months(self) -> float:
        """The window's length in average months."""
        return (self.end - self.start) / AVERAGE_MONTH

    def local_date(self, t: int) -> date:
        """The local calendar date of ``t``."""
        return (_EPOCH + timedelta(microseconds=t)).astimezone(self.zone).date()

    def wall(self, day: date, hour: int, minute: int) -> int:
        """µs of a local wall-clock time; a time the spring change skips maps to the instant the clock jumps to."""
        return micros(datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.zone, fold=0))


# --------------------------------------------------------------------------- cumulative meters


def meter(points: Iterable[Point], cal: Calendar, *, scale: float = 1.0, reset_tolerance: float = 0.0) -> Partial:
    """Consumption from a cumulative counter: the sum of increments between consecutive readings.

    A reading lower than the previous one by more than ``reset_tolerance`` is a reset (meter
    replaced, counter wrapped): the counter restarted from zero, so the increment is the new reading
    itself. A smaller decrease is jitter and adds nothing. An increment across a gap or a month
    boundary is spread over the months in proportion to time.
    """
    series = numbers(points)
    out = Partial()
    if not series:
        return out
    out.entities = 1
    bounds, keys = cal.bounds, cal.keys
    month = cal.index(series[0][0])
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if v1 >= v0:
            step = v1 - v0
        elif v0 - v1 > reset_tolerance:
            step = v1
        else:
            step = 0.0
        step *= scale
        out.num += step
        if bounds[month] <= t0 and t1 <= bounds[month + 1]:  # the common case: within one month
            out.put(keys[month], step)
            continue
        span = t1 - t0
        for key, lo, hi in cal.split(t0, t1):
            out.put(key, step * (hi - lo) / span)
        month = cal.index(t1)
    return out


def total(points: Iterable[Point], cal: Calendar, *, scale: float = 1.0) -> Partial:
    """Sum of the readings (each reading in its local month)."""
    series = numbers(points)
    out = Partial(entities=1 if series else 0)
    for t, v in series:
        out.num += v * scale
        out.den += 1
        out.put(cal.month(t), v * scale, 1)
    return out


def mean(points: Iterable[Point], cal: Calendar, *, scale: float = 1.0) -> Partial:
    """Mean of the readings: ``num`` their sum, ``den`` their count (pooled across entities)."""
    return total(points, cal, scale=scale)


# --------------------------------------------------------------------------- durations


def hours_when(
    points: Iterable[Point], cal: Calendar, *, at_least: float | None = None, values: Sequence[Any] | None = None,
    max_hold: int = HOUR,
) -> Partial:
    """Hours during which the attribute met the condition (``>= at_least``, or one of ``values``).

    Each reading holds until the next one, at most ``max_hold`` µs: beyond, the time is unknown and
    not counted (a sensor silent for a day did not burn or overflow for a day). Time before the
    first reading of the window is unknown too. ``den`` is the known time (hours).
    """
    series = prepare(points)
    out = Partial(entities=1 if series else 0)
    for index, (t0, value) in enumerate(series):
        t1 = series[index + 1][0] if index + 1 < len(series) else cal.end
        t1 = min(t1, t0 + max_hold, cal.end)
        if values is not None:
            met = value in values
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and at_least is not None:
            met = value >= at_least
        else:
            continue
        for key, lo, hi in cal.split(t0, t1):
            hours = (hi - lo) / HOUR
            out.den += hours
            out.put(key, hours if met else 0.0, hours)
            if met:
                out.num += hours
    return out


def rolling_mean_above(
    points: Iterable[Point], cal: Calendar, *, threshold: float, averaging_hours: int, min_coverage: float = 0.75,
) -> Partial:
    """Hours whose trailing ``averaging_hours`` mean exceeds ``threshold`` (WHO-style exceedance).

    Readings are first averaged per clock hour (UTC hours: a daylight-saving change neither adds
    nor removes one). At the end of each hour of the window, the mean of the hourly means of the
    last ``averaging_hours`` hours counts when at least ``min_coverage`` of those hours have data;
    the hour is an exceedance when that mean is strictly above the threshold. ``den`` is the number
    of hours with a valid mean.
    """
    series = numbers(points)
    out = Partial(entities=1 if series else 0)
    if not series:
        return out
    hourly: dict[int, list[float]] = {}
    for t, v in series:
        slot = hourly.setdefault(t // HOUR, [0.0, 0.0])
        slot[0] += v
        slot[1] += 1
    means = {h: s / n for h, (s, n) in hourly.items()}
    need = math.ceil(averaging_hours * min_coverage - 1e-9)
    first_hour = -(-cal.start // HOUR)
    window: list[float] = []
    for hour in range(first_hour, cal.end // HOUR):
        window = [means[h] for h in range(hour - averaging_hours + 1, hour + 1) if h in means]
        if len(window) < max(need, 1):
            continue
        above = sum(window) / len(window) > threshold
        out.den += 1
        key = cal.month(hour * HOUR)
        out.put(key, 1.0 if above else 0.0, 1.0)
        if above:
            out.num += 1
    return out


# --------------------------------------------------------------------------- nights


def night_minimum(
    points: Iterable[Point], cal: Calendar, *, start: tuple[int, int] = (2, 0), end: tuple[int, int] = (4, 0),
    scale: float = 1.0,
) -> Partial:
    """Mean over the nights of the minimum reading between two local wall-clock times.

    Each local night's window is computed on the local clock, so on the last Sunday of March the
    02:00-04:00 window lasts one hour and on the last Sunday of October three. A night without a
    reading in its window is left out (``den`` counts the nights that had one).
    """
    series = numbers(points)
    out = Partial(entities=1 if series else 0)
    if not series:
        return out
    times = [t for t, _ in series]
    day = cal.local_date(cal.start) - timedelta(days=1)
    last = cal.local_date(cal.end) + timedelta(days=1)
    while day <= last:
        lo, hi = cal.wall(day, *start), cal.wall(day, *end)
        lo, hi = max(lo, cal.start), min(hi, cal.end)
        if lo < hi:
            a, b = bisect.bisect_left(times, lo), bisect.bisect_left(times, hi)
            if a < b:
                low = min(v for _, v in series[a:b]) * scale
                out.num += low
                out.den += 1
                out.put(cal.month(lo), low, 1)
        day += timedelta(days=1)
    return out


# --------------------------------------------------------------------------- waste collections


def collections(
    points: Iterable[Point], *, drop: float = 0.3, max_gap: int = 12 * HOUR,
) -> list[tuple[int, float]]:
    """The collections of a container: (time, fill level just before) for each drop of at least ``drop``.

    A drop between two readings further apart than ``max_gap`` is not a collection one can date
    or trust (the sensor was silent), and is left out.
    """
    series = numbers(points)
    found: list[tuple[int, float]] = []
    for (t0, v0), (t1, v1) in itertools.pairwise(series):
        if v0 - v1 >= drop and t1 - t0 <= max_gap:
            found.append((t1, v0))
    return found


def collection_figure(
    points: Iterable[Point], cal: Calendar, *, measure: str, below: float = 0.5, drop: float = 0.3,
    max_gap: int = 12 * HOUR, scale: float = 1.0,
) -> Partial:
    """``level``: mean fill level at collection; ``share_below``: share of collections below ``below``;
    ``count``: number of collections."""
    listed = list(points)
    found = collections(listed, drop=drop, max_gap=max_gap)
    out = Partial(entities=1 if listed else 0)
    for t, level in found:
        key = cal.month(t)
        if measure == "level":
            piece = level * scale
        elif measure == "share_below":
            piece = scale if level < below else 0.0
        else:
            piece = 1.0
        out.num += piece
        out.den += 1
        out.put(key, piece, 1)
    return out


# --------------------------------------------------------------------------- sensors


def availability(
    points: Iterable[Point], cal: Calendar, *, measure: str, interval: int, down_after: float = 3.0,
    tolerance: float = 0.5, scale: float = 1.0,
) -> Partial:
    """How a sensor kept its promised reporting ``interval`` (µs) over the window.

    ``completeness``: readings received / readings expected (window ÷ interval), a reading per
    moment, capped at 1 per entity. ``uptime``: share of the window during which the last reading
    was at most ``down_after`` intervals old. ``freshness``: the same with ``1 + tolerance``
    intervals (the data was as fresh as promised). A sensor with no reading at all in the window is
    left out: nothing tells it from one not yet installed (its silence shows in the next window).
    """
    series = prepare(points)
    out = Partial(entities=1)
    length = cal.end - cal.start
    if length <= 0 or not series:
        return Partial()
    if measure == "completeness":
        expected = length / interval
        received = min(float(len(series)), expected)
        out.num, out.den = received * scale, expected
        for key, lo, hi in cal.split(cal.start, cal.end):
            out.put(key, 0.0, (hi - lo) / interval)
        for t, _ in series:
            out.months[cal.month(t)][0] += scale
        for slot in out.months.values():
            slot[0] = min(slot[0], slot[1] * scale)
        return out
    hold = int(interval * (down_after if measure == "uptime" else 1 + tolerance))
    for key, lo, hi in cal.split(cal.start, cal.end):
        out.put(key, 0.0, (hi - lo) / HOUR)
    out.den = length / HOUR
    for index, (t0, _) in enumerate(series):
        t1 = series[index + 1][0] if index + 1 < len(series) else cal.end
        t1 = min(t1, t0 + hold, cal.end)
        for key, lo, hi in cal.split(t0, t1):
            hours = (hi - lo) / HOUR
            out.num += hours * scale
            out.months[key][0] += hours * scale
    return out


def linear_trend(points: Iterable[Point], *, replacement_jump: float = 0.2,
                 scale: float = 1.0) -> Partial:
    """Least-squares slope of the readings, per average month (a battery's decline).

    A rise larger than ``replacement_jump`` starts a new segment (battery replaced); the slope is
    the pooled within-segment one (Σ Sxy ÷ Σ Sxx), so a replacement does not read as a recharge.
    Needs two readings in a segment at least a day apart; otherwise the entity has no figure.
    """
    series = numbers(points)
    segments: list[list[tuple[int, float]]] = [[]]
    for index, (t, v) in enumerate(series):
        if index and v - series[index - 1][1] > replacement_jump:
            segments.append([])
        segments[-1].append((t, v))
    sxy = sxx = 0.0
    for seg in segments:
        if len(seg) < 2 or seg[-1][0] - seg[0][0] < DAY:
            continue
        mx = sum(t for t, _ in seg) / len(seg) / AVERAGE_MONTH
        my = sum(v for _, v in seg) / len(seg)
        for t, v in seg:
            dx = t / AVERAGE_MONTH - mx
            sxy += dx * (v - my)
            sxx += dx * dx
    if sxx <= 0:
        return Partial()
    return Partial(num=sxy / sxx * scale, den=1.0, entities=1)


def repairs(points: Iterable[Point], cal: Calendar, *, measure: str, ok_values: Sequence[Any]) -> Partial:
    """Failures and time to repair from a state attribute (any value outside ``ok_values`` is a failure).

    A failure starts at the first reading in a failed state after an ok one (or at the window's
    first reading) and is repaired at the next ok reading. ``failures``: episodes started in the
    window; ``failed_entities``: 1 when the entity failed at least once; ``mean_hours``: mean time
    to repair of the episodes repaired in the window (those still open at its end are left out).
    """
    series = prepare(points)
    out = Partial(entities=1 if series else 0)
    started: int | None = None
    episodes = 0
    for t, value in series:
        failed = value not in ok_values
        if failed and started is None:
            started = t
            episodes += 1
            if measure == "failures":
                out.put(cal.month(t), 1.0, 1.0)
        elif not failed and started is not None:
            if measure == "mean_hours":
                hours = (t - started) / HOUR
                out.num += hours
                out.den += 1
                out.put(cal.month(t), hours, 1.0)
            started = None
    if measure == "failures":
        out.num = float(episodes)
        out.den = 1.0 if series else 0.0
    elif measure == "failed_entities":
        out.num = 1.0 if episodes else 0.0
        out.den = 1.0 if series else 0.0
    return out
