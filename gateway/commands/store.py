"""`jonction store`: serve the embedded NGSI-LD store alone (default http://127.0.0.1:1026/ngsi-ld/v1)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigInvalid

if TYPE_CHECKING:
    from gateway.commands import Subparsers

DATABASE_ENV = "JONCTION_STORE_DATABASE"
"""Environment variable holding the store's database URL (keeps a password out of the command line)."""
MAX_WORKERS = 64
FAST_FAILURES = 5
"""Workers dying within a second of their start this many times in a row stop the service (a bad setup)."""


def register(sub: Subparsers) -> None:
    """Add the `store` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "store", help="serve the embedded NGSI-LD store (ETSI GS CIM 009 V1.9.1) on its own"
    )
    parser.add_argument(
        "action", nargs="?", choices=("migrate-data",),
        help="migrate-data: copy a SQLite store (--from sqlite:///…) into PostgreSQL (--to postgresql://…), or "
        "back, with its history, verified by counts and checksums",
    )
    parser.add_argument("--from", dest="source", metavar="URL",
                        help="migrate-data: the store to read (default: the SQLite store in --data)")
    parser.add_argument("--to", dest="target", metavar="URL",
                        help="migrate-data: the empty store to fill (default: --database for a SQLite source, "
                        "else the SQLite store in --data)")
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
    parser.add_argument("--build-rollups", action="store_true",
                        help="PostgreSQL: build the daily roll-up of every past day of the history now (after an "
                        "import; a running store builds them in the background), then exit")
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
    parser.add_argument(
        "--sharing", type=Path, default=None, metavar="FILE",
        help="sharing policies (YAML): which types and attributes each tenant shares with which principal or "
        "the public, coarsened or not, and the read-only syndicat views; checked before the store opens",
    )
    parser.add_argument("--allow-unfiltered-queries", action="store_true",
                        help="list entities on a GET /entities with no filter (CIM 009 asks for one by default)")
    parser.add_argument("--temporal-instance-limit", type=int, default=10_000, metavar="N",
                        help="most instances per attribute in one temporal answer; beyond, 206 Partial Content "
                        "(default: 10000)")
    parser.add_argument("--federation-timeout", type=float, default=2.0, metavar="SECONDS",
                        help="seconds each registered context source has to answer a forwarded request; a slower "
                        "one is named in the NGSILD-Warning header of a partial answer (default: 2)")
    parser.add_argument("--identity", default="", metavar="URI",
                        help="this store's identity in the Via header of forwarded requests (loop detection); "
                        "default: derived from the host name and the database")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="serve with N processes sharing one listening socket (PostgreSQL only: they share the database, "
        "one of them sends the notifications); a worker that dies is restarted (default: 1)",
    )
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker's inherited socket
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
        from gateway.store.backends import is_postgresql

        local = f"sqlite:///{args.data / 'store.sqlite'}"
        source = args.source or local
        default = local if is_postgresql(source) else args.database or os.environ.get(DATABASE_ENV)
        return _migrate_data(source, args.target or default)
    database = args.database or os.environ.get(DATABASE_ENV) or None
    if args.migrate:
        return _migrate(database or args.data / "store.sqlite")
    if args.build_rollups:
        return _build_rollups(database)
    tokens, tenant_tokens = load_tokens(args.token_file)
    sharing_policies = None
    if args.sharing is not None:
        from gateway.store import sharing

        sharing_policies = sharing.load(args.sharing)
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
        federation_timeout=args.federation_timeout,
        identity=args.identity,
        sharing=sharing_policies,
    )
    settings.check()
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ConfigInvalid(f"--workers {args.workers}: expected 1 to {MAX_WORKERS} processes")
    if args.workers > 1:
        from gateway.store.backends import is_postgresql

        if not database or not is_postgresql(database):
            raise ConfigInvalid(
                f"--workers {args.workers} needs a PostgreSQL database (--database postgresql://…): a SQLite store "
                "has one writer and notifies from its own process, so it is served by one process"
            )
        return _supervise(args, database)
    try:
        if args.listen_fd is not None:
            asyncio.run(_serve(settings, args.port, socket.socket(fileno=args.listen_fd)))
        else:
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
        raise ConfigInvalid("migrate-data needs --to postgresql://… (or --from postgresql://… --to sqlite:///…)")
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


def _build_rollups(url: str | None) -> int:
    """Build the daily roll-up of every out-of-date past day of a PostgreSQL history, say how many, and close."""
    from gateway.store.backends import describe, is_postgresql, open_storage

    if url is None or not is_postgresql(url):
        raise ConfigInvalid("--build-rollups needs a PostgreSQL database (--database postgresql://…)")

    async def run() -> int:
        from gateway.store.postgres import PostgresStorage

        storage = await open_storage(url, gc_tuning=False)
        try:
            assert isinstance(storage, PostgresStorage)
            return await storage.build_rollups()
        finally:
            await storage.close()

    began = time.monotonic()
    days = asyncio.run(run())
    print(f"jonction store: {days} roll-up days built in {describe(url)} ({time.monotonic() - began:.1f} s)",
          flush=True)
    return 0


def _worker_argv(args: argparse.Namespace, fd: int, port: int) -> list[str]:
    """The command line of one worker: this command's options, and the listening socket it inherits."""
    argv = [sys.executable, "-m", "gateway.cli", "store", "--listen-fd", str(fd), "--host", args.host,
            "--port", str(port), "--data", str(args.data), "--durability", args.durability,
            "--temporal-instance-limit", str(args.temporal_instance_limit),
            "--federation-timeout", str(args.federation_timeout), "--identity", args.identity]
    if args.token_file is not None:
        argv += ["--token-file", str(args.token_file)]
    for name in args.allowed_host:
        argv += ["--allowed-host", name]
    if args.protect_reads:
        argv.append("--protect-reads")
    if args.sharing is not None:
        argv += ["--sharing", str(args.sharing)]
    if args.allow_unfiltered_queries:
        argv.append("--allow-unfiltered-queries")
    return argv


def _supervise(args: argparse.Namespace, database: str) -> int:
    """Bind once, run ``--workers`` store processes on that socket, restart those that die.

    The parent binds and the workers inherit the listening socket, rather than each binding with
    SO_REUSEPORT: they share ONE accept queue, so connections waiting for a worker that dies are
    taken by the others (with SO_REUSEPORT the kernel would have queued some to the dead one, and
    they would be reset); ``--port 0`` gives every worker the same port; and no other program can
    join the port. The notifier is elected among the workers by PostgreSQL's advisory lock.
    """
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        sock = socket.create_server((args.host, args.port), family=family, backlog=1024)
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sock.set_inheritable(True)
    port = sock.getsockname()[1]
    argv = _worker_argv(args, sock.fileno(), port)
    env = {**os.environ, DATABASE_ENV: database}  # the URL (and its password) stays off the command lines
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def spawn() -> tuple[subprocess.Popen[bytes], float]:
        return subprocess.Popen(argv, pass_fds=(sock.fileno(),), env=env), time.monotonic()

    workers = [spawn() for _ in range(args.workers)]
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"jonction store: serving NGSI-LD at http://{host}:{port}/ngsi-ld/v1 with {args.workers} workers "
          f"(pids {', '.join(str(p.pid) for p, _ in workers)})", flush=True)
    fast = 0
    code = 0
    try:
        while not stop.wait(0.2):
            for index, (proc, started) in enumerate(workers):
                status = proc.poll()
                if status is None:
                    continue
                fast = fast + 1 if time.monotonic() - started < 1.0 else 0
                if fast >= FAST_FAILURES:
                    print(f"error: the store workers keep exiting at start (last code {status}); stopping",
                          file=sys.stderr, flush=True)
                    code = 1
                    stop.set()
                    break
                workers[index] = spawn()
                print(f"jonction store: worker {proc.pid} exited (code {status}); started worker "
                      f"{workers[index][0].pid}", flush=True)
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 15
        for proc, _ in workers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


async def _orphaned(stop: asyncio.Event) -> None:
    """Stop a worker whose supervising process is gone (it would otherwise serve on, unsupervised)."""
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            stop.set()


async def _serve(settings: Any, port: int, sock: socket.socket | None = None) -> None:
    from aiohttp import web

    from gateway.runtime.logging import quiet_malformed_requests
    from gateway.store.app import create_root_app

    quiet_malformed_requests()  # an oversized request line is one warning, not a traceback
    runner = web.AppRunner(create_root_app(settings), access_log=None)
    await runner.setup()
    try:
        stop = asyncio.Event()
        watch: asyncio.Task[None] | None = None
        if sock is None:
            site: web.BaseSite = web.TCPSite(runner, settings.host, port)
        else:
            site = web.SockSite(runner, sock)
            watch = asyncio.create_task(_orphaned(stop))
        await site.start()
        if sock is None:
            bound = runner.addresses[0][1] if runner.addresses else port
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            print(f"jonction store: serving NGSI-LD at http://{host}:{bound}{settings.base_path}", flush=True)
        else:
            print(f"jonction store: worker {os.getpid()} ready", flush=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        if watch is not None:
            watch.cancel()
    finally:
        await runner.cleanup()
