"""One OAuth2 client-credentials client (RFC 6749 §4.4) for remote brokers and vendor APIs.

The token is cached until shortly before it expires, renewed after the server refuses it
(:meth:`OAuth2Client.invalidate` on a 401, then the next :meth:`OAuth2Client.token`), never
shown in a repr and masked in every log record; the token response body is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote

import aiohttp

from gateway.errors import AuthFailed, Unavailable
from gateway.secrets import mask

MAX_TOKEN_BYTES: Final = 65536
"""A token response is a few hundred bytes; anything much larger is refused."""
DEFAULT_LIFETIME: Final = 3600.0
"""Seconds a token is kept when the server does not say (``expires_in`` absent or not positive)."""


def basic_header(user: str, password: str) -> str:
    """An HTTP basic Authorization value (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """Where and how to ask for a token; the secret never appears in the repr."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    client_auth: Literal["basic", "body"] = "basic"
    """``basic``: client_secret_basic (RFC 6749 §2.3.1); ``body``: client_secret_post."""
    refresh_margin: float = 30.0
    """Renew this many seconds before expiry (at most half the lifetime of short tokens)."""
    timeout: float = 10.0


class OAuth2Client:
    """Fetch, cache and renew a bearer token with the client-credentials grant."""

    def __init__(self, credentials: ClientCredentials) -> None:
        self.credentials = credentials
        self.tokens_fetched = 0
        self.expires = 0.0
        """``time.monotonic()`` after which the cached token is renewed."""
        self._token: str | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        c = self.credentials
        held = "***" if self._token is not None else None
        return f"OAuth2Client(token_url={c.token_url!r}, client_id={c.client_id!r}, token={held})"

    def invalidate(self) -> None:
        """Forget the token the server refused (a 401): the next call fetches a fresh one."""
        self._token = None

    async def token(self, session: aiohttp.ClientSession) -> str:
        """A valid access token, fetched when none is cached or the cached one is about to expire."""
        async with self._lock:
            if self._token is None or time.monotonic() >= self.expires:
                await self._fetch(session)
            assert self._token is not None
            return self._token

    async def authorization(self, session: aiohttp.ClientSession) -> str:
        """The ``Authorization`` header value (``Bearer <token>``)."""
        return f"Bearer {await self.token(session)}"

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        c = self.credentials
        form = {"grant_type": "client_credentials"}
        if c.scope:
            form["scope"] = c.scope
        headers = {"Accept": "application/json"}
        if c.client_auth == "body":
            form.update(client_id=c.client_id, client_secret=c.client_secret)
        else:
            # client_secret_basic: both parts form-encoded first (RFC 6749 §2.3.1).
            headers["Authorization"] = basic_header(quote(c.client_id, safe=""), quote(c.client_secret, safe=""))
        started = time.monotonic()
        try:
            async with session.post(c.token_url, data=form, headers=headers,
                                    timeout=aiohttp.ClientTimeout(total=c.timeout)) as resp:
                status = resp.status
                raw = b""
                async for chunk in resp.content.iter_chunked(4096):
                    raw += chunk
                    if len(raw) > MAX_TOKEN_BYTES:
                        raise Unavailable(f"token endpoint answered more than {MAX_TOKEN_BYTES} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"token endpoint {c.token_url} unreachable: {type(exc).__name__}") from exc
        try:
            body: Any = json.loads(raw)
        except (ValueError, RecursionError):
            body = {}
        if status in (400, 401, 403):
            code = body.get("error", "") if isinstance(body, dict) else ""
            raise AuthFailed(f"token endpoint refused the client credentials ({status} {code})".strip())
        token = body.get("access_token") if isinstance(body, dict) else None
        if status >= 300 or not isinstance(token, str) or not token:
            raise Unavailable(f"token endpoint answered {status} without an access_token")
        mask(token)  # before anything can log it
        lifetime = body.get("expires_in")
        ttl = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else DEFAULT_LIFETIME
        # Renew before expiry: a margin, but never more than half the lifetime of short tokens.
        self.expires = started + ttl - min(c.refresh_margin, ttl / 2)
        self._token = token
        self.tokens_fetched += 1
