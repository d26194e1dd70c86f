"""Pure translation of TALQ 2.7.1 payloads (devices, groups, log reports) to Smart Data Models entities.

A TALQ device is a set of functions; the functions it carries decide the entity it becomes
(``entity_type_of``): a lamp actuator or lamp monitor is a ``Streetlight``, a cabinet monitor a
``StreetlightControlCabinet``, a filling-level sensor a ``WasteContainer``, a particulate-matter or
gas sensor an ``AirQualityObserved``, a parking sensor a ``ParkingSpot``, a traffic counter a
``TrafficFlowObserved``. Each logged attribute maps to one entity attribute (``_ATTRIBUTE_MAP``)
with its UN/CEFACT unit. What a log report alone does not say (the device's location, its
functions, the last lamp status) travels with the RawMessage as the adapter's registry context,
so that this module stays pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from adapters.kit.payload import finite
from gateway.errors import TranslationError
from gateway.model import Entity, ModelError, entity, geo, point, prop, rel, urn, utc_time

__all__ = ["ENTITY_TYPES", "device_context", "entity_type_of", "translate"]

# Function type -> entity type, in priority order (a lamp device with a meter stays a Streetlight).
_PRIORITY: Final = (
    ("CabinetMonitorFunction", "StreetlightControlCabinet"),
    ("LampActuatorFunction", "Streetlight"),
    ("LampMonitorFunction", "Streetlight"),
    ("FillingLevelSensorFunction", "WasteContainer"),
    ("WasteContainerFunction", "WasteContainer"),
    ("ParticulateMatterSensorFunction", "AirQualityObserved"),
    ("GasSensorFunction", "AirQualityObserved"),
    ("ParkingSensorFunction", "ParkingSpot"),
    ("TrafficCounterFunction", "TrafficFlowObserved"),
)
ENTITY_TYPES: Final = ("Streetlight", "StreetlightControlCabinet", "StreetlightGroup", "WasteContainer",
                       "AirQualityObserved", "ParkingSpot", "TrafficFlowObserved")

# Gas sensors report ppm; the models hold mass concentrations: ppm x molar mass / 24.45 (molar volume in
# litres at 25 °C and 1 atm) gives mg/m3 (GP), x 1000 µg/m3 (GQ). CO2 stays in ppm (code 59).
_GASES: Final[Mapping[str, tuple[str, float, str]]] = {
    "CO": ("co", 28.010 / 24.45, "GP"), "NO": ("no", 30.006 / 24.45 * 1000, "GQ"),
    "NO2": ("no2", 46.0055 / 24.45 * 1000, "GQ"), "SO2": ("so2", 64.066 / 24.45 * 1000, "GQ"),
    "O3": ("o3", 47.998 / 24.45 * 1000, "GQ"), "CO2": ("co2", 1.0, "59"),
}

Conv = Callable[[Any, str], tuple[str, Any, str | None] | None]
"""(value, pointer) -> (entity attribute, value, unit code) or None to skip."""


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TranslationError("a number is expected", where)
    return finite(float(value), where)


def _level(value: Any, where: str) -> float:
    """A TALQ LevelState / DimLevel (0..100 %) as a 0..1 ratio."""
    if isinstance(value, Mapping):
        if "value" not in value:
            raise TranslationError("a LevelState has no value", where)
        value, where = value["value"], where + "/value"
    level = _number(value, where)
    if not 0 <= level <= 100:
        raise TranslationError("a dim level is 0..100", where)
    return round(level / 100, 4)


def _num(name: str, unit: str | None, scale: float = 1.0) -> Conv:
    def conv(value: Any, where: str) -> tuple[str, Any, str | None]:
        return name, finite(round(_number(value, where) * scale, 6), where), unit
    return conv


def _light_state(value: Any, where: str) -> tuple[str, Any, str | None]:
    return "illuminanceLevel", _level(value, where), None


def _command(value: Any, where: str) -> tuple[str, Any, str | None]:
    if not isinstance(value, Mapping) or not isinstance(value.get("state"), Mapping):
        raise TranslationError("a Command has a state object", where)
    return "illuminanceLevel", _level(value["state"], where + "/state"), None


def _flag(name: str, true: Any, false: Any) -> Conv:
    def conv(value: Any, where: str) -> tuple[str, Any, str | None]:
        if not isinstance(value, bool):
            raise TranslationError("a boolean is expected", where)
        return name, true if value else false, None
    return conv


def _percent_ratio(name: str) -> Conv:
    def conv(value: Any, where: str) -> tuple[str, Any, str | None]:
        return name, _level(value, where), None
    return conv


def _parking(value: Any, where: str) -> tuple[str, Any, str | None]:
    if not isinstance(value, str):
        raise TranslationError("an occupancy status is expected", where)
    status = {"Vacant": "free", "Occupied": "occupied", "Closed": "closed"}.get(value, "unknown")
    return "status", status, None


# (function type, TALQ attribute) -> conversion. Units: TALQ's unit names to UN/CEFACT codes.
_ATTRIBUTE_MAP: Final[Mapping[tuple[str, str], Conv]] = {
    ("LampActuatorFunction", "actualLightState"): _light_state,
    ("LampActuatorFunction", "feedbackLightCommand"): _command,
    ("LampMonitorFunction", "activePower"): _num("powerConsumption", "WTT"),
    ("LampMonitorFunction", "supplyVoltage"): _num("voltage", "VLT"),
    ("LampMonitorFunction", "supplyCurrent"): _num("current", "AMP"),
    ("LampMonitorFunction", "powerFactor"): _num("powerFactor", None),
    ("LampMonitorFunction", "activeEnergy"): _num("lifetimePowerConsumption", "KWH"),
    ("LampMonitorFunction", "lampFailure"): _flag("status", "defectiveLamp", "ok"),
    ("ElectricalMeterFunction", "totalPower"): _num("totalActivePower", "KWT"),
    ("ElectricalMeterFunction", "totalActiveEnergy"): _num("energyConsumed", "KWH"),
    ("ElectricalMeterFunction", "totalReactiveEnergy"): _num("reactiveEnergyConsumed", "K3"),
    ("ElectricalMeterFunction", "totalVAR"): _num("totalReactivePower", "KVR"),
    ("ElectricalMeterFunction", "frequency"): _num("frequency", "HTZ"),
    ("ElectricalMeterFunction", "totalPowerFactor"): _num("cosPhi", None),
    ("ElectricalMeterFunction", "phase1Voltage"): _num("voltageR", "VLT"),
    ("ElectricalMeterFunction", "phase2Voltage"): _num("voltageS", "VLT"),
    ("ElectricalMeterFunction", "phase3Voltage"): _num("voltageT", "VLT"),
    ("ElectricalMeterFunction", "phase1Current"): _num("intensityR", "AMP"),
    ("ElectricalMeterFunction", "phase2Current"): _num("intensityS", "AMP"),
    ("ElectricalMeterFunction", "phase3Current"): _num("intensityT", "AMP"),
    ("ElectricalMeterFunction", "phase1ActivePower"): _num("activePowerR", "KWT"),
    ("ElectricalMeterFunction", "phase2ActivePower"): _num("activePowerS", "KWT"),
    ("ElectricalMeterFunction", "phase3ActivePower"): _num("activePowerT", "KWT"),
    ("FillingLevelSensorFunction", "fillingPercentage"): _percent_ratio("fillingLevel"),
    ("ParticulateMatterSensorFunction", "pm1"): _num("pm1", "GQ"),
    ("ParticulateMatterSensorFunction", "pm2-5"): _num("pm25", "GQ"),
    ("ParticulateMatterSensorFunction", "pm10"): _num("pm10", "GQ"),
    ("ParkingSensorFunction", "occupancy"): _parking,
    ("TrafficCounterFunction", "roadUserNumber"): _num("intensity", None),
    ("TrafficCounterFunction", "averageSpeed"): _num("averageVehicleSpeed", "KMH"),
}
# Only attributes the models define are produced (jonction's outputs are strict-clean); containerFull
# has no home in them yet. A lamp's counters, the photocell's output and the cabinet's door and
# leakage events have no attribute on Streetlight or StreetlightControlCabinet: each becomes a
# DeviceMeasurement of its own (the Smart Data Models way), see _COUNTERS and _STATES.

_COUNTERS: Final[Mapping[str, tuple[str, str]]] = {
    "operatingHours": ("burningHours", "HUR"),  # hours, UN/CEFACT HUR
    "switchOnCounter": ("switchingCycles", "C62"),  # a count, UN/CEFACT C62 ("one")
}
"""LampMonitorFunction counters -> (DeviceMeasurement controlledProperty, UN/CEFACT unit code)."""


def _counter(device: str, name: str, value: Any, where: str, ctx: Mapping[str, Any], when: str | None) -> Entity:
    """One lamp counter as a DeviceMeasurement ``urn:ngsi-ld:DeviceMeasurement:<device>:<counter>``."""
    number: float = _number(value, where)
    if number < 0:
        raise TranslationError(f"{name} is a counter: it cannot be negative", where)
    controlled, unit = _COUNTERS[name]
    if isinstance(value, int):  # a switch counter stays an integer
        number = int(value)
    try:
        built = entity("DeviceMeasurement", urn("DeviceMeasurement", f"{device}:{controlled}"),
                       location=_location(ctx, device))
    except ModelError as exc:
        raise TranslationError(str(exc), "") from None
    built["numValue"] = prop(number, unit=unit, observed_at=when)
    built["unit"] = prop(unit)
    built["measurementType"] = prop("cumulative")
    built["controlledProperty"] = prop(controlled)
    built["deviceType"] = prop("Streetlight")
    built["refDevice"] = rel(urn("Streetlight", device))
    if when is not None:
        built["dateObserved"] = prop(when)
    return built


_STATES: Final[Mapping[tuple[str, str], tuple[str, str, str]]] = {
    # (function, attribute or event) -> (controlledProperty, textValue when true/ON, when false/OFF)
    ("PhotocellFunction", "photocellOutput"): ("photocellOutput", "on", "off"),
    ("PhotocellFunction", "photocellOutputOn"): ("photocellOutput", "on", "off"),
    ("CabinetMonitorFunction", "cabinetDoorOpen"): ("cabinetDoor", "open", "closed"),
    ("CabinetMonitorFunction", "leakageDetected"): ("earthLeakage", "detected", "none"),
}
"""Two-state signals (an AttributeBinary ON/OFF, an AttributeBoolean, or an event's start/end) kept as
a DeviceMeasurement ``textValue``: the photocell's output (ON: the light fell below its on level),
the cabinet's door and its earth-leakage fault."""


def _state(device: str, entity_type: str | None, key: tuple[str, str], value: Any, where: str,
           ctx: Mapping[str, Any], when: str | None) -> Entity:
    """One two-state signal as a DeviceMeasurement ``urn:ngsi-ld:DeviceMeasurement:<device>:<property>``."""
    controlled, on, off = _STATES[key]
    if isinstance(value, bool):
        state = value
    elif value in ("ON", "OFF"):
        state = value == "ON"
    else:
        raise TranslationError("a two-state value is ON/OFF (AttributeBinary) or a boolean", where)
    try:
        built = entity("DeviceMeasurement", urn("DeviceMeasurement", f"{device}:{controlled}"),
                       location=_location(ctx, device))
    except ModelError as exc:
        raise TranslationError(str(exc), "") from None
    built["textValue"] = prop(on if state else off, observed_at=when)
    built["measurementType"] = prop("instantaneous")
    built["controlledProperty"] = prop(controlled)
    built["deviceType"] = prop(entity_type or key[0])
    built["refDevice"] = rel(urn(entity_type or "Device", device))
    if when is not None:
        built["dateObserved"] = prop(when)
    return built


def entity_type_of(function_types: list[str] | tuple[str, ...]) -> str | None:
    """The entity type a device with these function types becomes (None: not mapped)."""
    for function_type, entity_type in _PRIORITY:
        if function_type in function_types:
            return entity_type
    return None


def device_context(device: Mapping[str, Any]) -> dict[str, Any]:
    """What the registry keeps of a TALQ Device: name, class, function id -> type, location (or None)."""
    functions: dict[str, str] = {}
    gases: dict[str, str] = {}
    location: list[float] | None = None
    for fn in device.get("functions") or []:
        if not isinstance(fn, Mapping) or not isinstance(fn.get("id"), str) or not isinstance(fn.get("type"), str):
            continue
        functions[fn["id"]] = fn["type"]
        gas = fn.get("gasName")
        if fn["type"] == "GasSensorFunction" and isinstance(gas, Mapping) and gas.get("value") in _GASES:
            gases[fn["id"]] = str(gas["value"])
        loc = fn.get("location")
        located = isinstance(loc, Mapping) and isinstance(loc.get("value"), Mapping)
        if fn["type"] == "LocationSensorFunction" and located and isinstance(loc, Mapping):
            lat, lon = loc["value"].get("latitude"), loc["value"].get("longitude")
            if _is_num(lat) and _is_num(lon) and -90 <= lat <= 90 and -180 <= lon <= 180:
                location = [float(lon), float(lat)]
    return {"name": str(device.get("name", "")), "class": str(device.get("class", "")),
            "functions": functions, "location": location, **({"gases": gases} if gases else {})}


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _context(raw_context: str | None) -> dict[str, Any]:
    if not raw_context:
        return {}
    try:
        loaded = json.loads(raw_context)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _location(ctx: Mapping[str, Any], address: str) -> dict[str, Any]:
    known = (ctx.get("devices") or {}).get(address) or {}
    loc = known.get("location") or ctx.get("default_location")
    if not (isinstance(loc, list) and len(loc) == 2 and all(_is_num(c) for c in loc)):
        raise TranslationError(f"no location known for device {address} (a LocationSensorFunction or "
                               "the source's default_location gives one)", "")
    return geo(point(float(loc[0]), float(loc[1])))


def _address(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TranslationError("an address string is expected", where)
    return value


def _base(entity_type: str, address: str, ctx: Mapping[str, Any], when: str | None) -> Entity:
    try:
        built = entity(entity_type, urn(entity_type, address), location=_location(ctx, address))
    except ModelError as exc:
        raise TranslationError(str(exc), "") from None
    known = (ctx.get("devices") or {}).get(address) or {}
    if known.get("name"):
        built["name"] = prop(str(known["name"]))
    links = ctx.get("links") or {}
    if entity_type == "Streetlight":
        built["status"] = prop(str(known.get("status") or "ok"))
        if links.get("group"):
            built["refStreetlightGroup"] = rel(urn("StreetlightGroup", str(links["group"])))
        if links.get("cabinet"):
            built["refStreetlightControlCabinet"] = rel(urn("StreetlightControlCabinet", str(links["cabinet"])))
    elif entity_type == "StreetlightControlCabinet":
        built["workingMode"] = prop("automatic")
        built["refStreetlightGroup"] = {"type": "Relationship",
                                        "object": [urn("StreetlightGroup", str(links.get("group") or address))]}
    elif entity_type == "ParkingSpot":
        built["status"] = prop("unknown")
        built["category"] = prop(["onStreet"])
        built["refParkingSite"] = rel(urn("OnStreetParking", str(ctx.get("gateway") or address)))
    elif entity_type in ("AirQualityObserved", "TrafficFlowObserved") and when is not None:
        built["dateObserved"] = prop(when)
    return built


def _devices(body: Any, ctx: Mapping[str, Any]) -> list[Entity]:
    items = body if isinstance(body, list) else [body]
    out: list[Entity] = []
    for i, device in enumerate(items):
        where = f"/{i}" if isinstance(body, list) else ""
        if not isinstance(device, Mapping):
            raise TranslationError("a Device object is expected", where)
        for key in ("address", "name", "class"):
            if not isinstance(device.get(key), str):
                raise TranslationError(f"a Device has a string '{key}'", f"{where}/{key}")
        if not isinstance(device.get("functions", []), list):
            raise TranslationError("'functions' is an array", f"{where}/functions")
        info = device_context(device)
        entity_type = entity_type_of(tuple(info["functions"].values()))
        if entity_type is None:
            continue
        before = (ctx.get("devices") or {}).get(device["address"]) or {}
        known = {"devices": {device["address"]: {**info, "location": info["location"] or before.get("location")}},
                 "default_location": ctx.get("default_location"), "gateway": ctx.get("gateway"),
                 "links": (ctx.get("links_by_device") or {}).get(device["address"]) or {}}
        built = _base(entity_type, device["address"], known, ctx.get("received_at"))
        out.append(built)
    return out


def _groups(body: Any, ctx: Mapping[str, Any]) -> list[Entity]:
    items = body if isinstance(body, list) else [body]
    out: list[Entity] = []
    for i, group in enumerate(items):
        where = f"/{i}" if isinstance(body, list) else ""
        if not isinstance(group, Mapping):
            raise TranslationError("a Group object is expected", where)
        address = _address(group.get("address"), f"{where}/address")
        members = group.get("members")
        if not isinstance(members, list):
            raise TranslationError("a Group has a 'members' array", f"{where}/members")
        lamps: list[str] = []
        location: list[float] | None = None
        linked: list[Entity] = []
        for j, member in enumerate(members):
            if not isinstance(member, Mapping):
                raise TranslationError("a member is a ResourceReference", f"{where}/members/{j}")
            member_address = _address(member.get("address"), f"{where}/members/{j}/address")
            known = (ctx.get("devices") or {}).get(member_address)
            if known is None:
                continue
            member_type = entity_type_of(tuple((known.get("functions") or {}).values()))
            if member_type == "Streetlight":
                lamps.append(urn("Streetlight", member_address))
            if member_type in ("Streetlight", "StreetlightControlCabinet"):
                # the member learns its group (a relationship the device registration could not know)
                member_ctx = {"devices": {member_address: known}, "default_location": ctx.get("default_location"),
                              "links": {"group": address}}
                linked.append(_base(member_type, member_address, member_ctx, None))
            location = location or known.get("location")
        group_ctx = {"devices": {address: {"location": location}}, "default_location": ctx.get("default_location")}
        built = _base("StreetlightGroup", address, group_ctx, None)
        if lamps:
            built["refStreetlight"] = {"type": "Relationship", "object": sorted(set(lamps))}
        out.append(built)
        out.extend(linked)
    return out


def _split_source(src: str) -> tuple[str, str]:
    """``<deviceAddress>/<functionId>`` (optionally ``talq://`` and a longer path) -> (device, function)."""
    text = src.removeprefix("talq://").strip("/")
    parts = [p for p in text.split("/") if p]
    if len(parts) < 2:
        return text, ""
    return parts[-2], parts[-1]


def _log_report(body: Any, ctx: Mapping[str, Any]) -> list[Entity]:
    if not isinstance(body, Mapping):
        raise TranslationError("a LogReport object is expected", "")
    entries = body.get("entries", [])
    if not isinstance(entries, list):
        raise TranslationError("'entries' is an array", "/entries")
    devices = ctx.get("devices") or {}
    built: dict[str, Entity] = {}
    for i, entry in enumerate(entries):
        where = f"/entries/{i}"
        data = entry.get("data") if isinstance(entry, Mapping) else None
        if not isinstance(data, Mapping):
            raise TranslationError("an entry has a 'data' object", f"{where}/data")
        where += "/data"
        kind = data.get("type")
        if kind not in ("AttributeLogData", "EventLogData", "StateChangeEventLogData"):
            raise TranslationError("type is AttributeLogData, EventLogData or StateChangeEventLogData", f"{where}/type")
        src = _address(data.get("srcAddress"), f"{where}/srcAddress")
        if kind == "StateChangeEventLogData":
            continue
        if kind == "EventLogData":
            # An event named like a status attribute (lampFailure, containerFull...): its start sets
            # the attribute, its end clears it; an event without startEndFlag is an occurrence.
            name = data.get("eventType")
            if not isinstance(name, str):
                raise TranslationError("an EventLogData has a string 'eventType'", f"{where}/eventType")
            flag = data.get("startEndFlag", True)
            if not isinstance(flag, bool):
                raise TranslationError("startEndFlag is a boolean", f"{where}/startEndFlag")
            value: Any = {"type": "AttributeBoolean", "value": flag}
            value_pointer = f"{where}/startEndFlag"
        else:
            name = data.get("attributeName")
            if not isinstance(name, str):
                raise TranslationError("an AttributeLogData has a string 'attributeName'", f"{where}/attributeName")
            value = data.get("attributeValue")
            if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
                raise TranslationError("an attributeValue is an Attribute object with a type",
                                       f"{where}/attributeValue")
            value_pointer = f"{where}/attributeValue/value"
        when_raw = value.get("timestamp", data.get("timestamp"))
        when: str | None = None
        if when_raw is not None:
            try:
                when = utc_time(when_raw) if isinstance(when_raw, str) else None
            except (ModelError, ValueError):
                when = None
            if when is None:
                raise TranslationError("an RFC 3339 date-time is expected", f"{where}/timestamp")
        device, function_id = _split_source(src)
        known = devices.get(device)
        if known is None:
            raise TranslationError(f"unknown device {device!r} (register it with POST /devices first)",
                                   f"{where}/srcAddress")
        function_type = (known.get("functions") or {}).get(function_id, "")
        if function_type == "LampMonitorFunction" and name in _COUNTERS and "value" in value:
            counter = _counter(device, name, value["value"], value_pointer, ctx, when)
            built[f"{device}\0{name}"] = counter  # after the lamp's own entity, keyed apart from it
            continue
        if (function_type, name) in _STATES and "value" in value:
            owner_type = entity_type_of(tuple((known.get("functions") or {}).values()))
            signal = _state(device, owner_type, (function_type, name), value["value"], value_pointer, ctx, when)
            built[f"{device}\0{_STATES[(function_type, name)][0]}"] = signal
            continue
        conv = _ATTRIBUTE_MAP.get((function_type, name))
        gas = (known.get("gases") or {}).get(function_id)
        if function_type == "GasSensorFunction" and name == "gasConcentration" and isinstance(gas, str) \
                and gas in _GASES:
            attribute, factor, gas_unit = _GASES[gas]
            conv = _num(attribute, gas_unit, factor)
        if conv is None or "value" not in value:
            continue
        mapped = conv(value["value"], value_pointer)
        if mapped is None:
            continue
        attr, attr_value, unit = mapped
        entity_type = entity_type_of(tuple((known.get("functions") or {}).values()))
        if entity_type is None:
            continue
        if entity_type == "StreetlightControlCabinet" and attr in ("status",):
            continue
        target = built.get(device)
        if target is None:
            one = {**ctx, "links": (ctx.get("links_by_device") or {}).get(device) or {}}
            target = built[device] = _base(entity_type, device, one, when)
        target[attr] = prop(attr_value, unit=unit, observed_at=when)
        if attr == "illuminanceLevel":
            target["powerState"] = prop("on" if attr_value > 0 else "off", observed_at=when)
        if entity_type in ("AirQualityObserved", "TrafficFlowObserved") and when is not None:
            target["dateObserved"] = prop(when)
        if entity_type == "WasteContainer" and attr == "fillingLevel":
            target.setdefault("status", prop("ok"))
    return list(built.values())


def translate(resource: str, body: Any, raw_context: str | None) -> list[Entity]:
    """Entities for one accepted TALQ request: ``resource`` is devices, groups or log-reports."""
    ctx = _context(raw_context)
    if resource == "devices":
        return _devices(body, ctx)
    if resource == "groups":
        return _groups(body, ctx)
    if resource == "log-reports":
        return _log_report(body, ctx)
    return []
