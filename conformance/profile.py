"""Profiles: the contract annex as YAML, validated by ``profile.schema.json``, and what it selects."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

import yaml

import schemas
from conformance.registry import LEVELS, Check, catalogue
from conformance.schemadoc import check_against, load_schema
from gateway.errors import ConfigInvalid
from schemas import check_document

SHIPPED: Final = ("territoire-essentiel", "territoire-complet", "fournisseur-donnees")
"""Profiles shipped with jonction (``conformance/profiles/<name>.yaml``)."""
MAX_PROFILE: Final = 1024 * 1024

DEFAULT_THRESHOLDS: Final[Mapping[str, float]] = {
    "max_entities_per_type": 500,
    "notification_timeout_seconds": 10.0,
    "max_out_of_range_rate": 0.01,
    "interval_tolerance": 0.1,
    "interval_p95_factor": 2.0,
}


@dataclass(slots=True)
class Profile:
    """A validated profile."""

    id: str
    version: str
    doc: dict[str, Any]
    sha256: str
    source: str
    quality: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> dict[str, str]:
        """Title in French and English."""
        title: dict[str, str] = self.doc["title"]
        return title

    @property
    def mandatory_levels(self) -> list[str]:
        """Levels every check of which is mandatory."""
        return [lv for lv in LEVELS if lv in self.doc["levels"].get("mandatory", [])]

    @property
    def optional_levels(self) -> list[str]:
        """Levels run for information only."""
        return [lv for lv in LEVELS if lv in self.doc["levels"].get("optional", [])]

    @property
    def levels(self) -> list[str]:
        """Every level the profile runs."""
        chosen = set(self.mandatory_levels) | set(self.optional_levels)
        return [lv for lv in LEVELS if lv in chosen]

    @property
    def models(self) -> list[dict[str, str]]:
        """Smart Data Models named by the profile, with their versions."""
        models: list[dict[str, str]] = self.doc.get("models", [])
        return models

    @property
    def model_names(self) -> list[str]:
        """Names of the profile's Smart Data Models."""
        return [m["name"] for m in self.models]

    @property
    def required_models(self) -> list[str]:
        """Models every target must deliver (``required: true`` in the profile)."""
        return [m["name"] for m in self.models if m.get("required")]

    @property
    def supplied_models(self) -> list[str]:
        """Models the vendor sheet says the vendor delivers (``supplies`` and the declared types)."""
        names = [str(n) for n in self.quality.get("supplies", [])]
        names += [str(d["type"]) for d in self.quality.get("declarations", []) if d.get("type") not in names]
        return names

    def must_deliver(self, model: str) -> str | None:
        """Why the target must deliver entities of ``model`` (profile or vendor sheet), or None."""
        if model in self.required_models:
            return f"the profile requires {model} entities"
        if model in self.supplied_models:
            return f"the vendor sheet declares that the vendor supplies {model}"
        return None

    @property
    def strict(self) -> bool:
        """L1 in strict mode (unknown types, undefined attributes and units not allowed are errors)."""
        return bool(self.doc.get("strict", False))

    @property
    def waivers(self) -> dict[str, str]:
        """Waived check id -> the written reason."""
        return {w["check"]: w["reason"] for w in self.doc.get("waivers", [])}

    def threshold(self, name: str) -> float:
        """A threshold from the profile, or its default."""
        return float(self.doc.get("thresholds", {}).get(name, DEFAULT_THRESHOLDS[name]))

    @property
    def max_entities(self) -> int:
        """How many entities of each model the L1 checks read from an endpoint."""
        return int(self.threshold("max_entities_per_type"))

    def status(self, chk: Check) -> str | None:
        """``mandatory``, ``optional``, ``waived`` or None (not selected) for one check."""
        if chk.id in self.waivers:
            return "waived"
        if chk.model is not None and chk.model not in self.model_names:
            return None
        extra = self.doc.get("checks", {})
        if chk.id in extra.get("mandatory", []):
            return "mandatory"
        if chk.level in self.mandatory_levels:
            return "optional" if chk.id in extra.get("optional", []) else "mandatory"
        if chk.level in self.optional_levels or chk.id in extra.get("optional", []):
            return "optional"
        return None

    def selection(self) -> dict[str, str]:
        """Every selected check id with its status, in catalogue order by level then id."""
        out: dict[str, str] = {}
        for level in LEVELS:
            for chk in sorted((c for c in catalogue().values() if c.level == level), key=lambda c: c.id):
                st = self.status(chk)
                if st is not None:
                    out[chk.id] = st
        return out


def _semantic_problems(doc: Mapping[str, Any]) -> list[str]:
    known = catalogue()
    problems: list[str] = []
    for key in ("mandatory", "optional"):
        for i, cid in enumerate(doc.get("checks", {}).get(key, [])):
            if cid not in known:
                problems.append(f"/checks/{key}/{i}: unknown check id {cid}")
    for i, waiver in enumerate(doc.get("waivers", [])):
        if waiver["check"] not in known:
            problems.append(f"/waivers/{i}/check: unknown check id {waiver['check']}")
    both = set(doc["levels"].get("mandatory", [])) & set(doc["levels"].get("optional", []))
    if both:
        problems.append(f"/levels: {sorted(both)} both mandatory and optional")
    seen: set[str] = set()
    for i, model in enumerate(doc.get("models", [])):
        if model["name"] in seen:
            problems.append(f"/models/{i}/name: {model['name']} is listed twice")
        seen.add(model["name"])
        problems.extend(f"/models/{i}/{p}" for p in _model_problems(model["name"], model["version"]))
    return problems


def _model_problems(name: str, version: str) -> list[str]:
    """Compare a model and version with what ``schemas`` ships."""
    try:
        info = schemas.model(name)
    except schemas.UnknownModel as exc:
        return [f"name: {name} is not a Smart Data Model jonction ships ({exc})"]
    shipped = info.upstream_version
    if shipped and shipped != version:
        return [f"version: {name} {version} does not match the shipped schema version {shipped}"]
    return []


def _read(spec: str) -> tuple[bytes, str]:
    if spec in SHIPPED:
        data = files("conformance").joinpath("profiles", f"{spec}.yaml").read_bytes()
        return data, f"shipped:{spec}"
    path = Path(spec)
    if not path.is_file():
        raise ConfigInvalid(f"profile {spec!r} is neither a shipped profile ({', '.join(SHIPPED)}) nor a file")
    if path.stat().st_size > MAX_PROFILE:
        raise ConfigInvalid(f"profile {path} is larger than {MAX_PROFILE} bytes")
    return path.read_bytes(), str(path)


def load_profile(spec: str) -> Profile:
    """Load and validate a profile by shipped name or path; ConfigInvalid lists every problem."""
    data, source = _read(spec)
    return parse_profile(data, source)


def parse_profile(data: bytes, source: str) -> Profile:
    """Validate profile bytes (YAML) and build the Profile."""
    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigInvalid(f"profile {source} is not valid YAML: {exc}") from exc
    problems = check_against("profile.schema.json", doc)
    if problems:
        raise ConfigInvalid(f"profile {source} is invalid", problems)
    problems = _semantic_problems(doc)
    if problems:
        raise ConfigInvalid(f"profile {source} is invalid", problems)
    return Profile(
        id=doc["id"],
        version=doc["version"],
        doc=doc,
        sha256=hashlib.sha256(data).hexdigest(),
        source=source,
        quality=dict(doc.get("quality", {})),
    )


def load_vendor_sheet(path: Path) -> dict[str, Any]:
    """A vendor sheet (YAML: the ``quality`` block of a profile) validated like a profile's."""
    try:
        if path.stat().st_size > MAX_PROFILE:
            raise ConfigInvalid(f"vendor sheet {path} is larger than {MAX_PROFILE} bytes")
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigInvalid(f"vendor sheet {path} cannot be read: {exc}") from exc
    schema = load_schema("profile.schema.json")
    wrapper = {"$schema": schema["$schema"], "$ref": "#/$defs/quality", "$defs": schema["$defs"]}
    problems = check_document(wrapper, doc)
    if problems:
        raise ConfigInvalid(f"vendor sheet {path} is invalid", problems)
    result: dict[str, Any] = doc
    return result
