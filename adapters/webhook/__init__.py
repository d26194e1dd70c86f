"""Receive signed vendor pushes (Standard Webhooks) and translate them with a declarative mapping."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
from aiohttp import web

from adapters.kit.mapping.engine import apply_mapping, item_tenant, map_item, parse_json, select_items
from adapters.kit.mapping.support import content_key, mapping_from_config
from adapters.kit.payload import load_json
from gateway.contract import Emit, Manifest, load_config_schema
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import Entity, RawMessage, epoch_time
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


class WebhookAdapter:
    """An HTTP listener checking Standard Webhooks signatures, timestamps and ids, plus a mapping."""

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
        self.name = str(config.get("name", "webhook"))
        self.tenant = str(config.get("tenant", ""))
        listen = config.get("listen") or {}
        self.host = str(listen.get("host", "127.0.0.1"))
        self.port = int(listen.get("port", 8090))
        self.path = str(listen.get("path", "/webhook"))
        self.tolerance = int(config.get("tolerance", 300))
        self.max_body = int(config.get("max_body_bytes", 1 << 20))
        self.dedupe_size = int(config.get("dedupe_size", 10000))
        self.split = str(config.get("split", "message"))
        self.mapping = mapping_from_config(config, __package__)
        self.log = log or logging.getLogger("jonction.adapters.webhook")
        self.stats: dict[str, int] = {
            "received": 0, "accepted": 0, "duplicates": 0, "bad_signature": 0, "stale_timestamp": 0,
            "missing_headers": 0, "too_large": 0, "emit_failed": 0,
        }
        self.url = ""
        self.ready = asyncio.Event()
        self._key: bytes | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._in_flight: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._stopped = asyncio.Event()

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
        # The runtime restarts a source by calling stop() then run() again on the same instance.
        self._stopped.clear()
        self.ready.clear()
        key = self._signing_key()

        async def receive(request: web.Request) -> web.StreamResponse:
            """One delivery (the handler closes over the key and the emit callback)."""
            return await self._receive(request, key, emit)

        app = web.Application(client_max_size=self.max_body)
        app.router.add_post(self.path, receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}{self.path}"
        self.log.info("webhook %s listening on %s", self.name, self.url)
        self.ready.set()
        await self._stopped.wait()

    async def stop(self) -> None:
        """Close the listener; idempotent, safe before run."""
        self._stopped.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------------ one delivery

    def _reject(self, counter: str, title: str) -> web.Response:
        self.stats[counter] += 1
        self.log.warning("webhook %s refused a delivery: %s", self.name, title)
        return problem_response(401, title)

    async def _receive(self, request: web.Request, key: bytes, emit: Emit) -> web.StreamResponse:
        self.stats["received"] += 1
        if request.content_length is not None and request.content_length > self.max_body:
            self.stats["too_large"] += 1
            return problem_response(413, f"body over {self.max_body} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.stats["too_large"] += 1
            return problem_response(413, f"body over {self.max_body} bytes")
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
            self.log.exception("webhook %s could not hand a delivery over", self.name)
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
        if self.split == "item" or self.mapping.tenant is not None:
            items = self._items(body)
            if items is not None:
                for index, item in enumerate(items):
                    payload = json.dumps(item, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
                    await emit(RawMessage(
                        source=self.name, tenant=item_tenant(self.mapping, item) or self.tenant,
                        received_at=received, payload=payload,
                        idempotency_key=content_key(self.name, msg_id, str(index)),
                        metadata={**metadata, "split": "item", "index": str(index)},
                    ))
                return len(items)
        # One message per delivery (also for a body the mapping cannot split: it becomes a dead letter).
        await emit(RawMessage(
            source=self.name, tenant=self.tenant, received_at=received, payload=body,
            idempotency_key=content_key(self.name, msg_id), metadata=metadata,
        ))
        return 1

    def _items(self, body: bytes) -> list[Any] | None:
        try:
            return select_items(self.mapping, parse_json(body))
        except (ValueError, TranslationError):
            return None

    # ------------------------------------------------------------------ pure translation

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Apply the mapping to one delivery (or one of its items)."""
        doc = load_json(raw.payload, what="delivery")
        if raw.metadata.get("split") == "item":
            return [map_item(self.mapping, doc, where=f"item {raw.metadata.get('index', '0')}")]
        return apply_mapping(self.mapping, doc)
