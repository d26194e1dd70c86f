"""Generate ``schemas/models/<Model>/schema.json`` from jonction's own model facts (``spec.yaml``).

Run ``python -m schemas.generate`` after editing ``schemas/models/spec.yaml``; a test fails when
the committed schemas and this generator disagree. Nothing here reads upstream files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

import yaml

MODELS_DIR: Final = Path(__file__).resolve().parent / "models"
SPEC_FILE: Final = MODELS_DIR / "spec.yaml"
BASE_ID: Final = "https://jonction.eu/schemas/models/"
COMMON_ID: Final = BASE_ID + "common.schema.json"

COMMITS: Final[dict[str, str]] = {
    "Alert": "30e367c08e5813b25466d4634f4588032fce4f47",
    "Building": "62f85ee050bbc5bad38f3476d866a5b142f223eb",
    "Device": "96e38834eda502ed6a764e1fa7059a8c3561dcda",
    "Energy": "6e3d7dd59ada5d69b4d8c88b05f131097325ff88",
    "Environment": "f0150e5c97f41e4c0881a0bcfa05d559058bdea1",
    "IssueTracking": "c2600651717fe12975b968af18f6fe5861a000ae",
    "Parking": "d49af3c051dfc06d08d43183d2a7a3586d2ba163",
    "Streetlighting": "1df857d46388d7129801bc0ccb19020d7321ce2a",
    "Transportation": "6aee14bc680798fb6ef2ba101fee3f732d4305bd",
    "WasteManagement": "952dca8b1b9b2b5fe8e82dcba25599316ab1478e",
    "WaterConsumption": "6cf56439fc34e046c8ecc52e7a778f16d9fbb632",
    "WaterDistributionManagementEPANET": "e16e219dc44eaed668e3cee1db13a9393174513a",
    "WaterQuality": "b94430e713f44fbeb7f0469a5287ef2c7550505f",
}
"""Upstream commit of ``dataModel.<subject>`` each schema tracks (unless its spec entry gives ``commit``)."""

_P = "Property"
COMMONS: Final[dict[str, dict[str, tuple[str, str]]]] = {
    "GSMA": {
        "dateCreated": (_P, "DateTime"),
        "dateModified": (_P, "DateTime"),
        "source": (_P, "Text"),
        "name": (_P, "Text"),
        "alternateName": (_P, "Text"),
        "description": (_P, "Text"),
        "dataProvider": (_P, "Text"),
        "owner": (_P, "Owner"),
        "seeAlso": (_P, "SeeAlso"),
    },
    "Location": {
        "location": ("GeoProperty", "Geometry"),
        "address": (_P, "Address"),
        "areaServed": (_P, "Text"),
    },
    "PhysicalObject": {
        "color": (_P, "Text"),
        "image": (_P, "URI"),
        "annotations": (_P, "Annotations"),
    },
}
"""Common attribute groups: attribute -> (NGSI-LD type, definition in common.schema.json)."""


def _refs(fragment: Any) -> Any:
    """Turn the spec's ``{$ref: Name}`` shorthand into references to common.schema.json."""
    if isinstance(fragment, dict):
        out = {key: _refs(value) for key, value in fragment.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and "/" not in ref:
            out["$ref"] = f"../common.schema.json#/$defs/{ref}"
        return out
    if isinstance(fragment, list):
        return [_refs(item) for item in fragment]
    return fragment


def build(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of one model from its entry in spec.yaml."""
    subject = str(spec["subject"])
    properties: dict[str, Any] = {
        "id": {"$ref": "../common.schema.json#/$defs/EntityId"},
    }
    for group in spec.get("commons", []):
        for attr, (ngsi_type, definition) in COMMONS[group].items():
            properties[attr] = {
                "$ref": f"../common.schema.json#/$defs/{definition}",
                "x-ngsi": {"type": ngsi_type},
            }
    for attr, entry in spec["attributes"].items():
        schema = _refs(entry["schema"])
        if attr == "type":
            properties["type"] = schema
            continue
        x_ngsi: dict[str, str] = {"type": str(entry["ngsi"])}
        if entry.get("unit"):
            x_ngsi["unit"] = str(entry["unit"])
        properties[attr] = {**schema, "x-ngsi": x_ngsi}
    if "type" not in properties:
        properties["type"] = {"type": "string", "enum": [name]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE_ID}{name}/schema.json",
        "title": name,
        "description": f"jonction's schema of the {name} Smart Data Model (keyValues form).",
        "x-upstream": {
            "subject": subject,
            "model": name,
            "schemaVersion": str(spec["schemaVersion"]),
            # A model read at another commit than its subject's (no reference copy) names its own.
            "commit": str(spec.get("commit") or COMMITS[subject]),
        },
        "type": "object",
        "required": list(spec.get("required", ["id", "type"])),
        "properties": properties,
    }


def render(schema: dict[str, Any]) -> str:
    """Serialize a schema the way the committed files are written: one attribute per line."""

    def compact(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

    lines = []
    for key, value in schema.items():
        if key == "properties":
            members = [f"  {compact(attr)}: {compact(spec)}" for attr, spec in value.items()]
            lines.append(' "properties": {\n' + ",\n".join(members) + "\n }")
        else:
            lines.append(f" {compact(key)}: {compact(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def load_spec() -> dict[str, dict[str, Any]]:
    """Read spec.yaml."""
    data = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise SystemExit(f"{SPEC_FILE}: not a mapping")
    return data


def main() -> int:
    """Write every model schema; print the models written."""
    for name, spec in load_spec().items():
        target = MODELS_DIR / name / "schema.json"
        target.parent.mkdir(exist_ok=True)
        target.write_text(render(build(name, spec)), encoding="utf-8")
        print(target.relative_to(MODELS_DIR.parent.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
