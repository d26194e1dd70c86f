"""End to end: signed pushes to the webhook adapter, through the runtime, into the store."""

from __future__ import annotations

import base64
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
