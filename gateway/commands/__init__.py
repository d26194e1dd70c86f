"""Built-in ``jonction`` commands, one module each, each with ``register(subparsers)``."""

from __future__ import annotations

import json
import sys
from typing import Any


def stdout_json(document: Any, indent: int | None = 1) -> str:
    """JSON text for stdout: readable UTF-8 when stdout is UTF-8, ``\\u`` escapes otherwise.

    Escaping keeps the output valid JSON whatever the terminal's encoding (the CLI escapes what it
    cannot encode as ``\\xe9``, which JSON does not allow), and whatever the strings hold.
    """
    encoding = (sys.stdout.encoding or "").lower().replace("-", "").replace("_", "")
    return json.dumps(document, indent=indent, ensure_ascii=encoding != "utf8", default=str)
