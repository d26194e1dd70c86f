"""``jonction adapters``: the installed adapters with their protocols and entity types."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from gateway.contract import discover

if TYPE_CHECKING:
    from gateway.commands import Subparsers


def register(sub: Subparsers) -> None:
    """Add the ``adapters`` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "adapters", help="list the installed adapters (protocols, entity types)"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text: an aligned table (default); json: one object per adapter, for scripts")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = [
        {
            "domain": domain,
            "name": cls.manifest.name,
            "version": cls.manifest.version,
            "protocols": list(cls.manifest.protocols),
            "entity_types": list(cls.manifest.entity_types),
            "extra": cls.manifest.extra,
        }
        for domain, cls in discover().items()
    ]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(_table(rows), end="")
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns (ADAPTER, PROTOCOLS, ENTITY TYPES) and each adapter's description below it."""
    cells = [(r["domain"], ", ".join(r["protocols"]), ", ".join(r["entity_types"]), r["name"]) for r in rows]
    header = ("ADAPTER", "PROTOCOLS", "ENTITY TYPES")
    first = max([len(header[0]), *(len(c[0]) for c in cells)])
    second = max([len(header[1]), *(len(c[1]) for c in cells)])
    lines = [f"{header[0]:<{first}}  {header[1]:<{second}}  {header[2]}"]
    for domain, protocols, types, name in cells:
        lines.append(f"{domain:<{first}}  {protocols:<{second}}  {types}")
        lines.append(f"{'':<{first}}  {name}")
    return "\n".join(lines) + "\n"
