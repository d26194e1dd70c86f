"""The Things Stack v3 application-layer messages (MQTT ``v3/…/up`` topics and webhooks).

One JSON object per message; the message kind is the member present (``uplink_message``,
``join_accept``, ``downlink_ack``…). Zero, empty and false fields are omitted; 64-bit numbers
such as ``frequency`` are strings; the application server's ``as:up:<ULID>`` correlation id
identifies an uplink across redeliveries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.kit.lorawan.normalize import dev_eui, integer, number, payload_bytes, timestamp
from adapters.kit.lorawan.servers.common import mapping, names, radio, sequence, string_tags, text
from adapters.kit.lorawan.uplink import Uplink, digest_key
from gateway.errors import TranslationError

KINDS = {
    "uplink_message": "up",
    "join_accept": "join",
    "downlink_ack": "ack",
    "downlink_nack": "ack",
    "downlink_sent": "txack",
    "downlink_failed": "log",
    "downlink_queued": "downlink",
    "downlink_queue_invalidated": "log",
    "location_solved": "location",
    "service_data": "other",
    "uplink_normalized": "other",
}
"""Message member → event kind."""

EVENTS = {"up": "uplink_message", "join": "join_accept", "down/ack": "downlink_ack", "down/nack": "downlink_nack",
          "down/sent": "downlink_sent", "down/failed": "downlink_failed", "down/queued": "downlink_queued",
          "location/solved": "location_solved", "service/data": "service_data"}
"""MQTT topic suffix → message member (``v3/{app}@{tenant}/devices/{dev}/<suffix>``)."""


def _correlation(doc: Mapping[str, Any], prefix: str) -> str | None:
    for cid in sequence(doc.get("correlation_ids"), "/correlation_ids"):
        if isinstance(cid, str) and cid.startswith(prefix):
            return cid
    return None


def parse(doc: Mapping[str, Any], event: str | None, body: bytes) -> Uplink:
    """Parse one The Things Stack v3 message (uplink, join accept, downlink events, location)."""
    member = next((m for m in KINDS if m in doc), None)
    if member is None:
        hint = f" (topic event {event!r})" if event else ""
        raise TranslationError(f"not a The Things Stack message{hint}: none of {', '.join(KINDS)} present")
    kind = KINDS[member]
    ids = mapping(doc.get("end_device_ids"), "/end_device_ids")
    raw_eui = ids.get("dev_eui") or ids.get("device_id")
    eui = dev_eui(raw_eui, "/end_device_ids/dev_eui")
    app = mapping(ids.get("application_ids"), "/end_device_ids/application_ids").get("application_id")
    msg = mapping(doc.get(member), f"/{member}")
    top_time = timestamp(doc.get("received_at"), "/received_at")
    detail: dict[str, Any] = {}
    payload = decoded = rad = location = None
    f_cnt = f_port = None
    profile: str | None = None
    tags: dict[str, str] = {}
    if kind == "up":
        base = f"/{member}"
        decoded_value = msg.get("decoded_payload")
        if decoded_value is not None and not isinstance(decoded_value, Mapping):
            raise TranslationError("decoded_payload must be a JSON object", f"{base}/decoded_payload")
        decoded = decoded_value
        if "frm_payload" in msg:
            payload = payload_bytes(msg.get("frm_payload"), f"{base}/frm_payload", encoding="base64")
        f_cnt = integer(msg.get("f_cnt"), f"{base}/f_cnt", default=0)
        f_port = integer(msg.get("f_port"), f"{base}/f_port", default=0)
        receptions = []
        for i, rx in enumerate(sequence(msg.get("rx_metadata"), f"{base}/rx_metadata")):
            rx = mapping(rx, f"{base}/rx_metadata/{i}")
            gw = mapping(rx.get("gateway_ids"), f"{base}/rx_metadata/{i}/gateway_ids")
            snr = number(rx.get("snr"), f"{base}/rx_metadata/{i}/snr")
            rssi = number(rx.get("rssi", rx.get("channel_rssi")), f"{base}/rx_metadata/{i}/rssi")
            receptions.append((str(gw.get("gateway_id", gw.get("eui", ""))), rssi, 0.0 if snr is None else snr))
        settings = mapping(msg.get("settings"), f"{base}/settings")
        lora = mapping(mapping(settings.get("data_rate"), f"{base}/settings/data_rate").get("lora"),
                       f"{base}/settings/data_rate/lora")
        rad = radio(receptions, spreading_factor=lora.get("spreading_factor"), frequency=settings.get("frequency"),
                    data_rate=settings.get("data_rate_index"), bandwidth=lora.get("bandwidth"),
                    pointer=f"{base}/settings")
        user = mapping(mapping(msg.get("locations"), f"{base}/locations").get("user"), f"{base}/locations/user")
        lat, lon = number(user.get("latitude"), f"{base}/locations/user/latitude"), number(
            user.get("longitude"), f"{base}/locations/user/longitude")
        if lat is not None and lon is not None:
            location = (float(lon), float(lat))
        version = mapping(msg.get("version_ids"), f"{base}/version_ids")
        if version.get("model_id"):
            profile = f"{version.get('brand_id', '')}/{version['model_id']}"
        tags = string_tags(msg.get("attributes"))
        time = timestamp(msg.get("received_at"), f"{base}/received_at") or timestamp(
            settings.get("time"), f"{base}/settings/time") or top_time
    else:
        time = timestamp(msg.get("received_at"), f"/{member}/received_at") if kind == "join" else None
        time = time or top_time
        if kind == "ack":
            detail = {"acknowledged": member == "downlink_ack"}
            f_cnt = integer(msg.get("f_cnt"), f"/{member}/f_cnt", default=0)
        elif kind == "log":
            error = mapping(msg.get("error"), f"/{member}/error") if member == "downlink_failed" else {}
            detail = {"level": "ERROR", "code": member, "description": str(error.get("message_format", ""))}
    anchor = _correlation(doc, "as:up:") if kind in ("up", "join") else _correlation(doc, "as:downlink:")
    if anchor:
        key = f"{kind}:{anchor}" if kind != "ack" else f"{member}:{anchor}"
    elif kind == "up":
        key = f"up:{eui}:{f_cnt}:{time}"
    else:
        key = digest_key(kind, body)
    return Uplink(
        kind=kind,
        dev_eui=eui,
        key=key,
        time=time,
        device_name=text(ids.get("device_id"), "/end_device_ids/device_id"),
        applications=names(app),
        device_profile=profile,
        tags=tags,
        f_port=f_port,
        f_cnt=f_cnt,
        payload=payload,
        decoded=decoded,
        radio=rad,
        dev_addr=text(ids.get("dev_addr"), "/end_device_ids/dev_addr"),
        location=location,
        decoded_at=f"/{member}/decoded_payload",
        payload_at=f"/{member}/frm_payload",
        detail=detail,
    )
