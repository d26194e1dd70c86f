"""The offline registry, the public API other rooms use, and the generated model schemas."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import referencing.exceptions

import schemas
from gateway.model import ATTRIBUTE_TYPES, from_key_values
from gateway.units import is_uncefact
from gateway.validation import validate
from schemas import generate
from tests.conftest import ROOT, needs_shared, shared_params
from tests.schemas.own_examples import own_key_values
from tests.schemas.test_upstream_parity import WITHOUT_REFERENCE
from tests.schemas.upstream import SDM, example, model_dir

EXPECTED_MODELS = {
    "Streetlight", "StreetlightControlCabinet", "StreetlightGroup", "WasteContainer", "AirQualityObserved",
    "IndoorEnvironmentObserved", "NoiseLevelObserved", "WaterQualityObserved", "WaterConsumptionObserved",
    "ThreePhaseAcMeasurement", "Building", "TrafficFlowObserved", "OnStreetParking", "ParkingSpot", "Device",
    "DeviceMeasurement", "service_requests", "Alert", "Junction", "Pipe", "Pump", "Tank", "Valve",
    "OffStreetParking", "EVChargingStation",
}



def _own(name: str) -> list[dict[str, Any]]:
    """Our own example of the model, in keyValues (schemas/examples)."""
    return [own_key_values(name)]


def _upstream(name: str) -> list[Any]:
    """The upstream keyValues example(s) of the model (../shared)."""
    loaded = example(name, "example.json")
    return loaded if isinstance(loaded, list) else [loaded]


UPSTREAM_MODELS = shared_params(lambda: sorted(EXPECTED_MODELS - set(WITHOUT_REFERENCE)))
"""Models with an upstream example to cross-check, or one named skip where ../shared is absent."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a socket fails the test loudly."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_registry_refuses_to_retrieve_unknown_refs(no_network: None) -> None:
    with pytest.raises(referencing.exceptions.NoSuchResource):
        schemas.REGISTRY.get_or_retrieve("https://geojson.org/schema/Point.json")
    with pytest.raises(referencing.exceptions.Unresolvable):
        schemas.check_document({"$ref": "https://smart-data-models.github.io/data-models/common-schema.json"}, {})


def test_every_model_resolves_offline(no_network: None) -> None:
    assert set(schemas.MODELS) == EXPECTED_MODELS
    for name in schemas.MODELS:
        spec = schemas.model(name)
        minimal = {"id": f"urn:ngsi-ld:{name}:x", "type": name}
        problems = schemas.check_document(spec.schema, minimal)
        # Only "required" findings for a bare entity: every $ref resolved locally.
        assert all("is a required property" in p for p in problems), problems


def test_check_document_reports_all_problems_with_pointers() -> None:
    schema = {
        "type": "object",
        "required": ["sources"],
        "properties": {
            "sources": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["adapter"],
                    "properties": {"adapter": {"enum": ["lorawan", "opcua"]}, "interval": {"type": "integer"}},
                },
            },
            "contact": {"type": "string", "format": "email"},
        },
    }
    document = {"sources": [{"adapter": "x", "interval": "5s"}, {}], "contact": "not-an-email"}
    assert schemas.check_document(schema, document) == [
        "/contact: 'not-an-email' is not a 'email'",
        "/sources/0/adapter: 'x' is not one of ['lorawan', 'opcua']",
        "/sources/0/interval: '5s' is not of type 'integer'",
        "/sources/1: 'adapter' is a required property",
    ]
    assert schemas.check_document(schema, {"sources": []}) == []


def test_unknown_model_raises() -> None:
    with pytest.raises(schemas.UnknownModel, match="Thing"):
        schemas.model("Thing")


def test_generated_schemas_are_up_to_date() -> None:
    spec = generate.load_spec()
    assert set(spec) == EXPECTED_MODELS
    for name, entry in spec.items():
        committed = (generate.MODELS_DIR / name / "schema.json").read_text(encoding="utf-8")
        assert committed == generate.render(generate.build(name, entry)), f"run python -m schemas.generate ({name})"


def test_every_packaged_json_file_parses() -> None:
    for path in (ROOT / "schemas").rglob("*.json*"):
        json.loads(path.read_text(encoding="utf-8"))


@needs_shared
def test_model_facts_track_upstream() -> None:
    commits = {}
    for line in (SDM / "SOURCES.txt").read_text().splitlines():
        words = line.split()
        if words[:1] == ["subject"]:
            commits[words[1]] = words[3]
    for name in schemas.MODELS:
        spec = schemas.model(name)
        if name in WITHOUT_REFERENCE:
            # Read from the published schema at its own commit (see spec.yaml), not the subject's.
            assert spec.upstream_commit not in commits.values() and len(spec.upstream_commit) == 40, name
            continue
        upstream = json.loads((model_dir(name) / "schema.json").read_text(encoding="utf-8"))
        assert spec.upstream_version == upstream["$schemaVersion"], name
        assert spec.upstream_commit == commits[spec.upstream_subject], name
        assert spec.schema["x-upstream"]["schemaVersion"] == spec.upstream_version
        assert set(spec.required) == set(upstream["required"]), name
        for attr, facts in spec.attributes.items():
            assert facts.ngsi_type in ATTRIBUTE_TYPES, (name, attr)
            assert facts.unit is None or is_uncefact(facts.unit), (name, attr, facts.unit)
        assert schemas.ngsi_types(name) == {a: f.ngsi_type for a, f in spec.attributes.items()}


def test_units_recorded_as_data() -> None:
    assert schemas.model("AirQualityObserved").attributes["no2"].unit == "GQ"
    assert schemas.model("StreetlightControlCabinet").attributes["energyConsumed"].unit == "KWH"
    assert schemas.model("Pipe").attributes["diameter"].unit == "MMT"
    assert schemas.model("WasteContainer").attributes["refDevice"].ngsi_type == "Relationship"
    assert schemas.model("WasteContainer").attributes["location"].ngsi_type == "GeoProperty"
    assert schemas.model("OffStreetParking").attributes["maximumAllowedHeight"].unit == "MTR"
    station = schemas.model("EVChargingStation")
    assert (station.attributes["amperage"].unit, station.attributes["voltage"].unit) == ("AMP", "VLT")
    assert station.upstream_version == "0.1.0" and station.upstream_subject == "Transportation"
    assert set(station.required) == {"id", "type", "socketType", "capacity", "allowedVehicleType"}


def _round_trip(name: str, documents: list[Any]) -> list[bool]:
    """keyValues -> normalized with the model's NGSI types -> validate: same verdict as the schema."""
    spec = schemas.model(name)
    verdicts = []
    for document in documents:
        normalized = from_key_values(document, schemas.ngsi_types(name))
        schema_ok = schemas.check_document(spec.schema, document) == []
        verdict = validate(normalized)
        structural = [p for p in verdict.errors if not p.rule.startswith("schema:")]
        if structural:
            # keyValues ids that are not URIs, or relationships to non-URIs, are NGSI-LD errors.
            assert all(p.rule in ("id-uri", "relationship-object") for p in structural), structural
        else:
            assert verdict.valid == schema_ok, verdict.errors
        verdicts.append(verdict.valid)
    return verdicts


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_key_values_to_normalized_round_trip_keeps_the_verdict(name: str) -> None:
    assert _round_trip(name, _own(name)) == [True]


@pytest.mark.parametrize("name", UPSTREAM_MODELS)
def test_upstream_key_values_round_trip_keeps_the_verdict(name: str) -> None:
    assert _round_trip(name, _upstream(name))


def test_context_iri_of_model_terms() -> None:
    spec = schemas.model("WasteContainer")
    assert spec.context_iri("fillingLevel") == "https://smartdatamodels.org/dataModel.WasteManagement/fillingLevel"
    assert spec.context_iri("location") == "https://uri.etsi.org/ngsi-ld/location"
    assert spec.context_iri("noSuchTerm") is None


def _mutations(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Variants of a document that break one member each (wrong type, out of range, bad enum)."""
    out = []
    for key, value in document.items():
        if key in ("id", "type"):
            continue
        for bad in (None, "text", -1e9, 1e9, 0.5, [], {}, True, [value], {"type": "Point", "coordinates": [999, 1]}):
            variant = dict(document)
            variant[key] = bad
            out.append(variant)
    return out


def _predicate_agrees(name: str, loaded: list[Any]) -> int:
    """The compiled predicate behind the hot path never accepts what jsonschema rejects."""
    spec = schemas.model(name)
    predicate = schemas.fast_check(spec.schema)
    assert predicate is not None, f"{name} uses a keyword the fast path does not compile"
    validator = schemas.compiled(spec.schema)
    documents = [{k: v for k, v in d.items() if k != "@context"} for d in loaded]
    accepted = 0
    for document in [*documents, *(m for d in documents for m in _mutations(d))]:
        assert predicate(document) == validator.is_valid(document), document
        accepted += predicate(document)
    return accepted


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_fast_predicate_agrees_with_jsonschema(name: str) -> None:
    # Our example is valid, so at least it is accepted; most mutations are not.
    assert _predicate_agrees(name, _own(name)) >= 1


@pytest.mark.parametrize("name", UPSTREAM_MODELS)
def test_fast_predicate_agrees_with_jsonschema_on_upstream_examples(name: str) -> None:
    _predicate_agrees(name, _upstream(name))
