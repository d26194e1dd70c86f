"""L5 — history through the temporal API: instances, time filters, lastN, simplified values."""

from __future__ import annotations

from typing import Any

from conformance.checks.common import context_links, expect, ids, json_list, json_object, problem, status
from conformance.context import JSON, FixtureError, RunContext
from conformance.registry import check
from gateway.model import parse_time

W = ("api", "write")
TIMES = ("2024-03-01T10:00:00Z", "2024-03-01T11:00:00Z", "2024-03-01T12:00:00Z")
VALUES = (1.0, 2.0, 3.0)


async def _history(ctx: RunContext) -> dict[str, Any]:
    """One entity with three temperature readings at TIMES (created once per run)."""
    if "history" in ctx._cache:
        cached: dict[str, Any] = ctx._cache["history"]
        return cached
    etype = f"JcHist{ctx.run_id}"
    ent = {"id": ctx.uid("h1", etype), "type": etype,
           "temperature": {"type": "Property", "value": VALUES[0], "unitCode": "CEL", "observedAt": TIMES[0]}}
    await ctx.create_ok(ent)
    for v, t in zip(VALUES[1:], TIMES[1:], strict=True):
        resp = await ctx.api("PATCH", f"/entities/{ent['id']}/attrs", body={
            "temperature": {"type": "Property", "value": v, "unitCode": "CEL", "observedAt": t}})
        if resp.status != 204:
            raise FixtureError(f"could not update {ent['id']} to build its history: HTTP {resp.status}")
    ctx._cache["history"] = ent
    return ent


async def _temporal(ctx: RunContext, params: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
    ent = await _history(ctx)
    return json_object(await ctx.api("GET", f"/temporal/entities/{ent['id']}", params=params, **kw))


def _instances(body: dict[str, Any]) -> list[dict[str, Any]]:
    attr = body.get("temperature")
    if isinstance(attr, dict):
        attr = [attr]
    return [i for i in attr or [] if isinstance(i, dict)]


def _times(body: dict[str, Any]) -> list[str]:
    out = []
    for inst in _instances(body):
        try:
            out.append(parse_time(str(inst.get("observedAt"))).isoformat())
        except ValueError:
            out.append(str(inst.get("observedAt")))
    return sorted(out)


def _iso(*idx: int) -> list[str]:
    return sorted(parse_time(TIMES[i]).isoformat() for i in idx)


@check("L5-TMP-001", "Retrieve the history of an entity", needs=W,
       sends="GET /temporal/entities/{id}",
       expects="200 with the entity's id and type",
       explain="The history of every object is available for audits and analyses.")
async def _tmp_get(ctx: RunContext) -> str | None:
    ent = await _history(ctx)
    body = await _temporal(ctx)
    expect(body.get("id") == ent["id"] and body.get("type") == ent["type"], f"id/type {body.get('id')!r}")
    return None


@check("L5-TMP-002", "Every reading is kept", needs=W,
       sends="create with one reading, update twice with new observedAt, GET /temporal/entities/{id}",
       expects="three instances of temperature",
       explain="No reading is lost: history is complete.")
async def _tmp_count(ctx: RunContext) -> str | None:
    insts = _instances(await _temporal(ctx))
    expect(len(insts) == 3, f"{len(insts)} instances instead of 3")
    return None


@check("L5-TMP-003", "Instances keep their values and observedAt", needs=W,
       sends="GET /temporal/entities/{id}",
       expects="values 1, 2, 3 observed at the three times sent",
       explain="Each historical value stays tied to the moment it was measured.")
async def _tmp_values(ctx: RunContext) -> str | None:
    body = await _temporal(ctx)
    pairs = sorted((str(i.get("observedAt")), i.get("value")) for i in _instances(body))
    got = sorted((parse_time(t).isoformat(), v) for t, v in pairs if t != "None")
    want = sorted((parse_time(t).isoformat(), v) for t, v in zip(TIMES, VALUES, strict=True))
    expect(got == want, f"instances {pairs}")
    return None


@check("L5-TMP-004", "timerel=after filters the history", needs=W,
       sends="GET /temporal/entities/{id}?timerel=after&timeAt=<between 1st and 2nd reading>",
       expects="the second and third readings only",
       explain="Analyses cover a chosen period.")
async def _tmp_after(ctx: RunContext) -> str | None:
    body = await _temporal(ctx, {"timerel": "after", "timeAt": "2024-03-01T10:30:00Z"})
    expect(_times(body) == _iso(1, 2), f"instances at {_times(body)}")
    return None


@check("L5-TMP-005", "timerel=before filters the history", needs=W,
       sends="GET /temporal/entities/{id}?timerel=before&timeAt=<between 2nd and 3rd reading>",
       expects="the first and second readings only",
       explain="Analyses cover a chosen period.")
async def _tmp_before(ctx: RunContext) -> str | None:
    body = await _temporal(ctx, {"timerel": "before", "timeAt": "2024-03-01T11:30:00Z"})
    expect(_times(body) == _iso(0, 1), f"instances at {_times(body)}")
    return None


@check("L5-TMP-006", "timerel=between filters the history", needs=W,
       sends="GET /temporal/entities/{id}?timerel=between&timeAt=…&endTimeAt=… around the 2nd reading",
       expects="the second reading only",
       explain="Analyses cover a chosen period.")
async def _tmp_between(ctx: RunContext) -> str | None:
    body = await _temporal(ctx, {"timerel": "between", "timeAt": "2024-03-01T10:30:00Z",
                                 "endTimeAt": "2024-03-01T11:30:00Z"})
    expect(_times(body) == _iso(1), f"instances at {_times(body)}")
    return None


async def _bad(ctx: RunContext, params: dict[str, str]) -> None:
    ent = await _history(ctx)
    problem(await ctx.api("GET", f"/temporal/entities/{ent['id']}", params=params), 400, "BadRequestData")


@check("L5-TMP-007", "timerel without timeAt: 400 BadRequestData", needs=W,
       sends="GET /temporal/entities/{id}?timerel=after",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="An incomplete period is refused, not guessed.")
async def _tmp_no_timeat(ctx: RunContext) -> str | None:
    await _bad(ctx, {"timerel": "after"})
    return None


@check("L5-TMP-008", "options=temporalValues gives value/time pairs", needs=W,
       sends="GET /temporal/entities/{id}?options=temporalValues",
       expects="temperature.values as [[value, time], …] with the three readings",
       explain="Compact series feed charts directly.")
async def _tmp_simplified(ctx: RunContext) -> str | None:
    body = await _temporal(ctx, {"options": "temporalValues"})
    attr = body.get("temperature")
    values = attr.get("values") if isinstance(attr, dict) else None
    expect(isinstance(values, list) and len(values) == 3
           and all(isinstance(p, list) and len(p) == 2 for p in values), f"temperature is {attr!r}")
    assert isinstance(values, list)
    expect(sorted(p[0] for p in values) == list(VALUES), f"values {values!r}")
    return None


@check("L5-TMP-009", "lastN returns the latest readings", needs=W,
       sends="GET /temporal/entities/{id}?lastN=1",
       expects="only the last reading (value 3)",
       explain="The latest points of a series are fetched without downloading it all.")
async def _tmp_lastn(ctx: RunContext) -> str | None:
    body = await _temporal(ctx, {"lastN": "1"})
    insts = _instances(body)
    expect(len(insts) == 1 and insts[0].get("value") == VALUES[-1], f"instances {insts!r}")
    return None


@check("L5-TMP-010", "History of an unknown entity: 404 ResourceNotFound", needs=W,
       sends="GET /temporal/entities/{unknown id}",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="Clear errors for the history too.")
async def _tmp_unknown(ctx: RunContext) -> str | None:
    problem(await ctx.api("GET", f"/temporal/entities/{ctx.uid('h-absent')}"), 404, "ResourceNotFound")
    return None


@check("L5-TMP-011", "Query the history by type and period", needs=W,
       sends="GET /temporal/entities?type=T&timerel=after&timeAt=<before every reading>",
       expects="200, an array containing the entity",
       explain="Histories of a whole family of objects can be extracted at once (reversibility).")
async def _tmp_query(ctx: RunContext) -> str | None:
    ent = await _history(ctx)
    got = json_list(await ctx.api("GET", "/temporal/entities", params={
        "type": ent["type"], "timerel": "after", "timeAt": "2024-03-01T00:00:00Z"}))
    expect(ent["id"] in ids(got), f"{ent['id']} missing")
    return None


@check("L5-TMP-012", "timerel=between without endTimeAt: 400 BadRequestData", needs=W,
       sends="GET /temporal/entities/{id}?timerel=between&timeAt=…",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="An open-ended 'between' is refused.")
async def _tmp_no_end(ctx: RunContext) -> str | None:
    await _bad(ctx, {"timerel": "between", "timeAt": "2024-03-01T10:30:00Z"})
    return None


@check("L5-TMP-013", "An invalid timeAt: 400 BadRequestData", needs=W,
       sends="GET /temporal/entities/{id}?timerel=after&timeAt=yesterday",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="Times are RFC 3339; anything else is refused.")
async def _tmp_bad_time(ctx: RunContext) -> str | None:
    await _bad(ctx, {"timerel": "after", "timeAt": "yesterday"})
    return None


@check("L5-TMP-014", "Temporal answers in application/json carry the context Link", needs=W,
       sends="GET /temporal/entities/{id} with Accept: application/json",
       expects="Content-Type application/json and a context Link header",
       explain="The history uses the same vocabulary rules as the current state.")
async def _tmp_link(ctx: RunContext) -> str | None:
    ent = await _history(ctx)
    resp = await ctx.api("GET", f"/temporal/entities/{ent['id']}", accept=JSON)
    status(resp, 200)
    expect(resp.content_type == JSON, f"Content-Type {resp.content_type!r}")
    expect(context_links(resp), "no context Link header")
    return None
