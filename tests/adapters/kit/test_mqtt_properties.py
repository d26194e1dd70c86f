"""paho-mqtt's Properties with shared tables behave as paho's own: same tables, same decoding, same refusals."""

from __future__ import annotations

from typing import Any

import pytest
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import adapters.kit.mqtt  # noqa: F401  (applies the patch, as every MQTT source does)
from adapters.kit.mqtt_properties import PAHO_INIT, share_property_tables


def test_the_patch_is_applied_once_and_shares_paho_s_own_tables() -> None:
    assert share_property_tables() is True
    original = object.__new__(Properties)
    PAHO_INIT(original, PacketTypes.PUBLISH)
    a, b = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.CONNACK)
    for table in ("types", "names", "properties"):
        assert getattr(a, table) == getattr(original, table), table
        assert getattr(a, table) is getattr(b, table), f"{table} is built again per instance"
    assert a.packetType == PacketTypes.PUBLISH and b.packetType == PacketTypes.CONNACK


def test_publish_properties_round_trip_through_pack_and_unpack() -> None:
    sent: Any = Properties(PacketTypes.PUBLISH)
    sent.UserProperty = ("site", "lattes")
    sent.UserProperty = ("gateway", "gw-1")
    sent.ContentType = "application/json"
    sent.MessageExpiryInterval = 3600
    received: Any = Properties(PacketTypes.PUBLISH)
    received.unpack(sent.pack())
    assert received.UserProperty == [("site", "lattes"), ("gateway", "gw-1")]
    assert received.ContentType == "application/json"
    assert received.MessageExpiryInterval == 3600
    # unpack clears what an earlier packet left: a reused instance holds only the new packet's properties
    other: Any = Properties(PacketTypes.PUBLISH)
    other.ResponseTopic = "reply/here"
    received.unpack(other.pack())
    assert received.ResponseTopic == "reply/here"
    assert not hasattr(received, "ContentType") and not hasattr(received, "UserProperty")


def test_clear_empties_an_instance_and_keeps_it_usable() -> None:
    props: Any = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 120
    props.ReceiveMaximum = 50
    assert not props.isEmpty()
    props.clear()
    assert props.isEmpty()
    assert sorted(vars(props)) == ["names", "packetType", "properties", "types"]
    props.ReceiveMaximum = 10
    assert props.ReceiveMaximum == 10


def test_paho_s_refusals_are_unchanged() -> None:
    props: Any = Properties(PacketTypes.PUBLISH)
    with pytest.raises(MQTTException, match="does not apply to packet type"):
        props.SessionExpiryInterval = 3  # a CONNECT property
    with pytest.raises(MQTTException, match="Property name must be one of"):
        props.NotAProperty = 1
    props.ContentType = "text/plain"
    received = Properties(PacketTypes.PUBLISH)
    twice = props.pack()
    # a property that may appear once, twice in one packet: paho refuses the packet
    length, body = twice[0], twice[1:]
    with pytest.raises(MQTTException, match="must not exist more than once"):
        received.unpack(bytes([length * 2]) + body + body)
