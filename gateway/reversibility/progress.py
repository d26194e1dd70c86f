"""A one-line progress display on stderr (only on a terminal, or when asked), at most twice a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts what an export or import has done and redraws one status line now and then."""

    def __init__(self, verb: str, *, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.verb = verb
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.counts: dict[str, int] = {}
        self.where = ""
        self.started = time.monotonic()
        self._shown = 0.0
        self._width = 0

    def at(self, where: str) -> None:
        """Say what is being worked on (a tenant, a file)."""
        self.where = where
        self._draw(force=True)

    def add(self, what: str, n: int = 1) -> None:
        """Count ``n`` more records of a kind (entities, instances…)."""
        self.counts[what] = self.counts.get(what, 0) + n
        self._draw()

    def _draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown < 0.5:
            return
        self._shown = now
        elapsed = max(now - self.started, 1e-6)
        total = sum(self.counts.values())
        parts = ", ".join(f"{n:,} {what}" for what, n in self.counts.items())
        line = f"{self.verb} {self.where}: {parts or 'starting'} ({total / elapsed:,.0f}/s, {elapsed:,.0f} s)"
        self.stream.write("\r" + line.ljust(self._width))
        self._width = len(line)
        self.stream.flush()

    def done(self) -> None:
        """End the status line (the summary follows on its own lines)."""
        if self.enabled and self._width:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
