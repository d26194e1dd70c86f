"""The ETSI run summary counts verdicts per directory and refuses waivers without a clause."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("etsi_summary", HERE / "etsi_summary.py")
assert _spec is not None and _spec.loader is not None
etsi_summary = importlib.util.module_from_spec(_spec)
sys.modules["etsi_summary"] = etsi_summary
_spec.loader.exec_module(etsi_summary)

OUTPUT = """<?xml version="1.0"?>
<robot><suite name="x">
<test name="001_01 Good"><status status="PASS"/></test>
<test name="001_02 Bad"><status status="FAIL">boom</status></test>
<test name="001_03 Suite deviates"><status status="FAIL">503 != 504</status></test>
<test name="001_04 Skipped"><status status="SKIP"/></test>
</suite></robot>"""


def test_summary_counts_passes_failures_and_waivers(tmp_path: Path) -> None:
    run = tmp_path / "results" / "ContextInformation-Provision-Entities"
    run.mkdir(parents=True)
    (run / "output.xml").write_text(OUTPUT)
    results = etsi_summary.read_results(tmp_path)
    assert [(r.name, r.passed, r.failed) for r in results] == [
        ("ContextInformation/Provision/Entities", ["001_01"], ["001_02", "001_03"])
    ]
    waiver = {"id": "001_03", "suite_dir": "ContextInformation/Provision/Entities", "clause": "§6.3.2", "reason": "r"}
    table = etsi_summary.summarise(results, [waiver])
    # 1 passed of 3, one waived: 1 of 2 counted
    assert "ContextInformation/Provision/Entities" in table and "50.0%" in table.splitlines()[-1]


def test_a_waiver_that_passes_again_is_reported(tmp_path: Path) -> None:
    run = tmp_path / "results" / "CommonBehaviours"
    run.mkdir(parents=True)
    (run / "output.xml").write_text(OUTPUT)
    waiver = {"id": "001_01", "suite_dir": "CommonBehaviours", "clause": "§6.3.2", "reason": "r"}
    table = etsi_summary.summarise(etsi_summary.read_results(tmp_path), [waiver])
    assert "remove from the waivers" in table and "CommonBehaviours 001_01" in table


def test_every_written_waiver_names_its_clause_and_reason() -> None:
    for waiver in etsi_summary.load_waivers():
        assert "CIM 009" in waiver["clause"], waiver
        assert len(waiver["reason"]) > 20, waiver


def test_a_waiver_without_clause_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "w.yaml"
    bad.write_text('- id: "001_01"\n  suite_dir: CommonBehaviours\n  reason: because\n')
    with pytest.raises(ValueError, match="clause"):
        etsi_summary.load_waivers(bad)
