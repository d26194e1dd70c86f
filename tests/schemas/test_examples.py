"""Our own example of every bundled model: valid NGSI-LD, valid against its model, with the model's units."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import schemas
from gateway.validation import validate
from tests.schemas.own_examples import EXAMPLES_DIR, EXTRA_EXAMPLES, example_path, own_example, own_key_values

MODELS = sorted(schemas.MODELS)


def test_every_model_has_exactly_one_own_example_and_nothing_else_is_there() -> None:
    expected = {example_path(name).name for name in MODELS} | set(EXTRA_EXAMPLES)
    assert {p.name for p in EXAMPLES_DIR.glob("*.json")} == expected
    assert len(MODELS) == 25


@pytest.mark.parametrize("name", MODELS)
def test_own_example_is_a_valid_entity_of_its_model(name: str) -> None:
    entity = own_example(name)
    assert entity["type"] == name
    assert entity["id"].startswith(f"urn:ngsi-ld:{name}:")
    verdict = validate(entity)
    assert verdict.valid, verdict.errors
    assert not verdict.warnings, verdict.warnings
    # The keyValues projection is what the model's JSON Schema describes: no finding at all.
    assert schemas.check_document(schemas.model(name).schema, own_key_values(name)) == []


@pytest.mark.parametrize("name", MODELS)
def test_own_example_uses_the_models_attributes_types_and_units(name: str) -> None:
    spec = schemas.model(name)
    entity = own_example(name)
    attrs = {k: v for k, v in entity.items() if k not in ("id", "type", "@context")}
    assert set(attrs) <= set(spec.attributes), set(attrs) - set(spec.attributes)
    assert set(spec.required) - {"id", "type"} <= set(attrs)
    for attr, value in attrs.items():
        facts = spec.attributes[attr]
        assert value["type"] == facts.ngsi_type, attr
        if facts.unit is not None and isinstance(value.get("value"), (int, float, dict)):
            assert value.get("unitCode") == facts.unit, attr
        elif "unitCode" in value:
            assert facts.unit is None or value["unitCode"] == facts.unit, attr


def _required(name: str) -> list[str]:
    return [r for r in schemas.model(name).required if r not in ("id", "type")]


@pytest.mark.parametrize("name", [m for m in MODELS if _required(m)])
def test_breaking_a_required_member_is_caught(name: str) -> None:
    """The examples are not trivially accepted: removing a required member makes them invalid."""
    required = _required(name)
    entity = own_example(name)
    del entity[required[0]]
    verdict = validate(entity)
    assert not verdict.valid
    assert any(required[0] in p.message for p in verdict.errors), verdict.errors


def test_extra_examples_are_valid() -> None:
    for filename, model in EXTRA_EXAMPLES.items():
        entity = json.loads((EXAMPLES_DIR / filename).read_text(encoding="utf-8"))
        assert entity["type"] == model
        assert validate(entity).valid


async def test_own_examples_pass_every_data_check_of_the_checker(tmp_path: Path) -> None:
    """All our examples delivered as files: every L1 check passes, each model's check among them."""
    from conformance.profile import load_profile
    from conformance.runner import run
    from conformance.targets import FilesTarget

    delivery = tmp_path / "examples.ndjson"
    delivery.write_text("".join(json.dumps(own_example(m)) + "\n" for m in MODELS), encoding="utf-8")
    report = await run(load_profile("fournisseur-donnees"), FilesTarget([delivery]))
    l1 = {r["id"]: (r["verdict"], r["reason"]) for r in report["results"] if r["level"] == "L1"}
    assert {cid: v for cid, v in l1.items() if v[0] != "pass"} == {}
    assert len([cid for cid in l1 if cid.startswith("L1-SDM-")]) >= 10
