"""jonction's own configuration in an export: the gateway config and the files it names, secrets removed.

The YAML is exported as written (``${VARIABLE}`` references stay references), parsed to JSON; the
values of keys named like a credential (token, secret, password, api_key, credentials…) and the
passwords in URLs are replaced by a marker, and their JSON pointers listed in the manifest. Files
the config names (sharing policies, mappings, device lists: any YAML or JSON file it points to,
relative to the config's folder) travel with it, redacted the same way; files holding secrets
(``token_file``, ``password_file``…) never do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import yaml

from gateway.errors import ConfigInvalid
from gateway.reversibility.records import _SECRET_KEY, redact

MAX_CONFIG_FILE: Final = 16 * 1024 * 1024
_DOCUMENT_SUFFIXES: Final = (".yaml", ".yml", ".json", ".geojson")


def _load(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_CONFIG_FILE:
            raise ConfigInvalid(f"--config: {path} is larger than {MAX_CONFIG_FILE} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(f"--config: cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigInvalid(f"--config: {path} is not UTF-8 text ({exc.reason})") from exc
    try:
        return json.loads(text) if path.suffix.lower() in (".json", ".geojson") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigInvalid(f"--config: {path} is neither YAML nor JSON ({exc})") from exc


def _referenced(node: Any, base: Path) -> Iterator[Path]:
    """Existing YAML/JSON files named by string values of ``node`` (never under a secret-named key)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if _SECRET_KEY.search(str(key)):
                continue
            yield from _referenced(value, base)
    elif isinstance(node, list):
        for value in node:
            yield from _referenced(value, base)
    elif isinstance(node, str) and node.lower().endswith(_DOCUMENT_SUFFIXES) and "://" not in node and len(node) < 4096:
        candidate = (base / node).resolve()
        if candidate.is_file():
            yield candidate


def config_records(path: Path, removed: list[str]) -> Iterator[dict[str, Any]]:
    """The config file and the files it names, one record each: ``{"path", "document"}``, redacted."""
    root = path.resolve()
    base = root.parent
    seen: set[Path] = set()
    queue = [root]
    while queue:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        document = _load(current)
        try:
            name = current.relative_to(base).as_posix()
        except ValueError:
            name = current.name  # a file outside the config's folder: its name only
        yield {"path": name, "document": redact(document, f"config {name}#", removed)}
        queue.extend(p for p in _referenced(document, current.parent) if p not in seen)
