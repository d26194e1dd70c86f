"""Built-in ``jonction`` commands, one module each, each with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    """What each command's ``register(sub)`` receives (argparse's sub-command registry)."""


def stdout_json(document: Any, indent: int | None = 1) -> str:
    """JSON text for stdout: readable UTF-8 when stdout is UTF-8, ``\\u`` escapes otherwise.

    Escaping keeps the output valid JSON whatever the terminal's encoding (the CLI escapes what it
    cannot encode as ``\\xe9``, which JSON does not allow), and whatever the strings hold.
    """
    encoding = (sys.stdout.encoding or "").lower().replace("-", "").replace("_", "")
    return json.dumps(document, indent=indent, ensure_ascii=encoding != "utf8", default=str)
