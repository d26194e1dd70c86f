"""Run the indicator definitions over a store's history: per entity, folded per commune and territory."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.indicators import primitives as p
from gateway.indicators.definitions import Definition, duration_micros
from gateway.indicators.source import HistoryReader


@dataclass(frozen=True, slots=True)
class Window:
    """A named time window ``[start, end)`` in µs since the epoch."""

    name: str
    start: int
    end: int


@dataclass(slots=True)
class Outcome:
    """One indicator's partials: per tenant and window, and each entity's own figure per window."""

    definition: Definition
    tenants: dict[str, dict[str, p.Partial]] = field(default_factory=dict)
    entities: dict[tuple[str, str], dict[str, float | None]] = field(default_factory=dict)

    def territory(self, window: str) -> p.Partial:
        """The partials of every tenant folded together."""
        out = p.Partial()
        for by_window in self.tenants.values():
            if window in by_window:
                out.add(by_window[window])
        return out


@dataclass(slots=True)
class Totals:
    """Counts of what was read, for the summary line and the benchmark."""

    entities: int = 0
    instances: int = 0


def run(defn: Definition, points: Sequence[p.Point], cal: p.Calendar) -> p.Partial:
    """The partial of one entity's series for one definition."""
    prm = defn.params
    scale = float(prm.get("scale", 1.0))
    kind = defn.kind
    if kind == "meter":
        return p.meter(points, cal, scale=scale, reset_tolerance=float(prm.get("reset_tolerance", 0.0)))
    if kind == "sum":
        return p.total(points, cal, scale=scale)
    if kind == "mean":
        return p.mean(points, cal, scale=scale)
    if kind == "hours_when":
        hold = duration_micros(prm.get("max_hold", "PT1H"))
        if "values" in prm:
            return p.hours_when(points, cal, values=list(prm["values"]), max_hold=hold)
        return p.hours_when(points, cal, at_least=float(prm["at_least"]), max_hold=hold)
    if kind == "rolling_mean_above":
        return p.rolling_mean_above(points, cal, threshold=float(prm["threshold"]),
                                    averaging_hours=int(prm["averaging_hours"]),
                                    min_coverage=float(prm.get("min_coverage", 0.75)))
    if kind == "night_minimum":
        first, last = prm.get("window", ["02:00", "04:00"])
        return p.night_minimum(points, cal, start=_hm(first), end=_hm(last), scale=scale)
    if kind == "collections":
        return p.collection_figure(points, cal, measure=str(prm["measure"]), below=float(prm.get("below", 0.5)),
                                   drop=float(prm.get("drop", 0.3)),
                                   max_gap=duration_micros(prm.get("max_gap", "PT12H")), scale=scale)
    if kind == "availability":
        return p.availability(points, cal, measure=str(prm["measure"]), interval=duration_micros(prm["interval"]),
                              down_after=float(prm.get("down_after", 3.0)),
                              tolerance=float(prm.get("tolerance", 0.5)), scale=scale)
    if kind == "linear_trend":
        return p.linear_trend(points, replacement_jump=float(prm.get("replacement_jump", 0.2)), scale=scale)
    if kind == "repairs":
        return p.repairs(points, cal, measure=str(prm["measure"]), ok_values=list(prm.get("ok_values", ["ok"])))
    raise ValueError(f"unknown indicator kind {kind!r}")  # the schema's enum makes this unreachable


def _hm(text: str) -> tuple[int, int]:
    hours, minutes = text.split(":")
    return int(hours), int(minutes)


def value(defn: Definition, part: p.Partial, cal: p.Calendar) -> float | None:
    """The figure a partial stands for: a total or a ratio, per entity and per month when asked."""
    if part.entities == 0:
        return None
    if defn.is_total:
        figure = part.num
        if defn.per_entity:
            figure /= part.entities
    elif part.den > 0:
        figure = part.num / part.den
    else:
        return None
    if defn.per_month:
        months = cal.months()
        if months <= 0:
            return None
        figure /= months
    return figure


def monthly(defn: Definition, part: p.Partial) -> dict[str, float | None]:
    """The figure per local month (a per-month rate is the month's own total)."""
    out: dict[str, float | None] = {}
    for key in sorted(part.months):
        num, den = part.months[key]
        if defn.is_total:
            out[key] = num / part.entities if defn.per_entity and part.entities else num
        else:
            out[key] = num / den if den > 0 else None
    return out


async def compute(
    reader: HistoryReader,
    definitions: Sequence[Definition],
    windows: Sequence[Window],
    expand: Callable[[str], str],
    tenants: Sequence[str] | None = None,
    progress: Callable[[str, int], Any] | None = None,
) -> tuple[list[Outcome], list[str], Totals]:
    """Every definition over every selected tenant and window; returns the outcomes, tenants and totals."""
    outcomes = [Outcome(d) for d in definitions]
    known = await reader.tenants()
    chosen = list(tenants) if tenants is not None else known
    calendars: dict[tuple[str, str], p.Calendar] = {}
    for w in windows:
        for d in definitions:
            calendars.setdefault((w.name, d.timezone), p.Calendar(w.start, w.end, d.timezone))
    types = {d.id: frozenset(expand(t) for t in d.types) for d in definitions}
    attrs = {d.id: [expand(a) for a in d.attributes] for d in definitions}
    all_types = sorted(set().union(*types.values())) if types else []
    totals = Totals()
    for tenant in chosen:
        for outcome in outcomes:
            outcome.tenants[tenant] = {w.name: p.Partial() for w in windows}
        for entity_id, entity_types in await reader.entities(tenant, all_types):
            mine = [o for o in outcomes if not types[o.definition.id].isdisjoint(entity_types)]
            if not mine:
                continue
            totals.entities += 1
            needed = sorted({a for o in mine for a in attrs[o.definition.id]})
            for w in windows:
                series = {a: p.prepare(points)  # sorted and checked once for every definition reading it
                          for a, points in (await reader.series(tenant, entity_id, needed, w.start, w.end)).items()}
                totals.instances += sum(len(s) for s in series.values())
                for o in mine:
                    d = o.definition
                    attr = next((a for a in attrs[d.id] if series.get(a)), None)
                    cal = calendars[(w.name, d.timezone)]
                    part = run(d, series[attr], cal) if attr is not None else p.Partial()
                    o.tenants[tenant][w.name].add(part)
                    if part.entities:
                        o.entities.setdefault((tenant, entity_id), {})[w.name] = value(d, part, cal)
            if progress is not None:
                progress(tenant, totals.entities)
    return outcomes, chosen, totals
