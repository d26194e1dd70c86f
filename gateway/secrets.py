"""Secrets: one resolver for the gateway config, the store's tokens and adapter configs.

A secret ``key`` comes from ``<key>_file`` (the file's content, first), ``<key>_env`` (an
environment variable), or ``<key>`` itself, which may be a ``${VARIABLE}`` reference or a list
(joined with commas). Every value read is registered for masking (:func:`redact`, which the log formatter applies to
every record); an error names the key, the file or the variable, never the secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from gateway.errors import ConfigInvalid

_ENV_REF: Final = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_SECRETS: set[str] = set()
# Longest first: a secret that contains another (a token that starts with a client id) is masked
# whole, not left with its tail showing.
_ORDER: list[str] = []
_MASK: Final = "***"


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every log record from now on (tokens, passwords, client secrets)."""
    if value and len(value) >= 4 and value not in _SECRETS:
        _SECRETS.add(value)
        _ORDER[:] = sorted(_SECRETS, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _ORDER:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def mask(value: str | None) -> None:
    """Mask ``value`` in every log record from now on (a comma-separated list key by key)."""
    if not value:
        return
    register_secret(value)
    if "," in value:
        for part in value.split(","):
            register_secret(part.strip())


def from_file(path: str | Path, label: str, *, base: Path | None = None, allow_empty: bool = False,
              strip: bool = True) -> str:
    """The (stripped) content of a secret file, relative to ``base``; ConfigInvalid names ``label`` and the file."""
    where = Path(str(path))
    if base is not None and not where.is_absolute():
        where = base / where
    try:
        text = where.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(f"cannot read {label}", [f"{label}: {exc.strerror}: {path}"]) from exc
    if strip:
        text = text.strip()
    if not text.strip() and not allow_empty:
        raise ConfigInvalid(f"{label} is empty", [f"{label}: empty file {path}"])
    return text


def from_env(variable: str, label: str, *, environ: Mapping[str, str] | None = None,
             required: bool = True) -> str | None:
    """The value of an environment variable; ConfigInvalid names ``label`` and the variable when it is unset."""
    found = (os.environ if environ is None else environ).get(variable, "")
    if not found:
        if required:
            raise ConfigInvalid(f"{label} refers to an unset variable",
                                [f"{label}: environment variable {variable} is unset"])
        return None
    return found


def read_secret(config: Mapping[str, Any], key: str, *, where: str = "", required: bool = False,
                base: Path | None = None) -> str | None:
    """The secret ``key`` of ``config`` (file, then variable, then value), masked in logs; None when absent."""
    label = f"{where}{key}"
    value = _lookup(config, key, label, base)
    if value is None or value == "":
        if required:
            raise ConfigInvalid(f"{label} is required", [f"{label}: give {key}, {key}_file or {key}_env"])
        return None
    mask(value)
    return value


def _lookup(config: Mapping[str, Any], key: str, label: str, base: Path | None) -> str | None:
    path = config.get(f"{key}_file")
    if path:
        return from_file(str(path), f"{label}_file", base=base)
    variable = config.get(f"{key}_env")
    raw = config.get(key)
    if not variable and isinstance(raw, str) and (match := _ENV_REF.match(raw)):
        variable = match.group(1)
    if variable:
        return from_env(str(variable), label)
    if isinstance(raw, list):
        return ",".join(str(v) for v in raw)
    return None if raw is None else str(raw)
