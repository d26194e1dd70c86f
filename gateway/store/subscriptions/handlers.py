"""The /subscriptions HTTP API (ETSI GS CIM 009 V1.9.1 §6.10, §6.11) and ``setup_subscriptions``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlencode

from aiohttp import web

from gateway import model
from gateway.store import http, jsonld
from gateway.store.base import Storage
from gateway.store.problems import NgsiError, bad_request
from gateway.store.subscriptions.notifier import NOTIFIER_KEY, Notifier, subscription_context
from gateway.store.subscriptions.parsing import STATS, Subscription, build, redacted_view, unredacted

_LIST_PARAMS: Final = frozenset({"limit", "offset", "count", "options"})
_RETRIEVE_PARAMS: Final = frozenset({"options"})


def _options(request: web.Request, allowed: frozenset[str]) -> set[str]:
    """The ``options`` values (sysAttrs; count on the list, as FIWARE clients send it)."""
    given = {o.strip() for o in request.query.get("options", "").split(",") if o.strip()}
    unknown = sorted(given - allowed)
    if unknown:
        raise bad_request(f"options: {unknown[0]!r} is not supported here")
    return given


def require_future_expiry(body: Mapping[str, Any]) -> None:
    """§5.8.1, §5.8.2 (and §5.11 for context source subscriptions): a client's expiresAt must lie in the future."""
    value = body.get("expiresAt")
    if value is None:
        return
    try:
        instant = model.parse_time(model.utc_time(value))
    except (model.ModelError, TypeError, ValueError):
        return  # build() names the malformed member
    if instant <= datetime.now(UTC):
        raise bad_request("/expiresAt: must be a DateTime in the future")


def _sub_id(request: web.Request) -> str:
    sub_id = request.match_info["subscription_id"]
    if not model.is_uri(sub_id):
        raise bad_request(f"subscription id {sub_id!r} is not a URI")
    return sub_id


def _sub_url(ngsi: http.NgsiContext, sub_id: str) -> str:
    return f"{ngsi.settings.base_path}/subscriptions/{quote(sub_id, safe=':@!$&()*+,;=-._~')}"


def _body_context(ngsi: http.NgsiContext, body: http.Body) -> list[jsonld.ContextEntry] | None:
    """The @context entries a subscription body carries (ld+json body or Link), None when absent."""
    if body.content_type == http.LD_JSON:
        if not isinstance(body.data, Mapping) or "@context" not in body.data:
            raise bad_request("with Content-Type application/ld+json the @context must be in the body")
        entries = jsonld.normalize_entries(body.data["@context"])
        ngsi.contexts.get(entries)  # fail now (LdContextNotAvailable) rather than at notification time
        return entries
    if body.link:
        ngsi.contexts.get([body.link])
        return [body.link]
    return None


async def _tenant_known(ngsi: http.NgsiContext, notifier: Notifier) -> None:
    if await ngsi.storage.tenant_exists(ngsi.tenant):
        return
    if any(t == ngsi.tenant for t, _ in notifier.subs):
        return
    raise NgsiError("NonexistentTenant", f"tenant {ngsi.tenant!r} does not exist")


def _lookup(notifier: Notifier, ngsi: http.NgsiContext, sub_id: str) -> Subscription:
    sub = notifier.subs.get((ngsi.tenant, sub_id))
    if sub is None:
        raise NgsiError("ResourceNotFound", f"subscription {sub_id} does not exist")
    return sub


async def create_subscription(request: web.Request) -> web.Response:
    """POST /subscriptions (§6.10.3.1): 201 with Location; AlreadyExists 409."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    body = await http.read_body(request)
    if not isinstance(body.data, Mapping):
        raise bad_request("the body must be one subscription (a JSON object)")
    entries = _body_context(ngsi, body) or []
    require_future_expiry(body.data)
    sub = build(body.data, ngsi.tenant, entries, ngsi.contexts)
    if (ngsi.tenant, sub.id) in notifier.subs:
        raise NgsiError("AlreadyExists", f"subscription {sub.id} already exists")
    await notifier.add(sub)
    response = web.Response(status=201)
    response.headers["Location"] = _sub_url(ngsi, sub.id)
    return response


async def list_subscriptions(request: web.Request) -> web.Response:
    """GET /subscriptions (§6.10.3.2), paginated, sorted by creation time then id."""
    http.check_params(request, _LIST_PARAMS)
    options = _options(request, frozenset({"sysAttrs", "count"}))
    ngsi = await http.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    await _tenant_known(ngsi, notifier)
    media = http.negotiate(request)
    limit, offset, count = http.paging(ngsi)
    ctx = ngsi.context()
    subs = sorted(
        (s for (t, _), s in notifier.subs.items() if t == ngsi.tenant),
        key=lambda s: (model.parse_time(s.created_at), s.id),  # instants: texts with fractions mis-sort
    )
    page = subs[offset : offset + limit]
    headers = {http.COUNT_HEADER: str(len(subs))} if count or "count" in options else {}
    links = _page_links(ngsi, media, limit, offset, offset + limit < len(subs))
    sys_attrs = "sysAttrs" in options
    shown = [redacted_view(s.to_json(ctx, sys_attrs=sys_attrs)) for s in page]
    return http.respond(ngsi, shown, media=media, headers=headers, links=links)


def _page_links(ngsi: http.NgsiContext, media: str, limit: int, offset: int, more: bool) -> list[str]:
    """rel=next/prev links on the canonical path, typed as the response is (§6.3.13)."""
    params = dict(ngsi.request.query)
    path = f"{ngsi.settings.base_path}/subscriptions"
    links = []
    if more and limit > 0:
        params.update(limit=str(limit), offset=str(offset + limit))
        links.append(f'<{path}?{urlencode(params)}>;rel="next";type="{media}"')
    if offset > 0 and limit > 0:
        params.update(limit=str(limit), offset=str(max(0, offset - limit)))
        links.append(f'<{path}?{urlencode(params)}>;rel="prev";type="{media}"')
    return links


async def retrieve_subscription(request: web.Request) -> web.Response:
    """GET /subscriptions/{id} (§6.11.3.1)."""
    http.check_params(request, _RETRIEVE_PARAMS)
    sys_attrs = "sysAttrs" in _options(request, frozenset({"sysAttrs"}))
    ngsi = await http.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    media = http.negotiate(request)
    sub = _lookup(notifier, ngsi, _sub_id(request))
    # readers never see the endpoint's password nor credential headers (deliveries use them)
    return http.respond(ngsi, redacted_view(sub.to_json(ngsi.context(), sys_attrs=sys_attrs)), media=media)


async def update_subscription(request: web.Request) -> web.Response:
    """PATCH /subscriptions/{id} (§6.11.3.2): members of the fragment replace the stored ones."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    sub_id = _sub_id(request)
    body = await http.read_body(request, merge_patch=True)  # §6.3.4 media checks (415) come first
    sub = _lookup(notifier, ngsi, sub_id)
    if not isinstance(body.data, Mapping) or not body.data:
        raise bad_request("the body must be a non-empty JSON object (a subscription fragment)")
    fragment = unredacted({k: v for k, v in body.data.items() if k != "@context"}, sub.definition)
    if fragment.get("id", sub_id) != sub_id:
        raise bad_request("/id: the subscription id cannot be changed")
    given = _body_context(ngsi, body)
    entries = given if given is not None else sub.context
    # bring the stored members into the fragment's @context, then let the fragment win
    current = sub.to_json(ngsi.contexts.get(entries))
    for name in ("status", "createdAt", "modifiedAt"):
        current.pop(name, None)
    if "notification" in current:
        current["notification"] = {
            k: v for k, v in current["notification"].items() if k not in (*STATS, "status")
        }
    # §5.8.2: a member of the fragment replaces the stored one whole (a notification without an
    # endpoint is invalid, as it would be on creation); null removes an optional member
    require_future_expiry(fragment)
    merged = {k: v for k, v in {**current, **fragment}.items() if v is not None}
    updated = build(merged, ngsi.tenant, entries, ngsi.contexts, created_at=sub.created_at, stats=sub.stats)
    await notifier.add(updated)
    return http.no_content()


async def delete_subscription(request: web.Request) -> web.Response:
    """DELETE /subscriptions/{id} (§6.11.3.3)."""
    http.check_params(request, ())
    ngsi = await http.ngsi_context(request, must_exist=False)
    notifier = request.config_dict[NOTIFIER_KEY]
    sub_id = _sub_id(request)
    _lookup(notifier, ngsi, sub_id)
    await notifier.remove(ngsi.tenant, sub_id)
    return http.no_content()


def setup_subscriptions(app: web.Application, storage: Storage) -> None:
    """Add the /subscriptions routes, the notifier and its background tasks to the store app."""
    app[NOTIFIER_KEY] = Notifier(storage, None)
    app.cleanup_ctx.append(subscription_context(app))
    r = app.router
    r.add_post("/subscriptions", create_subscription)
    r.add_get("/subscriptions", list_subscriptions, allow_head=False)
    r.add_get("/subscriptions/{subscription_id}", retrieve_subscription, allow_head=False)
    r.add_patch("/subscriptions/{subscription_id}", update_subscription)
    r.add_delete("/subscriptions/{subscription_id}", delete_subscription)

