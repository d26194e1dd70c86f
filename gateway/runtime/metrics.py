"""Prometheus text exposition (format 0.0.4) for the gateway, written without a dependency.

Counters and histograms are labelled; gauges are read from callbacks at scrape time so that
the outbox depth and age are always current.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from typing import Final

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                          1.0, 2.5, 5.0, 10.0)
"""Default histogram buckets in seconds."""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _fmt_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Counter:
    """A monotonically increasing counter, one series per label set."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the series with ``labels``."""
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, **labels: str) -> float:
        """Current value of one series (0 when never incremented)."""
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> Iterable[str]:
        """Exposition lines."""
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_fmt_labels(labels)} {_fmt_value(value)}"


class Gauge:
    """A gauge whose series come from a callback at scrape time."""

    def __init__(self, name: str, help_text: str, read: Callable[[], Iterable[tuple[Labels, float]]]) -> None:
        self.name = name
        self.help = help_text
        self.read = read

    def render(self) -> Iterable[str]:
        """Exposition lines."""
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in self.read():
            yield f"{self.name}{_fmt_labels(labels)} {_fmt_value(value)}"


class Histogram:
    """A cumulative histogram with fixed buckets, one series per label set."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.buckets = buckets
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation."""
        key = tuple(sorted(labels.items()))
        entry = self.series.get(key)
        if entry is None:
            entry = ([0] * (len(self.buckets) + 1), [0.0])
            self.series[key] = entry
        entry[0][bisect.bisect_left(self.buckets, value)] += 1
        entry[1][0] += value

    def render(self) -> Iterable[str]:
        """Exposition lines."""
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                running += count
                le = (*labels, ("le", _fmt_value(bound)))
                yield f"{self.name}_bucket{_fmt_labels(le)} {running}"
            yield f"{self.name}_sum{_fmt_labels(labels)} {_fmt_value(total[0])}"
            yield f"{self.name}_count{_fmt_labels(labels)} {running}"


class Metrics:
    """Every metric the gateway exposes; one instance per app."""

    def __init__(self) -> None:
        self.messages_in = Counter("jonction_messages_received_total", "Raw messages accepted, per source.")
        self.duplicates = Counter("jonction_messages_duplicate_total", "Raw messages dropped as redeliveries.")
        self.entities_in = Counter("jonction_entities_accepted_total", "Valid entities queued in the outbox.")
        self.dead_letters = Counter("jonction_dead_letters_total", "Dead letters recorded, per stage.")
        self.entities_out = Counter("jonction_entities_published_total", "Entities written, per sink.")
        self.publish_errors = Counter("jonction_publish_failures_total", "Failed publish attempts, per sink.")
        self.stale_dropped = Counter(
            "jonction_stale_attributes_dropped_total", "Attributes older than what the sink holds."
        )
        self.late_to_history = Counter(
            "jonction_late_attributes_to_history_total",
            "Attributes older than what the sink holds, added to its temporal history only.",
        )
        self.publish_latency = Histogram("jonction_publish_seconds", "Duration of one batch upsert, per sink.")
        self.end_to_end = Histogram(
            "jonction_end_to_end_seconds", "Receipt of a raw message to commit in the sink."
        )
        self.gauges: list[Gauge] = []

    def gauge(self, name: str, help_text: str, read: Callable[[], Iterable[tuple[Labels, float]]]) -> None:
        """Register a gauge read at scrape time."""
        self.gauges.append(Gauge(name, help_text, read))

    def render(self) -> str:
        """The whole exposition document."""
        lines: list[str] = []
        for metric in (
            self.messages_in,
            self.duplicates,
            self.entities_in,
            self.dead_letters,
            self.entities_out,
            self.publish_errors,
            self.stale_dropped,
            self.late_to_history,
            self.publish_latency,
            self.end_to_end,
        ):
            lines.extend(metric.render())
        for gauge in self.gauges:
            lines.extend(gauge.render())
        return "\n".join(lines) + "\n"
