"""The behaviour every LoRaWAN network-server adapter shares: transports, routing, translation.

A concrete adapter names its manifest, config schema, parser, transports and defaults; the
transport (MQTT subscription or HTTP push receiver) turns each message into a
:class:`~gateway.model.RawMessage` whose idempotency key is the one the server provides and
whose tenant is the device's, and :meth:`to_entities` parses again and translates — purely.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import aiomqtt

from adapters.kit.lorawan.normalize import dev_eui as normalize_eui
from adapters.kit.lorawan.profile import load_profiles
from adapters.kit.lorawan.provisioning import (
    DeviceRecord,
    Registry,
    StoredDevices,
    device_record,
    device_summary,
)
from adapters.kit.lorawan.translate import translate
from adapters.kit.lorawan.uplink import Uplink, digest_key
from adapters.kit.mqtt import MqttSettings, MqttSubscriber, payload_of, topic_text
from adapters.kit.payload import load_json as strict_json
from adapters.kit.push import Authenticate, PushReceiver, PushRequest, header_token
from gateway.contract import Emit, Manifest, adapter_logger
from gateway.errors import ConfigInvalid, InputError, TranslationError
from gateway.model import Entity, RawMessage, epoch_time

PARSE_CACHE = 2048
"""Parsed messages kept between the transport and the translation (bounded memory)."""

RADIO_SEEN = 10000
"""Devices whose last radio metadata is kept in memory (bounded: oldest forgotten first)."""


def load_json(body: bytes) -> Mapping[str, Any]:
    """The JSON object in a message body; TranslationError when it is not one."""
    doc = strict_json(body)
    if not isinstance(doc, dict):
        raise TranslationError(f"payload is a JSON {type(doc).__name__}, expected an object")
    return doc


def _eui(value: Any) -> str | None:
    try:
        return normalize_eui(value)
    except TranslationError:
        return None


class NetworkServerAdapter:
    """Base class of the ChirpStack, The Things Stack, ThingPark and Live Objects adapters."""

    manifest: ClassVar[Manifest]
    config_schema: ClassVar[Mapping[str, Any]]
    @staticmethod
    def parser(doc: Mapping[str, Any], event: str | None, body: bytes) -> Uplink:
        """This server's parser (subclasses bind one from ``adapters.kit.lorawan.servers``)."""
        raise NotImplementedError
    transports: ClassVar[tuple[str, ...]] = ("mqtt", "http")
    default_topics: ClassVar[tuple[str, ...]] = ()
    default_http_port: ClassVar[int] = 8090
    default_http_path: ClassVar[str] = "/lorawan"

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        http: aiohttp.ClientSession | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        domain = self.manifest.domain
        self.config = config
        self.source = str(config.get("name", domain))
        self.tenant = str(config.get("tenant", ""))
        self.log = log or adapter_logger(domain)
        self.profiles = load_profiles(config.get("profiles_dirs", ()))
        state_dir = config.get("state_dir")
        self.stored = StoredDevices(state_dir) if state_dir else None
        self.registry = Registry.from_config(config, self.profiles,
                                             self.stored.records(self.profiles) if self.stored else ())
        self._radio: dict[str, tuple[DeviceRecord, dict[str, Any]]] = {}
        self.transport = str(config.get("transport", self.transports[0]))
        if self.transport not in self.transports:
            raise ConfigInvalid(f"{domain}: transport {self.transport!r} is not supported",
                                [f"/transport: one of {', '.join(self.transports)}"])
        self._mqtt: MqttSubscriber | None = None
        self._push: PushReceiver | None = None
        self._parsed: dict[tuple[str | None, bytes], tuple[Uplink, DeviceRecord | None]] = {}
        if self.transport == "mqtt":
            if not isinstance(config.get("mqtt"), Mapping):
                raise ConfigInvalid(f"{domain}: transport mqtt needs an mqtt section", ["/mqtt: required"])
            settings = MqttSettings.from_config(config["mqtt"], client_id=f"jonction-{self.source}",
                                                default_topics=self.default_topics)
            self._mqtt = MqttSubscriber(settings, log=self.log, name=self.source)
        else:
            self._push = PushReceiver(config.get("http") or {}, default_port=self.default_http_port,
                                      default_path=self.default_http_path, log=self.log, name=self.source)

    # ------------------------------------------------------------------ transport

    @property
    def mqtt(self) -> MqttSubscriber | None:
        """The MQTT subscriber (None with the HTTP transport)."""
        return self._mqtt

    @property
    def push(self) -> PushReceiver | None:
        """The HTTP receiver (None with the MQTT transport)."""
        return self._push

    def authenticator(self) -> Authenticate | None:
        """How push requests are authenticated (default: a shared token in a header)."""
        return header_token(self.config.get("http") or {}, self.source)

    async def check(self) -> None:
        """MQTT: connect once (AuthFailed / Unavailable); HTTP: refuse an unauthenticated public listener."""
        if self._mqtt is not None:
            await self._mqtt.check()
        elif self._push is not None:
            self._push.check_exposure(self.authenticator() is not None)

    async def run(self, emit: Emit) -> None:
        """Subscribe or serve until :meth:`stop`."""
        if self._mqtt is not None:
            max_bytes = self._mqtt.settings.max_message_bytes

            async def on_message(message: aiomqtt.Message) -> None:
                topic = topic_text(message)
                body = payload_of(message)
                await emit(self.raw_message(body, event=self.event_from_topic(topic), metadata={"topic": topic},
                                            max_bytes=max_bytes))

            await self._mqtt.run(on_message)
        elif self._push is not None:
            authenticate = self.authenticator()
            self._push.check_exposure(authenticate is not None)

            async def accept(request: PushRequest, body: bytes) -> None:
                try:
                    doc = load_json(body)
                except TranslationError as exc:
                    raise InputError(exc.reason) from exc
                await emit(self.raw_message(body, event=self.event_from_request(request),
                                            metadata={"path": request.path}, max_bytes=self._push_limit(),
                                            doc=doc))

            await self._push.serve(authenticate, accept)

    def _push_limit(self) -> int:
        return self._push.max_body if self._push is not None else 1 << 20

    async def stop(self) -> None:
        """Stop the transport; idempotent and safe before run."""
        if self._mqtt is not None:
            await self._mqtt.stop()
        if self._push is not None:
            await self._push.stop()

    def event_from_topic(self, topic: str) -> str | None:
        """The event kind an MQTT topic names (ChirpStack: the last segment after ``/event/``)."""
        parts = topic.split("/")
        if "event" in parts[:-1]:
            return parts[-1]
        return None

    def event_from_request(self, request: PushRequest) -> str | None:
        """The event kind of an HTTP push (ChirpStack: ``?event=up``)."""
        return request.query.get("event") or None

    def raw_message(self, body: bytes, *, event: str | None, metadata: Mapping[str, str],
                    max_bytes: int, received_at: str | None = None,
                    doc: Mapping[str, Any] | None = None) -> RawMessage:
        """A RawMessage with the server's idempotency key and the device's tenant.

        A body that cannot be parsed here is still emitted (with a digest key) so that the
        translation step dead-letters it with its reason; an oversize one is emitted without its
        bytes, only with the reason. ``doc`` is the body already parsed (``load_json(body)``).
        """
        meta = dict(metadata)
        if event:
            meta["event"] = event
        now = received_at or epoch_time(time.time())
        if len(body) > max_bytes:
            meta["oversize"] = str(len(body))
            return RawMessage(source=self.source, tenant=self.tenant, received_at=now, payload=b"",
                              idempotency_key=digest_key("oversize", body), metadata=meta)
        key, tenant = digest_key("unparsed", body), self.tenant
        try:
            uplink, record = self._resolved(body, event, doc)
        except TranslationError:
            pass
        else:
            key = uplink.key
            if record is not None:
                self._note_radio(uplink, record, now)
                if record.tenant:
                    tenant = record.tenant
        return RawMessage(source=self.source, tenant=tenant, received_at=now, payload=body,
                          idempotency_key=key, metadata=meta)

    # ------------------------------------------------------------------ provisioning: the DeviceProvisioning capability

    def _note_radio(self, uplink: Uplink, record: DeviceRecord, received_at: str) -> None:
        """Remember the last uplink's radio metadata of a device (memory only: it is lost on restart)."""
        if uplink.kind != "up":
            return
        radio = uplink.radio
        seen = {"time": uplink.time or received_at, "fCnt": uplink.f_cnt, "fPort": uplink.f_port,
                "rssi": radio.rssi if radio else None, "snr": radio.snr if radio else None,
                "gateways": list(radio.gateways) if radio else [],
                "spreadingFactor": radio.spreading_factor if radio else None,
                "frequency": radio.frequency if radio else None}
        self._radio.pop(uplink.dev_eui, None)
        if len(self._radio) >= RADIO_SEEN:
            del self._radio[next(iter(self._radio))]
        self._radio[uplink.dev_eui] = (record, seen)

    def devices(self) -> list[dict[str, Any]]:
        """Declared devices (config, CSV, added at run time) and auto-provisioned ones seen, by DevEUI."""
        out: dict[str, dict[str, Any]] = {}
        for eui, record in self.registry.devices.items():
            out[eui] = device_summary(record)
        for eui, (record, seen) in self._radio.items():
            entry = out.setdefault(eui, device_summary(record))
            entry["lastUplink"] = seen
        stored = {_eui(item.get("dev_eui")) for item in self.stored.items()} if self.stored else set()
        for entry in out.values():
            entry.setdefault("lastUplink", None)
            entry["addedAtRunTime"] = entry["devEui"] in stored
        return [out[eui] for eui in sorted(out)]

    def device_profiles(self) -> list[dict[str, Any]]:
        """The loaded device profiles: id, vendor, model, entity type, parameters and requirements."""
        return [{"id": p.id, "vendor": p.vendor, "model": p.model, "entityType": p.entity_type,
                 "requires": list(p.requires), "controlledProperty": list(p.controlled_property),
                 "parameters": {name: dict(spec) for name, spec in p.parameters.items()},
                 "attributes": sorted(p.rules)}
                for p in sorted(self.profiles.values(), key=lambda p: p.id)]

    def add_device(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """Validate one device like the config's, keep it in ``<state_dir>/devices.json``, use it now."""
        record = device_record(item, self.profiles)
        if record.dev_eui in self.registry.devices:
            raise ConfigInvalid("the device is invalid", [f"/dev_eui: DevEUI {record.dev_eui} is already provisioned"])
        if self.stored is None:
            raise ConfigInvalid("this source has no state folder: a device added now would be lost on restart",
                                ["/: declare the device in the source's config (devices or devices_csv)"])
        self.stored.append({**item, "dev_eui": record.dev_eui})
        self.registry.add(record)
        self._parsed.clear()  # a cached resolve may say "unknown device" for this DevEUI
        return device_summary(record)

    # ------------------------------------------------------------------ pure translation

    def parse(self, body: bytes, event: str | None) -> Uplink:
        """Parse one message body with this server's parser."""
        return self._resolved(body, event)[0]

    def _resolved(self, body: bytes, event: str | None,
                  doc: Mapping[str, Any] | None = None) -> tuple[Uplink, DeviceRecord | None]:
        """The parsed uplink and its device record (``Registry.resolve``), from a small cache.

        The transport parses each message once to learn its key and tenant, and the translation
        needs the same uplink and device again: a small cache of recent results (an Uplink and
        its record are immutable and depend only on the bytes and the event) saves the second
        parse and the second resolve without changing any result.
        """
        cache_key = (event, body)
        cached = self._parsed.get(cache_key)
        if cached is not None:
            return cached
        uplink = type(self).parser(doc if doc is not None else load_json(body), event, body)
        result = (uplink, self.registry.resolve(uplink))
        if len(self._parsed) >= PARSE_CACHE:
            self._parsed.clear()
        self._parsed[cache_key] = result
        return result

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Translate one network-server message: pure and deterministic."""
        if raw.metadata.get("oversize"):
            raise TranslationError(f"message of {raw.metadata['oversize']} bytes exceeds the configured limit")
        uplink, record = self._resolved(raw.payload, raw.metadata.get("event") or None)
        return translate(uplink, self.registry, received_at=raw.received_at, record=record)
