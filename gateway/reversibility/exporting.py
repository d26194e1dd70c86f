"""``jonction export``: stream a store's tenants into a bundle and describe it in the manifest."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from gateway import __version__
from gateway.model import format_time
from gateway.reversibility.bundle import BundleWriter, type_key
from gateway.reversibility.config import config_records
from gateway.reversibility.progress import Progress
from gateway.store import history


class Reader(Protocol):
    """Where an export reads from: the embedded store or a broker."""

    def describe(self) -> dict[str, Any]:
        """The source as the manifest records it (no credentials)."""
        ...

    async def tenants(self) -> list[str]:
        """The tenants to consider (before the --tenant filter)."""
        ...

    def entities(self, tenant: str, types: Sequence[str] | None) -> AsyncIterator[dict[str, Any]]:
        """Entity lines of a tenant."""
        ...

    def history(
        self, tenant: str, types: Sequence[str] | None, since: int | None, until: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """History instance lines of a tenant."""
        ...

    def subscriptions(self, tenant: str, removed: list[str]) -> AsyncIterator[dict[str, Any]]:
        """Subscription lines of a tenant (credentials removed, listed in ``removed``)."""
        ...

    def hosted_contexts(self) -> dict[str, Any]:
        """Hosted @contexts (id → document); empty when the source does not say."""
        ...


@dataclass(slots=True)
class ExportOptions:
    """What to export."""

    tenants: list[str] | None = None
    types: list[str] | None = None
    since: str | None = None
    until: str | None = None
    config: Path | None = None
    history: bool = True
    context: str = ""


@dataclass(slots=True)
class _TimeRange:
    first: int | None = None
    last: int | None = None

    def add(self, micros: int) -> None:
        self.first = micros if self.first is None else min(self.first, micros)
        self.last = micros if self.last is None else max(self.last, micros)

    def to_json(self) -> dict[str, str] | None:
        if self.first is None or self.last is None:
            return None
        return {"first": history.from_micros(self.first), "last": history.from_micros(self.last)}


@dataclass(slots=True)
class TenantSummary:
    """What was exported for one tenant."""

    directory: str
    entities: dict[str, int] = field(default_factory=dict)
    history: dict[str, int] = field(default_factory=dict)
    subscriptions: int = 0
    time_range: _TimeRange = field(default_factory=_TimeRange)

    def to_json(self) -> dict[str, Any]:
        """The manifest's entry for the tenant."""
        return {
            "directory": self.directory,
            "entities": dict(sorted(self.entities.items())),
            "entities_total": sum(self.entities.values()),
            "history": dict(sorted(self.history.items())),
            "history_total": sum(self.history.values()),
            "subscriptions": self.subscriptions,
            "time_range": self.time_range.to_json(),
        }


def instance_time(line: dict[str, Any]) -> int | None:
    """µs of an instance line's observedAt (the time range is the observations'), None without one."""
    for value in line.values():
        if isinstance(value, dict):
            text = value.get("observedAt")
            if isinstance(text, str):
                try:
                    return history.to_micros(text)
                except ValueError:
                    return None
    return None


def tenant_directory(index: int, tenant: str) -> str:
    """``tenants/<n>-<readable name>``: unique by its number, readable by its name."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", tenant)[:64].strip("._") or "default"
    return f"tenants/{index:03d}-{slug}"


def parse_time(text: str | None, option: str) -> int | None:
    """µs of a --since/--until value (RFC 3339 with a zone, or a date read as UTC midnight)."""
    from gateway.errors import ConfigInvalid

    if text is None:
        return None
    value = text if "T" in text else f"{text}T00:00:00Z"
    try:
        return history.to_micros(value)
    except ValueError:
        raise ConfigInvalid(
            f"{option} {text!r}: expected an RFC 3339 time with a zone, or a date (YYYY-MM-DD)"
        ) from None


async def run_export(reader: Reader, out: Path, options: ExportOptions, progress: Progress) -> dict[str, Any]:
    """Export what ``options`` selects from ``reader`` into the bundle ``out``; return the manifest."""
    since = parse_time(options.since, "--since")
    until = parse_time(options.until, "--until")
    writer = BundleWriter(out)
    removed: list[str] = []
    summaries: dict[str, TenantSummary] = {}
    overall = _TimeRange()
    try:
        available = await reader.tenants()
        if options.tenants:
            missing = [t for t in options.tenants if t not in available]
            if missing:
                from gateway.errors import ConfigInvalid

                raise ConfigInvalid(f"--tenant: no tenant {', '.join(map(repr, missing))} in the source "
                                    f"(it has {', '.join(map(repr, available)) or 'none'})")
            chosen = list(dict.fromkeys(options.tenants))
        else:
            chosen = available
        for index, tenant in enumerate(chosen):
            summary = summaries[tenant] = TenantSummary(tenant_directory(index, tenant))
            progress.at(f"tenant {tenant or '(default)'}")
            name = f"{summary.directory}/entities.ndjson"
            file = writer.open(name)
            async for line in reader.entities(tenant, options.types):
                file.write(line)
                key = type_key(line)
                summary.entities[key] = summary.entities.get(key, 0) + 1
                progress.add("entities")
            writer.add_file(name, file, kind="entities", tenant=tenant)
            if options.history:
                name = f"{summary.directory}/history.ndjson"
                file = writer.open(name)
                async for line in reader.history(tenant, options.types, since, until):
                    file.write(line)
                    key = type_key(line)
                    summary.history[key] = summary.history.get(key, 0) + 1
                    moment = instance_time(line)
                    if moment is not None:
                        summary.time_range.add(moment)
                        overall.add(moment)
                    progress.add("instances")
                writer.add_file(name, file, kind="history", tenant=tenant)
            name = f"{summary.directory}/subscriptions.ndjson"
            file = writer.open(name)
            async for line in reader.subscriptions(tenant, removed):
                file.write(line)
                summary.subscriptions += 1
            writer.add_file(name, file, kind="subscriptions", tenant=tenant)
        contexts = reader.hosted_contexts()
        if contexts:
            file = writer.open("contexts.ndjson")
            for context_id, document in sorted(contexts.items()):
                file.write({"id": context_id, "document": document})
            writer.add_file("contexts.ndjson", file, kind="contexts", tenant=None)
        configs = 0
        if options.config is not None:
            file = writer.open("config.ndjson")
            for record in config_records(options.config, removed):
                file.write(record)
                configs += 1
            writer.add_file("config.ndjson", file, kind="config", tenant=None)
        manifest = {
            "jonction_version": __version__,
            "created": format_time(datetime.now(UTC)),
            "source": reader.describe(),
            "context": options.context,
            "filters": {"tenants": options.tenants, "types": options.types, "since": options.since,
                        "until": options.until, "history": options.history},
            "tenants": {t: s.to_json() for t, s in summaries.items()},
            "totals": {
                "tenants": len(summaries),
                "entities": sum(sum(s.entities.values()) for s in summaries.values()),
                "history": sum(sum(s.history.values()) for s in summaries.values()),
                "subscriptions": sum(s.subscriptions for s in summaries.values()),
                "contexts": len(contexts),
                "config_files": configs,
            },
            "time_range": overall.to_json(),
            "secrets_removed": removed,
        }
        progress.done()
        manifest = writer.publish(manifest)
    except BaseException:
        progress.done()
        writer.abort()
        raise
    return manifest
