"""Entity model: URN ids, UTC times and lossless normalized <-> concise conversions."""

from __future__ import annotations

import pytest

from gateway.model import (
    ModelError,
    entity,
    from_concise,
    from_key_values,
    geo,
    is_uri,
    json_prop,
    lang_prop,
    list_prop,
    point,
    prop,
    rel,
    to_concise,
    to_key_values,
    urn,
    utc_time,
    vocab_prop,
)


def test_urn_escapes_unsafe_characters() -> None:
    assert urn("WasteContainer", "bin 12/A#3") == "urn:ngsi-ld:WasteContainer:bin%2012%2FA%233"
    assert urn("Device", "a84041000181c6f1") == "urn:ngsi-ld:Device:a84041000181c6f1"
    assert is_uri(urn("Streetlight", "é"))
    with pytest.raises(ModelError):
        urn("Bad Type", "x")
    with pytest.raises(ModelError):
        urn("Device", "")


def test_times_are_normalized_to_utc_and_require_a_zone() -> None:
    assert utc_time("2024-03-01T10:15:00+01:00") == "2024-03-01T09:15:00Z"
    assert utc_time("2024-03-01T10:15:00.250-02:00") == "2024-03-01T12:15:00.250Z"
    assert utc_time("2024-03-01T10:15:00.000001Z") == "2024-03-01T10:15:00.000001Z"
    with pytest.raises(ModelError, match="time zone"):
        utc_time("2024-03-01T10:15:00")
    with pytest.raises(ModelError):
        utc_time("yesterday")


def _rich_entity() -> dict[str, object]:
    return entity(
        "WasteContainer",
        urn("WasteContainer", "w1"),
        fillingLevel=prop(0.75, unit="C62", observed_at="2024-03-01T10:00:00+01:00",
                          quality=prop("good")),
        temperature=[prop(12.5, unit="CEL", dataset_id="urn:ngsi-ld:Dataset:a"),
                     prop(13.0, unit="CEL", dataset_id="urn:ngsi-ld:Dataset:b")],
        refDevice=rel("urn:ngsi-ld:Device:d1"),
        location=geo(point(2.35, 48.85)),
        name=lang_prop({"fr": "Conteneur", "en": "Container"}),
        category=vocab_prop("wasteContainer"),
        steps=list_prop([1, 2, 3]),
        raw=json_prop({"type": "not-an-attribute", "value": 3}),
        address=prop({"streetAddress": "1 rue de la Paix"}),
        tags=prop(["a", "b"]),
    )


def test_concise_round_trip_is_lossless() -> None:
    normalized = _rich_entity()
    concise = to_concise(normalized)
    assert concise["refDevice"] == {"object": "urn:ngsi-ld:Device:d1"}
    assert concise["location"] == {"type": "Point", "coordinates": [2.35, 48.85]}
    assert concise["category"] == {"vocab": "wasteContainer"}
    assert concise["fillingLevel"]["quality"] == "good"
    assert from_concise(concise) == normalized


def test_key_values_projection_and_back_with_model_types() -> None:
    kv = to_key_values(_rich_entity())
    assert kv["fillingLevel"] == 0.75
    # §4.5.4: a multi-attribute is keyed by datasetId under "dataset" (@none: the default one)
    assert kv["temperature"] == {"dataset": {"urn:ngsi-ld:Dataset:a": 12.5, "urn:ngsi-ld:Dataset:b": 13.0}}
    assert kv["refDevice"] == "urn:ngsi-ld:Device:d1"
    assert kv["name"] == {"fr": "Conteneur", "en": "Container"}
    back = from_key_values({"id": "urn:ngsi-ld:X:1", "type": "X", "refDevice": "urn:ngsi-ld:Device:d1",
                            "location": {"type": "Point", "coordinates": [1, 2]}, "n": 3},
                           {"refDevice": "Relationship"})
    assert back["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:d1"}
    assert back["location"]["type"] == "GeoProperty"
    assert back["n"] == {"type": "Property", "value": 3}


def test_entity_requires_uri_id() -> None:
    with pytest.raises(ModelError, match="not a URI"):
        entity("Device", "device 1")
