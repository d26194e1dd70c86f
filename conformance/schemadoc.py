"""Validate the checker's own documents (profiles, targets, reports) against their JSON Schemas."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from schemas import check_document


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of the JSON Schemas shipped in ``conformance/``."""
    doc: dict[str, Any] = json.loads(files("conformance").joinpath(name).read_text(encoding="utf-8"))
    return doc


def check_against(name: str, doc: Any) -> list[str]:
    """Every problem of ``doc`` against the shipped schema ``name``, as ``/pointer: message``.

    The one validator the gateway uses too (Draft 2020-12, format checking, offline registry).
    """
    return check_document(load_schema(name), doc)
