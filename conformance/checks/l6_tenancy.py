"""L6 — tenancy and access: tenant echo, NonexistentTenant, isolation, authentication on writes."""

from __future__ import annotations

from typing import Any

from conformance.checks.common import attrs_of, expect, ids, json_list, json_object, problem, status, value_of
from conformance.context import RunContext as Ctx
from conformance.http import Response
from conformance.registry import check

W = ("api", "write", "tenancy")
A = ("api", "write")


def _ent(ctx: Ctx, label: str, value: float = 1.0) -> dict[str, Any]:
    return {"id": ctx.uid(label), "type": ctx.probe_type,
            "temperature": {"type": "Property", "value": value, "unitCode": "CEL"}}


async def _in_a(ctx: Ctx, label: str) -> dict[str, Any]:
    ent = _ent(ctx, label)
    await ctx.create_ok(ent, tenant=ctx.other_tenant("a"))
    return ent


async def _tenant_b(ctx: Ctx) -> str:
    """Tenant B exists (created implicitly by one creation) and holds one entity."""
    tb = ctx.other_tenant("b")
    key = "tenant-b"
    if key not in ctx._cache:
        await ctx.create_ok(_ent(ctx, "tb-seed"), tenant=tb)
        ctx._cache[key] = True
    return tb


def _echo(resp: Response, tenant: str) -> None:
    got = resp.header("NGSILD-Tenant")
    expect(got is not None, f"no NGSILD-Tenant header in the response (expected {tenant!r})")
    expect(got == tenant, f"NGSILD-Tenant in the response is {got!r}, expected {tenant!r}")


@check("L6-TEN-001", "The tenant is echoed when reading", needs=W,
       sends="GET /entities/{id} with NGSILD-Tenant: A",
       expects="NGSILD-Tenant: A in the response",
       explain="Every answer says which commune's data it carries, so nothing is attributed to the wrong one.")
async def _ten_echo_get(ctx: Ctx) -> str | None:
    ent = await _in_a(ctx, "t1")
    resp = await ctx.api("GET", f"/entities/{ent['id']}", tenant=ctx.other_tenant("a"))
    status(resp, 200)
    _echo(resp, ctx.other_tenant("a"))
    return None


@check("L6-TEN-002", "The tenant is echoed when creating", needs=W,
       sends="POST /entities with NGSILD-Tenant: A",
       expects="201 with NGSILD-Tenant: A",
       explain="Writers get confirmation of where their data went.")
async def _ten_echo_create(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "t2")
    resp = await ctx.create(ent, tenant=ctx.other_tenant("a"))
    status(resp, 201)
    _echo(resp, ctx.other_tenant("a"))
    return None


@check("L6-TEN-003", "The tenant is echoed on queries", needs=W,
       sends="GET /entities?type=T with NGSILD-Tenant: A",
       expects="NGSILD-Tenant: A in the response",
       explain="Lists say which commune they belong to.")
async def _ten_echo_query(ctx: Ctx) -> str | None:
    await _in_a(ctx, "t3")
    resp = await ctx.api("GET", "/entities", params={"type": ctx.probe_type}, tenant=ctx.other_tenant("a"))
    status(resp, 200)
    _echo(resp, ctx.other_tenant("a"))
    return None


@check("L6-TEN-004", "A creation creates its tenant implicitly", needs=W,
       sends="POST /entities with a tenant never used, then GET in that tenant",
       expects="201, then 200 with the entity",
       explain="A new commune can start publishing without an administrator step.")
async def _ten_implicit(ctx: Ctx) -> str | None:
    tenant = ctx.other_tenant("c")
    ent = _ent(ctx, "t4")
    status(await ctx.create(ent, tenant=tenant), 201)
    body = json_object(await ctx.api("GET", f"/entities/{ent['id']}", tenant=tenant))
    expect(body.get("id") == ent["id"], "the entity is not readable in its new tenant")
    return None


async def _nonexistent(ctx: Ctx, method: str, path: str, **kw: Any) -> None:
    problem(await ctx.api(method, path, tenant=ctx.missing_tenant(), **kw), 404, "NonexistentTenant")


@check("L6-TEN-005", "Reading in an unknown tenant: 404 NonexistentTenant", needs=("api", "tenancy"),
       sends="GET /entities/{id} with NGSILD-Tenant: <never created>",
       expects="404 with a ProblemDetails of type NonexistentTenant",
       explain="A typing error in a commune's name is reported, never answered with empty or foreign data.")
async def _ten_missing_get(ctx: Ctx) -> str | None:
    await _nonexistent(ctx, "GET", f"/entities/{ctx.uid('t5')}")
    return None


@check("L6-TEN-006", "Querying in an unknown tenant: 404 NonexistentTenant", needs=("api", "tenancy"),
       sends="GET /entities?type=T with NGSILD-Tenant: <never created>",
       expects="404 with a ProblemDetails of type NonexistentTenant",
       explain="An empty list would hide the mistake.")
async def _ten_missing_query(ctx: Ctx) -> str | None:
    await _nonexistent(ctx, "GET", "/entities", params={"type": ctx.probe_type})
    return None


@check("L6-TEN-007", "Updating in an unknown tenant: 404 NonexistentTenant", needs=W,
       sends="PATCH /entities/{id}/attrs with NGSILD-Tenant: <never created>",
       expects="404 with a ProblemDetails of type NonexistentTenant",
       explain="Only creations may create a tenant.")
async def _ten_missing_patch(ctx: Ctx) -> str | None:
    await _nonexistent(ctx, "PATCH", f"/entities/{ctx.uid('t7')}/attrs",
                       body={"temperature": {"type": "Property", "value": 1}})
    return None


@check("L6-TEN-008", "Deleting in an unknown tenant: 404 NonexistentTenant", needs=W,
       sends="DELETE /entities/{id} with NGSILD-Tenant: <never created>",
       expects="404 with a ProblemDetails of type NonexistentTenant",
       explain="Only creations may create a tenant.")
async def _ten_missing_delete(ctx: Ctx) -> str | None:
    await _nonexistent(ctx, "DELETE", f"/entities/{ctx.uid('t8')}")
    return None


@check("L6-TEN-009", "Batch delete in an unknown tenant: 404 NonexistentTenant", needs=W,
       sends="POST /entityOperations/delete with NGSILD-Tenant: <never created>",
       expects="404 with a ProblemDetails of type NonexistentTenant",
       explain="Batch operations obey the same tenancy rules.")
async def _ten_missing_batch(ctx: Ctx) -> str | None:
    await _nonexistent(ctx, "POST", "/entityOperations/delete", body=[ctx.uid("t9")])
    return None


@check("L6-TEN-010", "Another tenant's entity cannot be read by id", needs=W,
       sends="create in tenant A; GET /entities/{id} in tenant B",
       expects="404 ResourceNotFound in B",
       explain="One commune never sees another commune's objects.")
async def _ten_iso_get(ctx: Ctx) -> str | None:
    ent = await _in_a(ctx, "t10")
    tb = await _tenant_b(ctx)
    problem(await ctx.api("GET", f"/entities/{ent['id']}", tenant=tb), 404, "ResourceNotFound")
    return None


@check("L6-TEN-011", "Another tenant's entities do not appear in queries", needs=W,
       sends="create in tenant A; GET /entities?type=T in tenant B",
       expects="none of A's ids in B's answer",
       explain="Lists are strictly per commune.")
async def _ten_iso_query(ctx: Ctx) -> str | None:
    ent = await _in_a(ctx, "t11")
    tb = await _tenant_b(ctx)
    got = json_list(await ctx.api("GET", "/entities", params={"type": ctx.probe_type, "limit": "100"},
                                  tenant=tb))
    expect(ent["id"] not in ids(got), f"{ent['id']} of tenant A is visible in tenant B")
    return None


@check("L6-TEN-012", "A tenant's entities do not appear in the default tenant", needs=W,
       sends="create in tenant A; GET /entities?type=T without NGSILD-Tenant",
       expects="none of A's ids in the default tenant",
       explain="The default tenant is not a back door to every commune's data.")
async def _ten_iso_default(ctx: Ctx) -> str | None:
    ent = await _in_a(ctx, "t12")
    got = json_list(await ctx.api("GET", "/entities", params={"type": ctx.probe_type, "limit": "100"},
                                  tenant=None))
    expect(ent["id"] not in ids(got), f"{ent['id']} of tenant A is visible without a tenant")
    return None


@check("L6-TEN-013", "The same id may exist in two tenants", needs=W,
       sends="create id X in tenant A, then the same id X in tenant B",
       expects="201 in B (not 409)",
       explain="Communes choose their identifiers independently.")
async def _ten_same_id(ctx: Ctx) -> str | None:
    ent = await _in_a(ctx, "t13")
    tb = await _tenant_b(ctx)
    status(await ctx.create(ent, tenant=tb), 201)
    return None


@check("L6-TEN-014", "Updating in one tenant leaves the other unchanged", needs=W,
       sends="same id in A and B; PATCH in B; GET in A",
       expects="A keeps its value",
       explain="Writes never cross from one commune to another.")
async def _ten_iso_update(ctx: Ctx) -> str | None:
    ent = await _in_a(ctx, "t14")
    tb = await _tenant_b(ctx)
    status(await ctx.create(ent, tenant=tb), 201)
    status(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs", tenant=tb,
                         body={"temperature": {"type": "Property", "value": 77.0}}), 204)
    got = json_object(await ctx.api("GET", f"/entities/{ent['id']}", tenant=ctx.other_tenant("a")))
    expect(value_of(got, "temperature") == 1.0, f"tenant A's value became {value_of(got, 'temperature')!r}")
    return None


@check("L6-TEN-015", "Deleting in one tenant leaves the other's entity", needs=W,
       sends="same id in A and B; DELETE in B; GET in A",
       expects="200 in A",
       explain="Deletions never cross from one commune to another.")
async def _ten_iso_delete(ctx: Ctx) -> str | None:
    ent = await _in_a(ctx, "t15")
    tb = await _tenant_b(ctx)
    status(await ctx.create(ent, tenant=tb), 201)
    status(await ctx.api("DELETE", f"/entities/{ent['id']}", tenant=tb), 204)
    status(await ctx.api("GET", f"/entities/{ent['id']}", tenant=ctx.other_tenant("a")), 200)
    return None


@check("L6-TEN-016", "Counts are per tenant", needs=W,
       sends="GET /entities?type=T&count=true in tenant B",
       expects="NGSILD-Results-Count equal to B's own number of entities",
       explain="Statistics of one commune never include another's objects.")
async def _ten_iso_count(ctx: Ctx) -> str | None:
    await _in_a(ctx, "t16")
    tb = await _tenant_b(ctx)
    resp = await ctx.api("GET", "/entities", params={"type": ctx.probe_type, "count": "true", "limit": "100"},
                         tenant=tb)
    got = json_list(resp)
    expect(resp.header("NGSILD-Results-Count") == str(len(got)),
           f"NGSILD-Results-Count {resp.header('NGSILD-Results-Count')!r} for {len(got)} entities in B")
    return None


@check("L6-TEN-017", "Batch writes stay in their tenant", needs=W,
       sends="POST /entityOperations/upsert in tenant A; GET /entities/{id} in tenant B",
       expects="404 in B",
       explain="Bulk publication obeys the same separation.")
async def _ten_iso_batch(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "t17")
    ctx.track(ent["id"], ctx.other_tenant("a"))
    status(await ctx.api("POST", "/entityOperations/upsert", body=[ent], tenant=ctx.other_tenant("a")), 201, 204)
    tb = await _tenant_b(ctx)
    problem(await ctx.api("GET", f"/entities/{ent['id']}", tenant=tb), 404, "ResourceNotFound")
    return None


@check("L6-TEN-018", "Subscriptions are per tenant", needs=W,
       sends="POST /subscriptions in tenant A; GET /subscriptions in tenant B",
       expects="A's subscription is not listed in B",
       explain="One commune cannot see or receive another commune's notifications.")
async def _ten_iso_subs(ctx: Ctx) -> str | None:
    ta, tb = ctx.other_tenant("a"), await _tenant_b(ctx)
    sub_id = f"urn:ngsi-ld:Subscription:jc-{ctx.run_id}-t18"
    ctx.track_subscription(sub_id, ta)
    status(await ctx.api("POST", "/subscriptions", tenant=ta, body={
        "id": sub_id, "type": "Subscription", "entities": [{"type": ctx.probe_type}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/jc", "accept": "application/json"}}}), 201)
    got = json_list(await ctx.api("GET", "/subscriptions", tenant=tb))
    expect(sub_id not in ids(got), f"subscription {sub_id} of tenant A is listed in tenant B")
    return None


@check("L6-TEN-019", "Entity types are listed per tenant", needs=W,
       sends="create a type only in tenant A; GET /types in tenant B",
       expects="the type is not in B's typeList",
       explain="Even the catalogue of a commune's data stays private.")
async def _ten_iso_types(ctx: Ctx) -> str | None:
    only_a = f"JcOnlyA{ctx.run_id}"
    ent = {"id": ctx.uid("t19", only_a), "type": only_a, "name": {"type": "Property", "value": "a"}}
    await ctx.create_ok(ent, tenant=ctx.other_tenant("a"))
    tb = await _tenant_b(ctx)
    body = json_object(await ctx.api("GET", "/types", tenant=tb))
    expect(only_a not in (body.get("typeList") or []), f"{only_a} of tenant A is listed in tenant B")
    return None


# ------------------------------------------------------------------------------ authentication


async def _anon(ctx: Ctx, method: str, path: str, *, auth: bool | str = False, **kw: Any) -> Response:
    return await ctx.api(method, path, auth=auth, **kw)


def _unauthorized(resp: Response) -> None:
    status(resp, 401)


@check("L6-AUT-001", "Creating without credentials: 401", needs=A,
       sends="POST /entities without an Authorization header",
       expects="401 Unauthorized",
       explain="Nobody can publish data into the territory's platform anonymously.")
async def _aut_create(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "a1")
    ctx.track(ent["id"])
    _unauthorized(await _anon(ctx, "POST", "/entities", body=ent))
    return None


@check("L6-AUT-002", "401 answers say how to authenticate", needs=A,
       sends="POST /entities without an Authorization header",
       expects="401 with a WWW-Authenticate header",
       explain="Clients learn which scheme to use (RFC 9110 requires the header with every 401).")
async def _aut_www(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "a2")
    ctx.track(ent["id"])
    resp = await _anon(ctx, "POST", "/entities", body=ent)
    status(resp, 401)
    expect(resp.header("WWW-Authenticate"), "no WWW-Authenticate header on the 401")
    return None


@check("L6-AUT-003", "Creating with a wrong token: 401", needs=A,
       sends="POST /entities with Authorization: Bearer <wrong token>",
       expects="401 Unauthorized",
       explain="Any token is not good enough; only valid ones are.")
async def _aut_wrong(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "a3")
    ctx.track(ent["id"])
    _unauthorized(await _anon(ctx, "POST", "/entities", body=ent, auth=f"Bearer jc-wrong-{ctx.run_id}"))
    return None


@check("L6-AUT-004", "Creating with the configured credentials is accepted", needs=("api", "write", "auth"),
       sends="POST /entities with the target's credentials",
       expects="201 Created",
       explain="Authorised publishers are let in, which shows the refusals above are not blanket ones.")
async def _aut_ok(ctx: Ctx) -> str | None:
    status(await ctx.create(_ent(ctx, "a4")), 201)
    return None


@check("L6-AUT-005", "Batch upsert without credentials: 401", needs=A,
       sends="POST /entityOperations/upsert without an Authorization header",
       expects="401 Unauthorized",
       explain="Bulk endpoints are protected like single ones.")
async def _aut_batch(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "a5")
    ctx.track(ent["id"])
    _unauthorized(await _anon(ctx, "POST", "/entityOperations/upsert", body=[ent]))
    return None


async def _existing(ctx: Ctx, label: str) -> dict[str, Any]:
    ent = _ent(ctx, label)
    await ctx.create_ok(ent)
    return ent


@check("L6-AUT-006", "Updating without credentials: 401, value unchanged", needs=A,
       sends="PATCH /entities/{id}/attrs without an Authorization header",
       expects="401, and the stored value unchanged",
       explain="Nobody can alter a commune's data anonymously.")
async def _aut_patch(ctx: Ctx) -> str | None:
    ent = await _existing(ctx, "a6")
    _unauthorized(await _anon(ctx, "PATCH", f"/entities/{ent['id']}/attrs",
                              body={"temperature": {"type": "Property", "value": 66.0}}))
    got = json_object(await ctx.api("GET", f"/entities/{ent['id']}"))
    expect(value_of(got, "temperature") == 1.0, "the anonymous update was applied")
    return None


@check("L6-AUT-007", "Deleting without credentials: 401, entity kept", needs=A,
       sends="DELETE /entities/{id} without an Authorization header",
       expects="401, and the entity still there",
       explain="Nobody can remove a commune's data anonymously.")
async def _aut_delete(ctx: Ctx) -> str | None:
    ent = await _existing(ctx, "a7")
    _unauthorized(await _anon(ctx, "DELETE", f"/entities/{ent['id']}"))
    status(await ctx.api("GET", f"/entities/{ent['id']}"), 200)
    return None


@check("L6-AUT-008", "Subscribing without credentials: 401", needs=A,
       sends="POST /subscriptions without an Authorization header",
       expects="401 Unauthorized",
       explain="Subscriptions send data elsewhere; creating one is a privileged act.")
async def _aut_sub(ctx: Ctx) -> str | None:
    sub_id = f"urn:ngsi-ld:Subscription:jc-{ctx.run_id}-a8"
    ctx.track_subscription(sub_id)
    _unauthorized(await _anon(ctx, "POST", "/subscriptions", body={
        "id": sub_id, "type": "Subscription", "entities": [{"type": ctx.probe_type}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/jc", "accept": "application/json"}}}))
    return None


@check("L6-AUT-009", "A refused write leaves no trace", needs=A,
       sends="POST /entities without credentials, then GET /entities/{id} with them",
       expects="404: nothing was created",
       explain="A refusal that still stores the data is no protection.")
async def _aut_trace(ctx: Ctx) -> str | None:
    ent = _ent(ctx, "a9")
    ctx.track(ent["id"])
    _unauthorized(await _anon(ctx, "POST", "/entities", body=ent))
    status(await ctx.api("GET", f"/entities/{ent['id']}"), 404)
    return None


@check("L6-AUT-010", "Replacing without credentials: 401", needs=A,
       sends="PUT /entities/{id} without an Authorization header",
       expects="401, and the entity unchanged",
       explain="Every write method is protected.")
async def _aut_put(ctx: Ctx) -> str | None:
    ent = await _existing(ctx, "a10")
    _unauthorized(await _anon(ctx, "PUT", f"/entities/{ent['id']}", body={"id": ent["id"], "type": ent["type"]}))
    got = json_object(await ctx.api("GET", f"/entities/{ent['id']}"))
    expect("temperature" in attrs_of(got), "the anonymous replacement was applied")
    return None


@check("L6-AUT-011", "Appending without credentials: 401", needs=A,
       sends="POST /entities/{id}/attrs without an Authorization header",
       expects="401 Unauthorized",
       explain="Every write method is protected.")
async def _aut_append(ctx: Ctx) -> str | None:
    ent = await _existing(ctx, "a11")
    _unauthorized(await _anon(ctx, "POST", f"/entities/{ent['id']}/attrs",
                              body={"humidity": {"type": "Property", "value": 1}}))
    return None


@check("L6-AUT-012", "Batch delete without credentials: 401, entities kept", needs=A,
       sends="POST /entityOperations/delete without an Authorization header",
       expects="401, and the entity still there",
       explain="Bulk removal is protected like single removal.")
async def _aut_batch_delete(ctx: Ctx) -> str | None:
    ent = await _existing(ctx, "a12")
    _unauthorized(await _anon(ctx, "POST", "/entityOperations/delete", body=[ent["id"]]))
    status(await ctx.api("GET", f"/entities/{ent['id']}"), 200)
    return None



