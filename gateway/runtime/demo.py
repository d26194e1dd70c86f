"""The demo territory: simulated vendor sources flowing through real adapters (filled in below)."""

from __future__ import annotations

from pathlib import Path

from gateway.runtime.config import GatewayConfig, parse


def demo_config(*, port: int | None = None, data_dir: Path | None = None) -> GatewayConfig:
    """The configuration ``jonction run`` uses when no ``--config`` is given."""
    cfg = parse({})
    if port is not None:
        cfg.port = port
    if data_dir is not None:
        cfg.data_dir = data_dir
    return cfg
