"""Open311 GeoReport v2: import a City's service requests, and serve an endpoint for citizen apps."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Final

import aiohttp
from aiohttp import web

from adapters.kit.push import LOOPBACK, PushReceiver
from gateway.contract import Emit, Manifest, load_config_schema
from gateway.errors import AuthFailed, ConfigInvalid, InputError, Unavailable
from gateway.model import Entity, ModelError, RawMessage, epoch_time, format_time, parse_time
from gateway.secrets import read_secret

from .georeport import PERSONAL_FIELDS, parse_json, parse_requests, strip_personal, to_xml
from .translate import to_entities

__all__ = ["Open311Adapter"]

_FORMATS: Final = {"json": "application/json", "xml": "text/xml; charset=utf-8"}
_SEEN_LIMIT: Final = 100_000
_KEPT_LIMIT: Final = 10_000
_OUT_FIELDS: Final = (
    "service_request_id", "status", "status_notes", "service_name", "service_code", "description",
    "agency_responsible", "service_notice", "requested_datetime", "updated_datetime", "expected_datetime",
    "address", "address_id", "zipcode", "lat", "long", "media_url",
)




def _iso(moment: datetime) -> str:
    return format_time(moment.replace(microsecond=0))


class Open311Adapter:
    """Imports GeoReport v2 service requests (paged by date window) and serves a GeoReport endpoint."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.log = log or logging.getLogger("jonction.adapters.open311")
        self.http = http
        self.source = str(config.get("name", "open311"))
        self.tenant = str(config.get("tenant", ""))
        self.jurisdiction: str = config.get("jurisdiction_id", "")
        self.city: Mapping[str, Any] | None = config.get("city")
        self.listen: Mapping[str, Any] | None = config.get("listen")
        self.services: list[dict[str, Any]] = [dict(s) for s in (self.listen or {}).get("services", [])]
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        """Wall clock (tests replace it); translation never reads it."""
        self.requests: OrderedDict[str, dict[str, Any]] = OrderedDict()
        """Requests received by the endpoint (no personal data), newest last, bounded."""
        self.imported = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._down = False
        self._stopping = asyncio.Event()
        self.push: PushReceiver | None = None
        """The endpoint's listener (when ``listen`` is configured)."""
        if self.listen is not None:
            self.push = PushReceiver(
                {"listen": {"host": self.listen.get("host", "127.0.0.1"), "port": self.listen.get("port", 8311),
                            "path": "/" + str(self.listen.get("prefix", "/open311/v2")).strip("/")},
                 "max_body_bytes": self.listen.get("max_body_bytes", 64 * 1024)},
                default_port=8311, default_path="/open311/v2", log=self.log, name=self.source)
        self._endpoint: asyncio.Task[None] | None = None
        self.state_dir: Path | None = Path(config["state_dir"]) if config.get("state_dir") else None
        self.port: int | None = None
        """Port the endpoint listens on (set once started; useful with port 0)."""
        self.ready = asyncio.Event()
        """Set once the endpoint listens."""
        problems: list[str] = []
        if self.city is None and self.listen is None:
            problems.append("/: configure 'city' (import), 'listen' (endpoint) or both")
        if self.city is not None:
            try:
                parse_time(self.city.get("start", "1970-01-01T00:00:00Z"))
            except ModelError as exc:
                problems.append(f"/city/start: {exc}")
        if problems:
            raise ConfigInvalid("open311: invalid configuration", problems)

    # ------------------------------------------------------------------ contract

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Translate one service request (pure; see ``translate``)."""
        return to_entities(raw)

    async def check(self) -> None:
        """Probe the City endpoint (services list) and the endpoint's configuration."""
        if self.listen is not None:
            host = self.listen.get("host", "127.0.0.1")
            if not read_secret(self.listen, "api_keys"):
                raise ConfigInvalid("open311: the endpoint needs api_keys", ["/listen/api_keys: required"])
            if host not in LOOPBACK:
                self.log.info("open311 endpoint open beyond loopback", extra={"host": host})
        if self.city is not None:
            async with self._session() as http:
                await self._get(http, "services", {})

    async def run(self, emit: Emit) -> None:
        """Serve the endpoint and/or import from the City until stopped."""
        tasks = []
        if self.listen is not None:
            await self._start_endpoint(emit)
        if self.city is not None:
            tasks.append(asyncio.create_task(self._import_loop(emit), name="open311-import"))
        try:
            if tasks:
                await asyncio.gather(*tasks)
            else:
                await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._stop_endpoint()

    async def stop(self) -> None:
        """Stop importing and serving; idempotent."""
        self._stopping.set()
        await self._stop_endpoint()

    # ------------------------------------------------------------------ import from a City

    @contextlib.asynccontextmanager
    async def _session(self) -> Any:
        if self.http is not None:
            yield self.http
            return
        timeout = aiohttp.ClientTimeout(total=float((self.city or {}).get("timeout_s", 30)))
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield http

    async def _get(self, http: aiohttp.ClientSession, resource: str, params: dict[str, str]) -> list[dict[str, Any]]:
        city = self.city or {}
        fmt = city.get("format", "json")
        url = f"{city['base_url'].rstrip('/')}/{resource}.{fmt}"
        query = dict(params)
        key = read_secret(city, "api_key")
        if key:
            query["api_key"] = key
        if self.jurisdiction:
            query["jurisdiction_id"] = self.jurisdiction
        limit = int(city.get("max_body_bytes", 8 << 20))
        try:
            async with http.get(url, params=query) as response:
                body = await response.content.read(limit + 1)
                status = response.status
                content_type = response.headers.get("Content-Type", _FORMATS[fmt])
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"City GeoReport endpoint {city['base_url']} unreachable: {exc!r}") from exc
        if status in (401, 403):
            raise AuthFailed(f"City GeoReport endpoint refused the api_key (HTTP {status})")
        if status >= 400:
            raise Unavailable(f"City GeoReport endpoint answered HTTP {status} for {resource}")
        if len(body) > limit:
            raise InputError(f"City answer over {limit} bytes")
        if resource != "requests":
            parsed = parse_json(body) if "xml" not in content_type else []
            return parsed if isinstance(parsed, list) else []
        return parse_requests(body, "xml" if fmt == "xml" or "xml" in content_type else "json")

    async def _import_window(
        self, http: aiohttp.ClientSession, start: datetime, end: datetime, emit: Emit
    ) -> None:
        items = await self._get(http, "requests", {"start_date": _iso(start), "end_date": _iso(end)})
        page_limit = int((self.city or {}).get("page_limit", 1000))
        if len(items) >= page_limit and end - start > timedelta(minutes=1):
            # GeoReport v2 has no paging: a full answer may hide more, so the window is halved.
            middle = start + (end - start) / 2
            await self._import_window(http, start, middle, emit)
            await self._import_window(http, middle, end, emit)
            return
        if len(items) >= page_limit:
            self.log.warning("open311 window still full after splitting", extra={"start": _iso(start)})
        for request in items:
            await self._emit_request(request, "city", emit)

    async def _emit_request(self, request: Mapping[str, Any], origin: str, emit: Emit) -> None:
        request_id = str(request.get("service_request_id") or "")
        if not request_id:
            self.log.warning("open311 request without service_request_id skipped", extra={"origin": origin})
            return
        version = str(request.get("updated_datetime") or request.get("requested_datetime") or "")
        key = f"open311:{self.jurisdiction}:{request_id}:{version}"
        if key in self._seen:
            return
        payload = {"origin": origin, "jurisdiction_id": self.jurisdiction, "request": strip_personal(request)}
        await emit(
            RawMessage(
                source=self.source,
                tenant=self.tenant,
                received_at=epoch_time(time.time()),
                payload=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
                idempotency_key=key,
                metadata={"origin": origin, "service_request_id": request_id},
            )
        )
        self._seen[key] = None
        while len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        if origin == "city":
            self.imported += 1

    def _saved_cursor(self) -> datetime | None:
        if self.state_dir is None:
            return None
        path = self.state_dir / "open311-cursor.json"
        try:
            return parse_time(json.loads(path.read_text(encoding="utf-8"))["cursor"])
        except (OSError, ValueError, KeyError, TypeError, ModelError):
            return None

    def _save_cursor(self, cursor: datetime) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "open311-cursor.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cursor": _iso(cursor)}), encoding="utf-8")
        tmp.replace(path)  # atomic: a crash leaves the old cursor, never half a file

    async def _import_loop(self, emit: Emit) -> None:
        city = self.city or {}
        window = timedelta(hours=float(city.get("window_hours", 24)))
        lookback = timedelta(hours=float(city.get("lookback_hours", 48)))
        interval = float(city.get("interval_s", 300))
        # A cursor saved by a previous run wins over the configured start: no re-import.
        cursor = self._saved_cursor() or parse_time(city.get("start", _iso(self.clock() - lookback)))
        delay = 1.0
        async with self._session() as http:
            while not self._stopping.is_set():
                now = self.clock()
                # Recent windows are read again so that status changes (closed...) are seen.
                start = min(cursor, now - lookback)
                try:
                    while start < now and not self._stopping.is_set():
                        end = min(start + window, now)
                        await self._import_window(http, start, end, emit)
                        start = end
                    cursor = now
                    self._save_cursor(cursor)
                    if self._down:
                        self._down = False
                        self.log.warning("recovered", extra={"city": city["base_url"]})
                    wait = interval
                    delay = 1.0
                except (Unavailable, AuthFailed, InputError) as exc:
                    # The cursor stays where the failure happened: the next pass resumes there.
                    cursor = start
                    if not self._down:
                        self._down = True
                        self.log.warning("unavailable", extra={"city": city["base_url"], "reason": str(exc)})
                    wait = min(delay, interval)
                    delay = min(delay * 2, interval)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), wait)

    # ------------------------------------------------------------------ the endpoint

    def _requests_file(self) -> Path | None:
        return self.state_dir / "open311-requests.jsonl" if self.state_dir is not None else None

    def _load_requests(self) -> None:
        """Requests received before a restart, so that ``GET requests`` still lists them."""
        path = self._requests_file()
        if path is None or not path.exists():
            return
        count = 0
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                count += 1
                try:
                    item = json.loads(line)
                    self.requests[str(item["service_request_id"])] = item
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash
        while len(self.requests) > _KEPT_LIMIT:
            self.requests.popitem(last=False)
        if count > 2 * _KEPT_LIMIT:  # compact the append-only file now and then
            self._rewrite_requests(path)

    def _rewrite_requests(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in self.requests.values()),
                       encoding="utf-8")
        tmp.replace(path)

    def keep_request(self, item: dict[str, Any]) -> None:
        """Remember a received request (memory and, with ``state_dir``, an append-only file)."""
        self.requests[str(item["service_request_id"])] = item
        while len(self.requests) > _KEPT_LIMIT:
            self.requests.popitem(last=False)
        path = self._requests_file()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(item, ensure_ascii=False) + "\n")

    async def _start_endpoint(self, emit: Emit) -> None:
        assert self.push is not None  # run() starts the endpoint only when listen is configured
        self._load_requests()
        listen = self.listen or {}
        keys_text = read_secret(listen, "api_keys")
        if not keys_text:
            raise ConfigInvalid("open311: the endpoint needs api_keys", ["/listen/api_keys: required"])
        keys = [k.strip() for k in keys_text.split(",") if k.strip()]
        prefix = self.push.path
        handlers = _Endpoint(self, emit, keys, self.push.max_body)
        self._endpoint = await self.push.start([
            web.get(prefix + "/services.{fmt}", handlers.services),
            web.get(prefix + "/services/{code}.{fmt}", handlers.definition),
            web.post(prefix + "/requests.{fmt}", handlers.create),
            web.get(prefix + "/requests.{fmt}", handlers.search),
            web.get(prefix + "/requests/{id}.{fmt}", handlers.one),
        ])
        self.port = self.push.bound_port
        self.ready.set()

    async def _stop_endpoint(self) -> None:
        if self.push is not None:
            await self.push.stop()
        task, self._endpoint = self._endpoint, None
        if task is not None:
            await asyncio.wait({task})  # the listener closes once stopped; a failure is logged, not raised
            if not task.cancelled() and task.exception() is not None:
                self.log.error("open311 endpoint failed", extra={"reason": repr(task.exception())})


def _answer(fmt: str, root: str, item: str, items: list[dict[str, Any]], status: int = 200) -> web.Response:
    if fmt == "xml":
        return web.Response(body=to_xml(root, item, items), status=status, content_type="text/xml", charset="utf-8")
    return web.json_response(items, status=status)


def _error(fmt: str, status: int, description: str) -> web.Response:
    return _answer(fmt, "errors", "error", [{"code": status, "description": description}], status)


class _Endpoint:
    """The GeoReport v2 routes served to citizen apps."""

    def __init__(self, adapter: Open311Adapter, emit: Emit, keys: list[str], max_body: int) -> None:
        self.adapter = adapter
        self.emit = emit
        self.keys = keys
        self.max_body = max_body
        listen = adapter.listen or {}
        self.rate = float(listen.get("max_posts_per_minute", 60)) / 60.0
        self.burst = float(listen.get("max_posts_burst", 20))
        self._buckets: dict[str, tuple[float, float]] = {}

    def _allowed(self, key: str) -> bool:
        """A token bucket per api_key: a buggy or abused app cannot flood the city's store."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _fmt(self, request: web.Request) -> str:
        fmt = request.match_info["fmt"]
        if fmt not in _FORMATS:
            raise web.HTTPNotFound(text=json.dumps([{"code": 404, "description": f"unknown format .{fmt}"}]),
                                   content_type="application/json")
        return fmt

    def _jurisdiction_problem(self, fmt: str, given: str | None) -> web.Response | None:
        if given and self.adapter.jurisdiction and given != self.adapter.jurisdiction:
            return _error(fmt, 404, f"jurisdiction_id {given!r} not found")
        return None

    async def services(self, request: web.Request) -> web.Response:
        """GET services.{fmt}: the service list."""
        fmt = self._fmt(request)
        problem = self._jurisdiction_problem(fmt, request.query.get("jurisdiction_id"))
        if problem is not None:
            return problem
        listed = [
            {k: s.get(k) for k in ("service_code", "service_name", "description", "metadata", "type", "keywords",
                                   "group")} | {"metadata": bool(s.get("attributes"))}
            for s in self.adapter.services
        ]
        return _answer(fmt, "services", "service", listed)

    async def definition(self, request: web.Request) -> web.Response:
        """GET services/{code}.{fmt}: the attributes a service asks for."""
        fmt = self._fmt(request)
        code = request.match_info["code"]
        service = next((s for s in self.adapter.services if str(s["service_code"]) == code), None)
        if service is None:
            return _error(fmt, 404, f"service_code {code!r} not found")
        body = {"service_code": code, "attributes": service.get("attributes", [])}
        if fmt == "xml":
            return web.Response(body=to_xml("service_definition", "service", [body])
                                .replace(b"<service_definition><service>", b"<service_definition>")
                                .replace(b"</service></service_definition>", b"</service_definition>"),
                                content_type="text/xml", charset="utf-8")
        return web.json_response(body)

    def _authorized(self, fmt: str, given: str | None) -> web.Response | None:
        if not given:
            return _error(fmt, 401, "api_key is required to create a service request")
        if not any(hmac.compare_digest(given.encode(), key.encode()) for key in self.keys):
            return _error(fmt, 403, "Invalid api_key received -- can't proceed with create_request.")
        return None

    async def create(self, request: web.Request) -> web.Response:
        """POST requests.{fmt}: a citizen's report (form-encoded), emitted as an entity."""
        fmt = self._fmt(request)
        if request.content_length is not None and request.content_length > self.max_body:
            return _error(fmt, 413, f"request body over {self.max_body} bytes")
        if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            return _error(fmt, 400, "the body must be form-encoded (application/x-www-form-urlencoded)")
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return _error(fmt, 413, f"request body over {self.max_body} bytes")
        fields = {k: str(v) for k, v in form.items() if isinstance(v, str) and k not in PERSONAL_FIELDS}
        api_key = fields.get("api_key") or request.query.get("api_key")
        denied = self._authorized(fmt, api_key)
        if denied is not None:
            return denied
        if not self._allowed(str(api_key)):
            response = _error(fmt, 429, "too many requests for this api_key; retry later")
            response.headers["Retry-After"] = str(max(1, round(1 / self.rate))) if self.rate > 0 else "60"
            return response
        problem = self._jurisdiction_problem(fmt, fields.get("jurisdiction_id"))
        if problem is not None:
            return problem
        code = fields.get("service_code", "").strip()
        if not code:
            return _error(fmt, 400, "service_code is required")
        service = next((s for s in self.adapter.services if str(s["service_code"]) == code), None)
        if service is None:
            return _error(fmt, 404, f"service_code {code!r} not found")
        lat, lon = fields.get("lat", "").strip(), fields.get("long", "").strip()
        if not ((lat and lon) or fields.get("address_string", "").strip() or fields.get("address_id", "").strip()):
            return _error(fmt, 400, "a location is required: lat and long, address_string or address_id")
        if lat or lon:
            try:
                lat_f, lon_f = float(lat), float(lon)
            except ValueError:
                return _error(fmt, 400, "lat and long must both be WGS84 decimal degrees")
            if not (-90 <= lat_f <= 90 and -180 <= lon_f <= 180):
                return _error(fmt, 400, "lat must be within [-90, 90] and long within [-180, 180]")
        answers: dict[str, Any] = {}
        for key in form:
            if key.startswith("attribute[") and key.endswith("]"):
                values = [str(v) for v in form.getall(key) if isinstance(v, str)]
                answers[key[10:-1]] = values if len(values) > 1 else values[0]
        missing = [a["code"] for a in service.get("attributes", []) if a.get("required") and a["code"] not in answers]
        if missing:
            return _error(fmt, 400, f"required attribute(s) missing: {', '.join(missing)}")
        for name in ("description", "address_string", "media_url"):
            if len(fields.get(name, "")) > 4000:
                return _error(fmt, 400, f"{name} is longer than 4000 characters")
        now = _iso(self.adapter.clock())
        request_id = uuid.uuid4().hex[:16]
        notice = service.get("service_notice") or (self.adapter.listen or {}).get("service_notice")
        stored: dict[str, Any] = {
            "service_request_id": request_id,
            "status": "open",
            "service_code": code,
            "service_name": service.get("service_name"),
            "description": fields.get("description") or None,
            "service_notice": notice,
            "requested_datetime": now,
            "updated_datetime": now,
            "address": fields.get("address_string") or None,
            "address_id": fields.get("address_id") or None,
            "lat": float(lat) if lat else None,
            "long": float(lon) if lon else None,
            "media_url": fields.get("media_url") or None,
        }
        if answers:
            stored["attributes"] = answers
        try:
            await self.adapter._emit_request(stored, "endpoint", self.emit)
        except Exception as exc:  # the store refused: tell the app to retry, keep nothing
            self.adapter.log.error("open311 request not accepted", extra={"reason": repr(exc)})
            return _error(fmt, 503, "the request could not be stored now; retry later")
        kept = dict(stored)
        kept.pop("attributes", None)
        self.adapter.keep_request(kept)
        answer = [{"service_request_id": request_id, "service_notice": notice, "account_id": None}]
        return _answer(fmt, "service_requests", "request", answer)

    def _public(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {k: item.get(k) for k in _OUT_FIELDS}

    async def search(self, request: web.Request) -> web.Response:
        """GET requests.{fmt}: filter by ids, service_code, status and a date window (≤ 90 days)."""
        fmt = self._fmt(request)
        query = request.query
        problem = self._jurisdiction_problem(fmt, query.get("jurisdiction_id"))
        if problem is not None:
            return problem
        items = list(self.adapter.requests.values())
        if query.get("service_request_id"):
            wanted = {i.strip() for i in query["service_request_id"].split(",")}
            return _answer(fmt, "service_requests", "request",
                           [self._public(i) for i in items if i["service_request_id"] in wanted])
        try:
            end = parse_time(query["end_date"]) if query.get("end_date") else self.adapter.clock()
            start = parse_time(query["start_date"]) if query.get("start_date") else end - timedelta(days=90)
        except ModelError as exc:
            return _error(fmt, 400, f"start_date/end_date: {exc}")
        if end - start > timedelta(days=90):
            return _error(fmt, 400, "start_date and end_date may not span more than 90 days")
        codes = {c.strip() for c in query.get("service_code", "").split(",") if c.strip()}
        statuses = {s.strip() for s in query.get("status", "").split(",") if s.strip()}
        selected = [
            self._public(i) for i in items
            if start <= parse_time(i["requested_datetime"]) <= end
            and (not codes or i["service_code"] in codes)
            and (not statuses or i["status"] in statuses)
        ]
        return _answer(fmt, "service_requests", "request", selected[-1000:])

    async def one(self, request: web.Request) -> web.Response:
        """GET requests/{id}.{fmt}: one request."""
        fmt = self._fmt(request)
        item = self.adapter.requests.get(request.match_info["id"])
        if item is None:
            return _error(fmt, 404, f"service_request_id {request.match_info['id']!r} not found")
        return _answer(fmt, "service_requests", "request", [self._public(item)])
