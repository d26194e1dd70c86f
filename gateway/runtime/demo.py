"""The demo territory: simulated vendor sources flowing through real adapters into the store.

``demo.yaml`` lists the simulators (entry points ``jonction.simulators``) and the sources that
read them. Loopback ports are chosen when the demo starts. A source whose adapter, or a
simulator that is not installed is left out with a warning, so the demo runs with what exists.
"""

from __future__ import annotations

import logging
import re
import socket
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from gateway.contract import discover
from gateway.runtime.config import GatewayConfig, parse

log = logging.getLogger("jonction.demo")
_PORT = re.compile(r"@port:([a-z0-9_\-]+)@")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fill_ports(node: Any, ports: dict[str, int]) -> Any:
    if isinstance(node, dict):
        return {k: _fill_ports(v, ports) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill_ports(v, ports) for v in node]
    if isinstance(node, str) and "@port:" in node:
        text = _PORT.sub(lambda m: str(ports.setdefault(m.group(1), _free_port())), node)
        return int(text) if text.isdigit() else text
    return node


def demo_document() -> dict[str, Any]:
    """The demo configuration document, ports filled in, limited to what is installed."""
    template = yaml.safe_load(files("gateway.runtime").joinpath("demo.yaml").read_text(encoding="utf-8"))
    document: dict[str, Any] = _fill_ports(template, {})
    adapters = discover()
    simulators = {ep.name for ep in metadata.entry_points(group="jonction.simulators")}
    kept_sources = []
    for src in document.get("sources", []):
        needs = src.pop("needs", None)
        if src["adapter"] not in adapters:
            log.warning("demo: adapter %s is not installed; source %s left out", src["adapter"], src["name"])
        elif needs is not None and needs not in simulators:
            log.warning("demo: simulator %s is not installed; source %s left out", needs, src["name"])
        else:
            kept_sources.append(src)
    kept_sims = []
    for sim in document.get("simulators", []):
        if sim["name"] in simulators:
            kept_sims.append(sim)
        else:
            log.warning("demo: simulator %s is not installed; left out", sim["name"])
    document["sources"] = kept_sources
    document["simulators"] = kept_sims
    return document


def demo_config(*, port: int | None = None, data_dir: Path | None = None) -> GatewayConfig:
    """The configuration ``jonction run`` uses when no ``--config`` is given."""
    cfg = parse(demo_document())
    if port is not None:
        cfg.port = port
    if data_dir is not None:
        cfg.data_dir = data_dir
    return cfg
