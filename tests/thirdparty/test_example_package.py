"""The example third-party adapter package: found through its entry point, checked by the kit's suite."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.kit.testing import installed_adapters, run_contract_suite
from gateway.contract import discover, load_adapter

PROJECT = Path(__file__).resolve().parent / "jonction_example"
FOLDER = PROJECT / "example_meter"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The example package as pip would leave it: its code and a ``*.dist-info`` on sys.path."""
    dist_info = tmp_path / "jonction_example-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: jonction-example\nVersion: 0.1.0\nRequires-Dist: jonction\n", encoding="utf-8"
    )
    # The entry points the package declares, as an installer writes them (entry_points.txt).
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = [
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items())
        for group, eps in project["entry-points"].items()
    ]
    (dist_info / "entry_points.txt").write_text("\n".join(lines), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    if str(PROJECT) not in sys.path:
        monkeypatch.syspath_prepend(str(PROJECT))
    yield tmp_path


def test_not_installed_it_is_not_discovered() -> None:
    assert "example_meter" not in discover()


def test_discovery_finds_the_installed_package(installed: Path) -> None:
    found = discover()
    assert "example_meter" in found
    assert load_adapter("example_meter") is found["example_meter"]
    cls, folder, package = installed_adapters()["example_meter"]
    assert (folder, package) == (FOLDER, "example_meter")
    assert cls.manifest.entity_types == ("WaterConsumptionObserved",)


def test_installed_it_passes_the_whole_suite_entry_point_included(installed: Path) -> None:
    cls = discover()["example_meter"]
    report = run_contract_suite(cls, FOLDER)
    assert not report.skipped, report.skipped
    assert "example_meter-entry_point" in report.passed
    assert len(report.passed) == 11  # 9 checks on the package, 2 fixtures
