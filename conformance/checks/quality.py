"""Q — data quality over an observation window, against what the vendor declared.

The checker watches the target for a window (polling the API; days in production, seconds in
tests) and measures, per declared entity type: the reporting interval (median and 95th
percentile), completeness, latency from observedAt to first sight, plausible ranges and the
number of devices reporting. The gap between promise and field performance is the finding.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conformance.context import FixtureError, RunContext, compact_entity, is_failure, type_selectors
from conformance.registry import Fail, NotApplicable, Skip, check
from gateway.model import ENTITY_MEMBERS, parse_time

Q = ("declaration",)


@dataclass(slots=True)
class TypeSeries:
    """What was observed for one declared entity type."""

    decl: dict[str, Any]
    times: dict[str, set[float]] = field(default_factory=dict)
    """entity id -> observation times (POSIX seconds, from observedAt)."""
    latencies: list[float] = field(default_factory=list)
    values: list[tuple[str, str, float]] = field(default_factory=list)
    """(entity id, attribute, value) for every distinct observation of a ranged attribute."""
    live: bool = True
    """True when measured by polling an API (latency measurable)."""


@dataclass(slots=True)
class Observation:
    """The result of one observation window."""

    start: float
    end: float
    series: dict[str, TypeSeries]
    polls: int = 0


def declarations(ctx: RunContext) -> list[dict[str, Any]]:
    """The vendor's declarations (profile ``quality`` block, possibly replaced by a vendor sheet)."""
    decls: list[dict[str, Any]] = ctx.profile.quality.get("declarations", [])
    if not decls:
        raise Skip("no vendor declaration (give a vendor sheet with --vendor-sheet or a quality block in the "
                   "profile)")
    return decls


def _obs_time(ent: dict[str, Any]) -> float | None:
    latest: float | None = None
    for name, attr in ent.items():
        if name in ENTITY_MEMBERS:
            continue
        for inst in attr if isinstance(attr, list) else [attr]:
            if isinstance(inst, dict) and isinstance(inst.get("observedAt"), str):
                try:
                    t = parse_time(inst["observedAt"]).timestamp()
                except ValueError:
                    continue
                latest = t if latest is None else max(latest, t)
    return latest


def _ranged_values(ent: dict[str, Any], decl: dict[str, Any]) -> list[tuple[str, float]]:
    out = []
    for name in decl.get("ranges", {}):
        attr = ent.get(name)
        for inst in attr if isinstance(attr, list) else [attr]:
            value = inst.get("value") if isinstance(inst, dict) else inst
            if isinstance(value, int | float) and not isinstance(value, bool):
                out.append((name, float(value)))
    return out


def _absorb(series: TypeSeries, ent: dict[str, Any], seen_at: float | None) -> None:
    eid = str(ent.get("id"))
    t = _obs_time(ent)
    if t is None:
        return
    known = series.times.setdefault(eid, set())
    if t in known:
        return
    known.add(t)
    if seen_at is not None:
        series.latencies.append(max(0.0, seen_at - t))
    for name, value in _ranged_values(ent, series.decl):
        series.values.append((eid, name, value))


async def observe(ctx: RunContext) -> Observation:
    """Run the observation window once per run (shared by every Q check)."""
    # Records are read before taking the lock: data_entities takes it too (asyncio locks do not nest).
    records = await ctx.data_entities() if ctx.client is None else []
    async with ctx._lock:
        if "observation" in ctx._cache:
            cached: Observation = ctx._cache["observation"]
            return cached
        decls = declarations(ctx)
        series = {d["type"]: TypeSeries(d) for d in decls}
        if ctx.client is None:
            obs = _from_records(records, series)
        else:
            obs = await _poll(ctx, series)
        ctx._cache["observation"] = obs
        return obs


def _from_records(records: list[tuple[str, Any]], series: dict[str, TypeSeries]) -> Observation:
    times = []
    for _, rec in records:
        if is_failure(rec) or not isinstance(rec, dict) or rec.get("type") not in series:
            continue
        s = series[rec["type"]]
        s.live = False
        _absorb(s, rec, None)
        t = _obs_time(rec)
        if t is not None:
            times.append(t)
    if not times:
        raise Skip("the data holds no observedAt to measure")
    return Observation(min(times), max(times), series)


async def _poll(ctx: RunContext, series: dict[str, TypeSeries]) -> Observation:
    window = float(ctx.profile.quality.get("window_seconds", 3600))
    every = float(ctx.profile.quality.get("poll_interval_seconds", 60))
    shortest = min(float(s.decl["reporting_interval_seconds"]) for s in series.values())
    if every > shortest / 2:
        # Polling slower than twice per reporting interval would miss readings and blame the vendor.
        raise FixtureError(f"poll interval {every:g} s is too long to observe a reporting interval of "
                           f"{shortest:g} s: poll at most every {shortest / 2:g} s (--poll)")
    start_wall = datetime.now(UTC).timestamp()
    start = time.monotonic()
    polls = 0
    while True:
        polls += 1
        for etype, s in series.items():
            offset = 0
            while offset < ctx.profile.max_entities:
                # By IRI and by term, compacted back offline: a broker needs no @context (as L1).
                resp = await ctx.api("GET", "/entities", params={"type": ",".join(type_selectors(etype)),
                                                                  "limit": "100", "offset": str(offset)},
                                     record=polls == 1)
                items = resp.json() if resp.status == 200 else None
                if not isinstance(items, list):
                    raise Fail(f"polling {etype} answered HTTP {resp.status}")
                now = datetime.now(UTC).timestamp()
                for ent in items:
                    if isinstance(ent, dict):
                        # Values present at the first poll may be old: their latency is unknown.
                        _absorb(s, compact_entity(ent), now if polls > 1 else None)
                if len(items) < 100:
                    break
                offset += 100
        elapsed = time.monotonic() - start
        if elapsed >= window:
            break
        await asyncio.sleep(min(every, window - elapsed))
    return Observation(start_wall, start_wall + (time.monotonic() - start), series, polls)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[k]


def _intervals(s: TypeSeries) -> list[float]:
    out: list[float] = []
    for times in s.times.values():
        ordered = sorted(times)
        out.extend(b - a for a, b in itertools.pairwise(ordered))
    return out


async def _judge(ctx: RunContext, what: str, measure: Any, promise: str | None = None) -> str | None:
    if promise is not None and not any(promise in d for d in declarations(ctx)):
        # An optional promise the vendor did not make: nothing to hold the data to.
        raise NotApplicable(f"the vendor declares no {promise} for any type, so {what} is not measured")
    obs = await observe(ctx)
    failures: list[str] = []
    notes: list[str] = []
    measured = 0
    for etype, s in obs.series.items():
        result = measure(ctx, obs, etype, s)
        if result is None:
            continue
        ok, figures, text = result
        measured += 1
        ctx.measurements.append({"type": etype, **figures, "pass": ok})
        (notes if ok else failures).append(f"{etype}: {text}")
    if failures:
        raise Fail(f"{what}: " + "; ".join(failures))
    if not measured:
        types = ", ".join(sorted(obs.series)) or "none"
        raise Skip(f"nothing to measure for {what}: the data of the declared types ({types}) holds no series to "
                   "measure (a delivery needs two or more observations per entity, or check the live feed)")
    return "; ".join(notes)


def _interval_median(ctx: RunContext, obs: Observation, etype: str, s: TypeSeries) -> Any:
    deltas = _intervals(s)
    if not deltas:
        return None
    declared = float(s.decl["reporting_interval_seconds"])
    limit = declared * (1 + ctx.profile.threshold("interval_tolerance"))
    med = statistics.median(deltas)
    return (med <= limit, {"declared_interval_s": declared, "median_interval_s": round(med, 3),
                           "limit_s": round(limit, 3), "samples": len(deltas)},
            f"median interval {med:.3g} s for {declared:g} s declared (limit {limit:.3g} s)")


def _interval_p95(ctx: RunContext, obs: Observation, etype: str, s: TypeSeries) -> Any:
    deltas = _intervals(s)
    if not deltas:
        return None
    declared = float(s.decl["reporting_interval_seconds"])
    limit = declared * ctx.profile.threshold("interval_p95_factor")
    p95 = _percentile(deltas, 0.95)
    return (p95 <= limit, {"declared_interval_s": declared, "p95_interval_s": round(p95, 3),
                           "limit_s": round(limit, 3), "samples": len(deltas)},
            f"95th percentile interval {p95:.3g} s (limit {limit:.3g} s)")


def _completeness(ctx: RunContext, obs: Observation, etype: str, s: TypeSeries) -> Any:
    if "completeness_min" not in s.decl:
        return None
    declared = float(s.decl["reporting_interval_seconds"])
    span = obs.end - obs.start
    expected = math.floor(span / declared)
    if expected < 2 or not s.times:
        return None
    ratios = []
    for times in s.times.values():
        inside = [t for t in times if obs.start - declared / 2 <= t <= obs.end + declared / 2]
        ratios.append(min(1.0, len(inside) / expected))
    value = statistics.mean(ratios)
    need = float(s.decl["completeness_min"])
    return (value >= need, {"expected_per_entity": expected, "completeness": round(value, 4),
                            "declared_min": need, "entities": len(ratios)},
            f"completeness {value:.1%} for {need:.0%} declared")


def _latency(ctx: RunContext, obs: Observation, etype: str, s: TypeSeries) -> Any:
    if "latency_max_seconds" not in s.decl or not s.live or not s.latencies:
        return None
    p95 = _percentile(s.latencies, 0.95)
    limit = float(s.decl["latency_max_seconds"])
    return (p95 <= limit, {"p95_latency_s": round(p95, 3), "median_latency_s":
                           round(statistics.median(s.latencies), 3), "declared_max_s": limit,
                           "samples": len(s.latencies)},
            f"95th percentile latency {p95:.3g} s for {limit:g} s declared (includes up to one poll interval)")


def _ranges(ctx: RunContext, obs: Observation, etype: str, s: TypeSeries) -> Any:
    ranges = {k: v for k, v in s.decl.get("ranges", {}).items() if "min" in v or "max" in v}
    values = [(e, n, v) for e, n, v in s.values if n in ranges]
    if not values:
        return None
    out = [(e, n, v) for e, n, v in values
           if v < ranges[n].get("min", -math.inf) or v > ranges[n].get("max", math.inf)]
    rate = len(out) / len(values)
    limit = ctx.profile.threshold("max_out_of_range_rate")
    examples = [f"{e} {n}={v:g}" for e, n, v in out[:5]]
    return (rate <= limit, {"values": len(values), "out_of_range": len(out), "rate": round(rate, 4),
                            "limit": limit, "examples": examples},
            f"{rate:.1%} of {len(values)} values out of the declared ranges (limit {limit:.1%})"
            + (f", e.g. {', '.join(examples)}" if examples else ""))


def _devices(ctx: RunContext, obs: Observation, etype: str, s: TypeSeries) -> Any:
    if "devices" not in s.decl:
        return None
    reporting = sum(1 for t in s.times.values() if t)
    need = int(s.decl["devices"])
    return (reporting >= need, {"devices_reporting": reporting, "declared_devices": need},
            f"{reporting} devices reporting for {need} declared")


@check("Q-INT-001", "Median reporting interval as declared", needs=Q,
       sends="polls GET /entities?type=T over the observation window (or reads the delivered series)",
       expects="median interval between observations ≤ declared interval x (1 + tolerance)",
       explain="A sensor sold as reporting every 10 minutes must do so in the field.")
async def _q_interval(ctx: RunContext) -> str | None:
    return await _judge(ctx, "reporting interval", _interval_median)


@check("Q-INT-002", "Reporting interval stays regular (95th percentile)", needs=Q,
       sends="polls GET /entities?type=T over the observation window",
       expects="95th percentile of intervals ≤ declared interval x p95 factor",
       explain="Long silences are as harmful as a slow average.")
async def _q_interval_p95(ctx: RunContext) -> str | None:
    return await _judge(ctx, "interval regularity", _interval_p95)


@check("Q-CMP-001", "Completeness as declared", needs=Q,
       sends="polls GET /entities?type=T over the observation window",
       expects="observations received / observations expected ≥ declared completeness",
       explain="Missing readings make statistics and alerts unreliable.")
async def _q_completeness(ctx: RunContext) -> str | None:
    return await _judge(ctx, "completeness", _completeness, "completeness_min")


@check("Q-LAT-001", "Freshness as declared", needs=Q,
       sends="polls GET /entities?type=T; notes when each new observedAt is first seen",
       expects="95th percentile of (first seen - observedAt) ≤ declared latency",
       explain="A reading that arrives an hour late is useless for operations.")
async def _q_latency(ctx: RunContext) -> str | None:
    if ctx.client is None:
        raise NotApplicable(f"freshness is measured on a live feed (an endpoint target): a {ctx.target.kind} "
                            "target holds no arrival times")
    return await _judge(ctx, "latency", _latency, "latency_max_seconds")


@check("Q-RNG-001", "Values stay within declared plausible ranges", needs=Q,
       sends="polls GET /entities?type=T over the observation window",
       expects="share of values outside the declared [min, max] ≤ the profile's threshold",
       explain="Impossible values (a 250 % full container) reveal faulty sensors or wrong scaling.")
async def _q_ranges(ctx: RunContext) -> str | None:
    return await _judge(ctx, "plausible ranges", _ranges, "ranges")


@check("Q-DEV-001", "The declared number of devices reports", needs=Q,
       sends="polls GET /entities?type=T over the observation window",
       expects="number of entities with at least one observation ≥ declared devices",
       explain="A fleet sold as 200 sensors must show 200 sensors reporting.")
async def _q_devices(ctx: RunContext) -> str | None:
    return await _judge(ctx, "devices reporting", _devices, "devices")
