"""Poll a vendor REST API page by page and translate each page with a declarative mapping."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import jmespath
from jmespath.exceptions import JMESPathError
from yarl import URL

from adapters.kit.mapping.adapter import MappingAdapter
from adapters.kit.mapping.engine import parse_json, select_items
from adapters.kit.mapping.records import canonical_json
from adapters.kit.mapping.support import Backoff, content_key, retry_after, sleep_or_stop
from adapters.rest_mapping.auth import Auth, make_auth
from gateway.contract import Emit
from gateway.errors import AuthFailed, ConfigInvalid, InputError, TranslationError, Unavailable
from gateway.model import RawMessage, epoch_time


class _Retryable(Exception):
    """A 5xx answer: retried with backoff like a network error."""


class _Stopped(Exception):
    """The adapter was stopped while waiting."""


def _compile(text: Any, where: str) -> Any:
    if text is None:
        return None
    try:
        return jmespath.compile(str(text))
    except JMESPathError as exc:
        raise ConfigInvalid("invalid selector", [f"{where}: {text!r} is not valid JMESPath"]) from exc


def _order_key(value: Any) -> tuple[int, Any]:
    """Watermarks compare as instants when they are date-times, as numbers, else as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (1, float(value))
    text = str(value)
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is not None:
            return (2, moment.timestamp())
    except ValueError:
        pass
    return (3, text)


def later(a: Any, b: Any) -> Any:
    """The later of two watermark values (None is earliest)."""
    if a is None:
        return b
    if b is None:
        return a
    return b if _order_key(b) > _order_key(a) else a


class RestMappingAdapter(MappingAdapter, package=__package__):
    """A REST poller (API key, basic or OAuth2; page, offset, cursor or Link pagination) plus a mapping."""

    # Per item by default: one untranslatable item must not dead-letter the good ones beside it.
    default_split = "item"
    payload_name = "payload (the API answered something else)"

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        super().__init__(config, http=http, log=log)
        self.url = str(config["url"])
        self.interval = float(config.get("interval", 300))
        self.timeout = float(config.get("timeout", 30))
        self.headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
        self.query = {str(k): _param(v) for k, v in (config.get("query") or {}).items()}
        self.max_pages = int(config.get("max_pages", 1000))
        self.max_bytes = int(config.get("max_response_bytes", 10 << 20))
        retry = config.get("retry") or {}
        self.attempts = int(retry.get("attempts", 5))
        self.initial_delay = float(retry.get("initial_delay", 1))
        self.max_delay = float(retry.get("max_delay", 300))
        self.max_throttled = int(retry.get("max_throttled", 30))
        self.pagination = dict(config.get("pagination") or {"style": "none"})
        self._total_pages = _compile(self.pagination.get("total_pages"), "pagination.total_pages")
        self._total = _compile(self.pagination.get("total"), "pagination.total")
        self._next = _compile(self.pagination.get("next"), "pagination.next")
        if self.pagination.get("style") == "cursor" and self._next is None:
            raise ConfigInvalid("invalid pagination", ["pagination.next: cursor pagination needs a next selector"])
        incremental = config.get("incremental") or {}
        self._mark_select = _compile(incremental.get("select"), "incremental.select")
        self._mark_param = incremental.get("param")
        self._mark_initial = incremental.get("initial")
        self.stats: dict[str, int] = {"polls": 0, "pages": 0, "messages": 0, "throttled": 0, "retries": 0}
        self._own_http: aiohttp.ClientSession | None = None
        self._auth: Auth | None = None

    # ------------------------------------------------------------------ lifecycle

    def _session(self) -> aiohttp.ClientSession:
        if self.http is not None:
            return self.http
        if self._own_http is None or self._own_http.closed:
            self._own_http = aiohttp.ClientSession()
        return self._own_http

    def _authenticator(self) -> Auth:
        if self._auth is None:
            self._auth = make_auth(self.config.get("auth"), self.timeout)
        return self._auth

    async def check(self) -> None:
        """Authenticate and fetch the first page (nothing is emitted)."""
        try:
            await self._fetch(self.url, self._page_params(0, None, None))
        finally:
            await self._close_own()

    async def run(self, emit: Emit) -> None:
        """Poll every ``interval`` seconds until stopped; back off while the API fails."""
        # The runtime restarts a source by calling stop() then run() again on the same instance.
        self._stopped.clear()
        backoff = Backoff(self.initial_delay or 1.0, self.max_delay or 300.0)
        try:
            while not self._stopped.is_set():
                try:
                    await self.poll_once(emit)
                    self.availability.succeeded()
                    backoff.reset()
                    delay = self.interval
                except _Stopped:
                    break
                except (AuthFailed, Unavailable, InputError) as exc:
                    self.availability.failed(str(exc))
                    delay = backoff.next_delay()
                if await sleep_or_stop(self._stopped, delay):
                    break
        finally:
            await self._close_own()

    async def stop(self) -> None:
        """Stop polling; idempotent, safe before run."""
        self._stopped.set()
        await self._close_own()

    async def _close_own(self) -> None:
        session, self._own_http = self._own_http, None
        if session is not None and not session.closed:
            await session.close()

    # ------------------------------------------------------------------ one poll

    def _page_params(self, number: int, cursor: str | None, mark: Any) -> dict[str, str]:
        params = dict(self.query)
        if mark is not None and self._mark_param:
            params[str(self._mark_param)] = _param(mark)
        style = self.pagination.get("style", "none")
        size_param, size = self.pagination.get("size_param"), self.pagination.get("size")
        if style in ("page", "offset") and size_param and size:
            params[str(size_param)] = str(size)
        if style == "page":
            params[str(self.pagination.get("param", "page"))] = str(self.pagination.get("start", 1) + number)
        elif style == "offset":
            params[str(self.pagination.get("param", "offset"))] = str(number)
        elif style == "cursor" and cursor is not None:
            params[str(self.pagination.get("param", "cursor"))] = cursor
        return params

    async def poll_once(self, emit: Emit) -> int:
        """Fetch every page once, emit them, then persist the new watermark; returns messages emitted."""
        self.stats["polls"] += 1
        state = self.state.load()
        mark = state.get("watermark", self._mark_initial)
        best = mark
        style = self.pagination.get("style", "none")
        url, cursor, position, emitted = self.url, None, 0, 0
        params: dict[str, str] | None = self._page_params(0, None, mark)
        for page in range(self.max_pages):
            if self._stopped.is_set():
                raise _Stopped
            body, final_url, links = await self._fetch(url, params)
            self.stats["pages"] += 1
            doc = _json(body)
            items = self._items(doc)
            if items:
                emitted += await self._emit(emit, body, doc, items, page, mark, self._public(final_url))
            if doc is not None and self._mark_select is not None:
                best = later(best, _max_mark(self._mark_select.search(doc)))
            if doc is None or style == "none":
                break
            count = len(items) if items is not None else 0
            size = self.pagination.get("size")
            if style == "page":
                total = self._total_pages.search(doc) if self._total_pages is not None else None
                number = self.pagination.get("start", 1) + page
                last = isinstance(total, int) and number >= total
                if last or count == 0 or (total is None and size and count < size):
                    break
                params = self._page_params(page + 1, None, mark)
            elif style == "offset":
                position += count
                total = self._total.search(doc) if self._total is not None else None
                if count == 0 or (isinstance(total, int) and position >= total) or (size and count < size):
                    break
                params = self._page_params(position, None, mark)
            elif style == "cursor":
                assert self._next is not None
                nxt = self._next.search(doc)
                if nxt is None or nxt == "" or nxt is False:
                    break
                cursor = _param(nxt)
                params = self._page_params(0, cursor, mark)
            elif style == "link":
                nxt_link = links.get("next")
                if nxt_link is None:
                    break
                url = urljoin(final_url, str(nxt_link.get("url")))
                if _origin(url) != _origin(self.url):
                    raise Unavailable(f"Link rel=next leaves the configured origin: {url}")
                # The next link carries every parameter (RFC 8288 style APIs such as GitHub's).
                params = None
        else:
            self.log.warning("source %s: stopped after max_pages=%d pages", self.source, self.max_pages)
        if best is not None and best != mark:
            state["watermark"] = best
            self.state.save(state)
        return emitted

    def _public(self, url: str) -> str:
        """The URL as recorded in message metadata: without an API key sent as a query parameter."""
        auth = self.config.get("auth") or {}
        if auth.get("type") == "api_key" and auth.get("in") == "query":
            return str(URL(url).without_query_params(str(auth.get("name", "X-API-Key"))))
        return url

    def _items(self, doc: Any) -> list[Any] | None:
        if doc is None:
            return None
        try:
            return select_items(self.mapping, doc)
        except TranslationError:
            return None

    async def _emit(
        self, emit: Emit, body: bytes, doc: Any, items: list[Any] | None, page: int, mark: Any, url: str
    ) -> int:
        received = epoch_time(time.time())
        position = json.dumps(mark, sort_keys=True)
        if self.per_item:
            count = 0
            for index, item in enumerate(items or []):
                payload = canonical_json(item)
                await emit(
                    RawMessage(
                        source=self.source,
                        tenant=self.tenant_of(item),
                        received_at=received,
                        payload=payload,
                        idempotency_key=content_key(self.source, position, payload),
                        metadata={"url": url, "page": str(page), "index": str(index), "split": "item"},
                    )
                )
                count += 1
            self.stats["messages"] += count
            return count
        await emit(
            RawMessage(
                source=self.source,
                tenant=self.tenant,
                received_at=received,
                payload=body,
                idempotency_key=content_key(self.source, position, body),
                metadata={"url": url, "page": str(page)},
            )
        )
        self.stats["messages"] += 1
        return 1

    # ------------------------------------------------------------------ HTTP

    async def _fetch(self, url: str, params: dict[str, str] | None) -> tuple[bytes, str, Any]:
        """GET with credentials; renews an OAuth2 token once on 401, waits on 429, retries 5xx."""
        session, auth = self._session(), self._authenticator()
        failures, throttled, renewed = 0, 0, False
        while True:
            headers = {"Accept": "application/json", **self.headers}
            query = dict(params or {})
            await auth.apply(session, headers, query)
            try:
                async with session.get(
                    url, params=query or None, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as resp:
                    if resp.status == 401 and auth.renewable and not renewed:
                        renewed = True
                        auth.invalidate()
                        continue
                    if resp.status in (401, 403):
                        raise AuthFailed(f"{_safe(url)} answered {resp.status}: credentials refused")
                    if resp.status == 429:
                        throttled += 1
                        self.stats["throttled"] += 1
                        if throttled > self.max_throttled:
                            raise Unavailable(f"{_safe(url)} kept answering 429 ({throttled} times)")
                        wait = retry_after(resp.headers.get("Retry-After"), self.initial_delay, self.max_delay)
                        self.log.debug("source %s throttled, waiting %.1f s", self.source, wait)
                        if await sleep_or_stop(self._stopped, wait):
                            raise _Stopped
                        continue
                    if resp.status >= 500:
                        raise _Retryable(f"HTTP {resp.status}")
                    if resp.status >= 400:
                        raise Unavailable(f"{_safe(url)} answered {resp.status}")
                    body = await self._read(resp)
                    return body, str(resp.url), resp.links
            except (aiohttp.ClientError, TimeoutError, _Retryable) as exc:
                failures += 1
                reason = str(exc) if isinstance(exc, _Retryable) else type(exc).__name__
                if failures >= self.attempts:
                    raise Unavailable(f"{_safe(url)}: {reason} after {failures} attempts") from exc
                self.stats["retries"] += 1
                delay = min(self.max_delay, self.initial_delay * 2 ** (failures - 1))
                if await sleep_or_stop(self._stopped, delay):
                    raise _Stopped from exc

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        if resp.content_length is not None and resp.content_length > self.max_bytes:
            raise InputError(f"response of {resp.content_length} bytes is over max_response_bytes={self.max_bytes}")
        chunks, total = [], 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            total += len(chunk)
            if total > self.max_bytes:
                raise InputError(f"response is over max_response_bytes={self.max_bytes}")
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ pure translation

    def item_where(self, metadata: Mapping[str, str]) -> str:
        """An item is named by its page and its index in the page."""
        return f"page {metadata.get('page', '0')} item {metadata.get('index', '0')}"


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json(body: bytes) -> Any:
    try:
        return parse_json(body)
    except ValueError:
        return None


def _max_mark(found: Any) -> Any:
    values = found if isinstance(found, list) else [found]
    best = None
    for value in values:
        if value is not None and value != "":
            best = later(best, value)
    return best


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _safe(url: str) -> str:
    """A URL for logs: without its query (it may carry an API key)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
