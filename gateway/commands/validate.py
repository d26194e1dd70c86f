"""`jonction validate FILE...`: check NGSI-LD entities against NGSI-LD and the Smart Data Models.

Reads JSON (one entity, a batch array, or a JSON-LD ``@graph``), or NDJSON (streamed line by
line, so memory stays bounded); ``-`` is stdin. Exit 0 when every entity is valid, 1 when some are
not, 2 when an input cannot be used at all (unreadable, not UTF-8, not JSON, too deep, too large).
Bad input gets a one-line reason with its line/column or byte offset, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final

from gateway.commands import stdout_json
from gateway.errors import InputError
from gateway.validation import Verdict, validate, validate_strict

DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
"""Largest JSON document (or NDJSON line) read; bigger inputs are refused, not loaded.

A parsed JSON document takes about ten times its size in memory; NDJSON has no total limit
because it is read one line at a time.
"""
LIST_VALID_UP_TO: Final = 100
"""Text output lists valid entities one by one only for inputs this small (or with --verbose)."""
DEFAULT_MAX_DEPTH: Final = 64
"""Deepest JSON nesting accepted; real entities nest five or six levels."""
_NDJSON_SUFFIXES: Final = (".ndjson", ".jsonl", ".ldjson")
_TOKENS: Final = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)

if TYPE_CHECKING:
    from gateway.commands import Subparsers


def register(sub: Subparsers) -> None:
    """Add the `validate` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "validate",
        help="validate NGSI-LD entities (JSON, JSON-LD, NDJSON, batch arrays)",
        description="Validate NGSI-LD entities: attribute structure, then the Smart Data Model schema.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="entity files; '-' reads stdin")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    parser.add_argument(
        "--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N",
        help=f"largest JSON document or NDJSON line accepted (default {DEFAULT_MAX_BYTES})",
    )
    parser.add_argument(
        "--max-depth", type=int, default=DEFAULT_MAX_DEPTH, metavar="N",
        help=f"deepest JSON nesting accepted (default {DEFAULT_MAX_DEPTH})",
    )
    parser.add_argument(
        "--strict", action="store_true",
        help="hold entities to their model: an unknown type, an attribute the model does not define (or "
             "declares with another NGSI-LD type), a unit the model does not use are errors, not warnings",
    )
    parser.add_argument("--quiet", action="store_true", help="text output: list only invalid entities")
    parser.add_argument("--verbose", action="store_true", help="text output: list every valid entity too")
    parser.set_defaults(handler=_handle)


@dataclass
class FileResult:
    """What one input produced: verdicts, or the reason it could not be used."""

    name: str
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None


# --------------------------------------------------------------------------- reading


def check_depth(text: str, limit: int, name: str, line_offset: int = 0) -> None:
    """Refuse JSON nested deeper than ``limit`` without recursing (json.loads would overflow)."""
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                line = text.count("\n", 0, match.start()) + 1 + line_offset
                raise InputError(f"{name}: JSON nested deeper than {limit} levels (line {line}); refused")
        elif token in "]}":
            depth -= 1


def decode(data: bytes, name: str, line_offset: int = 0) -> str:
    """UTF-8 text of ``data``; a bad byte is reported with its offset."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        where = f"line {line_offset + 1}, " if line_offset else ""
        raise InputError(
            f"{name}: {where}byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8"
        ) from None


def _parse_int(digits: str) -> int:
    """An integer literal; past Python's 4,300-digit conversion limit, one of the same magnitude.

    Such an integer is out of any range the validator accepts (it is flagged with its pointer), so
    its exact value never matters, and converting it exactly would cost quadratic time.
    """
    if len(digits) <= 4000:
        return int(digits)
    negative = digits.startswith("-")
    magnitude = int(10 ** (len(digits) - 1 - negative))
    return -magnitude if negative else magnitude


def parse(text: str, name: str, max_depth: int, line_offset: int = 0) -> Any:
    """Parse one JSON document with a depth guard; errors name line and column."""
    check_depth(text, max_depth, name, line_offset)
    try:
        return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}: not valid JSON at line {exc.lineno + line_offset}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise InputError(f"{name}: JSON nested too deeply; refused") from None


def entities_of(document: Any) -> list[Any]:
    """The entities a document holds: itself, a batch array, or a JSON-LD @graph."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and isinstance(document.get("@graph"), list) and "id" not in document:
        return list(document["@graph"])
    return [document]


def _open(name: str) -> IO[bytes]:
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")  # closed by read_file
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from None


def _read_bounded(stream: IO[bytes], name: str, max_bytes: int) -> bytes:
    try:
        data = stream.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise InputError(
            f"{name}: larger than {max_bytes} bytes; refused (raise --max-bytes, or send NDJSON, "
            "which is read one line at a time)"
        )
    return data


def _stream_ndjson(stream: IO[bytes], name: str, max_bytes: int, max_depth: int) -> Iterator[Any]:
    for number, raw in enumerate(iter(lambda: stream.readline(max_bytes + 1), b""), start=1):
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            raise InputError(f"{name}: line {number} is longer than {max_bytes} bytes; refused")
        if not raw.strip():
            continue
        text = decode(raw, name, number - 1)
        yield parse(text, name, max_depth, number - 1)


def read_file(name: str, max_bytes: int, max_depth: int) -> Iterator[Any]:
    """Yield the entities of one input; raise ``InputError`` when it cannot be used."""
    if name != "-" and not os.path.isdir(name):
        try:
            size = os.path.getsize(name)
        except OSError:
            size = 0
        streamed = name.lower().endswith(_NDJSON_SUFFIXES)
        if not streamed and size > max_bytes:
            raise InputError(
                f"{name}: {size} bytes is larger than {max_bytes}; refused (raise --max-bytes, or send "
                "NDJSON, which is read one line at a time)"
            )
    elif name != "-":
        raise InputError(f"{name}: is a directory")
    stream = _open(name)
    try:
        if name.lower().endswith(_NDJSON_SUFFIXES):
            yield from _stream_ndjson(stream, name, max_bytes, max_depth)
            return
        data = _read_bounded(stream, name, max_bytes)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    text = decode(data, name)
    if not text.strip():
        raise InputError(f"{name}: empty input")
    try:
        document = parse(text, name, max_depth)
    except InputError as exc:
        # Several JSON values one per line is NDJSON even without the file extension.
        if "Extra data" in str(exc) and text.lstrip().startswith("{"):
            lines = text.splitlines()
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield from entities_of(parse(line, name, max_depth, number - 1))
            return
        raise
    yield from entities_of(document)


# --------------------------------------------------------------------------- output


def _text(results: list[FileResult], quiet: bool, verbose: bool = False) -> str:
    lines: list[str] = []
    for result in results:
        list_valid = verbose or (not quiet and len(result.verdicts) <= LIST_VALID_UP_TO)
        for index, verdict in enumerate(result.verdicts):
            if verdict.valid and not verdict.warnings and not list_valid:
                continue
            if quiet and verdict.valid:
                continue
            label = verdict.entity_id or f"entity #{index}"
            kind = f" ({verdict.entity_type})" if verdict.entity_type else ""
            lines.append(f"{result.name}: {'valid' if verdict.valid else 'INVALID'} {label}{kind}")
            for problem in verdict.errors:
                expected = f" [expected {problem.expected}]" if problem.expected else ""
                lines.append(f"  error   {problem.pointer or '/'}: {problem.message}{expected} ({problem.rule})")
            for problem in verdict.warnings:
                lines.append(f"  warning {problem.pointer or '/'}: {problem.message} ({problem.rule})")
        if result.error is not None:
            lines.append(f"{result.name}: UNUSABLE: {result.error}")
    total = sum(len(r.verdicts) for r in results)
    invalid = sum(1 for r in results for v in r.verdicts if not v.valid)
    warned = sum(1 for r in results for v in r.verdicts if v.warnings)
    unusable = sum(1 for r in results if r.error is not None)
    summary = f"{total} entities: {total - invalid} valid, {invalid} invalid, {warned} with warnings"
    if unusable:
        summary += f"; {unusable} unusable input(s)"
    lines.append(summary)
    return "\n".join(lines)


def _json(results: list[FileResult]) -> str:
    total = sum(len(r.verdicts) for r in results)
    invalid = sum(1 for r in results for v in r.verdicts if not v.valid)
    report = {
        "files": [
            {"file": r.name, "error": r.error, "verdicts": [v.to_dict() for v in r.verdicts]} for r in results
        ],
        "summary": {
            "entities": total,
            "valid": total - invalid,
            "invalid": invalid,
            "unusable": sum(1 for r in results if r.error is not None),
        },
    }
    return stdout_json(report, indent=1)


def run(files: list[str], *, max_bytes: int, max_depth: int, strict: bool = False) -> list[FileResult]:
    """Validate every input; an unusable input keeps the verdicts read before the problem."""
    check = validate_strict if strict else validate
    results: list[FileResult] = []
    for name in files:
        result = FileResult(name)
        try:
            for item in read_file(name, max_bytes, max_depth):
                result.verdicts.append(check(item))
        except InputError as exc:
            result.error = str(exc).removeprefix(f"{name}: ")
        results.append(result)
    return results


def _handle(args: argparse.Namespace) -> int:
    if args.max_bytes <= 0 or args.max_depth <= 0:
        print("error: --max-bytes and --max-depth must be positive", file=sys.stderr)
        return 2
    results = run(list(args.files), max_bytes=args.max_bytes, max_depth=args.max_depth, strict=args.strict)
    if args.format == "json":
        print(_json(results))
    else:
        print(_text(results, args.quiet, args.verbose))
    for result in results:
        if result.error is not None:
            print(f"error: {result.name}: {result.error}", file=sys.stderr)
    if any(r.error is not None for r in results):
        return 2
    if any(not v.valid for r in results for v in r.verdicts):
        return 1
    return 0
