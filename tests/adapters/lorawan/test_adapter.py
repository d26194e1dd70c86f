"""The shared adapter behaviour: keys and tenants at receipt, bad bodies kept as dead letters."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adapters.chirpstack_v4 import ChirpstackV4Adapter
from gateway.errors import TranslationError

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = yaml.safe_load((ROOT / "adapters/chirpstack_v4/sample.yaml").read_text())
UPLINK = (ROOT / "adapters/chirpstack_v4/fixtures/laq4_up_decoded.json").read_bytes()


def adapter() -> ChirpstackV4Adapter:
    return ChirpstackV4Adapter(SAMPLE)


def test_raw_message_carries_the_server_key_and_the_device_tenant() -> None:
    raw = adapter().raw_message(UPLINK, event="up", metadata={"topic": "t"}, max_bytes=1 << 20,
                                received_at="2026-03-04T09:10:01Z")
    assert raw.idempotency_key == "up:af2e7a6c-5d8b-4cae-9fb0-4b5c6d7e8f90"
    assert raw.tenant == "ville-b" and raw.source == "chirpstack-agglo"
    assert raw.metadata == {"topic": "t", "event": "up"} and raw.payload == UPLINK


@pytest.mark.parametrize(("body", "reason"), [
    (b"\xff\xfe not json", "payload is not JSON"),
    (b"[1, 2]", "payload is a JSON list, expected an object"),
    (b'{"deviceInfo": {"devEui": "xyz"}, "data": "qg=="}', "'xyz' is not a DevEUI"),
])
def test_unreadable_bodies_are_emitted_then_dead_lettered_with_their_reason(body: bytes, reason: str) -> None:
    a = adapter()
    raw = a.raw_message(body, event="up", metadata={}, max_bytes=1 << 20)
    assert raw.idempotency_key.startswith("unparsed:sha256:") and raw.tenant == "ville-a"
    with pytest.raises(TranslationError) as info:
        a.to_entities(raw)
    assert reason in str(info.value)


def test_oversize_messages_keep_only_the_reason() -> None:
    a = adapter()
    raw = a.raw_message(UPLINK, event="up", metadata={}, max_bytes=1024)
    assert raw.payload == b"" and raw.metadata["oversize"] == str(len(UPLINK))
    with pytest.raises(TranslationError) as info:
        a.to_entities(raw)
    assert f"message of {len(UPLINK)} bytes exceeds the configured limit" in info.value.reason


def test_translation_is_pure_and_cached_parsing_changes_nothing() -> None:
    a = adapter()
    raw = a.raw_message(UPLINK, event="up", metadata={}, max_bytes=1 << 20, received_at="2026-03-04T09:10:01Z")
    first = a.to_entities(raw)
    assert a.to_entities(raw) == first == adapter().to_entities(raw)
    assert first[0]["co2"] == {"type": "Property", "value": 523, "unitCode": "59",
                               "observedAt": "2026-03-04T09:10:00Z"}
