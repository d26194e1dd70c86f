"""Receive vendor pushes and translate them with a declarative mapping.

A push is authenticated in one of three ways, chosen in the config:

- ``secret`` (``secret_file``, ``secret_env``): a Standard Webhooks HMAC-SHA256 signature with a
  timestamp (replay window) and an id (redeliveries dropped);
- ``auth: {type: api_key, in: header|query, name: ..., api_key_file: ...}``: a shared key in a
  header or a query parameter, for devices that cannot sign;
- ``auth: none``: nothing, and only on a loopback address (a local forwarder in front).

The mapping may read the push's query parameters and headers (``$query.i``, ``$headers.x-device``):
only those it names are kept with the message, and never a credential (the API key's own header
or parameter, or any name that looks like one).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from adapters.kit.mapping.adapter import MappingAdapter
from adapters.kit.mapping.engine import context_key, parse_json, select_items
from adapters.kit.mapping.records import canonical_json
from adapters.kit.mapping.support import content_key
from adapters.kit.push import LOOPBACK, BodyTooLarge, PushReceiver, cross_site_refusal
from gateway.contract import Emit
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import RawMessage, epoch_time
from gateway.problems import problem_response
from gateway.secrets import read_secret

SECRET_PREFIX = "whsec_"
HMAC, API_KEY, NONE = "hmac", "api_key", "none"
"""The three ways a push is authenticated."""


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: base64 after ``whsec_`` (raw UTF-8 bytes otherwise)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error as exc:
            raise ConfigInvalid("invalid webhook secret", ["secret: whsec_ must be followed by base64"]) from exc
    return secret.encode()


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a delivery: HMAC-SHA256 over ``id.timestamp.body``."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


class WebhookAdapter(MappingAdapter, package=__package__):
    """An HTTP listener checking Standard Webhooks signatures, timestamps and ids (or an API key), plus a mapping."""

    payload_name = "delivery"
    push_context = True

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        super().__init__(config, http=http, log=log)
        self.auth_mode, self.key_in, self.key_name = _auth_settings(config)
        self._check_context()
        self.tolerance = int(config.get("tolerance", 300))
        self.dedupe_size = int(config.get("dedupe_size", 10000))
        self.push = PushReceiver(config, default_port=8090, default_path="/webhook", default_max_body=1 << 20,
                                 log=self.log, name=self.source)
        self.stats: dict[str, int] = {
            "received": 0, "accepted": 0, "duplicates": 0, "bad_signature": 0, "stale_timestamp": 0,
            "missing_headers": 0, "too_large": 0, "emit_failed": 0, "missing_api_key": 0, "bad_api_key": 0,
            "cross_site": 0,
        }
        self._key: bytes | None = None
        self._api_key: bytes | None = None
        self._receipts = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._in_flight: set[str] = set()

    @property
    def url(self) -> str:
        """Where the listener receives deliveries ("" until it listens)."""
        return self.push.url

    @property
    def ready(self) -> asyncio.Event:
        """Set once the socket is bound (cleared when the listener closes)."""
        return self.push.started

    @property
    def rejected(self) -> int:
        """Deliveries refused with 401 (bad signature, stale or future timestamp, missing headers, API key)."""
        return sum(self.stats[k] for k in (
            "bad_signature", "stale_timestamp", "missing_headers", "missing_api_key", "bad_api_key"))

    def _check_context(self) -> None:
        """Refuse a mapping that reads the API key's own header or query parameter (it must never be kept)."""
        if self.auth_mode != API_KEY:
            return
        secret = context_key(f"${'headers' if self.key_in == 'header' else 'query'}.{self.key_name}")
        if secret is not None and secret in self.mapping.context:
            where = self.mapping.context[secret]
            place = f"/mapping{where}" if self.config.get("mapping") is not None else f"/mapping_file: {where}"
            raise ConfigInvalid("invalid mapping", [
                f"{place}: reads the API key ({self.key_in} {self.key_name!r}); a credential is never given to a "
                "mapping"
            ])

    def _signing_key(self) -> bytes:
        if self._key is None:
            self._key = signing_key(read_secret(self.config, "secret", required=True) or "")
        return self._key

    def _read_api_key(self) -> bytes:
        if self._api_key is None:
            auth = self.config.get("auth")
            key = read_secret(auth if isinstance(auth, Mapping) else {}, "api_key", where="/auth/", required=True)
            # Compared as SHA-256 digests: constant time, and the length of the key is not leaked either.
            self._api_key = hashlib.sha256((key or "").encode()).digest()
        return self._api_key

    async def check(self) -> None:
        """Read the signing secret or the API key (a listener has nothing remote to probe)."""
        self._credentials()

    def _credentials(self) -> bytes:
        if self.auth_mode == HMAC:
            return self._signing_key()
        if self.auth_mode == API_KEY:
            return self._read_api_key()
        return b""

    async def run(self, emit: Emit) -> None:
        """Listen until stopped; ``url`` is set and ``ready`` fires once the socket is bound."""
        key = self._credentials()

        async def receive(request: web.Request) -> web.StreamResponse:
            """One delivery (the handler closes over the key and the emit callback)."""
            return await self._receive(request, key, emit)

        # Only the configured path: Standard Webhooks senders post every event type to one URL.
        await self.push.serve_routes([web.post(self.push.path, receive)])

    async def stop(self) -> None:
        """Close the listener; idempotent, safe before run."""
        await self.push.stop()

    # ------------------------------------------------------------------ one delivery

    def _reject(self, counter: str, title: str) -> web.Response:
        self.stats[counter] += 1
        self.log.warning("webhook %s refused a delivery: %s", self.source, title)
        return problem_response(401, title)

    async def _receive(self, request: web.Request, key: bytes, emit: Emit) -> web.StreamResponse:
        self.stats["received"] += 1
        # An unsigned request is judged before its body is read: a stranger's body costs nothing.
        if self.auth_mode == NONE:
            refused = cross_site_refusal(request)
            if refused is not None:
                self.stats["cross_site"] += 1
                return refused
        elif self.auth_mode == API_KEY:
            refused = self._verify_api_key(request, key)
            if refused is not None:
                return refused
        try:
            body = await self.push.read_body(request)
        except BodyTooLarge as exc:
            self.stats["too_large"] += 1
            return problem_response(413, str(exc))
        if self.auth_mode == HMAC:
            refused, msg_id, stamp = self._verify_signature(request, key, body)
            if refused is not None:
                return refused
        else:
            # Unsigned senders may still name a delivery, so that their retries are not imported twice.
            msg_id = request.headers.get("webhook-id") or request.headers.get("Idempotency-Key") or ""
            stamp = request.headers.get("webhook-timestamp", "")
        if msg_id and msg_id in self._seen:
            self.stats["duplicates"] += 1
            return web.json_response({"status": "duplicate", "webhook-id": msg_id})
        if msg_id and msg_id in self._in_flight:
            return problem_response(409, "the same webhook-id is being processed")
        if msg_id:
            self._in_flight.add(msg_id)
        try:
            count = await self._emit(emit, msg_id, stamp, body, request)
        except Exception:
            # The message is not durably accepted: answer 503 so that the sender retries it.
            self.stats["emit_failed"] += 1
            self.log.exception("webhook %s could not hand a delivery over", self.source)
            return problem_response(503, "temporarily unable to accept the delivery")
        finally:
            self._in_flight.discard(msg_id)
        if msg_id:
            self._remember(msg_id)
        self.stats["accepted"] += 1
        return web.json_response({"status": "accepted", "messages": count}, status=202)

    def _verify_api_key(self, request: web.Request, key: bytes) -> web.Response | None:
        """None when the request carries the API key where the config says, else the 401."""
        given = request.headers.get(self.key_name) if self.key_in == "header" else request.query.get(self.key_name)
        if not given:
            return self._reject("missing_api_key", f"the API key is required in the {self.key_in} {self.key_name}")
        if not hmac.compare_digest(hashlib.sha256(given.encode()).digest(), key):
            return self._reject("bad_api_key", f"wrong API key in the {self.key_in} {self.key_name}")
        return None

    def _verify_signature(self, request: web.Request, key: bytes, body: bytes) -> tuple[web.Response | None, str, str]:
        """(None, id, timestamp) for a delivery signed the Standard Webhooks way, else (the 401, "", "")."""
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        signatures = request.headers.get("webhook-signature", "")
        if not msg_id or not stamp or not signatures:
            missing = "webhook-id, webhook-timestamp and webhook-signature are required"
            return self._reject("missing_headers", missing), "", ""
        try:
            sent = int(stamp)
        except ValueError:
            return self._reject("stale_timestamp", "webhook-timestamp is not an integer"), "", ""
        if abs(time.time() - sent) > self.tolerance:
            return self._reject("stale_timestamp", f"webhook-timestamp is more than {self.tolerance} s away"), "", ""
        expected = sign(key, msg_id, stamp, body)
        if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
            return self._reject("bad_signature", "no webhook-signature matches"), "", ""
        return None, msg_id, stamp

    def _remember(self, msg_id: str) -> None:
        self._seen[msg_id] = None
        while len(self._seen) > self.dedupe_size:
            self._seen.popitem(last=False)

    def _context(self, request: web.Request) -> dict[str, str]:
        """The query parameters and headers the mapping reads, and only those (see the module docstring)."""
        found: dict[str, str] = {}
        for key in self.mapping.context:
            scope, name = key.split(".", 1)
            value = request.query.get(name) if scope == "query" else request.headers.get(name)
            if value is not None:
                found[key] = value
        return found

    async def _emit(self, emit: Emit, msg_id: str, stamp: str, body: bytes, request: web.Request) -> int:
        now = time.time()
        received = epoch_time(now)
        metadata = {"webhook_id": msg_id, "webhook_timestamp": stamp, "path": request.path}
        context = self._context(request)
        metadata.update(context)
        identity: tuple[str | bytes, ...]
        if msg_id:
            identity = (self.source, msg_id)
        else:
            # No id from the sender: each receipt is its own message (two equal readings are two readings).
            self._receipts += 1
            identity = (self.source, "receipt", repr(now), str(self._receipts), body)
        if self.per_item:
            items = self._items(body)
            if items is not None:
                for index, item in enumerate(items):
                    await emit(RawMessage(
                        source=self.source, tenant=self.tenant_of(item, context),
                        received_at=received, payload=canonical_json(item),
                        idempotency_key=content_key(*identity, str(index)),
                        metadata={**metadata, "split": "item", "index": str(index)},
                    ))
                return len(items)
        # One message per delivery (also for a body the mapping cannot split: it becomes a dead letter).
        await emit(RawMessage(
            source=self.source, tenant=self.tenant, received_at=received, payload=body,
            idempotency_key=content_key(*identity), metadata=metadata,
        ))
        return 1

    def _items(self, body: bytes) -> list[Any] | None:
        try:
            return select_items(self.mapping, parse_json(body))
        except (ValueError, TranslationError):
            return None


def _auth_settings(config: Mapping[str, Any]) -> tuple[str, str, str]:
    """(mode, where the API key is, its header or parameter name); ConfigInvalid names the key by pointer.

    Checked before any I/O: a source needs a signing secret, an API key, or an explicit ``auth: none``
    on a loopback address; never two of them.
    """
    auth = config.get("auth")
    signed = any(config.get(k) for k in ("secret", "secret_file", "secret_env"))
    problems: list[str] = []
    if auth is None:
        if not signed:
            problems.append("/secret: give secret (or secret_file, secret_env) for signed pushes, or auth: "
                            "{type: api_key, ...} for devices that cannot sign (auth: none on loopback only)")
        mode, key_in, name = HMAC, "header", ""
    else:
        kind = auth if isinstance(auth, str) else auth.get("type") if isinstance(auth, Mapping) else None
        mode = API_KEY if kind == API_KEY else NONE
        if kind not in (API_KEY, NONE):
            problems.append(f"/auth: {kind!r} is not an authentication (give none, or type: api_key)")
        if signed:
            problems.append("/auth: give either secret (signed pushes) or auth, not both")
        settings = auth if isinstance(auth, Mapping) else {}
        key_in, name = str(settings.get("in", "header")), str(settings.get("name", "X-API-Key"))
        if mode == API_KEY and not any(settings.get(k) for k in ("api_key", "api_key_file", "api_key_env")):
            problems.append("/auth/api_key: give api_key, api_key_file or api_key_env")
        host = str((config.get("listen") or {}).get("host", "127.0.0.1"))
        if mode == NONE and host not in LOOPBACK:
            problems.append(f"/listen/host: auth: none only listens on a loopback address, not {host!r} "
                            "(give secret or an API key)")
    if problems:
        raise ConfigInvalid("invalid webhook authentication", problems)
    return mode, key_in, name
