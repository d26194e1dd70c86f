"""Run a profile's checks against a target and build the JSON report (the source of truth)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any, Final

from conformance import TOOL_NAME, __version__
from conformance.clausemap import clause_map
from conformance.context import WRITE_LEVELS, FixtureError, RunContext
from conformance.http import Client, Unreachable
from conformance.profile import Profile
from conformance.receiver import Receiver
from conformance.registry import LEVELS, Check, Fail, NotApplicable, Skip, catalogue
from conformance.targets import API_ROOT, EndpointTarget, Target
from gateway.errors import JonctionError
from gateway.model import format_time

log = logging.getLogger("jonction.check")

REPORT_VERSION: Final = "1.0"
VERDICTS: Final = ("pass", "fail", "skip", "error", "not_applicable")
"""Check verdicts; ``not_applicable`` (does not apply to this target) never blocks acceptance."""
CHECK_TIMEOUT: Final = 120.0
"""Longest a single check may run (seconds); the observation window is added for Q checks."""


class TargetUnreachable(JonctionError):
    """The target cannot be reached at all (exit code 2)."""

    exit_code = 2


def _now() -> str:
    return format_time(datetime.now(UTC))


def _missing_need(ctx: RunContext, chk: Check) -> tuple[str, str] | None:
    """(verdict, reason) when the check cannot run: ``not_applicable`` for the target's kind, else ``skip``."""
    endpoint = isinstance(ctx.target, EndpointTarget)
    if "api" in chk.needs and not endpoint:
        return "not_applicable", (f"an API check does not apply to a {ctx.target.kind} target "
                                  "(entity files or an adapter's translations are judged on data levels only)")
    if "write" in chk.needs and not ctx.writes_allowed:
        if not endpoint:
            return "not_applicable", f"a write check does not apply to a {ctx.target.kind} target"
        return "skip", ctx.write_refusal
    if "auth" in chk.needs and not (endpoint and ctx.endpoint.token):
        if not endpoint:
            return "not_applicable", f"an access-control check does not apply to a {ctx.target.kind} target"
        return "skip", "no credentials configured for the target (credentials.token_env or token_file)"
    if "declaration" in chk.needs and not ctx.profile.quality.get("declarations"):
        return "skip", "no vendor declaration (profile quality block or --vendor-sheet)"
    return None


async def _run_one(ctx: RunContext, chk: Check) -> dict[str, Any]:
    if ctx.client is not None:
        ctx.client.recorder.exchanges = []
    ctx.measurements = []
    started = _now()
    t0 = time.monotonic()
    verdict, reason = "pass", ""
    limit = CHECK_TIMEOUT
    if chk.level == "Q":
        limit += float(ctx.profile.quality.get("window_seconds", 3600))
    try:
        note = await asyncio.wait_for(chk.func(ctx), timeout=limit)
        reason = note or ""
    except Fail as exc:
        verdict, reason = "fail", str(exc)
    except NotApplicable as exc:
        verdict, reason = "not_applicable", str(exc)
    except Skip as exc:
        verdict, reason = "skip", str(exc)
    except FixtureError as exc:
        verdict, reason = "error", f"fixture: {exc}"
    except Unreachable as exc:
        verdict, reason = "error", f"target unreachable: {exc}"
    except TimeoutError:
        verdict, reason = "error", f"the check did not finish within {limit:g} s"
    except Exception as exc:  # a checker bug or an unexpected answer must not stop the run
        log.debug("check %s raised", chk.id, exc_info=True)
        verdict, reason = "error", f"{type(exc).__name__}: {exc}"
    evidence: dict[str, Any] = {"exchanges": list(ctx.client.recorder.exchanges) if ctx.client else []}
    if ctx.measurements:
        evidence["measurements"] = list(ctx.measurements)
    return {"verdict": verdict, "reason": reason, "started": started,
            "duration_s": round(time.monotonic() - t0, 3), "evidence": evidence}


async def run(profile: Profile, target: Target, *, only: set[str] | None = None) -> dict[str, Any]:
    """Run every check the profile selects (or ``only`` those ids) and return the report."""
    selection = profile.selection()
    if only:
        selection = {k: v for k, v in selection.items() if k in only}
    ctx = RunContext(profile=profile, target=target)
    write_levels = [lv for lv in profile.levels if lv in WRITE_LEVELS]
    if not isinstance(target, EndpointTarget):
        ctx.write_refusal = "the target is not an API"
    elif not target.allow_write:
        ctx.write_refusal = "the target does not allow writing (allow_write: false)"
    elif not write_levels:
        ctx.write_refusal = "the profile selects no write level (L3 to L6), so the checker does not write"
    else:
        ctx.writes_allowed = True
    started = _now()
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    left: list[str] = []
    cat = catalogue()
    client: Client | None = None
    try:
        if isinstance(target, EndpointTarget):
            client = Client(target.url, timeout=target.timeout, secrets=(target.token,) if target.token else ())
            await client.__aenter__()
            ctx.client = client
            try:
                await client.request("GET", API_ROOT + "/entities", params={"type": ctx.probe_type, "limit": "1"},
                                     record=False)
            except Unreachable as exc:
                raise TargetUnreachable(f"the target cannot be reached: {exc}") from exc
            if any("receiver" in cat[c].needs for c in selection) and ctx.writes_allowed:
                ctx.receiver = Receiver(target.listen_host, target.listen_port, target.callback_url)
                await ctx.receiver.start()
        for cid, status in selection.items():
            chk = cat[cid]
            entry: dict[str, Any] = {"id": cid, "level": chk.level, "title": chk.title, "status": status,
                                     "references": clause_map().references(cid), "sends": chk.sends,
                                     "expects": chk.expects, "explain": chk.explain}
            if status == "waived":
                entry.update(verdict="skip", reason=f"waived by the profile: {profile.waivers[cid]}",
                             started=_now(), duration_s=0.0, evidence={"exchanges": []})
            elif (missing := _missing_need(ctx, chk)) is not None:
                entry.update(verdict=missing[0], reason=missing[1], started=_now(), duration_s=0.0,
                             evidence={"exchanges": []})
            else:
                log.info("%s %s", cid, chk.title)
                entry.update(await _run_one(ctx, chk))
            results.append(entry)
    finally:
        try:
            if ctx.client is not None:
                left = await ctx.cleanup()
        finally:
            if ctx.receiver is not None:
                await ctx.receiver.stop()
            if client is not None:
                await client.__aexit__(None, None, None)
    report = build_report(profile, target, ctx, results, started, time.monotonic() - t0, left, selection)
    if only:
        # A partial run is a diagnosis, never an acceptance: the mandatory checks it did not run
        # count as not passed.
        full = profile.selection()
        report["run"]["only"] = sorted(only)
        not_applicable = {r["id"] for r in results if r["verdict"] == "not_applicable"}
        report["summary"]["mandatory_total"] = sum(1 for cid, st in full.items()
                                                   if st == "mandatory" and cid not in not_applicable)
        total = report["summary"]["mandatory_total"]
        report["summary"]["mandatory_rate"] = round(report["summary"]["mandatory_passed"] / total, 4) if total else 1.0
        report["summary"]["accepted"] = report["summary"]["mandatory_passed"] == total
        for item in report["not_tested"]["checks"]:
            if item["id"] in full and item["why"] == "not selected by the profile":
                item["why"] = "not run: --only selected other checks"
    return report


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    counts = {v: sum(1 for r in results if r["verdict"] == v) for v in VERDICTS}
    # A check that does not apply to this target neither counts for nor against acceptance; a
    # mandatory check that could not run (skip) still blocks it.
    mandatory = [r for r in results if r["status"] == "mandatory" and r["verdict"] != "not_applicable"]
    passed = sum(1 for r in mandatory if r["verdict"] == "pass")
    by_level: dict[str, dict[str, int]] = {}
    for level in LEVELS:
        lr = [r for r in results if r["level"] == level]
        if lr:
            by_level[level] = {v: sum(1 for r in lr if r["verdict"] == v) for v in VERDICTS}
            by_level[level]["mandatory"] = sum(1 for r in lr if r["status"] == "mandatory"
                                               and r["verdict"] != "not_applicable")
    return {
        "selected": len(results),
        **counts,
        "waived": sum(1 for r in results if r["status"] == "waived"),
        "mandatory_total": len(mandatory),
        "mandatory_passed": passed,
        "mandatory_rate": round(passed / len(mandatory), 4) if mandatory else 1.0,
        # Mandatory checks that all turned out not applicable prove nothing: not an acceptance.
        "accepted": passed == len(mandatory)
        and (bool(mandatory) or not any(r["status"] == "mandatory" for r in results)),
        "by_level": by_level,
    }


def _not_applicable(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checks that do not apply to this target, listed apart from those that could not run."""
    return [{"id": r["id"], "level": r["level"], "title": r["title"], "status": r["status"], "why": r["reason"]}
            for r in results if r["verdict"] == "not_applicable"]


def _not_tested(results: list[dict[str, Any]], selection: dict[str, str]) -> dict[str, Any]:  # noqa: ARG001  # dead, report rewrite
    cmap = clause_map()
    cat = catalogue()
    ran = {r["id"] for r in results if r["verdict"] in ("pass", "fail", "error")}
    checks = []
    for cid in sorted(cat):
        if cid in ran:
            continue
        r = next((x for x in results if x["id"] == cid), None)
        why = r["reason"] if r else "not selected by the profile"
        checks.append({"id": cid, "level": cat[cid].level, "title": cat[cid].title,
                       "references": cmap.references(cid), "why": why})
    clauses = []
    for doc, sections in cmap.clauses.items():
        for section, title in sections.items():
            ref = f"{doc} {section}"
            users = [cid for cid, refs in cmap.checks.items() if ref in refs]
            done = [c for c in users if c in ran]
            state = "tested" if users and len(done) == len(users) else "partly tested" if done else "not tested"
            clauses.append({"document": doc, "clause": section, "title": title, "state": state,
                            "checks": users, "checks_run": done})
    return {"checks": checks, "clauses": clauses}


def build_report(profile: Profile, target: Target, ctx: RunContext, results: list[dict[str, Any]],
                 started: str, duration: float, left: list[str], selection: dict[str, str]) -> dict[str, Any]:
    """Assemble the JSON report."""
    cmap = clause_map()
    return {
        "report_version": REPORT_VERSION,
        "tool": {"name": TOOL_NAME, "version": __version__},
        "profile": {
            "id": profile.id, "version": profile.version, "title": profile.title, "source": profile.source,
            "sha256": profile.sha256,
            "levels": {"mandatory": profile.mandatory_levels, "optional": profile.optional_levels},
            "models": profile.models,
            "waivers": [{"check": k, "reason": v} for k, v in profile.waivers.items()],
            "standards": {k: {"title": v["title"], "version": v["version"]} for k, v in cmap.documents.items()},
        },
        "target": target.describe(),
        "run": {
            "id": ctx.run_id, "started": started, "ended": _now(), "duration_s": round(duration, 3),
            "writes": ctx.writes_allowed, "write_refusal": ctx.write_refusal,
            "cleanup": {"left": left},
            # NGSI-LD has no operation to delete a tenant: the empty tenants the tenancy checks
            # created stay, and the report says which.
            "tenants_created": sorted({str(t) for t in (*ctx.created, *ctx.subscriptions)
                                       if t and t != ctx.tenant}),
            "quality": {k: v for k, v in profile.quality.items() if k != "declarations"}
            | {"declarations": profile.quality.get("declarations", [])},
        },
        "summary": _summary(results),
        "results": results,
        "not_applicable": _not_applicable(results),
        "not_tested": _not_tested(results, selection),
    }


def exit_code(report: dict[str, Any]) -> int:
    """0 when every mandatory check passed, 1 otherwise."""
    return 0 if report["summary"]["accepted"] else 1
