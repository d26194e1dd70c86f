"""What the checker tests: an NGSI-LD endpoint, an adapter over recorded payloads, files, or an export."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from conformance.schemadoc import check_against
from gateway.errors import ConfigInvalid, InputError
from gateway.model import format_time

API_ROOT: Final = "/ngsi-ld/v1"
MAX_FILE: Final = 64 * 1024 * 1024
"""Largest entity or payload file read (bytes)."""
MAX_TARGET_FILE: Final = 1024 * 1024


@dataclass(slots=True)
class EndpointTarget:
    """An NGSI-LD API reached over HTTP."""

    url: str
    tenant: str | None = None
    token: str | None = field(default=None, repr=False)
    token_source: str = ""
    allow_write: bool = False
    callback_url: str | None = None
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    timeout: float = 20.0
    kind: str = "endpoint"

    @property
    def base(self) -> str:
        """Scheme, host and port, without the API root."""
        return self.url

    def describe(self) -> dict[str, Any]:
        """The target as a report shows it (secrets redacted)."""
        return {
            "kind": self.kind,
            "url": self.url + API_ROOT,
            "tenant": self.tenant,
            "credentials": f"token from {self.token_source} [redacted]" if self.token else "none",
            "allow_write": self.allow_write,
            "callback_url": self.callback_url,
        }


@dataclass(slots=True)
class FilesTarget:
    """Entities in JSON (one entity or an array) or NDJSON files."""

    paths: list[Path]
    kind: str = "files"

    def describe(self) -> dict[str, Any]:
        """The target as a report shows it."""
        return {"kind": self.kind, "files": [str(p) for p in self.paths]}

    async def records(self) -> list[tuple[str, Any]]:
        """Every record with its location (``file:line`` or ``file#index``)."""
        out: list[tuple[str, Any]] = []
        for path in self.paths:
            out.extend(_read_records(path))
        return out


@dataclass(slots=True)
class ExportTarget:
    """A bundle written by ``jonction export`` (directory, .tar or .tar.gz): its entities judged by L1, its
    files and counts compared with its manifest."""

    path: Path
    kind: str = "export"

    def describe(self) -> dict[str, Any]:
        """The target as a report shows it."""
        return {"kind": self.kind, "export": str(self.path)}

    def open(self) -> Any:
        """The bundle (manifest read and checked for shape); InputError when it is not an export."""
        from gateway.reversibility.bundle import Bundle

        return Bundle.open(self.path)

    async def records(self) -> list[tuple[str, Any]]:
        """Every entity of every tenant with its location (``file:line``); history lines are not entities.

        An export that does not match its manifest (a file modified or cut short, counts per tenant
        and type that differ) yields one failure record per difference first: L1-ENT-001 ("every
        record is an entity, every payload translates") reports them, so the export is refused.
        """
        bundle = self.open()
        out: list[tuple[str, Any]] = [
            (bundle.where("manifest.json"), TranslationFailure(f"the export does not match its manifest: {problem}"))
            for problem in await self.manifest_problems()
        ]
        for entry in bundle.files_of("entities"):
            for number, line in bundle.records(entry["path"]):
                if isinstance(line, dict):
                    line = {k: v for k, v in line.items() if k != "@context"}
                out.append((f"{bundle.where(entry['path'])}:{number}", line))
        return out

    async def manifest_problems(self) -> list[str]:
        """Files against their SHA-256 and line counts, and counts per tenant and type against the manifest."""
        from gateway.reversibility.bundle import consistency, recount, verify

        bundle = self.open()
        problems = verify(bundle) + consistency(bundle)
        return problems or recount(bundle)


def is_export(path: Path) -> bool:
    """True for a directory holding a manifest.json, or a .tar / .tar.gz archive (a ``jonction export``)."""
    from gateway.reversibility.bundle import MANIFEST, archive_kind

    return (path.is_dir() and (path / MANIFEST).is_file()) or (path.is_file() and archive_kind(path) is not None)


@dataclass(slots=True)
class AdapterTarget:
    """An installed adapter run over recorded payload files (a vendor's proof of mapping)."""

    adapter: str
    payloads: list[Path]
    config: Mapping[str, Any] = field(default_factory=dict)
    tenant: str = ""
    kind: str = "adapter"

    def describe(self) -> dict[str, Any]:
        """The target as a report shows it (config values are not shown: they may hold secrets)."""
        return {"kind": self.kind, "adapter": self.adapter, "payloads": [str(p) for p in self.payloads],
                "config_keys": sorted(self.config)}

    async def records(self) -> list[tuple[str, Any]]:
        """Translate every payload with the adapter's public ``to_entities``; errors become records."""
        import logging

        import aiohttp

        from gateway.contract import load_adapter

        cls: Any = load_adapter(self.adapter)
        # The adapter's constructor takes a session but does no I/O; translation never uses it.
        async with aiohttp.ClientSession() as session:
            instance: Any = cls(dict(self.config), http=session,
                                log=logging.getLogger(f"jonction.check.{self.adapter}"))
            return self._translate(instance)

    def _translate(self, instance: Any) -> list[tuple[str, Any]]:
        from gateway.model import RawMessage

        out: list[tuple[str, Any]] = []
        received = format_time(datetime.now(UTC))
        for path in self.payloads:
            data = _read_bytes(path)
            ctype = "application/json" if path.suffix in (".json", ".ndjson") else "application/octet-stream"
            # A recorded payload may carry its transport facts beside it (<name>.meta.json), as the
            # adapters' own fixtures do: topic, event, receipt time...
            meta_path = path.with_name(path.name.split(".")[0] + ".meta.json")
            meta: dict[str, Any] = {}
            if meta_path.is_file():
                try:
                    meta = json.loads(_read_bytes(meta_path))
                except ValueError as exc:
                    raise InputError(f"{meta_path}: not JSON ({exc})") from exc
            raw = RawMessage(source=str(meta.get("source", f"check:{self.adapter}")),
                             tenant=str(meta.get("tenant", self.tenant)),
                             received_at=str(meta.get("received_at", received)), payload=data,
                             idempotency_key=str(meta.get("idempotency_key", path.name)),
                             content_type=str(meta.get("content_type", ctype)),
                             metadata=dict(meta.get("metadata", {"file": path.name})))
            try:
                entities = instance.to_entities(raw)
            except Exception as exc:  # the adapter's failure is the finding, not a crash of the checker
                out.append((str(path), TranslationFailure(f"{type(exc).__name__}: {exc}")))
                continue
            for i, ent in enumerate(entities):
                out.append((f"{path}#{i}", ent))
        return out


@dataclass(frozen=True, slots=True)
class TranslationFailure:
    """A payload the adapter could not translate (kept as a record so L1 reports it)."""

    reason: str


Target = EndpointTarget | FilesTarget | AdapterTarget | ExportTarget


def _read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    if size > MAX_FILE:
        raise InputError(f"{path}: {size} bytes is larger than the {MAX_FILE} byte limit")
    return path.read_bytes()


def _read_records(path: Path) -> list[tuple[str, Any]]:
    text = _read_bytes(path).decode("utf-8", "replace")
    if path.suffix.lower() in (".ndjson", ".jsonl"):
        out: list[tuple[str, Any]] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append((f"{path}:{n}", json.loads(line)))
            except ValueError as exc:
                out.append((f"{path}:{n}", TranslationFailure(f"line {n} is not JSON: {exc}")))
        return out
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return [(str(path), TranslationFailure(f"not JSON: {exc}"))]
    if isinstance(doc, list):
        return [(f"{path}#{i}", item) for i, item in enumerate(doc)]
    return [(str(path), doc)]


def _normalize_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigInvalid(f"target URL {url!r} is not an http(s) URL")
    path = parts.path.rstrip("/")
    if path.endswith(API_ROOT):
        path = path[: -len(API_ROOT)]
    return f"{parts.scheme}://{parts.netloc}{path}"


def _token(creds: Mapping[str, Any], base: Path) -> tuple[str | None, str]:
    if "token_env" in creds:
        name = str(creds["token_env"])
        value = os.environ.get(name)
        if not value:
            raise ConfigInvalid(f"target credentials: environment variable {name} is not set")
        return value.strip(), f"environment variable {name}"
    if "token_file" in creds:
        path = (base / str(creds["token_file"])).resolve()
        try:
            return path.read_text(encoding="utf-8").strip(), f"file {path.name}"
        except OSError as exc:
            raise ConfigInvalid(f"target credentials: cannot read {path}: {exc.strerror}") from exc
    return None, ""


ENTITY_SUFFIXES: Final = (".json", ".jsonld", ".ndjson", ".jsonl")
"""Files read as entities when given directly as the target (or found in a target folder)."""
MAX_TARGET_FILES: Final = 10000


def _entity_files(path: Path) -> FilesTarget:
    """Entity files given directly: one file, or every entity file under a folder (sorted)."""
    if path.is_file():
        return FilesTarget(paths=[path])
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in ENTITY_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not found:
        raise ConfigInvalid(f"target folder {path} holds no entity file ({', '.join(ENTITY_SUFFIXES)})")
    if len(found) > MAX_TARGET_FILES:
        raise ConfigInvalid(f"target folder {path} holds {len(found)} entity files, more than {MAX_TARGET_FILES}")
    return FilesTarget(paths=found)


def load_target(spec: str, *, allow_write: bool | None = None) -> Target:
    """A target from an endpoint URL, a target YAML file, an export (its folder or archive) or entity files."""
    if spec.startswith(("http://", "https://")):
        token = os.environ.get("JONCTION_CHECK_TOKEN")
        return EndpointTarget(url=_normalize_url(spec), token=token or None,
                              token_source="environment variable JONCTION_CHECK_TOKEN" if token else "",
                              allow_write=bool(allow_write))
    path = Path(spec)
    if is_export(path):
        return ExportTarget(path)
    if path.is_dir() or (path.is_file() and path.suffix.lower() in ENTITY_SUFFIXES):
        return _entity_files(path)
    if not path.is_file():
        raise ConfigInvalid(f"target {spec!r} is neither an http(s) URL, a target YAML file, entity files "
                            f"({', '.join(ENTITY_SUFFIXES)}) nor a folder of them")
    if path.stat().st_size > MAX_TARGET_FILE:
        raise ConfigInvalid(f"target file {path} is larger than {MAX_TARGET_FILE} bytes")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigInvalid(f"target file {path} is not valid YAML: {exc}") from exc
    problems = check_against("target.schema.json", doc)
    if problems:
        raise ConfigInvalid(f"target file {path} is invalid", problems)
    return target_from_document(doc, path.parent, allow_write=allow_write)


def target_from_document(doc: Mapping[str, Any], base: Path, *, allow_write: bool | None = None) -> Target:
    """Build a target from its (already validated) document; paths are relative to ``base``."""
    kind = doc["kind"]
    if kind == "endpoint":
        token, source = _token(doc.get("credentials", {}), base)
        notif = doc.get("notifications", {})
        listen = str(notif.get("listen", "127.0.0.1:0"))
        host, _, port = listen.rpartition(":")
        return EndpointTarget(
            url=_normalize_url(doc["url"]),
            tenant=doc.get("tenant"),
            token=token,
            token_source=source,
            allow_write=bool(doc.get("allow_write", False)) if allow_write is None else allow_write,
            callback_url=notif.get("callback_url"),
            listen_host=host or "127.0.0.1",
            listen_port=int(port or 0),
            timeout=float(doc.get("timeout_seconds", 20)),
        )
    if kind == "files":
        return FilesTarget(paths=[(base / p) for p in doc["files"]])
    if kind == "export":
        return ExportTarget(base / doc["path"])
    return AdapterTarget(
        adapter=doc["adapter"],
        payloads=[(base / p) for p in doc["payloads"]],
        config=doc.get("config", {}),
        tenant=doc.get("tenant", ""),
    )
