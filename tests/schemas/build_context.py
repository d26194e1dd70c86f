"""Rebuild the jonction @context and its conflict list from the bundled schemas and the upstream subject @contexts.

Run ``python -m tests.schemas.build_context`` after adding a model to ``schemas/models/spec.yaml``
(and ``python -m schemas.generate``). It lives with the tests because it reads the read-only upstream
reference @contexts, which the product never does. The rules, which the committed files follow:

* terms: every model name, every attribute, every member nested under ``properties`` in a model
  schema, and the postal address members; minus the NGSI-LD core terms (core always wins);
* a term every upstream subject @context maps to one IRI keeps that IRI;
* a term upstream maps to several IRIs is a conflict: the subject of a supported model that has it
  as an attribute wins (the first alphabetically when several do), otherwise the first subject
  alphabetically; the choice and its reason are written to ``conflicts.json``;
* a term no upstream @context defines must already be listed under ``assigned`` (chosen by hand);
* a term already in the committed @context keeps its IRI: v1 of the context never changes a term.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import schemas
from schemas import contexts
from tests.schemas.test_contexts import SDM, _iri

CONTEXT_FILE = contexts.CONTEXTS_DIR / "jonction-context-v1.jsonld"
CONFLICTS_FILE = contexts.CONTEXTS_DIR / "conflicts.json"
ADDRESS_MEMBERS = ("addressCountry", "addressLocality", "addressRegion", "postOfficeBoxNumber", "postalCode",
                   "streetAddress", "streetNr")


def _nested(fragment: Any, out: set[str]) -> None:
    if isinstance(fragment, Mapping):
        for key, value in fragment.items():
            if key == "properties" and isinstance(value, Mapping):
                out.update(value)
            _nested(value, out)
    elif isinstance(fragment, list):
        for item in fragment:
            _nested(item, out)


def _subjects() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for path in sorted(SDM.glob("*/context.jsonld")):
        context = json.loads(path.read_text(encoding="utf-8"))["@context"]
        out[path.parent.name] = {
            t: iri for t, d in context.items() if not t.startswith("@") and (iri := _iri(d, context))
        }
    return out


def build() -> tuple[dict[str, Any], dict[str, Any]]:
    """The @context document and the conflicts document the rules give."""
    core = contexts.core_terms()
    previous = json.loads(CONFLICTS_FILE.read_text(encoding="utf-8"))
    committed = json.loads(CONTEXT_FILE.read_text(encoding="utf-8"))["@context"]
    attribute_subjects: dict[str, set[str]] = {}
    terms: set[str] = set(ADDRESS_MEMBERS)
    for name in schemas.MODELS:
        spec = schemas.model(name)
        for term in [name, *spec.schema["properties"]]:
            attribute_subjects.setdefault(term, set()).add(spec.upstream_subject)
            terms.add(term)
        for attribute in spec.schema["properties"].values():
            _nested(attribute, terms)
    subjects = _subjects()
    context: dict[str, str] = {}
    conflicts: dict[str, Any] = {}
    assigned: dict[str, Any] = {}
    for term in sorted(terms - set(core)):
        candidates = {s: t[term] for s, t in subjects.items() if term in t}
        iris = set(candidates.values())
        if not iris:
            if term not in previous["assigned"]:
                raise SystemExit(f"{term}: no upstream @context defines it; choose its IRI under 'assigned'")
            assigned[term] = previous["assigned"][term]
            context[term] = assigned[term]["chosen"]
            continue
        if len(iris) == 1:
            (context[term],) = iris
            continue
        owners = sorted(attribute_subjects.get(term, set()) & set(candidates))
        if owners:
            subject = owners[0]
            reason = f"defined as an attribute of a supported model of subject {subject}"
            if len(owners) > 1:
                reason += f"; first of {', '.join(owners)}"
        else:
            subject = min(candidates)
            reason = "only a nested member in supported models; first subject alphabetically"
        chosen = candidates[subject]
        if term in committed and committed[term] != chosen:
            # Keep v1 stable: the earlier choice stands, and says why.
            chosen = committed[term]
            subject = next(s for s, i in sorted(candidates.items()) if i == chosen)
            reason = previous["conflicts"][term]["reason"]
        conflicts[term] = {"chosen": chosen, "subject": subject, "reason": reason, "candidates": candidates}
        context[term] = chosen
    conflicts_document = {"description": previous["description"], "conflicts": conflicts, "assigned": assigned}
    return {"@context": context}, conflicts_document


def render_conflicts(document: Mapping[str, Any]) -> str:
    """conflicts.json as committed: one term per line."""

    def line(term: str, entry: Any) -> str:
        return f"  {json.dumps(term)}: {json.dumps(entry, ensure_ascii=False)}"

    parts = [f' "description": {json.dumps(document["description"], ensure_ascii=False)}']
    for key in ("conflicts", "assigned"):
        body = ",\n".join(line(t, e) for t, e in document[key].items())
        parts.append(f' "{key}": {{\n{body}\n }}')
    return "{\n" + ",\n".join(parts) + "\n}\n"


def render_context(document: Mapping[str, Any]) -> str:
    """The @context as committed: sorted terms, one per line."""
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    """Write both files."""
    context, conflicts = build()
    CONTEXT_FILE.write_text(render_context(context), encoding="utf-8")
    CONFLICTS_FILE.write_text(render_conflicts(conflicts), encoding="utf-8")
    print(f"{len(context['@context'])} terms, {len(conflicts['conflicts'])} conflicts, "
          f"{len(conflicts['assigned'])} assigned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
