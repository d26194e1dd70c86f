"""Side-by-side helpers: the upstream Smart Data Model schemas, resolved from local reference files only."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

import schemas
from tests.conftest import REFERENCE

SDM = REFERENCE / "smart-data-models"

# Upstream $refs point at GitHub and geojson.org; in tests they resolve to the reference copies,
# and geojson.org (not available) to our own RFC 7946 shapes.
_LOCAL = {
    "common-schema.json": SDM / "common-schema.json",
    "device-schema.json": SDM / "Device" / "device-schema.json",
    "alert-schema.json": SDM / "Alert" / "alert-schema.json",
    "Environment-schema.json": SDM / "Environment" / "Environment-schema.json",
    "WaterNetworkManagement-schema.json": (
        SDM / "WaterDistributionManagementEPANET" / "WaterNetworkManagement-schema.json"
    ),
    "weather-schema.json": SDM / "Weather" / "weather-schema.json",
}


def _retrieve(uri: str) -> Resource[Any]:
    name = uri.rsplit("/", 1)[-1]
    if "geojson.org/schema/" in uri:
        shape = name.removesuffix(".json")
        return DRAFT202012.create_resource(
            {"$schema": "https://json-schema.org/draft/2020-12/schema",
             "$ref": f"https://jonction.eu/schemas/models/common.schema.json#/$defs/{shape}"}
        )
    path = _LOCAL.get(name)
    if path is None:
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]
    return DRAFT202012.create_resource(json.loads(path.read_text(encoding="utf-8")))


def model_dir(name: str) -> Path:
    """The reference folder of one model."""
    (found,) = SDM.glob(f"*/{name}/schema.json")
    return found.parent


@cache
def upstream_validator(name: str) -> Draft202012Validator:
    """A validator for the upstream schema of ``name``, format checking on, nothing fetched."""
    schema = json.loads((model_dir(name) / "schema.json").read_text(encoding="utf-8"))
    registry: Registry[Any] = Registry(retrieve=_retrieve).with_resources(  # type: ignore[call-arg]
        [(uri, r) for uri, r in schemas.REGISTRY.items()]  # type: ignore[attr-defined]
    )
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def upstream_errors(name: str, document: Any) -> list[str]:
    """Messages of the upstream schema for ``document`` (empty when valid)."""
    return [e.message for e in upstream_validator(name).iter_errors(document)]


def example(name: str, filename: str) -> Any:
    """One upstream example document (a list for some models)."""
    return json.loads((model_dir(name) / "examples" / filename).read_text(encoding="utf-8"))
