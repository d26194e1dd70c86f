"""Actility ThingPark (Wireless and X IoT Flow) messages: ``DevEUI_uplink`` and friends.

Every number may be a string (``"FCntUp": "1174"``, ``"LrrRSSI": "-80.000000"``), ``Time``
carries the local offset, ``Frequency`` is in MHz, ``payload_hex`` is hex, a ThingPark X driver
puts its decoded object in ``payload``, and ``Late: 1`` marks a copy forwarded after the first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.kit.lorawan.normalize import dev_eui, flag, integer, number, payload_bytes, timestamp
from adapters.kit.lorawan.servers.common import mapping, names, radio, sequence
from adapters.kit.lorawan.uplink import Uplink, digest_key
from adapters.kit.payload import finite
from gateway.errors import TranslationError

KINDS = {
    "DevEUI_uplink": "up",
    "DevEUI_downlink_Sent": "txack",
    "DevEUI_location": "location",
    "DevEUI_notification": "status",
    "DevEUI_join": "join",
    "DevEUI_downlink_Rejected": "log",
}
"""Root member → event kind."""


def root(doc: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The message's root member name and body (``{"DevEUI_uplink": {...}}``)."""
    member = next((m for m in doc if m.startswith("DevEUI_")), None)
    if member is None:
        raise TranslationError("not a ThingPark message: no DevEUI_* root member")
    return member, mapping(doc[member], f"/{member}")


def parse(doc: Mapping[str, Any], event: str | None, body: bytes) -> Uplink:
    """Parse one ThingPark message."""
    member, msg = root(doc)
    kind = KINDS.get(member, "other")
    base = f"/{member}"
    eui = dev_eui(msg.get("DevEUI"), f"{base}/DevEUI")
    time = timestamp(msg.get("Time"), f"{base}/Time")
    customer = mapping(msg.get("CustomerData"), f"{base}/CustomerData")
    driver = mapping(msg.get("DriverCfg"), f"{base}/DriverCfg")
    alr = mapping(customer.get("alr"), f"{base}/CustomerData/alr")
    profile = driver.get("id") or alr.get("pro")
    payload = decoded = rad = None
    f_cnt = f_port = None
    detail: dict[str, Any] = {}
    location = None
    if kind == "up":
        f_cnt = integer(msg.get("FCntUp"), f"{base}/FCntUp", default=0)
        f_port = integer(msg.get("FPort"), f"{base}/FPort", default=0)
        payload = payload_bytes(msg.get("payload_hex"), f"{base}/payload_hex", encoding="hex")
        if isinstance(msg.get("payload"), Mapping):
            decoded = msg["payload"]
        receptions = []
        lrrs = sequence(mapping(msg.get("Lrrs"), f"{base}/Lrrs").get("Lrr"), f"{base}/Lrrs/Lrr")
        for i, lrr in enumerate(lrrs):
            lrr = mapping(lrr, f"{base}/Lrrs/Lrr/{i}")
            receptions.append((str(lrr.get("Lrrid", "")), number(lrr.get("LrrRSSI"), f"{base}/Lrrs/Lrr/{i}/LrrRSSI"),
                               number(lrr.get("LrrSNR"), f"{base}/Lrrs/Lrr/{i}/LrrSNR")))
        if not receptions and msg.get("Lrrid") is not None:
            receptions.append((str(msg["Lrrid"]), number(msg.get("LrrRSSI"), f"{base}/LrrRSSI"),
                               number(msg.get("LrrSNR"), f"{base}/LrrSNR")))
        mhz = number(msg.get("Frequency"), f"{base}/Frequency")
        rad = radio(receptions, spreading_factor=msg.get("SpFact"),
                    frequency=None if mhz is None else round(finite(float(mhz) * 1_000_000, f"{base}/Frequency")),
                    pointer=base)
        mic = msg.get("mic_hex")
        # The MIC covers the whole frame: equal for every copy of one frame, different across frames.
        key = f"up:{eui}:{f_cnt}:{mic}" if mic else digest_key("up", body)
    else:
        key = digest_key(kind, body)
        if kind == "location":
            lat, lon = number(msg.get("DevLAT"), f"{base}/DevLAT"), number(msg.get("DevLON"), f"{base}/DevLON")
            if lat is not None and lon is not None:
                location = (float(lon), float(lat))
        elif kind == "txack":
            f_cnt = integer(msg.get("FCntDn"), f"{base}/FCntDn", default=0)
    return Uplink(
        kind=kind,
        dev_eui=eui,
        key=key,
        time=time,
        device_name=customer.get("name") if isinstance(customer.get("name"), str) else None,
        applications=names(msg.get("CustomerID")),
        device_profile=str(profile) if profile else None,
        f_port=f_port,
        f_cnt=f_cnt,
        payload=payload,
        decoded=decoded,
        radio=rad,
        dev_addr=msg.get("DevAddr") if isinstance(msg.get("DevAddr"), str) else None,
        late=flag(msg.get("Late")),
        location=location,
        decoded_at=f"{base}/payload",
        payload_at=f"{base}/payload_hex",
        detail=detail,
    )
