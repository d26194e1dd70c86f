"""The small typed error hierarchy shared by every room, mapped at the boundaries.

Each error knows its CLI exit code and the HTTP status it maps to; the pipeline turns
``TranslationError`` and ``InvalidEntity`` into dead letters instead of crashing.
"""

from __future__ import annotations


class JonctionError(Exception):
    """Base of every error jonction raises on purpose."""

    exit_code: int = 2
    http_status: int = 500


class ConfigInvalid(JonctionError):
    """Configuration that does not validate; ``problems`` lists every error found."""

    http_status = 400

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or [message]
        super().__init__(message if problems is None else message + ":\n  " + "\n  ".join(problems))


class InputError(JonctionError):
    """Input that cannot be used at all (unreadable file, not JSON, too large, too deep)."""

    http_status = 400


class AuthFailed(JonctionError):
    """A source or sink refused our credentials, or a caller presented none."""

    http_status = 401


class Unavailable(JonctionError):
    """A source or sink cannot be reached for now; retry with backoff."""

    http_status = 503


class TranslationError(JonctionError):
    """A payload an adapter cannot translate; becomes a dead letter with this reason."""

    exit_code = 1
    http_status = 422

    def __init__(self, reason: str, pointer: str = "") -> None:
        # Both quote the input, which may hold a lone UTF-16 surrogate; a dead letter stores UTF-8.
        self.reason = _utf8(reason)
        self.pointer = _utf8(pointer)
        super().__init__(f"{pointer}: {reason}" if pointer else reason)


def _utf8(text: str) -> str:
    """``text`` with any lone surrogate written as its escape, so that it encodes as UTF-8."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class InvalidEntity(JonctionError):
    """An entity that fails NGSI-LD or Smart Data Model validation."""

    exit_code = 1
    http_status = 400


class UnknownAdapter(JonctionError):
    """No adapter of that name is installed."""
