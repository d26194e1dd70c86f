"""File imports: good rows import, each bad row is reported with its line; open-data mappings golden."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from adapters.files import FilesAdapter
from gateway.errors import TranslationError
from gateway.model import Entity, RawMessage
from gateway.validation import validate
from tests.conftest import SAMPLES, needs_shared

HERE = Path(__file__).resolve().parent
INVENTORY = HERE / "data/inventaire_eclairage.csv"
OPEN_DATA = SAMPLES / "france_open_data"
UPDATE_GOLDEN = os.environ.get("JONCTION_UPDATE_GOLDEN") == "1"


class Collector:
    """An emit callback that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[RawMessage] = []

    async def __call__(self, raw: RawMessage) -> None:
        self.messages.append(raw)


def _adapter(path: Path, **config: Any) -> FilesAdapter:
    return FilesAdapter({"name": "import", "path": str(path), "settle": 0, **config})


def _translate(adapter: FilesAdapter, messages: list[RawMessage]) -> tuple[list[Entity], list[str]]:
    entities: list[Entity] = []
    errors: list[str] = []
    for raw in messages:
        try:
            entities.extend(adapter.to_entities(raw))
        except TranslationError as exc:
            errors.append(exc.reason)
    return entities, errors


def _golden(name: str, value: Any) -> None:
    path = HERE / "golden" / f"{name}.golden.json"
    if UPDATE_GOLDEN and not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    assert json.loads(json.dumps(value)) == json.loads(path.read_text())


async def test_gis_inventory_good_rows_import_and_bad_rows_name_their_line() -> None:
    adapter = _adapter(INVENTORY, mapping_file="builtin:streetlights_gis.yaml")
    emit = Collector()
    assert await adapter.scan(emit) == 9
    assert [m.metadata["line"] for m in emit.messages] == [str(n) for n in range(2, 11)]
    entities, errors = _translate(adapter, emit.messages)
    assert [e["name"]["value"] for e in entities] == ["PL-0001", "PL-0002", "PL-0005", "PL-0009"]
    assert all(validate(e).valid for e in entities)
    assert [reason.split(":")[0] for reason in errors] == [
        f"inventaire_eclairage.csv line {n}" for n in (4, 5, 7, 8, 9)
    ]
    assert "'huit' is not a number" in errors[1]
    assert "'clignote' is not in the value map" in errors[2]
    assert "7 fields where the header has 11" in errors[3]
    assert "outside the area of use of EPSG:2154" in errors[4]
    _golden("inventaire_eclairage", {"entities": entities, "errors": errors})


async def test_bad_row_errors_point_at_the_column() -> None:
    adapter = _adapter(INVENTORY, mapping_file="builtin:streetlights_gis.yaml")
    emit = Collector()
    await adapter.scan(emit)
    with pytest.raises(TranslationError) as caught:
        adapter.to_entities(emit.messages[3])
    assert caught.value.pointer == "/hauteur_feu"


async def test_irve_statique_mapping_on_our_file() -> None:
    """Our own rows in the columns of the national IRVE "statique" schema: car, two-wheeler, bad id."""
    adapter = _adapter(HERE / "data/irve_statique_jonction.csv", mapping_file="builtin:irve_statique.yaml")
    emit = Collector()
    await adapter.scan(emit)
    entities, errors = _translate(adapter, emit.messages)
    cars, bikes = entities
    assert cars["id"] == "urn:ngsi-ld:EVChargingStation:FRJCTP63JAUDE01"
    assert cars["location"]["value"] == {"type": "Point", "coordinates": [3.0826, 45.7772]}
    assert cars["socketType"]["value"] == ["Type2", "CCS/SAE"]
    assert (cars["capacity"]["value"], cars["chargeType"]["value"]) == (2, ["other"])
    assert cars["allowedVehicleType"]["value"] == ["car"]
    assert cars["contactPoint"]["value"] == {"email": "bornes@mobilites.example.org", "telephone": "+33473000000"}
    assert cars["dateModified"]["value"] == "2025-02-13T23:00:00Z"  # a Paris date, midnight in UTC
    assert bikes["socketType"]["value"] == ["Wall_Euro"]
    assert bikes["allowedVehicleType"]["value"] == ["motorcycle", "motorscooter"]
    assert bikes["chargeType"]["value"] == ["free"]
    for station in entities:
        verdict = validate(station)
        assert verdict.valid, [p.to_dict() for p in verdict.errors]
        assert [(p.rule, p.pointer) for p in verdict.warnings] == [("unknown-attribute", "/stationCode")]
    assert errors == [
        "irve_statique_jonction.csv line 4: attribute 'stationCode' (select 'id_station_itinerance'): "
        "'DEJCTP123' does not match the pattern 'FR[A-Z0-9]{3}P[A-Z0-9]{1,30}'"
    ]


async def test_stationnement_mapping_on_our_file() -> None:
    """Our own rows in the columns of the national parking schema: heights in cm, N/A for no limit."""
    adapter = _adapter(HERE / "data/stationnement_jonction.csv", mapping_file="builtin:stationnement.yaml")
    emit = Collector()
    await adapter.scan(emit)
    entities, errors = _translate(adapter, emit.messages)
    assert errors == []
    covered, surface = entities
    assert covered["id"] == "urn:ngsi-ld:OffStreetParking:JCT-69123-CELESTINS"
    assert covered["maximumAllowedHeight"] == {"type": "Property", "value": 1.9, "unitCode": "MTR"}
    assert (covered["totalSpotNumber"]["value"], covered["chargeType"]["value"]) == (430, ["other"])
    assert covered["seeAlso"]["value"] == "https://parkings.example.org/celestins"
    assert "maximumAllowedHeight" not in surface and "seeAlso" not in surface
    assert surface["chargeType"]["value"] == ["free"]
    for entity in entities:
        verdict = validate(entity)
        assert verdict.valid and not verdict.warnings, [p.to_dict() for p in [*verdict.errors, *verdict.warnings]]


@needs_shared
async def test_etalab_irve_statique() -> None:
    path = OPEN_DATA / "etalab_schema-irve__statique_exemple-valide.csv"
    adapter = _adapter(path, mapping_file="builtin:irve_statique.yaml")
    emit = Collector()
    await adapter.scan(emit)
    entities, errors = _translate(adapter, emit.messages)
    (station,) = entities
    assert station["id"] == "urn:ngsi-ld:EVChargingStation:FRA68P68021001"
    assert station["location"]["value"] == {"type": "Point", "coordinates": [7.487105, 48.345345]}
    assert station["socketType"]["value"] == ["Wall_Euro", "Type2"]
    assert station["capacity"]["value"] == 10
    assert station["allowedVehicleType"]["value"] == ["car"]  # not reserved to two-wheelers
    verdict = validate(station)
    assert verdict.valid, [p.to_dict() for p in verdict.errors]
    # Checked against the bundled EVChargingStation schema; only the extra roaming id is flagged.
    assert [(p.rule, p.pointer) for p in verdict.warnings] == [("unknown-attribute", "/stationCode")]
    # The second example row uses a Spanish roaming id: not a French station identifier.
    assert errors == [
        "etalab_schema-irve__statique_exemple-valide.csv line 3: attribute 'stationCode' "
        "(select 'id_station_itinerance'): 'ESZUNP395912133460086982' does not match the pattern "
        "'FR[A-Z0-9]{3}P[A-Z0-9]{1,30}'"
    ]
    _golden("irve_statique", entities)


@needs_shared
async def test_etalab_stationnement() -> None:
    path = OPEN_DATA / "etalab_schema-stationnement__exemple-valide.csv"
    adapter = _adapter(path, mapping_file="builtin:stationnement.yaml")
    emit = Collector()
    await adapter.scan(emit)
    entities, errors = _translate(adapter, emit.messages)
    assert errors == []
    first, second = entities
    assert first["maximumAllowedHeight"] == {"type": "Property", "value": 2.9, "unitCode": "MTR"}
    assert "maximumAllowedHeight" not in second  # N/A: no height limit
    assert first["totalSpotNumber"]["value"] == 325
    for entity in entities:
        verdict = validate(entity)
        assert verdict.valid and not verdict.warnings, [p.to_dict() for p in [*verdict.errors, *verdict.warnings]]
    _golden("stationnement", entities)


GEOJSON_MAPPING = {
    "entity_type": "Streetlight",
    "id": "urn:ngsi-ld:Streetlight:{properties.ref}",
    "attributes": {
        "location": {"geometry": "geometry", "crs": "EPSG:2154"},
        "status": {"select": "properties.etat", "map": {"OK": "ok", "HS": "defectiveLamp"}},
    },
}


async def test_geojson_features_one_message_each(tmp_path: Path) -> None:
    features = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [771020.0, 6279310.0]},
         "properties": {"ref": "A", "etat": "OK"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [771055.5, 6279310.0]},
         "properties": {"ref": "B", "etat": "??"}},
    ]
    (tmp_path / "points.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    adapter = _adapter(tmp_path, mapping=GEOJSON_MAPPING)
    emit = Collector()
    await adapter.scan(emit)
    entities, errors = _translate(adapter, emit.messages)
    assert [e["id"] for e in entities] == ["urn:ngsi-ld:Streetlight:A"]
    assert errors[0].startswith("points.geojson feature 1: attribute 'status'")
    _golden("geojson_points", entities)


async def test_json_items_with_the_mapping_selector(tmp_path: Path) -> None:
    doc = {"export": {"lampes": [{"ref": "1", "x": 3.88, "y": 43.61}, {"ref": "2", "x": 3.881, "y": 43.611}]}}
    (tmp_path / "export.json").write_text(json.dumps(doc))
    mapping = {"entity_type": "Streetlight", "items": "export.lampes", "id": "urn:ngsi-ld:Streetlight:{ref}",
               "attributes": {"location": {"point": {"x": "x", "y": "y"}}, "status": {"value": "ok"}}}
    adapter = _adapter(tmp_path / "export.json", mapping=mapping)
    emit = Collector()
    await adapter.scan(emit)
    assert [m.metadata["item"] for m in emit.messages] == ["0", "1"]
    entities, _ = _translate(adapter, emit.messages)
    assert [e["id"] for e in entities] == ["urn:ngsi-ld:Streetlight:1", "urn:ngsi-ld:Streetlight:2"]


async def test_windows_1252_export_is_decoded(tmp_path: Path) -> None:
    text = INVENTORY.read_text(encoding="utf-8").splitlines()[:2]
    (tmp_path / "export.csv").write_bytes("\r\n".join(text).encode("cp1252"))
    adapter = _adapter(tmp_path, mapping_file="builtin:streetlights_gis.yaml")
    emit = Collector()
    await adapter.scan(emit)
    (entity,) = adapter.to_entities(emit.messages[0])
    assert entity["address"]["value"]["streetAddress"] == "Avenue du Pirée"


async def test_file_over_the_limit_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.csv").write_text("a;b\n" + "1;2\n" * 100)
    adapter = _adapter(tmp_path, mapping_file="builtin:streetlights_gis.yaml", max_file_bytes=100)
    emit = Collector()
    assert await adapter.scan(emit) == 0
    assert adapter.stats["refused_files"] == 1


async def test_watched_folder_imports_new_and_changed_files_once(tmp_path: Path) -> None:
    inbox, state = tmp_path / "inbox", tmp_path / "state"
    inbox.mkdir()
    config = {"mapping_file": "builtin:streetlights_gis.yaml", "pattern": "*.csv", "interval": 0.02,
              "state_dir": str(state)}
    adapter = _adapter(inbox, **config)
    emit = Collector()
    task = asyncio.create_task(adapter.run(emit))
    (inbox / "ignored.txt.bak").write_text("not an import")
    (inbox / "lot1.csv").write_bytes(INVENTORY.read_bytes())
    for _ in range(500):
        if len(emit.messages) >= 9:
            break
        await asyncio.sleep(0.01)
    await adapter.stop()
    await asyncio.wait_for(task, 5)
    assert len(emit.messages) == 9

    # After a restart, the same file is not imported again; a changed file is.
    again = _adapter(inbox, **config)
    emit2 = Collector()
    assert await again.scan(emit2) == 0
    lines = INVENTORY.read_text(encoding="utf-8").splitlines()
    (inbox / "lot1.csv").write_text("\r\n".join([*lines[:2], lines[3]]), encoding="utf-8")
    assert await again.scan(emit2) == 2
    keys_first = {m.metadata["line"]: m.idempotency_key for m in emit.messages}
    assert emit2.messages[0].idempotency_key != keys_first["2"]  # new file content, new keys


async def test_idempotency_keys_are_stable_for_the_same_file() -> None:
    first, second = Collector(), Collector()
    await _adapter(INVENTORY, mapping_file="builtin:streetlights_gis.yaml").scan(first)
    await _adapter(INVENTORY, mapping_file="builtin:streetlights_gis.yaml").scan(second)
    assert [m.idempotency_key for m in first.messages] == [m.idempotency_key for m in second.messages]
    assert len({m.idempotency_key for m in first.messages}) == 9


async def test_missing_folder_is_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    adapter = _adapter(tmp_path / "absent", mapping_file="builtin:streetlights_gis.yaml", interval=0.01)
    task = asyncio.create_task(adapter.run(Collector()))
    for _ in range(500):
        if adapter.stats["scans"] >= 3:
            break
        await asyncio.sleep(0.01)
    await adapter.stop()
    await asyncio.wait_for(task, 5)
    assert adapter.stats["scans"] >= 3
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1


def test_a_whole_csv_file_in_one_message_translates_row_by_row() -> None:
    adapter = _adapter(INVENTORY, mapping_file="builtin:streetlights_gis.yaml")
    lines = INVENTORY.read_bytes().splitlines()
    good = b"\r\n".join([lines[0], lines[1], lines[2]])
    raw = RawMessage("import", "", "2025-01-01T00:00:00Z", good, "k", content_type="text/csv")
    assert [e["name"]["value"] for e in adapter.to_entities(raw)] == ["PL-0001", "PL-0002"]
    bad = RawMessage("import", "", "2025-01-01T00:00:00Z", INVENTORY.read_bytes(), "k")
    with pytest.raises(TranslationError, match=r"^file line 4: attribute 'location'"):
        adapter.to_entities(bad)
