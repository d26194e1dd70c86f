"""The adapter contract suite over every discovered adapter: a thin caller of ``adapters.kit.testing``.

The checks themselves belong to the kit, so that a third-party adapter package runs the very same
ones on itself (``tests/thirdparty`` proves it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import Adapter, RawMessage
from adapters.kit.testing import (
    ContractCheck,
    contract_checks,
    fixture_message,
    fixture_payloads,
    installed_adapters,
    sample_instance,
)

ROOT = Path(__file__).resolve().parents[2]
UPDATE_GOLDEN = os.environ.get("JONCTION_UPDATE_GOLDEN") == "1"

ADAPTERS = installed_adapters()


# What the fuzz and strict-output suites reuse: every recorded payload, as a message, and an instance.
def _fixture_cases() -> Iterator[tuple[str, Path]]:
    for domain, (_, folder, _) in ADAPTERS.items():
        for payload in fixture_payloads(folder):
            yield domain, payload


def _raw(domain: str, payload: Path) -> RawMessage:
    return fixture_message(domain, payload)


def _instance(domain: str) -> Adapter:
    cls, folder, _ = ADAPTERS[domain]
    return sample_instance(cls, folder)


def _params() -> list[object]:
    params: list[object] = []
    for domain, (cls, folder, package) in ADAPTERS.items():
        for check in contract_checks(cls, folder, package=package, update_golden=UPDATE_GOLDEN):
            marks = [pytest.mark.skip(reason=check.skip)] if check.skip else []
            params.append(pytest.param(check, id=check.id, marks=marks))
        assert domain == folder.name
    return params


def test_there_are_adapters() -> None:
    assert ADAPTERS, "no adapter is registered under the jonction.adapters entry points"


def test_every_adapter_folder_is_registered() -> None:
    """The reverse of discovery: a folder of adapters/ with a manifest but no entry point is never run."""
    folders = {path.parent.name for path in (ROOT / "adapters").glob("*/manifest.json")}
    assert folders == set(ADAPTERS), f"folders without an entry point: {sorted(folders - set(ADAPTERS))}"


def test_our_adapters_live_in_adapters() -> None:
    """jonction's own adapters are the folders of adapters/ (identity: entry point == adapters.<folder>)."""
    for domain, (_, folder, package) in ADAPTERS.items():
        assert package == f"adapters.{domain}", f"entry point must live in adapters/{domain}"
        assert folder == ROOT / "adapters" / domain


@pytest.mark.parametrize("check", _params())
def test_contract(check: ContractCheck) -> None:
    check.run()
