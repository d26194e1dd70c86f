"""The bundled JSON-LD @contexts: NGSI-LD core (v1.8 and v1.9 terms) and jonction's merged context.

They are served and used locally; nothing here fetches a context from the network. A term the
core context defines always wins (the core context is protected).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

CORE_CONTEXT_IRI_V1_8: Final = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
CORE_CONTEXT_IRI: Final = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
"""The default core @context (NGSI-LD 1.9)."""
JONCTION_CONTEXT_IRI: Final = "https://jonction.eu/ns/context/v1.jsonld"
"""jonction's @context: one IRI per term of every supported Smart Data Model."""

CONTEXTS_DIR: Final = Path(__file__).resolve().parent / "contexts"
_FILES: Final[Mapping[str, str]] = {
    # One document carries the core terms of 1.8 and 1.9: 1.9 only added terms, so serving the
    # same term->IRI facts under both IRIs expands every 1.8 document identically.
    CORE_CONTEXT_IRI_V1_8: "ngsi-ld-core-context.jsonld",
    CORE_CONTEXT_IRI: "ngsi-ld-core-context.jsonld",
    JONCTION_CONTEXT_IRI: "jonction-context-v1.jsonld",
}
BUNDLED: Final[tuple[str, ...]] = tuple(_FILES)
"""IRIs of every bundled @context."""


@cache
def _document(filename: str) -> dict[str, Any]:
    document = json.loads((CONTEXTS_DIR / filename).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("@context"), dict):
        raise ValueError(f"{filename}: not a JSON-LD context document")
    return document


def bundled_context(iri: str) -> dict[str, Any] | None:
    """A fresh copy of the bundled @context document for ``iri``, or None (never fetched)."""
    filename = _FILES.get(iri)
    return None if filename is None else copy.deepcopy(_document(filename))


def _expand(value: str, context: Mapping[str, Any]) -> str:
    prefix, sep, rest = value.partition(":")
    if sep and not rest.startswith("//"):
        base = context.get(prefix)
        if isinstance(base, str):
            return base + rest
    return value


def _terms(filename: str) -> Mapping[str, str]:
    context = _document(filename)["@context"]
    out: dict[str, str] = {}
    for term, definition in context.items():
        if term.startswith("@"):
            continue
        iri = definition if isinstance(definition, str) else definition.get("@id")
        if isinstance(iri, str):
            out[term] = _expand(iri, context)
    return MappingProxyType(out)


@lru_cache(maxsize=1)
def core_terms() -> Mapping[str, str]:
    """Term -> full IRI of the NGSI-LD core @context (keywords like ``id`` map to ``@id``)."""
    return _terms(_FILES[CORE_CONTEXT_IRI])


@lru_cache(maxsize=1)
def jonction_terms() -> Mapping[str, str]:
    """Term -> full IRI of the jonction @context (exactly one IRI per term)."""
    return _terms(_FILES[JONCTION_CONTEXT_IRI])


CORE_VOCAB: Final = "https://uri.etsi.org/ngsi-ld/default-context/"
"""Where the core context's ``@vocab`` puts terms no context defines."""


def expand_term(term: str) -> str | None:
    """The IRI of ``term``: core first (it is protected), then jonction; None if neither has it."""
    return core_terms().get(term) or jonction_terms().get(term)


def inline_context(terms: Iterable[str]) -> dict[str, str]:
    """The slice of the jonction @context that defines ``terms`` (unknown terms are left out).

    A sink that sends the @context in the body (application/ld+json) sends this slice, not the
    whole document: every entity of a batch carries its own @context, and the whole one is ~45 kB.
    Core terms are never included: the core context always applies, last (CIM 009 §5.5.7).
    """
    known = jonction_terms()
    return {term: known[term] for term in sorted(set(terms)) if term in known}


@lru_cache(maxsize=1)
def _inverse() -> Mapping[str, str]:
    out: dict[str, str] = {}
    for term, iri in sorted(jonction_terms().items()):
        out.setdefault(iri, term)
    return MappingProxyType(out)


def compact_iri(iri: str) -> str:
    """The jonction term of ``iri`` (or the name under the core default vocabulary); else ``iri`` itself.

    The offline inverse of :func:`expand_term` for what a broker answers without a @context: it
    compacts Smart Data Model IRIs with the core context only, so they come back in full.
    """
    term = _inverse().get(iri)
    if term is not None:
        return term
    if iri.startswith(CORE_VOCAB) and len(iri) > len(CORE_VOCAB):
        return iri[len(CORE_VOCAB):]
    return iri
