"""Authentication of REST polls: API key (header or query), HTTP basic, OAuth2 client credentials."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from adapters.secrets import read_secret
from gateway.errors import AuthFailed, Unavailable

_MAX_TOKEN_BYTES = 65536
"""A token response is a few hundred bytes; anything much larger is refused."""


def basic_header(user: str, password: str) -> str:
    """An HTTP basic Authorization value (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class Auth:
    """No authentication; the base of the others."""

    renewable = False

    async def apply(self, session: aiohttp.ClientSession, headers: dict[str, str], params: dict[str, str]) -> None:
        """Add credentials to an outgoing request."""

    def invalidate(self) -> None:
        """Forget a credential the server refused (OAuth2 fetches a new token)."""


class ApiKeyAuth(Auth):
    """A static key sent in a header or a query parameter."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.where = str(config.get("in", "header"))
        self.name = str(config.get("name", "X-API-Key"))
        self.key = read_secret(config, "api_key", where="auth.", required=True) or ""

    async def apply(self, session: aiohttp.ClientSession, headers: dict[str, str], params: dict[str, str]) -> None:
        """Put the key where the vendor expects it."""
        (headers if self.where == "header" else params)[self.name] = self.key


class BasicAuth(Auth):
    """HTTP basic authentication (RFC 7617)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        password = read_secret(config, "password", where="auth.", required=True) or ""
        self.header = basic_header(str(config["username"]), password)

    async def apply(self, session: aiohttp.ClientSession, headers: dict[str, str], params: dict[str, str]) -> None:
        """Add the Authorization header."""
        headers["Authorization"] = self.header


class OAuth2ClientCredentials(Auth):
    """OAuth2 client credentials (RFC 6749 §4.4): a bearer token renewed before it expires and after a 401."""

    renewable = True

    def __init__(self, config: Mapping[str, Any], timeout: float) -> None:
        self.token_url = str(config["token_url"])
        self.client_id = str(config["client_id"])
        self.secret = read_secret(config, "client_secret", where="auth.", required=True) or ""
        self.scope = config.get("scope")
        self.in_body = config.get("client_auth", "basic") == "body"
        self.margin = float(config.get("refresh_margin", 30))
        self.timeout = timeout
        self.tokens_fetched = 0
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Drop the current token so the next request fetches a fresh one."""
        self._token = None

    async def apply(self, session: aiohttp.ClientSession, headers: dict[str, str], params: dict[str, str]) -> None:
        """Add a valid bearer token, fetching one first when needed."""
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                await self._fetch(session)
            headers["Authorization"] = f"Bearer {self._token}"

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = str(self.scope)
        headers = {"Accept": "application/json"}
        if self.in_body:
            form.update(client_id=self.client_id, client_secret=self.secret)
        else:
            headers["Authorization"] = basic_header(self.client_id, self.secret)
        started = time.monotonic()
        try:
            async with session.post(
                self.token_url, data=form, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                status = resp.status
                raw = b""
                async for chunk in resp.content.iter_chunked(4096):
                    raw += chunk
                    if len(raw) > _MAX_TOKEN_BYTES:
                        raise Unavailable(f"token endpoint answered more than {_MAX_TOKEN_BYTES} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"token endpoint {self.token_url} unreachable: {type(exc).__name__}") from exc
        try:
            body: Any = json.loads(raw)
        except (ValueError, RecursionError):
            body = {}
        if status in (400, 401, 403):
            code = body.get("error", "") if isinstance(body, dict) else ""
            raise AuthFailed(f"token endpoint refused the client credentials ({status} {code})".strip())
        if status >= 300 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise Unavailable(f"token endpoint answered {status} without an access_token")
        lifetime = body.get("expires_in")
        ttl = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 3600.0
        # Renew before expiry: a margin, but never more than half the lifetime of short tokens.
        self._expires = started + ttl - min(self.margin, ttl / 2)
        self._token = body["access_token"]
        self.tokens_fetched += 1


def make_auth(config: Mapping[str, Any] | None, timeout: float) -> Auth:
    """The authenticator a source's ``auth`` section describes (secrets read now, from env or files)."""
    if not config or config.get("type", "none") == "none":
        return Auth()
    kind = config["type"]
    if kind == "api_key":
        return ApiKeyAuth(config)
    if kind == "basic":
        return BasicAuth(config)
    return OAuth2ClientCredentials(config, timeout)
