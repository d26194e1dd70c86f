"""Sinks: the embedded NGSI-LD store (Python interface) and remote NGSI-LD brokers (HTTP).

A sink writes one batch of entities for one tenant and says which entities failed. Whole
failures are exceptions: :class:`SinkUnavailable` (retry later: network, 5xx, auth) and
:class:`SinkRejected` (the request itself was refused: 400, 413, 422).
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, cast
from urllib.parse import quote

import aiohttp

from gateway.errors import JonctionError
from gateway.model import Entity
from gateway.oauth2 import ClientCredentials, OAuth2Client
from gateway.runtime.logging import redact
from gateway.runtime.outbox import encode
from gateway.store.base import Storage
from schemas import contexts

log = logging.getLogger("jonction.sinks")


class SinkUnavailable(Exception):
    """The sink cannot take the batch now; retry the whole batch later."""


class SinkRejected(Exception):
    """The sink refused the request as a whole (not one entity); ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class SinkResult:
    """Per-entity failures of a batch: ``entity id → (reason, permanent)``."""

    failed: dict[str, tuple[str, bool]]
    late: int = 0
    """Attribute instances the sink kept in its history only, older than what it held (``guards_observed``)."""


class Sink(Protocol):
    """Anything that can upsert a batch of entities for a tenant."""

    name: str
    kind: str
    max_batch: int

    async def upsert(self, tenant: str, entities: Sequence[Entity], corr: str) -> SinkResult:
        """Create or update ``entities`` (attribute merge) in ``tenant``."""

    async def check(self) -> None:
        """Raise SinkUnavailable when the sink cannot be reached."""

    async def close(self) -> None:
        """Release connections."""


class HistorySink(Protocol):
    """A sink that can add attribute instances to its temporal history without touching the current state."""

    async def append_history(self, tenant: str, entities: Sequence[Entity], corr: str) -> SinkResult:
        """Add the instances of ``entities`` to their temporal evolution only (late readings)."""


def history_of(sink: Sink) -> HistorySink | None:
    """The sink's history-only writes, or None when a late reading can only be dropped there."""
    late = getattr(sink, "late_readings", "drop")
    if late == "temporal" and callable(getattr(sink, "append_history", None)):
        return cast(HistorySink, sink)
    return None


# ---------------------------------------------------------------------------- embedded

_PERMANENT_TYPES: Final = ("BadRequestData", "InvalidRequest", "InvalidRequest", "AlreadyExists",
                           "OperationNotSupported", "LdContextNotAvailable")


def _is_permanent(error_type: str) -> bool:
    return any(error_type.endswith(t) for t in _PERMANENT_TYPES)


def _never() -> bool:
    """No subscription (an embedded store without its API)."""
    return False


class EmbeddedSink:
    """The embedded store, called through its Python interface (no HTTP hop)."""

    kind = "embedded"

    def __init__(self, name: str, store: Storage, *, max_batch: int = 1000, context: str | None = None) -> None:
        self.name = name
        self.store = store
        self.max_batch = max_batch
        self.context = context
        self.late_readings = "temporal"
        """Readings older than the current state go to the store's temporal history only."""
        self.guards_observed = True
        """The store itself keeps an older ``observedAt`` from overwriting a newer one, in its write
        transaction (``Storage.upsert``): the publisher leaves that check and its bookkeeping to it."""
        self.subscribed: Callable[[], bool] = _never
        """True while the store has subscriptions (wired by the runtime to the store API's notifier)."""
        self.observers: list[Callable[[str, Sequence[Entity]], Awaitable[None]]] = []
        """Called with the entities each upsert wrote (the rules engine); they never raise."""

    @property
    def ordered_batches(self) -> bool:
        """Whether several readings of one entity may share a batch (then in reading order).

        The store applies a batch in array order and records each change in the temporal history
        (a reading sent again exactly as stored is the only one it skips), so no observation is
        lost and it works on large batches instead of one small batch per round. But it notifies
        once per entity and batch: while subscriptions exist, each reading keeps its own round so
        that subscribers hear of every one.
        """
        return not self.subscribed()

    async def upsert(self, tenant: str, entities: Sequence[Entity], corr: str) -> SinkResult:
        """Upsert through ``store.upsert(tenant, entities, mode="update")``."""
        try:
            result = await self.store.upsert(tenant, list(entities), context=self.context, mode="update")
        except Exception as exc:  # the store's own storage failed: retry the whole batch
            raise SinkUnavailable(f"embedded store: {type(exc).__name__}: {exc}") from exc
        failed: dict[str, tuple[str, bool]] = {}
        for err in result.errors:
            etype, detail = err.error.type, err.error.detail or str(err.error)
            failed[err.entity_id] = (f"{etype}: {detail}" if etype else detail, _is_permanent(etype))
        if self.observers:
            written = [e for e in entities if e.get("id") not in failed]
            for observer in self.observers:
                await observer(tenant, written)
        return SinkResult(failed, result.late)

    async def append_history(self, tenant: str, entities: Sequence[Entity], corr: str) -> SinkResult:
        """Add late readings to the history through ``store.append_history`` (current state untouched)."""
        try:
            result = await self.store.append_history(tenant, list(entities), context=self.context)
        except Exception as exc:  # the store's own storage failed: retry the whole batch
            raise SinkUnavailable(f"embedded store: {type(exc).__name__}: {exc}") from exc
        return SinkResult({err.entity_id: (f"{err.error.type}: {err.error.detail or err.error}", True)
                           for err in result.errors})

    async def check(self) -> None:
        """The store answers a count."""
        try:
            await self.store.count("")
        except Exception as exc:
            raise SinkUnavailable(f"embedded store: {exc}") from exc

    async def close(self) -> None:
        """The store is closed by the app that opened it."""


# ---------------------------------------------------------------------------- remote


@dataclass(frozen=True, slots=True)
class Profile:
    """What differs between NGSI-LD brokers as far as the gateway cares."""

    tenant_header: str
    context_mode: str  # "link" (Link header) or "inline" (@context in each entity)
    max_batch: int
    context_iri: str | None = None
    """A @context IRI the broker resolves without fetching (a jonction store knows its own)."""


PROFILES: Final[Mapping[str, Profile]] = {
    # Orion-LD answers large batches slowly and caps request bodies; 100 keeps requests small.
    "orion-ld": Profile("NGSILD-Tenant", "link", 100),
    "scorpio": Profile("NGSILD-Tenant", "link", 1000),
    # Stellio reads the tenant from NGSILD-Tenant too and prefers the @context in a Link header.
    "stellio": Profile("NGSILD-Tenant", "link", 500),
    "generic": Profile("NGSILD-Tenant", "link", 1000),
    # Another jonction store (``jonction store`` or a gateway's embedded store) has the jonction
    # @context bundled under its canonical IRI: no fetch, no dependency on this gateway's URL.
    "jonction": Profile("NGSILD-Tenant", "link", 1000, "https://jonction.eu/ns/context/v1.jsonld"),
}
"""Per-broker defaults; every field can be overridden per sink in the config."""

_JSONLD_LINK = '<{}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
_MEMBERS: Final = frozenset({"id", "type", "scope", "@context", "createdAt", "modifiedAt", "deletedAt", "value",
                             "object", "objectList", "languageMap", "vocab", "json", "valueList", "observedAt",
                             "unitCode", "datasetId", "instanceId", "lang", "objectType"})
"""NGSI-LD members whose names are core terms, never Smart Data Model terms."""


def entity_terms(entity: Mapping[str, Any]) -> set[str]:
    """The terms an entity uses that a @context must define: types, attribute names, vocab values."""
    terms: set[str] = set()
    types = entity.get("type")
    terms.update([types] if isinstance(types, str) else [t for t in types or () if isinstance(t, str)])

    def walk(node: Mapping[str, Any]) -> None:
        for name, value in node.items():
            if name in _MEMBERS:
                continue
            terms.add(name)
            for instance in value if isinstance(value, list) else [value]:
                if not isinstance(instance, Mapping):
                    continue
                vocab = instance.get("vocab")
                terms.update(v for v in (vocab if isinstance(vocab, list) else [vocab]) if isinstance(v, str))
                keys(instance.get("value"))
                walk(instance)

    def keys(value: Any) -> None:
        # Members of structured values (address.streetAddress...) are expanded too.
        if isinstance(value, Mapping):
            terms.update(k for k in value if isinstance(k, str))
            for inner in value.values():
                keys(inner)
        elif isinstance(value, list):
            for inner in value:
                keys(inner)

    walk(entity)
    return terms


@dataclass(slots=True)
class RemoteSettings:
    """Configuration of one remote broker sink (secrets already resolved)."""

    url: str
    profile: str = "generic"
    tenant_header: str | None = None
    context: str | None = None
    context_mode: str | None = None
    max_batch: int | None = None
    timeout_s: float = 10.0
    bearer_token: str | None = None
    oauth2: Mapping[str, str] | None = None
    ca_file: str | None = None
    verify_tls: bool = True
    tenant_map: Mapping[str, str] | None = None
    late_readings: str = "drop"
    """``drop`` (counted) or ``temporal``: an older reading goes to the broker's temporal history only."""


def _ssl_context(settings: RemoteSettings) -> ssl.SSLContext | bool:
    if not settings.verify_tls:
        return False
    if settings.ca_file:
        return ssl.create_default_context(cafile=str(Path(settings.ca_file)))
    return True


class RemoteBrokerSink:
    """A remote NGSI-LD broker reached with batch upsert (``POST /entityOperations/upsert``)."""

    kind = "remote"

    def __init__(self, name: str, settings: RemoteSettings) -> None:
        self.name = name
        self.settings = settings
        profile = PROFILES[settings.profile]
        self.tenant_header = settings.tenant_header or profile.tenant_header
        self.context_mode = settings.context_mode or profile.context_mode
        if settings.context is None and (self.context_mode == "link" or profile.context_iri):
            # Adapters compact entities with the jonction @context (Smart Data Model terms); a
            # broker must expand them with the same one. ``jonction run`` serves it and gives
            # every sink its public URL (``server.public_url``); the canonical IRI is the fallback
            # for a sink built without a config, and what jonction stores know offline.
            settings.context = profile.context_iri or contexts.JONCTION_CONTEXT_IRI
        self.max_batch = settings.max_batch or profile.max_batch
        self.late_readings = settings.late_readings
        self.ordered_batches = False
        """A broker may coalesce one entity's updates within a batch: its readings go in rounds."""
        base = settings.url.rstrip("/")
        if not base.endswith("/ngsi-ld/v1"):
            base += "/ngsi-ld/v1"
        self.base = base
        self._session: aiohttp.ClientSession | None = None
        self._oauth: OAuth2Client | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=_ssl_context(self.settings), limit=8)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
            if self.settings.oauth2:
                o = self.settings.oauth2
                self._oauth = OAuth2Client(ClientCredentials(
                    token_url=o["token_url"], client_id=o["client_id"], client_secret=o["client_secret"],
                    scope=o.get("scope"), timeout=self.settings.timeout_s))
        return self._session

    async def _headers(self, tenant: str, corr: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json", "X-Correlation-Id": corr}
        if self.context_mode == "inline":
            headers["Content-Type"] = "application/ld+json"
        elif self.settings.context:
            headers["Link"] = _JSONLD_LINK.format(self.settings.context)
        remote_tenant = (self.settings.tenant_map or {}).get(tenant, tenant)
        if remote_tenant:
            headers[self.tenant_header] = remote_tenant
        if self._oauth is not None:
            try:
                headers["Authorization"] = await self._oauth.authorization(self._client())
            except JonctionError as exc:  # refused or unreachable token endpoint: retry the batch later
                raise SinkUnavailable(f"{self.name}: {exc}") from exc
        elif self.settings.bearer_token:
            headers["Authorization"] = f"Bearer {self.settings.bearer_token}"
        return headers

    def _body(self, entities: Sequence[Entity]) -> bytes:
        # The outbox's encoder: the bytes json.dumps writes, several times faster (orjson).
        return encode(self._in_context(entities)).encode()

    def _in_context(self, entities: Sequence[Entity]) -> list[Entity]:
        if self.context_mode == "inline":
            if self.settings.context:
                entities = [{**e, "@context": self.settings.context} for e in entities]
            else:
                # The terms each entity uses, inline: the broker fetches nothing (CIM 009 §6.3.5).
                inline = contexts.inline_context
                entities = [{**e, "@context": inline(entity_terms(e))} for e in entities]
        return list(entities)

    async def _post(self, url: str, body: bytes, tenant: str, corr: str) -> tuple[int, str]:
        """POST ``body``: status and text (a refused OAuth2 token is renewed once; network errors: unavailable)."""
        session = self._client()
        for attempt in (1, 2):
            try:
                headers = await self._headers(tenant, corr)
                async with session.post(url, data=body, headers=headers) as resp:
                    status = resp.status
                    text = await resp.text()
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise SinkUnavailable(f"{self.name}: {type(exc).__name__}: {redact(str(exc))}") from exc
            if status == 401 and self._oauth is not None and attempt == 1:
                self._oauth.invalidate()
                continue
            break
        return status, text

    async def upsert(self, tenant: str, entities: Sequence[Entity], corr: str) -> SinkResult:
        """POST one batch; read 201/204 as all done, 207 (or 400 with a batch body) per entity."""
        url = f"{self.base}/entityOperations/upsert?options=update"
        status, text = await self._post(url, self._body(entities), tenant, corr)
        if status in (200, 201, 204):
            return SinkResult({})
        doc: Any = None
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            doc = None
        if status in (207, 400) and isinstance(doc, dict) and isinstance(doc.get("errors"), list):
            failed: dict[str, tuple[str, bool]] = {}
            for err in doc["errors"]:
                if not isinstance(err, dict):
                    continue
                problem = err.get("error") or {}
                etype = str(problem.get("type", "")) if isinstance(problem, dict) else ""
                detail = str(problem.get("detail") or problem.get("title") or etype) if isinstance(
                    problem, dict) else str(problem)
                failed[str(err.get("entityId", ""))] = (f"{etype}: {detail}" if etype else detail,
                                                        _is_permanent(etype))
            return SinkResult(failed)
        summary = redact(text[:300])
        if status in (401, 403, 408, 429) or status >= 500:
            raise SinkUnavailable(f"{self.name}: HTTP {status}: {summary}")
        raise SinkRejected(f"{self.name}: HTTP {status}: {summary}", status)

    async def append_history(self, tenant: str, entities: Sequence[Entity], corr: str) -> SinkResult:
        """POST each entity's late attributes to ``/temporal/entities/{id}/attrs`` (CIM 009 §6.20.3.1).

        Used only with ``late_readings: temporal``. A 4xx refuses that entity (permanently: the
        broker has no temporal API for it); a network error, 401/403/408/429 or 5xx retries later.
        """
        failed: dict[str, tuple[str, bool]] = {}
        for entity in entities:
            entity_id = str(entity["id"])
            url = f"{self.base}/temporal/entities/{quote(entity_id, safe=':')}/attrs"
            body = encode(self._in_context([{k: v for k, v in entity.items() if k not in ("id", "type")}])[0]).encode()
            status, text = await self._post(url, body, tenant, corr)
            if status in (200, 201, 204):
                continue
            summary = redact(text[:300])
            if status in (401, 403, 408, 429) or status >= 500:
                raise SinkUnavailable(f"{self.name}: temporal append: HTTP {status}: {summary}")
            failed[entity_id] = (f"{self.name}: temporal append: HTTP {status}: {summary}", True)
        return SinkResult(failed)

    async def check(self) -> None:
        """GET the broker's type list (cheap on every broker)."""
        session = self._client()
        try:
            headers = await self._headers("", "readyz")
            headers.pop("Content-Type", None)
            async with session.get(f"{self.base}/types", headers=headers) as resp:
                if resp.status >= 500 or resp.status in (401, 403):
                    raise SinkUnavailable(f"{self.name}: HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkUnavailable(f"{self.name}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
