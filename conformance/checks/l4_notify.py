"""L4 — subscriptions and notifications, delivered to a receiver the checker runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from conformance.checks.common import expect, ids, json_list, json_object, problem, status
from conformance.context import JSON, RunContext
from conformance.receiver import Received, Receiver
from conformance.registry import Fail, check
from gateway.model import is_uri

S = ("api", "write")
N = ("api", "write", "receiver")


def _rx(ctx: RunContext) -> Receiver:
    if ctx.receiver is None:
        raise Fail("the notification receiver is not running")
    return ctx.receiver


def _sub(ctx: RunContext, label: str, etype: str, **extra: Any) -> dict[str, Any]:
    notification: dict[str, Any] = {"endpoint": {"uri": _rx(ctx).url(label) if ctx.receiver else
                                                 "http://127.0.0.1:9/jc", "accept": JSON}}
    notification.update(extra.pop("notification", {}))
    return {"id": f"urn:ngsi-ld:Subscription:jc-{ctx.run_id}-{label}", "type": "Subscription",
            "entities": [{"type": etype}], "notification": notification, **extra}


async def _subscribe(ctx: RunContext, sub: dict[str, Any], tenant: Any = None) -> None:
    kw: dict[str, Any] = {} if tenant is None else {"tenant": tenant}
    ctx.track_subscription(sub["id"], **kw)
    resp = await ctx.api("POST", "/subscriptions", body=sub, **kw)
    status(resp, 201)


def _etype(ctx: RunContext, label: str) -> str:
    return f"JcNtf{ctx.run_id}{label.replace('-', '')}"


def _ent(ctx: RunContext, label: str, etype: str, value: float) -> dict[str, Any]:
    return {"id": ctx.uid(label, etype), "type": etype,
            "temperature": {"type": "Property", "value": value, "unitCode": "CEL"},
            "name": {"type": "Property", "value": label}}


def _timeout(ctx: RunContext) -> float:
    return ctx.profile.threshold("notification_timeout_seconds")


def _data(r: Received) -> list[dict[str, Any]]:
    body = r.body if isinstance(r.body, dict) else {}
    data = body.get("data")
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def _temp(d: dict[str, Any]) -> Any:
    t = d.get("temperature")
    return t.get("value") if isinstance(t, dict) else t


async def _notified(ctx: RunContext, label: str, *, value: float = 1.0, sub_extra: dict[str, Any] | None = None,
                    tenant: Any = None) -> tuple[dict[str, Any], Received]:
    """Subscribe to a fresh type, create one entity of it, return the first notification carrying it."""
    etype = _etype(ctx, label)
    await _subscribe(ctx, _sub(ctx, label, etype, **(sub_extra or {})), tenant)
    ent = _ent(ctx, label, etype, value)
    if tenant is None:
        await ctx.create_ok(ent)
    else:
        await ctx.create_ok(ent, tenant=tenant)
    got = await _rx(ctx).wait(label, lambda r: any(d.get("id") == ent["id"] for d in _data(r)), _timeout(ctx))
    if got is None:
        n = len(_rx(ctx).of(label))
        raise Fail(f"no notification about {ent['id']} within {_timeout(ctx):g} s ({n} other notifications)")
    _keep(ctx, got)
    return ent, got


def _keep(ctx: RunContext, got: Received) -> None:
    """Keep a received notification as evidence (headers redacted like any exchange)."""
    shown = ctx.client.recorder.headers(got.headers) if ctx.client else dict(got.headers)
    body = ctx.client.recorder.body(got.raw) if ctx.client else got.raw.decode("utf-8", "replace")
    ctx.measurements.append({"notification_received": {"headers": shown, "body": body}})


# ------------------------------------------------------------------------------ subscriptions


@check("L4-SUB-001", "Create a subscription", needs=S,
       sends="POST /subscriptions with entities and a notification endpoint",
       expects="201 with a Location header",
       explain="Applications ask to be told about changes instead of polling.")
async def _sub_create(ctx: RunContext) -> str | None:
    sub = _sub(ctx, "s1", _etype(ctx, "s1"))
    ctx.track_subscription(sub["id"])
    resp = await ctx.api("POST", "/subscriptions", body=sub)
    status(resp, 201)
    expect((resp.header("Location") or "").endswith(f"/subscriptions/{sub['id']}"),
           f"Location {resp.header('Location')!r}")
    return None


@check("L4-SUB-002", "Retrieve a subscription", needs=S,
       sends="GET /subscriptions/{id}",
       expects="200 with the id, type Subscription and the entities selector",
       explain="What a subscription does can be read back and audited.")
async def _sub_get(ctx: RunContext) -> str | None:
    sub = _sub(ctx, "s2", _etype(ctx, "s2"))
    await _subscribe(ctx, sub)
    body = json_object(await ctx.api("GET", f"/subscriptions/{sub['id']}"))
    expect(body.get("id") == sub["id"] and body.get("type") == "Subscription", f"body {body!r}")
    ents = body.get("entities")
    expect(isinstance(ents, list) and ents and ents[0].get("type") == sub["entities"][0]["type"],
           f"entities {ents!r}")
    return None


@check("L4-SUB-003", "List subscriptions", needs=S,
       sends="GET /subscriptions",
       expects="200, an array containing the subscription",
       explain="Administrators see every active data flow.")
async def _sub_list(ctx: RunContext) -> str | None:
    sub = _sub(ctx, "s3", _etype(ctx, "s3"))
    await _subscribe(ctx, sub)
    got = json_list(await ctx.api("GET", "/subscriptions", params={"limit": "1000"}))
    expect(sub["id"] in ids(got), f"{sub['id']} not listed")
    return None


@check("L4-SUB-004", "A subscription without notification: 400 BadRequestData", needs=S,
       sends="POST /subscriptions with no notification member",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="A subscription that cannot notify anyone is a mistake and is refused.")
async def _sub_no_notification(ctx: RunContext) -> str | None:
    sub = _sub(ctx, "s4", _etype(ctx, "s4"))
    del sub["notification"]
    ctx.track_subscription(sub["id"])
    problem(await ctx.api("POST", "/subscriptions", body=sub), 400, "BadRequestData")
    return None


@check("L4-SUB-005", "Creating an existing subscription: 409 AlreadyExists", needs=S,
       sends="POST /subscriptions twice with the same id",
       expects="409 with a ProblemDetails of type AlreadyExists",
       explain="Subscriptions are not silently overwritten.")
async def _sub_dup(ctx: RunContext) -> str | None:
    sub = _sub(ctx, "s5", _etype(ctx, "s5"))
    await _subscribe(ctx, sub)
    problem(await ctx.api("POST", "/subscriptions", body=sub), 409, "AlreadyExists")
    return None


@check("L4-SUB-006", "Unknown subscription: 404 ResourceNotFound", needs=S,
       sends="GET /subscriptions/{unknown id}",
       expects="404 with a ProblemDetails of type ResourceNotFound",
       explain="Clear errors for subscriptions too.")
async def _sub_unknown(ctx: RunContext) -> str | None:
    problem(await ctx.api("GET", f"/subscriptions/urn:ngsi-ld:Subscription:jc-{ctx.run_id}-absent"), 404,
            "ResourceNotFound")
    return None


@check("L4-SUB-007", "Update a subscription", needs=S,
       sends="PATCH /subscriptions/{id} with a new description",
       expects="204, and the new description read back",
       explain="Subscriptions are maintained without being recreated.")
async def _sub_update(ctx: RunContext) -> str | None:
    sub = _sub(ctx, "s7", _etype(ctx, "s7"))
    await _subscribe(ctx, sub)
    status(await ctx.api("PATCH", f"/subscriptions/{sub['id']}", body={"description": "jc updated"}), 204)
    body = json_object(await ctx.api("GET", f"/subscriptions/{sub['id']}"))
    expect(body.get("description") == "jc updated", f"description {body.get('description')!r}")
    return None


@check("L4-SUB-008", "Delete a subscription", needs=S,
       sends="DELETE /subscriptions/{id}, then GET",
       expects="204, then 404",
       explain="A data flow can be stopped for good.")
async def _sub_delete(ctx: RunContext) -> str | None:
    sub = _sub(ctx, "s8", _etype(ctx, "s8"))
    await _subscribe(ctx, sub)
    status(await ctx.api("DELETE", f"/subscriptions/{sub['id']}"), 204)
    problem(await ctx.api("GET", f"/subscriptions/{sub['id']}"), 404, "ResourceNotFound")
    return None


@check("L4-SUB-009", "A subscription selecting nothing: 400 BadRequestData", needs=S,
       sends="POST /subscriptions with neither entities nor watchedAttributes",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="A subscription must say what it watches.")
async def _sub_nothing(ctx: RunContext) -> str | None:
    sub = _sub(ctx, "s9", _etype(ctx, "s9"))
    del sub["entities"]
    ctx.track_subscription(sub["id"])
    problem(await ctx.api("POST", "/subscriptions", body=sub), 400, "BadRequestData")
    return None


@check("L4-SUB-010", "A subscription id that is not a URI: 400 BadRequestData", needs=S,
       sends="POST /subscriptions with id 'my subscription'",
       expects="400 with a ProblemDetails of type BadRequestData",
       explain="Subscription ids are URIs like entity ids.")
async def _sub_bad_id(ctx: RunContext) -> str | None:
    sub = _sub(ctx, "s10", _etype(ctx, "s10"))
    sub["id"] = "my subscription"
    problem(await ctx.api("POST", "/subscriptions", body=sub), 400, "BadRequestData")
    return None


# ------------------------------------------------------------------------------ notifications


@check("L4-NTF-001", "A matching creation is notified", needs=N,
       sends="subscribe to type T; create an entity of type T",
       expects="a notification carrying the entity reaches the checker's receiver",
       explain="The core promise of subscriptions: changes are pushed to whoever asked.")
async def _ntf_basic(ctx: RunContext) -> str | None:
    await _notified(ctx, "n1")
    return None


@check("L4-NTF-002", "Notifications have the standard shape", needs=N,
       sends="subscribe; create a matching entity",
       expects="a body with id (URI), type Notification, subscriptionId, notifiedAt and a data array",
       explain="Receivers rely on one structure whatever the platform.")
async def _ntf_shape(ctx: RunContext) -> str | None:
    _, got = await _notified(ctx, "n2")
    body = got.body if isinstance(got.body, dict) else {}
    expect(body.get("type") == "Notification", f"type {body.get('type')!r}")
    expect(is_uri(body.get("id")), f"id {body.get('id')!r} is not a URI")
    expect(body.get("subscriptionId") == f"urn:ngsi-ld:Subscription:jc-{ctx.run_id}-n2",
           f"subscriptionId {body.get('subscriptionId')!r}")
    expect(isinstance(body.get("notifiedAt"), str), "no notifiedAt")
    return None


@check("L4-NTF-003", "Notified data is the entity in normalized form", needs=N,
       sends="subscribe; create an entity with temperature 1.0 CEL",
       expects="data holds the entity with temperature {type: Property, value: 1.0, unitCode: CEL}",
       explain="Receivers get complete, typed values, units included.")
async def _ntf_data(ctx: RunContext) -> str | None:
    ent, got = await _notified(ctx, "n3")
    item = next(d for d in _data(got) if d.get("id") == ent["id"])
    expect(item.get("temperature") == ent["temperature"], f"temperature {item.get('temperature')!r}")
    return None


@check("L4-NTF-004", "An update is notified with the new value", needs=N,
       sends="subscribe; create; PATCH the temperature to 42",
       expects="a notification carrying temperature 42",
       explain="Receivers see each change, not only creations.")
async def _ntf_update(ctx: RunContext) -> str | None:
    ent, _ = await _notified(ctx, "n4")
    status(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs",
                         body={"temperature": {"type": "Property", "value": 42.0}}), 204)
    got = await _rx(ctx).wait("n4", lambda r: any(_temp(d) == 42.0 for d in _data(r)), _timeout(ctx))
    expect(got is not None, "no notification with the updated value")
    return None


@check("L4-NTF-005", "Notifications carry the tenant", needs=(*N, "tenancy"),
       sends="subscribe and create in tenant A",
       expects="the notification has the header NGSILD-Tenant: A",
       explain="A receiver serving several communes knows which one a change belongs to.")
async def _ntf_tenant(ctx: RunContext) -> str | None:
    tenant = ctx.other_tenant("a")
    _, got = await _notified(ctx, "n5", tenant=tenant)
    expect(got.headers.get("ngsild-tenant") == tenant, f"NGSILD-Tenant {got.headers.get('ngsild-tenant')!r}")
    return None


@check("L4-NTF-006", "format=keyValues notifications are simplified", needs=N,
       sends='subscribe with notification.format "keyValues"; create',
       expects="data holds temperature as the bare value",
       explain="Simple receivers can ask for simple payloads.")
async def _ntf_kv(ctx: RunContext) -> str | None:
    ent, got = await _notified(ctx, "n6", sub_extra={"notification": {"format": "keyValues"}})
    item = next(d for d in _data(got) if d.get("id") == ent["id"])
    expect(item.get("temperature") == 1.0, f"temperature {item.get('temperature')!r}")
    return None


@check("L4-NTF-007", "notification.attributes limits the notified attributes", needs=N,
       sends='subscribe with notification.attributes ["temperature"]; create',
       expects="data holds temperature and not name",
       explain="Receivers get only what they asked for.")
async def _ntf_attrs(ctx: RunContext) -> str | None:
    ent, got = await _notified(ctx, "n7", sub_extra={"notification": {"attributes": ["temperature"]}})
    item = next(d for d in _data(got) if d.get("id") == ent["id"])
    expect("temperature" in item and "name" not in item, f"attributes notified: {sorted(item)}")
    return None


@check("L4-NTF-008", "q on a subscription filters notifications", needs=N,
       sends="subscribe with q=temperature>10; create with 5, then update to 20",
       expects="a notification with 20 and none with 5",
       explain="Alerts fire only when the condition holds (e.g. a container more than 80 % full).")
async def _ntf_q(ctx: RunContext) -> str | None:
    etype = _etype(ctx, "n8")
    await _subscribe(ctx, _sub(ctx, "n8", etype, q="temperature>10"))
    ent = _ent(ctx, "n8", etype, 5.0)
    await ctx.create_ok(ent)
    status(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs",
                         body={"temperature": {"type": "Property", "value": 20.0}}), 204)
    got = await _rx(ctx).wait("n8", lambda r: any(_temp(d) == 20.0 for d in _data(r)), _timeout(ctx))
    expect(got is not None, "no notification once the condition held")
    wrong = [r for r in _rx(ctx).of("n8") if any(_temp(d) == 5.0 for d in _data(r))]
    expect(not wrong, "a notification was sent while the q condition was false")
    return None


@check("L4-NTF-009", "A paused subscription does not notify", needs=N,
       sends="subscribe with isActive false; create; reactivate; update",
       expects="notifications only after reactivation",
       explain="Pausing a data flow really stops it.")
async def _ntf_paused(ctx: RunContext) -> str | None:
    etype = _etype(ctx, "n9")
    sub = _sub(ctx, "n9", etype, isActive=False)
    await _subscribe(ctx, sub)
    ent = _ent(ctx, "n9", etype, 1.0)
    await ctx.create_ok(ent)
    status(await ctx.api("PATCH", f"/subscriptions/{sub['id']}", body={"isActive": True}), 204)
    status(await ctx.api("PATCH", f"/entities/{ent['id']}/attrs",
                         body={"temperature": {"type": "Property", "value": 2.0}}), 204)
    got = await _rx(ctx).wait("n9", lambda r: any(_temp(d) == 2.0 for d in _data(r)), _timeout(ctx))
    expect(got is not None, "no notification after reactivation")
    wrong = [r for r in _rx(ctx).of("n9") if any(_temp(d) == 1.0 for d in _data(r))]
    expect(not wrong, "a notification was sent while the subscription was paused")
    return None


@check("L4-NTF-010", "Notifications are application/json by default", needs=N,
       sends='subscribe with endpoint.accept "application/json"; create',
       expects="the notification has Content-Type application/json",
       explain="Receivers get the format they declared.")
async def _ntf_ctype(ctx: RunContext) -> str | None:
    _, got = await _notified(ctx, "n10")
    expect(got.content_type == JSON, f"Content-Type {got.content_type!r}")
    return None


@check("L4-NTF-011", "The subscription records its notifications", needs=N,
       sends="subscribe; create; GET /subscriptions/{id}",
       expects="notification.timesSent ≥ 1 and notification.lastNotification set",
       explain="Operators can see that a data flow is alive.")
async def _ntf_status(ctx: RunContext) -> str | None:
    await _notified(ctx, "n11")
    # The target records a delivery once the receiver has answered, which may be a moment after the
    # notification arrived here: read the subscription again until it does (bounded wait).
    deadline = time.monotonic() + _timeout(ctx)
    while True:
        body = json_object(await ctx.api("GET", f"/subscriptions/urn:ngsi-ld:Subscription:jc-{ctx.run_id}-n11"))
        notif = body.get("notification") or {}
        sent = notif.get("timesSent")
        if (isinstance(sent, int) and sent >= 1) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    expect(isinstance(sent, int) and sent >= 1, f"timesSent {sent!r}")
    expect(isinstance(notif.get("lastNotification"), str), f"lastNotification {notif.get('lastNotification')!r}")
    return None


@check("L4-NTF-012", "Entities of another type are not notified", needs=N,
       sends="subscribe to type T; create an entity of type U, then one of type T",
       expects="only the entity of type T is notified",
       explain="Receivers are not flooded with what they did not ask for.")
async def _ntf_other_type(ctx: RunContext) -> str | None:
    etype = _etype(ctx, "n12")
    await _subscribe(ctx, _sub(ctx, "n12", etype))
    other = _ent(ctx, "n12other", etype + "Other", 1.0)
    await ctx.create_ok(other)
    ent = _ent(ctx, "n12", etype, 1.0)
    await ctx.create_ok(ent)
    got = await _rx(ctx).wait("n12", lambda r: any(d.get("id") == ent["id"] for d in _data(r)), _timeout(ctx))
    expect(got is not None, "no notification for the matching entity")
    wrong = [r for r in _rx(ctx).of("n12") if any(d.get("id") == other["id"] for d in _data(r))]
    expect(not wrong, "an entity of another type was notified")
    return None
