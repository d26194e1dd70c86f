"""docs/gateway.example.yaml names every key of the gateway schema and is a valid configuration."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gateway.runtime import config as config_mod
from tests.conftest import ROOT

EXAMPLE = ROOT / "docs" / "gateway.example.yaml"
UNIT = ROOT / "docs" / "deploy" / "jonction.service"


def _keys(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Iterator[str]:
    """Every property name the schema allows (adapter configs excluded: each adapter documents its own)."""
    if "$ref" in schema:
        yield from _keys(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    for name, sub in schema.get("properties", {}).items():
        yield name
        if name != "config":
            yield from _keys(sub, defs)
    if isinstance(schema.get("items"), Mapping):
        yield from _keys(schema["items"], defs)
    for alternative in schema.get("oneOf", []) + schema.get("anyOf", []):
        yield from _keys(alternative, defs)


def test_every_schema_key_is_shown_in_the_example() -> None:
    schema = config_mod.gateway_schema()
    text = EXAMPLE.read_text(encoding="utf-8")
    # a key counts when written as a key, active or commented out (alternatives are commented)
    written = set(re.findall(r"(?:^|[\s{,#])([a-z_0-9]+):", text, flags=re.M))
    missing = sorted(set(_keys(schema, schema["$defs"])) - written)
    assert not missing, f"keys of gateway.schema.json missing from {EXAMPLE.name}: {missing}"


def test_the_example_is_a_valid_configuration(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("admin", "broker-oauth"):
        (secrets / name).write_text("s3cret-value-for-tests\n", encoding="utf-8")
    (tmp_path / "ca.pem").write_text("not read before the sink starts\n", encoding="utf-8")
    text = EXAMPLE.read_text(encoding="utf-8").replace("/etc/jonction/secrets", str(secrets))
    text = text.replace("/etc/jonction/ca.pem", str(tmp_path / "ca.pem"))
    text = text.replace("/var/lib/jonction", str(tmp_path / "data"))
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    cfg = config_mod.load(path)
    assert cfg.admin_token == "s3cret-value-for-tests"
    assert [s.name for s in cfg.sources] == ["ngsi-v2-orion"]


def test_the_systemd_unit_uses_options_the_cli_has() -> None:
    from gateway.cli import build_parser

    unit = UNIT.read_text(encoding="utf-8")
    commands = re.findall(r"^ExecStart(?:Pre)?=\S+/jonction (.+)$", unit, flags=re.M)
    assert len(commands) == 2
    parser = build_parser()
    for command in commands:
        args = parser.parse_args(command.split())  # SystemExit (exit 2) on an unknown option
        assert args.config == Path("/etc/jonction/gateway.yaml")

