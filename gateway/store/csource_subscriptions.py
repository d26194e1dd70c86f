"""Context source registration subscriptions (ETSI GS CIM 009 V1.9.1 §5.11, §6.10-§6.11 ``/csourceSubscriptions``).

A client subscribes to the registrations of context sources (entities, watchedAttributes, q/csf
on registration members, geoQ on the registration's location, temporalQ on its observation or
management interval) and receives ``ContextSourceNotification`` s (§5.3.2) when a matching
registration is created (``newlyMatching``), updated (``updated``) or deleted or stops matching
(``noLongerMatching``); on creation and on every update of the subscription it receives every
registration that matches at that moment. Only the matching ``RegistrationInfo`` elements are sent.

Subscriptions are one JSON document each in the storage's ``csource_subscriptions`` table (SQLite
table, PostgreSQL migration 10); deliveries run in the background, never on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from gateway import model
from gateway.store import codec, http, jsonld
from gateway.store import registrations as regs
from gateway.store.problems import NgsiError, bad_request
from gateway.store.records import RegistrationRecords
from gateway.store.settings import CONTEXTS_KEY, STORAGE_KEY
from gateway.store.subscriptions import delivery
from gateway.store.subscriptions.handlers import require_future_expiry
from gateway.store.subscriptions.parsing import STATS, Subscription, build, now, redacted_view, unredacted

log = logging.getLogger("jonction.store.csource_subscriptions")

_OWN_MEMBERS: Final = ("q", "csf", "temporalQ")
"""Members whose meaning differs from an entity subscription's: they filter registration members."""
_LIST_PARAMS: Final = frozenset({"limit", "offset", "count", "options"})
MAX_PER_TENANT: Final = 1000
DELIVERY_TIMEOUT: Final = 10.0
"""Seconds a receiver has to answer one notification."""
RETRY_DELAYS: Final = (0.5, 2.0)
"""Waits before the retries of a failed notification (then it counts as failed)."""


@dataclass(slots=True)
class CsourceSubscription:
    """A validated context source registration subscription."""

    sub: Subscription
    """The members it shares with an entity subscription (entities, watchedAttributes, geoQ, notification...)."""
    own: dict[str, Any]
    """q, csf and temporalQ as sent."""
    q: list[tuple[str, str, str]] | None = None
    csf: list[tuple[str, str, str]] | None = None
    temporal: tuple[str, datetime, datetime | None, str] | None = None

    @property
    def active(self) -> bool:
        """True when notifications are sent (neither paused nor expired)."""
        return self.sub.status == "active"

    def to_json(self, ctx: jsonld.Context, *, sys_attrs: bool = False) -> dict[str, Any]:
        """The subscription as the API shows it (secrets redacted)."""
        out = self.sub.to_json(ctx, sys_attrs=sys_attrs)
        if "notificationTrigger" not in self.sub.definition:
            out.pop("notificationTrigger", None)  # an entity-subscription member, not one of §5.2.12 here
        out.update(self.own)
        return redacted_view(out)

    def stored(self) -> dict[str, Any]:
        """The document kept in the csource_subscriptions table."""
        doc = self.sub.stored()
        doc["own"] = self.own
        return doc


def _temporal(value: Any) -> tuple[str, datetime, datetime | None, str]:
    if not isinstance(value, Mapping):
        raise bad_request("/temporalQ: must be an object with timerel and timeAt")
    timerel = value.get("timerel")
    if timerel not in ("before", "after", "between"):
        raise bad_request("/temporalQ/timerel: must be before, after or between")
    if not isinstance(value.get("timeAt"), str):
        raise bad_request("/temporalQ/timeAt: mandatory, an RFC 3339 date-time")
    try:
        at = model.parse_time(model.utc_time(value["timeAt"]))
        end_text = value.get("endTimeAt")
        end = model.parse_time(model.utc_time(end_text)) if end_text is not None else None
    except (model.ModelError, TypeError, ValueError):
        raise bad_request("/temporalQ: timeAt/endTimeAt must be RFC 3339 date-times") from None
    if timerel == "between" and end is None:
        raise bad_request("/temporalQ/endTimeAt: mandatory with timerel between")
    prop = value.get("timeproperty", "observedAt")
    if prop not in ("observedAt", "createdAt", "modifiedAt"):
        raise bad_request("/temporalQ/timeproperty: must be observedAt, createdAt or modifiedAt")
    interval = "managementInterval" if prop in ("createdAt", "modifiedAt") else "observationInterval"
    return str(timerel), at, end, interval


def parse(
    body: Mapping[str, Any], tenant: str, entries: Sequence[jsonld.ContextEntry], contexts: jsonld.ContextCache,
    *, created_at: str | None = None, stats: Mapping[str, Any] | None = None,
) -> CsourceSubscription:
    """Validate a context source registration subscription (§5.2.12 as §5.11 reads it)."""
    if not isinstance(body, Mapping):
        raise bad_request("the subscription must be a JSON object")
    own = {k: body[k] for k in _OWN_MEMBERS if k in body}
    common = {k: v for k, v in body.items() if k not in _OWN_MEMBERS}
    sub = build(common, tenant, entries, contexts, created_at=created_at, stats=stats)
    out = CsourceSubscription(sub, own)
    for name in ("q", "csf"):
        if name in own:
            if not isinstance(own[name], str):
                raise bad_request(f"/{name}: must be a string")
            try:
                setattr(out, name, regs._q_filter(own[name]))
            except NgsiError as exc:
                raise bad_request(f"/{name}: {exc.detail}") from None
    if "temporalQ" in own:
        out.temporal = _temporal(own["temporalQ"])
    return out


def _load(document: str, contexts: jsonld.ContextCache, tenant: str, sub_id: str) -> CsourceSubscription:
    stored = codec.loads(document)
    body = {**stored["definition"], **stored.get("own", {}), "id": sub_id, "type": "Subscription"}
    parsed = parse(body, tenant, stored.get("context", []), contexts, created_at=stored.get("createdAt"),
                   stats=stored.get("stats"))
    parsed.sub.modified_at = stored.get("modifiedAt", parsed.sub.modified_at)
    return parsed


# ------------------------------------------------------------------ matching (§5.11.7)


def matching_information(csub: CsourceSubscription, doc: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The RegistrationInfo elements of a stored registration the subscription selects; None: no match."""
    if regs._expired(doc):
        return None
    sub = csub.sub
    found = []
    for info in doc.get("information", ()):
        ok = not sub.entities or any(
            regs._info_matches(info, set(e.iris), {e.id} if e.id else None, e.pattern, None) for e in sub.entities
        )
        if ok and sub.watched is not None:
            ok = regs._info_matches(info, None, None, None, set(sub.watched))
        if ok:
            found.append(info)
    if not found:
        return None
    ctx = sub.ctx
    assert ctx is not None
    if csub.q is not None and not regs._q_matches(doc, csub.q, ctx):
        return None
    if csub.csf is not None and not regs._q_matches(doc, csub.csf, ctx):
        return None
    if sub.geo is not None:
        geometry = doc.get(sub.geo.geoproperty)
        if geometry is None or not sub.geo.matches(geometry):
            return None
    if csub.temporal is not None and not regs._time_matches(doc, csub.temporal):
        return None
    return found


def _notification(
    csub: CsourceSubscription, docs: Sequence[tuple[Mapping[str, Any], list[dict[str, Any]]]], reason: str
) -> tuple[bytes, dict[str, str]]:
    sub = csub.sub
    ctx = sub.notify_ctx
    assert ctx is not None
    data = [regs.redacted(regs.render({**doc, "information": infos}, ctx)) for doc, infos in docs]
    for reg in data:
        for info in reg.get("information", ()):
            for entity in info.get("entities", ()):
                if isinstance(entity.get("type"), str):
                    entity["type"] = [entity["type"]]  # EntityInfo.type as an array, one form for receivers
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        "type": "ContextSourceNotification",
        "subscriptionId": sub.id,
        "notifiedAt": now(),
        "data": data,
        "triggerReason": reason,
    }
    headers = {"Content-Type": sub.accept}
    if sub.accept == http.LD_JSON:
        body["@context"] = ctx.as_json()
    else:
        headers["Link"] = f'<{sub.notify_link}>; rel="{http.CONTEXT_REL}"; type="{http.LD_JSON}"'
    if sub.tenant:
        headers[http.TENANT_HEADER] = sub.tenant
    headers.update(dict(sub.receiver_info))
    return codec.dumps_bytes(body), headers


# ------------------------------------------------------------------ the service


class CsourceSubscriptions:
    """Persistence, matching and delivery of context source registration subscriptions of one store."""

    def __init__(self, contexts: jsonld.ContextCache) -> None:
        self.contexts = contexts
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._doc_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def start(self) -> None:
        """Open the HTTP client used for notifications."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT), connector=aiohttp.TCPConnector(limit=32)
        )

    async def close(self) -> None:
        """Finish pending deliveries (bounded) and close the client."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=DELIVERY_TIMEOUT)
        for task in self._tasks:
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def load_all(self, records: RegistrationRecords, tenant: str) -> list[CsourceSubscription]:
        """Every subscription of a tenant (one that no longer parses is logged and skipped)."""
        out = []
        for text in await records.load(tenant):
            sub_id = codec.loads(text).get("id", "")
            try:
                out.append(_load(text, self.contexts, tenant, sub_id))
            except NgsiError as exc:
                log.warning("csource subscription %s of tenant %r is unreadable: %s", sub_id, tenant, exc.detail)
        return out

    def deliver(
        self, records: RegistrationRecords, csub: CsourceSubscription,
        docs: Sequence[tuple[Mapping[str, Any], list[dict[str, Any]]]], reason: str,
    ) -> None:
        """Queue one notification (in the background: the request that caused it does not wait)."""
        if not docs or not csub.active:
            return
        task = asyncio.get_running_loop().create_task(self._send(records, csub, docs, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self, records: RegistrationRecords, csub: CsourceSubscription,
        docs: Sequence[tuple[Mapping[str, Any], list[dict[str, Any]]]], reason: str,
    ) -> None:
        sub = csub.sub
        payload, headers = _notification(csub, docs, reason)
        key = (sub.tenant, sub.id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one delivery at a time per subscription: the receiver sees them in order
            ok, reason_text = await delivery.post(self._session, sub.endpoint, payload, headers)
            for wait in RETRY_DELAYS:
                if ok:
                    break
                await asyncio.sleep(wait)
                if await records.get(sub.tenant, sub.id) is None:
                    return  # deleted meanwhile: its receiver may be someone else's by now
                ok, reason_text = await delivery.post(self._session, sub.endpoint, payload, headers)
            if not ok:
                log.info("csource notification of %s to %s failed: %s", sub.id, delivery.redacted(sub.endpoint),
                         reason_text)
            stamp = now()
            async with self.doc_lock(sub.tenant, sub.id):
                await self._count(records, sub, ok, stamp)

    def doc_lock(self, tenant: str, sub_id: str) -> asyncio.Lock:
        """Held around every read-modify-write of one stored subscription (PATCH, delivery statistics)."""
        return self._doc_locks.setdefault((tenant, sub_id), asyncio.Lock())

    async def _count(self, records: RegistrationRecords, sub: Subscription, ok: bool, stamp: str) -> None:
        """Add one delivery to the stored statistics (§5.2.14 timesSent, lastSuccess...)."""
        text = await records.get(sub.tenant, sub.id)
        if text is None:
            return  # deleted meanwhile
        stored = codec.loads(text)
        stats = dict(stored.get("stats") or {})
        stats["timesSent"] = int(stats.get("timesSent", 0)) + 1
        stats["lastNotification"] = stamp
        if ok:
            stats["lastSuccess"] = stamp
            stats["status"] = "ok"
        else:
            stats["timesFailed"] = int(stats.get("timesFailed", 0)) + 1
            stats["lastFailure"] = stamp
            stats["status"] = "failed"
        stored["stats"] = stats
        await records.replace(sub.tenant, sub.id, codec.dumps(stored))

    async def registration_changed(
        self, storage: Any, tenant: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
    ) -> None:
        """Notify the subscriptions a registration's creation, update or deletion concerns (§5.11.7)."""
        records = _records_of(storage)
        if records is None:
            return
        for csub in await self.load_all(records, tenant):
            old = matching_information(csub, before) if before is not None else None
            new = matching_information(csub, after) if after is not None else None
            if new is not None and after is not None:
                self.deliver(records, csub, [(after, new)], "updated" if old is not None else "newlyMatching")
            elif old is not None and before is not None:
                self.deliver(records, csub, [(before, old)], "noLongerMatching")

    async def notify_current(self, storage: Any, records: RegistrationRecords, csub: CsourceSubscription) -> None:
        """Send every registration matching now (on creation and update of the subscription)."""
        reg_records = regs_records(storage)
        if reg_records is None:
            return
        found = []
        for text in await reg_records.load(csub.sub.tenant):
            doc = codec.loads(text)
            infos = matching_information(csub, doc)
            if infos is not None:
                found.append((doc, infos))
        self.deliver(records, csub, found, "newlyMatching")


CSOURCE_SUBS_KEY: Final = web.AppKey("jonction.store.csource_subscriptions", CsourceSubscriptions)


def _records_of(storage: Any) -> RegistrationRecords | None:
    factory = getattr(storage, "csource_subscription_records", None)
    return None if factory is None else cast(RegistrationRecords, factory())


def regs_records(storage: Any) -> RegistrationRecords | None:
    """The storage's context source registrations, or None when the backend keeps none."""
    factory = getattr(storage, "registration_records", None)
    return None if factory is None else cast(RegistrationRecords, factory())


async def registration_changed(
    request: web.Request, tenant: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> None:
    """Hook for the /csourceRegistrations handlers: a registration was created, updated or deleted."""
    service = request.config_dict.get(CSOURCE_SUBS_KEY)
    if service is not None:
        await service.registration_changed(request.config_dict[STORAGE_KEY], tenant, before, after)


# ------------------------------------------------------------------ HTTP handlers (§6.10, §6.11)


def _records(request: web.Request) -> RegistrationRecords:
    records = _records_of(request.config_dict[STORAGE_KEY])
    if records is None:
        raise NgsiError("OperationNotSupported", "this storage backend does not keep context source subscriptions")
    return records


def _sub_id(request: web.Request) -> str:
    sub_id = request.match_info["subscription_id"]
    if not model.is_uri(sub_id):
        raise bad_request(f"subscription id {sub_id!r} is not a URI")
    return sub_id


def _body_context(ngsi: http.NgsiContext, body: http.Body) -> list[jsonld.ContextEntry] | None:
    if body.content_type == http.LD_JSON:
        if not isinstance(body.data, Mapping) or "@context" not in body.data:
            raise bad_request("with Content-Type application/ld+json the @context must be in the body")
        entries = jsonld.normalize_entries(body.data["@context"])
        ngsi.contexts.get(entries)
        return entries
    if body.link:
        ngsi.contexts.get([body.link])
        return [body.link]
    return None


async def _lookup(request: web.Request, ngsi: http.NgsiContext, sub_id: str) -> CsourceSubscription:
    text = await _records(request).get(ngsi.tenant, sub_id)
    if text is None:
        raise NgsiError("ResourceNotFound", f"context source subscription {sub_id} does not exist")
    return _load(text, ngsi.contexts, ngsi.tenant, sub_id)


def _options(request: web.Request) -> set[str]:
    given = {o.strip() for o in request.query.get("options", "").split(",") if o.strip()}
    unknown = sorted(given - {"sysAttrs", "count"})
    if unknown:
        raise bad_request(f"options: {unknown[0]!r} is not supported here")
    return given


async def create_csource_subscription(request: web.Request) -> web.Response:
    """POST /csourceSubscriptions (§6.10.3.1): 201 with Location; AlreadyExists 409."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    body = await http.read_body(request)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be one subscription (a JSON object)")
    entries = _body_context(ngsi, body) or []
    require_future_expiry(body.data)
    csub = parse(body.data, ngsi.tenant, entries, ngsi.contexts)
    records = _records(request)
    if len(await records.load(ngsi.tenant)) >= MAX_PER_TENANT:
        raise NgsiError("OperationNotSupported", f"at most {MAX_PER_TENANT} context source subscriptions per tenant")
    await ngsi.storage.ensure_tenant(ngsi.tenant)
    if not await records.create(ngsi.tenant, csub.sub.id, codec.dumps({"id": csub.sub.id, **csub.stored()})):
        raise NgsiError("AlreadyExists", f"context source subscription {csub.sub.id} already exists")
    await request.config_dict[CSOURCE_SUBS_KEY].notify_current(ngsi.storage, records, csub)
    response = web.Response(status=201)
    response.headers["Location"] = (
        f"{ngsi.settings.base_path}/csourceSubscriptions/{quote(csub.sub.id, safe=':@!$&()*+,;=-._~')}"
    )
    return response


async def list_csource_subscriptions(request: web.Request) -> web.Response:
    """GET /csourceSubscriptions (§6.10.3.2), paginated, by creation time then id."""
    http.check_params(request, _LIST_PARAMS)
    options = _options(request)
    ngsi = await http.ngsi_context(request, must_exist=False)
    media = http.negotiate(request)
    limit, offset, count = http.paging(ngsi)
    service = request.config_dict[CSOURCE_SUBS_KEY]
    subs = sorted(await service.load_all(_records(request), ngsi.tenant),
                  key=lambda s: (model.parse_time(s.sub.created_at), s.sub.id))
    page = subs[offset : offset + limit]
    headers = {http.COUNT_HEADER: str(len(subs))} if count or "count" in options else {}
    links = []
    params = dict(request.query)
    path = f"{ngsi.settings.base_path}/csourceSubscriptions"
    if offset + limit < len(subs) and limit > 0:
        links.append(f'<{path}?{urlencode({**params, "limit": limit, "offset": offset + limit})}>;rel="next";'
                     f'type="{media}"')
    if offset > 0 and limit > 0:
        links.append(f'<{path}?{urlencode({**params, "limit": limit, "offset": max(0, offset - limit)})}>;rel="prev";'
                     f'type="{media}"')
    ctx = ngsi.context()
    shown = [s.to_json(ctx, sys_attrs="sysAttrs" in options) for s in page]
    return http.respond(ngsi, shown, media=media, headers=headers, links=links)


async def retrieve_csource_subscription(request: web.Request) -> web.Response:
    """GET /csourceSubscriptions/{id} (§6.11.3.1)."""
    http.check_params(request, ("options",))
    options = _options(request)
    ngsi = await http.ngsi_context(request, must_exist=False)
    media = http.negotiate(request)
    csub = await _lookup(request, ngsi, _sub_id(request))
    return http.respond(ngsi, csub.to_json(ngsi.context(), sys_attrs="sysAttrs" in options), media=media)


async def update_csource_subscription(request: web.Request) -> web.Response:
    """PATCH /csourceSubscriptions/{id} (§6.11.3.2): fragment members replace the stored ones; notifies anew."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    sub_id = _sub_id(request)
    body = await http.read_body(request, merge_patch=True)
    service = request.config_dict[CSOURCE_SUBS_KEY]
    async with service.doc_lock(ngsi.tenant, sub_id):
        updated, records = await _update(request, ngsi, sub_id, body)
    await service.notify_current(ngsi.storage, records, updated)
    return http.no_content()


async def _update(
    request: web.Request, ngsi: http.NgsiContext, sub_id: str, body: http.Body
) -> tuple[CsourceSubscription, RegistrationRecords]:
    csub = await _lookup(request, ngsi, sub_id)
    if not isinstance(body.data, Mapping) or not body.data:
        raise bad_request("the body must be a non-empty JSON object (a subscription fragment)")
    stored_view = {**csub.sub.definition, **csub.own}
    fragment = unredacted({k: v for k, v in body.data.items() if k != "@context"}, stored_view)
    if fragment.get("id", sub_id) != sub_id:
        raise bad_request("/id: the subscription id cannot be changed")
    if fragment.get("type", "Subscription") != "Subscription":
        raise bad_request("/type: must be 'Subscription'")
    given = _body_context(ngsi, body)
    entries = given if given is not None else csub.sub.context
    current = csub.sub.to_json(ngsi.contexts.get(entries))
    if "notificationTrigger" not in csub.sub.definition:
        current.pop("notificationTrigger", None)
    current.update(csub.own)
    for name in ("status", "createdAt", "modifiedAt"):
        current.pop(name, None)
    if "notification" in current:
        current["notification"] = {k: v for k, v in current["notification"].items() if k not in (*STATS, "status")}
    require_future_expiry(fragment)
    merged = {k: v for k, v in {**current, **fragment}.items() if v is not None}
    updated = parse(merged, ngsi.tenant, entries, ngsi.contexts, created_at=csub.sub.created_at, stats=csub.sub.stats)
    records = _records(request)
    if not await records.replace(ngsi.tenant, sub_id, codec.dumps({"id": sub_id, **updated.stored()})):
        raise NgsiError("ResourceNotFound", f"context source subscription {sub_id} does not exist")
    return updated, records


async def delete_csource_subscription(request: web.Request) -> web.Response:
    """DELETE /csourceSubscriptions/{id} (§6.11.3.3)."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    sub_id = _sub_id(request)
    if not await _records(request).delete(ngsi.tenant, sub_id):
        raise NgsiError("ResourceNotFound", f"context source subscription {sub_id} does not exist")
    return http.no_content()


def setup_csource_subscriptions(app: web.Application) -> None:
    """Add the /csourceSubscriptions routes and the notification client to the store app."""
    service = CsourceSubscriptions(app[CONTEXTS_KEY])
    app[CSOURCE_SUBS_KEY] = service

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:  # noqa: ARG001  # cleanup_ctx signature
        await service.start()
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await service.close()

    app.cleanup_ctx.append(lifecycle)
    r = app.router
    r.add_post("/csourceSubscriptions", create_csource_subscription)
    r.add_get("/csourceSubscriptions", list_csource_subscriptions, allow_head=False)
    r.add_get("/csourceSubscriptions/{subscription_id}", retrieve_csource_subscription, allow_head=False)
    r.add_patch("/csourceSubscriptions/{subscription_id}", update_csource_subscription)
    r.add_delete("/csourceSubscriptions/{subscription_id}", delete_csource_subscription)

