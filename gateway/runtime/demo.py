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


def demo_notes(cfg: GatewayConfig) -> list[str]:
    """What a reader of docs/onboarding-a-vendor.md needs to reach the demo's simulated vendors.

    The simulators listen on ports chosen at start-up, and the guide asks the reader to fetch a
    page from the street-lighting platform with its demo credentials: these lines say where and how.
    They are printed, not logged: the log masks the (demo) client secret, the reader needs it.
    """
    notes: list[str] = []
    for src in cfg.sources:
        auth = src.config.get("auth") or {}
        url = src.config.get("url")
        if src.adapter == "rest_mapping" and isinstance(url, str) and auth.get("type") == "oauth2":
            client, secret, token_url = auth.get("client_id"), auth.get("client_secret"), auth.get("token_url")
            notes.append(f"simulated vendor API ({src.name}): {url}  OAuth2 client {client} / secret {secret}")
            notes.append(f"  token:  curl -s -u {client}:{secret} -d grant_type=client_credentials {token_url}")
            notes.append(f"  a page: curl -s -H 'Authorization: Bearer <access_token>' '{url}?pagina=1&tamano=50'"
                         " > page.json")
        listen = (src.config.get("http") or {}).get("listen") if isinstance(src.config.get("http"), dict) else None
        gateway = src.config.get("gateway")
        if src.adapter == "talq" and isinstance(listen, dict) and isinstance(gateway, dict):
            notes.append(f"TALQ CMS API ({src.name}): the simulated TALQ gateway posts to "
                         f"http://{listen.get('host', '127.0.0.1')}:{listen.get('port')}{listen.get('path', '/talq')}; "
                         f"its gateway API: {gateway.get('url')}")
        elif isinstance(listen, dict) and listen.get("port"):
            notes.append(f"uplinks ({src.name}): the simulated network server posts to "
                         f"http://{listen.get('host', '127.0.0.1')}:{listen['port']}{listen.get('path', '/')}")
    return notes
