"""The valid-entity fast path of gateway.validation gives exactly the reference path's verdicts.

Every example and adapter golden entity the project has, normalized and as written, plus mutated
variants of each (wrong types, missing or unknown attributes, bad units, times, geometries, ids,
numbers, sub-attributes), is validated twice: through ``validate`` (fast path first) and through the
reference path alone. The verdicts (validity, errors with pointers and messages, warnings) must be
equal; every entity the fast path accepts must also pass the model's JSON Schema under jsonschema.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import schemas
from gateway import validation
from gateway.model import ENTITY_MEMBERS, VALUE_KEY
from gateway.runtime.normalize import normalize

ROOT = Path(__file__).resolve().parents[2]


def _entities(doc: Any) -> Iterator[dict[str, Any]]:
    if isinstance(doc, dict) and "id" in doc and "type" in doc:
        yield doc
    elif isinstance(doc, list):
        for item in doc:
            yield from _entities(item)


def _bench_shapes() -> list[dict[str, Any]]:
    """The shapes the benchmarks send: the HTTP bench's WasteContainer, a LoRaWAN Device, AirQualityObserved."""
    at = "2026-01-01T10:00:00.005Z"
    return [
        {"id": "urn:ngsi-ld:WasteContainer:bench-5", "type": "WasteContainer",
         "fillingLevel": {"type": "Property", "value": 0.05, "observedAt": at},
         "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.87, 43.6]}}},
        {"id": "urn:ngsi-ld:Device:24e124713b000000", "type": "Device",
         "deviceCategory": {"type": "Property", "value": ["sensor"]},
         "controlledProperty": {"type": "Property", "value": ["fillingLevel"]},
         "controlledAsset": {"type": "Relationship", "object": "urn:ngsi-ld:WasteContainer:bench-0"},
         "rssi": {"type": "Property", "value": -97, "observedAt": at,
                  "snr": {"type": "Property", "value": 7.25, "unitCode": "2N"},
                  "gatewayIds": {"type": "Property", "value": ["7276ff002e062a11"]}},
         "batteryLevel": {"type": "Property", "value": 0.85, "observedAt": at}},
        {"id": "urn:ngsi-ld:AirQualityObserved:station-1", "type": "AirQualityObserved",
         "dateObserved": {"type": "Property", "value": at},
         "no2": {"type": "Property", "value": 20.0, "unitCode": "GQ", "observedAt": at},
         "temperature": {"type": "Property", "value": 11.5, "unitCode": "CEL"},
         "relativeHumidity": {"type": "Property", "value": 0.66, "unitCode": "C62"},
         "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.83, 45.73]}},
         "refDevice": {"type": "Relationship", "object": "urn:ngsi-ld:Device:sensor-1"}},
    ]


def corpus() -> list[dict[str, Any]]:
    """Every example and golden entity, as written and normalized, and the benchmark shapes."""
    found: list[dict[str, Any]] = []
    paths = [*sorted((ROOT / "schemas" / "examples").glob("*.json")),
             *sorted(ROOT.glob("adapters/*/fixtures/*.golden.json"))]
    for path in paths:
        found.extend(_entities(json.loads(path.read_text(encoding="utf-8"))))
    found.extend(_bench_shapes())
    normalized = []
    for entity in found:
        try:
            normalized.append(normalize(copy.deepcopy(entity)))
        except Exception:  # not normalizable: the original stays in the corpus
            continue
    unique: dict[str, dict[str, Any]] = {}
    for entity in found + normalized:
        unique.setdefault(json.dumps(entity, sort_keys=True), entity)
    return list(unique.values())


def _attribute_mutations(attr: Any) -> Iterator[Any]:
    """Variants of one attribute, each breaking (or oddly keeping) one rule."""
    for value in ("text", 12, True, None, [1, "a"], {"a": 1}, math.nan, 2**70, "\ud800", -0.0):
        if isinstance(attr, dict):
            key = VALUE_KEY.get(str(attr.get("type")), "value")
            yield {**attr, key: value}
        yield value
    if not isinstance(attr, dict):
        return
    for tag in ("Text", "Relationship", "GeoProperty", "Property", "LanguageProperty"):
        yield {**attr, "type": tag}
    yield {k: v for k, v in attr.items() if k != "type"}
    yield {"type": attr.get("type")}
    for code in ("XYZ", "KEL", "CEL", "C62", "P1", 5):
        yield {**attr, "unitCode": code}
    for moment in ("2026-13-01T00:00:00Z", "yesterday", "2026-01-01T00:00:00", "2026-01-01T00:00:00+02:00"):
        yield {**attr, "observedAt": moment}
    yield {**attr, "datasetId": "not a uri"}
    yield {**attr, "datasetId": "urn:ngsi-ld:Dataset:a"}
    yield {**attr, "instanceId": "urn:ngsi-ld:Instance:1"}
    yield {**attr, "accuracy": {"type": "Property", "value": math.inf}}
    yield {**attr, "accuracy": {"type": "Property", "value": 0.1, "unitCode": "bogus"}}
    yield {**attr, "accuracy": {"type": "Property", "value": 0.1, "observedAt": "2026-02-30T00:00:00Z"}}
    yield {**attr, "accuracy": 3}
    yield [attr, {**attr, "datasetId": "urn:ngsi-ld:Dataset:b"}]
    yield [attr, attr]
    value = attr.get("value")
    if isinstance(value, dict) and "coordinates" in value:
        for geometry in (
            {"type": "Point", "coordinates": [200, 10]},
            {"type": "Point", "coordinates": [10, 100]},
            {"type": "Point", "coordinates": [1]},
            {"type": "Point", "coordinates": [True, 1]},
            {"type": "Point", "coordinates": "x"},
            {"type": "Point", "coordinates": [1, 2], "bbox": [0, 0, 1, 1]},
            {"type": "Point"},
            {"type": "Circle", "coordinates": [1, 2]},
            {"type": "LineString", "coordinates": [[1, 2]]},
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]},
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
            {"type": "GeometryCollection", "geometries": [{"type": "Point", "coordinates": [1, 2]}]},
        ):
            yield {**attr, "value": geometry}
    target = attr.get("object")
    if target is not None:
        for other in ("not a uri", ["urn:ngsi-ld:Device:a"], [], ["urn:a:b", "bad one"], {"a": 1}):
            yield {**attr, "object": other}


def mutations(entity: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The entity itself, then variants each with one fault (or one oddity) in it."""
    yield entity
    for member, value in (("id", "not a uri"), ("id", 5), ("type", "Nope"), ("type", [entity["type"], "X"]),
                          ("@context", ["https://example.org/ctx.jsonld"]), ("createdAt", "2026-01-01T00:00Z"),
                          ("fillinglevel", {"type": "Property", "value": 1}), ("zzz", 3)):
        yield {**entity, member: value}
    yield {k: v for k, v in entity.items() if k != "id"}
    names = [name for name in entity if name not in ENTITY_MEMBERS]
    for position, name in enumerate(names):
        yield {k: v for k, v in entity.items() if k != name}  # a required attribute missing, or not
        # Every other mutation per attribute, alternating: each kind of fault still meets every
        # model, at half the cost of the reference path's error reports.
        for variant in list(_attribute_mutations(entity[name]))[position % 2::2]:
            yield {**entity, name: variant}


CORPUS = corpus()


def _projection(entity: dict[str, Any]) -> dict[str, Any]:
    """The keyValues document of a plain normalized entity, built independently of the fast path."""
    spec = schemas.model(entity["type"])
    document: dict[str, Any] = {"id": entity["id"], "type": entity["type"]}
    for name, attr in entity.items():
        if name in ENTITY_MEMBERS:
            continue
        value = attr[VALUE_KEY[attr["type"]]]
        subschema = spec.schema["properties"].get(name, {})
        if attr["type"] == "Relationship" and isinstance(value, str) and subschema.get("type") == "array":
            value = [value]
        document[name] = value
    return document


def test_corpus_covers_the_benchmark_models() -> None:
    types = {entity["type"] for entity in CORPUS if isinstance(entity["type"], str)}
    assert {"WasteContainer", "Device", "AirQualityObserved"} <= types
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("index", range(len(CORPUS)), ids=lambda i: str(CORPUS[i]["id"])[-40:])
def test_fast_path_verdicts_equal_the_reference(index: int) -> None:
    fast_hits = 0
    for variant in mutations(CORPUS[index]):
        before = json.dumps(variant, sort_keys=True, default=repr)
        expected = validation._reference(copy.deepcopy(variant))
        got = validation.validate(variant)
        assert got == expected, json.dumps(variant, default=repr)[:400]
        assert json.dumps(variant, sort_keys=True, default=repr) == before  # the entity is never modified
        if validation._fast_validate(variant) is not None:
            fast_hits += 1
            assert expected.valid and not expected.warnings
            errors = list(schemas.compiled(schemas.model(variant["type"]).schema).iter_errors(_projection(variant)))
            assert errors == []


def test_fast_path_takes_the_usual_shapes() -> None:
    for entity in _bench_shapes():
        verdict = validation._fast_validate(entity)
        assert verdict is not None and verdict.valid
        assert verdict == validation._reference(entity)


def test_fast_path_takes_most_valid_corpus_entities() -> None:
    valid = [e for e in CORPUS if validation._reference(e).valid and not validation._reference(e).warnings]
    taken = [e for e in valid if validation._fast_validate(e) is not None]
    assert len(taken) >= len(valid) // 2, sorted({str(e["type"]) for e in valid if e not in taken})


def test_memo_does_not_confuse_values_of_different_types() -> None:
    base = _bench_shapes()[0]
    text = {**base, "status": {"type": "Property", "value": "ok"}}
    listed = {**base, "status": {"type": "Property", "value": ["ok"]}}
    for entity in (text, listed, text, listed):
        assert validation.validate(entity) == validation._reference(entity)
