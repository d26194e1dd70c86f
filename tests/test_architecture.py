"""The map of the packages and what each may import (README "Architecture"), checked over the source.

An ast walk of every module of ``schemas``, ``gateway``, ``adapters`` and ``conformance`` (function-level
and ``TYPE_CHECKING`` imports included): each import of one of ours must follow the layer rules, and
nothing imports dynamically (``import_module``/``__import__``): entry points are the only dynamic
links. A violation still present is listed in ``KNOWN_VIOLATIONS`` with its reason; a listed violation
that disappeared fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "gateway", "adapters", "conformance")

GATEWAY_PUBLIC = frozenset(
    {
        "gateway",  # the package itself (its version)
        "gateway.model",
        "gateway.contract",
        "gateway.errors",
        "gateway.validation",
        "gateway.units",
        "gateway.crs",
        "gateway.crosssite",  # push receivers refuse browser cross-site posts the way the admin API does
        # the primitives both the gateway and adapters need, one implementation each
        "gateway.secrets",
        "gateway.oauth2",
        "gateway.problems",
        "gateway.pointer",
        # the export format: the checker reads the bundles `jonction export` writes (conformance target "export")
        "gateway.reversibility",
        "gateway.reversibility.bundle",
    }
)
"""What ``adapters`` and ``conformance`` may import from the gateway (never runtime, store, CLI)."""

DYNAMIC = "import_module()/__import__()"
PROBE = "getattr()/hasattr() on a module of ours"

KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}
"""Violations still on this branch, each with its reason; the list only shrinks."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    """Every module of our packages: dotted name -> file."""
    return {_module_name(path): path for top in PACKAGES for path in sorted((ROOT / top).rglob("*.py"))}


def _adapter_folders() -> frozenset[str]:
    return frozenset(path.parent.name for path in (ROOT / "adapters").glob("*/manifest.json"))


def _resolve(module: str) -> str:
    """The longest prefix of ``module`` that is one of our modules (``gateway.model.Entity`` -> ``gateway.model``)."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        candidate = ".".join(parts[:depth])
        if candidate in _modules():
            return candidate
    return module


def _called(node: ast.AST) -> str:
    """The name a call calls (``importlib.import_module(...)`` -> ``import_module``), else ""."""
    if not isinstance(node, ast.Call):
        return ""
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def imports(module: str, path: Path) -> Iterator[str]:
    """Names ``module`` imports (relative ones made absolute), DYNAMIC for each dynamic import, and
    PROBE for each ``getattr``/``hasattr`` on a name bound to one of our modules (probing its API)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module_names: set[str] = set()  # local names bound to a module of ours, imported or by name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _resolve(alias.name)
                if alias.name.split(".")[0] in PACKAGES:
                    module_names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            source = ".".join([*base, node.module] if node.module else base)
            for alias in node.names:
                yield _resolve(f"{source}.{alias.name}")
                if f"{source}.{alias.name}" in _modules():
                    module_names.add(alias.asname or alias.name)
            if node.module in ("importlib",) and any(a.name == "import_module" for a in node.names):
                yield DYNAMIC
        elif isinstance(node, ast.Assign) and _called(node.value) in ("import_module", "__import__"):
            module_names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if _called(node) in ("import_module", "__import__"):
            yield DYNAMIC
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called(node) in ("getattr", "hasattr") and node.args:
            target = node.args[0]
            if isinstance(target, ast.Name) and target.id in module_names:
                yield PROBE


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def rule(importer: str, imported: str, adapter_folders: frozenset[str]) -> str | None:
    """Why ``importer`` may not import ``imported`` (None if it may)."""
    if imported == DYNAMIC:
        return "no dynamic import: entry points are the only dynamic links"
    if imported == PROBE:
        return "no probing of our own modules' attributes: import the name itself"
    layer, target = importer.split(".")[0], imported.split(".")[0]
    if target not in PACKAGES:
        return None
    if layer == "schemas":
        return None if target == "schemas" else "schemas imports nothing of ours"
    if layer == "gateway":
        if target in ("adapters", "conformance"):
            return f"gateway never imports {target}"
        if importer in GATEWAY_PUBLIC and imported.split(".")[1:2] and imported.split(".")[1] in (
            "runtime", "store", "cli", "commands"
        ):
            return "the gateway's public modules (what adapters and conformance see) never import its runtime"
        return None
    if target == "gateway" and imported not in GATEWAY_PUBLIC:
        return f"{layer} imports only the gateway's public modules"
    if layer == "conformance":
        return "conformance never imports adapters" if target == "adapters" else None
    # what is left: an adapters module importing adapters, gateway or schemas
    if target == "conformance":
        return "adapters never import conformance"
    if target != "adapters" or imported == "adapters" or importer == "adapters":
        return None
    if _within(importer, "adapters.kit"):
        if _within(imported, "adapters.kit"):
            return None
        return "the kit never imports a concrete adapter" if imported.split(".")[1] in adapter_folders else (
            "the kit imports only itself (and the adapters package)"
        )
    own = ".".join(importer.split(".")[:2])
    if importer.split(".")[1] in adapter_folders:
        if _within(imported, own) or _within(imported, "adapters.kit"):
            return None
        return "an adapter folder imports only adapters.kit and itself"
    return None


def violations() -> dict[tuple[str, str], str]:
    """Every import that breaks a rule, and every module of adapters/ outside the kit and the folders."""
    found: dict[tuple[str, str], str] = {}
    folders = _adapter_folders()
    for module, path in _modules().items():
        for imported in imports(module, path):
            reason = rule(module, imported, folders)
            if reason is not None:
                found[(module, imported)] = reason
        parts = module.split(".")
        if parts[0] == "adapters" and len(parts) > 1 and parts[1] != "kit" and parts[1] not in folders:
            found[(".".join(parts[:2]), "(outside kit/ and the adapter folders)")] = (
                "adapters/ holds the kit and one folder per adapter, nothing else"
            )
    return found


def test_no_new_layer_violation() -> None:
    new = {key: reason for key, reason in violations().items() if key not in KNOWN_VIOLATIONS}
    assert not new, "\n".join(f"{a} -> {b}: {reason}" for (a, b), reason in sorted(new.items()))


def test_known_violations_are_not_stale() -> None:
    """A fixed violation leaves the list in the same change: the list only shrinks."""
    stale = sorted(set(KNOWN_VIOLATIONS) - set(violations()))
    assert not stale, f"fixed, remove from KNOWN_VIOLATIONS: {stale}"


def test_the_rules_can_fail() -> None:
    """Each rule refuses what it should, on made-up imports (so an empty result means something)."""
    folders = frozenset({"ngsi_v2", "files"})
    refused = [
        ("schemas.generate", "gateway.model"),
        ("gateway.runtime.app", "adapters.ngsi_v2"),
        ("gateway.cli", "conformance.cli"),
        ("gateway.model", "gateway.runtime.logging"),
        ("adapters.ngsi_v2", "gateway.runtime.app"),
        ("adapters.ngsi_v2", "gateway.store.sqlite"),
        ("adapters.ngsi_v2", "adapters.files"),
        ("adapters.ngsi_v2", "conformance"),
        ("adapters.kit.mapping.cli", "adapters.files"),
        ("conformance.runner", "gateway.runtime.pipeline"),
        ("conformance.runner", "gateway.store.query"),
        ("conformance.runner", "adapters.kit.payload"),
        ("gateway.cli", DYNAMIC),
        ("adapters.opcua.translate", PROBE),
    ]
    for importer, imported in refused:
        assert rule(importer, imported, folders), (importer, imported)
    allowed = [
        ("schemas.contexts", "schemas.fastcheck"),
        ("gateway.runtime.app", "gateway.store.app"),
        ("gateway.validation", "schemas"),
        ("adapters.ngsi_v2", "adapters.kit.push"),
        ("adapters.ngsi_v2.translate", "adapters.ngsi_v2"),
        ("adapters.ngsi_v2", "gateway.secrets"),
        ("adapters.ngsi_v2", "adapters"),
        ("adapters.kit.mqtt", "gateway.errors"),
        ("conformance.runner", "gateway.validation"),
        ("conformance.runner", "schemas.contexts"),
    ]
    for importer, imported in allowed:
        assert rule(importer, imported, folders) is None, (importer, imported)


def test_the_walk_sees_dynamic_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "__init__.py"
    source.write_text(
        "import importlib\nimport schemas\nfrom . import model\nfrom ..errors import X\n"
        "def f():\n    m = importlib.import_module('x')\n    return getattr(m, 'f', None), __import__('y')\n"
        "def g(record):\n    return getattr(schemas, 'MODELS', ()), getattr(record, 'x', None)\n",
        encoding="utf-8",
    )
    found = list(imports("gateway.runtime", source))
    assert found.count(DYNAMIC) == 2 and found.count(PROBE) == 2
    # made absolute, then cut to the longest prefix that is one of our modules
    assert "gateway.runtime" in found and "gateway.errors" in found and "importlib" in found


def test_the_readme_maps_the_packages() -> None:
    """The README's Architecture section names every package and the kit, in the order of the layers."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "## Architecture" in readme
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    for name in ("schemas/", "gateway/", "adapters/kit/", "conformance/", "tests/test_architecture.py",
                 "run_contract_suite", "jonction.adapters"):
        assert name in section, f"README Architecture section does not mention {name}"
