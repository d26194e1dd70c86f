"""Bridge to the schema validator: a batch of entities in, a list of problems per entity out.

``gateway.validation.validate_batch`` (NGSI-LD structure, then the Smart Data Model schema) is
used when installed and enabled; otherwise the NGSI-LD structure is checked here, so an invalid
entity never reaches a sink whatever is installed or configured.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from gateway.model import ATTRIBUTE_TYPES, ENTITY_MEMBERS, VALUE_KEY, Entity, is_uri
from gateway.pointer import escape

Problem = tuple[str, str]
"""``(reason, JSON pointer)``."""

BatchValidator = Callable[[Sequence[Entity]], list[list[Problem]]]


def structural_problems(item: Entity) -> list[Problem]:
    """Minimal NGSI-LD structure checks (URI id, type, attribute objects with their value member)."""
    problems: list[Problem] = []
    if not is_uri(item.get("id")):
        problems.append(("entity id is not a URI", "/id"))
    if not isinstance(item.get("type"), str | list) or not item.get("type"):
        problems.append(("entity type is missing", "/type"))
    for name, value in item.items():
        if name in ENTITY_MEMBERS:
            continue
        for index, instance in enumerate(value if isinstance(value, list) else [value]):
            pointer = f"/{escape(name)}" + (f"/{index}" if isinstance(value, list) else "")
            if not isinstance(instance, dict):
                problems.append(("attribute is not an NGSI-LD attribute object", pointer))
                continue
            attr_type = instance.get("type")
            if attr_type not in ATTRIBUTE_TYPES:
                problems.append((f"attribute type {attr_type!r} is not an NGSI-LD attribute type",
                                 pointer + "/type"))
                continue
            member = VALUE_KEY[str(attr_type)]
            if member not in instance or instance[member] is None:
                problems.append((f"{attr_type} without '{member}'", pointer))
    return problems


def _verdict_problems(verdict: Any) -> list[Problem]:
    """Read a validator verdict whatever its exact shape (ok/valid flag, errors list)."""
    ok = getattr(verdict, "ok", getattr(verdict, "valid", None))
    errors = getattr(verdict, "errors", None)
    if errors is None and isinstance(verdict, dict):
        errors = verdict.get("errors")
        ok = verdict.get("ok", verdict.get("valid"))
    out: list[Problem] = []
    for err in errors or ():
        if isinstance(err, dict):
            reason = err.get("message") or err.get("reason") or str(err)
            pointer = err.get("pointer") or err.get("path") or ""
        else:
            reason = getattr(err, "message", None) or getattr(err, "reason", None) or str(err)
            pointer = getattr(err, "pointer", None) or getattr(err, "path", None) or ""
        out.append((str(reason), str(pointer)))
    if ok is False and not out:
        out.append(("entity rejected by the validator", ""))
    return out


def load_validator(enabled: bool = True) -> BatchValidator:
    """The batch validator to use in the pipeline."""
    schema_batch: Callable[..., Any] | None = None
    if enabled:
        try:
            module = importlib.import_module("gateway.validation")
            schema_batch = getattr(module, "validate_batch", None)
        except ImportError:
            schema_batch = None

    def validate(entities: Sequence[Entity]) -> list[list[Problem]]:
        if schema_batch is None:
            return [structural_problems(e) for e in entities]
        # The schema validator checks the NGSI-LD structure first itself: no second pass here.
        verdicts = list(schema_batch(entities))
        if len(verdicts) != len(entities):
            raise RuntimeError("the validator returned a verdict count that does not match the batch")
        return [_verdict_problems(v) for v in verdicts]

    return validate
