"""From a parsed network-server event to NGSI-LD: the measured asset and its ``Device``.

An uplink from a provisioned device becomes (1) the entity its profile names (WasteContainer,
IndoorEnvironmentObserved...) with the measured attributes, their units and ``observedAt``, a
``refDevice`` to (2) the ``Device`` entity ``urn:ngsi-ld:Device:<deveui>`` that carries the radio
metadata (RSSI, SNR, gateways, frame counter, spreading factor) and the battery. Events without
a measurement (join, status, log, location) update the Device of a known device only; acks and
other events translate to nothing. Pure: times come from the message or from ``received_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from adapters.kit.lorawan.decoders import DecodeError, decode
from adapters.kit.lorawan.profile import Measured
from adapters.kit.lorawan.provisioning import DeviceRecord, Registry
from adapters.kit.lorawan.uplink import Uplink
from gateway.errors import TranslationError
from gateway.model import Entity, ModelError, geo, point, urn, utc_time

DEVICE_TYPE = "Device"


def device_id(dev_eui: str) -> str:
    """The id of the Device entity of a LoRaWAN device."""
    return urn(DEVICE_TYPE, dev_eui)


def _p(value: Any, time: str | None = None, unit: str | None = None) -> dict[str, Any]:
    """A Property; ``time`` must already be RFC 3339 UTC (normalized once per message, not per attribute)."""
    attr: dict[str, Any] = {"type": "Property", "value": value}
    if unit is not None:
        attr["unitCode"] = unit
    if time is not None:
        attr["observedAt"] = time
    return attr


_UNRESOLVED: Final = object()


def translate(uplink: Uplink, registry: Registry, *, received_at: str,
              record: DeviceRecord | object | None = _UNRESOLVED) -> list[Entity]:
    """The entities one network-server event produces (may be empty; never guesses a device).

    ``record`` is ``registry.resolve(uplink)`` when the caller has it already (the transport
    resolved the device to find its tenant): the device is then not resolved a second time.
    """
    try:
        time = uplink.time or utc_time(received_at)
    except ModelError as exc:
        raise TranslationError(f"receipt time: {exc}") from exc
    known = registry.resolve(uplink) if record is _UNRESOLVED else record
    if uplink.kind != "up":
        if not isinstance(known, DeviceRecord) or uplink.kind not in ("join", "status", "log", "location"):
            return []
        return [_device(uplink, known, time, {}, measured=False)]
    record = known if isinstance(known, DeviceRecord) else registry.require(
        uplink, uplink.decoded_at.rsplit("/", 1)[0] or "/")
    profile = record.profile
    if not profile.measures(uplink.f_port) or (uplink.decoded is None and not uplink.payload):
        # A frame on a configuration port, or a MAC-only frame: the device was heard, nothing measured.
        return [_device(uplink, record, time, {}, measured=True)]
    decoded, base = _decoded(uplink, record)
    attrs = profile.attributes(decoded, record.params, base)
    if not attrs and uplink.decoded is not None and uplink.payload and profile.decoder:
        # The server's codec names fields differently from ours: decode the bytes ourselves.
        decoded, base = _decode_bytes(uplink, record)
        attrs = profile.attributes(decoded, record.params, base)
    observed = profile.observed_time(decoded, record.params, base) or time
    device_attrs = profile.device_attributes(decoded, record.params, base)
    entities: list[Entity] = []
    if attrs:
        entities.append(_asset(record, attrs, observed))
    entities.append(_device(uplink, record, time, device_attrs, measured=True, linked=bool(attrs)))
    return entities


def _decoded(uplink: Uplink, record: DeviceRecord) -> tuple[Mapping[str, Any], str]:
    if uplink.decoded is not None:
        return uplink.decoded, uplink.decoded_at
    return _decode_bytes(uplink, record)


def _decode_bytes(uplink: Uplink, record: DeviceRecord) -> tuple[Mapping[str, Any], str]:
    profile = record.profile
    if uplink.payload is None:
        raise TranslationError(f"no decoded object and no payload bytes for profile {profile.id}",
                               uplink.payload_at)
    if not profile.decoder:
        raise TranslationError(f"the network server sent bytes only and profile {profile.id} has no built-in "
                               "decoder: configure a codec on the network server", uplink.payload_at)
    try:
        return decode(profile.decoder, uplink.f_port or 0, uplink.payload), uplink.payload_at
    except DecodeError as exc:
        raise TranslationError(f"decoder {profile.decoder}: {exc}", uplink.payload_at) from exc


def _asset(record: DeviceRecord, attrs: Mapping[str, Measured], observed: str) -> Entity:
    profile = record.profile
    entity: Entity = {"id": record.entity_id, "type": profile.entity_type}
    entity.update(record.static)
    for name, measured in attrs.items():
        entity[name] = _p(measured.value, observed, measured.unit)
    if profile.time_attribute:
        entity[profile.time_attribute] = _p(observed)
    entity["refDevice"] = {"type": "Relationship", "object": device_id(record.dev_eui)}
    return entity


def _radio(uplink: Uplink) -> dict[str, Any]:
    """Reception facts as sub-properties (of ``rssi``, else of ``dateLastValueReported``)."""
    sub: dict[str, Any] = {}
    radio = uplink.radio
    if radio is not None:
        if radio.snr is not None:
            sub["snr"] = _p(radio.snr, unit="2N")
        if radio.spreading_factor is not None:
            sub["spreadingFactor"] = _p(radio.spreading_factor)
        if radio.frequency is not None:
            sub["frequency"] = _p(radio.frequency, unit="HTZ")
        if radio.gateways:
            sub["gatewayCount"] = _p(len(radio.gateways))
            sub["gatewayIds"] = _p(list(radio.gateways))
    if "gatewayCount" in uplink.detail and "gatewayCount" not in sub:
        sub["gatewayCount"] = _p(uplink.detail["gatewayCount"])
    return sub


def _device(uplink: Uplink, record: DeviceRecord, time: str, attrs: Mapping[str, Measured], *,
            measured: bool, linked: bool = False) -> Entity:
    profile = record.profile
    entity: Entity = {
        "id": device_id(uplink.dev_eui),
        "type": DEVICE_TYPE,
        "deviceCategory": {"type": "Property", "value": list(profile.category)},
        "controlledProperty": {"type": "Property", "value": list(profile.controlled_property)},
        "supportedProtocol": {"type": "Property", "value": ["lora"]},
    }
    if uplink.device_name:
        entity["name"] = {"type": "Property", "value": uplink.device_name}
    if linked:
        entity["controlledAsset"] = {"type": "Relationship", "object": record.entity_id}
    if measured:
        # Radio metadata are properties of the reception (sub-properties), so that the Device keeps
        # the Smart Data Model's own attributes at its top level.
        reported = _p(time)
        if uplink.f_cnt is not None:
            reported["frameCounter"] = _p(uplink.f_cnt)
        if uplink.f_port is not None:
            reported["fPort"] = _p(uplink.f_port)
        if uplink.late:
            reported["lateDelivery"] = _p(True)
        entity["dateLastValueReported"] = reported
        radio = _radio(uplink)
        rssi = uplink.radio.rssi if uplink.radio is not None else None
        if rssi is not None:
            # dBm; no UN/CEFACT common code for decibel-milliwatt is recognised yet, see README.
            entity["rssi"] = {**_p(rssi, time), **radio}
        else:
            reported.update(radio)
    for name, value in attrs.items():
        entity[name] = _p(value.value, time, value.unit)
    if uplink.kind == "status":
        if uplink.battery_level is not None:
            entity["batteryLevel"] = _p(uplink.battery_level, time)
        if "margin" in uplink.detail:
            entity["linkMargin"] = _p(uplink.detail["margin"], time, "2N")
    elif uplink.kind == "join":
        entity["deviceState"] = _p("joined", time)
    elif uplink.kind == "log":
        level, code = uplink.detail.get("level", ""), uplink.detail.get("code", "")
        entity["deviceState"] = _p(f"{level.lower()}: {code}".strip(": "), time)
    elif uplink.kind == "location" and uplink.location is not None:
        entity["location"] = geo(point(*uplink.location), observed_at=time)
    return entity
