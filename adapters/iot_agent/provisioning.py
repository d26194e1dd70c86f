"""Service groups and devices, as the IoT Agents provision them, kept durably in SQLite.

A *service group* (``/iot/services``, the IoT Agents' config group) binds an ``apikey`` and a
``resource`` to an ``entity_type`` and default attributes; a *device* (``/iot/devices``) binds a
``device_id`` to an entity and its own attributes, static attributes and commands. Both are
scoped by the ``fiware-service`` (the NGSI-LD tenant) and ``fiware-servicepath`` headers.

The documents are kept as sent (fields jonction does not use, such as ``cbroker`` or
``timezone``, are kept and returned), checked when they arrive (expressions parsed, names and
types checked), in memory for the hot path and in ``<state_dir>/iot_agent.sqlite`` (written before
the API answers), so that provisioning survives a restart. Groups and devices declared in the
gateway YAML are loaded at start and cannot be changed through the API.

Commands requested for a device are queued in the same database until the device fetches
them (HTTP polling) or they are published (MQTT), so that a queued command survives a restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from adapters.iot_agent.expressions import ExpressionError, compile_expression
from adapters.iot_agent.translate import entity_id_of
from gateway.errors import ConfigInvalid

MAX_GROUPS: Final = 10_000
MAX_DEVICES: Final = 1_000_000
MAX_ATTRIBUTES: Final = 256
MAX_TEXT: Final = 1024
DEFAULT_SUBSERVICE: Final = "/"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS service_groups (
    service TEXT NOT NULL, subservice TEXT NOT NULL, resource TEXT NOT NULL, apikey TEXT NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (resource, apikey));
CREATE TABLE IF NOT EXISTS devices (
    service TEXT NOT NULL, subservice TEXT NOT NULL, device_id TEXT NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (service, subservice, device_id));
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, subservice TEXT NOT NULL,
    device_id TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, status TEXT NOT NULL);
"""


class ProvisioningError(Exception):
    """A provisioning request the IoT Agents would refuse: ``name`` and HTTP ``code`` as theirs."""

    def __init__(self, name: str, message: str, code: int) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.code = code

    def to_json(self) -> dict[str, str]:
        """The IoT Agents' error body: ``{"name", "message"}``."""
        return {"name": self.name, "message": self.message}


def wrong_syntax(message: str) -> ProvisioningError:
    """A document that does not follow the provisioning format (400 WRONG_SYNTAX)."""
    return ProvisioningError("WRONG_SYNTAX", f"Wrong syntax in request: {message}", 400)


def _text(doc: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise wrong_syntax(f"{where}/{key} is required")
        return None
    if not isinstance(value, str) or (required and not value) or len(value) > MAX_TEXT:
        raise wrong_syntax(f"{where}/{key} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


def _check_attributes(items: Any, where: str, *, static: bool = False, commands: bool = False) -> None:
    if items is None:
        return
    if not isinstance(items, list) or len(items) > MAX_ATTRIBUTES:
        raise wrong_syntax(f"{where} must be an array of at most {MAX_ATTRIBUTES} attributes")
    for i, item in enumerate(items):
        here = f"{where}/{i}"
        if not isinstance(item, dict):
            raise wrong_syntax(f"{here} must be an object")
        name = _text(item, "name", here, required=not (item.get("object_id") and not static and not commands))
        if name in ("id", "type", "@context"):
            raise wrong_syntax(f"{here}/name {name!r} is reserved")
        _text(item, "object_id", here)
        if item.get("type") is not None and not isinstance(item.get("type"), str):
            raise wrong_syntax(f"{here}/type must be a string")
        if static and "value" not in item:
            raise wrong_syntax(f"{here}/value is required for a static attribute")
        expression = item.get("expression")
        if expression is not None:
            try:
                compile_expression(expression)
            except ExpressionError as exc:
                raise ProvisioningError("INVALID_EXPRESSION",
                                        f"Invalid expression in evaluation [{expression}]: {exc}", 400) from exc
        metadata = item.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise wrong_syntax(f"{here}/metadata must be an object")


def _check_common(doc: Mapping[str, Any], where: str) -> None:
    entity_type = _text(doc, "entity_type", where)
    if entity_type is not None and not entity_type.replace("_", "").replace("-", "").isalnum():
        raise wrong_syntax(f"{where}/entity_type {entity_type!r} must be letters, digits, '_' or '-'")
    _check_attributes(doc.get("attributes"), f"{where}/attributes")
    _check_attributes(doc.get("lazy"), f"{where}/lazy")
    _check_attributes(doc.get("static_attributes"), f"{where}/static_attributes", static=True)
    _check_attributes(doc.get("commands"), f"{where}/commands", commands=True)
    explicit = doc.get("explicitAttrs")
    if explicit is not None and not isinstance(explicit, bool) and not (
            isinstance(explicit, list) and all(isinstance(x, str) for x in explicit)):
        raise wrong_syntax(f"{where}/explicitAttrs must be a boolean or an array of attribute names")
    for flag in ("autoprovision", "timestamp"):
        if doc.get(flag) is not None and not isinstance(doc.get(flag), bool):
            raise wrong_syntax(f"{where}/{flag} must be a boolean")


def check_group(doc: Any, where: str) -> dict[str, Any]:
    """A service group checked (WRONG_SYNTAX / INVALID_EXPRESSION otherwise), with its defaults."""
    if not isinstance(doc, dict):
        raise wrong_syntax(f"{where} must be an object")
    _text(doc, "apikey", where, required=True)
    resource = _text(doc, "resource", where) or "/iot/d"
    if not resource.startswith("/"):
        raise wrong_syntax(f"{where}/resource must start with '/'")
    _check_common(doc, where)
    return {**doc, "resource": resource}


def check_device(doc: Any, where: str) -> dict[str, Any]:
    """A device checked (WRONG_SYNTAX / INVALID_EXPRESSION otherwise)."""
    if not isinstance(doc, dict):
        raise wrong_syntax(f"{where} must be an object")
    _text(doc, "device_id", where, required=True)
    _text(doc, "entity_name", where)
    _text(doc, "apikey", where)
    for key in ("protocol", "transport", "endpoint"):
        _text(doc, key, where)
    _check_common(doc, where)
    return dict(doc)


@dataclass(frozen=True, slots=True)
class Group:
    """A stored service group."""

    service: str
    subservice: str
    doc: Mapping[str, Any]
    configured: bool = False
    """Declared in the gateway YAML (read-only through the API)."""

    @property
    def apikey(self) -> str:
        """The group's API key."""
        return str(self.doc["apikey"])

    @property
    def resource(self) -> str:
        """The group's resource (``/iot/d``, ``/iot/json``...)."""
        return str(self.doc.get("resource", "/iot/d"))


@dataclass(frozen=True, slots=True)
class Device:
    """A stored device."""

    service: str
    subservice: str
    doc: Mapping[str, Any]
    configured: bool = False

    @property
    def device_id(self) -> str:
        """The device id (``i=`` of a measure, the topic's second level)."""
        return str(self.doc["device_id"])


@dataclass(frozen=True, slots=True)
class Command:
    """A command queued for a device."""

    id: int
    service: str
    subservice: str
    device_id: str
    name: str
    value: Any
    status: str


def effective(group: Group | None, device: Device | None, *, service: str, subservice: str,
              device_id: str) -> dict[str, Any]:
    """The definition the translation uses: the device's fields over its group's (attributes merged)."""
    g: Mapping[str, Any] = group.doc if group is not None else {}
    d: Mapping[str, Any] = device.doc if device is not None else {}

    def merged(key: str) -> list[Any]:
        by_name: dict[str, Any] = {}
        for item in [*(g.get(key) or []), *(d.get(key) or [])]:
            by_name[str(item.get("object_id") or item.get("name"))] = item
        return list(by_name.values())

    def first(key: str, default: Any = None) -> Any:
        if d.get(key) is not None:
            return d[key]
        return g.get(key, default)

    out: dict[str, Any] = {
        "service": service, "subservice": subservice, "device_id": device_id,
        "entity_type": first("entity_type", "Thing"),
        "attributes": merged("attributes") + merged("lazy"),
        "static_attributes": merged("static_attributes"), "commands": merged("commands"),
        "explicitAttrs": first("explicitAttrs", False), "timestamp": first("timestamp", False),
        "entity_name": d.get("entity_name"),
    }
    # Every message carries this (and the raw archive keeps it): defaults are left out.
    return {k: v for k, v in out.items() if v or k in ("service", "device_id", "entity_type")}


class Registry:
    """Groups, devices and queued commands: in memory, written through to SQLite."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.groups: dict[tuple[str, str], Group] = {}
        """By (resource, apikey)."""
        self.devices: dict[tuple[str, str, str], Device] = {}
        """By (service, subservice, device_id)."""
        self._by_key: dict[tuple[str, str], Device] = {}
        self._definitions: dict[tuple[str, str, str, str], tuple[str, str, str]] = {}
        self._by_entity: dict[tuple[str, str], Device] | None = None
        self.generation = 0
        """Incremented at every change (caches keyed on it)."""

    # ------------------------------------------------------------------ storage

    def open(self) -> None:
        """Open (create) the database and load what it holds; idempotent."""
        if self._db is not None or self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # provisioning is rare: every answer is on disk
        db.executescript(_SCHEMA)
        self._db = db
        for service, subservice, doc in db.execute("SELECT service, subservice, doc FROM service_groups"):
            group = Group(service, subservice, json.loads(doc))
            self.groups.setdefault((group.resource, group.apikey), group)
        for service, subservice, doc in db.execute("SELECT service, subservice, doc FROM devices"):
            device = Device(service, subservice, json.loads(doc))
            self.devices.setdefault((service, subservice, device.device_id), device)
        self._changed()

    def close(self) -> None:
        """Close the database; idempotent."""
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _write(self, sql: str, args: Sequence[Any]) -> int:
        if self._db is None:
            if self.path is not None:  # closed (stopping): never answer a change that is not on disk
                raise ProvisioningError("SERVICE_UNAVAILABLE", "the provisioning store is closed, retry later", 503)
            return 0
        with self._lock:
            cursor = self._db.execute(sql, args)
            return int(cursor.lastrowid or 0)

    def _changed(self) -> None:
        self.generation += 1
        self._definitions.clear()
        self._by_entity = None
        by_key: dict[tuple[str, str], Device] = {}
        for device in self.devices.values():
            apikey = device.doc.get("apikey") or self._group_apikey(device.service, device.subservice,
                                                                     device.doc.get("entity_type"))
            if apikey:
                by_key.setdefault((str(apikey), device.device_id), device)
        self._by_key = by_key

    def _group_apikey(self, service: str, subservice: str, entity_type: Any) -> str | None:
        candidates = [g for g in self.groups.values() if g.service == service and g.subservice == subservice]
        typed = [g for g in candidates if entity_type and g.doc.get("entity_type") == entity_type]
        chosen = (typed or candidates)[:1]
        return chosen[0].apikey if chosen else None

    # ------------------------------------------------------------------ provisioning from the gateway YAML

    def load_configured(self, groups: Iterable[Mapping[str, Any]], devices: Iterable[Mapping[str, Any]]) -> None:
        """Add the YAML's groups and devices (read-only); ConfigInvalid lists every problem."""
        problems: list[str] = []
        for i, raw in enumerate(groups):
            where = f"/services/{i}"
            try:
                doc = check_group({k: v for k, v in raw.items() if k not in ("service", "subservice")}, where)
            except ProvisioningError as exc:
                problems.append(exc.message)
                continue
            group = Group(str(raw.get("service", "")).lower(), str(raw.get("subservice", DEFAULT_SUBSERVICE)), doc,
                          configured=True)
            self.groups[(group.resource, group.apikey)] = group
        for i, raw in enumerate(devices):
            where = f"/devices/{i}"
            try:
                doc = check_device({k: v for k, v in raw.items() if k not in ("service", "subservice")}, where)
            except ProvisioningError as exc:
                problems.append(exc.message)
                continue
            device = Device(str(raw.get("service", "")).lower(), str(raw.get("subservice", DEFAULT_SUBSERVICE)),
                            doc, configured=True)
            self.devices[(device.service, device.subservice, device.device_id)] = device
        if problems:
            raise ConfigInvalid("iot_agent: invalid provisioning in the configuration", problems)
        self._changed()

    # ------------------------------------------------------------------ service groups

    def list_groups(self, service: str, subservice: str | None) -> list[Group]:
        """The groups of a service (and service path, unless None or ``/*``)."""
        return [g for g in self.groups.values()
                if g.service == service and (subservice in (None, "/*") or g.subservice == subservice)]

    def add_groups(self, service: str, subservice: str, docs: Sequence[Any]) -> None:
        """Add groups (all or none): WRONG_SYNTAX, or DUPLICATE_GROUP for a (resource, apikey) in use."""
        checked = [check_group(doc, f"/services/{i}") for i, doc in enumerate(docs)]
        keys = [(d["resource"], d["apikey"]) for d in checked]
        for resource, apikey in keys:
            if (resource, apikey) in self.groups or keys.count((resource, apikey)) > 1:
                raise ProvisioningError(
                    "DUPLICATE_GROUP", f"A device configuration already exists for resource {resource} and "
                                       f"API Key {apikey}", 409)
        if len(self.groups) + len(checked) > MAX_GROUPS:
            raise ProvisioningError("BAD_REQUEST", f"more than {MAX_GROUPS} service groups", 400)
        for doc in checked:
            self._write("INSERT INTO service_groups VALUES (?, ?, ?, ?, ?)",
                        (service, subservice, doc["resource"], doc["apikey"], json.dumps(doc)))
            self.groups[(doc["resource"], doc["apikey"])] = Group(service, subservice, doc)
        self._changed()

    def _find_group(self, service: str, subservice: str, resource: str | None, apikey: str | None) -> Group:
        for group in self.list_groups(service, subservice):
            if (resource is None or group.resource == resource) and (apikey is None or group.apikey == apikey):
                return group
        raise ProvisioningError("DEVICE_GROUP_NOT_FOUND",
                                f"Couldn't find device group for fields: [resource, apikey] and values: "
                                f"[{resource}, {apikey}]", 404)

    def _writable(self, item: Group | Device) -> None:
        if item.configured:
            raise ProvisioningError("CONFIGURED_IN_GATEWAY",
                                    "This entry is declared in the gateway configuration (YAML): change it there",
                                    409)

    def update_group(self, service: str, subservice: str, resource: str | None, apikey: str | None,
                     changes: Any) -> None:
        """Merge ``changes`` into the group found by resource and apikey (DEVICE_GROUP_NOT_FOUND if none)."""
        group = self._find_group(service, subservice, resource, apikey)
        self._writable(group)
        if not isinstance(changes, dict):
            raise wrong_syntax("the body must be an object")
        doc = check_group({**group.doc, **changes}, "")
        key = (doc["resource"], doc["apikey"])
        if key != (group.resource, group.apikey) and key in self.groups:
            raise ProvisioningError("DUPLICATE_GROUP", f"A device configuration already exists for resource "
                                                       f"{key[0]} and API Key {key[1]}", 409)
        self._write("DELETE FROM service_groups WHERE resource = ? AND apikey = ?", (group.resource, group.apikey))
        self._write("INSERT INTO service_groups VALUES (?, ?, ?, ?, ?)",
                    (service, subservice, doc["resource"], doc["apikey"], json.dumps(doc)))
        del self.groups[(group.resource, group.apikey)]
        self.groups[key] = Group(service, subservice, doc)
        self._changed()

    def delete_group(self, service: str, subservice: str, resource: str | None, apikey: str | None,
                     *, with_devices: bool = False) -> None:
        """Delete one group (and, with ``with_devices``, the devices using its apikey)."""
        group = self._find_group(service, subservice, resource, apikey)
        self._writable(group)
        self._write("DELETE FROM service_groups WHERE resource = ? AND apikey = ?", (group.resource, group.apikey))
        del self.groups[(group.resource, group.apikey)]
        if with_devices:
            for device in [d for (k, _), d in self._by_key.items() if k == group.apikey and not d.configured]:
                self._delete_device(device)
        self._changed()

    # ------------------------------------------------------------------ devices

    def list_devices(self, service: str, subservice: str | None) -> list[Device]:
        """The devices of a service (and service path, unless None or ``/*``)."""
        return [d for d in self.devices.values()
                if d.service == service and (subservice in (None, "/*") or d.subservice == subservice)]

    def get_device(self, service: str, subservice: str | None, device_id: str) -> Device:
        """One device; DEVICE_NOT_FOUND if the service has none by that id."""
        for device in self.list_devices(service, subservice):
            if device.device_id == device_id:
                return device
        raise ProvisioningError("DEVICE_NOT_FOUND", f"No device was found with id:{device_id}", 404)

    def add_devices(self, service: str, subservice: str, docs: Sequence[Any]) -> None:
        """Add devices (all or none): WRONG_SYNTAX, or DUPLICATE_DEVICE_ID for an id in use."""
        checked = [check_device(doc, f"/devices/{i}") for i, doc in enumerate(docs)]
        ids = [d["device_id"] for d in checked]
        for device_id in ids:
            if (service, subservice, device_id) in self.devices or ids.count(device_id) > 1:
                raise ProvisioningError("DUPLICATE_DEVICE_ID",
                                        f"A device with the same pair (Service, DeviceId) was found:{device_id}", 409)
        if len(self.devices) + len(checked) > MAX_DEVICES:
            raise ProvisioningError("BAD_REQUEST", f"more than {MAX_DEVICES} devices", 400)
        for doc in checked:
            self._put_device(Device(service, subservice, doc))
        self._changed()

    def _put_device(self, device: Device) -> None:
        self._write("INSERT OR REPLACE INTO devices VALUES (?, ?, ?, ?)",
                    (device.service, device.subservice, device.device_id, json.dumps(dict(device.doc))))
        self.devices[(device.service, device.subservice, device.device_id)] = device

    def _delete_device(self, device: Device) -> None:
        self._write("DELETE FROM devices WHERE service = ? AND subservice = ? AND device_id = ?",
                    (device.service, device.subservice, device.device_id))
        self.devices.pop((device.service, device.subservice, device.device_id), None)

    def update_device(self, service: str, subservice: str | None, device_id: str, changes: Any) -> None:
        """Merge ``changes`` into a device (its ``device_id`` cannot change)."""
        device = self.get_device(service, subservice, device_id)
        self._writable(device)
        if not isinstance(changes, dict):
            raise wrong_syntax("the body must be an object")
        doc = check_device({**device.doc, **changes, "device_id": device.device_id}, "")
        self._put_device(Device(device.service, device.subservice, doc))
        self._changed()

    def delete_device(self, service: str, subservice: str | None, device_id: str) -> None:
        """Delete one device (DEVICE_NOT_FOUND if none)."""
        device = self.get_device(service, subservice, device_id)
        self._writable(device)
        self._delete_device(device)
        self._changed()

    # ------------------------------------------------------------------ measures

    def resolve(self, apikey: str, device_id: str, resource: str | None,
                autoprovision_default: bool) -> tuple[Group | None, Device | None, str, str]:
        """The group and device a measure belongs to, autoprovisioning the device when allowed.

        ProvisioningError DEVICE_GROUP_NOT_FOUND when nothing uses the apikey, DEVICE_NOT_FOUND when
        the group does not autoprovision.
        """
        device = self._by_key.get((apikey, device_id))
        group = self._group_for(apikey, resource, device)
        if device is not None:
            return group, device, device.service, device.subservice
        if group is None:
            raise ProvisioningError("DEVICE_GROUP_NOT_FOUND",
                                    f"Couldn't find device group for fields: [resource, apikey] and values: "
                                    f"[{resource or ''}, {apikey}]", 404)
        if not group.doc.get("autoprovision", autoprovision_default):
            raise ProvisioningError("DEVICE_NOT_FOUND", f"No device was found with id:{device_id}", 404)
        created = Device(group.service, group.subservice, {"device_id": device_id, "apikey": apikey,
                                                           "autoprovisioned": True})
        self._put_device(created)
        # Only this device is new: index it rather than rebuilding every index (a fleet coming
        # online autoprovisions thousands of devices).
        self._by_key[(apikey, device_id)] = created
        self._by_entity = None
        self.generation += 1
        return group, created, group.service, group.subservice

    def _group_for(self, apikey: str, resource: str | None, device: Device | None) -> Group | None:
        if resource is not None and (resource, apikey) in self.groups:
            return self.groups[(resource, apikey)]
        matches = [g for (_, k), g in self.groups.items() if k == apikey]
        if device is not None:
            same = [g for g in matches if (g.service, g.subservice) == (device.service, device.subservice)]
            matches = same or matches
        return matches[0] if matches else None

    def definition(self, apikey: str, device_id: str, resource: str | None,
                   autoprovision_default: bool) -> tuple[str, str, str]:
        """(service, subservice, effective definition as JSON) of a measure's device, cached."""
        cache_key = (apikey, device_id, resource or "", "1" if autoprovision_default else "0")
        cached = self._definitions.get(cache_key)
        if cached is None:
            group, device, service, subservice = self.resolve(apikey, device_id, resource, autoprovision_default)
            text = json.dumps(effective(group, device, service=service, subservice=subservice, device_id=device_id),
                              separators=(",", ":"), sort_keys=True)
            if len(self._definitions) > 100_000:
                self._definitions.clear()
            cached = self._definitions[cache_key] = (service, subservice, text)
        return cached

    def device_by_key(self, apikey: str, device_id: str) -> Device | None:
        """The device whose measures carry ``apikey`` and ``device_id``, if provisioned."""
        return self._by_key.get((apikey, device_id))

    def device_by_entity(self, service: str, entity_id: str) -> Device | None:
        """The device of a service whose entity is ``entity_id`` (the target of a command)."""
        if self._by_entity is None:
            index: dict[tuple[str, str], Device] = {}
            for device in self.devices.values():
                index.setdefault((device.service, entity_id_of(self.definition_of(device))), device)
            self._by_entity = index
        return self._by_entity.get((service, entity_id))

    def apikey_of(self, device: Device) -> str | None:
        """The apikey a device's messages carry (its own, or its group's)."""
        own = device.doc.get("apikey")
        if own:
            return str(own)
        return self._group_apikey(device.service, device.subservice, device.doc.get("entity_type"))

    def definition_of(self, device: Device) -> str:
        """The effective definition of a provisioned device, as JSON."""
        apikey = self.apikey_of(device)
        group = self._group_for(apikey, None, device) if apikey else None
        return json.dumps(effective(group, device, service=device.service, subservice=device.subservice,
                                    device_id=device.device_id), separators=(",", ":"), sort_keys=True)

    # ------------------------------------------------------------------ commands

    def queue_command(self, device: Device, name: str, value: Any, status: str) -> Command:
        """Record a command for a device (``PENDING`` until delivered)."""
        text = json.dumps(value)
        row = self._write("INSERT INTO commands (service, subservice, device_id, name, value, status) "
                          "VALUES (?, ?, ?, ?, ?, ?)",
                          (device.service, device.subservice, device.device_id, name, text, status))
        return Command(row, device.service, device.subservice, device.device_id, name, value, status)

    def pending_commands(self, device: Device) -> list[Command]:
        """Commands not yet delivered to a device, oldest first."""
        if self._db is None:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, value, status FROM commands WHERE service = ? AND subservice = ? AND "
                "device_id = ? AND status = 'PENDING' ORDER BY id",
                (device.service, device.subservice, device.device_id)).fetchall()
        return [Command(r[0], device.service, device.subservice, device.device_id, r[1], json.loads(r[2]), r[3])
                for r in rows]

    def set_command_status(self, ids: Iterable[int], status: str) -> None:
        """Mark commands delivered (or failed)."""
        for command_id in ids:
            self._write("UPDATE commands SET status = ? WHERE id = ?", (status, command_id))

