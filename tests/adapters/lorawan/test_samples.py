"""Every real network-server sample in ../shared/samples goes through its parser (read in place).

Upstream cross-checks: they skip by name where ../shared is absent; each server's parser is also
tested on our own fixtures (adapters/<server>/fixtures, tests/adapters/test_contract.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.chirpstack_v3 import ChirpstackV3Adapter
from adapters.chirpstack_v4 import ChirpstackV4Adapter
from adapters.kit.lorawan.servers import chirpstack, live_objects, thingpark, tts
from adapters.live_objects import LiveObjectsAdapter
from adapters.thingpark import ThingparkAdapter
from adapters.tts_v3 import TtsV3Adapter
from gateway.errors import TranslationError
from gateway.model import RawMessage
from gateway.validation import validate
from tests.conftest import SAMPLES, needs_shared, shared_params

# sample → (parser, event from the topic or query, expected kind, DevEUI, time (UTC), idempotency key)
EXPECTED: dict[str, tuple[Any, str | None, str, str, str | None, str]] = {
    "chirpstack_v4/event_up.json": (chirpstack.parse_v4, "up", "up", "0101010101010101",
                                    "2022-07-18T09:34:15.775023Z", "up:3ac7e3c4-4401-4b8d-9386-a5c902f9202d"),
    "chirpstack_v4/event_join.json": (chirpstack.parse_v4, "join", "join", "0101010101010101",
                                      "2022-07-18T09:33:28.823500Z", "join:c9dbe358-2578-4fb7-b295-66b44edc45a6"),
    "chirpstack_v4/event_status.json": (chirpstack.parse_v4, "status", "status", "0101010101010101",
                                        "2022-07-18T09:35:06.927172Z", "status:bf2a9746-1c8b-49be-a92e-f0b89c8534e4"),
    "chirpstack_v4/event_ack.json": (chirpstack.parse_v4, "ack", "ack", "0101010101010101",
                                     "2022-07-18T09:38:49.235700Z", "ack:1bbcab1d-6ec6-4136-b3f5-d63be1dc08de"),
    "chirpstack_v4/event_txack.json": (chirpstack.parse_v4, "txack", "txack", "0101010101010101",
                                       "2022-07-18T09:37:48.929184Z", "txack:42cb6459-a640-46ec-9623-bdff39dc4736"),
    "chirpstack_v4/event_log.json": (chirpstack.parse_v4, "log", "log", "0101010101010101",
                                     "2022-07-18T09:39:57.311414Z",
                                     "log:4e91db13-5ce3-4c8c-ab0f-dfc626cf0771:UPLINK_MIC"),
    "chirpstack_v3/event_up.json": (chirpstack.parse_v3, "up", "up", "0202020202020202",
                                    "2019-11-08T13:59:25.048445Z",
                                    "up:0202020202020202:10:8e1321f06aba4403828522 9b8bcdd11d".replace(" ", "")),
    "chirpstack_v3/event_join.json": (chirpstack.parse_v3, "join", "join", "0202020202020202",
                                      "2019-11-08T13:59:25.048445Z",
                                      "join:0202020202020202:00513942:8e1321f06aba44038285229b8bcdd11d"),
    "chirpstack_v3/event_status.json": (chirpstack.parse_v3, "status", "status", "0202020202020202", None, "status:"),
    "chirpstack_v3/event_ack.json": (chirpstack.parse_v3, "ack", "ack", "0202020202020202",
                                     "2019-11-08T13:59:25.048445Z", "ack:"),
    "chirpstack_v3/event_txack.json": (chirpstack.parse_v3, "txack", "txack", "0202020202020202", None, "txack:"),
    "ttn_tts_v3/uplink_message.fixed.json": (tts.parse, "up", "up", "0004a30b001c0530",
                                             "2020-02-12T15:15:45.789585Z", "up:as:up:01E0WZGT6Y7657CPFPE5WEYDSQ"),
    "ttn_tts_v3/join_accept.json": (tts.parse, "join", "join", "0004a30b001c0530", "2020-02-17T07:49:09.736532Z",
                                    "join:as:up:01E191YN5F2HMBQCBCVRF731VY"),
    "ttn_tts_v3/downlink_event_ack.json": (tts.parse, "down/ack", "ack", "0004a30b001c0530",
                                           "2020-02-17T10:32:24.590413Z",
                                           "downlink_ack:as:downlink:01E19B99501X84X6CV471TVSZ1"),
    "actility_thingpark/DevEUI_uplink_original.json": (thingpark.parse, None, "up", "0018b20000000b20",
                                                       "2018-10-03T13:38:46.882Z", "up:0018b20000000b20:1174:cfffc70f"),
    "actility_thingpark/DevEUI_uplink_decoded.json": (thingpark.parse, None, "up", "20635f0108000e09",
                                                      "2020-01-06T11:46:54.285Z", "up:20635f0108000e09:265:3bcf2927"),
    "orange_live_objects/lo_lora_data_message_minimal.from_orange_payload_decoders.json": (
        live_objects.parse, None, "up", "70b3d59ba0000000", "2017-11-26T14:55:08.767Z",
        "up:70b3d59ba0000000::2017-11-26T14:55:08.767Z"),
}

pytestmark = needs_shared

NOT_APPLICATION_EVENTS = {
    # The gateway bridge's statistics are not an application event: no device, a clean refusal.
    "chirpstack_v4/gateway_bridge_event_stats.json": (chirpstack.parse_v4, "/deviceInfo/devEui"),
    # A documentation fragment (decoded + normalized payload only), not a whole message.
    "ttn_tts_v3/uplink_message_normalized_payload_fragment.json": (tts.parse, ""),
}


def test_every_network_server_sample_is_covered() -> None:
    folders = ("chirpstack_v4", "chirpstack_v3", "ttn_tts_v3", "actility_thingpark", "orange_live_objects")
    found = {f"{p.parent.name}/{p.name}" for folder in folders for p in (SAMPLES / folder).glob("*.json")}
    assert found == set(EXPECTED) | set(NOT_APPLICATION_EVENTS)


@pytest.mark.parametrize("name", shared_params(lambda: sorted(EXPECTED)))
def test_sample_parses_to_normalized_fields(name: str) -> None:
    parser, event, kind, eui, time, key = EXPECTED[name]
    body = (SAMPLES / name).read_bytes()
    uplink = parser(json.loads(body), event, body)
    assert uplink.kind == kind
    assert uplink.dev_eui == eui
    assert uplink.time == time
    assert uplink.key.startswith(key) if key.endswith(":") else uplink.key == key
    assert uplink.key == parser(json.loads(body), event, body).key, "keys are deterministic"


@pytest.mark.parametrize("name", shared_params(lambda: sorted(NOT_APPLICATION_EVENTS)))
def test_non_application_samples_are_refused_with_a_reason(name: str) -> None:
    parser, pointer = NOT_APPLICATION_EVENTS[name]
    body = (SAMPLES / name).read_bytes()
    with pytest.raises(TranslationError) as info:
        parser(json.loads(body), None, body)
    assert info.value.pointer == pointer
    assert info.value.reason


def test_v4_uplink_details() -> None:
    body = (SAMPLES / "chirpstack_v4/event_up.json").read_bytes()
    up = chirpstack.parse_v4(json.loads(body), None, body)
    assert up.payload == b"\xaa" and up.f_port == 1 and up.decoded is None
    assert up.radio is not None and up.radio.rssi == -36 and up.radio.snr == 10.5
    assert up.radio.spreading_factor == 11 and up.radio.bandwidth == 125000 and up.radio.frequency == 867100000
    assert up.radio.gateways == ("0016c001f153a14c",)
    assert up.applications == ("17c82e96-be03-4f38-aef3-f83d48582d97", "Test application")


def test_v3_uplink_reads_base64_ids_objectjson_and_khz() -> None:
    body = (SAMPLES / "chirpstack_v3/event_up.json").read_bytes()
    up = chirpstack.parse_v3(json.loads(body), None, body)
    assert up.decoded == {"temperatureSensor": 25, "humiditySensor": 32}
    assert up.radio is not None and up.radio.gateways == ("0303030303030303",) and up.radio.bandwidth == 125000
    # "data": "..." is not base64; the decoded object makes it harmless, and the reason is kept.
    assert up.payload is None and "payloadError" in up.detail


def test_v3_status_battery_and_v4_status_battery_are_fractions() -> None:
    v3 = (SAMPLES / "chirpstack_v3/event_status.json").read_bytes()
    v4 = (SAMPLES / "chirpstack_v4/event_status.json").read_bytes()
    assert chirpstack.parse_v3(json.loads(v3), "status", v3).battery_level == 0.755
    assert chirpstack.parse_v4(json.loads(v4), "status", v4).battery_level == 0.883


def test_thingpark_strings_offsets_and_mhz() -> None:
    body = (SAMPLES / "actility_thingpark/DevEUI_uplink_original.json").read_bytes()
    up = thingpark.parse(json.loads(body), None, body)
    assert up.f_cnt == 1174 and up.f_port == 1
    assert up.payload == bytes.fromhex("9e1c4852512000220020e3831071")
    assert up.radio is not None and up.radio.rssi == -80.0 and up.radio.snr == 7.0 and up.radio.frequency == 868100000
    decoded = (SAMPLES / "actility_thingpark/DevEUI_uplink_decoded.json").read_bytes()
    up2 = thingpark.parse(json.loads(decoded), None, decoded)
    assert up2.decoded is not None and up2.decoded["temperature"] == 24.8
    assert up2.radio is not None and up2.radio.gateways == ("08050376", "C0001BC3") and up2.radio.rssi == -65.0


def test_tts_uplink_reads_location_and_string_frequency() -> None:
    body = (SAMPLES / "ttn_tts_v3/uplink_message.fixed.json").read_bytes()
    up = tts.parse(json.loads(body), "up", body)
    assert up.decoded == {"temperature": 1.0, "luminosity": 0.64}
    assert up.payload == bytes.fromhex("8241de")
    assert up.location == (23.72678801175413, 37.97155556731436)
    assert up.radio is not None and up.radio.frequency == 868300000 and up.radio.spreading_factor == 7
    assert up.f_port == 0, "f_port omitted when zero"
    assert up.device_profile == "the-things-products/the-things-uno"


PROFILE = """
id: test-uno
vendor: The Things Products
model: The Things Uno (quickstart sketch)
entity_type: IndoorEnvironmentObserved
time_attribute: dateObserved
device: {controlled_property: [temperature, light]}
attributes:
  temperature: {from: [temperature, temperatureSensor], unit: CEL, range: [0, 60]}
  relativeHumidity: {from: humiditySensor, unit: P1, range: [0, 100]}
  illuminance: {from: luminosity, scale: 1000, unit: LUX}
"""


def _config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    (folder / "test-uno.yaml").write_text(PROFILE)
    return {"transport": "mqtt", "mqtt": {"host": "127.0.0.1", "topics": ["#"]}, "profiles_dirs": [str(folder)],
            "tenant": "t", **extra}


def _raw(body: bytes, event: str | None = None) -> RawMessage:
    return RawMessage(source="s", tenant="t", received_at="2026-01-01T00:00:00Z", payload=body,
                      idempotency_key="k", metadata={"event": event} if event else {})


def test_tts_sample_with_an_auto_provisioning_rule_and_the_registry_location(tmp_path: Path) -> None:
    adapter = TtsV3Adapter(_config(tmp_path, auto_provision=[
        {"match": {"device_profile": "the-things-products/*"}, "profile": "test-uno"}]))
    body = (SAMPLES / "ttn_tts_v3/uplink_message.fixed.json").read_bytes()
    asset, device = adapter.to_entities(_raw(body, "up"))
    assert asset["id"] == "urn:ngsi-ld:IndoorEnvironmentObserved:0004a30b001c0530"
    assert asset["location"]["value"] == {"type": "Point", "coordinates": [23.72678801175413, 37.97155556731436]}
    assert asset["illuminance"]["value"] == 640.0 and asset["temperature"]["value"] == 1.0
    assert device["rssi"]["value"] == -35 and device["rssi"]["gatewayIds"]["value"] == ["gtw1"]
    assert validate(asset).valid and validate(device).valid


def test_v3_sample_through_a_provisioned_device(tmp_path: Path) -> None:
    adapter = ChirpstackV3Adapter(_config(tmp_path, devices=[
        {"dev_eui": "0202020202020202", "profile": "test-uno", "location": {"lon": 4.9144, "lat": 52.374}}]))
    body = (SAMPLES / "chirpstack_v3/event_up.json").read_bytes()
    asset, device = adapter.to_entities(_raw(body, "up"))
    assert asset["temperature"] == {"type": "Property", "value": 25, "unitCode": "CEL",
                                    "observedAt": "2019-11-08T13:59:25.048445Z"}
    assert asset["relativeHumidity"]["value"] == 32
    assert device["id"] == "urn:ngsi-ld:Device:0202020202020202"
    assert device["dateLastValueReported"]["frameCounter"]["value"] == 10


def test_samples_from_unknown_devices_are_dead_letters_with_the_deveui(tmp_path: Path) -> None:
    cases = [(ChirpstackV4Adapter, "chirpstack_v4/event_up.json", "0101010101010101"),
             (ThingparkAdapter, "actility_thingpark/DevEUI_uplink_original.json", "0018b20000000b20"),
             (LiveObjectsAdapter,
              "orange_live_objects/lo_lora_data_message_minimal.from_orange_payload_decoders.json",
              "70b3d59ba0000000")]
    for cls, name, eui in cases:
        adapter = cls(_config(tmp_path))
        with pytest.raises(TranslationError) as info:
            adapter.to_entities(_raw((SAMPLES / name).read_bytes()))
        assert f"unknown device {eui}" in info.value.reason


def test_events_without_measurement_never_raise(tmp_path: Path) -> None:
    adapter = ChirpstackV4Adapter(_config(tmp_path, devices=[
        {"dev_eui": "0101010101010101", "profile": "test-uno", "location": {"lon": 2.35, "lat": 48.85}}]))
    out = {}
    for event in ("join", "status", "ack", "txack", "log"):
        out[event] = adapter.to_entities(_raw((SAMPLES / f"chirpstack_v4/event_{event}.json").read_bytes(), event))
    assert out["ack"] == [] and out["txack"] == []
    assert out["status"][0]["batteryLevel"]["value"] == 0.883
    assert out["join"][0]["deviceState"]["value"] == "joined"
    assert out["log"][0]["deviceState"]["value"] == "error: UPLINK_MIC"
    # from an unknown device, they translate to nothing (counted by the runtime), never to an error
    stranger = ChirpstackV4Adapter(_config(tmp_path))
    assert stranger.to_entities(_raw((SAMPLES / "chirpstack_v4/event_join.json").read_bytes(), "join")) == []


def test_v4_sample_bytes_the_profile_decoder_cannot_read(tmp_path: Path) -> None:
    adapter = ChirpstackV4Adapter(_config(tmp_path, devices=[
        {"dev_eui": "0101010101010101", "profile": "elsys-ers-co2", "location": {"lon": 2.35, "lat": 48.85}}]))
    with pytest.raises(TranslationError) as info:
        adapter.to_entities(_raw((SAMPLES / "chirpstack_v4/event_up.json").read_bytes(), "up"))
    assert info.value.pointer == "/data"
    assert "decoder elsys: unknown Elsys data type 0xaa at offset 0" in info.value.reason


def test_v4_sample_on_a_port_the_profile_does_not_measure_updates_the_device_only(tmp_path: Path) -> None:
    adapter = ChirpstackV4Adapter(_config(tmp_path, devices=[
        {"dev_eui": "0101010101010101", "profile": "milesight-em310-udl", "location": {"lon": 2.35, "lat": 48.85},
         "params": {"container_height_mm": 1500}}]))
    (device,) = adapter.to_entities(_raw((SAMPLES / "chirpstack_v4/event_up.json").read_bytes(), "up"))
    assert device["type"] == "Device" and device["dateLastValueReported"]["fPort"]["value"] == 1
    assert "controlledAsset" not in device
