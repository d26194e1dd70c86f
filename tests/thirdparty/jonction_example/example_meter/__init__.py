"""Example third-party jonction adapter: a water-meter reading service polled over HTTP.

It imports only the kit (``adapters.kit``), jonction's public modules and base dependencies, and
itself, as any adapter package outside jonction should.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp

from adapters.kit.payload import load_json, token
from gateway.contract import Emit, Manifest, load_config_schema
from gateway.errors import AuthFailed, ConfigInvalid, TranslationError, Unavailable
from gateway.model import Entity, ModelError, RawMessage, entity, prop, urn, utc_time

__all__ = ["ExampleMeterAdapter"]


def _reading(item: Any, pointer: str) -> Entity:
    """One reading ``{"meter", "index_litres", "read_at", "label"?}`` as a WaterConsumptionObserved."""
    if not isinstance(item, dict):
        raise TranslationError("a reading must be an object", pointer)
    meter, index, read_at = item.get("meter"), item.get("index_litres"), item.get("read_at")
    if not isinstance(meter, str) or not meter:
        raise TranslationError("meter must be a non-empty string", pointer + token("meter"))
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise TranslationError("index_litres must be a non-negative integer", pointer + token("index_litres"))
    if not isinstance(read_at, str):
        raise TranslationError("read_at must be an RFC 3339 time", pointer + token("read_at"))
    try:
        observed_at = utc_time(read_at)
        attributes: dict[str, Any] = {"waterConsumption": prop(index, unit="LTR", observed_at=observed_at)}
        label = item.get("label")
        if isinstance(label, str) and label:
            attributes["name"] = prop(label)
        return entity("WaterConsumptionObserved", urn("WaterConsumptionObserved", meter), **attributes)
    except ModelError as exc:
        raise TranslationError(str(exc), pointer) from exc


class ExampleMeterAdapter:
    """Polls the reading service every ``interval`` seconds; one raw message per poll."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        """Keep the validated config; no I/O here (the contract)."""
        self.name: str = config["name"]
        self.tenant: str = config.get("tenant", "")
        self.url: str = config["url"]
        self.interval: float = float(config.get("interval", 300))
        self._token: str | None = config.get("api_token")
        self._token_env: str | None = config.get("api_token_env")
        self._http = http
        self._log = log or logging.getLogger(f"jonction.adapters.{self.manifest.domain}")
        self._stopped = asyncio.Event()

    def _headers(self) -> dict[str, str]:
        secret = self._token or (os.environ.get(self._token_env) if self._token_env else None)
        return {"Authorization": f"Bearer {secret}"} if secret else {}

    async def _fetch(self) -> bytes:
        if self._http is None:
            raise ConfigInvalid("example_meter needs an HTTP session", [])
        try:
            async with self._http.get(self.url, headers=self._headers()) as response:
                if response.status in (401, 403):
                    raise AuthFailed(f"{self.url} refused the token ({response.status})")
                if response.status != 200:
                    raise Unavailable(f"{self.url} answered {response.status}")
                return await response.read()
        except aiohttp.ClientError as exc:
            raise Unavailable(f"{self.url}: {exc}") from exc

    async def check(self) -> None:
        """One poll, discarded: raises AuthFailed or Unavailable."""
        await self._fetch()

    async def run(self, emit: Emit) -> None:
        """Poll until stopped; an unavailable source is logged once, and its recovery once."""
        down = False
        while not self._stopped.is_set():
            try:
                body = await self._fetch()
            except Unavailable as exc:
                if not down:
                    self._log.warning("%s unavailable: %s", self.name, exc)
                down = True
            else:
                if down:
                    self._log.info("%s recovered", self.name)
                down = False
                await emit(
                    RawMessage(
                        source=self.name,
                        tenant=self.tenant,
                        received_at=utc_time(_now()),
                        payload=body,
                        idempotency_key=hashlib.sha256(body).hexdigest(),
                    )
                )
            try:
                await asyncio.wait_for(self._stopped.wait(), self.interval)
            except TimeoutError:
                continue

    async def stop(self) -> None:
        """Stop polling; idempotent."""
        self._stopped.set()

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Every reading of one poll as a WaterConsumptionObserved (pure, deterministic)."""
        document = load_json(raw.payload)
        if not isinstance(document, dict) or not isinstance(document.get("readings"), list):
            raise TranslationError("expected an object with a 'readings' array", "")
        return [_reading(item, token("readings") + token(i)) for i, item in enumerate(document["readings"])]


def _now() -> str:
    """Now, in RFC 3339 (only the transport reads the clock; the translation never does)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()
