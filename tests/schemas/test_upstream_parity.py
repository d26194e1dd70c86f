"""Our schemas give the upstream examples the same verdict as the upstream schemas, side by side.

Where upstream is wrong, each case is listed with its reason; the lists must stay exact. These are
upstream cross-checks: they skip by name where ../shared is absent (our own examples are tested in
test_examples.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import schemas
from gateway.model import to_key_values
from gateway.validation import validate
from tests.conftest import needs_shared, shared_params
from tests.schemas.upstream import SDM, example, upstream_errors

pytestmark = needs_shared

KEY_VALUES = ("example.json", "example.jsonld")
NORMALIZED_LD = "example-normalized.jsonld"

UPSTREAM_WRONG: Mapping[tuple[str, str], str] = {
    ("AirQualityObserved", "example.json"): "dateObserved '2016-03-15T11:00:00' has no time zone; tsp 73.3 is "
    "not the integer the model requires",
    ("AirQualityObserved", "example.jsonld"): "dateObserved '2016-03-15T11:00:00' has no time zone",
    ("AirQualityObserved", NORMALIZED_LD): "dateObserved without time zone; tsp 73.3 not an integer; "
    "windDirection 186 above the model's maximum of 180",
    ("Junction", NORMALIZED_LD): "demandCategory and initialQuality use shapes the model does not define "
    "(a nested Property object, a bare number instead of an object)",
}
"""Examples both the upstream schemas and ours reject, and why upstream is wrong."""

OURS_STRICTER: Mapping[tuple[str, str], str] = {
    ("Pipe", NORMALIZED_LD): "wallCoeff carries unitCode 'RRC', which is not a UN/CEFACT Rec 20 common code; "
    "the upstream schema describes keyValues and never sees unitCode",
}
"""Examples the upstream schema accepts and our NGSI-LD validator rejects, and why."""

WITHOUT_REFERENCE: Mapping[str, str] = {
    "EVChargingStation": "no upstream copy in the reference folder: written from the published schema.json "
    "($schemaVersion 0.1.0), so nothing to compare side by side",
}
"""Supported models the side-by-side tests cannot cover, and why."""

COMPARED = shared_params(lambda: [name for name in schemas.MODELS if name not in WITHOUT_REFERENCE])
"""Models compared side by side, or one named skip where ../shared is absent."""


def _documents(name: str, filename: str) -> list[Any]:
    loaded = example(name, filename)
    return loaded if isinstance(loaded, list) else [loaded]


def _strip_context(document: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "@context"}


def _projected(entity: Mapping[str, Any]) -> dict[str, Any]:
    out = to_key_values(_strip_context(entity))
    return {k: v["@value"] if isinstance(v, Mapping) and "@value" in v else v for k, v in out.items()}


@pytest.mark.parametrize("name", COMPARED)
def test_key_values_examples_same_verdict_and_same_messages(name: str) -> None:
    spec = schemas.model(name)
    for filename in KEY_VALUES:
        for document in _documents(name, filename):
            ours = schemas.check_document(spec.schema, _strip_context(document))
            theirs = upstream_errors(name, _strip_context(document))
            assert bool(ours) == bool(theirs), (filename, ours, theirs)
            # Same findings: our messages are upstream's, prefixed with the JSON pointer.
            assert sorted(m.split(": ", 1)[1] for m in ours) == sorted(theirs), filename
            assert bool(theirs) == ((name, filename) in UPSTREAM_WRONG), (filename, theirs)


@pytest.mark.parametrize("name", COMPARED)
def test_normalized_examples_same_verdict(name: str) -> None:
    for entity in _documents(name, NORMALIZED_LD):
        verdict = validate(entity)
        theirs = upstream_errors(name, _projected(entity))
        key = (name, NORMALIZED_LD)
        if key in OURS_STRICTER:
            assert not verdict.valid and not theirs, verdict.errors
            continue
        assert verdict.valid == (not theirs), (verdict.errors, theirs)
        assert (not verdict.valid) == (key in UPSTREAM_WRONG), verdict.errors
        assert sorted(p.message.split(" (")[0] for p in verdict.errors) == sorted(theirs)


def test_every_model_without_reference_is_listed() -> None:
    missing = {name for name in schemas.MODELS if not any(SDM.glob(f"*/{name}/schema.json"))}
    assert missing == set(WITHOUT_REFERENCE)


def test_upstream_lists_name_real_examples() -> None:
    for name, filename in [*UPSTREAM_WRONG, *OURS_STRICTER]:
        assert name in schemas.MODELS
        assert _documents(name, filename)


@pytest.mark.parametrize("name", COMPARED)
def test_ngsi_v2_normalized_examples_are_refused_as_ngsi_ld(name: str) -> None:
    """example-normalized.json files are NGSI-v2: read as NGSI-LD, their v2 types are named."""
    path = next(SDM.glob(f"*/{name}/examples/example-normalized.json"))
    for entity in _documents(name, path.name):
        v2 = {k for k, v in entity.items() if isinstance(v, Mapping) and v.get("type") not in (None, "Property",
              "Relationship", "GeoProperty", "LanguageProperty", "ListProperty", "VocabProperty", "JsonProperty")}
        verdict = validate(entity)
        flagged = {p.pointer.split("/")[1] for p in verdict.errors if p.rule == "attribute-type"}
        assert flagged == v2, (flagged, v2)
