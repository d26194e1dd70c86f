"""The contract's hassfest-style check: an adapter's imports match its manifest's extra."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters.kit.testing import ContractFailure, import_problems, run_contract_suite

EXAMPLE = Path(__file__).resolve().parents[1] / "thirdparty" / "jonction_example"


def _adapter(tmp_path: Path, source: str, **manifest: Any) -> Path:
    """A throwaway adapter folder ``tmp_path/probe`` whose ``__init__.py`` is ``source``."""
    folder = tmp_path / "probe"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(source, encoding="utf-8")
    declared = {"domain": "probe", "name": "probe", "protocols": ["file"], "entity_types": ["Device"], **manifest}
    (folder / "manifest.json").write_text(json.dumps(declared), encoding="utf-8")
    return folder


def test_base_dependencies_and_our_packages_need_no_extra(tmp_path: Path) -> None:
    source = "import json\nimport aiohttp\nimport yaml\nfrom yarl import URL\n"
    source += "from gateway.model import urn\nimport schemas\n"
    assert import_problems(_adapter(tmp_path, source, extra=None)) == []


def test_an_undeclared_package_fails(tmp_path: Path) -> None:
    (problem,) = import_problems(_adapter(tmp_path, "import hypothesis\n", extra=None))
    assert "__init__.py:1 imports 'hypothesis'" in problem and "no extra" in problem


def test_a_package_of_another_extra_fails(tmp_path: Path) -> None:
    problems = import_problems(_adapter(tmp_path, "from asyncua import ua\n", extra="mqtt"))
    assert any("'asyncua'" in p and "extra 'mqtt'" in p for p in problems), problems
    assert any("nothing the adapter imports comes from it" in p for p in problems), problems


def test_the_right_extra_passes_and_covers_what_it_requires(tmp_path: Path) -> None:
    # cryptography is asyncua's own dependency: installing the opcua extra installs it.
    assert import_problems(_adapter(tmp_path, "from asyncua import ua\nimport cryptography\n", extra="opcua")) == []


def test_imports_through_the_kit_are_followed(tmp_path: Path) -> None:
    problems = import_problems(_adapter(tmp_path, "from adapters.kit import mqtt\n", extra=None))
    assert problems and all("__init__.py:1 -> adapters/kit/mqtt.py" in p for p in problems), problems
    assert any("'aiomqtt'" in p for p in problems), problems
    assert import_problems(_adapter(tmp_path / "ok", "from adapters.kit import mqtt\n", extra="mqtt")) == []


def test_lazy_imports_count_too(tmp_path: Path) -> None:
    source = "def later():\n    import hypothesis\n    return hypothesis\n"
    assert import_problems(_adapter(tmp_path, source, extra=None))


def test_manifest_requirements_declare_a_package(tmp_path: Path) -> None:
    folder = _adapter(tmp_path, "import hypothesis\n", extra=None, requirements=["hypothesis>=6"])
    assert import_problems(folder) == []


def test_an_unknown_extra_and_an_uninstalled_package_fail(tmp_path: Path) -> None:
    problems = import_problems(_adapter(tmp_path, "import surely_not_installed_anywhere\n", extra="nosuch"))
    assert any("extra 'nosuch', which jonction does not provide" in p for p in problems), problems
    assert any("no installed distribution provides" in p for p in problems), problems


def test_another_adapter_or_conformance_is_refused(tmp_path: Path) -> None:
    source = "from adapters.ngsi_v2 import NgsiV2Adapter\nimport conformance\n"
    problems = import_problems(_adapter(tmp_path, source, extra=None))
    assert len(problems) == 2
    assert "never imports another adapter" in problems[0] and "never import conformance" in problems[1]


def test_relative_imports_are_the_adapter_itself(tmp_path: Path) -> None:
    folder = _adapter(tmp_path, "from . import translate\nfrom .translate import f\n", extra=None)
    translate = "from ..probe import translate as again\ndef f():\n    return 1\n"
    (folder / "translate.py").write_text(translate, encoding="utf-8")
    assert import_problems(folder, package="pkg.probe") == []


def test_the_suite_fails_on_a_wrong_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the example package with one undeclared import: the whole suite names that check."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from example_meter import ExampleMeterAdapter

    folder = tmp_path / "example_meter"
    shutil.copytree(EXAMPLE / "example_meter", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "charts.py").write_text('"""Plots."""\n\nimport hypothesis\n', encoding="utf-8")
    with pytest.raises(ContractFailure) as failed:
        run_contract_suite(ExampleMeterAdapter, folder, require_entry_point=False)
    (line,) = str(failed.value).splitlines()
    assert line.startswith("example_meter-imports_match_extra:") and "charts.py:3 imports 'hypothesis'" in line
    assert "example_meter" in sys.modules
