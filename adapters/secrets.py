"""Secrets in adapter configs: one rule for every adapter, never the secret itself in an error.

A secret ``key`` comes from ``<key>_file`` (the file's content, first), ``<key>_env`` (an
environment variable), or ``<key>`` itself, which may be a ``${VARIABLE}`` reference. Every
value read is registered for masking in the logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from gateway.contract import register_secret
from gateway.errors import ConfigInvalid

_ENV_REF: Final = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def read_secret(config: Mapping[str, Any], key: str, *, where: str = "", required: bool = False) -> str | None:
    """The secret ``key`` of ``config``; ConfigInvalid names the key, the file or the variable."""
    label = f"{where}{key}"
    value = _lookup(config, key, label)
    if value is None or value == "":
        if required:
            raise ConfigInvalid(f"{label} is required", [f"{label}: give {key}, {key}_file or {key}_env"])
        return None
    for part in value.split(","):  # a list of keys is masked key by key
        register_secret(part.strip())
    return value


def _lookup(config: Mapping[str, Any], key: str, label: str) -> str | None:
    path = config.get(f"{key}_file")
    if path:
        try:
            text = Path(str(path)).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigInvalid(f"cannot read {label}_file", [f"{label}_file: {exc.strerror}: {path}"]) from exc
        if not text:
            raise ConfigInvalid(f"{label}_file is empty", [f"{label}_file: empty file {path}"])
        return text
    variable = config.get(f"{key}_env")
    raw = config.get(key)
    if not variable and isinstance(raw, str) and (match := _ENV_REF.match(raw)):
        variable = match.group(1)
    if variable:
        found = os.environ.get(str(variable))
        if not found:
            raise ConfigInvalid(f"{label} refers to an unset variable",
                                [f"{label}: environment variable {variable} is unset"])
        return found
    if isinstance(raw, list):
        return ",".join(str(v) for v in raw)
    return None if raw is None else str(raw)
