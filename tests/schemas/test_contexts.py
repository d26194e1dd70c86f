"""The bundled @contexts: core facts, one IRI per jonction term, and every upstream conflict resolved."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import schemas
from schemas import contexts
from tests.conftest import REFERENCE, ROOT, needs_shared

SDM = REFERENCE / "smart-data-models"
CORE_PREFIXES = {"ngsi-ld": "https://uri.etsi.org/ngsi-ld/", "geojson": "https://purl.org/geojson/vocab#"}
CONFLICTS_FILE = ROOT / "schemas" / "contexts" / "conflicts.json"
CONFLICTS = json.loads(CONFLICTS_FILE.read_text(encoding="utf-8"))


def _iri(definition: Any, context: Mapping[str, Any]) -> str | None:
    value = definition if isinstance(definition, str) else definition.get("@id")
    if not isinstance(value, str):
        return None
    prefix, sep, rest = value.partition(":")
    if sep and not rest.startswith("//") and isinstance(context.get(prefix), str):
        return str(context[prefix]) + rest
    if sep and not rest.startswith("//") and prefix in CORE_PREFIXES:
        # Subject contexts lean on the core context's prefixes (ngsi-ld:, geojson:).
        return CORE_PREFIXES[prefix] + rest
    return value


def _subject_terms() -> dict[str, dict[str, str]]:
    """Subject -> term -> IRI, from the upstream subject @contexts."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted(SDM.glob("*/context.jsonld")):
        context = json.loads(path.read_text(encoding="utf-8"))["@context"]
        out[path.parent.name] = {
            t: iri for t, d in context.items() if not t.startswith("@") and (iri := _iri(d, context))
        }
    return out


@needs_shared
def test_core_context_has_the_published_facts() -> None:
    reference = json.loads((REFERENCE / "ngsi-ld" / "ngsi-ld-core-context-v1.9.jsonld").read_text())["@context"]
    expected = {t: _iri(d, reference) for t, d in reference.items() if not t.startswith("@")}
    assert dict(contexts.core_terms()) == {t: i for t, i in expected.items() if i is not None}
    ours = contexts.bundled_context(contexts.CORE_CONTEXT_IRI)
    assert ours is not None
    assert ours["@context"]["@protected"] is True
    assert contexts.core_terms()["observedAt"] == "https://uri.etsi.org/ngsi-ld/observedAt"
    assert contexts.bundled_context(contexts.CORE_CONTEXT_IRI_V1_8) == ours


def test_bundled_context_is_offline_and_a_copy() -> None:
    assert contexts.bundled_context("https://example.org/context.jsonld") is None
    first = contexts.bundled_context(contexts.JONCTION_CONTEXT_IRI)
    assert first is not None
    first["@context"]["fillingLevel"] = "tampered"
    again = contexts.bundled_context(contexts.JONCTION_CONTEXT_IRI)
    assert again is not None and again["@context"]["fillingLevel"] != "tampered"


def test_jonction_context_covers_every_model_term_once() -> None:
    jonction = contexts.jonction_terms()
    document = contexts.bundled_context(contexts.JONCTION_CONTEXT_IRI)
    assert document is not None
    # A JSON object cannot hold a term twice; and no jonction term shadows a core term.
    assert not set(jonction) & set(contexts.core_terms())
    missing = []
    for name in schemas.MODELS:
        for term in [name, *schemas.model(name).attributes]:
            if contexts.expand_term(term) is None:
                missing.append((name, term))
    assert missing == []


@needs_shared
def test_every_upstream_conflict_is_listed_and_resolved_as_listed() -> None:
    subjects = _subject_terms()
    core = contexts.core_terms()
    jonction = contexts.jonction_terms()
    found: dict[str, dict[str, str]] = {}
    for term in set(jonction) | {t for t in core if any(t in s for s in subjects.values())}:
        candidates = {s: terms[term] for s, terms in subjects.items() if term in terms}
        if term in core and candidates and set(candidates.values()) != {core[term]}:
            found[term] = candidates
        elif term not in core and len(set(candidates.values())) > 1:
            found[term] = candidates
    listed = CONFLICTS["conflicts"]
    report = "\n".join(
        f"{term}: {len(set(found[term].values()))} IRIs over {', '.join(sorted(found[term]))} -> "
        f"{listed.get(term, {}).get('chosen', 'UNRESOLVED')} ({listed.get(term, {}).get('reason', '')})"
        for term in sorted(found)
    )
    print(report)  # the resolution list, visible with -s
    assert set(found) == set(listed), report
    for term, entry in listed.items():
        assert entry["candidates"] == found[term], term
        chosen = core.get(term) or jonction.get(term)
        assert chosen == entry["chosen"], term
        assert entry["chosen"] in entry["candidates"].values() or entry["subject"] == "ngsi-ld-core", term
        assert entry["reason"], term


def test_listed_resolutions_are_what_the_context_says() -> None:
    """The committed conflict list and the committed @context agree (our own files, no upstream needed)."""
    core = contexts.core_terms()
    jonction = contexts.jonction_terms()
    for term, entry in CONFLICTS["conflicts"].items():
        assert (core.get(term) or jonction.get(term)) == entry["chosen"], term
        assert entry["reason"], term
    for term, entry in CONFLICTS["assigned"].items():
        assert jonction[term] == entry["chosen"], term


@needs_shared
def test_terms_without_upstream_iri_are_listed() -> None:
    subjects = _subject_terms()
    upstream = set().union(*subjects.values())
    assigned = {t for t in contexts.jonction_terms() if t not in upstream}
    assert assigned == set(CONFLICTS["assigned"])
    for term, entry in CONFLICTS["assigned"].items():
        assert contexts.jonction_terms()[term] == entry["chosen"]


@needs_shared
def test_context_files_are_what_the_rules_build() -> None:
    """Regenerate with ``python -m tests.schemas.build_context`` after adding a model."""
    from tests.schemas import build_context

    context, conflicts = build_context.build()
    assert build_context.render_context(context) == build_context.CONTEXT_FILE.read_text(encoding="utf-8")
    assert build_context.render_conflicts(conflicts) == CONFLICTS_FILE.read_text(encoding="utf-8")
