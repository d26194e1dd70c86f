"""Authentication of REST polls: API key (header or query), HTTP basic, OAuth2 client credentials."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from gateway.oauth2 import ClientCredentials, OAuth2Client, basic_header
from gateway.secrets import read_secret


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
    """OAuth2 client credentials (RFC 6749 §4.4) through the one gateway client (gateway.oauth2)."""

    renewable = True

    def __init__(self, config: Mapping[str, Any], timeout: float) -> None:
        secret = read_secret(config, "client_secret", where="auth.", required=True) or ""
        self.client = OAuth2Client(ClientCredentials(
            token_url=str(config["token_url"]), client_id=str(config["client_id"]), client_secret=secret,
            scope=str(config["scope"]) if config.get("scope") else None,
            client_auth="body" if config.get("client_auth", "basic") == "body" else "basic",
            refresh_margin=float(config.get("refresh_margin", 30)), timeout=timeout))

    @property
    def tokens_fetched(self) -> int:
        """How many tokens were fetched so far."""
        return self.client.tokens_fetched

    @property
    def _expires(self) -> float:
        return self.client.expires

    def invalidate(self) -> None:
        """Drop the current token so the next request fetches a fresh one."""
        self.client.invalidate()

    async def apply(self, session: aiohttp.ClientSession, headers: dict[str, str], params: dict[str, str]) -> None:
        """Add a valid bearer token, fetching one first when needed."""
        headers["Authorization"] = await self.client.authorization(session)


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
