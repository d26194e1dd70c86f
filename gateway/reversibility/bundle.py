"""Bundles on disk: NDJSON files with their manifest, as a directory or a ``.tar``/``.tar.gz`` archive.

Writing streams every line through SHA-256 and a line counter into a staging directory, then
either renames it to the requested directory or packs it into the archive. Reading walks the files
of a directory or an archive line by line (never a whole file in memory), and :func:`verify`
compares each file with the manifest before anything uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final

from gateway.errors import ConfigInvalid, InputError
from gateway.reversibility import FORMAT, FORMAT_VERSION

MANIFEST: Final = "manifest.json"
MAX_LINE: Final = 64 * 1024 * 1024
"""Longest NDJSON line read (bytes): one entity or one instance, never more."""
MAX_MANIFEST: Final = 64 * 1024 * 1024
BLOCK: Final = 1000
"""Lines per block hash: a tampered file is reported with the block of lines where it first differs."""
_DUMPS: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode
"""Lines are canonical JSON (sorted keys): an entity exported twice is the same bytes."""


def dumps(record: Any) -> str:
    """One record as its canonical NDJSON line (without the newline)."""
    return _DUMPS(record)


def archive_kind(path: Path) -> str | None:
    """``tar``, ``tar.gz`` or None (a directory) from the suffix of ``path``."""
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    return None


class NdjsonWriter:
    """One NDJSON file being written: counts lines and hashes bytes as they go."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = path.open("wb")
        self._hash = hashlib.sha256()
        self._block = hashlib.sha256()
        self.blocks: list[str] = []
        self.lines = 0
        self.bytes = 0

    def write(self, record: Any) -> None:
        """Append one record as one line."""
        data = (dumps(record) + "\n").encode("utf-8", "backslashreplace")
        self._file.write(data)
        self._hash.update(data)
        self._block.update(data)
        self.lines += 1
        self.bytes += len(data)
        if self.lines % BLOCK == 0:
            self.blocks.append(self._block.hexdigest()[:16])
            self._block = hashlib.sha256()

    def close(self) -> dict[str, Any]:
        """Close the file; its manifest entry (without the path)."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        if self.lines % BLOCK:
            self.blocks.append(self._block.hexdigest()[:16])
        return {"sha256": self._hash.hexdigest(), "lines": self.lines, "bytes": self.bytes, "blocks": self.blocks}


class BundleWriter:
    """Writes the files of a bundle into a staging directory, then publishes it at ``out``."""

    def __init__(self, out: Path, *, force: bool = False) -> None:
        self.out = out
        self.kind = archive_kind(out)
        if out.exists() and not force:
            if out.is_dir() and not any(out.iterdir()):
                pass  # an empty directory is a fine destination
            else:
                raise ConfigInvalid(f"--out {out} already exists (remove it, or choose another path)")
        self.staging = out.with_name(f".{out.name}.partial")
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.files: list[dict[str, Any]] = []

    def open(self, name: str) -> NdjsonWriter:
        """A new NDJSON file at ``name`` (a relative POSIX path) in the bundle."""
        return NdjsonWriter(self.staging / name)

    def add_file(self, name: str, writer: NdjsonWriter, **facts: Any) -> None:
        """Record a closed file in the manifest's file list, with extra facts (kind, tenant)."""
        self.files.append({"path": name, **writer.close(), **facts})

    def publish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest, then move the staging directory to ``out`` or pack it there; the full manifest."""
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest, "files": self.files}
        text = json.dumps(manifest, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        (self.staging / MANIFEST).write_text(text, encoding="utf-8")
        if self.kind is None:
            if self.out.exists():
                self.out.rmdir()  # checked empty at the start
            self.staging.rename(self.out)
            return manifest
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        mode = "w:gz" if self.kind == "tar.gz" else "w"
        with tarfile.open(tmp, mode) as tar:  # type: ignore[call-overload]
            # the manifest first: a reader learns what to expect before the data
            tar.add(self.staging / MANIFEST, arcname=MANIFEST)
            for entry in self.files:
                tar.add(self.staging / entry["path"], arcname=entry["path"])
        os.replace(tmp, self.out)
        shutil.rmtree(self.staging)
        return manifest

    def abort(self) -> None:
        """Remove what was staged (an export that failed leaves nothing behind)."""
        shutil.rmtree(self.staging, ignore_errors=True)


@dataclass(slots=True)
class Bundle:
    """A bundle opened for reading: its manifest and access to its files, line by line."""

    path: Path
    manifest: dict[str, Any]
    kind: str | None = None
    _members: dict[str, tarfile.TarInfo] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> Bundle:
        """Open a bundle directory or archive and read its manifest; InputError when it is not one."""
        if not path.exists():
            raise InputError(f"{path}: no such export (a directory or a .tar/.tar.gz archive)")
        kind = None if path.is_dir() else archive_kind(path)
        members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            manifest_path = path / MANIFEST
            if not manifest_path.is_file():
                raise InputError(f"{path}: no {MANIFEST} (not a jonction export)")
            if manifest_path.stat().st_size > MAX_MANIFEST:
                raise InputError(f"{manifest_path}: larger than {MAX_MANIFEST} bytes")
            raw = manifest_path.read_bytes()
        else:
            if kind is None:
                raise InputError(f"{path}: not a directory, .tar or .tar.gz archive")
            try:
                with tarfile.open(path, "r:*") as tar:
                    for member in tar:
                        members[member.name] = member
                    found = members.get(MANIFEST)
                    if found is None or not found.isfile():
                        raise InputError(f"{path}: no {MANIFEST} in the archive (not a jonction export)")
                    if found.size > MAX_MANIFEST:
                        raise InputError(f"{path}!{MANIFEST}: larger than {MAX_MANIFEST} bytes")
                    handle = tar.extractfile(found)
                    assert handle is not None
                    raw = handle.read()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise InputError(f"{path}: not a readable archive ({exc})") from exc
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"{path}: {MANIFEST} is not JSON ({exc})") from exc
        problems = _manifest_problems(manifest)
        if problems:
            raise InputError(f"{path}: {MANIFEST} is not a jonction export manifest: " + "; ".join(problems))
        return cls(path, manifest, kind, members)

    @property
    def files(self) -> list[dict[str, Any]]:
        """The manifest's file entries (path, sha256, lines, bytes, kind, tenant)."""
        files: list[dict[str, Any]] = self.manifest["files"]
        return files

    def where(self, name: str) -> str:
        """How to name a file of the bundle in a message."""
        return f"{self.path / name}" if self.kind is None else f"{self.path}!{name}"

    def _open_raw(self, name: str) -> Iterator[IO[bytes]]:
        if self.kind is None:
            with (self.path / PurePosixPath(name)).open("rb") as handle:
                yield handle
            return
        info = self._members.get(name)
        if info is None or not info.isfile():
            raise InputError(f"{self.where(name)}: listed in the manifest but missing")
        with tarfile.open(self.path, "r:*") as tar:
            member = tar.extractfile(info)
            assert member is not None
            yield member

    def raw_lines(self, name: str) -> Iterator[bytes]:
        """The lines of one file as bytes (newline included), streamed."""
        try:
            for handle in self._open_raw(name):
                while True:
                    line = handle.readline(MAX_LINE + 1)
                    if not line:
                        return
                    if len(line) > MAX_LINE:
                        raise InputError(f"{self.where(name)}: a line is longer than {MAX_LINE} bytes")
                    yield line
        except FileNotFoundError:
            raise InputError(f"{self.where(name)}: listed in the manifest but missing") from None
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InputError(f"{self.where(name)}: cannot read ({exc})") from exc

    def records(self, name: str, *, skip: int = 0) -> Iterator[tuple[int, Any]]:
        """(line number from 1, parsed record) of one file, after the first ``skip`` lines."""
        for number, line in enumerate(self.raw_lines(name), 1):
            if number <= skip:
                continue
            try:
                yield number, json.loads(line)
            except ValueError as exc:
                raise InputError(f"{self.where(name)}:{number}: not JSON ({exc})") from exc

    def files_of(self, kind: str, tenant: str | None = None) -> list[dict[str, Any]]:
        """The file entries of one kind (entities, history, subscriptions…), of one tenant if given."""
        return [f for f in self.files if f.get("kind") == kind and (tenant is None or f.get("tenant") == tenant)]


def _manifest_problems(manifest: Any) -> list[str]:
    if not isinstance(manifest, dict):
        return ["not a JSON object"]
    problems = []
    if manifest.get("format") != FORMAT:
        problems.append(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        problems.append(f"format_version {version!r} is not one this jonction reads (up to {FORMAT_VERSION})")
    files = manifest.get("files")
    if not isinstance(files, list):
        problems.append("files is not a list")
        return problems
    for index, entry in enumerate(files):
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            problems.append(f"/files/{index}: no path")
            continue
        path = PurePosixPath(entry["path"])
        if path.is_absolute() or ".." in path.parts or entry["path"] == MANIFEST:
            problems.append(f"/files/{index}/path {entry['path']!r} is not a relative path inside the export")
        if not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("lines"), int):
            problems.append(f"/files/{index}: sha256 or lines missing")
    return problems


def verify(bundle: Bundle) -> list[str]:
    """Every file's SHA-256 and line count against the manifest; one problem per file that differs.

    A file that differs is read again to name where: the first line that is not JSON, else the first
    block of lines whose hash differs from the manifest's block hashes.
    """
    problems = []
    for entry in bundle.files:
        name = entry["path"]
        digest = hashlib.sha256()
        lines = 0
        try:
            for line in bundle.raw_lines(name):
                digest.update(line)
                lines += 1
        except InputError as exc:
            problems.append(str(exc))
            continue
        if digest.hexdigest() == entry["sha256"] and lines == entry["lines"]:
            continue
        detail = (f"SHA-256 {digest.hexdigest()[:16]}… and {lines} lines, the manifest says "
                  f"{str(entry['sha256'])[:16]}… and {entry['lines']} lines")
        problems.append(f"{_where_it_differs(bundle, entry)}the file differs from the manifest ({detail})")
    return problems


def _where_it_differs(bundle: Bundle, entry: dict[str, Any]) -> str:
    """``file:line: …; `` naming the first line that is not JSON, else the first block that differs."""
    name = entry["path"]
    listed = entry.get("blocks")
    expected: list[Any] = listed if isinstance(listed, list) else []
    block = hashlib.sha256()
    lines = 0
    first_block: int | None = None
    for line in bundle.raw_lines(name):
        block.update(line)
        lines += 1
        try:
            json.loads(line)
        except ValueError:
            return f"{bundle.where(name)}:{lines}: line {lines} is not JSON; "
        if lines % BLOCK == 0:
            index = lines // BLOCK - 1
            if first_block is None and (index >= len(expected) or expected[index] != block.hexdigest()[:16]):
                first_block = index
            block = hashlib.sha256()
    if lines % BLOCK:
        index = lines // BLOCK
        if first_block is None and (index >= len(expected) or expected[index] != block.hexdigest()[:16]):
            first_block = index
    if first_block is None:
        return f"{bundle.where(name)}: "
    low = first_block * BLOCK + 1
    return f"{bundle.where(name)}:{low}: lines {low} to {min(low + BLOCK - 1, max(lines, low))} differ; "


def type_key(line: Any) -> str:
    """The type an export line is counted under: its (first) type as written."""
    value = line.get("type") if isinstance(line, dict) else None
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value) if value is not None else ""


def consistency(bundle: Bundle) -> list[str]:
    """Counts the manifest gives per tenant that its own file list contradicts."""
    problems = []
    tenants = bundle.manifest.get("tenants")
    if not isinstance(tenants, dict):
        return ["manifest.json: no tenants object"]
    for tenant, facts in tenants.items():
        if not isinstance(facts, dict):
            problems.append(f"manifest.json: tenant {tenant!r} is not an object")
            continue
        for kind, total in (("entities", facts.get("entities_total")), ("history", facts.get("history_total")),
                            ("subscriptions", facts.get("subscriptions"))):
            files = bundle.files_of(kind, tenant)
            if kind == "history" and not files and not total:
                continue
            lines = sum(int(f.get("lines", 0)) for f in files)
            if not files:
                problems.append(f"manifest.json: tenant {tenant!r} has no {kind} file")
            elif lines != total:
                problems.append(
                    f"manifest.json: tenant {tenant!r} counts {total} {kind} but its files hold {lines} lines"
                )
            per_type = facts.get(kind)
            if isinstance(per_type, dict) and sum(per_type.values()) != total:
                problems.append(f"manifest.json: tenant {tenant!r}: the {kind} per type do not add up to {total}")
    return problems


def recount(bundle: Bundle) -> list[str]:
    """Count the entities and history instances per tenant and type in the files, against the manifest."""
    problems = []
    tenants = bundle.manifest.get("tenants")
    if not isinstance(tenants, dict):
        return []
    for tenant, facts in tenants.items():
        if not isinstance(facts, dict):
            continue
        for kind in ("entities", "history"):
            counted: dict[str, int] = {}
            for entry in bundle.files_of(kind, tenant):
                for _, record in bundle.records(entry["path"]):
                    key = type_key(record)
                    counted[key] = counted.get(key, 0) + 1
            listed = facts.get(kind)
            declared: dict[str, Any] = listed if isinstance(listed, dict) else {}
            for key in sorted(set(counted) | set(declared)):
                if counted.get(key, 0) != declared.get(key, 0):
                    problems.append(f"tenant {tenant!r}: {counted.get(key, 0)} {kind} of type {key} in the files, "
                                    f"the manifest says {declared.get(key, 0)}")
    return problems
