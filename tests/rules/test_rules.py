"""Rules and interventions, end to end: a real gateway with its embedded store on disk, a fake GMAO
work-order API and a fake Open311 endpoint on loopback.

A condition held long enough opens one Alert and one work order (not one per reading); the
condition clearing closes the Alert; a closed work order closes it too; a lamp failure opens an
Open311 request; a refusal ends as a dead letter visible on the Alert; a restart neither
duplicates nor forgets; rate limits hold calls back; a bad rules file names its pointer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.errors import ConfigInvalid
from gateway.model import epoch_time
from gateway.rules import config as rules_config
from gateway.rules.engine import RulesEngine
from gateway.runtime.config import GatewayConfig, parse
from gateway.runtime.state import RUNTIME
from tests.conftest import ROOT
from tests.rules.support import FakeGmao, FakeOpen311, PassAdapter
from tests.runtime.support import eventually, running

TOKEN = "gmao-token-7f3a9c"
API_KEY = "open311-key-5b2e"
BIN2 = "urn:ngsi-ld:WasteContainer:bin-2"
LAMP = "urn:ngsi-ld:Streetlight:lamp-42"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMAO_TOKEN", TOKEN)
    monkeypatch.setenv("OPEN311_KEY", API_KEY)
    PassAdapter.instances.clear()


@pytest.fixture
async def gmao() -> AsyncIterator[FakeGmao]:
    server = FakeGmao(TOKEN)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def open311() -> AsyncIterator[FakeOpen311]:
    server = FakeOpen311(API_KEY)
    await server.start()
    yield server
    await server.stop()


def targets(gmao_url: str, open311_url: str = "http://127.0.0.1:9", **gmao_extra: Any) -> dict[str, Any]:
    return {
        "gmao": {"kind": "webhook", "url": f"{gmao_url}/work-orders", "bearer": {"token_env": "GMAO_TOKEN"},
                 "body": {"title": "${title}", "asset": "${alertSource}", "priority": "${severity}",
                          "level": "${fillingLevel}", "note": "${description}"},
                 "poll": {"url": f"{gmao_url}/work-orders/${{workOrderId}}", "every": 0.05,
                          "closed": ["closed", "done"]},
                 "retries": 1, "backoff": 0.01, **gmao_extra},
        "city": {"kind": "open311", "url": f"{open311_url}/requests.json", "api_key_env": "OPEN311_KEY",
                 "service_code": "STL-01", "retries": 0},
    }


FULL_BIN = {"id": "full-bin", "title": "Container full", "types": ["WasteContainer"], "when": "fillingLevel>=0.9",
            "for": "30m", "severity": "high", "category": "environment", "subCategory": "waste",
            "description": "${entityId} is ${fillingLevel} full", "actions": ["gmao"]}
LAMP_OUT = {"id": "lamp-out", "title": "Lamp failure", "types": ["Streetlight"],
            "when": 'status=="defectiveLamp"', "severity": "medium", "category": "security",
            "description": "Lamp ${entityId} is out", "actions": ["city"]}


def config(tmp: Path, rules: Any, store: dict[str, Any] | None = None) -> GatewayConfig:
    return parse({
        "embedded_store": store or {},
        "server": {"host": "127.0.0.1", "port": 0},
        "data_dir": str(tmp / "data"),
        "publisher": {"linger": 0.005, "backoff_initial": 0.05, "backoff_max": 0.5},
        "shutdown": {"drain_timeout": 5},
        "sources": [{"name": "field", "adapter": "pass"}],
        "rules": rules,
    }, base=tmp)


def bin_reading(fill: float, minutes_ago: float, device: str = "bin-1") -> dict[str, Any]:
    at = epoch_time(time.time() - minutes_ago * 60)
    return {"id": f"urn:ngsi-ld:WasteContainer:{device}", "type": "WasteContainer",
            "fillingLevel": {"type": "Property", "value": fill, "observedAt": at},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [3.87, 43.6]}}}


async def publish(app: Any, entities: list[dict[str, Any]]) -> None:
    """Send entities through the source and wait until the embedded store has them (and the rules saw them)."""
    rt = app[RUNTIME]
    await PassAdapter.instances["field"].send(entities)
    await eventually(lambda: rt.outbox.depth("embedded") == 0 and rt.publishers["embedded"].idle.is_set(),
                     what="publish")


async def alerts(app: Any) -> list[dict[str, Any]]:
    store = app[RUNTIME].embedded_store
    found: list[dict[str, Any]] = []
    for alert_id in dict.fromkeys([c["alert"] for c in engine(app).calls()] + _state_alerts(app)):
        doc = await store.get("", alert_id)  # once per id: the Alert may change between two reads
        if doc is not None:
            found.append(doc)
    return found


def _state_alerts(app: Any) -> list[str]:
    rows = engine(app).db.conn.execute("SELECT alert FROM rule_state WHERE alert IS NOT NULL").fetchall()
    return [r[0] for r in rows]


def engine(app: Any) -> RulesEngine:
    rules = app[RUNTIME].rules
    assert isinstance(rules, RulesEngine)
    return rules


def value(doc: dict[str, Any], name: str) -> Any:
    attr = doc.get(name)
    if isinstance(attr, dict):
        return attr.get("value", attr.get("object"))
    return attr




@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The ``embedded_store`` block: SQLite in the data directory, or a fresh PostgreSQL database."""
    if request.param == "postgresql":
        return {"database": request.getfixturevalue("postgres_url")}
    return {}


async def test_a_full_bin_held_30_minutes_opens_one_alert_and_one_work_order_and_clearing_closes_it(
        tmp_path: Path, gmao: FakeGmao, store: dict[str, Any]) -> None:
    rules = {"tick": 0.05, "targets": targets(gmao.url), "rules": [FULL_BIN]}
    async with running(config(tmp_path, rules, store), {"pass": PassAdapter}) as (_, app):
        # Full for 10 minutes only: not long enough.
        await publish(app, [bin_reading(0.95, 10)])
        await publish(app, [bin_reading(0.97, 5)])
        await engine(app).tick()
        assert engine(app).calls() == [] and gmao.posts == []
        # Another bin: under, then full since 40 minutes (five readings): one intervention.
        await publish(app, [bin_reading(0.5, 41, "bin-2")])
        for minutes in (40, 31, 20, 10, 1):
            await publish(app, [bin_reading(0.95, minutes, "bin-2")])
        await eventually(lambda: len(gmao.posts) == 1, what="the work order")
        for _ in range(3):
            await engine(app).tick()
        assert len(gmao.posts) == 1
        post = gmao.posts[0]
        assert post["asset"] == BIN2 and post["priority"] == "high" and post["level"] == 0.95
        assert post["note"] == f"{BIN2} is 0.95 full"
        [alert] = await alerts(app)
        assert alert["type"] == "Alert" and value(alert, "alertSource") == BIN2
        assert value(alert, "category") == "environment" and value(alert, "severity") == "high"
        assert value(alert, "subCategory") == "waste" and "validTo" not in alert
        assert value(alert, "alertStatus") == "open" and value(alert, "validFrom") <= value(alert, "dateIssued")
        [intervention] = await eventually(lambda: _interventions(app, alert["id"]), what="interventions")
        assert intervention["workOrderId"] == "WO-0001" and intervention["status"] == "open"
        # Back under the threshold: the Alert closes, no new work order.
        await publish(app, [bin_reading(0.2, 0, "bin-2")])
        [closed] = await alerts(app)
        assert closed["id"] == alert["id"] and "validTo" in closed
        assert value(closed, "closedBy") == "conditionCleared" and value(closed, "alertStatus") == "closed"
        assert len(gmao.posts) == 1


async def _interventions(app: Any, alert_id: str) -> list[dict[str, Any]] | None:
    doc = await app[RUNTIME].embedded_store.get("", alert_id)
    items = value(doc, "interventions") if doc else None
    return items if items and all("workOrderId" in i or "serviceRequestId" in i or "error" in i
                                  for i in items) else None


async def test_a_closed_work_order_closes_the_alert_and_it_does_not_reopen_while_the_bin_stays_full(
        tmp_path: Path, gmao: FakeGmao) -> None:
    rules = {"tick": 0.05, "targets": targets(gmao.url), "rules": [{**FULL_BIN, "for": 0}]}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [bin_reading(0.99, 1)])
        await eventually(lambda: len(gmao.orders) == 1, what="the work order")
        gmao.orders["WO-0001"]["status"] = "closed"  # the crew emptied it and closed the order

        async def closed() -> bool:
            [alert] = await alerts(app)
            return value(alert, "closedBy") == "workOrderClosed"

        await eventually(closed, what="the alert closed by its work order")
        await publish(app, [bin_reading(0.99, 0)])
        await engine(app).tick()
        assert len(gmao.posts) == 1 and len(await alerts(app)) == 1


async def test_a_lamp_failure_opens_an_open311_request_with_the_georeport_fields(
        tmp_path: Path, gmao: FakeGmao, open311: FakeOpen311) -> None:
    rules = {"tick": 0.05, "targets": targets(gmao.url, open311.url), "rules": [LAMP_OUT]}
    lamp = {"id": LAMP, "type": "Streetlight", "status": {"type": "Property", "value": "defectiveLamp"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.8357, 45.764]}}}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [lamp])
        await publish(app, [lamp])  # the same failure reported twice: one request
        await eventually(lambda: len(open311.requests) == 1, what="the service request")
        await engine(app).tick()
        assert len(open311.requests) == 1
        form = open311.requests[0]
        assert form["service_code"] == "STL-01" and form["api_key"] == API_KEY
        assert float(form["lat"]) == 45.764 and float(form["long"]) == 4.8357
        assert form["description"] == f"Lamp {LAMP} is out" and form["device_id"] == LAMP
        [alert] = await alerts(app)
        [item] = await eventually(lambda: _interventions(app, alert["id"]), what="interventions")
        assert item["serviceRequestId"] == "SR-00001"
        # Repaired: the Alert closes; Open311 has no call to close a request, none is sent.
        await publish(app, [{**lamp, "status": {"type": "Property", "value": "ok"}}])
        [closed] = await alerts(app)
        assert value(closed, "closedBy") == "conditionCleared" and len(open311.requests) == 1


@pytest.mark.parametrize("status", [400, 500])
async def test_a_refusing_target_ends_as_a_dead_letter_and_a_failure_on_the_alert(
        tmp_path: Path, gmao: FakeGmao, status: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    gmao.refuse = status
    rules = {"tick": 0.05, "targets": targets(gmao.url), "rules": [{**FULL_BIN, "for": 0}]}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [bin_reading(0.95, 0)])
        rt = app[RUNTIME]
        [letter] = await eventually(lambda: rt.deadletters.list(stage="intervention"), what="the dead letter")
        assert letter.sink == "gmao" and f"HTTP {status}" in letter.reason and "E_ASSET" in letter.reason
        assert TOKEN not in letter.reason and b"asset" in letter.raw.payload
        # 400 is refused at once; 500 is retried once (retries: 1) before it becomes a dead letter.
        assert len(gmao.posts) == (1 if status == 400 else 2)
        [alert] = await alerts(app)

        async def failure() -> Any:
            doc = await rt.embedded_store.get("", alert["id"])
            return value(doc, "interventionStatus") if doc is not None else None

        text = await eventually(lambda: _failed(failure), what="the failure on the alert")
        assert text.startswith(f"failed: gmao: HTTP {status}") and "E_ASSET" in text
        [call] = engine(app).calls()
        assert call["state"] == "failed"
    assert "intervention refused" in caplog.text and TOKEN not in caplog.text


async def _failed(read: Any) -> Any:
    text = await read()
    return text if isinstance(text, str) and text.startswith("failed") else None


async def test_a_restart_neither_duplicates_nor_forgets(tmp_path: Path, gmao: FakeGmao) -> None:
    rules = {"tick": 0.05, "targets": targets(gmao.url, retries=5, backoff=0.05), "rules": [{**FULL_BIN, "for": 0}]}
    await gmao.stop()  # the GMAO is down when the bin fills up
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [bin_reading(0.95, 2)])
        await eventually(lambda: [c for c in engine(app).calls() if c["attempts"] >= 1], what="a failed attempt")
        [first] = await alerts(app)
    await gmao.start()
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await eventually(lambda: len(gmao.posts) == 1, what="the pending work order, sent after the restart")
        await publish(app, [bin_reading(0.97, 1)])
        await engine(app).tick()
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [bin_reading(0.98, 0)])
        await engine(app).tick()
        assert len(gmao.posts) == 1
        [alert] = await alerts(app)
        assert alert["id"] == first["id"] and "validTo" not in alert
        await publish(app, [bin_reading(0.1, 0)])  # still known open: it closes
        [closed] = await alerts(app)
        assert value(closed, "closedBy") == "conditionCleared"


async def test_the_rate_limit_holds_calls_back_without_dropping_them(tmp_path: Path, gmao: FakeGmao) -> None:
    rules = {"tick": 0.05, "targets": targets(gmao.url, rate_limit={"max": 1, "per": "1h"}),
             "rules": [{**FULL_BIN, "for": 0}]}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [bin_reading(0.95, 0, "bin-1"), bin_reading(0.95, 0, "bin-2")])
        await eventually(lambda: len(gmao.posts) == 1, what="the first work order")
        for _ in range(3):
            await engine(app).tick()
        assert len(gmao.posts) == 1
        states = sorted(c["state"] for c in engine(app).calls())
        assert states == ["pending", "polling"]
        # An hour later, the held call goes.
        await engine(app).tick(time.time() + 3601)
        assert len(gmao.posts) == 2


async def test_a_24_hour_mean_above_the_guideline_opens_an_alert(tmp_path: Path, gmao: FakeGmao) -> None:
    rule = {"id": "pm25-daily", "types": ["AirQualityObserved"], "category": "health",
            "aggregate": {"attribute": "pm25", "function": "mean", "window": "24h", "above": 15, "min_samples": 3},
            "actions": []}
    rules = {"tick": 0.05, "targets": targets(gmao.url), "rules": [rule]}

    def reading(pm25: float, hours_ago: float) -> dict[str, Any]:
        return {"id": "urn:ngsi-ld:AirQualityObserved:station-1", "type": "AirQualityObserved",
                "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.83, 45.76]}},
                "dateObserved": {"type": "Property", "value": epoch_time(time.time() - hours_ago * 3600)},
                "pm25": {"type": "Property", "value": pm25, "unitCode": "GQ",
                         "observedAt": epoch_time(time.time() - hours_ago * 3600)}}

    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [reading(40, 40)])  # out of the window once a reading 16 hours later comes
        await publish(app, [reading(8, 20)])
        await publish(app, [reading(12, 10)])
        assert await alerts(app) == []  # mean of 8 and 12 (40 left the window): 10, and two samples only
        await publish(app, [reading(31, 1)])  # mean 17 > 15
        [alert] = await alerts(app)
        assert value(alert, "category") == "health"


def test_a_bad_rules_file_names_its_pointer(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - id: full-bin\n    types: [WasteContainer]\n    when: 'fillingLevel>>0.9'\n"
                    "    for: 30 minutes\n    actions: [gmao]\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as err:
        config(tmp_path, "rules.yaml")
    assert any("/rules (rules.yaml) /rules/0/for" in p for p in err.value.problems), err.value.problems
    path.write_text("rules:\n  - id: full-bin\n    types: [WasteContainer]\n    when: 'fillingLevel>>0.9'\n"
                    "    actions: [gmao]\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as err:
        config(tmp_path, "rules.yaml")
    problems = err.value.problems
    assert any(p.startswith("/rules (rules.yaml) /rules/0/when: not a valid q expression") for p in problems)
    assert any(p.startswith("/rules (rules.yaml) /rules/0/actions/0: no target named 'gmao'") for p in problems)
    with pytest.raises(ConfigInvalid) as err:
        config(tmp_path, {"rules": [{"id": "x", "types": ["WasteContainer"], "actions": []}]})
    assert any(p.startswith("/rules/rules/0:") for p in err.value.problems), err.value.problems


async def test_a_refused_call_replayed_after_the_fix_is_sent_and_a_pushed_status_closes_the_alert(
        tmp_path: Path, gmao: FakeGmao) -> None:
    gmao.refuse = 400
    rules = {"tick": 0.05, "targets": targets(gmao.url, poll={"url": f"{gmao.url}/work-orders/${{workOrderId}}",
                                                              "every": "1h"}),
             "rules": [{**FULL_BIN, "for": 0}]}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (base, app):
        rt = app[RUNTIME]
        await publish(app, [bin_reading(0.95, 0)])
        [letter] = await eventually(lambda: rt.deadletters.list(stage="intervention"), what="the dead letter")
        gmao.refuse = None  # the asset was added to the GMAO
        http = rt.http
        async with http.post(f"{base}/admin/deadletters/{letter.id}/replay") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "queued"
        await eventually(lambda: len(gmao.orders) == 1, what="the work order, sent again")
        assert rt.deadletters.list(stage="intervention") == []
        await eventually(lambda: [c for c in engine(app).calls() if c["state"] == "polling"], what="sent")

        async def sent() -> bool:
            [alert] = await alerts(app)
            return bool(value(alert, "interventionStatus") == "sent")

        await eventually(sent, what="the failure cleared on the alert")
        async with http.get(f"{base}/admin/rules") as resp:
            view = await resp.json()
        assert [s["phase"] for s in view["states"]] == ["open"] and view["calls"][0]["remote_id"] == "WO-0001"
        # The GMAO pushes the closure (no poll for an hour): the Alert closes.
        async with http.post(f"{base}/admin/rules/targets/gmao/work-orders/WO-0404", json={"status": "closed"}) as r:
            assert r.status == 404
        async with http.post(f"{base}/admin/rules/targets/gmao/work-orders/WO-0001", json={"status": "closed"}) as r:
            assert r.status == 204
        [alert] = await alerts(app)
        assert value(alert, "closedBy") == "workOrderClosed" and "validTo" in alert


def test_the_readme_example_is_a_valid_rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Rules and interventions", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    ruleset = rules_config.parse(yaml.safe_load(block), base=tmp_path)
    assert [r.id for r in ruleset.rules] == ["bin-full", "lamp-out", "pm25-daily"]
    assert ruleset.targets["gmao"].headers["Authorization"] == f"Bearer {TOKEN}"
    assert ruleset.targets["city"].api_key == API_KEY and ruleset.rules[0].for_s == 1800


async def test_a_night_flow_above_the_threshold_opens_an_alert_that_the_next_quiet_night_closes(
        tmp_path: Path, gmao: FakeGmao) -> None:
    rule = {"id": "night-flow", "types": ["WaterConsumptionObserved"], "category": "environment",
            "aggregate": {"attribute": "minFlow", "function": "min", "window": "6h", "above": 20,
                          "hours": [1, 5], "min_samples": 4}, "actions": []}
    rules = {"tick": 0.05, "targets": targets(gmao.url), "rules": [rule]}

    def reading(flow: int, at: str) -> dict[str, Any]:  # litres per hour
        return {"id": "urn:ngsi-ld:WaterConsumptionObserved:meter-7", "type": "WaterConsumptionObserved",
                "minFlow": {"type": "Property", "value": flow, "observedAt": at}}

    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [reading(0, "2026-01-10T00:30:00Z")])  # before the night hours: not counted
        for hour, flow in ((1, 50), (2, 40), (3, 60)):
            await publish(app, [reading(flow, f"2026-01-10T0{hour}:30:00Z")])
        assert await alerts(app) == []  # three night readings: fewer than min_samples
        await publish(app, [reading(50, "2026-01-10T04:30:00Z")])  # never below 40 l/h all night: a leak
        [alert] = await alerts(app)
        await publish(app, [reading(0, "2026-01-10T12:00:00Z")])  # daytime: the state waits for the night
        [still] = await alerts(app)
        assert "validTo" not in still
        await publish(app, [reading(0, "2026-01-11T01:30:00Z")])  # the leak was fixed: a quiet night
        [closed] = await alerts(app)
        assert closed["id"] == alert["id"] and value(closed, "closedBy") == "conditionCleared"


async def test_an_open311_refusal_keeps_the_request_without_its_api_key(
        tmp_path: Path, gmao: FakeGmao, open311: FakeOpen311) -> None:
    open311.refuse = 400
    rules = {"tick": 0.05, "targets": targets(gmao.url, open311.url), "rules": [LAMP_OUT]}
    lamp = {"id": LAMP, "type": "Streetlight", "status": {"type": "Property", "value": "defectiveLamp"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.8357, 45.764]}}}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        rt = app[RUNTIME]
        await publish(app, [lamp])
        [letter] = await eventually(lambda: rt.deadletters.list(stage="intervention"), what="the dead letter")
        assert "service_code 999 not found" in letter.reason and letter.raw.content_type.endswith("urlencoded")
        assert b"service_code=STL-01" in letter.raw.payload and API_KEY.encode() not in letter.raw.payload
        assert open311.requests == []


async def test_a_rule_for_one_tenant_writes_its_alert_in_that_tenant_only(tmp_path: Path, gmao: FakeGmao) -> None:
    rules = {"tick": 0.05, "targets": targets(gmao.url), "rules": [{**FULL_BIN, "for": 0, "tenants": ["lyon"]}]}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        rt = app[RUNTIME]
        await PassAdapter.instances["field"].send([bin_reading(0.95, 0, "bin-9")], tenant="")
        await PassAdapter.instances["field"].send([bin_reading(0.95, 0, "bin-9")], tenant="lyon")
        await eventually(lambda: rt.outbox.depth("embedded") == 0 and rt.publishers["embedded"].idle.is_set(),
                         what="publish")
        [call] = await eventually(lambda: engine(app).calls(), what="the call")
        assert call["tenant"] == "lyon" and call["entity"] == "urn:ngsi-ld:WasteContainer:bin-9"
        assert await rt.embedded_store.get("lyon", call["alert"]) is not None
        assert await rt.embedded_store.get("", call["alert"]) is None


def closing(gmao: FakeGmao, **extra: Any) -> dict[str, Any]:
    """The GMAO target with its close call (the order id in the path, the reason in the body)."""
    close = {"url": f"{gmao.url}/work-orders/${{workOrderId}}/close",
             "body": {"status": "closed", "resolution": "${closedBy}", "alert": "${alertId}"}}
    return targets(gmao.url, close=close, **extra)


async def test_a_cleared_condition_closes_its_work_order_once_across_restarts(tmp_path: Path, gmao: FakeGmao) -> None:
    rules = {"tick": 0.05, "targets": closing(gmao, poll={"url": f"{gmao.url}/work-orders/${{workOrderId}}",
                                                          "every": "1h"}),
             "rules": [{**FULL_BIN, "for": 0}]}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [bin_reading(0.95, 1)])
        await eventually(lambda: len(gmao.orders) == 1, what="the work order")
        await eventually(lambda: [c for c in engine(app).calls() if c["state"] == "polling"], what="sent")
        await publish(app, [bin_reading(0.1, 0)])  # emptied: the condition clears
        await eventually(lambda: len(gmao.closes) == 1, what="the close call")
        [alert] = await alerts(app)
        assert gmao.closes[0] == {"id": "WO-0001", "status": "closed", "resolution": "conditionCleared",
                                  "alert": alert["id"]}
        assert gmao.orders["WO-0001"]["status"] == "closed"

        async def closed_item() -> Any:
            items = await _interventions(app, alert["id"])
            done = [i for i in items or [] if i["action"] == "close" and i["state"] == "done"]
            return done or None

        [item] = await eventually(closed_item, what="the close call on the alert")
        assert item["workOrderId"] == "WO-0001" and item["status"] == "closed"
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [bin_reading(0.1, 0)])
        for _ in range(3):
            await engine(app).tick()
        assert len(gmao.closes) == 1 and len(gmao.posts) == 1
        # Full again, then closed by the GMAO itself: that Alert closes and no close call goes out.
        await publish(app, [bin_reading(0.97, 0)])
        await eventually(lambda: len(gmao.orders) == 2, what="the second work order")
        await eventually(lambda: [c for c in engine(app).calls() if c["state"] == "polling"], what="sent again")
        assert await engine(app).work_order_status("gmao", "WO-0002", "closed")
        for _ in range(3):
            await engine(app).tick()
        assert len(gmao.closes) == 1
        actions = sorted((c["remote_id"], c["action"], c["state"]) for c in engine(app).calls())
        assert actions == [("WO-0001", "close", "done"), ("WO-0001", "open", "done"), ("WO-0002", "open", "done")]


async def test_a_refused_close_call_ends_as_a_dead_letter_on_the_alert(tmp_path: Path, gmao: FakeGmao) -> None:
    gmao.refuse_close = 409
    rules = {"tick": 0.05, "targets": closing(gmao), "rules": [{**FULL_BIN, "for": 0}]}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (base, app):
        rt = app[RUNTIME]
        await publish(app, [bin_reading(0.95, 1)])
        await eventually(lambda: [c for c in engine(app).calls() if c["state"] == "polling"], what="sent")
        await publish(app, [bin_reading(0.1, 0)])
        [letter] = await eventually(lambda: rt.deadletters.list(stage="intervention"), what="the dead letter")
        assert "close call" in letter.reason and "E_LOCKED" in letter.reason and TOKEN not in letter.reason
        assert len(gmao.closes) == 1
        [alert] = await alerts(app)
        assert value(alert, "closedBy") == "conditionCleared"

        async def failure() -> Any:
            doc = await rt.embedded_store.get("", alert["id"])
            return value(doc, "interventionStatus") if doc is not None else None

        text = await eventually(lambda: _failed(failure), what="the failure on the alert")
        assert text.startswith("failed: gmao: HTTP 409")
        # The order unlocked: replaying the dead letter sends the close call again, and it closes the order.
        gmao.refuse_close = None
        async with rt.http.post(f"{base}/admin/deadletters/{letter.id}/replay") as resp:
            assert resp.status == 200
        await eventually(lambda: gmao.orders["WO-0001"]["status"] == "closed", what="the order closed on replay")
        assert len(gmao.closes) == 2 and len(gmao.posts) == 1


def test_a_close_call_on_an_open311_target_is_refused(tmp_path: Path) -> None:
    rules = {"targets": {"city": {"kind": "open311", "url": "http://127.0.0.1:9/requests.json", "api_key": "k",
                                  "service_code": "S", "close": {"url": "http://127.0.0.1:9/x"}}},
             "rules": [LAMP_OUT]}
    with pytest.raises(ConfigInvalid) as err:
        config(tmp_path, rules)
    assert any("/rules/targets/city/close" in p for p in err.value.problems), err.value.problems


async def test_a_closed_open311_request_closes_its_alert(
        tmp_path: Path, gmao: FakeGmao, open311: FakeOpen311) -> None:
    city = {**targets(gmao.url, open311.url)["city"], "poll": {"every": 0.05}}
    rules = {"tick": 0.05, "targets": {"city": city}, "rules": [LAMP_OUT]}
    lamp = {"id": LAMP, "type": "Streetlight", "status": {"type": "Property", "value": "defectiveLamp"},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [4.8357, 45.764]}}}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [lamp])
        await eventually(lambda: open311.reads >= 1, what="the request status read back")
        [alert] = await alerts(app)
        assert value(alert, "alertStatus") == "open"
        open311.statuses["SR-00001"] = "closed"  # the back office closed the request

        async def closed() -> bool:
            [doc] = await alerts(app)
            return value(doc, "closedBy") == "serviceRequestClosed"

        await eventually(closed, what="the alert closed by its service request")
        await publish(app, [lamp])  # still out: no new request while the closed one stands
        await engine(app).tick()
        assert len(open311.requests) == 1 and len(await alerts(app)) == 1


async def test_the_per_rule_rate_limit_holds_calls_back(tmp_path: Path, gmao: FakeGmao) -> None:
    rules = {"tick": 0.05, "targets": targets(gmao.url),
             "rules": [{**FULL_BIN, "for": 0, "rate_limit": {"max": 1, "per": "1h"}}]}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (_, app):
        await publish(app, [bin_reading(0.95, 0, "bin-1"), bin_reading(0.95, 0, "bin-2")])
        await eventually(lambda: len(gmao.posts) == 1, what="the first work order")
        for _ in range(3):
            await engine(app).tick()
        assert len(gmao.posts) == 1
        assert sorted(c["state"] for c in engine(app).calls()) == ["pending", "polling"]
        await engine(app).tick(time.time() + 3601)
        assert len(gmao.posts) == 2


async def test_a_work_order_created_after_its_alert_cleared_is_closed_too(tmp_path: Path, gmao: FakeGmao) -> None:
    gmao.refuse = 400
    rules = {"tick": 0.05, "targets": closing(gmao), "rules": [{**FULL_BIN, "for": 0}]}
    async with running(config(tmp_path, rules), {"pass": PassAdapter}) as (base, app):
        rt = app[RUNTIME]
        await publish(app, [bin_reading(0.95, 1)])
        [letter] = await eventually(lambda: rt.deadletters.list(stage="intervention"), what="the dead letter")
        await publish(app, [bin_reading(0.1, 0)])  # cleared: no work order, nothing to close
        [alert] = await alerts(app)
        assert value(alert, "closedBy") == "conditionCleared" and gmao.closes == []
        gmao.refuse = None
        async with rt.http.post(f"{base}/admin/deadletters/{letter.id}/replay") as resp:
            assert resp.status == 200
        # The replayed call creates the order for an alert already closed: it is closed at once.
        await eventually(lambda: len(gmao.closes) == 1, what="the close call")
        assert gmao.orders["WO-0001"]["status"] == "closed" and len(gmao.orders) == 1
