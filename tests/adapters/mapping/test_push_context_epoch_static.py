"""The mapping language's push context ($query, $headers), epoch on any attribute, and static attributes."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.kit.mapping import apply_mapping, compile_mapping, item_tenant, map_item
from adapters.rest_mapping import RestMappingAdapter
from gateway.errors import ConfigInvalid, TranslationError
from gateway.validation import validate

DEVICE = {
    "entity_type": "AirQualityObserved",
    "id": "urn:ngsi-ld:AirQualityObserved:{$query.i}",
    "tenant": "$headers.Fiware-Service",
    "attributes": {
        "temperature": {"select": "t", "as": "number", "unit": "CEL"},
        "source": {"select": "$headers.X-Gateway-Name"},
        "dateObserved": {"select": "$query.t", "epoch": "s"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.8767, 43.6108]}},
    },
}


def _problems(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigInvalid) as caught:
        compile_mapping(doc)
    return list(caught.value.problems)


# --------------------------------------------------------------------------- $query and $headers


def test_query_and_header_values_reach_the_entity_and_header_names_ignore_case() -> None:
    mapping = compile_mapping(DEVICE)
    # The transport fills exactly these metadata keys (header names lower-cased), with where each is read.
    assert mapping.context == {"query.i": "/id", "headers.fiware-service": "/tenant",
                               "headers.x-gateway-name": "/attributes/source/select",
                               "query.t": "/attributes/dateObserved/select"}
    context = {"query.i": "sensor/7", "query.t": "1764756000", "headers.fiware-service": "openiot",
               "headers.x-gateway-name": "lora-gw-3"}
    entity = map_item(mapping, {"t": "21.5"}, context=context)
    assert entity["id"] == "urn:ngsi-ld:AirQualityObserved:sensor%2F7"  # still URN-escaped
    assert entity["temperature"] == {"type": "Property", "value": 21.5, "unitCode": "CEL"}
    assert entity["source"] == {"type": "Property", "value": "lora-gw-3"}
    assert entity["dateObserved"] == {"type": "Property", "value": "2025-12-03T10:00:00Z"}
    assert item_tenant(mapping, {}, context) == "openiot"
    assert validate(entity).valid, validate(entity).errors


def test_a_missing_query_parameter_in_the_id_is_a_translation_error() -> None:
    mapping = compile_mapping(DEVICE)
    with pytest.raises(TranslationError, match=r"id placeholder \{\$query.i\} is missing"):
        map_item(mapping, {"t": 1}, context={})
    # Without a push context (a file, a poll) the same selectors find nothing.
    assert item_tenant(mapping, {"Fiware-Service": "x"}) is None


@pytest.mark.parametrize("selector", ["$headers.Authorization", "$headers.webhook-signature", "$headers.Cookie",
                                      "$headers.X-API-Key", "$query.api_key", "$query.access_token"])
def test_credentials_are_never_given_to_a_mapping(selector: str) -> None:
    doc = {**DEVICE, "attributes": {"leak": {"select": selector}}}
    (problem,) = _problems(doc)
    assert problem.startswith("/attributes/leak/select: ") and "credential" in problem


def test_context_selectors_are_refused_where_they_make_no_sense_and_unknown_scopes_too() -> None:
    problems = _problems({**DEVICE, "items": "$query.list", "attributes": {"x": {"select": "$body.x"}}})
    assert any(p.startswith("/items: '$query.list' reads the push's query string") for p in problems), problems
    assert any(p.startswith("/attributes/x/select: '$body.x' is not a valid JMESPath expression") and
               "only $query.<name> and $headers.<name>" in p for p in problems), problems


def test_a_poll_adapter_refuses_a_mapping_that_reads_a_push_context() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        RestMappingAdapter({"url": "http://127.0.0.1:9/x", "mapping": DEVICE})
    problems = caught.value.problems
    assert "/mapping/id: the rest_mapping adapter receives no pushes, so $query and $headers selectors have " \
           "nothing to read" in problems
    assert len(problems) == 4 and all(p.startswith(("/mapping/id:", "/mapping/tenant:", "/mapping/attributes/"))
                                      for p in problems)


# --------------------------------------------------------------------------- epoch on any attribute


EPOCHS = {
    "entity_type": "Device",
    "items": "readings",
    "id": "urn:ngsi-ld:Device:{id}",
    "attributes": {
        "dateLastValueReported": {"select": "seen_ms", "epoch": "ms"},
        "dateInstalled": {"select": "installed", "epoch": "s"},
    },
}


def test_epoch_seconds_and_milliseconds_on_attributes_other_than_observed_at() -> None:
    (entity,) = apply_mapping(EPOCHS, {"readings": [{"id": "d1", "seen_ms": 1764756000250, "installed": "1700000000"}]})
    assert entity["dateLastValueReported"] == {"type": "Property", "value": "2025-12-03T10:00:00.250Z"}
    assert entity["dateInstalled"] == {"type": "Property", "value": "2023-11-14T22:13:20Z"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", r"'yesterday' is not a number \(epoch: s reads POSIX time in seconds\)"),
        (True, r"True is not a number"),
        (1764756000250, r"1764756000250 is out of range for epoch: s \(years 1 to 9999; ms given as s\?\)"),
        (-1e12, r"is out of range for epoch: s"),
    ],
)
def test_a_bad_epoch_value_names_the_item_the_attribute_and_its_pointer(value: Any, message: str) -> None:
    doc = {"readings": [{"id": "d0", "installed": 1}, {"id": "d1", "installed": value}]}
    with pytest.raises(TranslationError, match=message) as caught:
        apply_mapping(EPOCHS, doc)
    assert caught.value.reason.startswith("item 1: attribute 'dateInstalled' (select 'installed'): ")
    assert caught.value.pointer == "/readings/1/installed"


def test_epoch_conflicts_are_refused_when_the_mapping_is_loaded() -> None:
    problems = _problems({**EPOCHS, "attributes": {"c": {"select": "x", "epoch": "fortnight"}}})
    assert problems == ["/attributes/c/epoch: 'fortnight' is not one of ['s', 'ms']"]
    problems = _problems({**EPOCHS, "attributes": {
        "a": {"select": "x", "epoch": "s", "as": "number"},
        "b": {"select": "x", "epoch": "ms", "unit": "SEC"},
        "c": {"select": "x", "epoch": "s", "type": "Relationship"},
    }})
    assert any(p.startswith("/attributes/a/epoch: builds a date-time, which contradicts as: number") for p in problems)
    assert any(p.startswith("/attributes/b/epoch: cannot be combined with unit") for p in problems)
    assert any(p.startswith("/attributes/c/epoch: a date-time is the value of a Property") for p in problems)


# --------------------------------------------------------------------------- static attributes


STATIC = {
    "entity_type": "AirQualityObserved",
    "id": "urn:ngsi-ld:AirQualityObserved:{id}",
    "observed_at": {"select": "ts", "epoch": "ms"},
    "attributes": {
        "no2": {"select": "no2", "unit": "GQ"},
        "dateObserved": {"select": "ts", "epoch": "ms", "observed_at": False},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.8767, 43.6108]},
                     "observed_at": False},
        "areaServed": {"value": "Montpellier - Comédie", "observed_at": False},
        "typeofLocation": {"value": "outdoor"},
    },
}


def test_static_attributes_are_in_every_entity_and_not_shared_between_entities() -> None:
    mapping = compile_mapping(STATIC)
    first, second = apply_mapping(mapping, [{"id": "a", "no2": 30, "ts": 1764756000000},
                                            {"id": "b", "no2": 31, "ts": 1764756060000}])
    assert first["location"] == {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.8767, 43.6108]}}
    assert first["areaServed"] == {"type": "Property", "value": "Montpellier - Comédie"}
    # A static attribute still takes the mapping's observedAt unless it opts out.
    assert first["typeofLocation"] == {"type": "Property", "value": "outdoor", "observedAt": "2025-12-03T10:00:00Z"}
    assert second["typeofLocation"]["observedAt"] == "2025-12-03T10:01:00Z"
    first["location"]["value"]["coordinates"][0] = 0.0  # a later stage changing one entity in place...
    assert second["location"]["value"]["coordinates"] == [3.8767, 43.6108]  # ...leaves the others alone
    assert validate(second).valid, validate(second).errors


def test_a_static_location_in_another_crs_is_reprojected_once() -> None:
    doc = {**STATIC, "attributes": {"location": {"type": "GeoProperty", "crs": "EPSG:2154",
                                                 "value": {"type": "Point", "coordinates": [770500, 6279500]}}}}
    (entity,) = apply_mapping(doc, [{"id": "a", "ts": 1764756000000}])
    lon, lat = entity["location"]["value"]["coordinates"]
    assert 3.87 < lon < 3.89 and 43.60 < lat < 43.62


@pytest.mark.parametrize(
    ("attribute", "problem"),
    [
        ({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [43.6, 193.8]}},
         "/attributes/bad/value: /coordinates: (43.6, 193.8) is not a WGS84 longitude/latitude"),
        ({"type": "GeoProperty", "value": "43.6,3.8"}, "/attributes/bad/value: '43.6,3.8' is not a GeoJSON geometry"),
        ({"type": "GeoProperty", "value": {"type": "Circle", "coordinates": [3.8, 43.6]}},
         "/attributes/bad/value: /: 'Circle' is not a GeoJSON geometry type"),
        ({"type": "Relationship", "value": "station-12"}, "/attributes/bad/value: 'station-12' is not a URI"),
        ({"value": "twelve", "scale": 2}, "/attributes/bad/value: 'twelve' is not a number"),
        ({"value": "bleu", "map": {"rouge": "red"}}, "/attributes/bad/value: 'bleu' is not in the value map"),
        ({"value": None, "required": True}, "/attributes/bad/value: required value is missing"),
        ({"value": None, "default": None, "required": True},
         "/attributes/bad/value: a required attribute needs a constant value"),
        ({"type": "LanguageProperty", "value": "Comédie"}, "/attributes/bad/value: a LanguageProperty needs"),
    ],
)
def test_a_bad_static_attribute_is_refused_when_the_mapping_is_loaded(attribute: dict[str, Any], problem: str) -> None:
    problems = _problems({**STATIC, "attributes": {"no2": {"select": "no2"}, "bad": attribute}})
    assert any(p.startswith(problem) for p in problems), problems


def test_a_bad_static_attribute_in_a_source_config_is_named_under_mapping() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        RestMappingAdapter({"url": "http://127.0.0.1:9/x", "mapping": {
            **STATIC, "attributes": {"location": {"type": "GeoProperty", "value": {"type": "Point"}}}}})
    assert caught.value.problems[0].startswith("/mapping/attributes/location/value: /coordinates: None is not")
