"""`jonction store`: serve the embedded NGSI-LD store alone (default http://127.0.0.1:1026/ngsi-ld/v1)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigInvalid

if TYPE_CHECKING:
    from gateway.commands import Subparsers

DATABASE_ENV = "JONCTION_STORE_DATABASE"
"""Environment variable holding the store's database URL (keeps a password out of the command line)."""


def register(sub: Subparsers) -> None:
    """Add the `store` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "store", help="serve the embedded NGSI-LD store (ETSI GS CIM 009 V1.9.1) on its own"
    )
    parser.add_argument(
        "action", nargs="?", choices=("migrate-data",),
        help="migrate-data: copy a SQLite store (--from sqlite:///…) into PostgreSQL (--to postgresql://…), "
        "with its history, verified by counts and checksums",
    )
    parser.add_argument("--from", dest="source", metavar="URL", help="migrate-data: the SQLite store to read")
    parser.add_argument("--to", dest="target", metavar="URL", help="migrate-data: the PostgreSQL database to fill")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=1026, help="TCP port (default: 1026, like the brokers)")
    parser.add_argument("--data", type=Path, default=Path("data"), help="data directory (store.sqlite)")
    parser.add_argument(
        "--database", default=None, metavar="URL",
        help="where entities live: postgresql://user@host:port/db (PostgreSQL + PostGIS, extra "
        "jonction[postgresql]) or sqlite:///path (default: sqlite in --data); also $JONCTION_STORE_DATABASE",
    )
    parser.add_argument("--migrate", action="store_true",
                        help="apply the database migrations (create or upgrade the tables), then exit")
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="bearer tokens, one per line: TOKEN, or TENANT TOKEN (also $JONCTION_STORE_TOKEN); "
        "required when not bound to loopback, and required on loopback too once given",
    )
    parser.add_argument(
        "--allowed-host", action="append", default=[], metavar="NAME",
        help="a public host name clients use to reach the store (repeatable; '*' for any): writes whose "
        "Host header names neither it, loopback nor the bind address are refused (DNS rebinding)",
    )
    parser.add_argument("--protect-reads", action="store_true", help="require a token for reads as well")
    parser.add_argument("--allow-unfiltered-queries", action="store_true",
                        help="list entities on a GET /entities with no filter (CIM 009 asks for one by default)")
    parser.add_argument("--temporal-instance-limit", type=int, default=10_000, metavar="N",
                        help="most instances per attribute in one temporal answer; beyond, 206 Partial Content "
                        "(default: 10000)")
    parser.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="full",
        help="full: acknowledged writes survive power loss (default); normal: faster, crash-safe only",
    )
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from gateway.store.app import StoreSettings, load_tokens

    if not 0 <= args.port <= 65535:
        raise ConfigInvalid(f"--port {args.port} is not a TCP port")
    if args.action == "migrate-data":
        return _migrate_data(args.source or f"sqlite:///{args.data / 'store.sqlite'}",
                             args.target or args.database or os.environ.get(DATABASE_ENV))
    database = args.database or os.environ.get(DATABASE_ENV) or None
    if args.migrate:
        return _migrate(database or args.data / "store.sqlite")
    tokens, tenant_tokens = load_tokens(args.token_file)
    settings = StoreSettings(
        data_dir=args.data,
        database=database,
        host=args.host,
        durability=args.durability,
        tokens=tokens,
        tenant_tokens=tenant_tokens,
        protect_reads=args.protect_reads,
        allowed_hosts=frozenset(args.allowed_host),
        allow_unfiltered_queries=args.allow_unfiltered_queries,
        temporal_instance_limit=args.temporal_instance_limit,
    )
    settings.check()
    try:
        asyncio.run(_serve(settings, args.port))
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _migrate_data(source: str, target: str | None) -> int:
    """Copy a SQLite store into PostgreSQL; exit 0 only when every tenant verified."""
    from gateway.store.backends import describe
    from gateway.store.migrate import migrate_data

    if not target:
        raise ConfigInvalid("migrate-data needs --to postgresql://…")
    report = asyncio.run(migrate_data(source, target))
    for line in report.lines():
        print(line, flush=True)
    if not report.verified:
        print(f"error: the copy in {describe(target)} does not match its source (see above)", file=sys.stderr)
        return 1
    print(f"jonction store: {source} copied into {describe(target)} and verified", flush=True)
    return 0


def _migrate(url: str | Path) -> int:
    """Open the database (which applies the missing migrations), say what it is, and close it."""
    from gateway.store.backends import describe, open_storage

    async def run() -> None:
        storage = await open_storage(url, gc_tuning=False)
        await storage.close()

    asyncio.run(run())
    print(f"jonction store: {describe(url)} is migrated", flush=True)
    return 0


async def _serve(settings: Any, port: int) -> None:
    from aiohttp import web

    from gateway.runtime.logging import quiet_malformed_requests
    from gateway.store.app import create_root_app

    quiet_malformed_requests()  # an oversized request line is one warning, not a traceback
    runner = web.AppRunner(create_root_app(settings), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        print(f"jonction store: serving NGSI-LD at http://{host}:{bound}{settings.base_path}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
