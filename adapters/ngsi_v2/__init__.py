"""NGSI v2 notifications to NGSI-LD: the reference adapter of the contract."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp

import schemas
from adapters.kit.payload import ParsedBodies, load_json, token
from adapters.kit.push import LOOPBACK, PushReceiver, PushRequest, header_token
from gateway.contract import Emit, Manifest, load_config_schema
from gateway.errors import ConfigInvalid, InputError, TranslationError
from gateway.model import (
    ATTRIBUTE_MEMBERS,
    ENTITY_MEMBERS,
    Entity,
    ModelError,
    RawMessage,
    epoch_time,
    is_uri,
    urn,
    utc_time,
)
from gateway.secrets import read_secret

_TIME_METADATA = ("TimeInstant", "dateObserved", "timestamp")
# NGSI v2 ids such as "Streetlight:001" are syntactically URIs (scheme "streetlight"); only the
# schemes NGSI-LD brokers expect are kept as they are.
_LD_SCHEMES = ("urn:", "http://", "https://")


def _model_spelling(entity_type: str) -> Mapping[str, str]:
    """Lower-cased attribute name -> the spelling of the Smart Data Model of ``entity_type`` (empty if none)."""
    if entity_type not in schemas.MODELS:
        return {}
    return _spelling(entity_type)


@functools.cache
def _spelling(model: str) -> Mapping[str, str]:
    # Once per model (a known, finite set), not once per entity.
    return {name.lower(): name for name in schemas.model(model).attributes}


def _is_ld_id(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_LD_SCHEMES) and is_uri(value)


def _object_id(attr_name: str, value: str) -> str:
    """A Relationship target as a URI; ``refDevice: "d1"`` becomes ``urn:ngsi-ld:Device:d1``."""
    if _is_ld_id(value):
        return value
    target = attr_name[3:] if attr_name.startswith("ref") and len(attr_name) > 3 else "Thing"
    return urn(target[0].upper() + target[1:], value)


def _geo_point(text: str, pointer: str) -> dict[str, Any]:
    try:
        lat_text, lon_text = (part.strip() for part in text.split(","))
        lat, lon = float(lat_text), float(lon_text)
    except ValueError as exc:
        raise TranslationError("geo:point must be 'lat, lon'", pointer) from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):  # also refuses NaN, which compares false
        raise TranslationError(f"geo:point {text[:60]!r} is not a WGS84 position", pointer)
    return {"type": "Point", "coordinates": [lon, lat]}


class NgsiV2Adapter:
    """Receives NGSI v2 subscription notifications over HTTP and emits NGSI-LD entities."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.types: Mapping[str, str] = config.get("types", {})
        self._config = config
        self.log = log or logging.getLogger("jonction.adapters.ngsi_v2")
        self.source = str(config.get("name", "ngsi_v2"))
        self.tenant = str(config.get("tenant", ""))
        self.push = PushReceiver({"max_body_bytes": 1 << 20, **config}, default_port=8668,
                                 default_path="/v2/notify", log=self.log, name=self.source)
        self.parsed = ParsedBodies()

    async def check(self) -> None:
        """Refuse a listener open to the network without a token."""
        if self.push.host not in LOOPBACK and not read_secret(self._config, "token"):
            raise ConfigInvalid("ngsi_v2: a token is required when listening beyond loopback",
                                ["/token: required when /listen/host is not loopback"])

    async def run(self, emit: Emit) -> None:
        """Serve the notification endpoint until stopped (the supervisor may call it again after stop)."""
        await self.check()

        async def accept(request: PushRequest, body: bytes) -> None:
            try:
                # Parsed strictly once: the translation takes this document instead of parsing
                # again. What the strict parser refuses is checked as before (json.loads), and
                # the translation dead-letters it with the reason.
                doc = load_json(body)
                strict = True
            except TranslationError:
                doc, strict = None, False
            try:
                if not strict:
                    doc = json.loads(body)
                sub_id = str(doc["subscriptionId"])
                if not isinstance(doc["data"], list):
                    raise TypeError
            except (ValueError, KeyError, TypeError, RecursionError):
                raise InputError("not an NGSI v2 notification: expected {subscriptionId, data: [...]}") from None
            digest = hashlib.sha256(body).hexdigest()
            if strict:
                self.parsed.keep(body, doc)
            await emit(RawMessage(source=self.source, tenant=request.headers.get("Fiware-Service", self.tenant),
                                  received_at=epoch_time(time.time()),
                                  payload=body, idempotency_key=f"{sub_id}:{digest}",
                                  metadata={"path": request.path}))

        await self.push.serve(header_token(self._config, self.source), accept)

    async def stop(self) -> None:
        """Close the listener; safe to call twice or before run."""
        await self.push.stop()

    # ------------------------------------------------------------------ pure translation

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Translate one notification (or a bare v2 entity or list of entities)."""
        doc = self.parsed.load(raw.payload)
        if isinstance(doc, dict) and "data" in doc:
            items, base = doc["data"], "/data"
        elif isinstance(doc, list):
            items, base = doc, ""
        else:
            items, base = [doc], ""
        if not isinstance(items, list):
            raise TranslationError("data must be an array of entities", "/data")
        return [self._entity(item, f"{base}/{i}" if base or isinstance(doc, list) else "")
                for i, item in enumerate(items)]

    def _entity(self, item: Any, pointer: str) -> Entity:
        if not isinstance(item, dict) or "id" not in item or "type" not in item:
            raise TranslationError("an NGSI v2 entity needs id and type", pointer or "/")
        v2_type = str(item["type"])
        ld_type = self.types.get(v2_type, v2_type)
        try:
            entity_id = item["id"] if _is_ld_id(item["id"]) else urn(ld_type, item["id"])
        except ModelError as exc:
            raise TranslationError(str(exc), f"{pointer}/id") from exc
        instant = item.get("TimeInstant")
        default_time = instant.get("value") if isinstance(instant, dict) else None
        out: Entity = {"id": entity_id, "type": ld_type}
        spelled = _model_spelling(ld_type)
        for name, attr in item.items():
            if name in ("id", "type", "TimeInstant"):
                continue
            if not isinstance(attr, dict) or "value" not in attr:
                raise TranslationError("attribute must be {type, value, metadata}", pointer + token(name))
            if not name or name in ENTITY_MEMBERS:
                raise TranslationError(f"{name!r} cannot be an NGSI-LD attribute name", pointer + token(name))
            # v2 data often spells a model attribute its own way (NO2 for no2): keep the model's name,
            # unless the entity carries both spellings.
            target = spelled.get(name.lower(), name)
            out[name if target in item else target] = self._attribute(name, attr, default_time,
                                                                      pointer + token(name))
        return out

    def _attribute(self, name: str, attr: dict[str, Any], default_time: Any, pointer: str) -> dict[str, Any]:
        v2_type, value = attr.get("type"), attr["value"]
        if v2_type == "Relationship" or (name.startswith("ref") and isinstance(value, str)):
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise TranslationError("a Relationship value must be an entity id", f"{pointer}/value")
            try:
                target = _object_id(name, str(value))
            except ModelError as exc:
                raise TranslationError(str(exc), f"{pointer}/value") from exc
            result: dict[str, Any] = {"type": "Relationship", "object": target}
        elif v2_type == "geo:json":
            result = {"type": "GeoProperty", "value": value}
        elif v2_type == "geo:point":
            result = {"type": "GeoProperty", "value": _geo_point(str(value), f"{pointer}/value")}
        elif v2_type in ("DateTime", "ISO8601"):
            result = {"type": "Property", "value": self._time(value, f"{pointer}/value")}
        else:
            result = {"type": "Property", "value": value}
        metadata = attr.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise TranslationError("metadata must be an object", f"{pointer}/metadata")
        observed = next((metadata[k].get("value") for k in _TIME_METADATA if isinstance(metadata.get(k), dict)),
                        default_time)
        if observed is not None:
            result["observedAt"] = self._time(observed, f"{pointer}/metadata")
        for meta_name, meta in metadata.items():
            meta_value = meta.get("value") if isinstance(meta, dict) else meta
            if meta_name == "unitCode":
                result["unitCode"] = str(meta_value)
            elif meta_name in ATTRIBUTE_MEMBERS:  # "value", "type"... would overwrite the attribute itself
                raise TranslationError(f"metadata {meta_name!r} cannot be a sub-attribute",
                                       f"{pointer}/metadata" + token(meta_name))
            elif meta_name not in _TIME_METADATA:
                result[meta_name] = {"type": "Property", "value": meta_value}
        return result

    @staticmethod
    def _time(value: Any, pointer: str) -> str:
        try:
            return utc_time(str(value))
        except ModelError as exc:
            raise TranslationError(str(exc), pointer) from exc
