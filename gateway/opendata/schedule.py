"""The gateway's periodic open-data export (``open_data`` in the gateway configuration)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.opendata.export import OpenDataSettings, export_open_data
from gateway.store import sharing
from gateway.store.base import Storage

log = logging.getLogger("jonction.opendata")


@dataclass(frozen=True, slots=True)
class OpenDataJob:
    """What the gateway exports, from which policy file, how often."""

    settings: OpenDataSettings
    sharing: Path
    every_s: float = 86400.0


async def run_periodically(job: OpenDataJob, storage: Storage) -> None:
    """Export now, then every ``job.every_s``; a failed export is logged and tried again next time.

    The policy file is read again for every export, so that a commune's new decision applies
    without a restart (it was checked once when the configuration was read).
    """
    while True:
        started = time.monotonic()
        try:
            report = await export_open_data(storage, sharing.load(job.sharing), job.settings)
            log.info("open data exported: %d entities of %d types to %s in %.1fs", report.entities,
                     len(report.types), report.out, time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an export failing (disk full, bad policy edit) must not stop the gateway
            log.warning("open data export failed: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(job.every_s)
