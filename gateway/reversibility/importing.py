"""``jonction import``: verify a bundle against its manifest, then write it, resumably and idempotently.

Nothing is written before every file's SHA-256 and line count match the manifest and the counts per
tenant agree with the files. Then contexts, and per tenant its entities, history and subscriptions
go in batches; after each committed batch a journal (a small JSON file, replaced atomically) records
how many lines of which file are in. A run that stops — killed, a power cut, a broker gone — resumes
from the journal; the batch that was committed but not yet journaled is written again, which changes
nothing: entities are stored as they were exported, and a history instance replaces the one with the
same series, observedAt and instanceId instead of doubling it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from gateway.errors import InputError, JonctionError
from gateway.reversibility.bundle import Bundle, consistency, verify
from gateway.reversibility.progress import Progress

BATCHES: Final = {"entities": 500, "history": 5000, "subscriptions": 100}
"""Lines per committed batch, by file kind."""
STOP_AFTER_ENV: Final = "JONCTION_IMPORT_KILL_AFTER"
"""Test hook: the process kills itself (SIGKILL) once this many lines are committed, before journaling them:
the worst moment for a crash, which the resumption must survive."""


class BundleRejected(JonctionError):
    """A bundle that does not match its manifest (tampered, truncated, incomplete): nothing is written."""

    exit_code = 1


class Writer(Protocol):
    """Where an import writes: the embedded store or a broker."""

    def describe(self) -> str:
        """The destination in messages (no credentials)."""
        ...

    async def entities(self, tenant: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Write entity lines."""
        ...

    async def history(self, tenant: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Write history instance lines."""
        ...

    async def subscriptions(self, tenant: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Write subscription lines."""
        ...

    async def contexts(self, documents: Mapping[str, Any]) -> None:
        """Host @contexts."""
        ...


def bundle_id(bundle: Bundle) -> str:
    """A short fingerprint of a bundle's content (its files' hashes): which export a journal is about."""
    digest = hashlib.sha256()
    for entry in bundle.files:
        digest.update(f"{entry['path']}\0{entry['sha256']}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(slots=True)
class Journal:
    """Which lines of which file are committed, kept in a JSON file replaced atomically."""

    path: Path
    bundle: str
    destination: str
    done: dict[str, int] = field(default_factory=dict)
    complete: bool = False

    @classmethod
    def load(cls, path: Path, bundle: str, destination: str, *, restart: bool) -> Journal:
        """The journal of this bundle at ``path``, or a fresh one (``restart``, or none yet)."""
        if restart or not path.is_file():
            return cls(path, bundle, destination)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: the import journal is unreadable ({exc}); --restart starts over") from exc
        if doc.get("bundle") != bundle:
            raise InputError(f"{path}: the import journal is about another export ({doc.get('bundle')}); "
                             "--restart starts over")
        return cls(path, bundle, destination, dict(doc.get("done", {})), bool(doc.get("complete")))

    def save(self) -> None:
        """Replace the journal file with the current state (fsync'd, then renamed)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        data = json.dumps({"bundle": self.bundle, "destination": self.destination, "done": self.done,
                           "complete": self.complete}, indent=1, sort_keys=True)
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


@dataclass(slots=True)
class ImportSummary:
    """What an import wrote (lines per kind), and what it found already done."""

    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    already_complete: bool = False


def check_bundle(bundle: Bundle) -> None:
    """Raise BundleRejected unless every file matches the manifest and the counts agree."""
    problems = verify(bundle) + consistency(bundle)
    if problems:
        raise BundleRejected(
            "the export does not match its manifest; nothing was imported:\n  " + "\n  ".join(problems)
        )


async def run_import(
    bundle: Bundle, writer: Writer, journal_path: Path, progress: Progress, *, restart: bool = False,
    tenants: Sequence[str] | None = None, verified: bool = False, batch: int | None = None,
) -> ImportSummary:
    """Verify ``bundle`` (unless the caller just did), then write it through ``writer``, journaling progress."""
    if not verified:
        check_bundle(bundle)
    journal = Journal.load(journal_path, bundle_id(bundle), writer.describe(), restart=restart)
    summary = ImportSummary()
    if journal.complete:
        summary.already_complete = True
        return summary
    kill_after = int(os.environ.get(STOP_AFTER_ENV, "0") or 0)
    committed = 0
    for entry in bundle.files_of("contexts"):
        documents = {r["id"]: r["document"] for _, r in bundle.records(entry["path"])}
        await writer.contexts(documents)
    chosen = list(bundle.manifest["tenants"]) if not tenants else list(tenants)
    for tenant in chosen:
        if tenant not in bundle.manifest["tenants"]:
            raise InputError(f"--tenant {tenant!r}: the export holds no such tenant")
        for kind in ("entities", "history", "subscriptions"):
            write = getattr(writer, kind)
            for entry in bundle.files_of(kind, tenant):
                name = entry["path"]
                skip = journal.done.get(name, 0)
                summary.skipped[kind] = summary.skipped.get(kind, 0) + skip
                if skip >= entry["lines"]:
                    continue
                progress.at(f"{tenant or '(default)'} {kind}")
                size = batch or BATCHES[kind]
                pending: list[Mapping[str, Any]] = []
                position = skip
                for number, record in bundle.records(name, skip=skip):
                    if not isinstance(record, dict):
                        raise InputError(f"{bundle.where(name)}:{number}: not a JSON object")
                    pending.append(record)
                    if len(pending) < size:
                        continue
                    position = await _commit(write, tenant, pending, bundle.where(name), position)
                    committed += len(pending)
                    summary.written[kind] = summary.written.get(kind, 0) + len(pending)
                    progress.add(kind, len(pending))
                    pending = []
                    if kill_after and committed >= kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)  # committed, not yet journaled
                    journal.done[name] = position
                    journal.save()
                if pending:
                    position = await _commit(write, tenant, pending, bundle.where(name), position)
                    summary.written[kind] = summary.written.get(kind, 0) + len(pending)
                    progress.add(kind, len(pending))
                journal.done[name] = position
                journal.save()
    journal.complete = True
    journal.save()
    progress.done()
    return summary


async def _commit(write: Any, tenant: str, batch: list[Mapping[str, Any]], where: str, position: int) -> int:
    """Write one batch; a record the destination refuses is named by its file and line."""
    from gateway.store.problems import NgsiError

    try:
        await write(tenant, batch)
    except (NgsiError, ValueError, KeyError, TypeError) as exc:
        raise BundleRejected(f"{where}: lines {position + 1} to {position + len(batch)}: {exc}") from exc
    return position + len(batch)
