"""`jonction export`: a territory's entities, history, subscriptions and configuration as NDJSON files."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigInvalid

if TYPE_CHECKING:
    from gateway.commands import Subparsers

TOKEN_ENV = "JONCTION_EXPORT_TOKEN"
"""Environment variable holding the bearer token for --source/--target brokers (never on the command line)."""


def register(sub: Subparsers) -> None:
    """Add the `export` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "export", help="export entities, their history, subscriptions and the configuration as NDJSON files",
        description="Export a territory from the embedded store (--data, --database) or from any NGSI-LD broker "
        "(--source URL) into a directory, or a .tar / .tar.gz archive chosen by the --out suffix, with a "
        "manifest.json (counts, time range, SHA-256 of every file). Exit code 0 when written, 2 on unusable "
        "input or an unreachable source.")
    parser.add_argument("--out", required=True, type=Path, help="directory, or archive ending in .tar or .tar.gz")
    add_store_options(parser, "read")
    parser.add_argument("--tenant", action="append", default=None, metavar="NAME",
                        help="export this tenant only (repeatable; '' is the default tenant; default: every tenant)")
    parser.add_argument("--type", action="append", default=None, metavar="TYPE",
                        help="export entities of this type only (repeatable; a term of --context or an IRI)")
    parser.add_argument("--since", help="history from this time (RFC 3339 or YYYY-MM-DD, inclusive)")
    parser.add_argument("--until", help="history before this time (RFC 3339 or YYYY-MM-DD, exclusive)")
    parser.add_argument("--no-history", action="store_true", help="leave the temporal history out")
    parser.add_argument("--config", type=Path, default=None,
                        help="a gateway config to include (with the files it names), secrets removed")
    parser.add_argument("--context", default=None, metavar="URL",
                        help="the @context the entities are compacted with (default: jonction's, which carries the "
                        "Smart Data Models terms)")
    parser.add_argument("--progress", action="store_true", default=None,
                        help="show progress on stderr even when it is not a terminal")
    from gateway.commands.open_data import add_publication_options

    group = parser.add_argument_group(
        "open data", "--open-data writes what the communes share with 'public' instead (GeoJSON, CSV and a DCAT-AP "
        "catalogue in the --out directory; the same as `jonction open-data`)")
    group.add_argument("--open-data", action="store_true", help="export the publicly shared entities as open data")
    group.add_argument("--sharing", type=Path, default=None, metavar="FILE",
                       help="the sharing policy file (required with --open-data)")
    add_publication_options(group)
    parser.set_defaults(handler=_handle)


def add_store_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """--data/--database (embedded store) and --source/--target (a broker), with the token options."""
    parser.add_argument("--data", type=Path, default=None, help=f"{verb} the embedded store in this data directory "
                        "(store.sqlite; default: ./data)")
    parser.add_argument("--database", default=None, metavar="URL",
                        help="the embedded store's database: postgresql://… or sqlite:///… (also "
                        "$JONCTION_STORE_DATABASE)")
    flag = "--source" if verb == "read" else "--target"
    parser.add_argument(flag, dest="broker", default=None, metavar="URL",
                        help=f"{verb} an NGSI-LD broker instead (http(s)://host:port[/ngsi-ld/v1])")
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"the broker's bearer token, in a file (or ${TOKEN_ENV}); never logged")


def broker_token(args: argparse.Namespace) -> str | None:
    """The bearer token for the broker: from --token-file, else the environment."""
    if args.token_file is not None:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigInvalid(f"--token-file {args.token_file}: cannot read ({exc.strerror or exc})") from exc
        if not token:
            raise ConfigInvalid(f"--token-file {args.token_file} is empty")
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        from gateway.secrets import register_secret

        register_secret(token)
    return token or None


def database_url(args: argparse.Namespace) -> str:
    """The embedded store's URL from --database, $JONCTION_STORE_DATABASE or --data."""
    from gateway.commands.store import DATABASE_ENV

    if args.database and args.data is not None:
        raise ConfigInvalid("--data and --database both name a store: give one")
    url = args.database or os.environ.get(DATABASE_ENV)
    if url:
        return str(url)
    return f"sqlite:///{(args.data or Path('data')) / 'store.sqlite'}"


def _handle(args: argparse.Namespace) -> int:
    from gateway.reversibility.exporting import ExportOptions
    from gateway.reversibility.progress import Progress
    from gateway.store.jsonld import jonction_context_iri

    if args.broker and (args.data is not None or args.database):
        raise ConfigInvalid("--source reads a broker; --data/--database the embedded store: give one")
    if args.open_data:
        return _open_data(args)
    options = ExportOptions(tenants=args.tenant, types=args.type, since=args.since, until=args.until,
                            config=args.config, history=not args.no_history,
                            context=args.context or jonction_context_iri())
    if args.config is not None and not args.config.is_file():
        raise ConfigInvalid(f"--config {args.config}: no such file")
    progress = Progress("export", enabled=args.progress)
    manifest = asyncio.run(_export(args, options, progress))
    totals = manifest["totals"]
    print(f"jonction export: {args.out}: {totals['tenants']} tenants, {totals['entities']} entities, "
          f"{totals['history']} history instances, {totals['subscriptions']} subscriptions, "
          f"{totals['config_files']} config files", flush=True)
    if manifest["secrets_removed"]:
        print(f"  {len(manifest['secrets_removed'])} secrets left out (listed in manifest.json)", file=sys.stderr)
    return 0


def _open_data(args: argparse.Namespace) -> int:
    """``--open-data``: the public part of the embedded store as open data (see `jonction open-data`)."""
    from gateway.commands import open_data

    if args.broker:
        raise ConfigInvalid("--open-data reads the embedded store (--data or --database), not --source")
    if args.sharing is None:
        raise ConfigInvalid("--open-data needs --sharing FILE: what each commune shares with 'public'")
    ignored = [flag for flag, given in (("--tenant", args.tenant), ("--type", args.type), ("--since", args.since),
                                        ("--until", args.until), ("--config", args.config)) if given]
    if ignored:
        raise ConfigInvalid(f"--open-data publishes what the sharing policy makes public; {', '.join(ignored)} "
                            "cannot narrow it (edit the policy instead)")
    return open_data.run(args)


async def _export(args: argparse.Namespace, options: Any, progress: Any) -> dict[str, Any]:
    from gateway.reversibility.exporting import run_export

    if args.broker:
        from gateway.reversibility.remote import BrokerReader

        async with BrokerReader(args.broker, broker_token(args), options.context, args.tenant) as reader:
            result: dict[str, Any] = await run_export(reader, args.out, options, progress)
            return result
    from gateway.reversibility.embedded import EmbeddedReader
    from gateway.store.backends import open_storage

    url = database_url(args)
    _must_exist(url)
    storage = await open_storage(url, gc_tuning=False)
    try:
        result = await run_export(EmbeddedReader(storage, options.context), args.out, options, progress)
    finally:
        await storage.close()
    result["source"]["database"] = _describe(url)
    return result


def _describe(url: str) -> str:
    from gateway.store.backends import describe

    return str(describe(url))


def _must_exist(url: str) -> None:
    """An export never creates an empty store where the user mistyped a path."""
    from gateway.store.backends import is_postgresql, sqlite_path

    if not is_postgresql(url) and not sqlite_path(url).is_file():
        raise ConfigInvalid(f"no store at {sqlite_path(url)} (--data names the data directory holding store.sqlite)")
