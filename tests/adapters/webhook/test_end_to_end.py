"""End to end: signed pushes to the webhook adapter, through the runtime, into the store."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from adapters.webhook import WebhookAdapter, sign, signing_key
from gateway.runtime.state import RUNTIME
from gateway.validation import validate
from tests.conftest import free_port
from tests.runtime.support import config, eventually, running

ROOT = Path(__file__).resolve().parents[3]
BODY = (ROOT / "adapters/webhook/fixtures/parking_events.json").read_bytes()


async def test_signed_push_reaches_the_store_and_a_forgery_does_not(tmp_path: Path) -> None:
    secret = "whsec_" + base64.b64encode(b"parking-vendor-shared-secret-01").decode()
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    port = free_port()
    source = {"name": "parking", "adapter": "webhook", "tenant": "",
              "config": {"listen": {"host": "127.0.0.1", "port": port, "path": "/hook"},
                         "secret_file": str(secret_file), "mapping_file": "builtin:parking_events.yaml"}}
    async with running(config(tmp_path, sources=[source]), adapters={"webhook": WebhookAdapter}) as (_, app):
        rt = app[RUNTIME]
        await eventually(lambda: rt.sources["parking"].status.state == "running", what="source running")
        adapter: Any = rt.sources["parking"].adapter  # a WebhookAdapter: its listener state
        await eventually(lambda: adapter.ready.is_set(), what="listener bound")
        url = f"http://127.0.0.1:{port}/hook"
        stamp = str(int(time.time()))
        good = {"webhook-id": "evt-1", "webhook-timestamp": stamp,
                "webhook-signature": sign(signing_key(secret), "evt-1", stamp, BODY)}
        forged_body = BODY.replace(b'"occupied": true', b'"occupied": false')
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=forged_body, headers=good) as resp:
                assert resp.status == 401
            async with http.post(url, data=BODY, headers=good) as resp:
                assert resp.status == 202
            async with http.post(url, data=BODY, headers=good) as resp:
                assert resp.status == 200  # the vendor's redelivery
        spot = await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:ParkingSpot:ZONE-GARE:B12"),
                                what="the parking spot in the store")
        assert spot["status"]["value"] == "occupied"
        assert validate(spot).valid
        assert adapter.stats["bad_signature"] == 1 and adapter.stats["duplicates"] == 1


async def test_unsigned_device_push_with_an_api_key_reaches_the_store_and_a_bad_epoch_is_a_dead_letter(
    tmp_path: Path,
) -> None:
    key = "fleet-key-for-unsigned-devices-5e1"
    port = free_port()
    mapping = {
        "entity_type": "AirQualityObserved",
        "id": "urn:ngsi-ld:AirQualityObserved:{$query.i}",
        "tenant": "$headers.fiware-service",
        "attributes": {
            "no2": {"select": "no2", "unit": "GQ"},
            "dateObserved": {"select": "ts", "epoch": "s"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.8767, 43.6108]}},
        },
    }
    source = {"name": "devices", "adapter": "webhook", "tenant": "",
              "config": {"listen": {"host": "127.0.0.1", "port": port, "path": "/iot/json"},
                         "auth": {"type": "api_key", "in": "query", "name": "k", "api_key": key},
                         "mapping": mapping}}
    async with running(config(tmp_path, sources=[source]), adapters={"webhook": WebhookAdapter}) as (base, app):
        rt = app[RUNTIME]
        await eventually(lambda: rt.sources["devices"].status.state == "running", what="source running")
        adapter: Any = rt.sources["devices"].adapter
        await eventually(lambda: adapter.ready.is_set(), what="listener bound")
        url = f"http://127.0.0.1:{port}/iot/json"
        headers = {"Fiware-Service": "openiot", "Authorization": "Bearer not-for-the-mapping"}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, params={"k": "wrong", "i": "aq-1"}, json={"no2": 1, "ts": 1}) as resp:
                assert resp.status == 401
            async with http.post(url, params={"k": key, "i": "aq-1"}, headers=headers,
                                 json={"no2": 30, "ts": 1764756000}) as resp:
                assert resp.status == 202
            async with http.post(url, params={"k": key, "i": "aq-2"}, headers=headers,
                                 json={"no2": 31, "ts": "noon"}) as resp:
                assert resp.status == 202  # accepted: the sender retrying would not help
            stored = await eventually(lambda: rt.embedded_store.get("openiot", "urn:ngsi-ld:AirQualityObserved:aq-1"),
                                      what="the measure in tenant openiot")
            letters = await eventually(lambda: rt.deadletters.list(source="devices", limit=10),
                                       what="the dead letter")
            async with http.get(f"{base}/admin/deadletters/{letters[0].id}") as resp:
                letter = await resp.json()
        assert stored["no2"]["value"] == 30 and stored["dateObserved"]["value"] == "2025-12-03T10:00:00Z"
        assert validate(stored).valid
        assert len(letters) == 1 and letter["tenant"] == "openiot"
        assert letter["pointer"] == "/ts"
        assert "'noon' is not a number (epoch: s reads POSIX time in seconds)" in letter["reason"]
        text = json.dumps(letter)
        assert key not in text and "not-for-the-mapping" not in text  # neither the key nor Authorization
        assert letter["metadata"]["query.i"] == "aq-2"
        assert adapter.stats["bad_api_key"] == 1
