"""Summarise an ETSI NGSI-LD suite run: passed/total per suite directory, with the written waivers.

Usage: ``python tests/interop/etsi_summary.py <work folder of the run>``. Reads each directory's
Robot ``output.xml`` and ``tests/interop/etsi_waivers.yaml`` (tests where the suite and ETSI GS
CIM 009 V1.9.1 disagree, each with its clause); prints one row per directory and the total with
and without the waived tests. A waiver that no longer fails is reported, so the list stays honest.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

WAIVERS = Path(__file__).with_name("etsi_waivers.yaml")


@dataclass
class DirResult:
    """The verdicts of one suite directory."""

    name: str
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def load_waivers(path: Path = WAIVERS) -> list[dict[str, Any]]:
    """The waiver entries (id, suite_dir, clause, reason); every one must name its clause."""
    if not path.exists():
        return []
    entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    for entry in entries:
        missing = [k for k in ("id", "suite_dir", "clause", "reason") if not entry.get(k)]
        if missing:
            raise ValueError(f"{path}: waiver {entry!r} lacks {', '.join(missing)}")
    return list(entries)


def read_results(work: Path) -> list[DirResult]:
    """Verdicts per directory from ``<work>/results/<dir>/output.xml``."""
    results = []
    for output in sorted(work.glob("results/*/output.xml")):
        result = DirResult(output.parent.name.replace("-", "/"))
        for test in ET.parse(output).getroot().iter("test"):
            status = test.find("status")
            test_id = (test.get("name") or "").split(" ")[0]
            if status is not None and status.get("status") == "PASS":
                result.passed.append(test_id)
            elif status is not None and status.get("status") == "FAIL":
                result.failed.append(test_id)
        results.append(result)
    return results


def summarise(results: list[DirResult], waivers: list[dict[str, Any]]) -> str:
    """The table printed by CI and quoted in the README."""
    waived = {(w["suite_dir"].strip("/"), str(w["id"])) for w in waivers}
    lines = [f"{'suite directory':<58} {'passed':>7} {'total':>6} {'waived':>7} {'rate':>7}"]
    all_passed = all_total = all_waived = 0
    stale = []
    for r in results:
        total = len(r.passed) + len(r.failed)
        n_waived = sum(1 for t in r.failed if (r.name, t) in waived)
        stale += [f"{r.name} {t}" for t in r.passed if (r.name, t) in waived]
        counted = total - n_waived
        rate = 100.0 * len(r.passed) / counted if counted else 100.0
        lines.append(f"{r.name:<58} {len(r.passed):>7} {total:>6} {n_waived:>7} {rate:>6.1f}%")
        all_passed += len(r.passed)
        all_total += total
        all_waived += n_waived
    counted = all_total - all_waived
    rate = 100.0 * all_passed / counted if counted else 100.0
    lines.append(f"{'total':<58} {all_passed:>7} {all_total:>6} {all_waived:>7} {rate:>6.1f}%")
    if stale:
        lines.append("waived but passing now (remove from the waivers): " + ", ".join(stale))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the summary of the run in ``argv[1]``; exit 2 if it holds no results."""
    if len(argv) != 2:
        print("usage: etsi_summary.py <work folder of a suite run>", file=sys.stderr)
        return 2
    results = read_results(Path(argv[1]))
    if not results:
        print(f"no suite results under {argv[1]}/results", file=sys.stderr)
        return 2
    print(summarise(results, load_waivers()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
