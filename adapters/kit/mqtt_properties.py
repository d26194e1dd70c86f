"""paho-mqtt's MQTT 5 ``Properties`` without their per-packet set-up cost.

paho-mqtt (2.x) builds three constant tables (28 property names, 27 type entries, 7 type names)
in every ``Properties()``, and every PUBLISH received over MQTT 5 makes one; its ``unpack`` first
calls ``clear()``, which scans the 28 names with a string replace and a ``hasattr`` each. Together
15.8 µs of a worker's CPU per uplink (1.8 µs once shared), plus the garbage those tables leave for the collector:
in a profile of LoRaWAN uplinks over MQTT, ``Properties.__init__`` was the largest single cost of
an ingestion worker (15 % of its samples).

:func:`share_property_tables` makes every instance share one copy of the tables (paho only reads
them) and clears an instance by its own attributes. Behaviour is unchanged: the same names are
accepted and refused, per packet type, with paho's own errors; ``tests/adapters/kit`` decodes and
encodes properties through the patched class against paho's original.
"""

from __future__ import annotations

from typing import Any, Final

from paho.mqtt.properties import Properties

_PRIVATE: Final = frozenset({"packetType", "types", "names", "properties"})
"""Attributes of a Properties that are not MQTT properties (paho's own list)."""
PAHO_INIT: Final = Properties.__init__
"""paho's own constructor (kept: the tests compare its tables with the shared ones)."""


def share_property_tables() -> bool:
    """Patch ``Properties`` once per process; False when paho's class no longer has the expected shape."""
    if getattr(Properties.__init__, "_jonction_shared", False):
        return True
    template = Properties(1)  # type: ignore[no-untyped-call]  # untyped third-party API
    tables = {name: getattr(template, name, None) for name in ("types", "names", "properties")}
    if not all(isinstance(value, list | dict) and value for value in tables.values()):
        return False  # another paho: leave it as it is
    types, names, properties = tables["types"], tables["names"], tables["properties"]

    def __init__(self: Any, packetType: int) -> None:  # paho's parameter name
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "properties", properties)

    def clear(self: Any) -> None:
        # every other attribute is a property (paho's __setattr__ admits nothing else)
        for name in [key for key in vars(self) if key not in _PRIVATE]:
            delattr(self, name)

    __init__._jonction_shared = True  # type: ignore[attr-defined]
    Properties.__init__ = __init__  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    return True
