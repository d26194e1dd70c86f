"""`jonction validate`: not implemented yet (placeholder owned by the room that builds it)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    """Add the `validate` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser("validate", help="(not implemented yet)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    print("error: `jonction validate` is not implemented yet", file=sys.stderr)
    return 2
