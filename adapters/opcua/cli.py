"""``jonction opcua browse``: list a server's variables as a ready-to-edit ``nodes:`` mapping."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from gateway.errors import ConfigInvalid, InputError, Unavailable

from .translate import decode_unit_id


def register(sub: Any) -> None:
    """Add the ``opcua`` command (``browse``) to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "opcua",
        help="browse an OPC UA server to write the adapter's node mapping",
        description="`browse` connects (anonymously to --endpoint, or with the security and identity of "
        "--config/--server), lists the variables below --root and prints a `nodes:` mapping to edit: "
        "node ids in the nsu= form, unit from EngineeringUnits.",
    )
    actions = parser.add_subparsers(dest="opcua_action", metavar="ACTION")
    browse = actions.add_parser("browse", help="list the variables of a server as a nodes: mapping")
    target = browse.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint", help="opc.tcp:// URL (no security, anonymous)")
    target.add_argument("--config", type=Path, help="an opcua adapter config (YAML) holding the server")
    browse.add_argument("--server", help="server name in --config (default: the first)")
    browse.add_argument("--root", default="", help="browse path below Objects to start from")
    browse.add_argument("--depth", type=int, default=4, help="how many levels to browse (default: 4)")
    browse.set_defaults(handler=_browse)

    def usage(_args: argparse.Namespace) -> int:
        """``jonction opcua`` without an action: show the actions."""
        parser.print_help()
        return 2

    parser.set_defaults(handler=usage)


def _server_config(args: argparse.Namespace) -> dict[str, Any]:
    if args.endpoint:
        return {"name": "browse", "endpoint": args.endpoint, "nodes": []}
    try:
        config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read {args.config}: {exc}") from exc
    servers = (config or {}).get("servers") or []
    for server in servers:
        if args.server in (None, server.get("name")):
            return dict(server)
    raise ConfigInvalid(f"no server named {args.server!r} in {args.config}")


def _attribute(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_]", "", name) or "value"
    return clean[0].lower() + clean[1:]


def render(found: list[dict[str, Any]], endpoint: str, root: str) -> str:
    """A commented YAML ``nodes:`` block for the variables found."""
    lines = [f"# {len(found)} variables below {root or 'Objects'} on {endpoint}", "nodes:"]
    for var in found:
        parts = var["browse_path"].split("/")
        owner = re.sub(r"[^A-Za-z0-9_.-]", "-", parts[-2] if len(parts) > 1 else "device")
        unit = decode_unit_id((var.get("eu") or {}).get("unit_id", 0))
        display = (var.get("eu") or {}).get("display")
        comment = var["datatype"] + (f", {display} ({unit})" if unit else "")
        lines += [
            f"  - node: \"{var['node_nsu']}\"    # {var['browse_path']}: {comment}",
            f"    entity: urn:ngsi-ld:Device:{owner}",
            "    type: DeviceMeasurement",
            f"    attribute: {_attribute(parts[-1])}",
        ]
    return "\n".join(lines) + "\n"


def _browse(args: argparse.Namespace) -> int:
    # Imported here: the CLI must load without the opcua extra installed.
    from asyncua.ua.uaerrors import UaError

    from .transport import ServerLink

    cfg = _server_config(args)
    link = ServerLink(cfg, source="browse", log=logging.getLogger("jonction.adapters.opcua"))
    try:
        found = asyncio.run(link.browse(args.root, args.depth))
    except (OSError, TimeoutError, ConnectionError, UaError) as exc:
        raise Unavailable(f"cannot browse {cfg['endpoint']}: {exc!r}") from exc
    print(render(found, cfg["endpoint"], args.root), end="")
    return 0
