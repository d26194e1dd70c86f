"""Routing one source to many communes: each entity to its commune's tenant (``sources[].routing``).

A syndicat's vendor account covers dozens of communes; each commune is a tenant. A source's
``routing`` block names up to three ways to find an entity's commune, tried in the configured
``order`` (default: mapping, attribute, location); the first that answers wins:

- ``mapping``: a file (CSV with an ``id,tenant`` header, or YAML ``id: tenant``) listing entity
  ids or device ids (the message's ``device_id``) and their tenant;
- ``attribute``: an attribute's value (an INSEE code, a postcode; ``address.postalCode`` reads
  a member of a structured value) looked up in a table value → tenant;
- ``location``: the entity's GeoProperty (``location`` by default) inside a commune boundary
  polygon of a GeoJSON file (:mod:`gateway.runtime.geoindex`; its rules for points on a shared
  boundary apply). A Point is used as is; another geometry by the centre of its bounding box.

When none answers, the entity is *unroutable*: :class:`Unroutable` carries every method's reason
and the pipeline keeps the entity as a dead letter of stage ``routing`` (the rest of the message
and of the group goes on). ``otherwise: source_tenant`` sends it to the source's tenant instead.
Everything here is pure: the files are read when the configuration is built, and again when an
operator restarts the source (``POST /admin/sources/{name}/restart``) after fixing them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from gateway.errors import ConfigInvalid
from gateway.model import Entity, RawMessage
from gateway.runtime.geoindex import GeoIndex, bounding_centre, load_boundaries

METHODS: Final = ("mapping", "attribute", "location")
"""The routing methods, in their default order of precedence."""
MAX_MAPPING_BYTES: Final = 64 << 20
_TENANT = re.compile(r"^[A-Za-z0-9_\-]{0,64}$")


class Unroutable(Exception):
    """No routing method found the entity's tenant; ``reason`` says why for each method tried."""

    def __init__(self, reason: str, pointer: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.pointer = pointer


@dataclass(frozen=True, slots=True)
class _Miss:
    """Why one method did not route an entity (and where in the entity, if somewhere)."""

    reason: str
    pointer: str = ""


Method = Callable[[RawMessage, Entity], "str | _Miss"]


@dataclass(frozen=True, slots=True)
class MappingMethod:
    """Entity id or device id → tenant, from a file."""

    table: Mapping[str, str]

    def __call__(self, raw: RawMessage, item: Entity) -> str | _Miss:
        """The tenant of the entity id, else of the message's device id."""
        entity_id = str(item.get("id", ""))
        tenant = self.table.get(entity_id)
        if tenant is not None:
            return tenant
        device = raw.metadata.get("device_id") or raw.metadata.get("device") or ""
        if device and (tenant := self.table.get(device)) is not None:
            return tenant
        return _Miss(f"mapping: no entry for entity {entity_id!r}" + (f" or device {device!r}" if device else ""))


@dataclass(frozen=True, slots=True)
class AttributeMethod:
    """An attribute's value → tenant, through a table."""

    path: tuple[str, ...]
    table: Mapping[str, str]

    def __call__(self, raw: RawMessage, item: Entity) -> str | _Miss:  # one signature for all
        """The tenant of the attribute's value."""
        name = ".".join(self.path)
        value = _value(item.get(self.path[0]))
        for member in self.path[1:]:
            value = value.get(member) if isinstance(value, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return _Miss(f"attribute: no value for {name}", "/" + self.path[0])
        key = str(value).strip()
        tenant = self.table.get(key)
        if tenant is None:
            return _Miss(f"attribute: {name} = {key!r} is in no routing table entry", "/" + self.path[0])
        return tenant


@dataclass(frozen=True, slots=True)
class LocationMethod:
    """The entity's location → the tenant of the commune polygon containing it."""

    index: GeoIndex
    geoproperty: str = "location"

    def __call__(self, raw: RawMessage, item: Entity) -> str | _Miss:  # one signature for all
        """The tenant of the commune the entity is in."""
        where = "/" + self.geoproperty
        geometry = _value(item.get(self.geoproperty))
        point = bounding_centre(geometry) if isinstance(geometry, Mapping) else None
        if point is None:
            return _Miss(f"location: the entity has no {self.geoproperty} to place it in a commune", where)
        area = self.index.find(*point)
        shown = f"({point[0]:.7g}, {point[1]:.7g})"
        if area is None:
            return _Miss(f"location: point {shown} is outside every commune of the boundary file", where)
        if area.tenant is None:
            label = f"{area.code} {area.name}".strip()
            return _Miss(f"location: point {shown} is in commune {label}, which no tenant serves", where)
        return area.tenant


def _value(attribute: Any) -> Any:
    """The value of a normalized attribute (the first instance of a multi-attribute), or the raw value."""
    if isinstance(attribute, list):
        attribute = attribute[0] if attribute else None
    if isinstance(attribute, Mapping) and "type" in attribute and ("value" in attribute or "object" in attribute):
        return attribute.get("value", attribute.get("object"))
    return attribute


@dataclass(frozen=True, slots=True)
class Router:
    """A source's routing: methods in order of precedence, and what to do when none answers."""

    methods: tuple[tuple[str, Method], ...]
    fallback: bool = False
    """True (``otherwise: source_tenant``): an unroutable entity goes to the source's tenant."""
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The ``routing`` block it was built from, with where its files are (for :meth:`reloaded`)."""
    base: Path = field(default=Path(), compare=False, repr=False)
    where: str = field(default="", compare=False, repr=False)

    def tenant(self, raw: RawMessage, item: Entity) -> str:
        """The entity's tenant; raises Unroutable with each method's reason."""
        misses: list[_Miss] = []
        for _name, method in self.methods:
            found = method(raw, item)
            if isinstance(found, str):
                return found
            misses.append(found)
        if self.fallback:
            return raw.tenant
        pointer = next((m.pointer for m in reversed(misses) if m.pointer), "")
        raise Unroutable("unroutable: " + "; ".join(m.reason for m in misses), pointer)

    def reloaded(self) -> Router:
        """The same routing with its files read again (after an operator fixed them); ConfigInvalid if they are bad."""
        router, problems = build(self.spec, base=self.base, where=self.where)
        if router is None:
            raise ConfigInvalid("the routing files are invalid; the previous routing stays in use", problems)
        return router

    def describe(self) -> list[str]:
        """The methods' names, in order (admin API)."""
        return [name for name, _ in self.methods]


# ---------------------------------------------------------------------------- building from config


def _path(value: str, base: Path) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def _check_tenant(tenant: Any, where: str, problems: list[str]) -> str | None:
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        problems.append(f"{where}: {tenant!r} is not a tenant name (letters, digits, _ and -, at most 64)")
        return None
    return tenant


def parse_mapping(text: str, *, yaml_file: bool, source: str = "mapping") -> dict[str, str]:
    """Id → tenant from a mapping file's text: CSV with an ``id,tenant`` header (``device`` or ``entity``
    may name the id column), or a YAML mapping. Raises ConfigInvalid naming each bad line or key."""
    problems: list[str] = []
    table: dict[str, str] = {}
    if yaml_file:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigInvalid(f"{source} is not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
        if not isinstance(doc, Mapping):
            raise ConfigInvalid(f"{source}: a YAML mapping file maps ids to tenants", ["/: expected a mapping"])
        for key, tenant in doc.items():
            if (checked := _check_tenant(tenant, f"/{key}", problems)) is not None:
                table[str(key)] = checked
    else:
        reader = csv.reader(io.StringIO(text))
        header = [h.strip().lower() for h in next(reader, [])]
        id_col = next((header.index(n) for n in ("id", "device", "entity", "device_id", "entity_id") if n in header),
                      None)
        if id_col is None or "tenant" not in header:
            raise ConfigInvalid(f"{source}: a CSV mapping file needs a header with an id column and a tenant column",
                                ["line 1: expected id,tenant"])
        tenant_col = header.index("tenant")
        for line, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(id_col, tenant_col):
                problems.append(f"line {line}: expected {len(header)} columns, found {len(row)}")
                continue
            key = row[id_col].strip()
            checked = _check_tenant(row[tenant_col].strip(), f"line {line}", problems)
            if checked is None:
                continue
            if key in table and table[key] != checked:
                problems.append(f"line {line}: {key!r} is mapped twice ({table[key]!r} and {checked!r})")
            table[key] = checked
            if len(problems) >= 20:
                break
    if problems:
        raise ConfigInvalid(f"{source} has invalid entries", problems)
    return table


def _load_mapping(path: Path) -> dict[str, str]:
    try:
        if path.stat().st_size > MAX_MAPPING_BYTES:
            raise ConfigInvalid(f"{path}: larger than {MAX_MAPPING_BYTES} bytes")
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigInvalid(f"cannot read mapping file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigInvalid(f"{path} is not UTF-8 text") from None
    return parse_mapping(text, yaml_file=path.suffix.lower() in (".yaml", ".yml"), source=str(path))


def build(spec: Mapping[str, Any], *, base: Path, where: str) -> tuple[Router | None, list[str]]:
    """A Router from a source's ``routing`` block (already schema-checked), reading its files.

    Returns (router, problems): every problem names its key under ``where`` (``/sources/0/routing``).
    """
    problems: list[str] = []
    order: Sequence[str] = spec.get("order") or [m for m in METHODS if m in spec]
    methods: list[tuple[str, Method]] = []
    for i, name in enumerate(order):
        if name not in spec:
            problems.append(f"{where}/order/{i}: {name!r} is listed but has no {name} block")
            continue
        block = spec[name]
        try:
            if name == "mapping":
                methods.append((name, MappingMethod(_load_mapping(_path(block["file"], base)))))
            elif name == "attribute":
                table = {str(k): t for k, v in block["tenants"].items()
                         if (t := _check_tenant(v, f"{where}/attribute/tenants/{k}", problems)) is not None}
                methods.append((name, AttributeMethod(tuple(block["name"].split(".")), table)))
            else:
                codes = {str(k): t for k, v in (block.get("tenants") or {}).items()
                         if (t := _check_tenant(v, f"{where}/location/tenants/{k}", problems)) is not None}
                index = load_boundaries(_path(block["boundaries"], base), tenant_property=block.get("tenant_property"),
                                        code_property=block.get("code_property"), tenants=codes,
                                        name_property=block.get("name_property"))
                methods.append((name, LocationMethod(index, block.get("geoproperty", "location"))))
        except ConfigInvalid as exc:
            key = {"mapping": "mapping/file", "attribute": "attribute", "location": "location/boundaries"}[name]
            problems.extend(f"{where}/{key}: {p}" for p in exc.problems)
    for name in METHODS:
        if name in spec and name not in order:
            problems.append(f"{where}/{name}: configured but missing from order")
    if problems:
        return None, problems
    return Router(tuple(methods), fallback=spec.get("otherwise") == "source_tenant", spec=spec, base=base,
                  where=where), []
