"""Templates: ``${field}`` in the strings of a JSON value, filled from the alert's fields (no eval).

A string that is exactly one ``${field}`` takes the field's value with its JSON type (a number stays
a number); elsewhere fields are written as text. An unknown field renders as the empty string.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

_FIELD: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render(template: Any, fields: Mapping[str, Any]) -> Any:
    """``template`` with every ``${field}`` replaced, recursively through objects and arrays."""
    if isinstance(template, str):
        whole = _FIELD.fullmatch(template)
        if whole is not None:
            return fields.get(whole.group(1), "")
        return _FIELD.sub(lambda m: _text(fields.get(m.group(1), "")), template)
    if isinstance(template, Mapping):
        return {str(k): render(v, fields) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, fields) for v in template]
    return template


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
