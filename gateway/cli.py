"""The ``jonction`` command line: built-in commands plus those other rooms register.

Commands are modules with ``register(subparsers)``; each sets ``handler(args) -> int`` as
its default. Conformance commands arrive through the ``jonction.commands`` entry points so
that the gateway never imports the checker. Bad input never produces a traceback: an error the
command expected prints ``error: <reason>`` and exits with its code (2 for unusable input); anything
else prints one ``error:`` line and exits 2 (``JONCTION_DEBUG=1`` shows the traceback instead).
Output survives any string: what the terminal cannot encode (a lone UTF-16 surrogate in an id,
say) is printed as a backslash escape.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import cast

from gateway import __version__
from gateway.commands import adapters, export, import_data, indicators, open_data, run, store, translate, validate
from gateway.errors import JonctionError

BUILTIN_COMMANDS = (run, store, adapters, validate, translate, indicators, open_data, export, import_data)
"""Modules under ``gateway.commands`` registered in this order (commands of other packages come
from the ``jonction.commands`` entry points)."""

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
    parser.set_defaults(handler=None)
    for command in BUILTIN_COMMANDS:
        command.register(sub)
    for ep in metadata.entry_points(group="jonction.commands"):
        ep.load()(sub)
    return parser


def _tolerant_streams() -> None:
    """Escape what stdout/stderr cannot encode instead of raising UnicodeEncodeError mid-output."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):  # a StringIO (tests, embedding) has nothing to reconfigure
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or detached stream: nothing to protect
                pass


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _quiet_stdout() -> None:
    """After a broken pipe (``jonction ... | head``), send what is left to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jonction`` console script; returns the exit code."""
    _tolerant_streams()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.getLevelNamesMapping().get(str(args.log_level).upper(), logging.INFO),
                            format="%(message)s", stream=sys.stderr)
        from gateway.runtime.logging import quiet_third_party

        for log_handler in logging.getLogger().handlers:
            quiet_third_party(log_handler)
        handler = cast(Handler | None, args.handler)
        if handler is None:
            parser.print_help()
            return 2
        code = handler(args)
        sys.stdout.flush()  # a failure to print must surface here, inside the guard
        return code
    except JonctionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 2
    except Exception as exc:  # never a traceback for what the user gave us; one line instead
        if os.environ.get("JONCTION_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
