"""Built-in payload decoders (pure Python, our own code) for when a server forwards bytes only.

Each decoder takes ``(f_port, payload)`` and returns the same JSON object the vendor's codec in
the LoRaWAN device repository produces (``data`` of ``decodeUplink``), so that a device profile
maps a server-decoded object and a locally decoded one the same way. Byte layouts are the
vendors' published formats; the device repository's examples are the test vectors.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Decoder = Callable[[int, bytes], dict[str, Any]]
"""``decoder(f_port, payload) -> decoded object``; raises :class:`DecodeError`."""

ADEUNIS_EPOCH = 1356998400
"""Adeunis timestamps count seconds from 2013-01-01T00:00:00Z."""


class DecodeError(ValueError):
    """Bytes a decoder cannot read; the message names the byte offset or the rule broken."""


def _need(payload: bytes, offset: int, size: int, what: str) -> None:
    if offset + size > len(payload):
        raise DecodeError(f"{what}: {size} byte(s) needed at offset {offset}, payload has {len(payload)}")


def _u16le(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 2], "little")


def _s16le(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 2], "little", signed=True)


def _u32le(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 4], "little")


def _u16be(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 2], "big")


def _s16be(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 2], "big", signed=True)


def _u32be(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 4], "big")


# --------------------------------------------------------------------------- Milesight

# (channel id, channel type) → (size, reader). Milesight frames are a sequence of
# [channel][type][value]; the vendor codecs stop at the first pair they do not know, and so do we
# (the examples rely on it: an AM307 frame with a newer channel decodes to the known prefix).
_Reader = Callable[[bytes, int], dict[str, Any]]


def _field(name: str, read: Callable[[bytes, int], Any]) -> _Reader:
    return lambda b, i: {name: read(b, i)}


_MILESIGHT_COMMON: dict[tuple[int, int], tuple[int, _Reader]] = {
    (0x01, 0x75): (1, _field("battery", lambda b, i: b[i])),
}

_EM310_UDL = {
    **_MILESIGHT_COMMON,
    (0x03, 0x82): (2, _field("distance", _u16le)),
    # The device-repository example names this "tilt"; the vendor codec file names it
    # "position". Profiles accept both; our decoder follows the example (the test vector).
    (0x04, 0x00): (1, _field("tilt", lambda b, i: {0: "normal", 1: "tilt"}.get(b[i], "unknown"))),
}

_AM307 = {
    **_MILESIGHT_COMMON,
    (0x03, 0x67): (2, _field("temperature", lambda b, i: _s16le(b, i) / 10)),
    (0x04, 0x68): (1, _field("humidity", lambda b, i: b[i] / 2)),
    (0x05, 0x00): (1, _field("pir", lambda b, i: "trigger" if b[i] == 1 else "idle")),
    (0x06, 0xCB): (1, _field("light_level", lambda b, i: b[i])),
    (0x07, 0x7D): (2, _field("co2", _u16le)),
    (0x08, 0x7D): (2, _field("tvoc", _u16le)),
    (0x09, 0x73): (2, _field("pressure", lambda b, i: _u16le(b, i) / 10)),
    (0x0A, 0x7D): (2, _field("hcho", lambda b, i: _u16le(b, i) / 100)),
    (0x0B, 0x7D): (2, _field("pm2_5", _u16le)),
    (0x0C, 0x7D): (2, _field("pm10", _u16le)),
    (0x0D, 0x7D): (2, _field("o3", lambda b, i: _u16le(b, i) / 100)),
    (0x0E, 0x01): (1, _field("beep", lambda b, i: "yes" if b[i] == 1 else "no")),
}

_EM300_DI = {
    **_MILESIGHT_COMMON,
    (0x03, 0x67): (2, _field("temperature", lambda b, i: _s16le(b, i) / 10)),
    (0x04, 0x68): (1, _field("humidity", lambda b, i: b[i] / 2)),
    (0x05, 0x00): (1, _field("gpio", lambda b, i: b[i])),
    (0x05, 0xC8): (4, _field("pulse", _u32le)),
}


def _ws558_switches(b: bytes, i: int) -> dict[str, Any]:
    flags = b[i + 1]
    return {f"switch_{n + 1}": "on" if (flags >> n) & 1 else "off" for n in range(8)}


_WS558 = {
    (0x03, 0x74): (2, _field("voltage", lambda b, i: _u16le(b, i) / 10)),
    # The repository example calls active power "power" (newer codecs: "active_power").
    (0x04, 0x80): (4, _field("power", _u32le)),
    (0x05, 0x81): (1, _field("power_factor", lambda b, i: b[i])),
    (0x06, 0x83): (4, _field("power_consumption", _u32le)),
    (0x07, 0xC9): (2, _field("total_current", _u16le)),
    (0x08, 0x31): (2, _ws558_switches),
}


def _milesight(table: dict[tuple[int, int], tuple[int, _Reader]]) -> Decoder:
    def decode(f_port: int, payload: bytes) -> dict[str, Any]:
        out: dict[str, Any] = {}
        i = 0
        while i + 2 <= len(payload):
            entry = table.get((payload[i], payload[i + 1]))
            if entry is None:
                break
            size, read = entry
            _need(payload, i + 2, size, f"channel 0x{payload[i]:02x} 0x{payload[i + 1]:02x}")
            out.update(read(payload, i + 2))
            i += 2 + size
        if not out and payload:
            raise DecodeError(f"no known channel at offset 0 (0x{payload[:2].hex()})")
        return out

    return decode


# --------------------------------------------------------------------------- Dragino LAQ4


def dragino_laq4(f_port: int, payload: bytes) -> dict[str, Any]:
    """Dragino LAQ4 air-quality sensor, fPort 2, 11-byte CO2 or alarm frames."""
    if f_port != 2:
        raise DecodeError("unknown FPort")
    if len(payload) != 11:
        raise DecodeError(f"LAQ4 frames are 11 bytes, got {len(payload)}")
    mode = (payload[2] & 0x7C) >> 2
    battery = ((payload[0] << 8) | payload[1]) / 1000
    if mode == 1:
        return {
            "Bat_V": battery,
            "Work_mode": "CO2",
            "Alarm_status": "TRUE" if payload[2] & 0x01 else "FALSE",
            "TVOC_ppb": _u16be(payload, 3),
            "CO2_ppm": _u16be(payload, 5),
            "TempC_SHT": round(_s16be(payload, 7) / 10, 2),
            "Hum_SHT": round(_u16be(payload, 9) / 10, 1),
        }
    if mode == 31:
        return {
            "Bat_V": battery,
            "Work_mode": "ALARM",
            "SHTEMPMIN": struct.unpack_from("b", payload, 3)[0],
            "SHTEMPMAX": struct.unpack_from("b", payload, 4)[0],
            "SHTHUMMIN": payload[5],
            "SHTHUMMAX": payload[6],
            "CO2MIN": _u16be(payload, 7),
            "CO2MAX": _u16be(payload, 9),
        }
    raise DecodeError(f"unknown LAQ4 work mode {mode}")


# --------------------------------------------------------------------------- Elsys

# Elsys generic payload: [type][value]...; sizes and scales from the vendor's published format.
_ELSYS: dict[int, tuple[str, int, Callable[[bytes, int], Any]]] = {
    0x01: ("temperature", 2, lambda b, i: _s16be(b, i) / 10),
    0x02: ("humidity", 1, lambda b, i: b[i]),
    0x04: ("light", 2, _u16be),
    0x05: ("motion", 1, lambda b, i: b[i]),
    0x06: ("co2", 2, _u16be),
    0x07: ("vdd", 2, _u16be),
    0x0A: ("pulse1", 2, _u16be),
    0x0B: ("pulseAbs", 4, _u32be),
    0x11: ("occupancy", 1, lambda b, i: b[i]),
    0x14: ("pressure", 4, lambda b, i: _u32be(b, i) / 1000),
    0x1C: ("tvoc", 2, _u16be),
}


def elsys(f_port: int, payload: bytes) -> dict[str, Any]:
    """Elsys ERS family (ERS, ERS CO2, ERS Sound...) generic type-value payload."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(payload):
        kind = payload[i]
        entry = _ELSYS.get(kind)
        if entry is None:
            raise DecodeError(f"unknown Elsys data type 0x{kind:02x} at offset {i}")
        name, size, read = entry
        _need(payload, i + 1, size, name)
        out[name] = read(payload, i + 1)
        i += 1 + size
    return out


# --------------------------------------------------------------------------- Adeunis


def _adeunis_status(byte: int) -> dict[str, Any]:
    return {"frameCounter": (byte & 0xE0) >> 5, "hardwareError": False,
            "lowBattery": bool(byte & 0x02), "configurationDone": bool(byte & 0x01)}


def _adeunis_time(seconds: int) -> str:
    # The codec prints UTC without the "Z"; profiles read it as UTC.
    moment = datetime.fromtimestamp(seconds + ADEUNIS_EPOCH, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def adeunis_pulse(f_port: int, payload: bytes) -> dict[str, Any]:
    """Adeunis Pulse 4 (LoRaWAN) data frames 0x5a/0x5b (counter with history) and 0x46."""
    if len(payload) < 2:
        raise DecodeError("Adeunis frames start with a code and a status byte")
    code, status_byte = payload[0], payload[1]
    status = {**_adeunis_status(status_byte), "timestamp": bool(status_byte & 0x04)}
    end = len(payload) - 4 if status_byte & 0x04 else len(payload)
    out: dict[str, Any] = {"status": status}
    if code in (0x5A, 0x5B):
        _need(payload, 2, 4, "counter value")
        channel = "A" if code == 0x5A else "B"
        out = {"type": f"0x{code:02x} Pulse 4 data - channel {channel}", **out}
        value = _u32be(payload, 2)
        values = [value]
        for offset in range(6, end - 1, 2):
            value -= _u16be(payload, offset)
            values.append(value)
        if status_byte & 0x04:
            _need(payload, end, 4, "timestamp")
            out["timestamp"] = _adeunis_time(_u32be(payload, end))
        out["decodingInfo"] = "counterValues: [t=0, t-1, t-2, ...]"
        out["counterValues"] = values
        return out
    if code == 0x46:
        _need(payload, 2, 8, "counter values")
        out = {"type": "0x46 Pulse 4 data", **out}
        if status_byte & 0x04:
            _need(payload, 10, 4, "timestamp")
            out["timestamp"] = _adeunis_time(_u32be(payload, 10))
        out["decodingInfo"] = "counterValues: [Channel A, Channel B]"
        out["counterValues"] = [_u32be(payload, 2), _u32be(payload, 6)]
        return out
    raise DecodeError(f"Adeunis Pulse frame code 0x{code:02x} carries no counter")


def adeunis_comfort_co2(f_port: int, payload: bytes) -> dict[str, Any]:
    """Adeunis Comfort CO2 data frame 0x6a: [temperature, humidity, CO2] samples, newest first."""
    if len(payload) < 2 or payload[0] != 0x6A:
        raise DecodeError("expected an Adeunis Comfort CO2 data frame (0x6a)")
    status_byte = payload[1]
    status = {**_adeunis_status(status_byte), "configurationInconsistency": bool(status_byte & 0x08),
              "timestamp": bool(status_byte & 0x04)}
    end = len(payload) - 4 if status_byte & 0x04 else len(payload)
    if (end - 2) % 5:
        raise DecodeError(f"Comfort CO2 samples are 5 bytes; {end - 2} byte(s) of samples")
    out: dict[str, Any] = {"type": "0x6a Comfort CO2 data", "status": status}
    if status_byte & 0x04:
        out["timestamp"] = _adeunis_time(_u32be(payload, end))
    temps, hums, co2 = [], [], []
    for offset in range(2, end, 5):
        temps.append(_s16be(payload, offset) / 10)
        hums.append(payload[offset + 2])
        co2.append(_u16be(payload, offset + 3))
    out["decodingInfo"] = "values: [t=0, t-1, t-2, ...]"
    out["temperature"] = {"unit": "°C", "values": temps}
    out["humidity"] = {"unit": "%", "values": hums}
    out["co2"] = {"unit": "ppm", "values": co2}
    return out


def _wrap_bytes(decoder: Decoder) -> Decoder:
    """Adeunis codecs nest their output under ``bytes``; keep that shape for the profiles."""
    return lambda f_port, payload: {"bytes": decoder(f_port, payload)}


# --------------------------------------------------------------------------- Axioma


def _bits_le(payload: bytes, start_byte: int, start_bit: int, length: int) -> int:
    value = 0
    for n in range(length):
        position = start_bit + n
        index = start_byte + position // 8
        if index >= len(payload):
            break
        if payload[index] & (1 << (position % 8)):
            value |= 1 << n
    return value


def axioma_qalcosonic_w1(f_port: int, payload: bytes) -> dict[str, Any]:
    """Axioma Qalcosonic W1 water meter, fPort 100 "enhanced 24h" frame (51 bytes, version 1)."""
    if f_port != 100:
        raise DecodeError(f"Unsupported FPort: {f_port}")
    if len(payload) != 51:
        raise DecodeError(f"Unsupported payload length: {len(payload)}")
    if payload[0] != 0x01:
        raise DecodeError(f"Unsupported frame version: 0x{payload[0]:x}")
    stamp = _u32le(payload, 1)
    status = payload[5]
    log_litres = _u32le(payload, 6)
    backflow = status & 0x60 == 0x60
    burst = status & 0xA0 == 0xA0
    out: dict[str, Any] = {
        "payload_format": "AXIOMA_W1_ENHANCED_24H",
        "frame_version": payload[0],
        "payload_bytes": len(payload),
        "timestamp_unix": stamp,
        "timestamp_utc": datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "status": status,
        "low_battery": bool(status & 0x04),
        "permanent_error": bool(status & 0x08),
        "temporary_error": bool(status & 0x10),
        "pipe_empty": status == 0x10,
        "backflow": backflow,
        "burst": burst,
        "leakage": bool(status & 0x20) and not backflow and not burst,
        "low_temperature": bool(status & 0x80) and not burst,
        "log_volume_m3": log_litres / 1000,
    }
    total = 0
    for n in range(23):
        delta = _bits_le(payload, 10, n * 14, 14)
        out[f"delta_{n + 1}_m3"] = delta / 1000
        total += delta
    out["history_count"] = 23
    out["history_total_m3"] = total / 1000
    out["current_volume_m3"] = (log_litres + total) / 1000
    out["history_multiplier"] = _bits_le(payload, 10, 23 * 14, 6)
    return out


DECODERS: dict[str, Decoder] = {
    "milesight-em310-udl": _milesight(_EM310_UDL),
    "milesight-am307": _milesight(_AM307),
    "milesight-em300-di": _milesight(_EM300_DI),
    "milesight-ws558": _milesight(_WS558),
    "dragino-laq4": dragino_laq4,
    "elsys": elsys,
    "adeunis-pulse": _wrap_bytes(adeunis_pulse),
    "adeunis-comfort-co2": _wrap_bytes(adeunis_comfort_co2),
    "axioma-qalcosonic-w1": axioma_qalcosonic_w1,
}
"""Built-in decoders by name (the ``decoder`` of a device profile)."""


def decode(name: str, f_port: int, payload: bytes) -> dict[str, Any]:
    """Run the built-in decoder ``name``; KeyError names the known decoders."""
    try:
        decoder = DECODERS[name]
    except KeyError:
        raise KeyError(f"no built-in decoder {name!r} (known: {', '.join(sorted(DECODERS))})") from None
    return decoder(f_port, payload)
