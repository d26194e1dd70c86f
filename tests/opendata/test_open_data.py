"""Open-data export: only what communes share with `public`, never personal data, valid GeoJSON/CSV/DCAT-AP.

A store (SQLite and PostgreSQL) holds, for two communes, public and non-public types, attributes a
rule excludes, and an Open311 service request carrying its reporter's contact data. The export is
checked file by file, and every output byte is searched for what must not be there.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.model import entity, geo, point, prop, rel
from gateway.opendata.export import LICENCES, OpenDataSettings, export_open_data
from gateway.store import sharing
from gateway.store.backends import open_storage

POLICY = """
version: 1
principals:
  syndicat:
    token: syndicat-token-0123456789
tenants:
  lattes:
    label: Lattes
    insee: "34129"
    share:
      - with: [syndicat]
        types: [Streetlight]
      - with: [public]
        types: [AirQualityObserved]
        exclude_attributes: [refDevice]
        coarsen: {location_grid_m: 500}
      - with: [public]
        types: [service_requests]
  perols:
    label: Pérols
    share:
      - with: [syndicat]
        types: [AirQualityObserved]
never_shared_attributes: [secretNote]
"""

AT = "2026-03-01T10:00:00Z"
PRECISE = (3.9012345, 43.5678901)
FORBIDDEN = [
    # personal data of the Open311 reporter
    b"jean.dupont", b"Dupont", b"+33600000000", b"0467000000", b"123456", b"tt222111", b"Jean ",
    # types and communes not shared with the public
    b"Streetlight", b"WaterConsumptionObserved", b"perols", b"P\xc3\xa9rols", b"aq-9",
    # attributes a rule excludes or the policy calls personal
    b"refDevice", b"urn:ngsi-ld:Device:sensor-1", b"secretNote", b"only the owner",
    # the precise location before coarsening
    b"3.9012345", b"43.5678901",
]


def entities() -> dict[str, list[dict[str, Any]]]:
    aq = entity("AirQualityObserved", "urn:ngsi-ld:AirQualityObserved:aq-1",
                location=geo(point(*PRECISE)),
                no2=prop(21.5, unit="GQ", observed_at=AT),
                dateObserved=prop(AT),
                address=prop({"addressLocality": "Lattes", "postalCode": "34970",
                              "streetAddress": "Avenue de Montpellier, près du rond-point"}),
                refDevice=rel("urn:ngsi-ld:Device:sensor-1"),
                secretNote=prop("only the owner"))
    aq2 = entity("AirQualityObserved", "urn:ngsi-ld:AirQualityObserved:aq-2",
                 location=geo(point(3.95, 43.58)), no2=prop(30, unit="GQ", observed_at="2026-03-02T10:17:42Z"),
                 dateObserved=prop("2026-03-02T10:17:42Z"))
    # A clockwise exterior ring: RFC 7946 wants it counterclockwise in the export.
    clockwise = [[3.90, 43.56], [3.90, 43.57], [3.91, 43.57], [3.91, 43.56], [3.90, 43.56]]
    request = entity(
        "service_requests", "urn:ngsi-ld:service_requests:lattes:sr-1",
        service_request_id=prop("sr-1"), service_name=prop("Dépôt sauvage"),
        description=prop('Matelas et gravats, "urgent"\nsecond line'),
        status=prop("open", vendorStatus=prop("In progress")),
        location=geo({"type": "Polygon", "coordinates": [clockwise]}),
        email=prop("jean.dupont@example.org"), phone=prop("+33600000000"),
        first_name=prop("Jean "), last_name=prop("Dupont"), account_id=prop("123456"), device_id=prop("tt222111"),
        contactPoint=prop({"email": "jean.dupont@example.org", "telephone": "0467000000"}),
        extra=prop({"priority": "high", "email": "jean.dupont@example.org"}),
        requested_datetime=prop("2026-03-01T07:30:00Z", telephone=prop("0467000000")),
    )
    light = entity("Streetlight", "urn:ngsi-ld:Streetlight:l-1", location=geo(point(3.9, 43.57)), status=prop("ok"))
    water = entity("WaterConsumptionObserved", "urn:ngsi-ld:WaterConsumptionObserved:w-1",
                   acquisitionStageFailure=prop(1))
    perols = entity("AirQualityObserved", "urn:ngsi-ld:AirQualityObserved:aq-9", location=geo(point(3.95, 43.56)),
                    no2=prop(10, unit="GQ", observed_at=AT))
    return {"lattes": [aq, aq2, request, light, water], "perols": [perols]}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    # resolved outside the event loop: the PostgreSQL fixture starts its server synchronously
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else tmp_path / "store.sqlite"


@pytest.fixture
async def storage(store_url: Any) -> Any:
    store = await open_storage(store_url, gc_tuning=False)
    for tenant, items in entities().items():
        result = await store.upsert(tenant, items)
        assert not result.errors, result.errors
    yield store
    await store.close()


@pytest.fixture
def policies(tmp_path: Path) -> sharing.Policies:
    path = tmp_path / "sharing.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return sharing.load(path)


async def test_export_publishes_only_public_data(storage: Any, policies: sharing.Policies, tmp_path: Path) -> None:
    out = tmp_path / "open"
    report = await export_open_data(storage, policies, OpenDataSettings(out, publisher="Syndicat du Lez"))
    assert sorted(report.types) == ["AirQualityObserved", "service_requests"]
    assert sorted(p.name for p in out.iterdir()) == [
        "AirQualityObserved.csv", "AirQualityObserved.geojson", "catalog.jsonld",
        "service_requests.csv", "service_requests.geojson"]
    for path in out.iterdir():
        data = path.read_bytes()
        for needle in FORBIDDEN:
            assert needle not in data, (path.name, needle)
        data.decode("utf-8")  # UTF-8 throughout


async def test_geojson_follows_rfc_7946(storage: Any, policies: sharing.Policies, tmp_path: Path) -> None:
    out = tmp_path / "open"
    await export_open_data(storage, policies, OpenDataSettings(out))
    aq = json.loads((out / "AirQualityObserved.geojson").read_bytes())
    assert aq["type"] == "FeatureCollection"
    assert "crs" not in json.dumps(aq)  # no crs member at any level (RFC 7946 §4)
    assert aq["licence"]["href"] == LICENCES["etalab-2.0"].iri
    features = {f["id"]: f for f in aq["features"]}
    assert sorted(features) == ["urn:ngsi-ld:AirQualityObserved:aq-1", "urn:ngsi-ld:AirQualityObserved:aq-2"]
    first = features["urn:ngsi-ld:AirQualityObserved:aq-1"]
    lon, lat = first["geometry"]["coordinates"]
    # longitude first, snapped to the centre of the 500 m cell, within 400 m of the true point
    assert [lon, lat] == list(sharing.snap(*PRECISE, 500))
    assert abs(lon - PRECISE[0]) < 0.005 and abs(lat - PRECISE[1]) < 0.005 and (lon, lat) != PRECISE
    props = first["properties"]
    assert props["commune"] == "Lattes" and props["insee"] == "34129"
    assert props["no2"] == 21.5 and props["no2.unitCode"] == "GQ" and props["no2.observedAt"] == AT
    assert props["address"]["postalCode"] == "34970"
    sr = json.loads((out / "service_requests.geojson").read_bytes())
    (feature,) = sr["features"]
    ring = feature["geometry"]["coordinates"][0]
    area2 = sum(a[0] * b[1] - b[0] * a[1] for a, b in itertools.pairwise(ring))
    assert area2 > 0  # counterclockwise exterior (right-hand rule, §3.1.6)
    assert ring[0] == ring[-1] and len(ring) == 5
    assert set(feature["properties"]) == {"id", "type", "commune", "insee", "service_request_id", "service_name",
                                          "description", "status", "extra", "requested_datetime"}
    assert feature["properties"]["extra"] == {"priority": "high"}


async def test_csv_columns_and_quoting(storage: Any, policies: sharing.Policies, tmp_path: Path) -> None:
    out = tmp_path / "open"
    await export_open_data(storage, policies, OpenDataSettings(out))
    raw = (out / "AirQualityObserved.csv").read_bytes()
    assert b"\r\n" in raw and b";" not in raw
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert list(rows[0]) == ["id", "type", "commune", "insee", "address.addressLocality", "address.postalCode",
                             "address.streetAddress", "dateObserved", "location.longitude", "location.latitude",
                             "no2", "no2.unitCode", "no2.observedAt"]
    first = rows[0]
    assert first["id"] == "urn:ngsi-ld:AirQualityObserved:aq-1"
    assert first["address.streetAddress"] == "Avenue de Montpellier, près du rond-point"  # a comma, quoted
    assert (float(first["location.longitude"]), float(first["location.latitude"])) == sharing.snap(*PRECISE, 500)
    assert first["no2"] == "21.5" and rows[1]["no2"] == "30"
    sr = list(csv.DictReader(io.StringIO((out / "service_requests.csv").read_text(encoding="utf-8"), newline="")))
    assert sr[0]["description"] == 'Matelas et gravats, "urgent"\nsecond line'
    assert sr[0]["service_name"] == "Dépôt sauvage"
    assert json.loads(sr[0]["location"])["type"] == "Polygon"
    assert "extra.priority" in sr[0] and "extra.email" not in sr[0]


async def test_dcat_ap_catalogue(storage: Any, policies: sharing.Policies, tmp_path: Path) -> None:
    out = tmp_path / "open"
    await export_open_data(storage, policies, OpenDataSettings(out, licence="odbl", publisher="Syndicat du Lez",
                                                               base_url="https://data.example.org/od/",
                                                               contact="opendata@example.org"))
    catalog = json.loads((out / "catalog.jsonld").read_bytes())
    assert catalog["@context"]["dcat"] == "http://www.w3.org/ns/dcat#"
    assert catalog["@type"] == "dcat:Catalog"
    for key in ("dct:title", "dct:description", "dct:publisher", "dcat:dataset", "dct:license", "dct:modified"):
        assert catalog[key], key
    assert catalog["dct:license"]["@id"] == "https://opendatacommons.org/licenses/odbl/1-0/"
    assert catalog["dct:publisher"]["foaf:name"] == "Syndicat du Lez"
    datasets = {d["dct:identifier"]: d for d in catalog["dcat:dataset"]}
    assert sorted(datasets) == ["AirQualityObserved", "service_requests"]
    aq = datasets["AirQualityObserved"]
    for key in ("dct:title", "dct:description", "dct:publisher", "dct:spatial", "dct:temporal", "dct:modified",
                "dcat:distribution", "dct:conformsTo"):
        assert aq[key], key
    assert aq["dct:temporal"]["dcat:startDate"]["@value"] == AT
    assert aq["dct:temporal"]["dcat:endDate"]["@value"] >= "2026-03-02T10:00:00Z"
    assert re.fullmatch(r"[0-9T:.\-]+Z", aq["dct:modified"]["@value"])
    assert aq["dct:spatial"]["dcat:bbox"]["@value"].startswith("POLYGON((3.9")
    assert aq["dct:spatial"]["locn:geographicName"] == ["Lattes"]
    assert aq["dct:conformsTo"]["@id"].endswith("/AirQualityObserved")
    assert aq["dcat:contactPoint"] == {"@type": "vcard:Organization", "vcard:fn": "Syndicat du Lez",
                                       "vcard:hasEmail": {"@id": "mailto:opendata@example.org"}}
    formats = {d["dct:format"]["@id"].rsplit("/", 1)[-1]: d for d in aq["dcat:distribution"]}
    assert sorted(formats) == ["CSV", "GEOJSON"]
    geojson = formats["GEOJSON"]
    assert geojson["dcat:accessURL"]["@id"] == "https://data.example.org/od/AirQualityObserved.geojson"
    assert geojson["dct:license"]["@id"] == "https://opendatacommons.org/licenses/odbl/1-0/"
    assert geojson["dcat:mediaType"]["@id"].endswith("application/geo+json")
    size = (out / "AirQualityObserved.geojson").stat().st_size
    assert geojson["dcat:byteSize"]["@value"] == str(size)
    import hashlib

    digest = hashlib.sha256((out / "AirQualityObserved.geojson").read_bytes()).hexdigest()
    assert geojson["spdx:checksum"]["spdx:checksumValue"]["@value"] == digest
    # An independent JSON-LD processor reads it as DCAT (the @context is inline: nothing is fetched).
    from pyld import jsonld

    graph = jsonld.flatten(catalog)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for node in graph:
        for kind in node.get("@type", []):
            by_type.setdefault(kind, []).append(node)
    dcat, dct = "http://www.w3.org/ns/dcat#", "http://purl.org/dc/terms/"
    assert len(by_type[dcat + "Catalog"]) == 1 and len(by_type[dcat + "Dataset"]) == 2
    assert len(by_type[dcat + "Distribution"]) == 4
    for dist in by_type[dcat + "Distribution"]:
        assert dist[dct + "license"] == [{"@id": "https://opendatacommons.org/licenses/odbl/1-0/"}]
        assert dist[dcat + "accessURL"][0]["@id"].startswith("https://data.example.org/od/")
    for ds in by_type[dcat + "Dataset"]:
        assert {dct + "title", dct + "description", dct + "publisher", dct + "spatial", dct + "temporal",
                dct + "modified", dcat + "distribution"} <= set(ds)


def _filled_store(tmp_path: Path) -> Path:
    """A SQLite store in ``tmp_path/data`` holding :func:`entities`; returns the policy file written beside it."""
    import asyncio

    async def fill() -> None:
        store = await open_storage(tmp_path / "data" / "store.sqlite", gc_tuning=False)
        for tenant, items in entities().items():
            await store.upsert(tenant, items)
        await store.close()

    (tmp_path / "data").mkdir()
    asyncio.run(fill())
    policy = tmp_path / "sharing.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return policy


def test_cli_open_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = _filled_store(tmp_path)
    out = tmp_path / "open"
    code = main(["open-data", "--data", str(tmp_path / "data"), "--sharing", str(policy), "--out", str(out),
                 "--licence", "odbl", "--publisher", "Syndicat du Lez"])
    assert code == 0
    assert "3 entities of 2 types" in capsys.readouterr().out
    assert (out / "catalog.jsonld").is_file()
    assert main(["open-data", "--data", str(tmp_path / "nothing"), "--sharing", str(policy), "--out", str(out)]) == 2
    assert "no store at" in capsys.readouterr().err
    assert main(["open-data", "--data", str(tmp_path / "data"), "--sharing", str(policy), "--out", str(out),
                 "--base-url", "ftp://x"]) == 2
    assert "is not an http(s) URL" in capsys.readouterr().err
    policy.write_text("version: 2\ntenants: {}\n", encoding="utf-8")
    assert main(["open-data", "--data", str(tmp_path / "data"), "--sharing", str(policy), "--out", str(out)]) == 2
    assert "/version" in capsys.readouterr().err


def test_export_open_data_is_the_same_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`jonction export --open-data` writes what `jonction open-data` writes, and refuses what cannot apply."""
    policy = _filled_store(tmp_path)
    by_alias, by_command = tmp_path / "alias", tmp_path / "command"
    assert main(["export", "--open-data", "--data", str(tmp_path / "data"), "--sharing", str(policy),
                 "--out", str(by_alias), "--licence", "odbl"]) == 0
    assert main(["open-data", "--data", str(tmp_path / "data"), "--sharing", str(policy),
                 "--out", str(by_command), "--licence", "odbl"]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in by_alias.iterdir())
    assert names == sorted(p.name for p in by_command.iterdir()) and "catalog.jsonld" in names
    for name in names:
        if name.endswith((".geojson", ".csv")):
            assert (by_alias / name).read_bytes() == (by_command / name).read_bytes(), name
    assert main(["export", "--open-data", "--data", str(tmp_path / "data"), "--out", str(by_alias)]) == 2
    assert "--open-data needs --sharing" in capsys.readouterr().err
    assert main(["export", "--open-data", "--data", str(tmp_path / "data"), "--sharing", str(policy),
                 "--type", "ParkingSpot", "--out", str(by_alias)]) == 2
    assert "--type cannot narrow it" in capsys.readouterr().err


async def test_the_gateway_exports_on_a_schedule(tmp_path: Path) -> None:
    from tests.runtime.support import FakeAdapter, config, eventually, running

    policy = tmp_path / "sharing.yaml"
    policy.write_text("version: 1\ntenants:\n  lattes:\n    share:\n      - with: [public]\n"
                      "        types: [WasteContainer]\n", encoding="utf-8")
    out = tmp_path / "open"
    cfg = config(tmp_path, sources=[{"name": "bins", "adapter": "fake", "tenant": "lattes"}],
                 open_data={"every": 0.2, "out": str(out), "sharing": str(policy), "licence": "odbl"})
    FakeAdapter.instances.clear()
    async with running(cfg):
        await FakeAdapter.instances["bins"].send({"id": "m1", "device": "bin-1", "fill": 42, "at": AT})

        def exported() -> bool:
            path = out / "WasteContainer.csv"
            return path.is_file() and b"urn:ngsi-ld:WasteContainer:bin-1" in path.read_bytes()

        await eventually(exported, what="the periodic export")
        catalog = json.loads((out / "catalog.jsonld").read_bytes())
        assert [d["dct:identifier"] for d in catalog["dcat:dataset"]] == ["WasteContainer"]
        assert catalog["dct:license"]["@id"] == LICENCES["odbl"].iri
    FakeAdapter.instances.clear()


def test_open_data_config_is_checked(tmp_path: Path) -> None:
    from gateway.errors import ConfigInvalid
    from gateway.runtime.config import parse

    bad = tmp_path / "sharing.yaml"
    bad.write_text("version: 1\ntenants: {a: {share: [{with: [nobody], types: [X]}]}}\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        parse({"open_data": {"out": "x", "sharing": str(bad), "every": 0, "licence": "cc0"}})
    assert caught.value.problems == ["/open_data/licence: 'cc0' is not one of ['etalab-2.0', 'odbl']"]
    with pytest.raises(ConfigInvalid) as caught:
        parse({"open_data": {"out": "x", "sharing": str(bad), "every": 0}})
    assert "/open_data/sharing: /tenants/a/share/0/with: unknown principal 'nobody'" in caught.value.problems
    assert "/open_data/every: must be more than 0" in caught.value.problems


async def test_a_type_no_longer_public_is_unpublished(storage: Any, tmp_path: Path) -> None:
    out = tmp_path / "open"
    out.mkdir()
    (out / "README.txt").write_text("kept\n", encoding="utf-8")
    path = tmp_path / "sharing.yaml"
    path.write_text(POLICY, encoding="utf-8")
    await export_open_data(storage, sharing.load(path), OpenDataSettings(out))
    assert (out / "service_requests.csv").is_file()
    first = list(csv.DictReader(io.StringIO((out / "AirQualityObserved.csv").read_text(encoding="utf-8"))))
    assert sorted(r["no2.observedAt"] for r in first) == ["2026-03-01T10:00:00Z", "2026-03-02T10:17:42Z"]
    # the commune withdraws its service requests from the public, and asks for hourly times
    path.write_text(POLICY.replace("        types: [service_requests]\n", "        types: [Alert]\n")
                    .replace("coarsen: {location_grid_m: 500}", "coarsen: {location_grid_m: 500, temporal: hourly}"),
                    encoding="utf-8")
    report = await export_open_data(storage, sharing.load(path), OpenDataSettings(out))
    assert sorted(report.types) == ["AirQualityObserved"]
    assert sorted(p.name for p in out.iterdir()) == [
        "AirQualityObserved.csv", "AirQualityObserved.geojson", "README.txt", "catalog.jsonld"]
    aq = json.loads((out / "AirQualityObserved.geojson").read_bytes())
    times = sorted(f["properties"]["no2.observedAt"] for f in aq["features"])
    assert times == ["2026-03-01T10:00:00Z", "2026-03-02T10:00:00Z"]  # 10:17:42 shown as its hour
    rows = list(csv.DictReader(io.StringIO((out / "AirQualityObserved.csv").read_text(encoding="utf-8"))))
    assert sorted(r["no2.observedAt"] for r in rows) == ["2026-03-01T10:00:00Z", "2026-03-02T10:00:00Z"]
