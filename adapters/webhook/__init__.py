"""Receive signed vendor pushes (Standard Webhooks) and translate them with a declarative mapping."""

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
from adapters.kit.mapping.engine import parse_json, select_items
from adapters.kit.mapping.records import canonical_json
from adapters.kit.mapping.support import content_key
from adapters.kit.push import BodyTooLarge, PushReceiver
from gateway.contract import Emit
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import RawMessage, epoch_time
from gateway.problems import problem_response
from gateway.secrets import read_secret

SECRET_PREFIX = "whsec_"


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
    """An HTTP listener checking Standard Webhooks signatures, timestamps and ids, plus a mapping."""

    payload_name = "delivery"

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        super().__init__(config, http=http, log=log)
        self.tolerance = int(config.get("tolerance", 300))
        self.dedupe_size = int(config.get("dedupe_size", 10000))
        self.push = PushReceiver(config, default_port=8090, default_path="/webhook", default_max_body=1 << 20,
                                 log=self.log, name=self.source)
        self.stats: dict[str, int] = {
            "received": 0, "accepted": 0, "duplicates": 0, "bad_signature": 0, "stale_timestamp": 0,
            "missing_headers": 0, "too_large": 0, "emit_failed": 0,
        }
        self._key: bytes | None = None
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
        """Deliveries refused with 401 (bad signature, stale or future timestamp, missing headers)."""
        return self.stats["bad_signature"] + self.stats["stale_timestamp"] + self.stats["missing_headers"]

    def _signing_key(self) -> bytes:
        if self._key is None:
            self._key = signing_key(read_secret(self.config, "secret", required=True) or "")
        return self._key

    async def check(self) -> None:
        """Read the signing secret (a listener has nothing remote to probe)."""
        self._signing_key()

    async def run(self, emit: Emit) -> None:
        """Listen until stopped; ``url`` is set and ``ready`` fires once the socket is bound."""
        key = self._signing_key()

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
        try:
            body = await self.push.read_body(request)
        except BodyTooLarge as exc:
            self.stats["too_large"] += 1
            return problem_response(413, str(exc))
        msg_id = request.headers.get("webhook-id", "")
        stamp = request.headers.get("webhook-timestamp", "")
        signatures = request.headers.get("webhook-signature", "")
        if not msg_id or not stamp or not signatures:
            return self._reject("missing_headers", "webhook-id, webhook-timestamp and webhook-signature are required")
        try:
            sent = int(stamp)
        except ValueError:
            return self._reject("stale_timestamp", "webhook-timestamp is not an integer")
        if abs(time.time() - sent) > self.tolerance:
            return self._reject("stale_timestamp", f"webhook-timestamp is more than {self.tolerance} s away")
        expected = sign(key, msg_id, stamp, body)
        if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
            return self._reject("bad_signature", "no webhook-signature matches")
        if msg_id in self._seen:
            self.stats["duplicates"] += 1
            return web.json_response({"status": "duplicate", "webhook-id": msg_id})
        if msg_id in self._in_flight:
            return problem_response(409, "the same webhook-id is being processed")
        self._in_flight.add(msg_id)
        try:
            count = await self._emit(emit, msg_id, stamp, body, request.path)
        except Exception:
            # The message is not durably accepted: answer 503 so that the sender retries it.
            self.stats["emit_failed"] += 1
            self.log.exception("webhook %s could not hand a delivery over", self.source)
            return problem_response(503, "temporarily unable to accept the delivery")
        finally:
            self._in_flight.discard(msg_id)
        self._remember(msg_id)
        self.stats["accepted"] += 1
        return web.json_response({"status": "accepted", "messages": count}, status=202)

    def _remember(self, msg_id: str) -> None:
        self._seen[msg_id] = None
        while len(self._seen) > self.dedupe_size:
            self._seen.popitem(last=False)

    async def _emit(self, emit: Emit, msg_id: str, stamp: str, body: bytes, path: str) -> int:
        received = epoch_time(time.time())
        metadata = {"webhook_id": msg_id, "webhook_timestamp": stamp, "path": path}
        if self.per_item:
            items = self._items(body)
            if items is not None:
                for index, item in enumerate(items):
                    await emit(RawMessage(
                        source=self.source, tenant=self.tenant_of(item),
                        received_at=received, payload=canonical_json(item),
                        idempotency_key=content_key(self.source, msg_id, str(index)),
                        metadata={**metadata, "split": "item", "index": str(index)},
                    ))
                return len(items)
        # One message per delivery (also for a body the mapping cannot split: it becomes a dead letter).
        await emit(RawMessage(
            source=self.source, tenant=self.tenant, received_at=received, payload=body,
            idempotency_key=content_key(self.source, msg_id), metadata=metadata,
        ))
        return 1

    def _items(self, body: bytes) -> list[Any] | None:
        try:
            return select_items(self.mapping, parse_json(body))
        except (ValueError, TranslationError):
            return None
