"""A StreetlightGroup's switchingOnHours as a TALQ calendar: written through NGSI-LD, followed by the lamps."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.talq import TalqAdapter
from adapters.talq.calendar import calendar_for, calendar_id
from adapters.talq.simulator import create
from gateway.runtime.state import RUNTIME
from tests.conftest import free_port, needs_shared
from tests.runtime.support import config, eventually, running

NIGHT = 1733180400.0  # 2024-12-02 23:00 UTC: midnight in Paris
LINK = ('<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"; '
        'type="application/ld+json"')
WINTER: list[dict[str, Any]] = [{"from": "--11-01", "to": "--02-28", "hours": "Mo-Su 22:00-06:00", "dimmingLevel": 25},
          {"from": "--03-01", "to": "--10-31", "hours": "21:30-23:00,05:00-06:30"}]


def test_switching_on_hours_become_control_programs_and_one_calendar_rule_each() -> None:
    programs, calendar = calendar_for("g-1", WINTER, "cms-1")
    assert calendar["id"] == calendar_id("g-1") and calendar["ownerCMS"] == "cms-1"
    assert [r["program"] for r in calendar["rules"]] == [p["id"] for p in programs]
    assert [(r["startDate"], r["endDate"]) for r in calendar["rules"]] == [("--11-01", "--02-28"),
                                                                           ("--03-01", "--10-31")]
    levels = [(c["startTime"], c["command"]["state"]["value"]) for c in programs[0]["fixedTimeControls"]]
    assert levels == [("22:00:00", 25), ("06:00:00", 0)]
    assert len(programs[1]["fixedTimeControls"]) == 4 and programs[1]["fixedTimeControls"][0]["command"] == {
        "state": {"name": "LevelState", "value": 100}}, "full light by default"
    assert calendar_for("g-1", WINTER, "cms-1") == (programs, calendar), "stable ids: a second write updates"


@pytest.mark.parametrize(("value", "named"), [
    ([], "non-empty list"),
    ([{"from": "--11-01", "to": "--02-28"}], "switchingOnHours/0/hours"),
    ([{"from": "November", "to": "--02-28", "hours": "22:00-06:00"}], "switchingOnHours/0/from"),
    ([WINTER[0], {"from": "--03-01", "to": "--10-31", "hours": "25:00-06:00"}], "switchingOnHours/1/hours"),
    ([{**WINTER[0], "dimmingLevel": 140}], "switchingOnHours/0/dimmingLevel"),
    ([{**WINTER[0], "dimmingLevel": True}], "switchingOnHours/0/dimmingLevel"),
    ([WINTER[0]] * 25, "at most 24"),
])
def test_a_bad_calendar_is_refused_naming_the_item(value: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        calendar_for("g-1", value, "cms-1")


async def test_a_group_calendar_written_through_ngsi_ld_is_stored_assigned_and_followed(tmp_path: Path) -> None:
    cms_port, gw_port = free_port(), free_port()
    source = {"name": "talq", "adapter": "talq", "tenant": "",
              "config": {"http": {"listen": {"host": "127.0.0.1", "port": cms_port, "path": "/talq"}},
                         "gateway": {"url": f"http://127.0.0.1:{gw_port}/talq", "timeout": 5}}}
    gw = create({"cms_url": f"http://127.0.0.1:{cms_port}/talq", "port": gw_port, "lamps": 4, "interval": 0.2,
                 "clock": lambda: NIGHT})
    group_id = f"urn:ngsi-ld:StreetlightGroup:{gw.group}"
    lamp_id = f"urn:ngsi-ld:Streetlight:{gw.lamps[0].address}"
    async with running(config(tmp_path, sources=[source]), adapters={"talq": TalqAdapter}) as (base, app):
        store = app[RUNTIME].embedded_store

        async def having(entity_id: str, attribute: str, value: Any = None) -> Any:
            found = await store.get("", entity_id)
            if not found or attribute not in found:
                return None
            return found if value is None or found[attribute].get("value") == value else None

        await gw.start()
        try:
            await eventually(lambda: having(lamp_id, "illuminanceLevel", 0.5), what="the lamp on the night schedule")
            await eventually(lambda: having(group_id, "refStreetlight"), what="the group")
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base}/ngsi-ld/v1/entities/{group_id}/attrs", headers={"Link": LINK},
                                     json={"switchingOnHours": {"type": "Property", "value": WINTER}}) as resp:
                    assert resp.status == 204, await resp.text()
                done = await eventually(lambda: having(group_id, "switchingOnHoursCommand", "acknowledged"),
                                        what="the calendar acknowledged")
                assert calendar_id(gw.group) in done["switchingOnHoursCommand"]["detail"]["value"]
                # midnight in Paris on 3 December: the winter rule, 25 %
                await eventually(lambda: having(lamp_id, "illuminanceLevel", 0.25), what="the lamps at 25 %")
                assert [(m, p) for m, p, _ in gw.received] == [("POST", "/control-programs"), ("POST", "/calendars"),
                                                               ("POST", "/assign-commands")]
                assigned = gw.received[-1][2]
                assert assigned["entity"] == {"resource": "calendars", "address": calendar_id(gw.group)}
                assert assigned["addresses"] == [{"resource": "groups", "address": gw.group}]
                # a second write updates the same calendar (POST answered 409, then PUT)
                brighter = [{**WINTER[0], "dimmingLevel": 60}, WINTER[1]]
                async with http.patch(f"{base}/ngsi-ld/v1/entities/{group_id}/attrs/switchingOnHours",
                                      headers={"Link": LINK}, json={"type": "Property", "value": brighter}) as resp:
                    assert resp.status == 204, await resp.text()
                await eventually(lambda: having(lamp_id, "illuminanceLevel", 0.6), what="the lamps at 60 %")
                assert [m for m, p, _ in gw.received if p == "/calendars"] == ["POST", "POST", "PUT"]
                assert len(gw.calendars) == 1 and gw.stats["commands"] == 2
                # a calendar the gateway cannot hold is refused before any call, naming the item
                async with http.patch(f"{base}/ngsi-ld/v1/entities/{group_id}/attrs/switchingOnHours",
                                      headers={"Link": LINK},
                                      json={"type": "Property", "value": [{"from": "--01-01", "to": "--12-31",
                                                                           "hours": "dusk-dawn"}]}) as resp:
                    assert resp.status == 204, await resp.text()
                failed = await eventually(lambda: having(group_id, "switchingOnHoursCommand", "failed"),
                                          what="the bad calendar failed")
                assert "switchingOnHours/0/hours" in failed["switchingOnHoursCommand"]["detail"]["value"]
                assert gw.stats["commands"] == 2
        finally:
            await gw.stop()


@needs_shared
async def test_the_calendar_calls_and_the_gateway_answers_follow_the_published_oas() -> None:
    from tests.adapters.talq import oas

    gw = create({"cms_url": "http://127.0.0.1:9/talq", "lamps": 2, "interval": 3600, "clock": lambda: NIGHT})
    await gw.start()
    adapter = TalqAdapter({"name": "talq", "gateway": {"url": gw.url, "timeout": 5}})
    try:
        command = {"id": "c-1", "tenant": "", "entity_id": f"urn:ngsi-ld:StreetlightGroup:{gw.group}",
                   "entity_type": "StreetlightGroup", "attribute": "switchingOnHours", "value": WINTER}
        assert (await adapter.send_command(command))["status"] == "acknowledged"
        assert (await adapter.send_command({**command, "id": "c-2"}))["status"] == "acknowledged"
        assert await adapter.gateway.list_calendars() if adapter.gateway else False
        assert gw.level(gw.lamps[0], NIGHT) == 25
    finally:
        await adapter.stop()
        await gw.stop()
        await asyncio.sleep(0)
    problems = [f"client {m} {p}: {e}" for m, p, body in gw.received for e in oas.request_errors("gateway", m, p, body)]
    problems += [f"gateway answer {m} {route}: {e}" for m, route, status, body in gw.answers
                 for e in oas.response_errors("gateway", m, route.removeprefix("/talq"), status, body)]
    assert sorted({(m, route, status) for m, route, status, _ in gw.answers}) == [
        ("GET", "/talq/calendars", 200), ("POST", "/talq/assign-commands", 201),
        ("POST", "/talq/calendars", 201), ("POST", "/talq/calendars", 409),
        ("POST", "/talq/control-programs", 201), ("POST", "/talq/control-programs", 409),
        ("PUT", "/talq/calendars", 200), ("PUT", "/talq/control-programs", 200)]
    assert not problems, problems
