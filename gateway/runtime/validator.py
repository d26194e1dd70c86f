"""Bridge to the schema validator: a batch of entities in, a list of problems per entity out.

``gateway.validation.validate_batch`` (NGSI-LD structure, then the Smart Data Model schema) is
used when schema validation is enabled; otherwise the NGSI-LD structure is checked here, so an
invalid entity never reaches a sink whatever is configured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.model import ATTRIBUTE_TYPES, ENTITY_MEMBERS, VALUE_KEY, Entity, is_uri
from gateway.pointer import escape
from gateway.validation import Verdict, validate_batch

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


def verdict_problems(verdict: Verdict) -> list[Problem]:
    """The errors of a verdict as ``(reason, JSON pointer)`` pairs (warnings never reject an entity)."""
    out: list[Problem] = [(err.message or str(err), err.pointer) for err in verdict.errors]
    if not verdict.valid and not out:
        out.append(("entity rejected by the validator", ""))
    return out


def load_validator(enabled: bool = True) -> BatchValidator:
    """The batch validator to use in the pipeline: the schema validator when ``enabled``, else structure only."""
    if not enabled:
        return structural_batch

    def validate(entities: Sequence[Entity]) -> list[list[Problem]]:
        # The schema validator checks the NGSI-LD structure first itself: no second pass here.
        verdicts = validate_batch(entities)
        if len(verdicts) != len(entities):
            raise RuntimeError("the validator returned a verdict count that does not match the batch")
        return [verdict_problems(v) for v in verdicts]

    return validate


def structural_batch(entities: Sequence[Entity]) -> list[list[Problem]]:
    """The NGSI-LD structure checks alone, for each entity (schema validation disabled)."""
    return [structural_problems(e) for e in entities]
