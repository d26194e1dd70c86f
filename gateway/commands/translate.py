"""``jonction translate``: run an adapter's pure translation on recorded payloads."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gateway.commands import stdout_json
from gateway.contract import load_adapter
from gateway.errors import ConfigInvalid, InputError, TranslationError
from gateway.model import RawMessage

MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
"""Largest payload file translate reads; recorded messages are far smaller."""

if TYPE_CHECKING:
    from gateway.commands import Subparsers


def register(sub: Subparsers) -> None:
    """Add the ``translate`` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "translate",
        help="translate recorded payloads with an adapter and validate the result",
        description="Runs an adapter's pure translation (no I/O) on payload files and prints the "
        "NGSI-LD entities with their validation. Exit 0 all valid, 1 invalid or untranslatable, "
        "2 unusable input.",
    )
    parser.add_argument("--adapter", required=True, help="adapter domain (see `jonction adapters`)")
    parser.add_argument("--config", type=Path, help="source config (YAML); default: the adapter's sample.yaml")
    parser.add_argument("--tenant", default="", help="tenant to stamp on the raw messages")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    parser.add_argument("payloads", nargs="+", type=Path, metavar="PAYLOAD", help="recorded payload files")
    parser.set_defaults(handler=_handle)


def _load_config(cls: Any, path: Path | None) -> dict[str, Any]:
    from importlib.resources import files

    try:
        text = (path.read_text(encoding="utf-8") if path else
                files(f"adapters.{cls.manifest.domain}").joinpath("sample.yaml").read_text(encoding="utf-8"))
        loaded = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read config {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigInvalid(f"config {path} must be a mapping")
    from gateway.runtime.config import schema_problems

    problems = schema_problems(cls.config_schema, loaded)
    if problems:
        raise ConfigInvalid(f"config {path or 'sample.yaml'} is invalid", problems)
    return loaded


def _handle(args: argparse.Namespace) -> int:
    from gateway.validation import validate

    cls = load_adapter(args.adapter)
    adapter = cls(_load_config(cls, args.config), http=None, log=None)  # type: ignore[call-arg]
    results: list[dict[str, Any]] = []
    worst = 0
    for path in args.payloads:
        try:
            if path.stat().st_size > MAX_PAYLOAD_BYTES:
                raise InputError(f"{path}: larger than {MAX_PAYLOAD_BYTES} bytes")
            payload = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        raw = RawMessage(source=f"{args.adapter}-cli", tenant=args.tenant, received_at="1970-01-01T00:00:00Z",
                         payload=payload, idempotency_key=path.name,
                         content_type="application/xml" if path.suffix == ".xml" else "application/json")
        try:
            entities = adapter.to_entities(raw)
        except TranslationError as exc:
            results.append({"payload": str(path), "error": {"pointer": exc.pointer, "reason": exc.reason}})
            worst = max(worst, 1)
            continue
        verdicts = [validate(e) for e in entities]
        worst = max(worst, 0 if all(v.valid for v in verdicts) else 1)
        results.append({
            "payload": str(path),
            "entities": entities,
            "validation": [
                {"id": v.entity_id, "valid": v.valid, "errors": [p.to_dict() for p in v.errors],
                 "warnings": [p.to_dict() for p in v.warnings]}
                for v in verdicts
            ],
        })
    if args.format == "json":
        print(stdout_json(results, indent=2))
        return worst
    for result in results:
        print(f"# {result['payload']}")
        if "error" in result:
            err = result["error"]
            print(f"  untranslatable: {err['pointer'] or '/'}: {err['reason']}", file=sys.stdout)
            continue
        print(json.dumps(result["entities"], indent=2, ensure_ascii=False))
        for check in result["validation"]:
            state = "valid" if check["valid"] else "INVALID"
            print(f"  {check['id']}: {state}")
            for problem in check["errors"] + check["warnings"]:
                print(f"    {problem.get('pointer') or '/'}: {problem.get('message')}")
    return worst
