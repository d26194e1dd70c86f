"""`jonction indicators`: evaluation indicators from the store's history, baseline against period.

Writes indicators.json, indicators.csv and a self-contained report.html to ``--out``. Exit 0 when
written, 1 when written but no history instance fell in either window (nothing was measured), 2 for
unusable input (bad dates, a definitions file that does not validate, no store).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import ConfigInvalid

if TYPE_CHECKING:
    from gateway.commands import Subparsers
    from gateway.indicators.compute import Window
    from gateway.indicators.definitions import Definition

DATABASE_ENV = "JONCTION_STORE_DATABASE"
"""Same variable as ``jonction store`` (keeps a password out of the command line)."""


def register(sub: Subparsers) -> None:
    """Add the `indicators` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "indicators", help="evaluation indicators (lighting, waste, water, air, sensors) from the store's history",
        description="Compute evaluation indicators from the attribute history, for a baseline and a comparison "
        "period, per commune (tenant) and for the territory; write indicators.json, indicators.csv and report.html.",
    )
    parser.add_argument("--data", type=Path, default=Path("data"), help="data directory (store.sqlite)")
    parser.add_argument("--database", default=None, metavar="URL",
                        help="postgresql://user@host:port/db or sqlite:///path (default: sqlite in --data); "
                        "also $JONCTION_STORE_DATABASE")
    parser.add_argument("--baseline", required=True, metavar="START/END",
                        help="baseline window, e.g. 2025-01-01/2026-01-01 (dates are local midnights, END excluded; "
                        "or RFC 3339 times with a zone)")
    parser.add_argument("--period", required=True, metavar="START/END", help="comparison window, same form")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory to write the files to")
    parser.add_argument("--tenant", action="append", default=None, metavar="NAME",
                        help="a commune (tenant) to include, repeatable; '' is the default tenant (default: all)")
    parser.add_argument("--lang", choices=("fr", "en"), default="fr", help="language of report.html (default: fr)")
    parser.add_argument("--definitions", type=Path, default=None, metavar="FILE",
                        help="the territory's own indicator definitions (YAML), added to the shipped ones "
                        "(same id: replaces)")
    parser.add_argument("--timezone", default="Europe/Paris",
                        help="zone of the dates in --baseline/--period (default: Europe/Paris)")
    parser.set_defaults(handler=_handle)


def parse_window(name: str, text: str, zone: str) -> Window:
    """``START/END`` as a window; raise ConfigInvalid naming the option."""
    from gateway.indicators.compute import Window
    from gateway.indicators.primitives import micros

    parts = text.split("/")
    if len(parts) != 2:
        raise ConfigInvalid(f"--{name} {text!r}: expected START/END, e.g. 2025-01-01/2026-01-01")
    bounds = []
    for label, part in zip(("START", "END"), parts, strict=True):
        try:
            moment = datetime.fromisoformat(part.strip())
        except ValueError:
            raise ConfigInvalid(f"--{name} {label} {part!r}: not a date (2025-01-01) or an RFC 3339 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(zone))
        bounds.append(micros(moment))
    if bounds[1] <= bounds[0]:
        raise ConfigInvalid(f"--{name} {text!r}: END must be later than START")
    return Window(name, bounds[0], bounds[1])


def _progress(tenant: str, entities: int) -> None:
    """A line on stderr every 250 entities: a year of a large territory takes minutes."""
    if entities % 250 == 0:
        logging.getLogger("jonction.indicators").info("%d entities read (tenant %r)", entities, tenant)


def _handle(args: argparse.Namespace) -> int:
    from gateway.indicators import definitions

    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigInvalid(f"--timezone {args.timezone!r}: unknown time zone") from None
    windows = [parse_window("baseline", args.baseline, args.timezone),
               parse_window("period", args.period, args.timezone)]
    defs = definitions.load(args.definitions)  # checked before the store is opened
    if args.out.exists() and not args.out.is_dir():
        raise ConfigInvalid(f"--out {args.out}: exists and is not a directory")
    database = args.database or os.environ.get(DATABASE_ENV) or None
    return asyncio.run(_run(args, defs, windows, database))


async def _run(args: argparse.Namespace, defs: list[Definition], windows: list[Window], database: str | None) -> int:
    from gateway.indicators import report
    from gateway.indicators.compute import compute
    from gateway.indicators.source import open_reader
    from gateway.store import jsonld
    from gateway.store.history import now_micros

    context = jsonld.ContextCache(lambda iri: None).get([jsonld.jonction_context_iri()])
    reader = await open_reader(args.data, database)
    try:
        known = await reader.tenants()
        if args.tenant is not None:
            unknown = [t for t in args.tenant if t not in known]
            if unknown:
                raise ConfigInvalid(f"--tenant {', '.join(repr(t) for t in unknown)}: no history in this store "
                                    f"(tenants with history: {', '.join(repr(t) for t in known) or 'none'})")
        tenants = list(dict.fromkeys(args.tenant)) if args.tenant is not None else known
        outcomes, chosen, totals = await compute(reader, defs, windows, context.expand_term, tenants, _progress)
    finally:
        await reader.close()
    doc = report.document(outcomes, windows, chosen, now_micros())
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        report.write_json(doc, args.out / "indicators.json")
        report.write_csv(doc, args.out / "indicators.csv")
        report.write_html(doc, args.out / "report.html", args.lang)
    except OSError as exc:
        raise ConfigInvalid(f"--out {args.out}: cannot write ({exc.strerror or exc})") from None
    computed = sum(1 for ind in doc["indicators"]
                   if any(ind["territory"][w.name]["value"] is not None for w in windows))
    print(f"{len(defs)} indicators ({computed} with figures) over {len(chosen)} tenant(s), {totals.entities} "
          f"entities, {totals.instances} history instances read; wrote {args.out}/indicators.json, indicators.csv, "
          "report.html")
    if totals.instances == 0:
        print("error: no history instance in either window for the chosen tenants: nothing was measured",
              file=sys.stderr)
        return 1
    return 0
