"""The ``jonction`` command line: built-in commands plus those other rooms register.

Commands are modules with ``register(subparsers)``; each sets ``handler(args) -> int`` as
its default. Conformance commands arrive through the ``jonction.commands`` entry points so
that the gateway never imports the checker. Bad input never produces a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import cast

from gateway import __version__
from gateway.errors import JonctionError

BUILTIN_COMMANDS = ("run", "store", "adapters", "validate", "translate")
"""Modules under ``gateway.commands`` registered in this order."""

Handler = Callable[[argparse.Namespace], int]


def _log_level(value: str) -> str:
    """argparse type of ``--log-level``: a known level, or a usage error naming the known ones."""
    from gateway.runtime.logging import parse_level

    try:
        return parse_level(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every built-in and registered command."""
    parser = argparse.ArgumentParser(
        prog="jonction",
        description="Interoperability gateway for connected territories: vendor data to NGSI-LD.",
    )
    parser.add_argument("--version", action="version", version=f"jonction {__version__}")
    parser.add_argument("--log-level", default="INFO", type=_log_level, metavar="LEVEL",
                        help="debug, info, warning or error (default: info; third-party libraries log "
                             "warnings only, unless debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in BUILTIN_COMMANDS:
        importlib.import_module(f"gateway.commands.{name}").register(sub)
    for ep in metadata.entry_points(group="jonction.commands"):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jonction`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(message)s", stream=sys.stderr)
    from gateway.runtime.logging import quiet_third_party

    for log_handler in logging.getLogger().handlers:
        quiet_third_party(log_handler)
    handler = cast(Handler | None, getattr(args, "handler", None))
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except JonctionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
