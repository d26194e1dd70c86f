"""Built-in decoders against every byte→JSON vector of the device repository's codec files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.lorawan.decoders import DECODERS, DecodeError, decode
from adapters.lorawan.profile import builtin_profiles
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
