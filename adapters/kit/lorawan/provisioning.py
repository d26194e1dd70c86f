"""Provisioning: which device is which asset — declared in config or a CSV, or matched by a rule.

A device record binds a DevEUI to a profile, a tenant, the id and name of the entity it
measures, its location (any CRS, reprojected to WGS84 with :mod:`gateway.crs`), the profile's
parameters (container height, litres per pulse...) and static attributes (``storedWasteKind``,
``refStreetlightGroup``...). Uplinks from devices that are neither declared nor matched by a
rule are refused with a reason (they become dead letters).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemas
from adapters.kit.lorawan.config import DEVICE_SCHEMA
from adapters.kit.lorawan.normalize import dev_eui as normalize_eui
from adapters.kit.lorawan.normalize import number
from adapters.kit.lorawan.profile import Profile
from adapters.kit.lorawan.uplink import Uplink
from gateway.crs import to_wgs84
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import ModelError, geo, is_uri, point, urn
from gateway.pointer import pointer

MAX_CSV_BYTES = 16 * 1024 * 1024
"""Largest provisioning CSV read (about 100 000 devices)."""

DEVICES_FILE = "devices.json"
"""Devices added at run time, in the source's state folder."""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """One provisioned device and the asset it measures."""

    dev_eui: str
    profile: Profile
    entity_id: str
    tenant: str | None = None
    name: str | None = None
    location: Mapping[str, Any] | None = None
    """GeoJSON geometry in WGS84."""
    params: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Static attributes in keyValues form, converted to NGSI-LD with the model's NGSI types."""
    auto: bool = False
    static: Mapping[str, Any] = field(default_factory=dict)
    """name, location and static attributes as NGSI-LD attributes, built once."""

    def __post_init__(self) -> None:
        static: dict[str, Any] = {}
        if self.name:
            static["name"] = {"type": "Property", "value": self.name}
        if self.location is not None:
            static["location"] = geo(self.location)
        for key, value in self.attributes.items():
            static[key] = static_attribute(self.profile.entity_type, key, value)
        object.__setattr__(self, "static", static)


@dataclass(frozen=True, slots=True)
class Rule:
    """An auto-provisioning rule: devices matching ``match`` get ``profile`` and these settings."""

    profile: Profile
    dev_eui_prefix: str | None = None
    application: str | None = None
    device_profile: str | None = None
    """Glob over the network server's device-profile / model name (``EM310*``)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    tenant: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    entity_id: str | None = None
    """Template with ``{dev_eui}`` and ``{type}`` (default ``urn:ngsi-ld:<type>:<dev_eui>``)."""

    def matches(self, uplink: Uplink) -> bool:
        """Whether an uplink's device falls under this rule."""
        if self.dev_eui_prefix is not None and not uplink.dev_eui.startswith(self.dev_eui_prefix):
            return False
        if self.application is not None and self.application not in uplink.applications:
            return False
        if self.device_profile is not None and not fnmatch.fnmatchcase(uplink.device_profile or "",
                                                                       self.device_profile):
            return False
        return all(uplink.tags.get(k) == v for k, v in self.tags.items())


def _rounded(value: Any) -> Any:
    # 1e-7 degree is about 1 cm: more digits only carry the reprojection library's noise.
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 7) if isinstance(value, float) else value


def location_from(spec: Any, where: str) -> dict[str, Any]:
    """A WGS84 GeoJSON geometry (rounded to 1e-7°) from ``{lon, lat}``, ``{x, y, crs}`` or GeoJSON (+ ``crs``)."""
    geometry = _location(spec, where)
    if "coordinates" in geometry:
        geometry["coordinates"] = _rounded(geometry["coordinates"])
    return geometry


def _location(spec: Any, where: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise ConfigInvalid(f"{where}: a location must be a mapping", [f"{where}: expected {{lon, lat}}, "
                                                                       "{x, y, crs} or a GeoJSON geometry"])
    try:
        if "lon" in spec or "lat" in spec:
            lon, lat = number(spec.get("lon"), f"{where}/lon"), number(spec.get("lat"), f"{where}/lat")
            if lon is None or lat is None:
                raise ConfigInvalid(f"{where}: lon and lat are both required", [f"{where}: lon and lat required"])
            return to_wgs84(point(float(lon), float(lat)), spec.get("crs", "EPSG:4326"))
        if "x" in spec or "y" in spec:
            x, y = number(spec.get("x"), f"{where}/x"), number(spec.get("y"), f"{where}/y")
            if x is None or y is None or "crs" not in spec:
                raise ConfigInvalid(f"{where}: x, y and crs are all required", [f"{where}: x, y and crs required"])
            return to_wgs84(point(float(x), float(y)), spec["crs"])
        geometry = {k: v for k, v in spec.items() if k != "crs"}
        return to_wgs84(geometry, spec.get("crs", "EPSG:4326"))
    except (ModelError, TranslationError) as exc:
        raise ConfigInvalid(f"{where}: {exc}", [f"{where}: {exc}"]) from exc


def _entity_id(template: str | None, profile: Profile, eui: str, where: str, problems: list[str]) -> str:
    if template is None:
        return urn(profile.entity_type, eui)
    value = template.format(dev_eui=eui, type=profile.entity_type) if "{" in template else template
    if not is_uri(value):
        problems.append(f"{where}/entity_id: {value!r} is not a URI")
    return value


class Registry:
    """Declared devices by DevEUI, then auto-provisioning rules in order."""

    def __init__(self, devices: Sequence[DeviceRecord], rules: Sequence[Rule] = ()) -> None:
        self.devices: dict[str, DeviceRecord] = {d.dev_eui: d for d in devices}
        self.rules = tuple(rules)

    def __len__(self) -> int:
        return len(self.devices)

    def known(self, eui: str) -> DeviceRecord | None:
        """The declared device with this DevEUI, if any."""
        return self.devices.get(eui)

    def resolve(self, uplink: Uplink) -> DeviceRecord | None:
        """The device record for an uplink: declared, or built from the first matching rule."""
        record = self.devices.get(uplink.dev_eui)
        if record is not None:
            return record
        for rule in self.rules:
            if rule.matches(uplink):
                problems: list[str] = []
                entity_id = _entity_id(rule.entity_id, rule.profile, uplink.dev_eui, "/auto_provision", problems)
                location = point(*uplink.location) if uplink.location is not None else None
                return DeviceRecord(dev_eui=uplink.dev_eui, profile=rule.profile, entity_id=entity_id,
                                    tenant=rule.tenant, name=uplink.device_name, location=location,
                                    params=rule.params, attributes=rule.attributes, auto=True)
        return None

    def require(self, uplink: Uplink, pointer: str) -> DeviceRecord:
        """Like :meth:`resolve`, but an unknown device is a TranslationError naming the DevEUI."""
        record = self.resolve(uplink)
        if record is None:
            raise TranslationError(
                f"unknown device {uplink.dev_eui}: not provisioned (devices / devices_csv) and no "
                "auto_provision rule matches it", pointer)
        return record

    # ------------------------------------------------------------------ from config

    def add(self, record: DeviceRecord) -> None:
        """Declare one more device (added at run time, already validated and not yet known)."""
        self.devices[record.dev_eui] = record

    @classmethod
    def from_config(cls, config: Mapping[str, Any], profiles: Mapping[str, Profile],
                    stored: Sequence[DeviceRecord] = ()) -> Registry:
        """Build the registry from an adapter config; ConfigInvalid lists every problem at once.

        ``stored`` are devices added at run time (see :class:`StoredDevices`): the config's
        declaration of a DevEUI wins over a stored one, so copying a device into the config is safe.
        """
        problems: list[str] = []
        records: list[DeviceRecord] = []
        for index, item in enumerate(config.get("devices", ())):
            record = _record(item, profiles, f"/devices/{index}", problems)
            if record is not None:
                records.append(record)
        if config.get("devices_csv"):
            records.extend(_csv_records(Path(config["devices_csv"]), profiles, problems))
        seen: dict[str, int] = {}
        for record in records:
            seen[record.dev_eui] = seen.get(record.dev_eui, 0) + 1
        problems.extend(f"DevEUI {eui} is provisioned {n} times" for eui, n in seen.items() if n > 1)
        records.extend(r for r in stored if r.dev_eui not in seen)
        rules = []
        for index, item in enumerate(config.get("auto_provision", ())):
            rule = _rule(item, profiles, f"/auto_provision/{index}", problems)
            if rule is not None:
                rules.append(rule)
        if problems:
            raise ConfigInvalid("LoRaWAN provisioning is invalid", problems)
        return cls(records, rules)


def device_record(item: Any, profiles: Mapping[str, Profile]) -> DeviceRecord:
    """One device in the config's ``devices`` form, validated as the config's are.

    ConfigInvalid lists every problem, each as ``<JSON pointer in item>: <reason>``.
    """
    problems = [f"{pointer(e.absolute_path)}: {e.message}" for e in schemas.problems(DEVICE_SCHEMA, item)]
    if problems:
        raise ConfigInvalid("the device is invalid", problems)
    record = _record(item, profiles, "", problems)
    if problems or record is None:
        raise ConfigInvalid("the device is invalid", problems or ["/dev_eui: invalid"])
    return record


def device_summary(record: DeviceRecord) -> dict[str, Any]:
    """A device as plain JSON (what the admin API lists)."""
    return {"devEui": record.dev_eui, "profile": record.profile.id, "entityType": record.profile.entity_type,
            "entityId": record.entity_id, "tenant": record.tenant, "name": record.name,
            "location": dict(record.location) if record.location is not None else None,
            "params": dict(record.params), "attributes": dict(record.attributes), "auto": record.auto}


class StoredDevices:
    """Devices added at run time, kept in ``<state_dir>/devices.json`` in the config's ``devices`` form.

    A JSON list rather than a database: the devices added by hand are few, the file reads like the
    config (an operator can move an entry into it), and it goes through the same validation at start.
    Written whole to a temporary file, flushed and renamed, so a crash leaves the old or the new list.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / DEVICES_FILE

    def items(self) -> list[dict[str, Any]]:
        """The stored device entries (an empty list when the file does not exist yet)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size > MAX_CSV_BYTES:
            raise ConfigInvalid(f"{self.path}: {size} bytes, over the {MAX_CSV_BYTES}-byte limit")
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ConfigInvalid(f"{self.path}: cannot read the devices added at run time: {exc}") from exc
        if not isinstance(doc, list) or not all(isinstance(i, dict) for i in doc):
            raise ConfigInvalid(f"{self.path}: expected a JSON list of devices")
        return doc

    def records(self, profiles: Mapping[str, Profile]) -> list[DeviceRecord]:
        """The stored devices, validated; ConfigInvalid names the file and entry of each problem."""
        problems: list[str] = []
        records = []
        for index, item in enumerate(self.items()):
            record = _record(item, profiles, f"{self.path.name}:/{index}", problems)
            if record is not None:
                records.append(record)
        if problems:
            raise ConfigInvalid("devices added at run time are invalid", problems)
        return records

    def append(self, item: Mapping[str, Any]) -> None:
        """Add one entry durably (write a temporary file, fsync, rename)."""
        entries = [*self.items(), dict(item)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            json.dump(entries, out, ensure_ascii=False, indent=1)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)


def _profile(name: Any, profiles: Mapping[str, Profile], where: str, problems: list[str]) -> Profile | None:
    profile = profiles.get(str(name)) if name else None
    if profile is None:
        problems.append(f"{where}/profile: unknown device profile {name!r} (known: {', '.join(sorted(profiles))})")
    return profile


def _record(item: Mapping[str, Any], profiles: Mapping[str, Profile], where: str,
            problems: list[str]) -> DeviceRecord | None:
    try:
        eui = normalize_eui(item.get("dev_eui"), f"{where}/dev_eui")
    except TranslationError as exc:
        problems.append(f"{where}/dev_eui: {exc.reason}")
        return None
    profile = _profile(item.get("profile"), profiles, where, problems)
    if profile is None:
        return None
    params, found = profile.parameters_for(item.get("params") or {}, where)
    problems.extend(found)
    location = None
    if item.get("location") is not None:
        try:
            location = location_from(item["location"], f"{where}/location")
        except ConfigInvalid as exc:
            problems.extend(exc.problems)
    attributes = dict(item.get("attributes") or {})
    present = set(attributes) | ({"location"} if location is not None else set())
    problems.extend(f"{where}: profile {profile.id} needs {name!r} for every device"
                    for name in profile.requires if name not in present)
    entity_id = _entity_id(item.get("entity_id"), profile, eui, where, problems)
    tenant = item.get("tenant")
    return DeviceRecord(dev_eui=eui, profile=profile, entity_id=entity_id,
                        tenant=None if tenant is None else str(tenant), name=item.get("name"),
                        location=location, params=params, attributes=attributes)


_CSV_FIXED = ("dev_eui", "profile", "tenant", "entity_id", "name", "lon", "lat", "x", "y", "crs")


def _csv_records(path: Path, profiles: Mapping[str, Profile], problems: list[str]) -> list[DeviceRecord]:
    """Devices from a CSV: fixed columns plus ``param.<name>`` and ``attr.<name>`` columns."""
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            problems.append(f"{path}: {size} bytes, over the {MAX_CSV_BYTES}-byte limit")
            return []
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read provisioning CSV: {exc}")
        return []
    sample = text[:4096]
    delimiter = ";" if sample.count(";") > sample.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    columns = reader.fieldnames or []
    unknown = [c for c in columns if c not in _CSV_FIXED and not c.startswith(("param.", "attr."))]
    if unknown:
        problems.append(f"{path}: unknown column(s) {unknown} (expected {', '.join(_CSV_FIXED)}, "
                        "param.<name>, attr.<name>)")
        return []
    for needed in ("dev_eui", "profile"):
        if needed not in columns:
            problems.append(f"{path}: column {needed!r} is required")
    if problems:
        return []
    records = []
    for row in reader:
        where = f"{path.name}:{reader.line_num}"
        item: dict[str, Any] = {k: v for k, v in row.items() if k in _CSV_FIXED[:5] and v not in (None, "")}
        if row.get("lon") or row.get("lat"):
            item["location"] = {"lon": row.get("lon"), "lat": row.get("lat")}
            if row.get("crs"):
                item["location"]["crs"] = row["crs"]
        elif row.get("x") or row.get("y"):
            item["location"] = {"x": row.get("x"), "y": row.get("y"), "crs": row.get("crs")}
        item["params"] = {k[6:]: v for k, v in row.items() if k.startswith("param.") and v not in (None, "")}
        item["attributes"] = {k[5:]: v for k, v in row.items() if k.startswith("attr.") and v not in (None, "")}
        record = _record(item, profiles, where, problems)
        if record is not None:
            records.append(record)
    return records


def _rule(item: Mapping[str, Any], profiles: Mapping[str, Profile], where: str,
          problems: list[str]) -> Rule | None:
    profile = _profile(item.get("profile"), profiles, where, problems)
    if profile is None:
        return None
    match = item.get("match") or {}
    if not match:
        problems.append(f"{where}/match: a rule needs at least one condition (a rule matching every device "
                        "would provision strangers)")
    prefix = match.get("dev_eui_prefix")
    if prefix is not None:
        prefix = str(prefix).lower().replace("-", "").replace(":", "")
    params, found = profile.parameters_for(item.get("params") or {}, where)
    problems.extend(found)
    attributes = dict(item.get("attributes") or {})
    missing = [n for n in profile.requires if n not in attributes and n != "location"]
    problems.extend(f"{where}: profile {profile.id} needs {name!r}" for name in missing)
    template = item.get("entity_id")
    if template is not None:
        _entity_id(template, profile, "0000000000000000", where, problems)
    tenant = item.get("tenant")
    return Rule(profile=profile, dev_eui_prefix=prefix, application=match.get("application"),
                device_profile=match.get("device_profile"), tags=dict(match.get("tags") or {}),
                tenant=None if tenant is None else str(tenant), params=params, attributes=attributes,
                entity_id=template)


def static_attribute(entity_type: str, name: str, value: Any) -> dict[str, Any]:
    """A provisioned keyValues attribute as NGSI-LD, using the model's declared NGSI type."""
    declared = None
    try:
        import schemas

        if entity_type in schemas.MODELS:
            spec = schemas.model(entity_type).attributes.get(name)
            declared = spec.ngsi_type if spec is not None else None
    except (ImportError, AttributeError, KeyError):
        declared = None
    if declared is None and name.startswith("ref"):
        declared = "Relationship"
    if declared == "Relationship":
        if isinstance(value, list):
            return {"type": "ListRelationship", "objectList": [{"object": str(v)} for v in value]}
        return {"type": "Relationship", "object": str(value)}
    if declared == "GeoProperty" and isinstance(value, Mapping):
        return geo(value)
    return {"type": "Property", "value": value}
