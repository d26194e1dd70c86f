"""Orange Live Objects LoRa data messages (MQTT ``fifo/<name>`` or router topics).

The DevEUI is in ``metadata.network.lora.devEUI`` or in the stream id
(``urn:lo:nsid:lora:<DevEUI>``); ``value.payload`` is hex and a Live Objects decoder merges its
decoded fields into ``value``; ``timestamp`` is the network time, ``created`` the ingestion time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.kit.lorawan.normalize import dev_eui, integer, number, payload_bytes, timestamp
from adapters.kit.lorawan.servers.common import mapping, names, radio
from adapters.kit.lorawan.uplink import Uplink, digest_key
from gateway.errors import TranslationError


def parse(doc: Mapping[str, Any], event: str | None, body: bytes) -> Uplink:
    """Parse one Live Objects data message from the LoRa connector."""
    meta = mapping(doc.get("metadata"), "/metadata")
    lora = mapping(mapping(meta.get("network"), "/metadata/network").get("lora"), "/metadata/network/lora")
    if meta.get("connector") not in (None, "lora") and not lora:
        raise TranslationError(f"not a LoRa message (connector {meta.get('connector')!r})", "/metadata/connector")
    if lora.get("devEUI"):
        eui = dev_eui(lora["devEUI"], "/metadata/network/lora/devEUI")
    elif doc.get("streamId"):
        eui = dev_eui(doc["streamId"], "/streamId")
    else:
        eui = dev_eui(meta.get("source"), "/metadata/source")
    value = mapping(doc.get("value"), "/value")
    payload = payload_bytes(value.get("payload"), "/value/payload", encoding="hex") if "payload" in value else None
    rest = {k: v for k, v in value.items() if k != "payload"}
    decoded = rest or None
    time = timestamp(doc.get("timestamp"), "/timestamp") or timestamp(doc.get("created"), "/created")
    f_cnt = integer(lora.get("fcnt"), "/metadata/network/lora/fcnt")
    rssi = number(lora.get("rssi"), "/metadata/network/lora/rssi")
    snr = number(lora.get("snr"), "/metadata/network/lora/snr")
    rad = radio([("", rssi, snr)] if rssi is not None or snr is not None else [],
                spreading_factor=lora.get("sf"), pointer="/metadata/network/lora")
    count = integer(lora.get("gatewayCnt"), "/metadata/network/lora/gatewayCnt")
    location = None
    loc = mapping(doc.get("location"), "/location")
    lat, lon = number(loc.get("lat"), "/location/lat"), number(loc.get("lon"), "/location/lon")
    if lat is not None and lon is not None:
        location = (float(lon), float(lat))
    if doc.get("id"):
        key = f"up:{doc['id']}"
    elif time:
        key = f"up:{eui}:{f_cnt if f_cnt is not None else ''}:{time}"
    else:
        key = digest_key("up", body)
    group = mapping(meta.get("group"), "/metadata/group")
    return Uplink(
        kind="up",
        dev_eui=eui,
        key=key,
        time=time,
        applications=names(group.get("path"), group.get("id")),
        device_profile=str(doc["model"]) if doc.get("model") else None,
        tags={str(t): "" for t in doc.get("tags", []) if isinstance(t, str)} if isinstance(doc.get("tags"),
                                                                                            list) else {},
        f_port=integer(lora.get("port"), "/metadata/network/lora/port", default=0),
        f_cnt=f_cnt,
        payload=payload,
        decoded=decoded,
        radio=rad,
        location=location,
        decoded_at="/value",
        payload_at="/value/payload",
        detail={"gatewayCount": count} if count is not None else {},
    )
