"""The catalogue of checks: stable ids, levels, what each sends and expects, and its function.

A check is data (id, level, title, what it sends, what it expects, an explanation a
non-specialist can read) plus one small async function. The function raises ``Fail`` when the
target breaks the rule, ``Skip`` when the check cannot run here (with the reason), and returns
when the rule holds. Ids are never reused: a retired check keeps its id in ``RETIRED``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from conformance.context import RunContext

LEVELS: Final[tuple[str, ...]] = ("L1", "L2", "L3", "L4", "L5", "L6", "Q")
"""Levels in report order."""

LEVEL_TITLES: Final[dict[str, dict[str, str]]] = {
    "L1": {"en": "Data", "fr": "Données"},
    "L2": {"en": "API read", "fr": "API en lecture"},
    "L3": {"en": "API write and batch", "fr": "API en écriture et opérations par lots"},
    "L4": {"en": "Notifications", "fr": "Notifications"},
    "L5": {"en": "History (temporal API)", "fr": "Historique (API temporelle)"},
    "L6": {"en": "Tenancy and access", "fr": "Locataires (tenants) et contrôle d'accès"},
    "Q": {"en": "Data quality over an observation window", "fr": "Qualité des données sur une période d'observation"},
}
"""Human titles of the levels, in English and French."""

NEEDS: Final = frozenset({"api", "write", "entities", "receiver", "declaration", "auth", "tenancy"})
"""What a check may need from the target: an API, write access, entities, the notification
receiver, a vendor declaration, credentials, tenancy."""

RETIRED: Final[dict[str, str]] = {}
"""Ids that once existed and must never be given to another check (id -> why retired)."""

_ID = re.compile(r"^(L[1-6]|Q)-[A-Z]{3}-\d{3}$")

CheckFunc = Callable[["RunContext"], Awaitable[str | None]]
"""A check body; returns an optional note on success."""


class Fail(Exception):
    """The target breaks the rule the check verifies."""


class Skip(Exception):
    """The check cannot run against this target; the message is the reason."""


class NotApplicable(Skip):
    """The check does not apply to this target (an API check on files, a model nobody delivers, a promise
    the vendor did not make); listed apart and never blocks acceptance."""


@dataclass(frozen=True, slots=True)
class Check:
    """One verifiable requirement."""

    id: str
    level: str
    title: str
    sends: str
    expects: str
    explain: str
    needs: frozenset[str]
    func: CheckFunc = field(repr=False, compare=False)
    model: str | None = None
    """For model checks: the Smart Data Model it validates against."""

    @property
    def area(self) -> str:
        """The middle part of the id (e.g. ``QRY``)."""
        return self.id.split("-")[1]

    def describe(self) -> dict[str, Any]:
        """The check's metadata as plain data (for reports and the clause annex)."""
        return {
            "id": self.id,
            "level": self.level,
            "title": self.title,
            "sends": self.sends,
            "expects": self.expects,
            "explain": self.explain,
            "needs": sorted(self.needs),
            "model": self.model,
        }


CATALOGUE: dict[str, Check] = {}
"""Every registered check by id, in registration order."""


def check(
    id: str,
    title: str,
    *,
    sends: str,
    expects: str,
    explain: str,
    needs: tuple[str, ...] = ("api",),
) -> Callable[[CheckFunc], CheckFunc]:
    """Register ``func`` as the check ``id`` (decorator)."""

    def register(func: CheckFunc) -> CheckFunc:
        add(id, title, func, sends=sends, expects=expects, explain=explain, needs=needs)
        return func

    return register


def add(
    id: str,
    title: str,
    func: CheckFunc,
    *,
    sends: str,
    expects: str,
    explain: str,
    needs: tuple[str, ...] = ("api",),
    model: str | None = None,
) -> None:
    """Register a check built from data (table-driven checks use this directly)."""
    if not _ID.match(id):
        raise ValueError(f"check id {id!r} does not follow LEVEL-AREA-NNN")
    if id in CATALOGUE or id in RETIRED:
        raise ValueError(f"check id {id!r} is already used")
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"check {id}: unknown needs {sorted(unknown)}")
    CATALOGUE[id] = Check(
        id=id,
        level=id.split("-")[0],
        title=title,
        sends=sends,
        expects=expects,
        explain=explain,
        needs=frozenset(needs),
        func=func,
        model=model,
    )


def catalogue() -> dict[str, Check]:
    """The full catalogue, with every check module imported."""
    import conformance.checks  # noqa: F401  (imports register the checks)

    return CATALOGUE


def by_level(level: str) -> list[Check]:
    """Every check of one level, in id order."""
    return sorted((c for c in catalogue().values() if c.level == level), key=lambda c: c.id)
