"""Sharing policies: which entity types and attributes each tenant (commune) shares, with whom.

A policy file (YAML, ``schemas/config/sharing.schema.json``) names *principals* (the syndicat, a
neighbouring territory, each known by a bearer token) and, per tenant, *rules*: the types and
attributes shared with some principals or with ``public`` (anyone), optionally coarsened. The
tenant's owner (a store token valid for the tenant) sees everything; anyone else sees only what a
rule grants them. This module is the pure part: loading, checking, deciding. The store's read paths
apply the decisions to documents; the open-data export uses the public grants.

Resolution is deliberately simple so that a procurement officer can predict it: for a reader and
an entity type, the first rule of the tenant that names the reader and the type applies; failing
that, the first rule for ``public`` and the type; failing that, the type is invisible. Attributes
in ``never_shared_attributes`` (personal data: built-in list plus the file's) are never shown to
anyone but the owner, whatever a rule says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

import schemas
from gateway.errors import ConfigInvalid
from gateway.pointer import pointer
from gateway.secrets import read_secret

PUBLIC: Final = "public"
"""The reader with no token (or a token no principal holds)."""
OWNER: Final = "owner"
"""The reader holding a store token valid for the tenant: sees everything."""
DEFAULT_TENANT_KEY: Final = "-"
"""How the default tenant is written in a policy file (the NGSI-LD default tenant has no name)."""

PERSONAL_ATTRIBUTES: Final = frozenset({
    # Open311 and citizen reports: who reported, how to reach them
    "contactPoint", "email", "telephone", "phone", "firstName", "lastName", "familyName", "givenName",
    "first_name", "last_name", "contact", "reporter", "submitter", "personName", "account_id", "accountId", "device_id",
    # household metering: the person behind the meter
    "customer", "customerName", "holder", "occupier",
})
"""Attributes that are personal data in the models jonction produces; never shared."""

_MAX_BYTES: Final = 1024 * 1024


@dataclass(frozen=True)
class Coarsening:
    """How a shared entity is blurred before a non-owner sees it."""

    location_grid_m: float | None = None
    """GeoProperty coordinates snapped to the centre of a cell of this size (metres)."""
    temporal: str | None = None
    """``hourly``: temporal answers averaged per hour."""

    @property
    def is_identity(self) -> bool:
        """True when nothing is coarsened."""
        return self.location_grid_m is None and self.temporal is None


@dataclass(frozen=True)
class Rule:
    """One sharing rule of a tenant: these types (and attributes) with these readers."""

    readers: frozenset[str]
    types: frozenset[str]
    attributes: frozenset[str] | None = None
    """None: every attribute (except excluded and personal ones)."""
    exclude: frozenset[str] = frozenset()
    coarsen: Coarsening = Coarsening()
    where: str = ""
    """JSON pointer of the rule in the policy file (for explanations)."""

    def covers_type(self, names: Iterable[str]) -> bool:
        """True when one of ``names`` (an entity type as a short name and/or IRI) is shared by this rule."""
        return any(name in self.types for name in names)

    def allows_attribute(self, names: Iterable[str], personal: frozenset[str]) -> bool:
        """True when the attribute (short name and/or IRI) may be shown under this rule."""
        given = tuple(names)
        if any(name in personal or name in self.exclude for name in given):
            return False
        return self.attributes is None or any(name in self.attributes for name in given)


@dataclass(frozen=True)
class Access:
    """What one reader may see of one tenant: everything (owner), some rules, or nothing."""

    reader: str
    owner: bool = False
    rules: tuple[Rule, ...] = ()

    @property
    def sees_nothing(self) -> bool:
        """True when no entity of the tenant is visible to this reader."""
        return not self.owner and not self.rules

    def rule_for(self, type_names: Iterable[str]) -> Rule | None:
        """The rule that applies to an entity of this type (its names: short and/or IRI), or None: invisible."""
        names = tuple(type_names)
        for rule in self.rules:
            if rule.covers_type(names):
                return rule
        return None

    def shared_types(self) -> frozenset[str]:
        """Every type name some rule shares with this reader."""
        return frozenset(name for rule in self.rules for name in rule.types)


@dataclass(frozen=True)
class View:
    """A read-only virtual tenant gathering what member tenants share with one principal."""

    name: str
    principal: str
    tenants: tuple[str, ...]
    tag: str = "commune"


@dataclass(frozen=True)
class Policies:
    """A loaded, checked policy file."""

    principals: Mapping[str, str] = field(default_factory=dict)
    """Principal name -> its token (masked in logs)."""
    rules: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    """Tenant ("" for the default tenant) -> its rules, in file order."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Tenant -> its label (the commune's name), defaulting to the tenant's name."""
    insee: Mapping[str, str] = field(default_factory=dict)
    views: Mapping[str, View] = field(default_factory=dict)
    personal: frozenset[str] = PERSONAL_ATTRIBUTES
    audit_retention_days: int = 365
    """How long the audit log keeps its rows."""

    def principal_of(self, token: str | None) -> str:
        """The principal holding ``token``, or ``public``. Compares in constant time against every token."""
        import hmac

        found = PUBLIC
        if not token:
            return found
        given = token.encode()
        for name, expected in self.principals.items():
            if hmac.compare_digest(given, expected.encode()):
                found = name
        return found

    def access(self, tenant: str, reader: str, *, owner: bool = False) -> Access:
        """What ``reader`` may see of ``tenant`` (``owner=True`` when it holds the tenant's store token)."""
        if owner or reader == OWNER:
            return Access(reader=OWNER, owner=True)
        rules = self.rules.get(tenant, ())
        own = tuple(rule for rule in rules if reader != PUBLIC and reader in rule.readers)
        public = tuple(rule for rule in rules if PUBLIC in rule.readers)
        return Access(reader=reader, rules=own + public)

    def label(self, tenant: str) -> str:
        """The tenant's display label (its commune name), or its name."""
        return self.labels.get(tenant) or tenant or DEFAULT_TENANT_KEY

    def view_tenants(self, view: View) -> tuple[str, ...]:
        """The member tenants of ``view``: as listed, or every tenant sharing something with its principal."""
        if view.tenants:
            return view.tenants
        return tuple(t for t in self.rules if not self.access(t, view.principal).sees_nothing)

    def public_tenants(self) -> tuple[str, ...]:
        """Tenants that share something with ``public`` (what the open-data export reads)."""
        return tuple(t for t, rules in self.rules.items() if any(PUBLIC in r.readers for r in rules))


def snap(lon: float, lat: float, grid_m: float) -> tuple[float, float]:
    """(lon, lat) moved to the centre of its cell on a grid of ``grid_m`` metres (equirectangular).

    Cells are computed in metres along the meridian and along the parallel of the cell's own row, so
    a point and its neighbours in one cell always land on the same centre; precision is that of the
    grid, which is the point.
    """
    metres_per_degree = 111_320.0
    row = math.floor(lat * metres_per_degree / grid_m)
    centre_lat = (row + 0.5) * grid_m / metres_per_degree
    width = metres_per_degree * max(math.cos(math.radians(centre_lat)), 1e-6)
    col = math.floor(lon * width / grid_m)
    centre_lon = (col + 0.5) * grid_m / width
    return round(centre_lon, 7), round(centre_lat, 7)


def parse(document: Any, *, source: str = "policies", base: Path | None = None) -> Policies:
    """Check ``document`` against the schema and the cross-references, then build Policies (no I/O but secrets)."""
    problems = [f"{pointer(e.absolute_path) or '/'}: {e.message}"
                for e in schemas.problems(schemas.load_schema("config/sharing.schema.json"), document)]
    if problems:
        raise ConfigInvalid(f"{source} is not a valid sharing policy file", problems)
    principals_doc: dict[str, Any] = document.get("principals") or {}
    names = set(principals_doc)
    for tenant, spec in document["tenants"].items():
        for index, rule in enumerate(spec.get("share") or []):
            for reader in rule["with"]:
                if reader != PUBLIC and reader not in names:
                    problems.append(f"/tenants/{tenant}/share/{index}/with: unknown principal {reader!r}")
    for view_name, view in (document.get("views") or {}).items():
        if view["principal"] not in names:
            problems.append(f"/views/{view_name}/principal: unknown principal {view['principal']!r}")
        for member in view.get("tenants") or []:
            if member not in document["tenants"]:
                problems.append(f"/views/{view_name}/tenants: unknown tenant {member!r}")
        if view_name in document["tenants"]:
            problems.append(f"/views/{view_name}: a view cannot have the name of a tenant")
    if problems:
        raise ConfigInvalid(f"{source} has inconsistent references", problems)
    tokens: dict[str, str] = {}
    for name, spec in principals_doc.items():
        token = read_secret(spec, "token", where=f"{source}: principals.{name}.", required=True, base=base)
        assert token is not None  # required=True raised otherwise
        tokens[name] = token
    if len(set(tokens.values())) != len(tokens):
        raise ConfigInvalid(f"{source}: two principals share one token", ["/principals: tokens must differ"])
    rules: dict[str, tuple[Rule, ...]] = {}
    labels: dict[str, str] = {}
    insee: dict[str, str] = {}
    for key, spec in document["tenants"].items():
        tenant = "" if key == DEFAULT_TENANT_KEY else key
        labels[tenant] = spec.get("label") or key
        if spec.get("insee"):
            insee[tenant] = spec["insee"]
        rules[tenant] = tuple(_rule(r, f"/tenants/{key}/share/{i}") for i, r in enumerate(spec.get("share") or []))
    views = {
        name: View(name=name, principal=spec["principal"],
                   tenants=tuple("" if t == DEFAULT_TENANT_KEY else t for t in spec.get("tenants") or ()),
                   tag=spec.get("tag", "commune"))
        for name, spec in (document.get("views") or {}).items()
    }
    personal = PERSONAL_ATTRIBUTES | frozenset(document.get("never_shared_attributes") or ())
    return Policies(principals=tokens, rules=rules, labels=labels, insee=insee, views=views, personal=personal,
                    audit_retention_days=int(document.get("audit_retention_days", 365)))


def _rule(spec: Mapping[str, Any], where: str) -> Rule:
    coarsen = spec.get("coarsen") or {}
    return Rule(
        readers=frozenset(spec["with"]),
        types=frozenset(spec["types"]),
        attributes=frozenset(spec["attributes"]) if "attributes" in spec else None,
        exclude=frozenset(spec.get("exclude_attributes") or ()),
        coarsen=Coarsening(location_grid_m=coarsen.get("location_grid_m"), temporal=coarsen.get("temporal")),
        where=where,
    )


def load(path: Path) -> Policies:
    """Read and check a policy file; ConfigInvalid names the file and each problem's pointer."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigInvalid(f"cannot read sharing policy file {path}: {exc.strerror}") from None
    if len(raw) > _MAX_BYTES:
        raise ConfigInvalid(f"{path} is larger than {_MAX_BYTES} bytes")
    try:
        document = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigInvalid(f"{path} is not valid YAML{line}") from None
    return parse(document, source=str(path), base=path.parent)
