"""The process-wide register of secrets that must never be shown: logs, errors and API answers mask them.

Neutral ground: the adapter contract registers an adapter's secrets here and the runtime's
logging masks them, without either importing the other.
"""

from __future__ import annotations

from typing import Final

_SECRETS: set[str] = set()
MASK: Final = "***"
"""What a secret is replaced with."""


def register_secret(value: str | None) -> None:
    """Mask ``value`` in every log record from now on (tokens, passwords, client secrets)."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    return text
