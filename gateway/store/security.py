"""Access control of the store API: bearer tokens (constant-time compare, never logged) and
refusal of cross-site writes (``Host`` and ``Origin`` checks, see :mod:`gateway.crosssite`)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.crosssite import HostPolicy, refusal
from gateway.store.http import TENANT_HEADER
from gateway.store.problems import NgsiError
from gateway.store.settings import READER_STORAGE, StoreSettings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def token_matches(presented: str, accepted: frozenset[str]) -> bool:
    """True when ``presented`` equals one accepted token; compares against every one, in constant time."""
    given = presented.encode()
    found = False
    for token in accepted:
        found |= hmac.compare_digest(given, token.encode())
    return found


def auth_middleware(settings: StoreSettings) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Middleware requiring ``Authorization: Bearer <token>`` on writes (and reads if configured)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in _READS and not settings.protect_reads:
            return await handler(request)
        if READER_STORAGE.get() is not None:
            return await handler(request)  # a read the sharing policy filters (gateway.store.readers)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        tenant = request.headers.get(TENANT_HEADER, "")
        accepted = settings.tokens | settings.tenant_tokens.get(tenant, frozenset())
        if scheme.lower() != "bearer" or not token.strip() or not token_matches(token.strip(), accepted):
            raise NgsiError(
                "Unauthorized",
                "a valid bearer token is required (Authorization: Bearer <token>) for this tenant",
                401,
                title="Unauthorized",
            )
        return await handler(request)

    return middleware


def cross_site_middleware(settings: StoreSettings) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Middleware refusing (403) writes whose ``Host`` is not this store's or whose ``Origin`` is another site.

    Runs with or without tokens: a store on loopback with no token is otherwise writable by any
    web page open in the operator's browser (cross-site form posts, DNS rebinding).
    """
    policy = HostPolicy.of(settings.host, settings.allowed_hosts)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in _READS:
            reason = refusal(policy, host=request.headers.get("Host"), origin=request.headers.get("Origin"),
                             scheme=request.scheme, fetch_site=request.headers.get("Sec-Fetch-Site"))
            if reason is not None:
                raise NgsiError("Forbidden", reason, 403, title="Forbidden")
        return await handler(request)

    return middleware
