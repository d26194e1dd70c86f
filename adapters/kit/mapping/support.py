"""What the mapping-driven transports share: secrets from env/files, the mapping, state files, backoff."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from adapters.kit.mapping.engine import EntityMapping, load_mapping
from gateway.errors import ConfigInvalid

_ENV_REF: Final = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
BUILTIN: Final = "builtin:"
"""Prefix of a ``mapping_file`` shipped in the adapter's ``examples/`` folder."""




def mapping_from_config(config: Mapping[str, Any], package: str) -> EntityMapping:
    """The mapping of a source: inline ``mapping`` or ``mapping_file`` (``builtin:<name>`` for shipped examples)."""
    inline = config.get("mapping")
    path = config.get("mapping_file")
    if (inline is None) == (path is None):
        raise ConfigInvalid("a mapping is required", ["/mapping, /mapping_file: give exactly one of them"])
    if inline is not None:
        if not isinstance(inline, Mapping):
            raise ConfigInvalid("invalid mapping", ["/mapping: must be an object"])
        try:
            return load_mapping(inline)
        except ConfigInvalid as exc:
            # The engine's pointers are relative to the mapping document: anchor them in the config.
            raise ConfigInvalid("invalid mapping", [_under("/mapping", p) for p in exc.problems]) from exc
    text = str(path)
    if text.startswith(BUILTIN):
        name = text[len(BUILTIN) :]
        resource = files(package).joinpath("examples", name)
        if "/" in name or not resource.is_file():
            raise ConfigInvalid("unknown built-in mapping", [f"/mapping_file: no example named {name!r}"])
        return load_mapping(Path(str(resource)))
    return load_mapping(Path(text))


def _under(prefix: str, problem: str) -> str:
    """``problem`` (``/pointer: text``, ``/: text`` at the root) with its pointer moved under ``prefix``."""
    return prefix + (problem[1:] if problem.startswith("/:") else problem)


def content_key(*parts: str | bytes) -> str:
    """A stable idempotency key: SHA-256 over the parts, each length-prefixed."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


class StateFile:
    """A small JSON document persisted atomically (watermarks, imported files); memory-only without a path."""

    def __init__(self, state_dir: str | None, name: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "source"
        self.path = Path(state_dir) / f"{safe}.json" if state_dir else None
        self._data: dict[str, Any] | None = None

    def load(self) -> dict[str, Any]:
        """The stored state ({} when none); a corrupt file is set aside, not trusted."""
        if self._data is not None:
            return self._data
        data: dict[str, Any] = {}
        if self.path is not None and self.path.exists():
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                data = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                with contextlib.suppress(OSError):
                    self.path.replace(self.path.with_suffix(".corrupt"))
        self._data = data
        return data

    def save(self, data: Mapping[str, Any]) -> None:
        """Replace the stored state (write to a temporary file, fsync, rename)."""
        self._data = dict(data)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(self._data, handle, ensure_ascii=False, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)


class Backoff:
    """Exponential backoff with jitter, reset on success."""

    def __init__(self, initial: float = 1.0, maximum: float = 300.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (doubles per failure, 20 % jitter, capped)."""
        base = min(self.maximum, self.initial * (2 ** min(self.failures, 30)))
        self.failures += 1
        return float(min(self.maximum, base * random.uniform(0.8, 1.2)))  # jitter, not crypto

    def reset(self) -> None:
        """Forget past failures."""
        self.failures = 0


def retry_after(value: str | None, default: float, maximum: float) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped at ``maximum``."""
    if not value:
        return min(default, maximum)
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - time.time()
        except (TypeError, ValueError):
            seconds = default
    return max(0.0, min(seconds, maximum))


class Availability:
    """Logs "unavailable" once when a source fails and "recovered" once when it answers again."""

    def __init__(self, log: logging.Logger, name: str) -> None:
        self.log = log
        self.name = name
        self.down = False

    def failed(self, reason: str) -> None:
        """Record a failure; only the first of a series is logged as a warning."""
        if not self.down:
            self.down = True
            self.log.warning("source %s unavailable: %s", self.name, reason)
        else:
            self.log.debug("source %s still unavailable: %s", self.name, reason)

    def succeeded(self) -> None:
        """Record a success; logs "recovered" once after failures."""
        if self.down:
            self.down = False
            self.log.info("source %s recovered", self.name)


async def sleep_or_stop(stopped: asyncio.Event, delay: float) -> bool:
    """Wait ``delay`` seconds unless ``stopped`` is set first; True when stopped."""
    if delay <= 0:
        return stopped.is_set()
    try:
        await asyncio.wait_for(stopped.wait(), timeout=delay)
    except TimeoutError:
        return False
    return True
