"""jonction's own normalized example of every bundled Smart Data Model (schemas/examples/<kebab-name>.json).

Written by us from the model facts (schemas/models/spec.yaml and each schema.json): they are what the
project tests itself with where the upstream examples (../shared) are absent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import schemas
from gateway.model import to_key_values
from tests.conftest import ROOT

EXAMPLES_DIR = ROOT / "schemas" / "examples"
EXTRA_EXAMPLES = {"multi-instance-temperature.json": "IndoorEnvironmentObserved"}
"""Examples that show one feature (here: several instances of an attribute) rather than a model."""


def kebab(name: str) -> str:
    """Example file stem: EVChargingStation -> ev-charging-station, service_requests -> service-requests."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", name).replace("_", "-").lower()


def example_path(name: str) -> Path:
    """The file of our own normalized example of ``name``."""
    return EXAMPLES_DIR / f"{kebab(name)}.json"


def own_example(name: str) -> dict[str, Any]:
    """Our own valid normalized entity of the model ``name`` (a fresh copy)."""
    document = json.loads(example_path(name).read_text(encoding="utf-8"))
    assert isinstance(document, dict), name
    return document


def own_key_values(name: str) -> dict[str, Any]:
    """Our own example of ``name`` projected to keyValues (the form the model schema describes).

    A Relationship with one target where the model lists targets becomes a one-element list, as the
    validator reads it (NGSI-LD allows either for ``object``).
    """
    properties = schemas.model(name).schema.get("properties", {})
    out = to_key_values(own_example(name))
    for attr, value in out.items():
        if isinstance(value, str) and properties.get(attr, {}).get("type") == "array" and (
                schemas.model(name).attributes[attr].ngsi_type == "Relationship"):
            out[attr] = [value]
    return out
