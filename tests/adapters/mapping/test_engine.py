"""The declarative mapping language: checking (all problems at once) and pure translation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.kit.mapping import apply_mapping, compile_mapping, item_tenant, load_mapping, load_yaml
from gateway.errors import ConfigInvalid, TranslationError
from gateway.validation import validate

ROOT = Path(__file__).resolve().parents[3]


def _mapping(**attributes: Any) -> dict[str, Any]:
    return {"entity_type": "Streetlight", "id": "urn:ngsi-ld:Streetlight:{ref}", "items": "rows",
            "attributes": attributes or {"status": {"value": "ok"}}}


def test_every_problem_is_reported_together_naming_the_key() -> None:
    doc = {
        "entity_type": "Streetlight",
        "id": "Streetlight-{ref}",
        "items": "rows[",
        "timezone": "Europe/Lutece",
        "colour": "blue",
        "attributes": {
            "location": {"point": {"x": "x"}, "crs": "EPSG:99999"},
            "powerState": {"select": "a", "value": "b"},
            "illuminanceLevel": {"select": "dim", "from_unit": "furlong", "unit": "KWH"},
            "lifetimePowerConsumption": {"select": "e", "unit": "kWh-ish"},
            "refStreetlightGroup": {"type": "Relationship", "select": "g", "scale": 2},
            "status": {"select": "s", "as": "colour"},
        },
    }
    with pytest.raises(ConfigInvalid) as caught:
        compile_mapping(doc)
    problems = caught.value.problems
    # Structural problems come first (JSON Schema), each naming its key...
    assert any(p.startswith("/: Additional properties") and "colour" in p for p in problems)
    assert any(p.startswith("/attributes/status/as:") for p in problems)
    # ...then, once the structure is right, the meaning is checked the same way.
    doc.pop("colour")
    doc["attributes"]["status"] = {"select": "s"}  # type: ignore[index]
    with pytest.raises(ConfigInvalid) as caught:
        compile_mapping(doc)
    problems = caught.value.problems
    expected = [
        "/id: the template must build a URI",
        "/items: 'rows[' is not a valid JMESPath",
        "/timezone: unknown time zone 'Europe/Lutece'",
        "/attributes/location/point: give either x and y, or xy",
        "/attributes/location/crs: unknown coordinate reference system 'EPSG:99999'",
        "/attributes/powerState: give exactly one of select, value, point or geometry (found select, value)",
        "/attributes/illuminanceLevel/from_unit: unknown unit 'furlong'",
        "/attributes/lifetimePowerConsumption/unit: 'kWh-ish' is not a UN/CEFACT common code",
        "/attributes/refStreetlightGroup: scale, offset, from_unit and round apply to a Property's number",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)


def test_yaml_vendor_codes_stay_strings() -> None:
    doc = load_yaml("map: {ON: ok, OFF: 'off', yes: 1, true: t}\n")
    assert doc == {"map": {"ON": "ok", "OFF": "off", "yes": 1, True: "t"}}


def test_id_template_escapes_the_local_part() -> None:
    mapping = _mapping(status={"value": "ok"})
    rows = {"rows": [{"ref": "rue de la Paix/12"}, {"ref": 42}, {"ref": "a:b%c"}]}
    ids = [e["id"] for e in apply_mapping(mapping, rows)]
    assert ids == [
        "urn:ngsi-ld:Streetlight:rue%20de%20la%20Paix%2F12",
        "urn:ngsi-ld:Streetlight:42",
        "urn:ngsi-ld:Streetlight:a:b%25c",
    ]


def test_id_template_outside_ngsi_urns_escapes_each_placeholder() -> None:
    mapping = {**_mapping(), "id": "https://data.example.fr/lampadaires/{commune}/{ref}"}
    (entity,) = apply_mapping(mapping, {"rows": [{"commune": "34172", "ref": "A B"}]})
    assert entity["id"] == "https://data.example.fr/lampadaires/34172/A%20B"


def test_missing_id_value_names_the_item_and_placeholder() -> None:
    with pytest.raises(TranslationError) as caught:
        apply_mapping(_mapping(), {"rows": [{"ref": "a"}, {"other": 1}]})
    assert caught.value.reason == "item 1: id placeholder {ref} is missing"
    assert caught.value.pointer == "/rows/1/ref"


def test_value_map_type_scale_units_and_rounding() -> None:
    mapping = _mapping(
        powerState={"select": "state", "map": {"ON": "on", "OFF": "off", "DIM": "low"}},
        status={"select": "state", "map": {"FAULT": "defectiveLamp"}, "map_default": "ok"},
        illuminanceLevel={"select": "level", "as": "number", "scale": 0.01},
        lifetimePowerConsumption={"select": "wh", "from_unit": "Wh", "unit": "KWH", "round": 2},
        lanternHeight={"select": "height_cm", "from_unit": "cm", "unit": "MTR"},
        circuit={"select": "circuit", "as": "string"},
    )
    row = {"ref": "1", "state": "DIM", "level": "57", "wh": 123456, "height_cm": "850", "circuit": 7}
    (entity,) = apply_mapping(mapping, {"rows": [row]})
    assert entity["powerState"]["value"] == "low"
    assert entity["status"]["value"] == "ok"
    assert entity["illuminanceLevel"]["value"] == 0.57
    assert entity["lifetimePowerConsumption"] == {"type": "Property", "value": 123.46, "unitCode": "KWH"}
    assert entity["lanternHeight"] == {"type": "Property", "value": 8.5, "unitCode": "MTR"}
    assert entity["circuit"]["value"] == "7"


def test_unmapped_value_names_item_attribute_and_selector() -> None:
    mapping = _mapping(powerState={"select": "etat.code", "map": {"ON": "on"}})
    with pytest.raises(TranslationError) as caught:
        apply_mapping(mapping, {"rows": [{"ref": 1, "etat": {"code": "ON"}}, {"ref": 2, "etat": {"code": "??"}}]})
    assert caught.value.reason == (
        "item 1: attribute 'powerState' (select 'etat.code'): '??' is not in the value map (ON)"
    )
    assert caught.value.pointer == "/rows/1/etat/code"


def test_null_map_target_omits_the_attribute_and_missing_values_are_skipped() -> None:
    mapping = _mapping(status={"select": "s", "map": {"X": None, "OK": "ok"}}, circuit={"select": "c"})
    (entity,) = apply_mapping(mapping, {"rows": [{"ref": 1, "s": "X"}]})
    assert entity == {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight"}


def test_required_default_and_pattern() -> None:
    mapping = _mapping(
        circuit={"select": "c", "default": "C-0"},
        name={"select": "n", "required": True, "pattern": "[A-Z]{3}-[0-9]+"},
    )
    (entity,) = apply_mapping(mapping, {"rows": [{"ref": 1, "n": "ABC-1"}]})
    assert entity["circuit"]["value"] == "C-0"
    with pytest.raises(TranslationError, match="required value is missing"):
        apply_mapping(mapping, {"rows": [{"ref": 1}]})
    with pytest.raises(TranslationError, match="does not match the pattern"):
        apply_mapping(mapping, {"rows": [{"ref": 1, "n": "abc"}]})


def test_not_a_number_is_an_error_with_its_value() -> None:
    mapping = _mapping(lanternHeight={"select": "h", "as": "number"})
    with pytest.raises(TranslationError) as caught:
        apply_mapping(mapping, {"rows": [{"ref": 1, "h": "N/A"}]})
    assert caught.value.reason == "item 0: attribute 'lanternHeight' (select 'h'): 'N/A' is not a number"


def test_decimal_comma_and_booleans_in_french() -> None:
    mapping = _mapping(lanternHeight={"select": "h", "as": "number"}, dimmable={"select": "d", "as": "boolean"})
    (entity,) = apply_mapping(mapping, {"rows": [{"ref": 1, "h": "8,5", "d": "oui"}]})
    assert entity["lanternHeight"]["value"] == 8.5
    assert entity["dimmable"]["value"] is True


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ("t", "2025-01-15T01:02:28+01:00", "2025-01-15T00:02:28Z"),
        ("t", "2022-10-18T12:35:49+0000", "2022-10-18T12:35:49Z"),
        ("t", "2025-01-15T00:02:28.123456789Z", "2025-01-15T00:02:28.123456Z"),
        ("t", "2025-07-01T12:00:00", "2025-07-01T10:00:00Z"),  # naive: the mapping's timezone (summer)
        ("t", "2025-01-01 12:00", "2025-01-01T11:00:00Z"),
        ({"select": "t", "epoch": "ms"}, 1736899348000, "2025-01-15T00:02:28Z"),
        ({"select": "t", "epoch": "s"}, "1736899348", "2025-01-15T00:02:28Z"),
        ({"select": "t", "format": "%d/%m/%Y %H:%M", "timezone": "UTC"}, "15/01/2025 00:02", "2025-01-15T00:02:00Z"),
    ],
)
def test_observed_at_with_time_zones(spec: Any, value: Any, expected: str) -> None:
    mapping = {**_mapping(status={"value": "ok"}), "observed_at": spec, "timezone": "Europe/Paris"}
    (entity,) = apply_mapping(mapping, {"rows": [{"ref": 1, "t": value}]})
    assert entity["status"]["observedAt"] == expected


def test_naive_time_without_a_timezone_is_an_error() -> None:
    mapping = {**_mapping(status={"value": "ok"}), "observed_at": "t"}
    with pytest.raises(TranslationError, match="no time zone offset"):
        apply_mapping(mapping, {"rows": [{"ref": 1, "t": "2025-01-01T00:00:00"}]})


def test_lambert93_point_and_xy_text_become_wgs84() -> None:
    mapping = _mapping(
        location={"point": {"x": "X", "y": "Y"}, "crs": "EPSG:2154"},
        status={"value": "ok"},
        altLocation={"point": {"xy": "coords"}},
    )
    row = {"ref": 1, "X": "770795.51", "Y": "6279476.13", "coords": "[7.48710500,48.345345]"}
    (entity,) = apply_mapping(mapping, {"rows": [row]})
    lon, lat = entity["location"]["value"]["coordinates"]
    assert entity["location"]["type"] == "GeoProperty"
    assert abs(lon - 3.8767) < 1e-5 and abs(lat - 43.6108) < 1e-5
    assert entity["altLocation"]["value"] == {"type": "Point", "coordinates": [7.487105, 48.345345]}
    assert validate(entity).valid


def test_coordinates_in_the_wrong_crs_are_refused() -> None:
    mapping = _mapping(location={"point": {"x": "X", "y": "Y"}})
    with pytest.raises(TranslationError, match="outside WGS84"):
        apply_mapping(mapping, {"rows": [{"ref": 1, "X": 770795.5, "Y": 6279476.1}]})


def test_geojson_geometry_reprojected() -> None:
    mapping = _mapping(location={"geometry": "geom", "crs": "EPSG:2154"})
    geom = {"type": "LineString", "coordinates": [[770795.51, 6279476.13], [770895.51, 6279476.13]]}
    (entity,) = apply_mapping(mapping, {"rows": [{"ref": 1, "geom": geom}]})
    assert entity["location"]["value"]["type"] == "LineString"
    assert len(entity["location"]["value"]["coordinates"]) == 2


def test_relationships_need_uris() -> None:
    mapping = _mapping(
        refStreetlightGroup={"type": "Relationship", "select": "group", "template": "urn:ngsi-ld:StreetlightGroup:{}"},
        refDevice={"type": "Relationship", "select": "devices"},
    )
    (entity,) = apply_mapping(mapping, {"rows": [{"ref": 1, "group": "G 1", "devices": ["urn:ngsi-ld:Device:d1"]}]})
    assert entity["refStreetlightGroup"] == {"type": "Relationship", "object": "urn:ngsi-ld:StreetlightGroup:G%201"}
    assert entity["refDevice"] == {"type": "ListRelationship", "objectList": [{"object": "urn:ngsi-ld:Device:d1"}]}
    bad = _mapping(refStreetlightGroup={"type": "Relationship", "select": "group"})
    with pytest.raises(TranslationError, match="is not a URI"):
        apply_mapping(bad, {"rows": [{"ref": 1, "group": "G1"}]})


def test_model_declares_relationship_types() -> None:
    # refStreetlightModel is a Relationship in the Smart Data Model: no need to say so.
    mapping = _mapping(refStreetlightModel={"select": "model", "template": "urn:ngsi-ld:StreetlightModel:{}"})
    (entity,) = apply_mapping(mapping, {"rows": [{"ref": 1, "model": "LED-60"}]})
    assert entity["refStreetlightModel"]["type"] == "Relationship"


def test_constants_json_and_list_properties() -> None:
    mapping = _mapping(
        source={"value": "https://vendor.example"},
        category={"type": "ListProperty", "select": "cats"},
        raw={"type": "JsonProperty", "select": "extra", "as": "json"},
    )
    (entity,) = apply_mapping(mapping, {"rows": [{"ref": 1, "cats": ["a", "b"], "extra": '{"k": [1]}'}]})
    assert entity["source"]["value"] == "https://vendor.example"
    assert entity["category"] == {"type": "ListProperty", "valueList": ["a", "b"]}
    assert entity["raw"] == {"type": "JsonProperty", "json": {"k": [1]}}


def test_items_selector_and_single_object_document() -> None:
    mapping = {**_mapping(), "items": "data.lamps[?active]"}
    doc = {"data": {"lamps": [{"ref": "a", "active": True}, {"ref": "b", "active": False}]}}
    assert [e["id"] for e in apply_mapping(mapping, doc)] == ["urn:ngsi-ld:Streetlight:a"]
    single = {**_mapping(), "items": "@"}
    assert len(apply_mapping(single, {"ref": "z"})) == 1
    with pytest.raises(TranslationError, match="found nothing"):
        apply_mapping(mapping, {"other": 1})


def test_tenant_selector() -> None:
    compiled = compile_mapping({**_mapping(), "tenant": "commune.insee"})
    assert item_tenant(compiled, {"commune": {"insee": 34172}}) == "34172"
    assert item_tenant(compiled, {}) is None


def test_translation_is_deterministic() -> None:
    mapping = load_mapping(ROOT / "adapters/rest_mapping/examples/luminarias.yaml")
    doc = {"luminarias": [{"identificador": "L1", "coordenadas": {"x": 771020.0, "y": 6279310.0},
                           "estado": "ENCENDIDA", "nivelRegulacion": 80, "energiaConsumida": 1000,
                           "ultimaLectura": "2025-03-30T01:30:00+01:00"}]}
    assert apply_mapping(mapping, doc) == apply_mapping(mapping, doc)
    (entity,) = apply_mapping(mapping, doc)
    assert entity["illuminanceLevel"] == {"type": "Property", "value": 0.8, "observedAt": "2025-03-30T00:30:00Z"}
    assert validate(entity).valid


def test_mapping_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("entity_type: Streetlight\nid: [\n")
    with pytest.raises(ConfigInvalid, match="is not YAML"):
        load_mapping(path)
    with pytest.raises(ConfigInvalid, match="cannot read mapping file"):
        load_mapping(tmp_path / "absent.yaml")


def test_a_document_error_names_every_bad_item() -> None:
    mapping = _mapping(powerState={"select": "s", "map": {"ON": "on"}})
    rows = {"rows": [{"ref": 1, "s": "X"}, {"ref": 2, "s": "ON"}, {"ref": 3, "s": "Y"}, {"s": "ON"}]}
    with pytest.raises(TranslationError) as caught:
        apply_mapping(mapping, rows)
    assert caught.value.reason.startswith("item 0: attribute 'powerState' (select 's'): 'X' is not in the value map")
    assert caught.value.reason.endswith("(also untranslatable: item 2, item 3)")
    assert caught.value.pointer == "/rows/0/s"


def test_quoted_identifiers_for_spreadsheet_headers() -> None:
    mapping = {"entity_type": "Streetlight", "id": 'urn:ngsi-ld:Streetlight:{"N° PL"}',
               "attributes": {"lanternHeight": {"select": '"Hauteur (m)"', "as": "number"},
                              "location": {"point": {"x": '"X (L93)"', "y": '"Y (L93)"'}, "crs": "EPSG:2154"}}}
    row = {"N° PL": "12", "Hauteur (m)": "8,5", "X (L93)": "771020", "Y (L93)": "6279310"}
    (entity,) = apply_mapping(mapping, [row])
    assert entity["id"] == "urn:ngsi-ld:Streetlight:12"
    assert entity["lanternHeight"]["value"] == 8.5
    assert entity["location"]["value"]["type"] == "Point"


def test_language_properties() -> None:
    mapping = _mapping(
        name={"type": "LanguageProperty", "select": "nom", "lang": "fr"},
        description={"type": "LanguageProperty", "select": "{fr: desc_fr, oc: desc_oc}"},
    )
    row = {"ref": 1, "nom": "Lampadaire", "desc_fr": "Place", "desc_oc": "Plaça"}
    (entity,) = apply_mapping(mapping, {"rows": [row]})
    assert entity["name"] == {"type": "LanguageProperty", "languageMap": {"fr": "Lampadaire"}}
    assert entity["description"] == {"type": "LanguageProperty", "languageMap": {"fr": "Place", "oc": "Plaça"}}
    with pytest.raises(ConfigInvalid, match="lang: only meaningful"):
        compile_mapping(_mapping(name={"select": "nom", "lang": "fr"}))
