"""Normalization: URN ids, UTC times, unit symbols and legacy GeoJSON ``crs`` members."""

from __future__ import annotations

import pytest

from gateway.runtime.normalize import NormalizeError, normalize


def test_bare_id_times_units_and_crs_are_normalized() -> None:
    item = normalize({
        "id": "bin 7/A", "type": "WasteContainer",
        "temperature": {"type": "Property", "value": 21.5, "unitCode": "°C",
                        "observedAt": "2026-03-01T10:00:00.000+01:00"},
        "location": {"type": "GeoProperty", "value": {
            "type": "Point", "coordinates": [771020.0, 6279310.0],
            "crs": {"type": "name", "properties": {"name": "EPSG:2154"}}}},
    })
    assert item["id"] == "urn:ngsi-ld:WasteContainer:bin%207%2FA"
    assert item["temperature"]["observedAt"] == "2026-03-01T09:00:00Z"
    assert item["temperature"]["unitCode"] == "CEL"
    lon, lat = item["location"]["value"]["coordinates"]
    assert "crs" not in item["location"]["value"]
    assert 3.8 < lon < 3.95 and 43.55 < lat < 43.65  # Montpellier


def test_what_cannot_be_normalized_is_reported_with_a_pointer() -> None:
    with pytest.raises(NormalizeError) as info:
        normalize({"id": "urn:ngsi-ld:X:1", "type": "X",
                   "level": {"type": "Property", "value": 1, "observedAt": "yesterday"}})
    assert info.value.pointer == "/level/observedAt"
    with pytest.raises(NormalizeError) as info:
        normalize({"id": "urn:ngsi-ld:X:1", "type": "X", "location": {"type": "GeoProperty", "value": {
            "type": "Point", "coordinates": [1, 2], "crs": {"type": "link"}}}})
    assert info.value.pointer == "/location/value/crs"


def test_a_lone_surrogate_is_refused_with_its_pointer() -> None:
    """json.loads accepts "\\ud800"; no sink can store it as UTF-8, so it is one dead letter."""
    item = {"id": "urn:ngsi-ld:Streetlight:s1", "type": "Streetlight",
            "name": {"type": "Property", "value": "ok"},
            "status": {"type": "Property", "value": "ok", "note": {"type": "Property", "value": "x\ud800"}}}
    with pytest.raises(NormalizeError, match="lone UTF-16 surrogate") as info:
        normalize(item)
    assert info.value.pointer == "/status/note/value"
    big = {"id": "urn:ngsi-ld:Device:d1", "type": "Device", "n": {"type": "Property", "value": 2**70}}
    assert normalize(big)["n"]["value"] == 2**70  # beyond 64 bits is still valid JSON
