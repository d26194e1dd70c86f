"""ChirpStack v4 and v3 integration events (MQTT and HTTP integrations, JSON marshaler).

v4 (``chirpstack``): hex DevEUIs under ``deviceInfo``, ``deduplicationId`` per uplink, decoded
payload in ``object``, bandwidth in Hz. v3 (``chirpstack-application-server``): base64 DevEUIs
and gateway ids (protobuf bytes), decoded payload as a JSON *string* ``objectJSON``, bandwidth
in kHz, no deduplication id. Both omit fields whose value is zero (proto3 JSON).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from adapters.kit.lorawan.normalize import dev_eui, flag, integer, number, payload_bytes, timestamp
from adapters.kit.lorawan.servers.common import mapping, names, radio, sequence, string_tags, text
from adapters.kit.lorawan.uplink import Uplink, digest_key
from adapters.kit.payload import load_json
from gateway.errors import TranslationError

V4_EVENTS = ("up", "join", "status", "ack", "txack", "log", "location", "integration")
"""Event kinds of the v4 integrations (MQTT topic suffix / HTTP ``?event=``)."""
V3_EVENTS = ("up", "join", "status", "ack", "txack", "error", "location", "integration")
"""Event kinds of the v3 integrations; ``error`` is what v4 calls ``log``."""


def _infer_v4(doc: Mapping[str, Any]) -> str:
    if any(k in doc for k in ("data", "fCnt", "fPort", "rxInfo", "object")) and "downlinkId" not in doc:
        return "up"
    if "acknowledged" in doc:
        return "ack"
    if "downlinkId" in doc or "gatewayId" in doc:
        return "txack"
    if "level" in doc and "code" in doc:
        return "log"
    if "batteryLevel" in doc or "margin" in doc or "externalPowerSource" in doc:
        return "status"
    if "location" in doc:
        return "location"
    if "integrationName" in doc:
        return "integration"
    if "devAddr" in doc:
        return "join"
    return "other"


def _decoded_object(value: Any, pointer: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TranslationError("decoded object must be a JSON object", pointer)
    return value


def _lenient_payload(doc: Mapping[str, Any], key: str, has_object: bool) -> tuple[bytes | None, dict[str, str]]:
    """The payload bytes; a broken payload only matters when no decoded object came with it."""
    if key not in doc:
        return None, {}
    try:
        return payload_bytes(doc.get(key), f"/{key}", encoding="base64"), {}
    except TranslationError as exc:
        if has_object:
            return None, {"payloadError": str(exc)}
        raise


def parse_v4(doc: Mapping[str, Any], event: str | None, body: bytes) -> Uplink:
    """Parse one ChirpStack v4 integration event."""
    kind = event or _infer_v4(doc)
    if kind not in V4_EVENTS:
        raise TranslationError(f"unknown ChirpStack v4 event {kind!r} (expected one of {', '.join(V4_EVENTS)})")
    info = mapping(doc.get("deviceInfo"), "/deviceInfo")
    eui = dev_eui(info.get("devEui"), "/deviceInfo/devEui")
    time = timestamp(doc.get("time"), "/time")
    dedup = doc.get("deduplicationId")
    detail: dict[str, Any] = {}
    payload: bytes | None = None
    decoded: Mapping[str, Any] | None = None
    rad = None
    f_cnt = f_port = None
    battery = None
    location = None
    if kind == "up":
        decoded = _decoded_object(doc.get("object"), "/object")
        payload, detail = _lenient_payload(doc, "data", decoded is not None)
        f_cnt = integer(doc.get("fCnt"), "/fCnt", default=0)
        f_port = integer(doc.get("fPort"), "/fPort", default=0)
        receptions = []
        for i, rx in enumerate(sequence(doc.get("rxInfo"), "/rxInfo")):
            rx = mapping(rx, f"/rxInfo/{i}")
            rssi = number(rx.get("rssi"), f"/rxInfo/{i}/rssi")
            # proto3 JSON omits a zero SNR; a reception that is present has an SNR.
            snr = number(rx.get("snr"), f"/rxInfo/{i}/snr")
            receptions.append((str(rx.get("gatewayId", "")), rssi, 0.0 if snr is None else snr))
        tx = mapping(doc.get("txInfo"), "/txInfo")
        lora = mapping(mapping(tx.get("modulation"), "/txInfo/modulation").get("lora"), "/txInfo/modulation/lora")
        rad = radio(receptions, spreading_factor=lora.get("spreadingFactor"), frequency=tx.get("frequency"),
                    data_rate=doc.get("dr", 0), bandwidth=lora.get("bandwidth"), pointer="/txInfo")
        key = f"up:{dedup}" if dedup else digest_key("up", body)
    elif kind in ("join", "status", "location"):
        key = f"{kind}:{dedup}" if dedup else digest_key(kind, body)
        if kind == "status":
            if not flag(doc.get("batteryLevelUnavailable")) and not flag(doc.get("externalPowerSource")):
                level = number(doc.get("batteryLevel"), "/batteryLevel")
                battery = None if level is None else round(float(level) / 100, 4)
            detail = {"margin": integer(doc.get("margin"), "/margin", default=0),
                      "externalPowerSource": flag(doc.get("externalPowerSource"))}
        elif kind == "location":
            loc = mapping(doc.get("location"), "/location")
            lat, lon = number(loc.get("latitude"), "/location/latitude"), number(loc.get("longitude"),
                                                                                   "/location/longitude")
            location = (float(lon), float(lat)) if lat is not None and lon is not None else None
    elif kind in ("ack", "txack"):
        ref = doc.get("queueItemId") or doc.get("downlinkId")
        key = f"{kind}:{ref}" if ref else digest_key(kind, body)
        f_cnt = integer(doc.get("fCntDown"), "/fCntDown", default=0)
        if kind == "ack":
            detail = {"acknowledged": flag(doc.get("acknowledged"))}
    else:
        context = mapping(doc.get("context"), "/context") if kind == "log" else {}
        ref = context.get("deduplication_id")
        key = f"log:{ref}:{doc.get('code')}" if ref else digest_key(kind, body)
        if kind == "log":
            detail = {"level": str(doc.get("level", "INFO")), "code": str(doc.get("code", "")),
                      "description": str(doc.get("description", ""))}
    return Uplink(
        kind="up" if kind == "up" else kind,
        dev_eui=eui,
        key=key,
        time=time,
        device_name=text(info.get("deviceName"), "/deviceInfo/deviceName"),
        applications=names(info.get("applicationId"), info.get("applicationName")),
        device_profile=text(info.get("deviceProfileName"), "/deviceInfo/deviceProfileName"),
        tags=string_tags(info.get("tags")),
        f_port=f_port,
        f_cnt=f_cnt,
        payload=payload,
        decoded=decoded,
        radio=rad,
        battery_level=battery,
        dev_addr=doc.get("devAddr") if isinstance(doc.get("devAddr"), str) else None,
        location=location,
        decoded_at="/object",
        payload_at="/data",
        detail=detail,
    )


def _infer_v3(doc: Mapping[str, Any]) -> str:
    if "objectJSON" in doc or "data" in doc or "fPort" in doc or ("rxInfo" in doc and "devAddr" not in doc
                                                                  and "acknowledged" not in doc):
        return "up"
    if "acknowledged" in doc:
        return "ack"
    if "error" in doc and "type" in doc:
        return "error"
    if "batteryLevel" in doc or "margin" in doc or "batteryLevelUnavailable" in doc:
        return "status"
    if "gatewayID" in doc:
        return "txack"
    if "devAddr" in doc:
        return "join"
    if "location" in doc:
        return "location"
    return "other"


def _b64_hex(value: Any) -> str:
    """Protobuf bytes (base64) as lower hex; a value already in hex passes through."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value.lower()


def parse_v3(doc: Mapping[str, Any], event: str | None, body: bytes) -> Uplink:
    """Parse one ChirpStack v3 (application server) integration event."""
    kind = event or _infer_v3(doc)
    if kind == "rx":  # topic suffix before v3.11
        kind = "up"
    if kind not in V3_EVENTS:
        raise TranslationError(f"unknown ChirpStack v3 event {kind!r} (expected one of {', '.join(V3_EVENTS)})")
    eui = dev_eui(doc.get("devEUI"), "/devEUI")
    receptions = []
    uplink_ids = []
    times = []
    for i, rx in enumerate(sequence(doc.get("rxInfo"), "/rxInfo")):
        rx = mapping(rx, f"/rxInfo/{i}")
        snr = number(rx.get("loRaSNR"), f"/rxInfo/{i}/loRaSNR")
        receptions.append((_b64_hex(rx.get("gatewayID")), number(rx.get("rssi"), f"/rxInfo/{i}/rssi"),
                           0.0 if snr is None else snr))
        if rx.get("uplinkID"):
            uplink_ids.append(_b64_hex(rx.get("uplinkID")))
        t = timestamp(rx.get("time"), f"/rxInfo/{i}/time")
        if t:
            times.append(t)
    tx = mapping(doc.get("txInfo"), "/txInfo")
    lora = mapping(tx.get("loRaModulationInfo"), "/txInfo/loRaModulationInfo")
    bandwidth = number(lora.get("bandwidth"), "/txInfo/loRaModulationInfo/bandwidth")
    rad = radio(receptions, spreading_factor=lora.get("spreadingFactor"), frequency=tx.get("frequency"),
                data_rate=doc.get("dr", 0), bandwidth=None if bandwidth is None else bandwidth * 1000,
                pointer="/txInfo") if receptions or tx else None
    time = min(times) if times else timestamp(doc.get("publishedAt"), "/publishedAt")
    detail: dict[str, Any] = {}
    payload = None
    decoded = None
    f_cnt = integer(doc.get("fCnt"), "/fCnt", default=0)
    f_port = None
    battery = None
    dev_addr = _b64_hex(doc.get("devAddr")) or None
    if kind == "up":
        if "objectJSON" in doc and doc["objectJSON"] not in (None, ""):
            decoded = load_json(str(doc["objectJSON"]), base="/objectJSON", what="objectJSON")
            decoded = _decoded_object(decoded, "/objectJSON")
        elif isinstance(doc.get("object"), Mapping):  # some v3 deployments used the object form
            decoded = doc["object"]
        payload, detail = _lenient_payload(doc, "data", decoded is not None)
        f_port = integer(doc.get("fPort"), "/fPort", default=0)
        anchor = min(uplink_ids) if uplink_ids else (time or "")
        key = f"up:{eui}:{f_cnt}:{anchor}" if anchor else digest_key("up", body)
    elif kind == "join":
        anchor = min(uplink_ids) if uplink_ids else ""
        key = f"join:{eui}:{dev_addr}:{anchor}" if anchor else digest_key("join", body)
    else:
        key = digest_key(kind, body)
        if kind == "status":
            if not flag(doc.get("batteryLevelUnavailable")) and not flag(doc.get("externalPowerSource")):
                level = number(doc.get("batteryLevel"), "/batteryLevel")
                battery = None if level is None else round(float(level) / 100, 4)
            detail = {"margin": integer(doc.get("margin"), "/margin", default=0),
                      "externalPowerSource": flag(doc.get("externalPowerSource"))}
        elif kind == "ack":
            detail = {"acknowledged": flag(doc.get("acknowledged"))}
        elif kind == "error":
            detail = {"level": "ERROR", "code": str(doc.get("type", "")), "description": str(doc.get("error", ""))}
    return Uplink(
        kind="log" if kind == "error" else kind,
        dev_eui=eui,
        key=key,
        time=time,
        device_name=text(doc.get("deviceName"), "/deviceName"),
        applications=names(doc.get("applicationID"), doc.get("applicationName")),
        device_profile=text(doc.get("deviceProfileName"), "/deviceProfileName"),
        tags=string_tags(doc.get("tags")),
        f_port=f_port,
        f_cnt=f_cnt,
        payload=payload,
        decoded=decoded,
        radio=rad,
        battery_level=battery,
        dev_addr=dev_addr,
        decoded_at="/objectJSON" if "objectJSON" in doc else "/object",
        payload_at="/data",
        detail=detail,
    )
