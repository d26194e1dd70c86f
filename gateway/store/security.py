"""Bearer-token access control of the store API (constant-time compare, tokens never logged)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.store.api import TENANT_HEADER
from gateway.store.problems import NgsiError
from gateway.store.settings import StoreSettings

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
