"""Check texts in the reader's language: English in the catalogue, French in ``titles.fr.yaml`` and
``explain.fr.yaml``."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import yaml

from conformance.registry import catalogue


@cache
def _load(name: str) -> dict[str, str]:
    doc: dict[str, str] = yaml.safe_load(files("conformance").joinpath(name).read_text(encoding="utf-8"))
    return doc


def _french() -> dict[str, str]:
    return _load("titles.fr.yaml")


def title(check_id: str, lang: str = "en") -> str:
    """The title of a check in ``lang`` (fr or en); English when no translation exists."""
    chk = catalogue()[check_id]
    if lang != "fr":
        return chk.title
    if chk.model is not None:
        return f"Les entités de type {chk.model} respectent le Smart Data Model {chk.model}"
    return _french().get(check_id, chk.title)


def explain(check_id: str, lang: str = "en") -> str:
    """Why a check matters, in ``lang`` (fr or en); English when no translation exists."""
    chk = catalogue()[check_id]
    if lang != "fr":
        return chk.explain
    if chk.model is not None:
        return ("Suivre le modèle commun permet à toute application de réutiliser les données sans "
                "correspondance sur mesure.")
    return _load("explain.fr.yaml").get(check_id, chk.explain)
