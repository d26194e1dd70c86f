"""Throughput of the declarative mapping: vendor pages (REST) and CSV rows (files) to NGSI-LD entities."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.files import csv_records
from adapters.kit.mapping import apply_mapping, compile_mapping, load_mapping, map_item
from adapters.kit.simulators.streetlighting import luminaire

ROOT = Path(__file__).resolve().parent.parent
ITEMS = 20_000


def bench_rest_pages() -> None:
    """Luminarias pages of 100 items: JMESPath, value maps, Wh→kWh, Lambert-93→WGS84, times."""
    mapping = load_mapping(ROOT / "adapters/rest_mapping/examples/luminarias.yaml")
    now = 1_736_899_348.0
    pages = [{"luminarias": [luminaire(i, now) for i in range(p * 100, (p + 1) * 100)]} for p in range(ITEMS // 100)]
    started = time.perf_counter()
    count = sum(len(apply_mapping(mapping, page)) for page in pages)
    elapsed = time.perf_counter() - started
    print(f"rest_mapping luminarias: {count} entities in {elapsed:.2f} s = {count / elapsed:,.0f} entities/s")


def bench_push_measures() -> None:
    """Device measures pushed over HTTP: id from $query.i, tenant from a header, epoch ms, a static location."""
    mapping = compile_mapping({
        "entity_type": "AirQualityObserved", "id": "urn:ngsi-ld:AirQualityObserved:{$query.i}",
        "tenant": "$headers.fiware-service", "observed_at": {"select": "ts", "epoch": "ms"},
        "attributes": {
            "temperature": {"select": "t", "unit": "CEL"}, "no2": {"select": "no2", "unit": "GQ"},
            "dateObserved": {"select": "ts", "epoch": "ms", "observed_at": False},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.8767, 43.6108]},
                         "observed_at": False},
        },
    })
    work = [({"t": 20 + i % 10, "no2": i % 90, "ts": 1_764_756_000_000 + i},
             {"query.i": f"aq-{i % 1000}", "headers.fiware-service": "openiot"}) for i in range(ITEMS)]
    started = time.perf_counter()
    count = sum(1 for item, context in work if map_item(mapping, item, context=context))
    elapsed = time.perf_counter() - started
    print(f"push measures ($query, $headers, epoch, static): {count} entities in {elapsed:.2f} s = "
          f"{count / elapsed:,.0f} entities/s ({elapsed / count * 1e6:.1f} µs each)")


def bench_csv_rows() -> None:
    """GIS inventory rows (';', decimal commas, Lambert-93, local dates) parsed and mapped one by one."""
    import json

    mapping = load_mapping(ROOT / "adapters/files/examples/streetlights_gis.yaml")
    header = "id_pl;commune;voie;x_l93;y_l93;hauteur_feu;puissance_w;modele;date_pose;etat;armoire"
    rows = [f"PL-{i};Montpellier;Rue {i % 50};{771020 + i % 900},50;{6279310 + i % 700},25;8,5;60;LED-60;"
            f"2019-03-14;bon état;AR-{i % 30}" for i in range(ITEMS)]
    text = "\n".join([header, *rows])
    started = time.perf_counter()
    count = 0
    for record in csv_records(text, None):
        map_item(mapping, json.loads(record.payload), where=f"line {record.position}")
        count += 1
    elapsed = time.perf_counter() - started
    print(f"files streetlights_gis: {count} rows in {elapsed:.2f} s = {count / elapsed:,.0f} rows/s")


if __name__ == "__main__":
    bench_rest_pages()
    bench_csv_rows()
    bench_push_measures()
