"""The adapter contract suite, as a function any adapter package runs on itself.

jonction runs it over every adapter it discovers (``tests/adapters/test_contract.py``); a
third-party adapter package runs the same checks on its own folder, wherever it sits on disk::

    from adapters.kit.testing import contract_params

    @pytest.mark.parametrize("check", contract_params(MyAdapter, Path(__file__).parents[1] / "my_domain"))
    def test_contract(check: ContractCheck) -> None:
        check.run()

or, without pytest, ``run_contract_suite(MyAdapter, folder)``, which runs every check and raises one
``ContractFailure`` listing every failure. The manifest schema and the entity schemas come from the
installed ``schemas`` package, never from a repository path. A check that cannot apply is skipped
with a written reason, never silently.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

import schemas
from gateway.contract import ADAPTER_FILES, ENTRY_POINT_GROUP, Adapter, discover
from gateway.model import RawMessage
from gateway.validation import validate

if TYPE_CHECKING:
    from _pytest.mark.structures import ParameterSet

__all__ = [
    "ContractCheck",
    "ContractFailure",
    "ContractReport",
    "adapter_folder",
    "contract_checks",
    "contract_params",
    "fixture_message",
    "fixture_payloads",
    "import_problems",
    "installed_adapters",
    "run_contract_suite",
    "sample_instance",
]

DISTRIBUTION = "jonction"
"""The distribution whose base dependencies and extras an adapter's imports are checked against."""

SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|private_?key|credential)", re.I)
"""Config field names that hold a secret: their schema must say ``writeOnly``."""
NOT_SECRET = re.compile(r"(_file|_path|_env|_url|_header|_name|_field|_param|_expiry|_ttl)$", re.I)
"""Names that look secret but are not: a file path to a secret, an environment variable name..."""

_KIT = Path(__file__).resolve().parent
_ADAPTERS_ROOT = _KIT.parent
_OUR_TOPS = ("gateway", "schemas", "adapters", "conformance")
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*['"]([^'"]+)['"]""")


class ContractFailure(AssertionError):
    """One or more contract checks failed; the message lists every failure."""


@dataclass(frozen=True, slots=True)
class ContractCheck:
    """One check of the contract on one adapter: ``run()`` raises AssertionError if it fails."""

    domain: str
    name: str
    func: Callable[[], None] = field(repr=False, compare=False)
    skip: str | None = None
    """Why this check does not apply (a skip always carries its reason)."""

    @property
    def id(self) -> str:
        """A stable test id, e.g. ``ngsi_v2-fixture[waste_and_air.json]``."""
        return f"{self.domain}-{self.name}"

    def run(self) -> None:
        """Run the check (AssertionError on failure); a skipped check must not be run."""
        if self.skip is not None:
            raise RuntimeError(f"{self.id} is skipped: {self.skip}")
        self.func()


@dataclass(frozen=True, slots=True)
class ContractReport:
    """What ``run_contract_suite`` did: the checks that passed, and the skipped ones with their reason."""

    passed: tuple[str, ...]
    skipped: Mapping[str, str]


# --- the checks -------------------------------------------------------------------------------


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _sample_config(folder: Path) -> dict[str, Any]:
    loaded = yaml.safe_load((folder / "sample.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), "sample.yaml must be a mapping"
    return loaded


def sample_instance(adapter_class: type[Adapter], folder: Path) -> Adapter:
    """An instance configured with the folder's ``sample.yaml`` (no HTTP session, no logger: no I/O)."""
    factory: Callable[..., Adapter] = adapter_class
    return factory(_sample_config(folder), http=None, log=None)


def fixture_payloads(folder: Path) -> list[Path]:
    """Recorded payloads: every file of ``fixtures/`` but the goldens and the ``.meta.json`` sidecars."""
    fixtures = folder / "fixtures"
    if not fixtures.is_dir():
        return []
    return [
        path
        for path in sorted(fixtures.glob("*"))
        if path.is_file() and not path.name.endswith((".golden.json", ".meta.json"))
    ]


def _stem(path: Path) -> str:
    return path.name.split(".")[0]


def fixture_message(domain: str, payload_path: Path) -> RawMessage:
    """The RawMessage of a recorded payload (fields other than the payload from its ``.meta.json``)."""
    meta_path = payload_path.with_name(_stem(payload_path) + ".meta.json")
    meta: dict[str, Any] = _read_json(meta_path) if meta_path.exists() else {}
    return RawMessage(
        source=meta.get("source", f"{domain}-fixture"),
        tenant=meta.get("tenant", ""),
        received_at=meta.get("received_at", "2024-01-01T00:00:00Z"),
        payload=payload_path.read_bytes(),
        idempotency_key=meta.get("idempotency_key", payload_path.name),
        content_type=meta.get("content_type", "application/json"),
        metadata=meta.get("metadata", {}),
    )


def _secret_problems(schema: Any, path: str = "") -> Iterator[str]:
    """JSON pointers of secret-looking string fields whose schema lacks ``writeOnly``."""
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            here = f"{path}/{name}"
            if (
                SECRET_NAME.search(name)
                and not NOT_SECRET.search(name)
                and isinstance(sub, dict)
                and sub.get("type", "string") in ("string", ["string", "null"])
                and not sub.get("writeOnly")
            ):
                yield here
        for key, sub in schema.items():
            if key != "properties" or not isinstance(sub, dict):
                yield from _secret_problems(sub, path)
            else:
                for name, prop_schema in sub.items():
                    yield from _secret_problems(prop_schema, f"{path}/{name}")
    elif isinstance(schema, list):
        for sub in schema:
            yield from _secret_problems(sub, path)


def _check_identity(adapter_class: type[Adapter], folder: Path) -> None:
    manifest = adapter_class.manifest
    on_disk = _read_json(folder / "manifest.json")
    assert folder.name == manifest.domain == on_disk.get("domain"), (
        f"identity is the folder name: folder {folder.name!r}, manifest domain {manifest.domain!r}, "
        f"manifest.json domain {on_disk.get('domain')!r}"
    )


def _check_entry_point(adapter_class: type[Adapter], folder: Path, entry_points: list[metadata.EntryPoint]) -> None:
    domain = folder.name
    assert len(entry_points) == 1, f"{len(entry_points)} entry points named {domain!r} in {ENTRY_POINT_GROUP}"
    (ep,) = entry_points
    assert ep.module.split(".")[-1] == domain, f"entry point {ep.value} must name the package of folder {domain}"
    assert adapter_folder(ep.module) == folder.resolve(), f"entry point {ep.value} does not live in {folder}"
    assert ep.load() is adapter_class, f"entry point {ep.value} loads another class than {adapter_class.__name__}"


def _check_files(folder: Path) -> None:
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    assert not missing, f"{folder.name} lacks {missing}"
    assert (folder / "fixtures").is_dir(), f"{folder.name} has no fixtures/"


def _check_manifest(folder: Path) -> None:
    raw = _read_json(folder / "manifest.json")
    schema = schemas.load_schema("config/manifest.schema.json")
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in _validator(schema).iter_errors(raw)]
    assert not errors, errors
    unknown = [t for t in raw["entity_types"] if t not in schemas.MODELS]
    assert not unknown, f"entity types without a schema: {unknown}"


def _check_config_schema(adapter_class: type[Adapter], folder: Path) -> None:
    schema = dict(adapter_class.config_schema)
    assert schema == _read_json(folder / "config.schema.json"), "config_schema must be the packaged config.schema.json"
    unmarked = list(_secret_problems(schema))
    assert not unmarked, f"secret-looking fields not marked writeOnly: {unmarked}"
    errors = [
        f"/{'/'.join(map(str, e.path))}: {e.message}" for e in _validator(schema).iter_errors(_sample_config(folder))
    ]
    assert not errors, errors


def _check_protocol(adapter_class: type[Adapter], folder: Path) -> None:
    for name in ("check", "run", "stop"):
        assert inspect.iscoroutinefunction(getattr(adapter_class, name, None)), f"{name} must be async"
    assert not inspect.iscoroutinefunction(adapter_class.to_entities), "to_entities must be a plain function"
    assert isinstance(sample_instance(adapter_class, folder), Adapter)


def _check_stop(adapter_class: type[Adapter], folder: Path) -> None:
    async def twice() -> None:
        # Built inside the loop: an adapter may create loop-bound primitives in __init__.
        adapter = sample_instance(adapter_class, folder)
        await adapter.stop()
        await adapter.stop()

    asyncio.run(twice())


def _check_has_fixtures(folder: Path) -> None:
    assert fixture_payloads(folder), f"{folder.name}/fixtures has no payload"


def _check_fixture(adapter_class: type[Adapter], folder: Path, payload: Path, update_golden: bool) -> None:
    domain = folder.name
    first = sample_instance(adapter_class, folder).to_entities(fixture_message(domain, payload))
    second = sample_instance(adapter_class, folder).to_entities(fixture_message(domain, payload))
    assert first == second, "to_entities must be deterministic"
    golden_path = payload.with_name(_stem(payload) + ".golden.json")
    if update_golden and not golden_path.exists():
        golden_path.write_text(json.dumps(first, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert golden_path.exists(), f"missing golden output {golden_path.name}"
    golden = _read_json(golden_path)
    assert json.loads(json.dumps(first)) == golden, f"{payload.name}: output differs from {golden_path.name}"
    for item in golden:
        verdict = validate(item)
        assert verdict.valid, [p.to_dict() for p in verdict.errors]


def _check_imports(folder: Path, package: str) -> None:
    problems = import_problems(folder, package=package)
    assert not problems, problems


# --- imports against the manifest's extra (hassfest-style) ------------------------------------


def _norm(name: str) -> str:
    """A distribution name normalised as PEP 503 does (``PyYAML`` == ``pyyaml``, ``a_b`` == ``a-b``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_names(requirements: list[str] | None, extra: str | None) -> set[str]:
    """Names of ``requirements`` (strings of a distribution's metadata) for ``extra``, or its base ones."""
    names: set[str] = set()
    for requirement in requirements or ():
        match = _NAME.match(requirement)
        if match is None:
            continue
        marker = _EXTRA_MARKER.search(requirement.partition(";")[2])
        if (marker.group(1) if marker else None) == extra:
            names.add(_norm(match.group(1)))
    return names


@cache
def _closure(roots: frozenset[str]) -> frozenset[str]:
    """``roots`` and every distribution they require (base requirements only), as installed here."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: its own requirements are unknown, the name itself counts
        todo.extend(_requirement_names(requires, None) - seen)
    return frozenset(seen)


@cache
def _providers() -> Mapping[str, frozenset[str]]:
    """Top-level import name -> normalised names of the installed distributions providing it."""
    return {top: frozenset(_norm(d) for d in dists) for top, dists in metadata.packages_distributions().items()}


def _extras() -> tuple[str, ...]:
    return tuple(metadata.metadata(DISTRIBUTION).get_all("Provides-Extra") or ())


def _module_files(module: str) -> list[Path]:
    """The source files that importing ``module`` (a module of the ``adapters`` package) runs."""
    parts = module.split(".")[1:]
    found: list[Path] = []
    for depth in range(len(parts) + 1):
        base = _ADAPTERS_ROOT.joinpath(*parts[:depth])
        if (base / "__init__.py").is_file():
            found.append(base / "__init__.py")
            continue
        if depth and base.with_suffix(".py").is_file():
            found.append(base.with_suffix(".py"))
        break  # what follows is a name inside that module, or nothing of ours
    return found


def _imported(path: Path, package: str) -> Iterator[tuple[str, int]]:
    """Absolute names imported by a source file of ``package`` (``from m import n`` gives m.n too)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                # ``package`` is the file's own package; each extra dot climbs one level.
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module, node.lineno
            for alias in node.names:
                yield f"{module}.{alias.name}", node.lineno


def _file_package(path: Path, root: Path, root_package: str) -> str:
    """The dotted package a source file under ``root`` (the folder of ``root_package``) belongs to."""
    relative = path.relative_to(root).parent.parts
    return ".".join([root_package, *relative])


def import_problems(folder: Path, *, package: str | None = None) -> list[str]:
    """What is wrong with the imports of the adapter in ``folder`` against its manifest's extra.

    Every third-party top-level import of the folder's ``.py`` files, and of the ``adapters.kit``
    modules they import (followed transitively), must be provided by a base dependency of the
    ``jonction`` distribution, by the extra the manifest names, or by the manifest's
    ``requirements`` (each with what it requires in turn). A declared extra must be used by at
    least one import, and must exist. An adapter never imports another adapter nor ``conformance``.
    """
    folder = folder.resolve()
    package = package or folder.name
    manifest = _read_json(folder / "manifest.json")
    extra: str | None = manifest.get("extra")
    problems: list[str] = []
    requires = metadata.requires(DISTRIBUTION)
    base = _closure(frozenset(_requirement_names(requires, None)))
    from_extra: frozenset[str] = frozenset()
    if extra is not None:
        if extra not in _extras():
            problems.append(f"manifest.json names extra {extra!r}, which {DISTRIBUTION} does not provide")
        from_extra = _closure(frozenset(_requirement_names(requires, extra))) - base
    declared = _closure(frozenset(_norm(n) for n in _requirement_names(manifest.get("requirements") or [], None)))
    allowed = base | from_extra | declared
    used_extra = False
    own = {package.split(".")[0]} if "." not in package else set()
    # (file, its package, how the adapter reaches it) still to read; kit files are followed once.
    todo: list[tuple[Path, str, str]] = [
        (path, _file_package(path, folder, package), str(path.relative_to(folder)))
        for path in sorted(folder.rglob("*.py"))
    ]
    seen: set[Path] = set()
    while todo:
        path, file_package, where = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        for module, line in _imported(path, file_package):
            top = module.split(".")[0]
            if not top or top == "__future__" or top in sys.stdlib_module_names or top in own:
                continue
            if module == package or module.startswith(package + "."):
                continue
            if top in ("gateway", "schemas"):
                continue  # which gateway modules an adapter may use is the layer test's business
            if top == "conformance":
                problems.append(f"{where}:{line} imports conformance: adapters never import conformance")
                continue
            if top == "adapters":
                parts = module.split(".")
                if len(parts) > 1 and (_ADAPTERS_ROOT / parts[1] / "manifest.json").is_file():
                    problems.append(
                        f"{where}:{line} imports adapters.{parts[1]}: an adapter never imports another adapter"
                    )
                    continue
                for source in _module_files(module):
                    if source not in seen:
                        inner = _file_package(source, _ADAPTERS_ROOT, "adapters")
                        todo.append((source, inner, f"{where}:{line} -> {source.relative_to(_ADAPTERS_ROOT.parent)}"))
                continue
            if top in _OUR_TOPS:
                continue
            providers = _providers().get(top, frozenset())
            if not providers:
                problems.append(f"{where}:{line} imports {top!r}, which no installed distribution provides")
            elif not providers & allowed:
                wanted = f"extra {extra!r}" if extra else "no extra"
                problems.append(
                    f"{where}:{line} imports {top!r} (from {', '.join(sorted(providers))}), which is not a base "
                    f"dependency of {DISTRIBUTION} nor in what the manifest declares ({wanted}, requirements "
                    f"{manifest.get('requirements') or []})"
                )
            if providers & from_extra:
                used_extra = True
    if extra is not None and from_extra and not used_extra:
        problems.append(f"manifest.json names extra {extra!r}, but nothing the adapter imports comes from it")
    return list(dict.fromkeys(problems))  # ``from m import a, b`` names m more than once


# --- the suite ---------------------------------------------------------------------------------


def adapter_folder(package: str) -> Path:
    """The folder on disk of an importable adapter package."""
    return Path(str(files(package))).resolve()


def contract_checks(
    adapter_class: type[Adapter],
    folder: Path,
    *,
    package: str | None = None,
    require_entry_point: bool = True,
    update_golden: bool = False,
) -> list[ContractCheck]:
    """Every contract check for the adapter ``adapter_class`` whose folder is ``folder``.

    ``package`` is the dotted name of the folder's package (default: the folder's name, a top-level
    package, as a third-party adapter package has).
    ``require_entry_point=False`` lets a package test itself from a source folder that is not
    installed: the entry-point check is then skipped, with that reason, when no entry point exists.
    ``update_golden`` writes the golden output of a fixture that has none (then check it by eye).
    """
    folder = folder.resolve()
    domain = folder.name
    package = package or domain
    entry_points = list(metadata.entry_points(group=ENTRY_POINT_GROUP, name=domain))
    ep_skip = None
    if not entry_points and not require_entry_point:
        ep_skip = f"no {ENTRY_POINT_GROUP} entry point named {domain!r}: tested from its folder, not installed"

    def check(name: str, func: Callable[[], None], skip: str | None = None) -> ContractCheck:
        return ContractCheck(domain, name, func, skip)

    checks = [
        check("identity", partial(_check_identity, adapter_class, folder)),
        check("entry_point", partial(_check_entry_point, adapter_class, folder, entry_points), ep_skip),
        check("fixed_file_set", partial(_check_files, folder)),
        check("manifest_is_valid", partial(_check_manifest, folder)),
        check("config_schema", partial(_check_config_schema, adapter_class, folder)),
        check("protocol", partial(_check_protocol, adapter_class, folder)),
        check("stop_is_idempotent", partial(_check_stop, adapter_class, folder)),
        check("has_fixtures", partial(_check_has_fixtures, folder)),
        check("imports_match_extra", partial(_check_imports, folder, package)),
    ]
    checks.extend(
        check(f"fixture[{payload.name}]", partial(_check_fixture, adapter_class, folder, payload, update_golden))
        for payload in fixture_payloads(folder)
    )
    return checks


def run_contract_suite(adapter_class: type[Adapter], folder: Path, **options: Any) -> ContractReport:
    """Run every contract check; raise one ContractFailure listing all failures, else report."""
    passed: list[str] = []
    skipped: dict[str, str] = {}
    failures: list[str] = []
    for check in contract_checks(adapter_class, folder, **options):
        if check.skip is not None:
            skipped[check.id] = check.skip
            continue
        try:
            check.run()
        except AssertionError as exc:
            failures.append(f"{check.id}: {exc}")
        else:
            passed.append(check.id)
    if failures:
        raise ContractFailure("\n".join(failures))
    return ContractReport(tuple(passed), skipped)


def contract_params(adapter_class: type[Adapter], folder: Path, **options: Any) -> list[ParameterSet]:
    """The contract checks as ``pytest.param``s (skips carry their reason) for ``parametrize``."""
    import pytest  # only the pytest helper needs it: run_contract_suite works without pytest

    return [
        pytest.param(check, id=check.id, marks=[pytest.mark.skip(reason=check.skip)] if check.skip else [])
        for check in contract_checks(adapter_class, folder, **options)
    ]


def installed_adapters() -> dict[str, tuple[type[Adapter], Path, str]]:
    """Every adapter the entry points register: domain -> (class, folder, package)."""
    found: dict[str, tuple[type[Adapter], Path, str]] = {}
    classes = discover()
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in classes:
            found[ep.name] = (classes[ep.name], adapter_folder(ep.module), ep.module)
    return dict(sorted(found.items()))
