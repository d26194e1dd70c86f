"""The typed conformance report: what one run found, serialised once by :meth:`Report.to_json`.

The JSON document (validated by ``report.schema.json``) is the source of truth; the JUnit XML
and HTML reports of :mod:`conformance.reports` are rendered from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

REPORT_VERSION: Final = "1.0"
VERDICTS: Final = ("pass", "fail", "skip", "error", "not_applicable")
"""Check verdicts; ``not_applicable`` (does not apply to this target) never blocks acceptance."""

Json = dict[str, Any]
"""A JSON object as the report writes it."""


@dataclass(slots=True)
class Evidence:
    """What the checker sent and received during one check, and what it measured."""

    exchanges: list[Json] = field(default_factory=list)
    measurements: list[Json] = field(default_factory=list)

    def to_json(self) -> Json:
        """The ``evidence`` object (``measurements`` only when there are some)."""
        out: Json = {"exchanges": self.exchanges}
        if self.measurements:
            out["measurements"] = self.measurements
        return out


@dataclass(slots=True)
class Outcome:
    """The verdict of one check and how it was reached."""

    verdict: str
    reason: str
    started: str
    duration_s: float = 0.0
    evidence: Evidence = field(default_factory=Evidence)


@dataclass(slots=True)
class CheckResult:
    """One selected check, what it tests and its outcome."""

    id: str
    level: str
    title: str
    status: str
    """``mandatory``, ``optional`` or ``waived``."""
    references: list[str]
    sends: str
    expects: str
    explain: str
    outcome: Outcome

    @property
    def verdict(self) -> str:
        """The outcome's verdict."""
        return self.outcome.verdict

    @property
    def reason(self) -> str:
        """The outcome's reason (or note for a pass)."""
        return self.outcome.reason

    @property
    def counts_as_mandatory(self) -> bool:
        """A mandatory check that applies to this target (a not-applicable one neither passes nor blocks)."""
        return self.status == "mandatory" and self.verdict != "not_applicable"

    def to_json(self) -> Json:
        """One item of ``results``."""
        o = self.outcome
        return {"id": self.id, "level": self.level, "title": self.title, "status": self.status,
                "references": self.references, "sends": self.sends, "expects": self.expects,
                "explain": self.explain, "verdict": o.verdict, "reason": o.reason, "started": o.started,
                "duration_s": o.duration_s, "evidence": o.evidence.to_json()}


@dataclass(slots=True)
class Summary:
    """Counts per verdict and per level, and the acceptance decision."""

    selected: int
    counts: dict[str, int]
    """Checks per verdict, every verdict of :data:`VERDICTS` present."""
    waived: int
    mandatory_total: int
    mandatory_passed: int
    accepted: bool
    by_level: dict[str, dict[str, int]]

    @property
    def mandatory_rate(self) -> float:
        """Share of the applicable mandatory checks that passed (1.0 when there is none)."""
        return round(self.mandatory_passed / self.mandatory_total, 4) if self.mandatory_total else 1.0

    def to_json(self) -> Json:
        """The ``summary`` object."""
        return {"selected": self.selected, **self.counts, "waived": self.waived,
                "mandatory_total": self.mandatory_total, "mandatory_passed": self.mandatory_passed,
                "mandatory_rate": self.mandatory_rate, "accepted": self.accepted, "by_level": self.by_level}


@dataclass(slots=True)
class NotTestedCheck:
    """A check of the catalogue that did not run, and why."""

    id: str
    level: str
    title: str
    references: list[str]
    why: str

    def to_json(self) -> Json:
        """One item of ``not_tested.checks``."""
        return {"id": self.id, "level": self.level, "title": self.title, "references": self.references,
                "why": self.why}


@dataclass(slots=True)
class ClauseCoverage:
    """How far the run tested one clause of a standard."""

    document: str
    clause: str
    title: str
    state: str
    """``tested``, ``partly tested`` or ``not tested``."""
    checks: list[str]
    checks_run: list[str]

    def to_json(self) -> Json:
        """One item of ``not_tested.clauses``."""
        return {"document": self.document, "clause": self.clause, "title": self.title, "state": self.state,
                "checks": self.checks, "checks_run": self.checks_run}


@dataclass(slots=True)
class ProfileInfo:
    """The profile the run applied, with its hash (what the contract annex fixes)."""

    id: str
    version: str
    title: dict[str, str]
    source: str
    sha256: str
    mandatory_levels: list[str]
    optional_levels: list[str]
    models: list[Json]
    waivers: dict[str, str]
    standards: dict[str, dict[str, str]]

    def to_json(self) -> Json:
        """The ``profile`` object."""
        return {"id": self.id, "version": self.version, "title": self.title, "source": self.source,
                "sha256": self.sha256,
                "levels": {"mandatory": self.mandatory_levels, "optional": self.optional_levels},
                "models": self.models,
                "waivers": [{"check": k, "reason": v} for k, v in self.waivers.items()],
                "standards": self.standards}


@dataclass(slots=True)
class RunInfo:
    """When the run happened, whether the checker wrote, and what it left behind."""

    id: str
    started: str
    ended: str
    duration_s: float
    writes: bool
    write_refusal: str
    left: list[str]
    """What cleanup could not delete."""
    tenants_created: list[str]
    quality: Json
    only: list[str] | None = None
    """The check ids of a partial (``--only``) run."""

    def to_json(self) -> Json:
        """The ``run`` object."""
        out: Json = {"id": self.id, "started": self.started, "ended": self.ended,
                     "duration_s": round(self.duration_s, 3), "writes": self.writes,
                     "write_refusal": self.write_refusal, "cleanup": {"left": self.left},
                     "tenants_created": self.tenants_created, "quality": self.quality}
        if self.only is not None:
            out["only"] = self.only
        return out


@dataclass(slots=True)
class Report:
    """One run: tool, profile, target, times, per-check results and what was not tested."""

    tool: dict[str, str]
    profile: ProfileInfo
    target: Json
    """The target as it describes itself (secrets redacted)."""
    run: RunInfo
    summary: Summary
    results: list[CheckResult]
    not_tested_checks: list[NotTestedCheck]
    clauses: list[ClauseCoverage]

    @property
    def not_applicable(self) -> list[CheckResult]:
        """The checks that do not apply to this target, listed apart from those that could not run."""
        return [r for r in self.results if r.verdict == "not_applicable"]

    def to_json(self) -> Json:
        """The JSON report (the one serialisation; ``report.schema.json`` validates it)."""
        return {
            "report_version": REPORT_VERSION,
            "tool": self.tool,
            "profile": self.profile.to_json(),
            "target": self.target,
            "run": self.run.to_json(),
            "summary": self.summary.to_json(),
            "results": [r.to_json() for r in self.results],
            "not_applicable": [{"id": r.id, "level": r.level, "title": r.title, "status": r.status,
                                "why": r.reason} for r in self.not_applicable],
            "not_tested": {"checks": [c.to_json() for c in self.not_tested_checks],
                           "clauses": [c.to_json() for c in self.clauses]},
        }
