"""Each indicator primitive against figures computed by hand on small synthetic histories.

The histories carry gaps, late readings (given out of order), a resent reading, a meter reset and
the daylight-saving changes of Europe/Paris (last Sundays of March and October 2026).
"""

from __future__ import annotations

from datetime import datetime

import pytest

from gateway.indicators import primitives as p
from gateway.indicators.compute import value
from gateway.indicators.definitions import Definition

PARIS = "Europe/Paris"


def t(text: str) -> int:
    """µs of an RFC 3339 time."""
    return p.micros(datetime.fromisoformat(text))


def cal(start: str, end: str) -> p.Calendar:
    return p.Calendar(t(start), t(end), PARIS)


def months(part: p.Partial) -> dict[str, list[float]]:
    return {k: [round(a, 6), round(b, 6)] for k, (a, b) in sorted(part.months.items())}


# --------------------------------------------------------------------------- calendar


def test_local_months_follow_the_clock_change() -> None:
    c = cal("2026-03-01T00:00:00+01:00", "2026-05-01T00:00:00+02:00")
    assert c.keys == ["2026-03", "2026-04"]
    # April starts at local midnight, CEST: 22:00 UTC on March 31
    assert c.bounds[1] == t("2026-03-31T22:00:00Z")
    assert c.month(t("2026-03-31T21:59:59Z")) == "2026-03"
    assert c.month(t("2026-03-31T22:00:00Z")) == "2026-04"
    pieces = list(c.split(t("2026-03-31T21:00:00Z"), t("2026-03-31T23:00:00Z")))
    assert [(k, (hi - lo) // p.HOUR) for k, lo, hi in pieces] == [("2026-03", 1), ("2026-04", 1)]


# --------------------------------------------------------------------------- meters


def test_meter_with_month_split_late_reading_gap_and_reset() -> None:
    c = cal("2026-01-01T00:00:00+01:00", "2026-03-01T00:00:00+01:00")
    points = [
        (t("2026-01-31T22:00:00Z"), 100),     # 23:00 local, January
        (t("2026-01-31T23:30:00Z"), 110),     # 00:30 local, February: 1 h of 1.5 h in January
        (t("2026-02-02T01:00:00Z"), 140),     # after a day-long gap: +25, all in February
        (t("2026-02-02T02:00:00Z"), 5),       # lower: the meter was reset, +5
        (t("2026-02-01T01:00:00Z"), 112),     # a late reading, given last
        (t("2026-02-01T01:00:00Z"), 115),     # ... and resent with a corrected value: the last wins
    ]
    part = p.meter(points, c)
    # 100 -> 110 (+10), 110 -> 115 (+5), 115 -> 140 (+25), reset to 5 (+5)
    assert part.num == pytest.approx(45)
    assert part.entities == 1
    assert months(part) == {"2026-01": [round(10 * 2 / 3, 6), 0.0], "2026-02": [round(10 / 3 + 35, 6), 0.0]}


def test_meter_jitter_below_the_tolerance_is_not_a_reset() -> None:
    c = cal("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
    points = [(t("2026-01-01T01:00:00Z"), 100.0), (t("2026-01-01T02:00:00Z"), 99.5), (t("2026-01-01T03:00:00Z"), 101)]
    assert p.meter(points, c, reset_tolerance=1.0).num == pytest.approx(1.5)
    assert p.meter(points, c).num == pytest.approx(99.5 + 1.5)  # no tolerance: any decrease is a reset
    assert p.meter(points, c, scale=0.001).num == pytest.approx(0.101)


def test_meter_edges_empty_single_and_text() -> None:
    c = cal("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")
    empty = p.meter([], c)
    assert (empty.num, empty.entities) == (0.0, 0)
    single = p.meter([(t("2026-01-01T01:00:00Z"), 7)], c)
    assert (single.num, single.entities) == (0.0, 1)
    assert p.meter([(t("2026-01-01T01:00:00Z"), "n/a"), (t("2026-01-01T02:00:00Z"), True)], c).entities == 0


def test_per_luminaire_per_month_value() -> None:
    d = Definition(id="x", theme="t", title={}, method={}, unit="kWh", types=("Streetlight",), attributes=("e",),
                   kind="meter", params={}, per_entity=True, per_month=True)
    c = cal("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z")
    c = p.Calendar(0, int(p.AVERAGE_MONTH * 2), PARIS)  # exactly two average months
    part = p.Partial(num=120.0, entities=3)
    assert value(d, part, c) == pytest.approx(20.0)  # 120 kWh / 3 luminaires / 2 months
    assert value(d, p.Partial(), c) is None


# --------------------------------------------------------------------------- durations


def test_hours_when_holds_each_reading_at_most_max_hold() -> None:
    c = cal("2026-01-10T00:00:00Z", "2026-01-10T06:00:00Z")
    points = [
        (t("2026-01-10T00:30:00Z"), "off"),
        (t("2026-01-10T00:00:00Z"), "on"),    # late: the first in time
        (t("2026-01-10T01:00:00Z"), "on"),    # then silent until 05:00: only one hour is known
        (t("2026-01-10T05:00:00Z"), "on"),    # holds until the window's end
    ]
    part = p.hours_when(points, c, values=["on"], max_hold=p.HOUR)
    assert part.num == pytest.approx(0.5 + 1 + 1)
    assert part.den == pytest.approx(0.5 + 0.5 + 1 + 1)


def test_hours_when_across_the_spring_clock_change_counts_real_hours() -> None:
    # on from 20:00 (CET) on March 28 to 08:00 (CEST) on March 29: 11 real hours, not 12
    start, stop = t("2026-03-28T20:00:00+01:00"), t("2026-03-29T08:00:00+02:00")
    points = [(start + i * 30 * 60_000_000, "on") for i in range((stop - start) // (30 * 60_000_000))]
    points.append((stop, "off"))
    c = cal("2026-03-28T12:00:00+01:00", "2026-03-29T12:00:00+02:00")
    part = p.hours_when(points, c, values=["on"], max_hold=p.HOUR)
    assert part.num == pytest.approx(11)


def test_hours_when_threshold_and_all_below() -> None:
    c = cal("2026-01-10T00:00:00Z", "2026-01-10T03:00:00Z")
    points = [(t("2026-01-10T00:00:00Z"), 0.4), (t("2026-01-10T01:00:00Z"), 1.0), (t("2026-01-10T02:00:00Z"), 0.99)]
    assert p.hours_when(points, c, at_least=1.0, max_hold=6 * p.HOUR).num == pytest.approx(1)
    below = p.hours_when([(x, 0.2) for x, _ in points], c, at_least=1.0, max_hold=6 * p.HOUR)
    assert (below.num, below.den, below.entities) == (0.0, 3.0, 1)
    assert p.hours_when([], c, at_least=1.0).entities == 0


def test_rolling_mean_above_counts_hours_of_the_trailing_mean() -> None:
    start = t("2026-02-01T00:00:00Z")
    # 24 hours at 20 then 24 hours at 10 (a late duplicate at hour 0 changes nothing)
    points = [(start + h * p.HOUR, 20.0 if h < 24 else 10.0) for h in range(48)]
    points.append((start, 20.0))
    c = p.Calendar(start, start + 72 * p.HOUR, PARIS)
    part = p.rolling_mean_above(points, c, threshold=15, averaging_hours=24, min_coverage=0.75)
    # hours 17..23: 18+ hours of data, all 20 -> 7; hours 24..34: k hours of 10, k < 12 -> 11;
    # hour 35: exactly 15, not strictly above. Valid means: hours 17..53 (18 of 24 hours with data) -> 37
    assert part.num == 7 + 11
    assert part.den == 37


def test_rolling_mean_above_needs_coverage_and_handles_gaps() -> None:
    start = t("2026-02-01T00:00:00Z")
    points = [(start + h * p.HOUR, 50.0) for h in range(8) if h not in (2, 3, 4)]  # 5 of 8 hours
    c = p.Calendar(start, start + 8 * p.HOUR, PARIS)
    assert p.rolling_mean_above(points, c, threshold=10, averaging_hours=8).num == 0  # 6 of 8 needed
    points.append((start + 3 * p.HOUR + 1, 50.0))  # a reading at 03:00:00.000001 fills hour 3
    part = p.rolling_mean_above(points, c, threshold=10, averaging_hours=8)
    assert (part.num, part.den) == (1, 1)  # only the last hour's window has 6 hours of data
    assert p.rolling_mean_above([], c, threshold=10, averaging_hours=8).entities == 0


# --------------------------------------------------------------------------- nights


def test_night_minimum_on_the_spring_change_window_is_one_hour() -> None:
    c = cal("2026-03-28T12:00:00+01:00", "2026-03-30T12:00:00+02:00")
    points = [
        (t("2026-03-29T00:30:00Z"), 1.0),   # 01:30 CET: before the window
        (t("2026-03-29T01:00:00Z"), 5.0),   # 03:00 CEST: the window 02:00-04:00 is 01:00-02:00 UTC
        (t("2026-03-29T01:30:00Z"), 4.0),
        (t("2026-03-29T02:00:00Z"), 0.5),   # 04:00 CEST: after
        (t("2026-03-29T23:30:00Z"), 0.1),   # 01:30 CEST on the 30th: before
        (t("2026-03-30T01:59:00Z"), 6.0),   # late reading, given before its predecessor
        (t("2026-03-30T00:00:00Z"), 7.0),   # 02:00 CEST: in
    ]
    part = p.night_minimum(points, c)
    assert (part.num, part.den) == (4.0 + 6.0, 2)
    assert months(part) == {"2026-03": [10.0, 2.0]}


def test_night_minimum_on_the_autumn_change_window_is_three_hours() -> None:
    c = cal("2026-10-24T12:00:00+02:00", "2026-10-25T12:00:00+01:00")
    points = [
        (t("2026-10-25T00:00:00Z"), 9.0),   # 02:00 CEST: in
        (t("2026-10-25T02:30:00Z"), 3.0),   # 03:30 CET, the window's third hour: in
        (t("2026-10-25T03:00:00Z"), 1.0),   # 04:00 CET: out
    ]
    part = p.night_minimum(points, c)
    assert (part.num, part.den) == (3.0, 1)


def test_night_minimum_nights_without_readings_are_left_out() -> None:
    c = cal("2026-01-01T00:00:00+01:00", "2026-01-05T00:00:00+01:00")
    assert p.night_minimum([(t("2026-01-02T12:00:00Z"), 3.0)], c).den == 0
    assert p.night_minimum([], c).entities == 0


# --------------------------------------------------------------------------- waste


FILL = [
    ("2026-01-05T06:00:00Z", 0.2), ("2026-01-06T06:00:00Z", 0.6), ("2026-01-07T06:00:00Z", 0.9),
    ("2026-01-07T07:00:00Z", 0.8),   # a small drop (settling): no collection
    ("2026-01-07T10:00:00Z", 0.1),   # collected at 0.8 (the reading before the drop)
    ("2026-01-08T06:00:00Z", 0.3), ("2026-01-09T06:00:00Z", 0.4),
    ("2026-01-09T09:00:00Z", 0.05),  # collected at 0.4
    ("2026-01-09T12:00:00Z", 0.3),
    ("2026-01-11T12:00:00Z", 0.0),   # a drop after two silent days: not a collection one can trust
]


def test_collections_level_share_below_and_count() -> None:
    c = cal("2026-01-01T00:00:00+01:00", "2026-02-01T00:00:00+01:00")
    points = [(t(a), v) for a, v in reversed(FILL)]  # out of order on purpose
    assert p.collections(points, drop=0.3, max_gap=12 * p.HOUR) == [
        (t("2026-01-07T10:00:00Z"), 0.8), (t("2026-01-09T09:00:00Z"), 0.4)]
    level = p.collection_figure(points, c, measure="level", scale=100)
    assert level.num / level.den == pytest.approx(60.0)
    share = p.collection_figure(points, c, measure="share_below", below=0.5, scale=100)
    assert share.num / share.den == pytest.approx(50.0)
    count = p.collection_figure(points, c, measure="count")
    assert count.num == 2
    never = p.collection_figure([(t(a), 0.2) for a, _ in FILL], c, measure="share_below")
    assert (never.num, never.den, never.entities) == (0.0, 0.0, 1)


# --------------------------------------------------------------------------- sensors


def _reports() -> list[tuple[int, str]]:
    start = t("2026-01-10T00:00:00Z")
    quarter = 15 * 60_000_000
    points = [(start + i * quarter, "x") for i in range(9)]                     # 00:00 .. 02:00
    points += [(start + 5 * p.HOUR + i * quarter, "x") for i in range(4)]       # 05:00 .. 05:45
    points.append(points[3])                                                   # resent: one reading
    return points


def test_availability_completeness_uptime_freshness() -> None:
    c = cal("2026-01-10T00:00:00Z", "2026-01-10T06:00:00Z")
    quarter = 15 * 60_000_000
    completeness = p.availability(_reports(), c, measure="completeness", interval=quarter, scale=100)
    assert completeness.num / completeness.den == pytest.approx(13 / 24 * 100)
    uptime = p.availability(_reports(), c, measure="uptime", interval=quarter, down_after=3, scale=100)
    # 00:00-02:00 covered, then 45 min after 02:00; 05:00-05:45, then 15 min to the window's end
    assert uptime.num / uptime.den == pytest.approx((2 + 0.75 + 0.75 + 0.25) / 6 * 100)
    fresh = p.availability(_reports(), c, measure="freshness", interval=quarter, tolerance=0.5, scale=100)
    assert fresh.num / fresh.den == pytest.approx((2 + 0.375 + 0.75 + 0.25) / 6 * 100)
    assert p.availability([], c, measure="uptime", interval=quarter).entities == 0


def test_completeness_is_capped_per_sensor() -> None:
    c = cal("2026-01-10T00:00:00Z", "2026-01-10T01:00:00Z")
    minute = 60_000_000
    part = p.availability([(c.start + i * minute, 1) for i in range(60)], c, measure="completeness",
                          interval=15 * minute)
    assert part.num / part.den == 1.0


def test_battery_decline_pools_segments_around_a_replacement() -> None:
    month = p.AVERAGE_MONTH
    base = t("2026-01-01T00:00:00Z")
    points = [(base + int(x * month), v) for x, v in [(0, 1.0), (1, 0.97), (2, 0.94), (2.5, 1.0), (3.5, 0.99)]]
    part = p.linear_trend(points, replacement_jump=0.05, scale=100)  # the 0.06 rise is a replacement
    # segment 1: Sxx 2, Sxy -0.06; segment 2: Sxx 0.5, Sxy -0.005 -> -0.065 / 2.5 per month
    assert part.num == pytest.approx(-2.6)
    assert p.linear_trend(points, replacement_jump=0.2).num > part.num / 100  # one segment: the rise blurs it
    assert p.linear_trend(points[:1]).entities == 0
    assert p.linear_trend([(base, 1.0), (base + p.HOUR, 0.9)]).entities == 0  # less than a day apart


def test_repairs_failures_and_time_to_repair() -> None:
    c = cal("2026-01-01T00:00:00+01:00", "2026-02-01T00:00:00+01:00")
    base = t("2026-01-10T00:00:00Z")
    points = [
        (base, "ok"), (base + p.HOUR, "defectiveLamp"), (base + 2 * p.HOUR, "defectiveLamp"),
        (base + 5 * p.HOUR, "ok"),                                       # repaired after 4 h
        (base + 10 * p.HOUR, "brokenLantern"), (base + 10 * p.HOUR + p.HOUR // 2, "ok"),  # 0.5 h
        (base + 20 * p.HOUR, "columnIssue"),                             # still open at the end
    ]
    assert p.repairs(points, c, measure="failures", ok_values=["ok"]).num == 3
    mean = p.repairs(points, c, measure="mean_hours", ok_values=["ok"])
    assert mean.num / mean.den == pytest.approx(2.25)
    assert p.repairs(points, c, measure="failed_entities", ok_values=["ok"]).num == 1
    healthy = p.repairs([(base, "ok")], c, measure="failed_entities", ok_values=["ok"])
    assert (healthy.num, healthy.den) == (0.0, 1.0)
    # a window starting during a failure: the failure starts at the first reading
    open_first = p.repairs([(base, "defectiveLamp"), (base + p.HOUR, "ok")], c, measure="mean_hours", ok_values=["ok"])
    assert open_first.num == pytest.approx(1.0)
