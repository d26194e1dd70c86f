"""``gateway.validation.validate`` on hostile input: never raises, flags what cannot be stored with a pointer."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.validation import INTEGER_RANGE, validate

BASE = {"id": "urn:ngsi-ld:WasteContainer:h1", "type": "WasteContainer",
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5.7, 45.2]}}}


def resolve(document: Any, pointer: str) -> Any:
    """The value a JSON pointer names."""
    node = document
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10**5000, -(10**5000), INTEGER_RANGE,
                                 -INTEGER_RANGE - 1],
                         ids=["nan", "inf", "-inf", "5000-digits", "-5000-digits", "2**63", "-2**63-1"])
def test_numbers_that_cannot_be_stored_are_errors_at_their_pointer(bad: float | int) -> None:
    entity: dict[str, Any] = {**BASE, "fillingLevel": {"type": "Property", "value": bad}}
    verdict = validate(entity)
    assert not verdict.valid
    numbers = [p for p in verdict.errors if p.rule == "number"]
    assert [p.pointer for p in numbers] == ["/fillingLevel/value"]
    assert all(len(p.message) < 200 for p in verdict.errors)  # a 5,000-digit integer is never printed
    # the entity itself was not modified by the check
    assert entity["fillingLevel"]["value"] is bad


def test_in_range_numbers_are_fine() -> None:
    for good in (0, 1, -1, INTEGER_RANGE - 1, -INTEGER_RANGE, 1e308, -1e-308, 0.5):
        extra = {"type": "Property", "value": good}
        verdict = validate({**BASE, "fillingLevel": {"type": "Property", "value": 0.5}, "extra": extra})
        assert not [p for p in verdict.errors if p.rule == "number"], good


def test_deep_places_and_positions_are_reached() -> None:
    location = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [math.nan, 45.0]}}
    level = {"type": "Property", "value": 0.5, "quality": {"type": "Property", "value": [1, math.inf]}}
    entity = {**BASE, "location": location, "fillingLevel": level}
    pointers = {p.pointer for p in validate(entity).errors if p.rule == "number"}
    assert pointers == {"/location/value/coordinates/0", "/fillingLevel/quality/value/1"}


def test_lone_surrogates_are_errors() -> None:
    verdict = validate({**BASE, "id": "urn:ngsi-ld:WasteContainer:\ud800"})
    assert any(p.pointer == "/id" and p.rule == "unicode" for p in verdict.errors)


def test_deep_nesting_is_one_error_not_a_recursion_error() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(20_000):
        node["a"] = {}
        node = node["a"]
    verdict = validate({**BASE, "blob": {"type": "JsonProperty", "json": deep}})
    assert not verdict.valid
    assert [p.rule for p in verdict.errors if p.pointer.startswith("/blob")] == ["nesting"]


def test_mappings_and_tuples_are_walked_too() -> None:
    entity = OrderedDict(BASE)
    entity["fillingLevel"] = OrderedDict(type="Property", value=(0.5, math.nan))
    assert [p.pointer for p in validate(entity).errors if p.rule == "number"] == ["/fillingLevel/value/1"]


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(st.characters(codec=None), max_size=5)
    | st.builds(lambda: -(10**5000))  # built, not listed: hypothesis cannot print it
    | st.sampled_from(["\udc80", "urn:ngsi-ld:X:1", "Property", "GeoProperty", "Point"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "value", "object", "coordinates", "unitCode", "observedAt", "datasetId", "x"]),
        inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(attrs=st.dictionaries(st.text(max_size=6), JSONISH, max_size=4), id_=JSONISH, type_=JSONISH)
def test_validate_never_raises_and_every_number_problem_points_at_a_bad_number(attrs: dict[str, Any], id_: Any,
                                                                               type_: Any) -> None:
    entity = {**attrs, "id": id_, "type": type_}
    verdict = validate(entity)
    for problem in verdict.errors:
        if problem.rule == "number":
            value = resolve(entity, problem.pointer)
            assert isinstance(value, float | int)
            finite = not isinstance(value, float) or math.isfinite(value)
            assert not finite or not -INTEGER_RANGE <= value < INTEGER_RANGE
