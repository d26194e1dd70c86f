"""`jonction open-data`: export what the communes share with the public (GeoJSON, CSV, DCAT-AP catalogue).

Reads the embedded store (``--data``'s SQLite file, or ``--database``), keeps what the sharing
policy file grants to ``public`` and never personal data, and writes ``--out``: one GeoJSON and
one CSV file per entity type and ``catalog.jsonld`` (DCAT-AP). Exit 0 with a one-line summary; 2
when the policy file, the licence or the store cannot be used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import ConfigInvalid

if TYPE_CHECKING:
    from gateway.commands import Subparsers
    from gateway.opendata.export import OpenDataSettings, Report
    from gateway.store.sharing import Policies

DATABASE_ENV = "JONCTION_STORE_DATABASE"


def register(sub: Subparsers) -> None:
    """Add the `open-data` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "open-data", help="export publicly shared entities as GeoJSON and CSV with a DCAT-AP catalogue")
    parser.add_argument("--data", type=Path, default=Path("data"), help="data directory (store.sqlite)")
    parser.add_argument("--database", default=None, metavar="URL",
                        help="the store's database (postgresql://… or sqlite:///…; default: sqlite in --data); "
                        f"also ${DATABASE_ENV}")
    parser.add_argument("--sharing", type=Path, required=True, metavar="FILE",
                        help="the sharing policy file: what each commune shares with 'public'")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write the files")
    add_publication_options(parser)
    parser.set_defaults(handler=run)


def add_publication_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--licence, --publisher, --title, --contact, --base-url (shared with ``jonction export --open-data``)."""
    from gateway.opendata.export import LICENCES

    parser.add_argument("--licence", choices=sorted(LICENCES), default="etalab-2.0",
                        help="licence of the published data (default: etalab-2.0, Licence Ouverte 2.0)")
    parser.add_argument("--publisher", default="jonction", metavar="NAME",
                        help="the publishing body (the syndicat, the commune) named in the catalogue")
    parser.add_argument("--title", default="Open data", help="title of the catalogue")
    parser.add_argument("--contact", default=None, metavar="EMAIL|URL",
                        help="where data users write to (the datasets' contact point)")
    parser.add_argument("--base-url", default=None, metavar="URL",
                        help="where --out is published (absolute download URLs in the catalogue)")


def run(args: argparse.Namespace) -> int:
    """Write the open-data files for ``args`` (--data/--database, --sharing, --out and the publication options)."""
    from gateway.opendata.export import OpenDataSettings
    from gateway.store import sharing

    policies = sharing.load(args.sharing)
    settings = OpenDataSettings(out=args.out, licence=args.licence, publisher=args.publisher, title=args.title,
                                base_url=args.base_url, contact=args.contact)
    database = args.database or os.environ.get(DATABASE_ENV) or None
    if database is None:
        path = (args.data or Path("data")) / "store.sqlite"
        if not path.is_file():
            raise ConfigInvalid(f"no store at {path} (give --data DIR or --database URL)")
        database = f"sqlite:///{path}"
    report = asyncio.run(_export(database, policies, settings))
    print(f"{report.entities} entities of {len(report.types)} types written to {report.out} "
          f"({', '.join(sorted(report.types)) or 'nothing is public'})")
    return 0


async def _export(database: str, policies: Policies, settings: OpenDataSettings) -> Report:
    from gateway.opendata.export import export_open_data
    from gateway.store.backends import open_storage

    storage = await open_storage(database, gc_tuning=False)
    try:
        return await export_open_data(storage, policies, settings)
    finally:
        await storage.close()
