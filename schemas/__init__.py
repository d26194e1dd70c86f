"""Offline JSON Schemas and @contexts for the supported Smart Data Models and jonction configs.

Every schema shipped in this package is crawled once, at import, into an immutable
``referencing.Registry`` whose ``retrieve`` hook refuses: nothing is ever fetched from the network.
Other rooms code against ``MODELS``, ``model``, ``ngsi_types``, ``check_document`` and
``load_schema``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import jsonschema
from jsonschema import Draft202012Validator
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

from schemas.fastcheck import Check, Compiler

__all__ = [
    "MODELS",
    "REGISTRY",
    "AttributeSpec",
    "ModelSpec",
    "UnknownModel",
    "check_document",
    "compiled",
    "fast_check",
    "load_schema",
    "model",
    "ngsi_types",
    "problems",
]

ROOT: Final = Path(__file__).resolve().parent
"""Folder of the packaged schemas and contexts."""
MODELS_DIR: Final = ROOT / "models"
FORMAT_CHECKER: Final = Draft202012Validator.FORMAT_CHECKER
"""Format checking is always on (date-time, uri, email...)."""


class UnknownModel(KeyError):
    """No schema is bundled for that entity type."""

    def __str__(self) -> str:
        return f"no bundled Smart Data Model schema for type {self.args[0]!r}"


def _refuse(uri: str) -> Resource[Any]:
    """The registry's retrieve hook: the product never fetches a schema from the network."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


def _crawl() -> Registry[Any]:
    resources: list[tuple[str, Resource[Any]]] = []
    for path in sorted(ROOT.rglob("*.json")):
        if "examples" in path.relative_to(ROOT).parts:
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            # A broken data file must not take the whole package down at import; the packaging
            # test loads every file and names the broken one.
            continue
        if not isinstance(document, dict) or "$schema" not in document:
            continue
        resource = DRAFT202012.create_resource(document)
        uri = document.get("$id") or path.resolve().as_uri()
        resources.append((str(uri), resource))
    registry: Registry[Any] = Registry(retrieve=_refuse)  # type: ignore[call-arg]
    return registry.with_resources(resources).crawl()


REGISTRY: Final[Registry[Any]] = _crawl()
"""Every packaged schema, by ``$id``; unknown references raise instead of being fetched."""


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """What a model says about one attribute: its NGSI-LD type and UN/CEFACT unit."""

    ngsi_type: str
    unit: str | None = None


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A supported Smart Data Model: its schema and the facts jonction needs about it."""

    name: str
    schema: dict[str, Any] = field(repr=False)
    """The JSON Schema (shared, read-only by convention: copy before changing it)."""
    attributes: Mapping[str, AttributeSpec] = field(repr=False)
    upstream_version: str
    upstream_commit: str
    upstream_subject: str

    @property
    def required(self) -> tuple[str, ...]:
        """Members the keyValues form must carry."""
        return tuple(self.schema.get("required", ()))

    def context_iri(self, term: str) -> str | None:
        """The IRI of ``term`` in the jonction @context (core terms win), or None if unknown."""
        from schemas.contexts import expand_term

        return expand_term(term)


def _model_names() -> tuple[str, ...]:
    return tuple(sorted(p.parent.name for p in MODELS_DIR.glob("*/schema.json")))


MODELS: Final[tuple[str, ...]] = _model_names()
"""Entity types with a bundled schema."""


@cache
def model(name: str) -> ModelSpec:
    """The bundled model for entity type ``name``; raise ``UnknownModel`` otherwise."""
    if name not in MODELS:
        raise UnknownModel(name)
    schema = load_schema(f"models/{name}/schema.json")
    attributes: dict[str, AttributeSpec] = {}
    for attr, spec in schema.get("properties", {}).items():
        x_ngsi = spec.get("x-ngsi") if isinstance(spec, Mapping) else None
        if isinstance(x_ngsi, Mapping):
            attributes[attr] = AttributeSpec(str(x_ngsi.get("type", "Property")), x_ngsi.get("unit"))
    upstream = schema.get("x-upstream", {})
    return ModelSpec(
        name=name,
        schema=schema,
        attributes=MappingProxyType(attributes),
        upstream_version=str(upstream.get("schemaVersion", "")),
        upstream_commit=str(upstream.get("commit", "")),
        upstream_subject=str(upstream.get("subject", "")),
    )


@cache
def ngsi_types(name: str) -> Mapping[str, str]:
    """Attribute name -> NGSI-LD type for a model (input of ``gateway.model.from_key_values``)."""
    return MappingProxyType({attr: spec.ngsi_type for attr, spec in model(name).attributes.items()})


def load_schema(relative_path: str) -> dict[str, Any]:
    """Read a packaged schema by its path relative to the ``schemas`` package (a fresh copy)."""
    path = (ROOT / relative_path).resolve()
    if ROOT not in path.parents:
        raise ValueError(f"{relative_path!r} is outside the schemas package")
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{relative_path!r} is not a JSON object")
    return document


_COMPILED: dict[int, tuple[Mapping[str, Any], Validator]] = {}
_FAST: dict[int, tuple[Mapping[str, Any], Check | None]] = {}
_COMPILER: Final = Compiler(REGISTRY, FORMAT_CHECKER.conforms)


def fast_check(schema: Mapping[str, Any]) -> Check | None:
    """A compiled yes/no predicate for ``schema`` (None when it uses unsupported keywords).

    True means valid for certain; False means "ask jsonschema" (which gives the messages).
    """
    hit = _FAST.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    base = str(schema.get("$id", "")) if isinstance(schema, Mapping) else ""
    predicate = _COMPILER.compile(schema, base)
    if len(_FAST) > 512:
        _FAST.clear()
    _FAST[id(schema)] = (schema, predicate)
    return predicate


def compiled(schema: Mapping[str, Any]) -> Validator:
    """A validator for ``schema`` (Draft 2020-12 unless it says otherwise), compiled once.

    Cached by object identity: callers pass long-lived schema objects (``model().schema``,
    a module-level config schema), so the cache stays small.
    """
    hit = _COMPILED.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    cls = jsonschema.validators.validator_for(schema, default=Draft202012Validator)
    validator: Validator = cls(schema, registry=REGISTRY, format_checker=FORMAT_CHECKER)
    if len(_COMPILED) > 512:
        _COMPILED.clear()
    _COMPILED[id(schema)] = (schema, validator)
    return validator


def pointer(path: Any) -> str:
    """A JSON pointer (RFC 6901) from a jsonschema error path."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def problems(schema: Mapping[str, Any], document: Any) -> list[jsonschema.ValidationError]:
    """Every leaf validation error of ``document`` against ``schema``, in document order."""
    predicate = fast_check(schema)
    if predicate is not None and predicate(document):
        return []
    validator = compiled(schema)
    leaves: list[jsonschema.ValidationError] = []
    for error in validator.iter_errors(document):
        leaves.extend(_leaves(error))
    leaves.sort(key=lambda e: [str(p) for p in e.absolute_path])
    return leaves


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    # anyOf/oneOf wrap their branches' errors; keep the branch errors that went deepest into the
    # document, which name the member actually at fault, and the wrapper otherwise.
    if error.context:
        deepest = max(len(e.absolute_path) for e in error.context)
        if deepest > len(error.absolute_path):
            out: list[jsonschema.ValidationError] = []
            for sub in error.context:
                if len(sub.absolute_path) == deepest:
                    out.extend(_leaves(sub))
            return out
    return [error]


def check_document(schema: Mapping[str, Any], document: Any) -> list[str]:
    """Validate any document against a JSON Schema; return ALL problems, each naming its pointer."""
    messages: list[str] = []
    for error in problems(schema, document):
        where = pointer(error.absolute_path) or "/"
        messages.append(f"{where}: {error.message}")
    return messages
