"""Every bundled model's terms expand as the official Smart Data Models @context of its subject says.

The jonction @context is one JSON-LD 1.0 context with one IRI per term, so that every broker can
process it (Scorpio's JSON-LD processor has no 1.1 type-scoped contexts, for instance). Where two
subjects' official contexts give one term two IRIs, only one can be kept: those are the deliberate
differences, each listed in ``schemas/contexts/conflicts.json`` with the reason of the choice. Any
other difference fails. Needs the upstream subject contexts (``../shared/reference``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import schemas
from schemas import contexts
from tests.conftest import REFERENCE, ROOT, needs_shared

SDM = REFERENCE / "smart-data-models"
CONFLICTS = json.loads((ROOT / "schemas" / "contexts" / "conflicts.json").read_text(encoding="utf-8"))["conflicts"]
CORE_PREFIXES = {"ngsi-ld": "https://uri.etsi.org/ngsi-ld/", "geojson": "https://purl.org/geojson/vocab#"}

pytestmark = needs_shared


def _iri(definition: Any, context: Mapping[str, Any]) -> str | None:
    value = definition if isinstance(definition, str) else definition.get("@id")
    if not isinstance(value, str):
        return None
    prefix, sep, rest = value.partition(":")
    if sep and not rest.startswith("//"):
        if isinstance(context.get(prefix), str):
            return str(context[prefix]) + rest
        if prefix in CORE_PREFIXES:  # subject contexts lean on the core context's prefixes
            return CORE_PREFIXES[prefix] + rest
    return value


def _upstream(subject: str) -> dict[str, str] | None:
    path = SDM / subject / "context.jsonld"
    if not path.is_file():
        return None
    context = json.loads(path.read_text(encoding="utf-8"))["@context"]
    return {t: iri for t, d in context.items() if not t.startswith("@") and (iri := _iri(d, context))}


def _differences() -> tuple[int, list[tuple[str, str, str, str]]]:
    """(terms compared, [(model, term, upstream IRI, our IRI)]) over every model with an upstream context."""
    compared, out = 0, []
    for name in sorted(schemas.MODELS):
        spec = schemas.model(name)
        upstream = _upstream(spec.upstream_subject)
        if upstream is None:
            continue
        for term in [name, *spec.attributes]:
            if term not in upstream:
                continue
            compared += 1
            ours = contexts.expand_term(term)
            if ours != upstream[term]:
                out.append((name, term, upstream[term], str(ours)))
    return compared, out


def test_every_model_type_expands_to_its_official_iri() -> None:
    checked = []
    for name in sorted(schemas.MODELS):
        upstream = _upstream(schemas.model(name).upstream_subject)
        if upstream is None or name not in upstream:
            continue
        assert contexts.expand_term(name) == upstream[name], name
        checked.append(name)
    assert len(checked) >= 20, checked


def test_attribute_iris_differ_only_where_listed_with_a_reason() -> None:
    compared, differences = _differences()
    assert compared > 300  # every attribute of every model with an upstream subject context
    report = "\n".join(f"{model}.{term}: upstream {up} -> kept {ours} ({CONFLICTS.get(term, {}).get('reason', '?')})"
                       for model, term, up, ours in differences)
    print(f"{len(differences)} deliberate differences over {compared} terms:\n{report}")  # visible with -s
    unlisted = [(m, t) for m, t, _, _ in differences if t not in CONFLICTS]
    assert unlisted == [], report
    for model, term, up, ours in differences:
        entry = CONFLICTS[term]
        # The kept IRI is another official subject's IRI for the same term, never an invented one.
        assert entry["chosen"] == ours, (model, term)
        assert up in entry["candidates"].values(), (model, term)
        assert ours in entry["candidates"].values(), (model, term)
        assert entry["reason"], (model, term)
