"""The JSON Schema of a LoRaWAN network-server source, composed once from shared parts.

Each adapter folder keeps its own ``config.schema.json`` (the contract wants the file); the test
suite checks that every file equals what :func:`compose` builds here, so the parts cannot drift.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from adapters.kit.mqtt import MQTT_CONFIG_SCHEMA
from adapters.kit.push import HTTP_CONFIG_SCHEMA

LOCATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "{lon, lat} in WGS84, {x, y, crs} (e.g. Lambert-93 EPSG:2154), or a GeoJSON geometry "
                   "with an optional crs",
    "properties": {
        "lon": {"type": ["number", "string"]}, "lat": {"type": ["number", "string"]},
        "x": {"type": ["number", "string"]}, "y": {"type": ["number", "string"]},
        "crs": {"type": ["string", "integer"]}, "type": {"type": "string"}, "coordinates": {"type": "array"},
    },
}

DEVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["dev_eui", "profile"],
    "properties": {
        "dev_eui": {"type": "string", "description": "16 hex digits (any case, separators allowed)"},
        "profile": {"type": "string", "description": "device profile id (adapters/kit/lorawan/profiles)"},
        "tenant": {"type": "string", "description": "tenant (commune) of this device; default: the source's"},
        "entity_id": {"type": "string",
                      "description": "id of the measured entity (default urn:ngsi-ld:<Type>:<deveui>)"},
        "name": {"type": "string"},
        "location": LOCATION_SCHEMA,
        "params": {"type": "object", "description": "the profile's parameters (container_height_mm...)"},
        "attributes": {"type": "object", "description": "static attributes in keyValues form"},
    },
}

RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["match", "profile"],
    "properties": {
        "match": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "dev_eui_prefix": {"type": "string", "pattern": "^[0-9a-fA-F:-]+$"},
                "application": {"type": "string", "description": "application id or name on the network server"},
                "device_profile": {"type": "string", "description": "glob over the server's device-profile name"},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "profile": {"type": "string"},
        "tenant": {"type": "string"},
        "entity_id": {"type": "string", "description": "template with {dev_eui} and {type}"},
        "params": {"type": "object"},
        "attributes": {"type": "object"},
    },
}


def compose(domain: str, title: str, transports: tuple[str, ...], *,
            http_extra: Mapping[str, Any] | None = None, default_transport: str | None = None) -> dict[str, Any]:
    """The config schema of one network-server adapter."""
    properties: dict[str, Any] = {
        "name": {"type": "string", "description": "source name (set by the runtime)"},
        "tenant": {"type": "string", "description": "default tenant of this source's devices"},
        "transport": {"enum": list(transports), "default": default_transport or transports[0]},
    }
    if "mqtt" in transports:
        properties["mqtt"] = copy.deepcopy(MQTT_CONFIG_SCHEMA)
    if "http" in transports:
        http = copy.deepcopy(HTTP_CONFIG_SCHEMA)
        http["properties"].update(copy.deepcopy(dict(http_extra or {})))
        properties["http"] = http
    properties.update({
        "devices": {"type": "array", "items": DEVICE_SCHEMA, "description": "provisioned devices"},
        "devices_csv": {"type": "string", "description": "CSV of devices: dev_eui, profile, tenant, entity_id, "
                                                         "name, lon, lat | x, y, crs, param.<name>, attr.<name>"},
        "auto_provision": {"type": "array", "items": RULE_SCHEMA,
                           "description": "rules that provision unknown devices (first match wins)"},
        "profiles_dirs": {"type": "array", "items": {"type": "string"},
                          "description": "folders of extra device profiles (YAML)"},
        "state_dir": {"type": "string", "description": "where devices added at run time (admin API, console) "
                                                       "are kept: devices.json (the runtime sets it)"},
    })
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:jonction:adapter:{domain}:config",
        "title": title,
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


THINGPARK_HTTP_EXTRA: dict[str, Any] = {
    "as_key": {"type": "string", "writeOnly": True, "description": "LRC-AS tunnel key (hex); enables token security"},
    "as_key_file": {"type": "string"},
    "as_key_env": {"type": "string"},
    "as_id": {"type": "string", "description": "expected AS_ID query parameter"},
    "max_clock_skew": {"type": "number", "minimum": 1, "default": 120,
                       "description": "seconds the Time query parameter may differ from our clock"},
}

ADAPTERS: dict[str, tuple[str, tuple[str, ...], Mapping[str, Any] | None]] = {
    "chirpstack_v4": ("ChirpStack v4 source", ("mqtt", "http"), None),
    "chirpstack_v3": ("ChirpStack v3 source", ("mqtt", "http"), None),
    "tts_v3": ("The Things Stack v3 source", ("mqtt", "http"), None),
    "thingpark": ("Actility ThingPark source", ("http", "mqtt"), THINGPARK_HTTP_EXTRA),
    "live_objects": ("Orange Live Objects source", ("mqtt",), None),
}
"""Every LoRaWAN adapter: title, transports (the first is the default), extra HTTP settings."""


def schema_for(domain: str) -> dict[str, Any]:
    """The config schema the adapter folder ``domain`` must carry."""
    title, transports, extra = ADAPTERS[domain]
    return compose(domain, title, transports, http_extra=extra)


if __name__ == "__main__":  # regenerate the adapters' config.schema.json files
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for name in ADAPTERS:
        text = json.dumps(schema_for(name), indent=2, ensure_ascii=False) + "\n"
        (root / name / "config.schema.json").write_text(text, encoding="utf-8")
