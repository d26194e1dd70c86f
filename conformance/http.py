"""HTTP to the target with timeouts, and the evidence each exchange leaves (secrets redacted)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp

SECRET_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token", "fiware-token"}
)
"""Headers whose value never reaches a report."""

REDACTED: Final = "[redacted]"
BODY_LIMIT: Final = 8192
"""Characters of a body kept as evidence (the rest is cut, and the cut is said)."""
MAX_RESPONSE: Final = 16 * 1024 * 1024
"""Largest response body the checker reads (bytes)."""


class Unreachable(Exception):
    """The target did not answer (connection refused, DNS, timeout)."""


@dataclass(slots=True)
class Response:
    """One HTTP response as the checks see it."""

    status: int
    headers: Mapping[str, str]
    header_lists: Mapping[str, list[str]]
    body: bytes

    @property
    def content_type(self) -> str:
        """Media type without parameters, lower case ("" when absent)."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body parsed as JSON; ``None`` when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        """One header (case-insensitive), or None."""
        return self.headers.get(name.lower())

    def links(self) -> list[tuple[str, dict[str, str]]]:
        """Every Link header entry as ``(uri, params)`` (RFC 8288)."""
        out: list[tuple[str, dict[str, str]]] = []
        for value in self.header_lists.get("link", []):
            out.extend(parse_links(value))
        return out


def parse_links(value: str) -> list[tuple[str, dict[str, str]]]:
    """Parse one Link header value into ``(uri, params)`` pairs (RFC 8288 §3)."""
    out: list[tuple[str, dict[str, str]]] = []
    rest = value.strip()
    while rest.startswith("<"):
        end = rest.find(">")
        if end < 0:
            break
        uri = rest[1:end]
        rest = rest[end + 1 :]
        params: dict[str, str] = {}
        while True:
            rest = rest.lstrip()
            if not rest.startswith(";"):
                break
            rest = rest[1:].lstrip()
            eq = rest.find("=")
            stop = min((i for i in (rest.find(";"), rest.find(",")) if i >= 0), default=len(rest))
            if eq < 0 or eq > stop:
                params[rest[:stop].strip().lower()] = ""
                rest = rest[stop:]
                continue
            key = rest[:eq].strip().lower()
            rest = rest[eq + 1 :].lstrip()
            if rest.startswith('"'):
                close = rest.find('"', 1)
                close = len(rest) if close < 0 else close
                params[key] = rest[1:close]
                rest = rest[close + 1 :]
            else:
                stop = min((i for i in (rest.find(";"), rest.find(",")) if i >= 0), default=len(rest))
                params[key] = rest[:stop].strip()
                rest = rest[stop:]
        out.append((uri, params))
        rest = rest.lstrip()
        if rest.startswith(","):
            rest = rest[1:].lstrip()
    return out


@dataclass(slots=True)
class Recorder:
    """Collects the exchanges of the check that is running."""

    secrets: tuple[str, ...] = ()
    exchanges: list[dict[str, Any]] = field(default_factory=list)

    def redact_text(self, text: str) -> str:
        """Replace every known secret in ``text``."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Headers with secret values replaced."""
        return {
            k: REDACTED if k.lower() in SECRET_HEADERS else self.redact_text(str(v)) for k, v in headers.items()
        }

    def body(self, body: bytes | str | None) -> str:
        """A body as evidence: decoded, redacted, cut at ``BODY_LIMIT``."""
        if body is None:
            return ""
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        text = self.redact_text(text)
        if len(text) > BODY_LIMIT:
            return text[:BODY_LIMIT] + f"… [{len(text) - BODY_LIMIT} more characters not kept]"
        return text


class Client:
    """The checker's HTTP client: one aiohttp session, timeouts, evidence for every exchange."""

    def __init__(self, base_url: str, *, timeout: float = 20.0, secrets: tuple[str, ...] = ()) -> None:
        self.base_url = base_url.rstrip("/")
        self.recorder = Recorder(secrets=secrets)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """Absolute URL for a path under the base URL."""
        full = path if path.startswith("http") else self.base_url + path
        if params:
            full += ("&" if "?" in full else "?") + urlencode(params, safe=",:;<>=!\"'[]~()|/")
        return full

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        chunked: bool = False,
        no_content_type: bool = False,
        record: bool = True,
    ) -> Response:
        """Send one request and return the response; every exchange is kept as evidence."""
        if self._session is None:
            raise RuntimeError("Client used outside 'async with'")
        url = self.url(path, params)
        sent_headers = dict(headers or {})
        data: Any = body
        if chunked:
            # A body streamed from a generator is sent without Content-Length (chunked).
            data = _stream(body or b"")
        skip = ["Content-Type"] if no_content_type else []
        if not any(k.lower() == "accept" for k in sent_headers):
            # aiohttp would add "Accept: */*"; a request that names no media type must send none.
            skip.append("Accept")
        try:
            async with self._session.request(
                method, url, headers=sent_headers, data=data, skip_auto_headers=skip, allow_redirects=False
            ) as resp:
                raw = await resp.content.read(MAX_RESPONSE + 1)
                lists: dict[str, list[str]] = {}
                for k, v in resp.headers.items():
                    lists.setdefault(k.lower(), []).append(v)
                response = Response(
                    status=resp.status,
                    headers={k: ", ".join(v) for k, v in lists.items()},
                    header_lists=lists,
                    body=raw[:MAX_RESPONSE],
                )
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if record:
                self.recorder.exchanges.append(
                    {"request": self._request_evidence(method, url, sent_headers, body, chunked),
                     "response": None, "error": f"{type(exc).__name__}: {exc}"}
                )
            raise Unreachable(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if record:
            self.recorder.exchanges.append(
                {
                    "request": self._request_evidence(method, url, sent_headers, body, chunked),
                    "response": {
                        "status": response.status,
                        "headers": self.recorder.headers(response.headers),
                        "body": self.recorder.body(response.body),
                    },
                }
            )
        return response

    def _request_evidence(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, chunked: bool
    ) -> dict[str, Any]:
        shown = self.recorder.headers(headers)
        if chunked:
            shown["Transfer-Encoding"] = "chunked"
        return {"method": method, "url": self.recorder.redact_text(url), "headers": shown,
                "body": self.recorder.body(body)}


async def _stream(body: bytes) -> AsyncIterator[bytes]:
    yield body
