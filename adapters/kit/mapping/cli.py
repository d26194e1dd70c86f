"""``jonction mapping``: check a declarative mapping and try it on a sample document, without a gateway."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from adapters.kit.mapping.engine import (
    EntityMapping,
    context_key,
    items_pointer,
    load_mapping,
    map_item,
    select_items,
)
from adapters.kit.mapping.records import FORMATS, csv_records, decode
from gateway.errors import InputError, TranslationError

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
"""Largest sample document ``mapping apply`` reads."""


def register(sub: Any) -> None:
    """Add the ``mapping`` command (``check`` and ``apply``) to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "mapping",
        help="check a declarative mapping (YAML) and try it on a sample document",
        description="Onboard a vendor without Python: `check` lists every problem of a mapping file at "
        "once; `apply` translates a sample document (JSON, GeoJSON or CSV), validates each entity and "
        "reports every bad item with its index or line. Exit 0 all good, 1 bad items, 2 unusable input.",
    )
    actions = parser.add_subparsers(dest="mapping_action", metavar="ACTION")
    check = actions.add_parser("check", help="validate a mapping file")
    check.add_argument("mapping", type=Path, help="the mapping YAML file to check")
    check.set_defaults(handler=_check)
    apply = actions.add_parser("apply", help="translate a sample document with a mapping")
    apply.add_argument("mapping", type=Path, help="the mapping YAML file")
    apply.add_argument("document", type=Path, help="a vendor document to translate (a saved API page, "
                                                       "a JSON, GeoJSON or CSV file)")
    apply.add_argument("--format", choices=("auto", "json", "geojson", "csv"), default="auto",
                       help="format of the document (default: from its file name)")
    apply.add_argument("--no-validate", action="store_true", help="skip Smart Data Model validation")
    apply.add_argument("--query", action="append", default=[], metavar="NAME=VALUE",
                       help="a query parameter of the push, for $query.NAME selectors (repeatable)")
    apply.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                       help="a header of the push, for $headers.NAME selectors (repeatable)")
    apply.set_defaults(handler=_apply)

    def usage(_args: argparse.Namespace) -> int:
        """``jonction mapping`` without an action: show the actions."""
        parser.print_help()
        return 2

    parser.set_defaults(handler=usage)


def _check(args: argparse.Namespace) -> int:
    mapping = load_mapping(args.mapping)
    static = sum(1 for a in mapping.attributes if a.static is not None)
    print(f"ok: {args.mapping} builds {mapping.entity_type} entities with {len(mapping.attributes)} attributes"
          + (f" ({static} static)" if static else ""))
    if mapping.context:
        print("reads from the push: " + ", ".join(f"${key} ({where})" for key, where in mapping.context.items()))
    return 0


def _context(args: argparse.Namespace) -> dict[str, str]:
    """The push context ``--query`` and ``--header`` give (keys as a push transport writes them)."""
    context: dict[str, str] = {}
    for given, scope, sep in [(q, "query", "=") for q in args.query] + [(h, "headers", ":") for h in args.header]:
        name, found, value = given.partition(sep)
        key = context_key(f"${scope}.{name.strip()}")
        if not found or key is None:
            raise InputError(f"--{'query' if scope == 'query' else 'header'} {given!r}: expected NAME{sep}VALUE")
        context[key] = value.strip() if scope == "headers" else value
    return context


def _items(mapping: EntityMapping, path: Path, kind: str) -> list[tuple[str, str, Any]]:
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise InputError(f"{path} is over {MAX_DOCUMENT_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    kind = FORMATS.get(path.suffix.lower(), "json") if kind == "auto" else kind
    if kind == "csv":
        text, _ = decode(data, None)
        return [
            (f"line {r.position}", "", {"__row_error__": r.error} if r.error else json.loads(r.payload))
            for r in csv_records(text, None)
        ]
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from exc
    if kind == "geojson" or (isinstance(doc, dict) and doc.get("type") == "FeatureCollection"):
        features = doc.get("features") if isinstance(doc, dict) else None
        if not isinstance(features, list):
            raise InputError(f"{path} is not a GeoJSON FeatureCollection")
        return [(f"feature {i}", f"/features/{i}", f) for i, f in enumerate(features)]
    base = items_pointer(mapping, doc)
    try:
        items = select_items(mapping, doc)
    except TranslationError as exc:
        raise InputError(exc.reason) from exc
    return [(f"item {i}", f"{base}/{i}" if base is not None else "", item) for i, item in enumerate(items)]


def _apply(args: argparse.Namespace) -> int:
    from gateway.validation import validate

    mapping = load_mapping(args.mapping)
    context = _context(args)
    entities, bad = [], 0
    for where, pointer, item in _items(mapping, args.document, args.format):
        try:
            if isinstance(item, dict) and "__row_error__" in item:
                raise TranslationError(f"{where}: {item['__row_error__']}")
            entity = map_item(mapping, item, where=where, pointer=pointer, context=context)
        except TranslationError as exc:
            bad += 1
            print(f"untranslatable: {exc.reason}" + (f" (at {exc.pointer})" if exc.pointer else ""),
                  file=sys.stderr)
            continue
        entities.append(entity)
        if not args.no_validate:
            verdict = validate(entity)
            for problem in verdict.errors:
                print(f"invalid: {where} {entity['id']}{problem.pointer}: {problem.message}", file=sys.stderr)
            for problem in verdict.warnings:
                print(f"warning: {where} {entity['id']}{problem.pointer}: {problem.message}", file=sys.stderr)
            bad += 0 if verdict.valid else 1
    print(json.dumps(entities, indent=2, ensure_ascii=False))
    print(f"{len(entities)} entities, {bad} problems", file=sys.stderr)
    return 1 if bad else 0
