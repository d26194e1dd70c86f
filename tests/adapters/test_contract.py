"""The adapter contract suite: one parametrized suite over every discovered adapter."""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.contract import ADAPTER_FILES, ENTRY_POINT_GROUP, Adapter, Manifest, discover
from gateway.model import RawMessage

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS_DIR = ROOT / "adapters"
UPDATE_GOLDEN = os.environ.get("JONCTION_UPDATE_GOLDEN") == "1"
SECRET_NAME = re.compile(r"(password|passwd|secret|token|api_?key|private_?key|credential)", re.I)
# Names that look secret but are not: a file path to a secret, or an environment variable name.
NOT_SECRET = re.compile(r"(_file|_path|_env|_url|_header|_name|_field|_param|_expiry|_ttl)$", re.I)

ADAPTERS: dict[str, type[Adapter]] = discover()


def _folder(domain: str) -> Path:
    return ADAPTERS_DIR / domain


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)  # type: ignore[call-arg]


def _sample_config(domain: str) -> dict[str, Any]:
    loaded = yaml.safe_load((_folder(domain) / "sample.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), "sample.yaml must be a mapping"
    return loaded


def _fixture_cases() -> Iterator[tuple[str, Path]]:
    for domain in ADAPTERS:
        fixtures = _folder(domain) / "fixtures"
        for path in sorted(fixtures.glob("*")) if fixtures.is_dir() else []:
            if path.is_file() and not path.name.endswith((".golden.json", ".meta.json")):
                yield domain, path


def _raw(domain: str, payload_path: Path) -> RawMessage:
    meta_path = payload_path.with_name(payload_path.name.split(".")[0] + ".meta.json")
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return RawMessage(
        source=meta.get("source", f"{domain}-fixture"),
        tenant=meta.get("tenant", ""),
        received_at=meta.get("received_at", "2024-01-01T00:00:00Z"),
        payload=payload_path.read_bytes(),
        idempotency_key=meta.get("idempotency_key", payload_path.name),
        content_type=meta.get("content_type", "application/json"),
        metadata=meta.get("metadata", {}),
    )


def _instance(domain: str) -> Adapter:
    return ADAPTERS[domain](_sample_config(domain), http=None, log=None)  # type: ignore[call-arg]


def test_there_are_adapters() -> None:
    assert ADAPTERS, "no adapter is registered under the jonction.adapters entry points"


@pytest.mark.parametrize("domain", list(ADAPTERS))
def test_identity_is_the_folder_name(domain: str) -> None:
    (ep,) = metadata.entry_points(group=ENTRY_POINT_GROUP, name=domain)
    assert ep.value.split(":")[0] == f"adapters.{domain}", "entry point must live in adapters/<domain>"
    manifest: Manifest = ADAPTERS[domain].manifest
    assert manifest.domain == domain


@pytest.mark.parametrize("domain", list(ADAPTERS))
def test_fixed_file_set(domain: str) -> None:
    missing = [name for name in ADAPTER_FILES if not (_folder(domain) / name).is_file()]
    assert not missing, f"adapters/{domain} lacks {missing}"
    assert (_folder(domain) / "fixtures").is_dir(), f"adapters/{domain} has no fixtures/"


@pytest.mark.parametrize("domain", list(ADAPTERS))
def test_manifest_is_valid(domain: str) -> None:
    schema = json.loads((ROOT / "schemas/config/manifest.schema.json").read_text())
    raw = json.loads((_folder(domain) / "manifest.json").read_text())
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in _validator(schema).iter_errors(raw)]
    assert not errors, errors
    import schemas

    known = set(getattr(schemas, "MODELS", ()))
    if known:
        unknown = [t for t in raw["entity_types"] if t not in known]
        assert not unknown, f"entity types without a schema: {unknown}"


def _secret_problems(schema: Any, path: str = "") -> Iterator[str]:
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


@pytest.mark.parametrize("domain", list(ADAPTERS))
def test_config_schema_marks_secrets_and_accepts_the_sample(domain: str) -> None:
    schema = dict(ADAPTERS[domain].config_schema)
    on_disk = json.loads((_folder(domain) / "config.schema.json").read_text())
    assert schema == on_disk, "config_schema must be the packaged config.schema.json"
    unmarked = list(_secret_problems(schema))
    assert not unmarked, f"secret-looking fields not marked writeOnly: {unmarked}"
    errors = [f"/{'/'.join(map(str, e.path))}: {e.message}" for e in _validator(schema).iter_errors(
        _sample_config(domain))]
    assert not errors, errors


@pytest.mark.parametrize("domain", list(ADAPTERS))
def test_adapter_implements_the_protocol(domain: str) -> None:
    cls = ADAPTERS[domain]
    for name in ("check", "run", "stop"):
        assert inspect.iscoroutinefunction(getattr(cls, name)), f"{name} must be async"
    assert not inspect.iscoroutinefunction(cls.to_entities), "to_entities must be a plain function"
    assert isinstance(_instance(domain), Adapter)


@pytest.mark.parametrize("domain", list(ADAPTERS))
async def test_stop_is_idempotent_without_run(domain: str) -> None:
    adapter = _instance(domain)
    await adapter.stop()
    await adapter.stop()


@pytest.mark.parametrize("domain", list(ADAPTERS))
def test_every_adapter_has_fixtures(domain: str) -> None:
    assert any(d == domain for d, _ in _fixture_cases()), f"adapters/{domain}/fixtures has no payload"


@pytest.mark.parametrize(("domain", "payload"), list(_fixture_cases()), ids=lambda v: getattr(v, "name", v))
def test_fixture_translates_to_golden_valid_entities(domain: str, payload: Path) -> None:
    adapter = _instance(domain)
    first = adapter.to_entities(_raw(domain, payload))
    second = _instance(domain).to_entities(_raw(domain, payload))
    assert first == second, "to_entities must be deterministic"
    golden_path = payload.with_name(payload.name.split(".")[0] + ".golden.json")
    if UPDATE_GOLDEN and not golden_path.exists():
        golden_path.write_text(json.dumps(first, indent=2, ensure_ascii=False) + "\n")
    assert golden_path.exists(), f"missing golden output {golden_path.name}"
    golden = json.loads(golden_path.read_text())
    assert json.loads(json.dumps(first)) == golden
    from gateway.validation import validate

    for item in golden:
        verdict = validate(item)
        assert verdict.valid, [p.to_dict() for p in verdict.errors]
