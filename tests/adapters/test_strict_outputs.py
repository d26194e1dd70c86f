"""Every adapter's golden NGSI-LD output is clean in strict mode: jonction's own outputs hold to the models.

Parametrized over every fixture of every discovered adapter, so a new adapter gets the check for free.
A known exception is listed below with its reason and runs as a strict xfail: fixing it fails the test
until the entry is removed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.validation import validate
from tests.adapters.test_contract import _fixture_cases

KNOWN_EXCEPTIONS: Mapping[tuple[str, str], str] = {
    ("opcua", "vibration_array"): "the sample maps an array node to 'vibrationSpectrum', which Pump does not "
    "define and which is a measurement, not jonction's own extension: it needs a model of its own home "
    "(DeviceMeasurement holds one number) before the fixture can be clean",
}
"""Golden outputs known not to be strict-clean, keyed by (adapter, fixture stem), and why."""


def _golden(payload: Path) -> Path:
    return payload.with_name(payload.name.split(".")[0] + ".golden.json")


def _cases() -> list[Any]:
    cases = []
    for domain, payload in _fixture_cases():
        stem = payload.name.split(".")[0]
        reason = KNOWN_EXCEPTIONS.get((domain, stem))
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        cases.append(pytest.param(domain, payload, id=f"{domain}-{stem}", marks=marks))
    return cases


@pytest.mark.parametrize(("domain", "payload"), _cases())
def test_golden_output_is_strict_clean(domain: str, payload: Path) -> None:
    golden = json.loads(_golden(payload).read_text())
    # An acknowledgement yields no entity: nothing to hold to a model, and nothing wrong.
    problems = {}
    for index, entity in enumerate(golden):
        verdict = validate(entity, strict=True)
        if not verdict.valid:
            problems[f"[{index}] {entity.get('type')}"] = [p.to_dict() for p in verdict.errors]
    assert not problems, problems


def test_known_exceptions_name_existing_fixtures() -> None:
    existing = {(domain, payload.name.split(".")[0]) for domain, payload in _fixture_cases()}
    stale = sorted(set(KNOWN_EXCEPTIONS) - existing)
    assert not stale, f"exceptions for fixtures that no longer exist: {stale}"
