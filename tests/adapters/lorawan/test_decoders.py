"""Built-in decoders against every byte→JSON vector of the device repository's codec files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.kit.lorawan.decoders import DECODERS, DecodeError, decode
from adapters.kit.lorawan.profile import builtin_profiles
from tests.conftest import SAMPLES, needs_shared, shared_params

CODECS = {
    "milesight-em310-udl": SAMPLES / "ttn_device_repo_codecs" / "milesight-iot__em310-udl-codec.yaml",
    "milesight-am307": SAMPLES / "ttn_device_repo_codecs" / "milesight-iot__am307-codec.yaml",
    "milesight-em300-di": SAMPLES / "ttn_device_repo_codecs" / "milesight-iot__em300-di-codec.yaml",
    "milesight-ws558": SAMPLES / "ttn_device_repo_codecs" / "milesight-iot__ws558-codec.yaml",
    "dragino-laq4": SAMPLES / "ttn_device_repo_codecs" / "dragino__laq4-codec.yaml",
    "adeunis-pulse": SAMPLES / "ttn_device_repo_codecs" / "adeunis__pulse-codec.yaml",
    "adeunis-comfort-co2": SAMPLES / "ttn_device_repo_codecs" / "adeunis__comfort-co2-codec.yaml",
    "axioma-qalcosonic-w1": SAMPLES / "water_meter_lorawan" / "axioma__qalcosonic-w1-codec.yaml",
}


def _vectors() -> list[Any]:
    cases = []
    for name, path in CODECS.items():
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        for example in doc["uplinkDecoder"]["examples"]:
            cases.append(pytest.param(name, example, id=f"{name}: {example['description']}"))
    return cases


@pytest.mark.parametrize(("decoder", "example"), shared_params(_vectors, arity=2))
def test_decoder_reproduces_the_vendor_vector(decoder: str, example: dict[str, Any]) -> None:
    fport = example["input"]["fPort"]
    payload = bytes(example["input"]["bytes"])
    expected = example["output"]
    if expected.get("errors"):
        with pytest.raises(DecodeError) as info:
            decode(decoder, fport, payload)
        assert any(err.lower() in str(info.value).lower() for err in expected["errors"])
    else:
        assert decode(decoder, fport, payload) == expected["data"]


@needs_shared
def test_every_shared_codec_file_is_covered() -> None:
    files = {p.name for p in (SAMPLES / "ttn_device_repo_codecs").glob("*.yaml")}
    covered = {p.name for p in CODECS.values()}
    assert files <= covered, f"codec files without a decoder test: {files - covered}"


def _status(counter: int, **flags: bool) -> dict[str, Any]:
    """An Adeunis status byte as the codecs print it (frame counter, then flags, default False)."""
    out: dict[str, Any] = {"frameCounter": counter, "hardwareError": False, "lowBattery": False,
                           "configurationDone": False}
    return {**out, **flags}


_W1_HEAD = "01" + "80857467" + "00" + "40e20100"  # version 1, 2025-01-01T00:00:00Z LE, status, 123456 L LE
_W1_DELTAS = {f"delta_{n}_m3": 0.0 for n in range(1, 24)} | {"delta_1_m3": 0.005, "delta_2_m3": 0.003}

OWN_VECTORS: list[Any] = [
    # Our own byte -> JSON vectors, computed by hand from each vendor's published byte layout (Milesight
    # channel/type/value little-endian; Dragino LAQ4 big-endian 11-byte frames; Adeunis code, status,
    # big-endian values, seconds since 2013-01-01; Axioma W1 little-endian with 14-bit history deltas).
    # They run everywhere; the vendors' own vectors above run where ../shared is present.
    ("milesight-em310-udl", 85, "017550 0382e803 040000", {"battery": 80, "distance": 1000, "tilt": "normal"}),
    ("milesight-em310-udl", 85, "03822c01 040001", {"distance": 300, "tilt": "tilt"}),
    ("milesight-am307", 85, "0367d200 04685a 077d2003", {"temperature": 21.0, "humidity": 45.0, "co2": 800}),
    ("milesight-am307", 85, "0367e7ff 050001 06cb03 0b7d0c00 0c7d1200",
     {"temperature": -2.5, "pir": "trigger", "light_level": 3, "pm2_5": 12, "pm10": 18}),
    ("milesight-em300-di", 85, "017564 05c810270000", {"battery": 100, "pulse": 10000}),
    ("milesight-em300-di", 85, "03670e01 04687f 050001", {"temperature": 27.0, "humidity": 63.5, "gpio": 1}),
    ("milesight-ws558", 85, "0374fc08 048096000000 05815f", {"voltage": 230.0, "power": 150, "power_factor": 95}),
    ("milesight-ws558", 85, "068340e20100 07c92c01", {"power_consumption": 123456, "total_current": 300}),
    ("dragino-laq4", 2, "0ce4 04 0064 0258 ff9c 0262",
     {"Bat_V": 3.3, "Work_mode": "CO2", "Alarm_status": "FALSE", "TVOC_ppb": 100, "CO2_ppm": 600,
      "TempC_SHT": -10.0, "Hum_SHT": 61.0}),
    ("dragino-laq4", 2, "0d48 7c f6 28 14 50 0190 05dc",
     {"Bat_V": 3.4, "Work_mode": "ALARM", "SHTEMPMIN": -10, "SHTEMPMAX": 40, "SHTHUMMIN": 20, "SHTHUMMAX": 80,
      "CO2MIN": 400, "CO2MAX": 1500}),
    ("adeunis-pulse", 1, "5a40 000003e8 000a 0014",
     {"bytes": {"type": "0x5a Pulse 4 data - channel A", "status": _status(2, timestamp=False),
                "decodingInfo": "counterValues: [t=0, t-1, t-2, ...]", "counterValues": [1000, 990, 970]}}),
    ("adeunis-pulse", 1, "4624 00000064 000000c8 16925e80",
     {"bytes": {"type": "0x46 Pulse 4 data", "status": _status(1, timestamp=True),
                "timestamp": "2025-01-01T00:00:00.000", "decodingInfo": "counterValues: [Channel A, Channel B]",
                "counterValues": [100, 200]}}),
    ("adeunis-comfort-co2", 1, "6a20 00d73701c2",
     {"bytes": {"type": "0x6a Comfort CO2 data",
                "status": _status(1, configurationInconsistency=False, timestamp=False),
                "decodingInfo": "values: [t=0, t-1, t-2, ...]", "temperature": {"unit": "°C", "values": [21.5]},
                "humidity": {"unit": "%", "values": [55]}, "co2": {"unit": "ppm", "values": [450]}}}),
    ("adeunis-comfort-co2", 1, "6a02 fff6500320 ffec4b02ee",
     {"bytes": {"type": "0x6a Comfort CO2 data",
                "status": _status(0, lowBattery=True, configurationInconsistency=False, timestamp=False),
                "decodingInfo": "values: [t=0, t-1, t-2, ...]",
                "temperature": {"unit": "°C", "values": [-1.0, -2.0]},
                "humidity": {"unit": "%", "values": [80, 75]}, "co2": {"unit": "ppm", "values": [800, 750]}}}),
    ("axioma-qalcosonic-w1", 100, _W1_HEAD + "05c0" + "00" * 39,
     {"payload_format": "AXIOMA_W1_ENHANCED_24H", "frame_version": 1, "payload_bytes": 51,
      "timestamp_unix": 1735689600, "timestamp_utc": "2025-01-01T00:00:00.000Z", "status": 0,
      "low_battery": False, "permanent_error": False, "temporary_error": False, "pipe_empty": False,
      "backflow": False, "burst": False, "leakage": False, "low_temperature": False, "log_volume_m3": 123.456,
      **_W1_DELTAS, "history_count": 23, "history_total_m3": 0.008, "current_volume_m3": 123.464,
      "history_multiplier": 0}),
]


@pytest.mark.parametrize(("decoder", "fport", "hex_payload", "expected"), OWN_VECTORS,
                         ids=[f"{v[0]}-{n}" for n, v in enumerate(OWN_VECTORS)])
def test_decoder_reproduces_our_vector(decoder: str, fport: int, hex_payload: str, expected: dict[str, Any]) -> None:
    assert decode(decoder, fport, bytes.fromhex(hex_payload.replace(" ", ""))) == expected


def test_every_decoder_has_our_own_vectors() -> None:
    assert {v[0] for v in OWN_VECTORS} | {"elsys"} == set(DECODERS)


def test_axioma_status_bits() -> None:
    """Status 0x24: low battery and a leak (0x20 without the backflow or burst patterns)."""
    payload = bytes.fromhex("01" + "80857467" + "24" + "40e20100" + "00" * 41)
    out = decode("axioma-qalcosonic-w1", 100, payload)
    assert (out["low_battery"], out["leakage"], out["backflow"], out["burst"]) == (True, True, False, False)
    assert out["history_total_m3"] == 0.0 and out["current_volume_m3"] == 123.456


# The Elsys vector is ours: Elsys publishes the format (type byte, big-endian value), not a codec file here.
@pytest.mark.parametrize(("hex_payload", "expected"), [
    ("0100E202290400270506060308070D62",
     {"temperature": 22.6, "humidity": 41, "light": 39, "motion": 6, "co2": 776, "vdd": 3426}),
    ("01FF38022D", {"temperature": -20.0, "humidity": 45}),
])
def test_elsys_decoder(hex_payload: str, expected: dict[str, Any]) -> None:
    assert decode("elsys", 5, bytes.fromhex(hex_payload)) == expected


@pytest.mark.parametrize(("decoder", "fport", "hex_payload", "reason"), [
    ("elsys", 5, "01E2", "temperature: 2 byte(s) needed at offset 1"),
    ("elsys", 5, "3F00", "unknown Elsys data type 0x3f"),
    ("milesight-em310-udl", 85, "0382A0", "channel 0x03 0x82: 2 byte(s) needed"),
    ("milesight-am307", 85, "9999", "no known channel at offset 0"),
    ("dragino-laq4", 2, "0D0705", "11 bytes"),
    ("axioma-qalcosonic-w1", 100, "01" * 20, "Unsupported payload length: 20"),
    ("adeunis-pulse", 1, "3067", "carries no counter"),
    ("adeunis-comfort-co2", 1, "6a80010203", "Comfort CO2 samples are 5 bytes"),
])
def test_decoders_name_what_is_wrong(decoder: str, fport: int, hex_payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(decoder, fport, bytes.fromhex(hex_payload))
    assert reason in str(info.value)


def test_unknown_decoder_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        decode("nope", 1, b"")
    assert "milesight-em310-udl" in str(info.value)


def test_every_profile_decoder_exists_and_every_decoder_has_a_profile() -> None:
    used = {p.decoder for p in builtin_profiles().values()}
    assert used <= set(DECODERS)
    assert set(DECODERS) <= used


def test_milesight_stops_at_an_unknown_channel_like_the_vendor_codec() -> None:
    # AM307 frames from newer firmware carry channels the decoder does not know: the known prefix decodes.
    assert decode("milesight-am307", 85, bytes.fromhex("01755C05 6A4900".replace(" ", ""))) == {"battery": 92}


def test_ws558_switch_mask() -> None:
    out = decode("milesight-ws558", 85, bytes.fromhex("0831FF05"))
    assert [out[f"switch_{n}"] for n in range(1, 9)] == ["on", "off", "on", "off", "off", "off", "off", "off"]


@needs_shared
def test_codec_paths_exist() -> None:
    for path in CODECS.values():
        assert Path(path).is_file(), path
