"""Import CSV, GeoJSON and JSON files (open data, GIS exports) with a declarative mapping.

Every row (CSV), feature (GeoJSON) or item (JSON) becomes one RawMessage carrying its line or
index, so that one file yields its good entities and one dead letter per bad row, naming the line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from adapters.kit.mapping.adapter import MappingAdapter
from adapters.kit.mapping.engine import apply_mapping, map_item, parse_json, select_items
from adapters.kit.mapping.records import FORMATS, Record, canonical_json, csv_records, decode
from adapters.kit.mapping.support import content_key, sleep_or_stop
from adapters.kit.payload import NotJson, load_json
from gateway.contract import Emit
from gateway.errors import InputError, TranslationError
from gateway.model import Entity, RawMessage, epoch_time

# The CSV reading lives in the kit (adapters.kit.mapping.records); it stays importable from here for
# scripts written against this module (bench/bench_mapping.py).
__all__ = ["FORMATS", "FilesAdapter", "Record", "csv_records", "decode"]


class FilesAdapter(MappingAdapter, package=__package__):
    """Imports a file, or watches a folder, and translates each row with a mapping."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        super().__init__(config, http=http, log=log)
        self.path = Path(str(config["path"]))
        self.pattern = str(config.get("pattern", "*"))
        self.format = str(config.get("format", "auto"))
        csv_options = config.get("csv") or {}
        self.delimiter: str | None = csv_options.get("delimiter")
        self.encoding: str | None = csv_options.get("encoding")
        self.watch = bool(config.get("watch", True))
        self.interval = float(config.get("interval", 30))
        self.settle = float(config.get("settle", 2))
        self.max_bytes = int(config.get("max_file_bytes", 100 << 20))
        self.stats: dict[str, int] = {"scans": 0, "files": 0, "records": 0, "skipped_files": 0, "refused_files": 0}

    # ------------------------------------------------------------------ lifecycle

    async def check(self) -> None:
        """The configured file or folder must exist and be readable."""
        if not self.path.exists():
            raise InputError(f"{self.path} does not exist")

    async def run(self, emit: Emit) -> None:
        """Import what is there, then (``watch``) look again every ``interval`` seconds until stopped."""
        # The runtime restarts a source by calling stop() then run() again on the same instance.
        self._stopped.clear()
        while not self._stopped.is_set():
            self.stats["scans"] += 1
            try:
                await self.scan(emit)
                self.availability.succeeded()
            except OSError as exc:
                self.availability.failed(f"{self.path}: {exc.strerror or exc}")
            if not self.watch:
                await self._stopped.wait()
                break
            if await sleep_or_stop(self._stopped, self.interval):
                break

    async def stop(self) -> None:
        """Stop watching; idempotent."""
        self._stopped.set()

    # ------------------------------------------------------------------ scanning

    def _candidates(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if not self.path.is_dir():
            raise FileNotFoundError(2, "no such file or folder", str(self.path))
        return sorted(p for p in self.path.glob(self.pattern) if p.is_file() and not p.name.startswith("."))

    def _format_of(self, path: Path) -> str | None:
        return self.format if self.format != "auto" else FORMATS.get(path.suffix.lower())

    async def scan(self, emit: Emit) -> int:
        """Import every new or changed file once; returns the number of records emitted."""
        state = self.state.load()
        imported: dict[str, Any] = state.setdefault("files", {})
        emitted = 0
        now = time.time()
        for path in self._candidates():
            if self._stopped.is_set():
                break
            info = path.stat()
            if now - info.st_mtime < self.settle:
                continue  # probably still being written; next scan
            kind = self._format_of(path)
            if kind is None:
                self.stats["skipped_files"] += 1
                continue
            if info.st_size > self.max_bytes:
                self._refuse(path, f"{info.st_size} bytes is over max_file_bytes={self.max_bytes}")
                continue
            data = await asyncio.to_thread(path.read_bytes)
            digest = hashlib.sha256(data).hexdigest()
            key = str(path.resolve())
            if imported.get(key, {}).get("sha256") == digest:
                continue
            try:
                records = list(self._records(data, kind))
            except InputError as exc:
                self._refuse(path, str(exc))
                continue
            received = epoch_time(time.time())
            for record in records:
                await emit(self._message(path, kind, digest, received, record))
                emitted += 1
            self.stats["files"] += 1
            self.stats["records"] += len(records)
            self.log.info("file %s imported: %d records", path.name, len(records))
            imported[key] = {"sha256": digest, "records": len(records)}
            self.state.save(state)
        return emitted

    def _refuse(self, path: Path, reason: str) -> None:
        self.stats["refused_files"] += 1
        self.log.error("file %s refused: %s", path.name, reason)

    def _records(self, data: bytes, kind: str) -> Iterator[Record]:
        if kind == "csv":
            try:
                text, _ = decode(data, self.encoding)
            except (UnicodeDecodeError, LookupError) as exc:
                raise InputError(f"cannot decode: {exc}") from exc
            yield from csv_records(text, self.delimiter)
            return
        try:
            doc = parse_json(data)
        except ValueError as exc:
            raise InputError(f"not JSON: {exc}") from exc
        if kind == "geojson":
            features = doc.get("features") if isinstance(doc, dict) else None
            if not isinstance(features, list):
                raise InputError("a GeoJSON import needs a FeatureCollection with features")
            for index, feature in enumerate(features):
                yield Record(canonical_json(feature), str(index), "feature")
            return
        try:
            items = select_items(self.mapping, doc)
        except TranslationError as exc:
            raise InputError(exc.reason) from exc
        for index, item in enumerate(items):
            yield Record(canonical_json(item), str(index), "item")

    def _message(self, path: Path, kind: str, digest: str, received: str, record: Record) -> RawMessage:
        metadata = {"file": path.name, "format": kind, record.kind: record.position}
        if record.error:
            metadata["row_error"] = record.error
        tenant = self.tenant
        if self.mapping.tenant is not None and not record.error:
            tenant = self.tenant_of(json.loads(record.payload))
        return RawMessage(
            source=self.source,
            tenant=tenant,
            received_at=received,
            payload=record.payload,
            idempotency_key=content_key(self.source, digest, record.kind, record.position),
            metadata=metadata,
        )

    # ------------------------------------------------------------------ pure translation

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Translate one row, feature or item; errors name the file and line (or index)."""
        meta = raw.metadata
        where = _where(meta)
        if meta.get("row_error"):
            raise TranslationError(f"{where}: {meta['row_error']}")
        per_record = any(k in meta for k in ("line", "feature", "item"))
        if not per_record and (raw.content_type.startswith("text/csv") or meta.get("format") == "csv"):
            return self._whole_csv(raw.payload, where)
        try:
            doc = load_json(raw.payload, what=f"{where}: payload")
        except NotJson:
            if per_record:
                raise
            return self._whole_csv(raw.payload, where)
        if per_record:
            return [map_item(self.mapping, doc, where=where)]
        if isinstance(doc, dict) and doc.get("type") == "FeatureCollection" and isinstance(doc.get("features"), list):
            return [map_item(self.mapping, f, where=f"{where} feature {i}") for i, f in enumerate(doc["features"])]
        return apply_mapping(self.mapping, doc)

    def _whole_csv(self, payload: bytes, where: str) -> list[Entity]:
        """A whole CSV file in one message (e.g. ``jonction translate``): the first bad row fails it."""
        try:
            text, _ = decode(payload, self.encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise TranslationError(f"{where}: cannot decode ({exc})") from exc
        entities = []
        for record in csv_records(text, self.delimiter):
            here = f"{where} line {record.position}"
            if record.error:
                raise TranslationError(f"{here}: {record.error}")
            entities.append(map_item(self.mapping, json.loads(record.payload), where=here))
        return entities


def _where(meta: Mapping[str, str]) -> str:
    name = meta.get("file", "file")
    if "line" in meta:
        return f"{name} line {meta['line']}"
    if "feature" in meta:
        return f"{name} feature {meta['feature']}"
    if "item" in meta:
        return f"{name} item {meta['item']}"
    return name
