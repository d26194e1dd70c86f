"""The overview's data: every source and sink at a glance, with message rates over the last half hour.

The admin API gives each source's message count since start; a rate over time needs samples, so
a small sampler reads the counts every few seconds and keeps half an hour of them in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from gateway.runtime.state import RUNTIME, Runtime

SAMPLE_S: Final = 2.0
"""Seconds between two samples of the message counts."""
WINDOW_S: Final = 1800.0
"""Half an hour of samples: the sparkline's span."""
BUCKETS: Final = 30
"""Points of a sparkline (one per minute)."""


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class _Series:
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=int(WINDOW_S / SAMPLE_S) + 2))
    last_change: float | None = None


@dataclass
class Sampler:
    """Message counts per source, sampled over the last half hour."""

    series: dict[str, _Series] = field(default_factory=dict)

    def sample(self, counts: dict[str, int], now: float) -> None:
        """Record the current count of every source."""
        for name, count in counts.items():
            s = self.series.setdefault(name, _Series())
            if s.samples and count != s.samples[-1][1]:
                s.last_change = now
            elif not s.samples and count > 0:
                s.last_change = now
            s.samples.append((now, count))

    def _at(self, s: _Series, t: float) -> int | None:
        """The count at time ``t`` (the last sample at or before it), None before the first sample."""
        found = None
        for at, count in s.samples:
            if at > t:
                break
            found = count
        return found

    def view(self, name: str, count: int, now: float) -> dict[str, Any]:
        """Messages per minute (last minute), a per-minute sparkline and the last message's time."""
        s = self.series.get(name)
        if s is None or not s.samples:
            return {"perMinute": None, "spark": [], "lastMessageAt": None}
        last_change = now if count != s.samples[-1][1] else s.last_change
        first_t = s.samples[0][0]
        base = self._at(s, now - 60.0)
        if base is None:  # less than a minute of samples: scale what there is
            span = max(now - first_t, 1.0)
            per_minute = (count - s.samples[0][1]) * 60.0 / span
        else:
            per_minute = float(count - base)
        # Rates between consecutive samples, merged into at most BUCKETS points (one a minute once
        # half an hour is sampled; finer while the gateway has just started).
        points = [*s.samples, (now, count)]
        steps = [(b[1] - a[1], b[0] - a[0]) for a, b in itertools.pairwise(points) if b[0] > a[0]]
        size = max(1, -(-len(steps) // BUCKETS))
        spark: list[float] = []
        for k in range(0, len(steps), size):
            group = steps[k:k + size]
            seconds = sum(dt for _, dt in group)
            spark.append(round(max(sum(n for n, _ in group), 0) * 60.0 / seconds, 1))
        return {"perMinute": round(per_minute, 1), "spark": spark, "lastMessageAt": _iso(last_change)}


def _counts(rt: Runtime) -> dict[str, int]:
    return {name: sup.status.messages for name, sup in rt.sources.items()}


def sampler_ctx(sampler: Sampler) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` sampling the sources' counts while the application runs."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                rt = app.get(RUNTIME)
                if rt is not None:
                    sampler.sample(_counts(rt), time.time())
                await asyncio.sleep(SAMPLE_S)

        task = asyncio.create_task(loop(), name="console-sampler")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return ctx


def overview(rt: Runtime, sampler: Sampler) -> dict[str, Any]:
    """Sources (adapter, tenant, state, rates, dead letters) and sinks (circuit, backlog) as JSON."""
    now = time.time()
    letters: dict[str, int] = {}
    for (source, _stage), n in rt.deadletters.count().items():
        letters[source] = letters.get(source, 0) + n
    sources = []
    for desc in rt.pipeline.describe():
        name = desc["name"]
        sup = rt.sources.get(name)
        status: dict[str, Any] = sup.status.to_json() if sup else {"state": "disabled", "messages": 0}
        sources.append({**desc, **status, **sampler.view(name, int(status.get("messages") or 0), now),
                        "deadLetters": letters.get(name, 0)})
    backlog: dict[str, dict[str, Any]] = {}
    for row in rt.outbox.status():
        entry = backlog.setdefault(row.sink, {"entities": 0, "oldestAgeSeconds": 0.0})
        entry["entities"] += row.entities
        entry["oldestAgeSeconds"] = max(entry["oldestAgeSeconds"], row.oldest_age_s)
    sinks = [{**p.describe(), "backlog": backlog.get(name, {"entities": 0, "oldestAgeSeconds": 0.0})}
             for name, p in rt.publishers.items()]
    return {"at": _iso(now), "sources": sources, "sinks": sinks,
            "deadLetters": sum(letters.values()), "ready": rt.ready}


def overview_handler(sampler: Sampler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """GET /console/api/overview."""

    async def handler(request: web.Request) -> web.Response:
        rt = request.app.get(RUNTIME)
        if rt is None:
            return web.json_response({"sources": [], "sinks": [], "deadLetters": 0, "ready": False})
        return web.json_response(overview(rt, sampler))

    return handler
