"""`jonction import`: load an export into the embedded store or a broker, verified, resumable, idempotent."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.commands.export import add_store_options, broker_token, database_url
from gateway.errors import ConfigInvalid

if TYPE_CHECKING:
    from gateway.commands import Subparsers


def register(sub: Subparsers) -> None:
    """Add the `import` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "import", help="import an export (directory or archive) into the embedded store or a broker",
        description="Verify every file of an export against its manifest (SHA-256, line counts), then write it "
        "into the embedded store (--data, --database; fresh or existing) or an NGSI-LD broker (--target URL: batch "
        "upserts and temporal appends). Progress is journaled: run the same command again to resume after an "
        "interruption; a re-import changes nothing. Exit code 0 when imported, 1 when the export does not match "
        "its manifest or the destination refused a record, 2 on unusable input.")
    parser.add_argument("path", type=Path, help="the export: a directory, or a .tar / .tar.gz archive")
    add_store_options(parser, "write")
    parser.add_argument("--tenant", action="append", default=None, metavar="NAME",
                        help="import this tenant of the export only (repeatable)")
    parser.add_argument("--journal", type=Path, default=None,
                        help="the progress journal (default: in the data directory, or next to the export for "
                        "--target)")
    parser.add_argument("--batch", type=int, default=None, metavar="N",
                        help="lines per committed batch (default: 500 entities, 5000 history instances): smaller "
                        "batches resume closer to where an interruption stopped")
    parser.add_argument("--restart", action="store_true", help="ignore the journal and import everything again")
    parser.add_argument("--progress", action="store_true", default=None,
                        help="show progress on stderr even when it is not a terminal")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    from gateway.reversibility.bundle import Bundle
    from gateway.reversibility.importing import bundle_id
    from gateway.reversibility.progress import Progress

    if args.broker and (args.data is not None or args.database):
        raise ConfigInvalid("--target writes a broker; --data/--database the embedded store: give one")
    if args.batch is not None and not 1 <= args.batch <= 100_000:
        raise ConfigInvalid(f"--batch {args.batch}: expected 1 to 100000 lines")
    bundle = Bundle.open(args.path)
    if args.journal is not None:
        journal = args.journal
    elif args.broker:
        journal = args.path.with_name(f"{args.path.name}.import-{bundle_id(bundle)}.journal.json")
    else:
        journal = (args.data or Path("data")) / f"import-{bundle_id(bundle)}.journal.json"
    progress = Progress("import", enabled=args.progress)
    summary = asyncio.run(_import(args, bundle, journal, progress))
    if summary.already_complete:
        print(f"jonction import: {args.path} was already imported (journal {journal}); --restart imports it again",
              flush=True)
        return 0
    written = ", ".join(f"{n} {kind}" for kind, n in summary.written.items()) or "nothing new"
    resumed = sum(summary.skipped.values())
    note = f" (resumed: {resumed} lines were already in)" if resumed else ""
    print(f"jonction import: {args.path} verified and imported: {written}{note}", flush=True)
    return 0


async def _import(args: argparse.Namespace, bundle: Any, journal: Path, progress: Any) -> Any:
    from gateway.reversibility.importing import check_bundle, run_import

    check_bundle(bundle)  # before opening (or creating) anything
    if args.broker:
        from gateway.reversibility.remote import BrokerWriter

        async with BrokerWriter(args.broker, broker_token(args)) as writer:
            return await run_import(bundle, writer, journal, progress, restart=args.restart, tenants=args.tenant,
                                    verified=True, batch=args.batch)
    from gateway.reversibility.embedded import EmbeddedWriter
    from gateway.store.backends import open_storage

    storage = await open_storage(database_url(args), gc_tuning=False)
    try:
        return await run_import(bundle, EmbeddedWriter(storage), journal, progress, restart=args.restart,
                                tenants=args.tenant, verified=True, batch=args.batch)
    finally:
        await storage.close()
