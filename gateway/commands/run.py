"""`jonction run`: start the gateway (the demo territory when no config is given)."""

from __future__ import annotations

import argparse
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import ConfigInvalid

if TYPE_CHECKING:
    from gateway.commands import Subparsers


def register(sub: Subparsers) -> None:
    """Add the `run` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "run", help="run the gateway (with no --config: a demo territory on the embedded store)",
        description="Run jonction: sources → validated NGSI-LD → embedded store and remote brokers.")
    parser.add_argument("--config", type=Path, help="gateway YAML config (default: the demo territory; every key is "
                                                    "described in docs/gateway.example.yaml)")
    parser.add_argument("--host", help="listen address (overrides server.host)")
    parser.add_argument("--port", type=int, help="listen port (overrides server.port)")
    parser.add_argument("--data", type=Path, help="data directory (overrides data_dir)")
    parser.add_argument("--check", action="store_true",
                        help="check the configuration (and every source's adapter config), then exit")
    parser.add_argument("--workers", type=_workers, metavar="N|auto",
                        help="ingestion processes (default: server.workers of the config, else auto: the number "
                             "of cores; 1: one process does it all). "
                             "Push listeners on a fixed port share it (SO_REUSEPORT) and MQTT sources subscribe as "
                             "one $share group; this process keeps the store, the publishers, the admin API and "
                             "every other source. With several workers, two readings of one device handled by two "
                             "workers can reach a sink out of order: the current state keeps the newer one; the "
                             "embedded store adds the older one to its temporal history only, a remote broker "
                             "sink drops it (counted). The demo territory always runs "
                             "in one process")
    # How the parent starts a worker (see gateway/runtime/workers.py); not for users.
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--control-fd", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(handler=_handle)


def _workers(value: str) -> int:
    """argparse type of ``--workers``: a positive count, or ``auto`` for the number of cores."""
    if value == "auto":
        from gateway.runtime.workers import default_workers

        return default_workers()
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"{value!r}: expected 1 to 64 processes, or auto")
    return count


def _handle(args: argparse.Namespace) -> int:
    from aiohttp import web

    from gateway.runtime import config as config_mod
    from gateway.runtime import workers as workers_mod
    from gateway.runtime.app import create_app
    from gateway.runtime.logging import setup_logging

    setup_logging(args.log_level or "INFO")
    if args.config is not None:
        from gateway.contract import discover

        cfg = config_mod.load(args.config, adapters=discover())
    else:
        from gateway.runtime.demo import demo_config

        cfg = demo_config(port=args.port, data_dir=args.data)
    if args.host:
        cfg.host = args.host
    if args.port is not None:
        cfg.port = args.port
    if args.data is not None:
        cfg.data_dir = args.data
    if cfg.log_level != "INFO" and (args.log_level or "INFO").upper() == "INFO":
        setup_logging(cfg.log_level)
    if args.worker_index is not None:
        if args.control_fd is None or args.config is None:
            raise ConfigInvalid("--worker-index is started by `jonction run --workers`, with --control-fd and --config")
        from gateway.runtime.workers import run_worker

        return run_worker(cfg, args.worker_index, args.control_fd)
    plan = None
    if args.config is not None and not args.check:
        from gateway.contract import discover

        # Each worker reads the same config with the same overrides (the demo picks free ports
        # when it starts, which a second process would pick differently: it stays in one process).
        count = args.workers or cfg.workers or workers_mod.default_workers()
        plan = workers_mod.plan(cfg, discover(), count, workers_mod.worker_command(_worker_argv(args)))
    app = create_app(cfg, workers=plan)
    idle = args.config is not None and not cfg.sources and not cfg.simulators
    idle_text = (f"{args.config} configures no source: the gateway will receive no data "
                 "(add a sources: list; see docs/gateway.example.yaml)")
    if args.check:
        print(f"configuration valid: {len(cfg.sources)} source(s), {len(cfg.sinks)} remote sink(s), "
              f"embedded store {'on' if cfg.embedded else 'off'}")
        if idle:
            print(f"warning: {idle_text}")
        return 0
    log = logging.getLogger("jonction.runtime")
    if idle:
        log.warning(idle_text)
    try:
        sock = socket.create_server((cfg.host, cfg.port), reuse_port=False)
    except OSError as exc:
        raise ConfigInvalid(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}") from None
    port = sock.getsockname()[1]
    log.info("listening on http://%s:%d (NGSI-LD at /ngsi-ld/v1, admin at /admin/, metrics at /metrics)",
             cfg.host, port)
    if args.config is None:
        from gateway.runtime.demo import demo_notes

        for line in demo_notes(cfg):
            print(f"demo: {line}", flush=True)
    if args.config is None and cfg.embedded:
        log.info("demo territory: try curl 'http://%s:%d/ngsi-ld/v1/entities?limit=5' "
                 "(short names: ?type=Streetlight with the jonction @context in a Link header, see README)",
                 cfg.host, port)
    # run_app turns SIGTERM/SIGINT into a graceful shutdown; shutdown_timeout bounds open requests,
    # the runtime bounds the publishers' drain itself (shutdown.drain_timeout).
    # The workers' event loop (uvloop when installed) for this process too: it answers the sources
    # it runs, publishes and serves the admin API, all of it bound by the event loop.
    factory = workers_mod.event_loop_factory()
    web.run_app(app, sock=sock, print=None, access_log=None, shutdown_timeout=cfg.drain_timeout_s + 5,
                handle_signals=True, loop=factory() if factory is not None else None)
    return 0


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The CLI arguments that make a worker read the config exactly as this process did."""
    argv = ["--log-level", str(args.log_level or "INFO"), "run", "--config", str(Path(args.config).resolve())]
    if args.host:
        argv += ["--host", args.host]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    if args.data is not None:
        argv += ["--data", str(Path(args.data).resolve())]
    return argv
