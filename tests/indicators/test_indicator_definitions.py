"""Indicator definitions: the shipped ones validate, a territory's file adds or replaces, errors name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigInvalid
from gateway.indicators import definitions


def _one(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "water.x", "title": {"fr": "x", "en": "x"}, "method": {"fr": "x", "en": "x"}, "unit": "m³/h",
        "types": ["WaterObserved"], "attributes": ["flow"], "kind": "night_minimum",
        "params": {"window": ["02:00", "04:00"]},
    }
    item.update(changes)
    return {"indicators": [item]}


def test_the_shipped_definitions_cover_every_theme_and_kind() -> None:
    shipped = definitions.load()
    assert {d.theme for d in shipped} == {"lighting", "waste", "water", "air", "sensors"}
    assert {d.kind for d in shipped} == set(definitions.KIND_PARAMS) - {"sum", "mean"}
    assert all(d.method["fr"] and d.method["en"] and d.title["fr"] and d.title["en"] for d in shipped)
    who = {d.attributes[0]: (d.params["threshold"], d.params["averaging_hours"]) for d in shipped if d.theme == "air"}
    assert who == {"pm25": (15, 24), "pm10": (45, 24), "no2": (25, 24), "o3": (100, 8)}


def test_a_territory_file_replaces_by_id_and_adds(tmp_path: Path) -> None:
    own = tmp_path / "own.yaml"
    own.write_text(
        "indicators:\n"
        "  - id: waste.overflow_hours\n"
        "    title: {fr: Débordement, en: Overflow}\n"
        "    method: {fr: 'Niveau 0,95.', en: Level 0.95.}\n"
        "    unit: h\n"
        "    types: [WasteContainer]\n"
        "    attributes: [fillingLevel]\n"
        "    kind: hours_when\n"
        "    params: {at_least: 0.95}\n"
        "  - id: ours.noise\n"
        "    title: {fr: Bruit, en: Noise}\n"
        "    method: {fr: Moyenne., en: Mean.}\n"
        "    unit: dB\n"
        "    types: [NoiseLevelObserved]\n"
        "    attributes: [LAeq]\n"
        "    kind: mean\n", encoding="utf-8")
    merged = definitions.load(own)
    ids = [d.id for d in merged]
    assert ids.count("waste.overflow_hours") == 1 and ids[-1] == "ours.noise"
    assert next(d for d in merged if d.id == "waste.overflow_hours").params == {"at_least": 0.95}
    assert len(merged) == len(definitions.load()) + 1


@pytest.mark.parametrize(("doc", "expected"), [
    ({"indicators": [{"id": "x"}]}, "/indicators/0: 'title' is a required property"),
    (_one(kind="median"), "/indicators/0/kind: 'median' is not one of"),
    (_one(params={"window": ["02:00", "04:00"], "depth": 3}), "/indicators/0/params: Additional properties"),
    (_one(params={"window": ["04:00", "02:00"]}), "/indicators/0/params/window: the window must start before"),
    (_one(params={"window": ["25:00", "04:00"]}), "/indicators/0/params/window/0: '25:00' does not match"),
    (_one(timezone="Mars/Olympus"), "/indicators/0/timezone: unknown timezone"),
    (_one(kind="availability", params={"measure": "uptime", "interval": "PT0M"}),
     "/indicators/0/params/interval: the duration must not be zero"),
    (_one(kind="availability", params={"measure": "uptime"}), "/indicators/0/params: 'interval' is a required"),
    (_one(kind="hours_when", params={}), "/indicators/0/params: {} is not valid under any of the given schemas"),
    ({"indicators": [_one()["indicators"][0], _one()["indicators"][0]]},
     "/indicators/1/id: 'water.x' is defined twice"),
    ([], ": [] is not of type 'object'"),
])
def test_bad_definitions_name_the_key(doc: Any, expected: str) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        definitions.parse(doc, "own.yaml")
    assert any(problem.startswith(expected) or expected in problem for problem in caught.value.problems), (
        caught.value.problems)
    assert caught.value.exit_code == 2


def test_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match="cannot read"):
        definitions.read(tmp_path / "missing.yaml")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (definitions.MAX_DEFINITIONS_BYTES + 1))
    with pytest.raises(ConfigInvalid, match="larger than"):
        definitions.read(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("indicators: [] # é".encode("latin-1"))
    with pytest.raises(ConfigInvalid, match="not UTF-8"):
        definitions.read(latin)


def _properties(node: Any) -> set[str]:
    """Every name declared under a ``properties`` keyword anywhere in a JSON Schema."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("properties"), dict):
            found.update(node["properties"])
        for child in node.values():
            found |= _properties(child)
    elif isinstance(node, list):
        for child in node:
            found |= _properties(child)
    return found


def test_shipped_definitions_use_attributes_the_smart_data_models_declare() -> None:
    """The attribute names are those of the bundled Smart Data Models schemas (what the adapters write)."""
    import json

    models = Path(__file__).resolve().parents[2] / "schemas" / "models"
    checked = 0
    for d in definitions.load():
        for entity_type in d.types:
            schema = models / entity_type / "schema.json"
            if not schema.is_file():
                continue  # WaterObserved has no bundled schema: its flow is the EPANET Pipe's term
            declared = _properties(json.loads(schema.read_text(encoding="utf-8")))
            assert d.attributes[0] in declared, (d.id, entity_type, d.attributes[0])
            checked += 1
    assert checked >= len(definitions.load())
