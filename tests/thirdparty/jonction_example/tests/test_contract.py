"""The example adapter package runs jonction's contract suite on itself, from its own folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from example_meter import ExampleMeterAdapter

from adapters.kit.testing import ContractCheck, contract_params, run_contract_suite

FOLDER = Path(__file__).resolve().parents[1] / "example_meter"


# Installed (pip install .), the entry point exists and is checked; from a source folder it is
# skipped with that reason.
@pytest.mark.parametrize("check", contract_params(ExampleMeterAdapter, FOLDER, require_entry_point=False))
def test_contract(check: ContractCheck) -> None:
    check.run()


def test_whole_suite_in_one_call() -> None:
    report = run_contract_suite(ExampleMeterAdapter, FOLDER, require_entry_point=False)
    assert "example_meter-fixture[two_meters.json]" in report.passed
    assert set(report.skipped) <= {"example_meter-entry_point"}
