"""Any NGSI-LD broker as an export source or an import destination, over its HTTP API (CIM 009).

Reading: entity types from ``GET /types``, entities per type in pages (``limit``/``offset``, with
``options=sysAttrs``), the history of each entity from ``GET /temporal/entities/{id}`` followed
across 206 Partial Content answers (the next request starts at the Content-Range's end; the
instances at that boundary are not repeated), subscriptions from ``GET /subscriptions``. Writing:
``POST /entityOperations/upsert`` in batches (an entity the broker already holds as exported is
left alone, so that a re-import adds no history), ``POST /temporal/entities/{id}/attrs`` for the
instances, ``POST /subscriptions``. The bearer token goes in the Authorization header only: it is
never logged, printed or written.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp

from gateway.errors import ConfigInvalid, Unavailable
from gateway.reversibility.records import SYS_TIMES, redact
from gateway.store import history

API_ROOT: Final = "/ngsi-ld/v1"
PAGE: Final = 100
"""Entities per query page (every broker accepts 100)."""
IDS_PER_QUERY: Final = 50
"""Entity ids per ``GET /entities?id=`` (URL length)."""
INSTANCES_PER_POST: Final = 1000
"""Instances per temporal append (well under the brokers' body limits)."""
CONTEXT_REL: Final = "http://www.w3.org/ns/json-ld#context"
READ_ONLY_SUBSCRIPTION: Final = frozenset({"status", "createdAt", "modifiedAt", "@context"})
_NOTIFICATION_STATE: Final = frozenset({"status", "timesSent", "timesFailed", "lastNotification", "lastSuccess",
                                        "lastFailure"})


def api_base(url: str) -> str:
    """The broker's NGSI-LD root (``…/ngsi-ld/v1``) from a URL given with or without it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigInvalid(f"{url!r} is not an http(s) URL of an NGSI-LD broker")
    path = parts.path.rstrip("/")
    if not path.endswith(API_ROOT):
        path += API_ROOT
    return f"{parts.scheme}://{parts.netloc}{path}"


def _public(url: str) -> str:
    """The URL without any user:password part, for messages and the manifest."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=host).geturl()


class _Client:
    """One aiohttp session to a broker, with the headers every request carries."""

    def __init__(self, url: str, token: str | None, context: str | None) -> None:
        self.base = api_base(url)
        self.token = token
        self.context = context
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Any:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.session is not None:
            await self.session.close()

    def headers(self, tenant: str, *, body: bool = False) -> dict[str, str]:
        """Accept, Link (or ld+json body), tenant and Authorization headers."""
        out = {"Accept": "application/json"}
        if body:
            out["Content-Type"] = "application/ld+json"
        elif self.context:
            out["Link"] = f'<{self.context}>; rel="{CONTEXT_REL}"; type="application/ld+json"'
        if tenant:
            out["NGSILD-Tenant"] = tenant
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        return out

    async def call(
        self, method: str, path: str, tenant: str, *, params: Mapping[str, str] | None = None, body: Any = None
    ) -> tuple[int, Mapping[str, str], Any]:
        """(status, headers, JSON body or None) of one request; Unavailable when the broker cannot be reached."""
        assert self.session is not None
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        try:
            async with self.session.request(method, self.base + path, params=params, data=data,
                                            headers=self.headers(tenant, body=body is not None)) as resp:
                raw = await resp.read()
                parsed = None
                if raw:
                    try:
                        parsed = json.loads(raw)
                    except ValueError:
                        parsed = None
                return resp.status, resp.headers, parsed
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{_public(self.base)}: {method} {path}: {type(exc).__name__} {exc}") from None

    def fail(self, what: str, status: int, body: Any) -> Exception:
        """An error naming the request and the broker's problem (title/detail), never the token."""
        detail = ""
        if isinstance(body, Mapping):
            detail = f": {body.get('title', '')} {body.get('detail', '')}".rstrip()
        if status in (401, 403):
            from gateway.errors import AuthFailed

            return AuthFailed(f"{_public(self.base)} refused {what} (HTTP {status}{detail}); see --token-file")
        return Unavailable(f"{_public(self.base)}: {what} answered HTTP {status}{detail}")


class BrokerReader(_Client):
    """Reads a broker for an export."""

    def __init__(self, url: str, token: str | None, context: str, tenants: Sequence[str] | None = None) -> None:
        super().__init__(url, token, context)
        self._tenants = list(tenants) if tenants else [""]

    async def __aenter__(self) -> BrokerReader:
        await super().__aenter__()
        return self

    def describe(self) -> dict[str, Any]:
        """The source as the manifest records it."""
        return {"kind": "broker", "url": _public(self.base)}

    async def tenants(self) -> list[str]:
        """The tenants asked for (NGSI-LD cannot list a broker's tenants); the default one otherwise."""
        return list(self._tenants)

    async def _types(self, tenant: str) -> list[str]:
        status, _, body = await self.call("GET", "/types", tenant)
        if status != 200:
            raise self.fail("GET /types", status, body)
        if isinstance(body, Mapping):  # EntityTypeList
            names = body.get("typeList", [])
        elif isinstance(body, list):  # EntityType objects (details=true)
            names = [t.get("typeName") for t in body if isinstance(t, Mapping)]
        else:
            names = []
        return sorted(str(n) for n in names if isinstance(n, str))

    async def _pages(self, tenant: str, types: Sequence[str] | None) -> AsyncIterator[dict[str, Any]]:
        seen: set[str] = set()
        for entity_type in types or await self._types(tenant):
            offset = 0
            while True:
                params = {"type": entity_type, "limit": str(PAGE), "offset": str(offset), "options": "sysAttrs"}
                status, _, body = await self.call("GET", "/entities", tenant, params=params)
                if status != 200 or not isinstance(body, list):
                    raise self.fail(f"GET /entities?type={entity_type}", status, body)
                for entity in body:
                    if not isinstance(entity, dict) or not isinstance(entity.get("id"), str):
                        continue
                    if isinstance(entity.get("type"), list):  # several types: met once per type queried
                        if entity["id"] in seen:
                            continue
                        seen.add(entity["id"])
                    yield entity
                if len(body) < PAGE:
                    break
                offset += len(body)

    async def entities(self, tenant: str, types: Sequence[str] | None) -> AsyncIterator[dict[str, Any]]:
        """Entity lines, type by type, page by page."""
        async for entity in self._pages(tenant, types):
            entity.pop("@context", None)
            entity["@context"] = self.context
            yield entity

    async def history(
        self, tenant: str, types: Sequence[str] | None, since: int | None, until: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Instance lines of every entity, following 206 answers until the history is read."""
        async for entity in self._pages(tenant, types):
            async for line in self._entity_history(tenant, entity["id"], entity["type"], since, until):
                yield line

    async def _entity_history(
        self, tenant: str, entity_id: str, entity_type: Any, since: int | None, until: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        start = since
        boundary: set[str] = set()
        while True:
            params = {"options": "sysAttrs"}
            if start is not None and until is not None:
                params |= {"timerel": "between", "timeAt": history.from_micros(start),
                           "endTimeAt": history.from_micros(until)}
            elif start is not None:
                params |= {"timerel": "after", "timeAt": history.from_micros(start)}
            elif until is not None:
                params |= {"timerel": "before", "timeAt": history.from_micros(until)}
            status, headers, body = await self.call("GET", f"/temporal/entities/{quote(entity_id, safe='')}", tenant,
                                                    params=params)
            if status == 404:
                return  # no temporal evolution for this entity
            if status not in (200, 206) or not isinstance(body, Mapping):
                raise self.fail(f"GET /temporal/entities/{entity_id}", status, body)
            end = _range_end(headers.get("Content-Range", "")) if status == 206 else None
            at_end: set[str] = set()
            for name, value in body.items():
                if name in ("id", "type", "@context", "scope", *SYS_TIMES):
                    continue
                for inst in value if isinstance(value, list) else [value]:
                    if not isinstance(inst, dict):
                        continue
                    iid = inst.get("instanceId")
                    if isinstance(iid, str) and iid in boundary:
                        continue  # already read at the end of the previous range
                    if end is not None and isinstance(iid, str) and _moment(inst) == end:
                        at_end.add(iid)
                    yield {"id": entity_id, "type": body.get("type", entity_type), name: inst,
                           "@context": self.context}
            if end is None:
                return
            if start is not None and end <= start and not at_end:
                return  # no progress possible: stop rather than loop
            start, boundary = end, at_end

    async def subscriptions(self, tenant: str, removed: list[str]) -> AsyncIterator[dict[str, Any]]:
        """Subscription lines (credentials in receiverInfo or endpoint URIs removed)."""
        offset = 0
        while True:
            status, _, body = await self.call("GET", "/subscriptions", tenant,
                                              params={"limit": str(PAGE), "offset": str(offset)})
            if status == 404 and offset == 0:
                return
            if status != 200 or not isinstance(body, list):
                raise self.fail("GET /subscriptions", status, body)
            for sub in body:
                if isinstance(sub, dict):
                    line = redact(sub, f"subscription {sub.get('id')}", removed)
                    line["@context"] = self.context
                    yield line
            if len(body) < PAGE:
                return
            offset += len(body)

    def hosted_contexts(self) -> dict[str, Any]:
        """A broker's hosted contexts are not exported (they are the broker's, not the territory's)."""
        return {}


def _moment(inst: Mapping[str, Any]) -> int | None:
    for member in ("observedAt", "createdAt"):
        text = inst.get(member)
        if isinstance(text, str):
            try:
                return history.to_micros(text)
            except ValueError:
                return None
    return None


def _range_end(value: str) -> int | None:
    """The end of a ``date-time <start>-<end>/<size>`` Content-Range, in µs (None when unreadable)."""
    if not value.startswith("date-time "):
        return None
    span = value[len("date-time "):].rsplit("/", 1)[0]
    for index, char in enumerate(span):
        if char != "-":
            continue
        try:
            datetime.fromisoformat(span[:index])
            return history.to_micros(span[index + 1:])
        except ValueError:
            continue
    return None


def _strip_times(entity: Mapping[str, Any]) -> dict[str, Any]:
    """An entity or instance without system members (a broker sets its own)."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        if name in SYS_TIMES or name == "instanceId":
            continue
        if isinstance(value, Mapping):
            out[name] = _strip_times(value) if name not in ("value", "object", "languageMap") else value
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) and "type" in v for v in value):
            out[name] = [_strip_times(v) for v in value]
        else:
            out[name] = value
    return out


class BrokerWriter(_Client):
    """Writes a bundle into a broker."""

    def __init__(self, url: str, token: str | None) -> None:
        super().__init__(url, token, None)

    async def __aenter__(self) -> BrokerWriter:
        await super().__aenter__()
        return self

    def describe(self) -> str:
        """The destination in messages."""
        return _public(self.base)

    async def entities(self, tenant: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Upsert the entities the broker does not already hold as exported."""
        wanted = [_strip_times(line) for line in lines]
        same = await self._unchanged(tenant, wanted)
        todo = [e for e in wanted if e["id"] not in same]
        if not todo:
            return 0
        status, _, body = await self.call("POST", "/entityOperations/upsert", tenant, body=todo)
        if status in (201, 204):
            return len(todo)
        if status == 207 and isinstance(body, Mapping):
            errors = body.get("errors") or []
            first = errors[0] if errors else {}
            problem = first.get("error") or {}
            raise ValueError(f"{len(errors)} entities refused, first {first.get('entityId')}: "
                             f"{problem.get('title', '')} {problem.get('detail', '')}")
        raise self.fail("POST /entityOperations/upsert", status, body)

    async def _unchanged(self, tenant: str, wanted: Sequence[dict[str, Any]]) -> set[str]:
        """Ids of entities the broker holds exactly as exported (compared without system members)."""
        same: set[str] = set()
        by_context: dict[str, list[dict[str, Any]]] = {}
        for entity in wanted:
            # brokers ask for a type with an id list (CIM 009 §6.4.3.2): one query per context and type
            first_type = entity.get("type")
            first_type = first_type[0] if isinstance(first_type, list) and first_type else first_type
            key = json.dumps([entity.get("@context"), first_type], sort_keys=True)
            by_context.setdefault(key, []).append(entity)
        for group in by_context.values():
            self.context = group[0].get("@context") if isinstance(group[0].get("@context"), str) else None
            for start in range(0, len(group), IDS_PER_QUERY):
                chunk = group[start:start + IDS_PER_QUERY]
                first_type = chunk[0].get("type")
                first_type = first_type[0] if isinstance(first_type, list) and first_type else first_type
                params = {"id": ",".join(e["id"] for e in chunk), "type": str(first_type), "limit": str(len(chunk))}
                status, _, body = await self.call("GET", "/entities", tenant, params=params)
                if status != 200 or not isinstance(body, list):
                    continue  # a new tenant (404) or a broker that refuses: upsert them all
                held = {e.get("id"): _strip_times(e) for e in body if isinstance(e, Mapping)}
                for entity in chunk:
                    mine = {k: v for k, v in entity.items() if k != "@context"}
                    theirs = held.get(entity["id"])
                    if theirs is not None and _normal(theirs) == _normal(mine):
                        same.add(entity["id"])
            self.context = None
        return same

    async def history(self, tenant: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Append instances entity by entity (a temporal entity is created when the broker has none)."""
        from gateway.reversibility.records import split_instance

        groups: dict[str, tuple[Any, Any, dict[str, list[Any]]]] = {}
        for line in lines:
            entity_id, entity_type, attr, inst = split_instance(line)
            group = groups.setdefault(entity_id, (entity_type, line.get("@context"), {}))
            group[2].setdefault(attr, []).append(_strip_times(inst))
        for entity_id, (entity_type, context, attrs) in groups.items():
            flat = [(a, i) for a, insts in attrs.items() for i in insts]
            for start in range(0, len(flat), INSTANCES_PER_POST):
                body: dict[str, Any] = {"@context": context}
                for attr, inst in flat[start:start + INSTANCES_PER_POST]:
                    body.setdefault(attr, []).append(inst)
                path = f"/temporal/entities/{quote(entity_id, safe='')}/attrs"
                status, _, answer = await self.call("POST", path, tenant, body=body)
                if status == 404:
                    status, _, answer = await self.call(
                        "POST", "/temporal/entities", tenant, body={"id": entity_id, "type": entity_type, **body}
                    )
                    if status not in (201, 204):
                        raise self.fail(f"POST /temporal/entities ({entity_id})", status, answer)
                elif status != 204:
                    raise self.fail(f"POST {path}", status, answer)
        return len(lines)

    async def subscriptions(self, tenant: str, lines: Sequence[Mapping[str, Any]]) -> int:
        """Create the subscriptions (one that already exists is left as it is)."""
        for line in lines:
            sub = {k: v for k, v in line.items() if k not in READ_ONLY_SUBSCRIPTION}
            if isinstance(sub.get("notification"), Mapping):
                sub["notification"] = {k: v for k, v in sub["notification"].items() if k not in _NOTIFICATION_STATE}
            sub["@context"] = line.get("@context")
            status, _, body = await self.call("POST", "/subscriptions", tenant, body=sub)
            if status not in (201, 409):
                raise self.fail(f"POST /subscriptions ({line.get('id')})", status, body)
        return len(lines)

    async def contexts(self, documents: Mapping[str, Any]) -> None:
        """A broker's hosted contexts are its own: nothing is written."""


def _normal(entity: Mapping[str, Any]) -> str:
    """Canonical text of an entity for comparison (one instance or a list of one are the same)."""
    def norm(value: Any) -> Any:
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], Mapping):
            return norm(value[0])
        if isinstance(value, Mapping):
            return {k: norm(v) for k, v in value.items()}
        return value

    return json.dumps(norm(entity), sort_keys=True)
