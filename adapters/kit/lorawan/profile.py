"""Device profiles: YAML data that maps a device model's decoded fields to Smart Data Model attributes.

A profile names the built-in decoder for raw bytes, the entity type, the per-device parameters
provisioning supplies, and for each attribute where its value comes from (``from``/``any``),
how it is transformed (``map``, ``scale``, ``offset``, ``fill_level``, ``round``, ``type``), the
plausible ``range`` and the UN/CEFACT ``unit``. Nothing is evaluated: the transformations are
a closed vocabulary, so a profile from a vendor or a territory is safe to load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from adapters.kit.lorawan.decoders import DECODERS
from adapters.kit.lorawan.normalize import flag, number
from gateway.errors import ConfigInvalid, TranslationError
from gateway.model import ModelError, epoch_time, utc_time
from gateway.pointer import join, pointer
from gateway.units import is_uncefact

PROFILE_SCHEMA: dict[str, Any] = json.loads(
    files(__package__).joinpath("profile.schema.json").read_text(encoding="utf-8")
)
"""JSON Schema every device profile must satisfy."""

_MISSING = object()
_VALIDATOR = jsonschema.Draft202012Validator(PROFILE_SCHEMA)
MAX_PROFILE_BYTES = 256 * 1024


def _segments(path: str) -> list[str]:
    return [s for s in path.split(".") if s]


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted path (``bytes.counterValues.0``), or a private MISSING marker."""
    return _lookup(document, tuple(_segments(path)))


def _pointer(base: str, path: str) -> str:
    return _pointer_of(base, tuple(_segments(path)))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class Measured:
    """One attribute value a profile produced."""

    value: Any
    unit: str | None


def _lookup(document: Any, segments: tuple[str, ...]) -> Any:
    node = document
    for segment in segments:
        if isinstance(node, Mapping):
            if segment not in node:
                return _MISSING
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit():
            index = int(segment)
            if index >= len(node):
                return _MISSING
            node = node[index]
        else:
            return _MISSING
    return node


def _pointer_of(base: str, segments: tuple[str, ...]) -> str:
    return join(base, *segments)


class _Compiled:
    """One attribute rule, with its source paths split once (templates are filled per device)."""

    __slots__ = (
        "_split",
        "any",
        "has_range",
        "kind",
        "name",
        "numeric",
        "required",
        "sources",
        "spec",
        "table",
        "templated",
        "unit",
    )

    def __init__(self, name: str, spec: Mapping[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.any = "any" in spec
        raw = spec["any"] if self.any else spec["from"]
        self.sources: tuple[str, ...] = tuple(raw) if isinstance(raw, list) else (raw,)
        self.templated = any("{" in s for s in self.sources)
        self._split = tuple(tuple(_segments(s)) for s in self.sources)
        table = spec.get("map")
        self.table: Mapping[str, Any] | None = {str(k): v for k, v in table.items()} if table is not None else None
        self.kind = spec.get("type")
        self.numeric = any(k in spec for k in ("scale", "offset", "fill_level", "round")) or self.kind in (
            "number", "integer")
        self.has_range = "range" in spec
        self.required = bool(spec.get("required"))
        self.unit: str | None = spec.get("unit")

    def paths(self, params: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
        if not self.templated:
            return self._split
        return tuple(tuple(_segments(s.format_map(params))) for s in self.sources)


class Profile:
    """A loaded, validated device profile."""

    def __init__(self, document: Mapping[str, Any], origin: str) -> None:
        self.document = document
        self.origin = origin
        self.id: str = document["id"]
        self.vendor: str = document["vendor"]
        self.model: str = document["model"]
        self.decoder: str | None = document.get("decoder")
        self.f_ports: frozenset[int] | None = frozenset(document["f_ports"]) if "f_ports" in document else None
        self.entity_type: str = document["entity_type"]
        self.requires: tuple[str, ...] = tuple(document.get("requires", ()))
        self.time_spec: Mapping[str, Any] | None = document.get("time")
        self.time_attribute: str | None = document.get("time_attribute")
        device = document["device"]
        self.category: list[str] = list(device.get("category", ["sensor"]))
        self.controlled_property: list[str] = list(device["controlled_property"])
        self.device_rules: Mapping[str, Mapping[str, Any]] = device.get("attributes", {})
        self.parameters: Mapping[str, Mapping[str, Any]] = document.get("parameters", {})
        self.rules: Mapping[str, Mapping[str, Any]] = document["attributes"]
        self._compiled = [_Compiled(name, rule) for name, rule in self.rules.items()]
        self._compiled_device = [_Compiled(name, rule) for name, rule in self.device_rules.items()]

    # ------------------------------------------------------------------ provisioning

    def parameters_for(self, given: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
        """The device's parameters with defaults applied, and the problems found (config errors)."""
        problems = [f"{where}/params/{name}: profile {self.id} has no parameter {name!r}"
                    for name in given if name not in self.parameters]
        out: dict[str, Any] = {}
        for name, spec in self.parameters.items():
            value = given.get(name, spec.get("default", _MISSING))
            if value is _MISSING:
                problems.append(f"{where}/params/{name}: required by profile {self.id} ({spec.get('description', '')})")
                continue
            if spec["type"] in ("number", "integer"):
                try:
                    parsed = number(value)
                except TranslationError:
                    parsed = None
                if parsed is None or (spec["type"] == "integer" and not float(parsed).is_integer()):
                    problems.append(f"{where}/params/{name}: {value!r} is not a {spec['type']}")
                    continue
                if "minimum" in spec and parsed < spec["minimum"]:
                    problems.append(f"{where}/params/{name}: {parsed} is below the minimum {spec['minimum']}")
                if "maximum" in spec and parsed > spec["maximum"]:
                    problems.append(f"{where}/params/{name}: {parsed} is above the maximum {spec['maximum']}")
                out[name] = int(parsed) if spec["type"] == "integer" else parsed
            else:
                out[name] = str(value)
        return out, problems

    # ------------------------------------------------------------------ translation

    def measures(self, f_port: int | None) -> bool:
        """Whether frames on this port carry measurements (other ports only update the Device)."""
        return self.f_ports is None or f_port is None or f_port in self.f_ports

    def attributes(
        self, decoded: Mapping[str, Any], params: Mapping[str, Any], base: str
    ) -> dict[str, Measured]:
        """The entity's measured attributes from a decoded object; absent fields are left out."""
        return self._apply(self._compiled, decoded, params, base)

    def device_attributes(
        self, decoded: Mapping[str, Any], params: Mapping[str, Any], base: str
    ) -> dict[str, Measured]:
        """Attributes of the Device entity (battery...) from a decoded object."""
        return self._apply(self._compiled_device, decoded, params, base)

    def observed_time(self, decoded: Mapping[str, Any], params: Mapping[str, Any], base: str) -> str | None:
        """The observation time carried by the payload, when the profile says where it is."""
        if self.time_spec is None:
            return None
        path = self.time_spec["from"].format_map(params)
        value = lookup(decoded, path)
        if value is _MISSING or value is None:
            return None
        where = _pointer(base, path)
        if self.time_spec.get("epoch"):
            seconds = number(value, where)
            if seconds is None:
                return None
            try:
                return epoch_time(float(seconds))
            except ModelError as exc:
                raise TranslationError(str(exc), where) from exc
        text = str(value)
        if self.time_spec.get("zone") == "UTC" and not _has_zone(text):
            text += "Z"
        try:
            return utc_time(text)
        except ModelError as exc:
            raise TranslationError(str(exc), where) from exc

    def _apply(
        self, rules: list[_Compiled], decoded: Mapping[str, Any], params: Mapping[str, Any], base: str,
    ) -> dict[str, Measured]:
        out: dict[str, Measured] = {}
        for rule in rules:
            result = self._evaluate(rule, decoded, params, base)
            if result is not _MISSING:
                out[rule.name] = Measured(result, rule.unit)
        return out

    def _evaluate(self, rule: _Compiled, decoded: Mapping[str, Any], params: Mapping[str, Any], base: str) -> Any:
        name = rule.name
        paths = rule.paths(params)
        if rule.any:
            found = [v for v in (_lookup(decoded, p) for p in paths) if v is not _MISSING and v is not None]
            if not found:
                if rule.required:
                    raise TranslationError(f"{name}: none of {rule.sources} in the decoded payload", base)
                return _MISSING
            value: Any = any(flag(v) for v in found)
            where = _pointer_of(base, paths[0])
        else:
            value, where = _MISSING, base
            for path in paths:
                candidate = _lookup(decoded, path)
                if candidate is not _MISSING and candidate is not None:
                    value, where = candidate, _pointer_of(base, path)
                    break
            if value is _MISSING:
                if rule.required:
                    raise TranslationError(f"{name}: {' or '.join(rule.sources)} missing from the decoded payload",
                                           base)
                return _MISSING
        if rule.table is not None:
            key = _text(value)
            if key not in rule.table:
                known = ", ".join(map(str, rule.table))
                raise TranslationError(f"{name}: value {value!r} has no mapping in profile {self.id} "
                                       f"(known: {known})", where)
            value = rule.table[key]
        if rule.numeric or (rule.has_range and not isinstance(value, str)):
            parsed = number(value, where)
            if parsed is None:
                return _MISSING
            if isinstance(parsed, float) and not math.isfinite(parsed):
                raise TranslationError(f"{name}: {parsed} is not a finite number", where)
            value = self._numeric(name, rule.spec, parsed, params, where)
        elif rule.kind == "string":
            value = _text(value)
        elif rule.kind == "boolean":
            value = flag(value)
        return value

    def _numeric(self, name: str, rule: Mapping[str, Any], value: float, params: Mapping[str, Any],
                 where: str) -> Any:
        result = float(value)
        if "fill_level" in rule:
            empty = float(self._param(rule["fill_level"]["empty"], params))
            full = float(self._param(rule["fill_level"].get("full", 0), params))
            if empty <= full:
                raise TranslationError(f"{name}: empty distance {empty} must exceed full distance {full}", where)
            # Past the floor reads as empty, inside the blind zone as full.
            result = min(1.0, max(0.0, (empty - result) / (empty - full)))
        if "scale" in rule:
            result *= float(self._param(rule["scale"], params))
        if "offset" in rule:
            result += float(self._param(rule["offset"], params))
        if not math.isfinite(result):  # a huge reading times a scale overflows
            raise TranslationError(f"{name}: {value} scales beyond a finite number", where)
        # Scaling in binary floating point leaves noise (92 * 0.01 = 0.9200000000000002).
        result = round(result, rule.get("round", 9))
        low, high = (rule.get("range") or [None, None])
        if (low is not None and result < low) or (high is not None and result > high):
            policy = rule.get("on_out_of_range", "reject")
            if policy == "drop":
                return _MISSING
            if policy == "clamp":
                upper = high if high is not None else result
                lower = low if low is not None else result
                result = float(min(upper, max(lower, result)))
            else:
                raise TranslationError(
                    f"{name}: {result} is outside the plausible range [{low}, {high}] of profile {self.id}", where)
        if rule.get("type") == "integer" or (isinstance(value, int) and result.is_integer()
                                             and not any(k in rule for k in ("scale", "fill_level"))):
            return round(result)
        return result

    @staticmethod
    def _param(ref: Any, params: Mapping[str, Any]) -> Any:
        if isinstance(ref, str) and ref.startswith("$"):
            return params[ref[1:]]
        return ref


def _has_zone(text: str) -> bool:
    tail = text[19:]
    return tail.endswith(("Z", "z")) or "+" in tail or "-" in tail


def check_profile(document: Any, origin: str) -> list[str]:
    """Every problem in a profile document (schema, decoder, units, parameter references)."""
    if not isinstance(document, Mapping):
        return [f"{origin}: a device profile must be a mapping"]
    problems = [f"{origin}: {pointer(e.absolute_path) or '/'}: {e.message}"
                for e in sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))]
    if problems:
        return problems
    if document.get("decoder") and document["decoder"] not in DECODERS:
        problems.append(f"{origin}: /decoder: no built-in decoder {document['decoder']!r} "
                        f"(known: {', '.join(sorted(DECODERS))})")
    params = set(document.get("parameters", {}))
    sections = [("attributes", document["attributes"]),
                ("device/attributes", document["device"].get("attributes", {}))]
    for section, rules in sections:
        for name, rule in rules.items():
            unit = rule.get("unit")
            if unit is not None and not is_uncefact(unit):
                problems.append(f"{origin}: /{section}/{name}/unit: {unit!r} is not a UN/CEFACT common code")
            refs = [rule.get("scale"), rule.get("offset"), *(rule.get("fill_level") or {}).values()]
            for ref in refs:
                if isinstance(ref, str) and ref[1:] not in params:
                    problems.append(f"{origin}: /{section}/{name}: {ref} is not a declared parameter")
    return problems


def load_profile_file(path: Path) -> Profile:
    """Load and check one profile YAML file; ConfigInvalid lists every problem."""
    if path.stat().st_size > MAX_PROFILE_BYTES:
        raise ConfigInvalid(f"device profile {path} is over {MAX_PROFILE_BYTES} bytes")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigInvalid(f"device profile {path} is not YAML", [str(exc)]) from exc
    problems = check_profile(document, path.name)
    if problems:
        raise ConfigInvalid(f"device profile {path} is invalid", problems)
    return Profile(document, str(path))


@lru_cache(maxsize=1)
def builtin_profiles() -> Mapping[str, Profile]:
    """The profiles shipped in ``adapters/kit/lorawan/profiles`` (loaded and checked once)."""
    folder = Path(str(files(__package__).joinpath("profiles")))
    return _index(load_profile_file(p) for p in sorted(folder.glob("*.yaml")))


def _index(profiles: Iterable[Profile]) -> dict[str, Profile]:
    out: dict[str, Profile] = {}
    for profile in profiles:
        if profile.id in out:
            raise ConfigInvalid(f"two device profiles named {profile.id!r}",
                                [out[profile.id].origin, profile.origin])
        out[profile.id] = profile
    return out


def load_profiles(extra_dirs: Iterable[str] = ()) -> dict[str, Profile]:
    """Built-in profiles plus those in ``extra_dirs`` (a territory's own; same id overrides)."""
    merged = dict(builtin_profiles())
    for folder in extra_dirs:
        path = Path(folder)
        if not path.is_dir():
            raise ConfigInvalid(f"profiles directory {folder} does not exist")
        merged.update(_index(load_profile_file(p) for p in sorted(path.glob("*.yaml"))))
    return merged
