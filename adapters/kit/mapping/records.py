"""Records of tabular and JSON documents: CSV rows with their line, canonical item payloads.

Shared by the mapping-driven adapters (``files`` splits a file into records, ``webhook`` and
``rest_mapping`` split a body into items) and by ``jonction mapping apply``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

FORMATS: Final = {".csv": "csv", ".txt": "csv", ".geojson": "geojson", ".json": "json"}
"""File suffix -> format, for ``format: auto``."""
DELIMITERS: Final = (",", ";", "\t", "|")
# csv's own guard against a runaway quoted field; rows longer than this are refused.
csv.field_size_limit(1 << 20)


@dataclass(frozen=True, slots=True)
class Record:
    """One unit of a file: its payload, where it is (line or index) and any structural problem."""

    payload: bytes
    position: str
    kind: str
    error: str | None = None


def sniff_delimiter(header: str) -> str:
    """The delimiter a header line uses most (French exports often use ';')."""
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def decode(data: bytes, encoding: str | None) -> tuple[str, str]:
    """Text of a file: the configured encoding, else UTF-8 (BOM allowed), else Windows-1252."""
    if encoding:
        return data.decode(encoding), encoding
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        # Spreadsheet exports in France are often Windows-1252; it decodes any byte sequence.
        return data.decode("cp1252"), "cp1252"


def canonical_json(value: Any) -> bytes:
    """One item as compact, key-sorted UTF-8 JSON: the payload of a per-item RawMessage (stable keys)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def csv_records(text: str, delimiter: str | None) -> Iterator[Record]:
    """One record per data row, with the line it starts on; rows of the wrong width carry an error."""
    lines = io.StringIO(text, newline="")
    first = text.split("\n", 1)[0]
    reader = csv.reader(lines, delimiter=delimiter or sniff_delimiter(first))
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    line = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Record(b"{}", str(line), "line", f"unreadable CSV ({exc})")
            line = reader.line_num + 1
            continue
        start, line = line, reader.line_num + 1
        if not row or all(not cell.strip() for cell in row):
            continue
        error = None
        if len(row) != len(header):
            error = f"{len(row)} fields where the header has {len(header)}"
        values = {name: cell for name, cell in zip(header, row, strict=False)}
        yield Record(canonical_json(values), str(start), "line", error)
