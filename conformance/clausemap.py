"""The clause map (check -> clauses of the standards), loaded from ``clauses.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class ClauseMap:
    """Documents, the CIM 009 clause catalogue and each check's references."""

    documents: dict[str, dict[str, str]]
    clauses: dict[str, dict[str, str]]
    checks: dict[str, list[str]]

    def references(self, check_id: str) -> list[str]:
        """The references of one check, e.g. ``["CIM009 §6.3.4"]``."""
        return list(self.checks.get(check_id, []))

    def cite(self, reference: str) -> str:
        """A reference written out in full (document title, version and clause)."""
        doc, _, section = reference.partition(" ")
        meta = self.documents.get(doc, {})
        if doc == "SDM" and section:
            return f"Smart Data Model {section} {_model_version(section)}".rstrip()
        title = meta.get("title", doc).split(" — ")[0]
        version = meta.get("version", "")
        name = self.clauses.get(doc, {}).get(section, "")
        text = " ".join(p for p in (title, version if version and version != "per model" else "", section) if p)
        return f"{text} ({name})" if name else text


def _model_version(name: str) -> str:
    try:
        import schemas

        return f"(schema {schemas.model(name).upstream_version})"
    except Exception:  # a model that is not bundled has no known version
        return ""


@cache
def clause_map() -> ClauseMap:
    """The shipped clause map."""
    doc: dict[str, Any] = yaml.safe_load(files("conformance").joinpath("clauses.yaml").read_text(encoding="utf-8"))
    return ClauseMap(documents=doc["documents"], clauses=doc["clauses"],
                     checks={k: list(v) for k, v in doc["checks"].items()})
