"""Validate the checker's own documents (profiles, targets, reports) against their JSON Schemas."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of the JSON Schemas shipped in ``conformance/``."""
    doc: dict[str, Any] = json.loads(files("conformance").joinpath(name).read_text(encoding="utf-8"))
    return doc


def check_against(name: str, doc: Any) -> list[str]:
    """Every problem of ``doc`` against the shipped schema ``name``, as ``/pointer: message``."""
    schema = load_schema(name)
    try:
        from schemas import check_document  # the shared, offline validator (Draft 2020-12, formats)
    except ImportError:
        return _fallback(schema, doc)
    problems: list[str] = check_document(schema, doc)
    return problems


def _fallback(schema: dict[str, Any], doc: Any) -> list[str]:
    # Same rules as schemas.check_document (Draft 2020-12, format checking), for a source tree
    # where the schemas room's helper is not importable.
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        pointer = "".join(f"/{p}" for p in err.absolute_path)
        out.append(f"{pointer or '/'}: {err.message}")
    return out
