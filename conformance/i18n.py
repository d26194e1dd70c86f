"""Check titles in the reader's language: English in the catalogue, French in ``titles.fr.yaml``."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import yaml

from conformance.registry import catalogue


@cache
def _french() -> dict[str, str]:
    doc: dict[str, str] = yaml.safe_load(files("conformance").joinpath("titles.fr.yaml").read_text(encoding="utf-8"))
    return doc


def title(check_id: str, lang: str = "en") -> str:
    """The title of a check in ``lang`` (fr or en); English when no translation exists."""
    chk = catalogue()[check_id]
    if lang != "fr":
        return chk.title
    if chk.model is not None:
        return f"Les entités de type {chk.model} respectent le Smart Data Model {chk.model}"
    return _french().get(check_id, chk.title)
