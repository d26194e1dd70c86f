"""The published TALQ 2.7.1 OpenAPI files, read from ../shared, as JSON Schema validators (tests only).

The OAS files reference the data model as ``./talq-data-model-2-7-1-online.json#/components/...``;
the data model is registered under that name. TALQ's ``discriminator`` (the ``type`` of a function
or an attribute names its schema) is applied too: each object whose ``type`` names a data-model
schema is also validated against that schema, so that a ``LampActuatorFunction`` or an
``AttributeLevelState`` is held to its own definition, not only to the base.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.conftest import HAS_SHARED, SAMPLES, SHARED_ABSENT

TALQ = SAMPLES / "talq"
DM_NAME = "talq-data-model-2-7-1-online.json"


def _present() -> None:
    """Skip the calling test, by name, where ../shared is absent (a plain clone)."""
    if not HAS_SHARED:
        pytest.skip(SHARED_ABSENT)


@functools.cache
def data_model() -> dict[str, Any]:
    """The TALQ data model document (the calling test is skipped by name without ../shared)."""
    _present()
    with gzip.open(TALQ / (DM_NAME + ".gz"), "rt", encoding="utf-8") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


@functools.cache
def api(which: str) -> dict[str, Any]:
    """The ``cms`` or ``gateway`` API document (the calling test is skipped by name without ../shared)."""
    _present()
    loaded: dict[str, Any] = json.loads((TALQ / f"talq-api-{which}-2-7-1-online.json").read_text(encoding="utf-8"))
    return loaded


@functools.cache
def _registry() -> Registry:
    dm: Resource[Any] = DRAFT7.create_resource(data_model())
    return Registry().with_resources([(f"urn:talq:{DM_NAME}", dm), (DM_NAME, dm), (f"./{DM_NAME}", dm)])


def _fix(schema: Any) -> Any:
    """The OAS schema with its data-model references made absolute."""
    text = json.dumps(schema).replace(f'"./{DM_NAME}#', f'"urn:talq:{DM_NAME}#')
    return json.loads(text)


def _typed(instance: Any, pointer: str = "") -> Iterator[tuple[str, str, Any]]:
    """(pointer, schema name, object) for each object whose ``type``/``name`` names a data-model schema."""
    schemas = data_model()["components"]["schemas"]
    if isinstance(instance, Mapping):
        for key in ("type", "name"):
            kind = instance.get(key)
            if isinstance(kind, str) and kind in schemas and kind not in ("Attribute", "Function", "State"):
                yield pointer, kind, instance
        for k, v in instance.items():
            yield from _typed(v, f"{pointer}/{k}")
    elif isinstance(instance, list):
        for i, v in enumerate(instance):
            yield from _typed(v, f"{pointer}/{i}")


def errors(schema: Mapping[str, Any], instance: Any) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (an OAS schema), discriminated subtypes included."""
    out: list[str] = []
    validator = jsonschema.Draft7Validator(_fix(schema), registry=_registry())
    out += [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]
    for pointer, kind, obj in _typed(instance):
        sub = jsonschema.Draft7Validator({"$ref": f"urn:talq:{DM_NAME}#/components/schemas/{kind}"},
                                         registry=_registry())
        out += [f"{pointer}/{'/'.join(map(str, e.absolute_path))} ({kind}): {e.message}"
                for e in sub.iter_errors(obj)]
    return out


def operation(which: str, method: str, path: str) -> dict[str, Any]:
    """The OAS operation serving ``method path`` (a concrete path: templates match any segment)."""
    for template, ops in api(which)["paths"].items():
        parts, wanted = template.strip("/").split("/"), path.strip("/").split("/")
        same = len(parts) == len(wanted) and all(p == w or p.startswith("{")
                                                 for p, w in zip(parts, wanted, strict=True))
        if same and method.lower() in ops:
            op: dict[str, Any] = ops[method.lower()]
            return op
    raise AssertionError(f"{method} {path} is not in the TALQ {which} API")


def request_errors(which: str, method: str, path: str, body: Any) -> list[str]:
    """How a request body breaks the operation's requestBody schema."""
    op = operation(which, method, path)
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    return errors(schema, body)


def response_errors(which: str, method: str, path: str, status: int, body: Any) -> list[str]:
    """How an answer breaks the operation: an undeclared status, or a body not of its schema."""
    op = operation(which, method, path)
    declared = op["responses"].get(str(status))
    if declared is None:
        return [f"status {status} is not declared for {method} {path} (declared: {sorted(op['responses'])})"]
    content = declared.get("content") or {}
    if not content:
        return [] if body is None else [f"{method} {path} {status} declares no body"]
    schema = (content.get("application/json") or next(iter(content.values()))).get("schema")
    return errors(schema, body) if schema is not None else []


def required_parameters(which: str, method: str, path: str) -> list[tuple[str, str]]:
    """(in, name) of the operation's required parameters (headers and query)."""
    op = operation(which, method, path)
    return [(p["in"], p["name"]) for p in op.get("parameters", []) if p.get("required") and p["in"] != "path"]
