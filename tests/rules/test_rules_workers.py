"""Rules under ``jonction run --workers 2``: the workers ingest, the parent publishes and runs the rules.

The rules engine observes the embedded sink, which only the parent runs, so readings received by
either worker are evaluated once, in one process: one Alert and one work order, and one close call
when the condition clears.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.model import epoch_time
from tests.conftest import free_port
from tests.rules.support import FakeGmao
from tests.runtime.support import eventually
from tests.runtime.test_workers import LINK, Gateway, _port_open, ngsi_source

pytestmark = pytest.mark.slow

TOKEN = "gmao-token-workers-41c"
BIN = "urn:ngsi-ld:WasteContainer:bin-7"


def notification(fill: float, seconds_ago: float) -> dict[str, Any]:
    """One NGSI v2 notification of ``bin-7`` at ``fill``."""
    return {"subscriptionId": "sub-rules", "data": [{
        "id": BIN, "type": "WasteContainer",
        "fillingLevel": {"type": "Number", "value": fill,
                         "metadata": {"TimeInstant": {"type": "DateTime",
                                                      "value": epoch_time(time.time() - seconds_ago)}}},
        "location": {"type": "geo:json", "value": {"type": "Point", "coordinates": [3.87, 43.6]}}}]}


async def post(port: int, body: dict[str, Any]) -> None:
    """Each on a new connection, so that the kernel spreads them over both workers."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http, http.post(
            f"http://127.0.0.1:{port}/v2/notify", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def test_two_workers_open_one_alert_and_one_work_order_and_close_it(tmp_path: Path) -> None:
    gmao = FakeGmao(TOKEN)
    await gmao.start()
    notify_port = free_port()
    gw = Gateway(tmp_path, [ngsi_source(notify_port)])
    doc = yaml.safe_load(gw.config.read_text(encoding="utf-8"))
    doc["rules"] = {"tick": 0.1, "targets": {"gmao": {
        "kind": "webhook", "url": f"{gmao.url}/work-orders", "bearer": {"token": TOKEN},
        "poll": {"url": f"{gmao.url}/work-orders/${{workOrderId}}", "every": "1h"},
        "close": {"url": f"{gmao.url}/work-orders/${{workOrderId}}/close", "body": {"status": "closed"}}}},
        "rules": [{"id": "full-bin", "types": ["WasteContainer"], "when": "fillingLevel>=0.9",
                   "actions": ["gmao"]}]}
    gw.config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    try:
        await gw.start()
        await eventually(lambda: _port_open(notify_port), what="shared listener")
        workers = (await gw.get("/admin/workers"))["workers"]
        assert [w["index"] for w in workers] == [0, 1] and all(w["running"] for w in workers)
        for i in range(12):  # full, reported twelve times over both workers
            await post(notify_port, notification(0.9 + i / 200, 60 - i))
        await eventually(lambda: len(gmao.orders) == 1, within=60, what="the work order")

        async def alerts() -> list[dict[str, Any]]:
            async with aiohttp.ClientSession() as http, http.get(
                    f"{gw.base}/ngsi-ld/v1/entities", params={"type": "Alert", "options": "keyValues"},
                    headers=LINK) as resp:
                assert resp.status == 200, await resp.text()
                found: list[dict[str, Any]] = await resp.json()
                return found

        async def rules_idle() -> bool:
            view = await gw.get("/admin/rules")
            return bool(view["calls"]) and all(c["state"] == "polling" for c in view["calls"])

        await eventually(rules_idle, within=60, what="the work order recorded")
        [alert] = await alerts()
        assert alert["alertSource"] == BIN and alert["alertStatus"] == "open"
        assert len(gmao.posts) == 1 and gmao.posts[0]["asset"] == BIN
        await post(notify_port, notification(0.1, 0))  # emptied

        async def closed() -> Any:
            found = await alerts()
            return found if len(found) == 1 and found[0].get("alertStatus") == "closed" else None

        [done] = await eventually(closed, within=60, what="the alert closed")
        assert done["id"] == alert["id"] and done["closedBy"] == "conditionCleared"
        await eventually(lambda: len(gmao.closes) == 1, within=60, what="the close call")
        assert gmao.closes[0]["id"] == "WO-0001" and gmao.orders["WO-0001"]["status"] == "closed"
        assert len(gmao.posts) == 1
        assert await gw.stop() == 0
    finally:
        gw.kill()
        await gmao.stop()
