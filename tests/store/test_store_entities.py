"""Entity operations over HTTP: create, retrieve, representations, update, append, merge, replace, delete."""

from __future__ import annotations

import pytest

from tests.store.conftest import BACKENDS, LINK_JONCTION, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

E1 = "/entities/urn:ngsi-ld:Streetlight:1"
VOCAB = "https://uri.etsi.org/ngsi-ld/default-context/"


async def _entity(server: StoreServer, path: str = E1, **kw: object) -> dict:  # type: ignore[type-arg]
    r = await server.get(path, **kw)  # type: ignore[arg-type]
    assert r.status == 200, r.raw
    return r.json  # type: ignore[no-any-return]


async def test_create_twice_is_already_exists(server: StoreServer) -> None:
    assert (await server.post("/entities", streetlight(1))).status == 201
    r = await server.post("/entities", streetlight(1))
    assert r.status == 409
    assert r.problem() == "AlreadyExists"


async def test_retrieve_missing_is_404(server: StoreServer) -> None:
    r = await server.get(E1)
    assert r.status == 404
    assert r.problem() == "ResourceNotFound"


async def test_create_accepts_concise_input(server: StoreServer) -> None:
    body = {
        "id": "urn:ngsi-ld:Streetlight:1",
        "type": "Streetlight",
        "powerState": "on",
        "illuminanceLevel": {"value": 0.8, "unitCode": "P1"},
        "refDevice": {"object": "urn:ngsi-ld:Device:1"},
        "location": {"type": "Point", "coordinates": [2.35, 48.85]},
    }
    assert (await server.post("/entities", body)).status == 201
    got = await _entity(server)
    assert got["powerState"] == {"type": "Property", "value": "on"}
    assert got["illuminanceLevel"] == {"type": "Property", "value": 0.8, "unitCode": "P1"}
    assert got["refDevice"] == {"type": "Relationship", "object": "urn:ngsi-ld:Device:1"}
    assert got["location"]["type"] == "GeoProperty"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("options=keyValues", {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "powerState": "on",
                               "location": {"type": "Point", "coordinates": [2.35, 48.85]}}),
        ("format=simplified", {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "powerState": "on",
                               "location": {"type": "Point", "coordinates": [2.35, 48.85]}}),
        ("options=concise", {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "powerState": "on",
                             "location": {"type": "Point", "coordinates": [2.35, 48.85]}}),
        ("format=concise", {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "powerState": "on",
                            "location": {"type": "Point", "coordinates": [2.35, 48.85]}}),
        ("attrs=powerState", {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight",
                              "powerState": {"type": "Property", "value": "on"}}),
        ("pick=id,powerState", {"id": "urn:ngsi-ld:Streetlight:1", "powerState": {"type": "Property", "value": "on"}}),
        ("omit=location,type", {"id": "urn:ngsi-ld:Streetlight:1", "powerState": {"type": "Property", "value": "on"}}),
        ("options=keyValues&attrs=powerState", {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight",
                                                "powerState": "on"}),
    ],
)
async def test_representations(server: StoreServer, query: str, expected: dict) -> None:  # type: ignore[type-arg]
    await server.post("/entities", streetlight(1))
    assert await _entity(server, f"{E1}?{query}") == expected


@pytest.mark.parametrize(
    "query",
    ["options=keyValues,concise", "pick=a&omit=b", "pick=a&attrs=b", "omit=a&attrs=b", "pick=id,,name",
     "pick=id,locatedAt{name", "pick=id,locatedAt{{name}", "pick=locatedAt{}", "pick=locatedAt{,name}",
     "pick=id;name", "omit="],
)
async def test_contradictory_representation_options(server: StoreServer, query: str) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.get(f"{E1}?{query}")
    assert r.problem() == "BadRequestData"


@pytest.mark.parametrize("query", ["options=bogus", "format=weird", "options=keyValues,bogus"])
async def test_unknown_representation_is_invalid_request(server: StoreServer, query: str) -> None:
    """ETSI 018_16: an unknown options/format value on a read is InvalidRequest."""
    await server.post("/entities", streetlight(1))
    r = await server.get(f"{E1}?{query}")
    assert r.status == 400 and r.problem() == "InvalidRequest"


async def test_format_takes_precedence_over_options(server: StoreServer) -> None:
    """§6.3.7 (ETSI 018_15_07): format wins over a representation named in options; simplified is keyValues."""
    await server.post("/entities", streetlight(1))
    kv = await _entity(server, f"{E1}?options=normalized&format=keyValues")
    assert kv["powerState"] == "on"
    assert (await _entity(server, f"{E1}?options=simplified"))["powerState"] == "on"


async def test_pick_or_omit_leaving_nothing_is_not_found(server: StoreServer) -> None:
    """§4.21 (ETSI 018_19): pick matching nothing, or omit of everything, answers ResourceNotFound."""
    await server.post("/entities", streetlight(1))
    assert (await server.get(f"{E1}?pick=unknown")).problem() == "ResourceNotFound"
    assert (await server.get(f"{E1}?omit=id,type,powerState,location")).problem() == "ResourceNotFound"
    assert (await server.get(f"{E1}?attrs=unknown")).problem() == "ResourceNotFound"
    assert await _entity(server, f"{E1}?pick=id,powerState") == {"id": E1.rsplit("/", 1)[-1],
                                                                 "powerState": {"type": "Property", "value": "on"}}


async def test_sys_attrs(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    plain = await _entity(server)
    assert "createdAt" not in plain and "createdAt" not in plain["powerState"]
    full = await _entity(server, f"{E1}?options=sysAttrs")
    assert full["createdAt"] == full["modifiedAt"]
    assert full["createdAt"].endswith("Z")
    assert full["powerState"]["createdAt"] == full["createdAt"]
    await server.patch(f"{E1}/attrs", {"powerState": {"type": "Property", "value": "off"}})
    later = await _entity(server, f"{E1}?options=sysAttrs")
    assert later["createdAt"] == full["createdAt"]
    assert later["modifiedAt"] > full["modifiedAt"]
    assert later["powerState"]["createdAt"] == full["powerState"]["createdAt"]
    assert later["powerState"]["modifiedAt"] > full["powerState"]["modifiedAt"]


async def test_sysattrs_sent_by_client_are_ignored(server: StoreServer) -> None:
    body = streetlight(1, createdAt="2000-01-01T00:00:00Z")
    await server.post("/entities", body)
    got = await _entity(server, f"{E1}?options=sysAttrs")
    assert got["createdAt"] != "2000-01-01T00:00:00Z"


async def test_geojson_retrieve(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.get(E1, headers={"Accept": "application/geo+json"})
    assert r.headers["Content-Type"] == "application/geo+json"
    feature = r.json
    assert feature["type"] == "Feature"
    assert feature["id"] == "urn:ngsi-ld:Streetlight:1"
    assert feature["geometry"] == {"type": "Point", "coordinates": [2.35, 48.85]}
    assert feature["properties"]["type"] == "Streetlight"
    assert feature["properties"]["powerState"]["value"] == "on"


async def test_geojson_geometry_property(server: StoreServer) -> None:
    other = {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0]}}
    await server.post("/entities", streetlight(1, observationSpace=other))
    r = await server.get(f"{E1}?geometryProperty=observationSpace&options=keyValues",
                         headers={"Accept": "application/geo+json"})
    assert r.json["geometry"] == {"type": "Point", "coordinates": [1.0, 2.0]}
    assert r.json["properties"]["powerState"] == "on"


async def test_language_property_and_lang(server: StoreServer) -> None:
    name = {"type": "LanguageProperty", "languageMap": {"fr": "Lampadaire", "en": "Street light"}}
    await server.post("/entities", streetlight(1, name=name))
    assert (await _entity(server))["name"] == name
    fr = await _entity(server, f"{E1}?lang=fr")
    assert fr["name"] == {"type": "Property", "value": "Lampadaire", "lang": "fr"}
    en_kv = await _entity(server, f"{E1}?lang=en&options=keyValues")
    assert en_kv["name"] == "Street light"
    fallback = await _entity(server, f"{E1}?lang=de")
    assert fallback["name"]["type"] == "Property"
    everything = await _entity(server, f"{E1}?lang=*")
    # §4.15 / ETSI 018_07_03: "*" renders a Property in any one of the languages
    assert everything["name"]["type"] == "Property" and everything["name"]["lang"] in ("en", "fr")


async def test_vocab_property_expanded_and_compacted(server: StoreServer) -> None:
    status = {"type": "VocabProperty", "vocab": "Streetlight"}
    await server.post("/entities", streetlight(1, myVocab=status), headers={"Link": LINK_JONCTION})
    core_view = await _entity(server)
    assert core_view["myVocab"]["vocab"] == "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"
    jon_view = await _entity(server, headers={"Link": LINK_JONCTION})
    assert jon_view["myVocab"]["vocab"] == "Streetlight"


async def test_multi_attribute_dataset_ids(server: StoreServer) -> None:
    temps = [
        {"type": "Property", "value": 20},
        {"type": "Property", "value": 21, "datasetId": "urn:ngsi-ld:Dataset:b"},
    ]
    await server.post("/entities", streetlight(1, temperature=temps))
    assert (await _entity(server))["temperature"] == temps
    only_b = await _entity(server, f"{E1}?datasetId=urn:ngsi-ld:Dataset:b&attrs=temperature")
    assert only_b["temperature"] == temps[1]
    default = await _entity(server, f"{E1}?datasetId=@none&attrs=temperature")
    assert default["temperature"] == temps[0]


async def test_duplicate_dataset_id_is_bad_request(server: StoreServer) -> None:
    temps = [{"type": "Property", "value": 20}, {"type": "Property", "value": 21}]
    r = await server.post("/entities", streetlight(1, temperature=temps))
    assert r.problem() == "BadRequestData"


async def test_sub_attributes_round_trip(server: StoreServer) -> None:
    power = {"type": "Property", "value": "on", "observedAt": "2026-01-02T03:04:05+01:00",
             "reliability": {"type": "Property", "value": 0.9}, "unitCode": "C62"}
    await server.post("/entities", streetlight(1, powerState=power))
    got = (await _entity(server))["powerState"]
    assert got["observedAt"] == "2026-01-02T02:04:05Z"  # normalized to UTC
    assert got["reliability"] == {"type": "Property", "value": 0.9}
    assert got["unitCode"] == "C62"


async def test_update_attrs_204_and_207(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.patch(f"{E1}/attrs", {"powerState": {"type": "Property", "value": "off"}})
    assert r.status == 204
    assert (await _entity(server))["powerState"]["value"] == "off"
    r = await server.patch(f"{E1}/attrs", {"powerState": {"type": "Property", "value": "on"},
                                           "unknownAttr": {"type": "Property", "value": 1}})
    assert r.status == 207
    # 207 bodies name attributes by their full IRI (§6.3.6); no Link header here: the core @vocab
    assert r.json["updated"] == [VOCAB + "powerState"]
    assert r.json["notUpdated"][0]["attributeName"] == VOCAB + "unknownAttr"
    assert "unknownAttr" not in await _entity(server)


async def test_update_attrs_missing_entity_404(server: StoreServer) -> None:
    r = await server.patch(f"{E1}/attrs", {"powerState": {"type": "Property", "value": "off"}})
    assert r.problem() == "ResourceNotFound"


async def test_update_attrs_id_mismatch(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.patch(f"{E1}/attrs", {"id": "urn:ngsi-ld:Streetlight:2", "powerState": 1})
    assert r.problem() == "BadRequestData"


async def test_append_attrs_and_no_overwrite(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.post(f"{E1}/attrs", {"temperature": {"type": "Property", "value": 12}})
    assert r.status == 204
    r = await server.post(f"{E1}/attrs?options=noOverwrite", {"temperature": {"type": "Property", "value": 99},
                                                              "humidity": {"type": "Property", "value": 50}})
    assert r.status == 207
    assert r.json["updated"] == [VOCAB + "humidity"]
    assert r.json["notUpdated"][0]["attributeName"] == VOCAB + "temperature"
    got = await _entity(server)
    assert got["temperature"]["value"] == 12
    assert got["humidity"]["value"] == 50
    r = await server.post(f"{E1}/attrs", {"temperature": {"type": "Property", "value": 13}})
    assert r.status == 204
    assert (await _entity(server))["temperature"]["value"] == 13


async def test_append_bad_option(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.post(f"{E1}/attrs?options=replace", {"temperature": 1})
    assert r.problem() == "BadRequestData"


async def test_merge_entity(server: StoreServer) -> None:
    power = {"type": "Property", "value": "on", "reliability": {"type": "Property", "value": 0.9}}
    await server.post("/entities", streetlight(1, powerState=power, note={"type": "Property", "value": "x"}))
    r = await server.patch(E1, {
        "powerState": {"type": "Property", "value": "off"},
        "note": "urn:ngsi-ld:null",
        "brightness": {"type": "Property", "value": 70},
    })
    assert r.status == 204
    got = await _entity(server)
    assert got["powerState"] == {"type": "Property", "value": "off", "reliability": {"type": "Property", "value": 0.9}}
    assert "note" not in got
    assert got["brightness"]["value"] == 70
    assert got["location"]["value"]["coordinates"] == [2.35, 48.85]


async def test_merge_sub_attribute_null(server: StoreServer) -> None:
    power = {"type": "Property", "value": "on", "reliability": {"type": "Property", "value": 0.9}}
    await server.post("/entities", streetlight(1, powerState=power))
    await server.patch(E1, {"powerState": {"value": "on", "reliability": "urn:ngsi-ld:null"}})
    assert (await _entity(server))["powerState"] == {"type": "Property", "value": "on"}


async def test_merge_missing_entity_404(server: StoreServer) -> None:
    r = await server.patch(E1, {"powerState": 1})
    assert r.problem() == "ResourceNotFound"


async def test_replace_entity(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.put(E1, {"type": "Streetlight", "brightness": {"type": "Property", "value": 10}})
    assert r.status == 204
    got = await _entity(server)
    assert got == {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight",
                   "brightness": {"type": "Property", "value": 10}}


async def test_replace_keeps_type_when_absent_and_404_when_missing(server: StoreServer) -> None:
    r = await server.put(E1, {"brightness": 10})
    assert r.problem() == "ResourceNotFound"
    await server.post("/entities", streetlight(1))
    assert (await server.put(E1, {"brightness": 10})).status == 204
    assert (await _entity(server))["type"] == "Streetlight"


async def test_delete_entity(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    assert (await server.delete(E1)).status == 204
    assert (await server.get(E1)).status == 404
    assert (await server.delete(E1)).problem() == "ResourceNotFound"


async def test_delete_attribute_variants(server: StoreServer) -> None:
    temps = [
        {"type": "Property", "value": 20},
        {"type": "Property", "value": 21, "datasetId": "urn:ngsi-ld:Dataset:b"},
        {"type": "Property", "value": 22, "datasetId": "urn:ngsi-ld:Dataset:c"},
    ]
    await server.post("/entities", streetlight(1, temperature=temps))
    assert (await server.delete(f"{E1}/attrs/temperature?datasetId=urn:ngsi-ld:Dataset:b")).status == 204
    assert [t.get("datasetId") for t in (await _entity(server))["temperature"]] == [None, "urn:ngsi-ld:Dataset:c"]
    assert (await server.delete(f"{E1}/attrs/temperature")).status == 204
    assert (await _entity(server))["temperature"]["datasetId"] == "urn:ngsi-ld:Dataset:c"
    r = await server.delete(f"{E1}/attrs/temperature?datasetId=urn:ngsi-ld:Dataset:zzz")
    assert r.problem() == "ResourceNotFound"
    assert (await server.delete(f"{E1}/attrs/temperature?deleteAll=true")).status == 204
    assert "temperature" not in await _entity(server)
    assert (await server.delete(f"{E1}/attrs/temperature")).problem() == "ResourceNotFound"


@pytest.mark.parametrize("query", ["deleteAll=maybe", "datasetId=x", "deleteAll=true&datasetId=urn:a:b"])
async def test_delete_attribute_bad_params(server: StoreServer, query: str) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.delete(f"{E1}/attrs/powerState?{query}")
    assert r.problem() == "BadRequestData"


async def test_partial_attribute_update(server: StoreServer) -> None:
    power = {"type": "Property", "value": "on", "unitCode": "C62"}
    await server.post("/entities", streetlight(1, powerState=power))
    r = await server.patch(f"{E1}/attrs/powerState", {"value": "off"})
    assert r.status == 204
    assert (await _entity(server))["powerState"] == {"type": "Property", "value": "off", "unitCode": "C62"}
    r = await server.patch(f"{E1}/attrs/nothing", {"value": "off"})
    assert r.problem() == "ResourceNotFound"
    r = await server.patch(f"{E1}/attrs/powerState", {"type": "Relationship", "object": "urn:a:b"})
    assert r.problem() == "BadRequestData"


async def test_replace_attribute(server: StoreServer) -> None:
    power = {"type": "Property", "value": "on", "unitCode": "C62"}
    await server.post("/entities", streetlight(1, powerState=power))
    r = await server.put(f"{E1}/attrs/powerState", {"type": "Property", "value": "off"})
    assert r.status == 204
    assert (await _entity(server))["powerState"] == {"type": "Property", "value": "off"}
    r = await server.put(f"{E1}/attrs/missing", {"type": "Property", "value": "off"})
    assert r.problem() == "ResourceNotFound"


async def test_retrieve_with_type_filter(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    assert (await server.get(f"{E1}?type=Streetlight")).status == 200
    assert (await server.get(f"{E1}?type=Other")).problem() == "ResourceNotFound"


async def test_multiple_types(server: StoreServer) -> None:
    body = streetlight(1)
    body["type"] = ["Streetlight", "Device"]
    await server.post("/entities", body)
    assert (await _entity(server))["type"] == ["Streetlight", "Device"]
    r = await server.get("/entities?type=Device")
    assert [e["id"] for e in r.json] == ["urn:ngsi-ld:Streetlight:1"]
    r = await server.get("/entities?type=Streetlight;Device")
    assert len(r.json) == 1
    r = await server.get("/entities?type=Streetlight;Other")
    assert r.json == []


async def test_merge_adds_type(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    await server.patch(E1, {"type": "Device"})
    assert (await _entity(server))["type"] == ["Streetlight", "Device"]


async def test_scope_round_trip(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1, scope=["/Paris/Nord", "/Eclairage"]))
    assert (await _entity(server))["scope"] == ["/Paris/Nord", "/Eclairage"]
    r = await server.get("/entities?scopeQ=/Paris/%23")
    assert len(r.json) == 1
    r = await server.get("/entities?scopeQ=/Lyon")
    assert r.json == []
