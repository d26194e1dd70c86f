"""``jonction adapters``: the installed adapters with their protocols and entity types."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.contract import discover


def register(sub: Any) -> None:
    """Add the ``adapters`` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "adapters", help="list the installed adapters (protocols, entity types)"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")
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
    width = max((len(r["domain"]) for r in rows), default=6)
    for row in rows:
        print(f"{row['domain']:<{width}}  {', '.join(row['protocols']):<22}  {', '.join(row['entity_types'])}")
        print(f"{'':<{width}}  {row['name']}")
    return 0
