"""Structured JSON logs carrying one correlation id from raw message to broker request.

Secrets registered with :func:`gateway.secrets.register_secret` are masked in every record, whatever the
logger, so that a token pasted into an error message never reaches the log stream.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any, Final, TextIO

# Re-exported: the masking registry lives with the secrets (gateway.secrets); callers that
# import it from here keep working.
from gateway.secrets import redact as redact
from gateway.secrets import register_secret as register_secret

correlation_id: Final[contextvars.ContextVar[str]] = contextvars.ContextVar("correlation_id", default="")
"""The correlation id of the message or batch being handled in the current task."""

_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, correlation id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line with secrets masked."""
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid = getattr(record, "correlation_id", None) or correlation_id.get()
        if cid:
            doc["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc and not key.startswith("_"):
                doc[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            doc["error"] = f"{type(exc).__name__}: {exc}"
        return redact(json.dumps(doc, default=str, ensure_ascii=False))


LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
"""Log levels a user may choose (``--log-level``, ``log_level:``), case-insensitive."""
OWN_LOGGERS: Final = ("jonction", "gateway", "adapters", "conformance", "schemas", "bench")
"""Logger name prefixes of jonction itself; every other logger is a third-party library's."""


def parse_level(value: str) -> str:
    """The canonical name of a log level; ValueError names the accepted ones."""
    name = str(value).strip().upper()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {value!r} (choose one of {', '.join(n.lower() for n in LEVELS)})")
    return name


class ThirdPartyFilter(logging.Filter):
    """Let third-party libraries through at WARNING and above only, unless the level is DEBUG.

    asyncua, for one, writes over a thousand INFO lines in its first second: noise to an operator.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep jonction's records, warnings and worse, and everything at DEBUG."""
        if record.levelno >= logging.WARNING or logging.getLogger().level <= logging.DEBUG:
            return True
        name = record.name
        return any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS)


def quiet_third_party(handler: logging.Handler) -> None:
    """Install :class:`ThirdPartyFilter` on ``handler`` (once)."""
    if not any(isinstance(f, ThirdPartyFilter) for f in handler.filters):
        handler.addFilter(ThirdPartyFilter())


_SERVER_LOGGER: Final = "aiohttp.server"
"""Where aiohttp logs requests it could not parse (oversized request line or headers, bad syntax)."""


class MalformedRequestFilter(logging.Filter):
    """Turn aiohttp's report of an unparsable request into one WARNING line without a traceback.

    aiohttp answers such a request itself (400, or 431 for headers) and then logs it with the full
    traceback and the offending bytes, 64 KiB of them for an oversized request line: a client could
    fill the log at will. The record keeps the peer, the status and the parser's reason, cut short.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite records carrying an HTTP parsing error; let every other record through unchanged."""
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not any(c.__name__ == "HttpProcessingError" for c in type(exc).__mro__):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        reason = str(getattr(exc, "message", "") or type(exc).__name__)
        reason = " ".join(reason.split(":", 1)[0].split())[:160]
        record.msg = "refused a malformed HTTP request from %s: %s %s (%s)"
        record.args = (peer, getattr(exc, "code", 400), type(exc).__name__, reason)
        record.exc_info = None
        record.exc_text = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_malformed_requests() -> None:
    """Install :class:`MalformedRequestFilter` on aiohttp's server logger (once; idempotent)."""
    server = logging.getLogger(_SERVER_LOGGER)
    if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
        server.addFilter(MalformedRequestFilter())


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route the root logger to one JSON-lines handler (replacing earlier handlers)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    quiet_third_party(handler)
    root.addHandler(handler)
    root.setLevel(logging.getLevelNamesMapping().get(level.upper(), logging.INFO))
    # aiohttp's access log is one line per request: too chatty at the gateway's rates.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    quiet_malformed_requests()
