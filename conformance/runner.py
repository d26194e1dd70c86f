"""Run a profile's checks against a target and build the typed report (:mod:`conformance.report`)."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any, Final

from conformance import TOOL_NAME, __version__
from conformance.clausemap import clause_map
from conformance.context import WRITE_LEVELS, FixtureError, RunContext
from conformance.http import Client, Unreachable
from conformance.profile import Profile
from conformance.receiver import Receiver
from conformance.registry import LEVELS, Check, Fail, NotApplicable, Skip, catalogue
from conformance.report import (
    VERDICTS,
    CheckResult,
    ClauseCoverage,
    Evidence,
    NotTestedCheck,
    Outcome,
    ProfileInfo,
    Report,
    RunInfo,
    Summary,
)
from conformance.targets import API_ROOT, EndpointTarget, Target
from gateway.errors import JonctionError
from gateway.model import format_time

log = logging.getLogger("jonction.check")

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


async def _run_one(ctx: RunContext, chk: Check) -> Outcome:
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
    evidence = Evidence(list(ctx.client.recorder.exchanges) if ctx.client else [], list(ctx.measurements))
    return Outcome(verdict, reason, started, round(time.monotonic() - t0, 3), evidence)


async def _open_endpoint(stack: AsyncExitStack, ctx: RunContext, target: EndpointTarget, needs_receiver: bool) -> None:
    """Enter the HTTP client (and the notification receiver) on ``stack``; cleanup runs first on exit."""
    ctx.client = await stack.enter_async_context(
        Client(target.url, timeout=target.timeout, secrets=(target.token,) if target.token else ()))
    try:
        await ctx.client.request("GET", API_ROOT + "/entities", params={"type": ctx.probe_type, "limit": "1"},
                                 record=False)
    except Unreachable as exc:
        raise TargetUnreachable(f"the target cannot be reached: {exc}") from exc
    if needs_receiver and ctx.writes_allowed:
        ctx.receiver = await stack.enter_async_context(
            Receiver(target.listen_host, target.listen_port, target.callback_url))


async def run_report(profile: Profile, target: Target, *, only: set[str] | None = None) -> Report:
    """Run every check the profile selects (or ``only`` those ids) and return the typed report."""
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
    results: list[CheckResult] = []
    left: list[str] = []
    cat = catalogue()
    cmap = clause_map()

    async def cleanup() -> None:
        left.extend(await ctx.cleanup())

    async with AsyncExitStack() as stack:
        if isinstance(target, EndpointTarget):
            await _open_endpoint(stack, ctx, target, any("receiver" in cat[c].needs for c in selection))
            stack.push_async_callback(cleanup)  # last in, first out: before the receiver and the client close
        for cid, status in selection.items():
            chk = cat[cid]
            if status == "waived":
                outcome = Outcome("skip", f"waived by the profile: {profile.waivers[cid]}", _now())
            elif (missing := _missing_need(ctx, chk)) is not None:
                outcome = Outcome(missing[0], missing[1], _now())
            else:
                log.info("%s %s", cid, chk.title)
                outcome = await _run_one(ctx, chk)
            results.append(CheckResult(cid, chk.level, chk.title, status, cmap.references(cid), chk.sends,
                                       chk.expects, chk.explain, outcome))
    # A partial run is a diagnosis, never an acceptance: the mandatory checks it did not run
    # count as not passed.
    full = profile.selection() if only else None
    return Report(
        tool={"name": TOOL_NAME, "version": __version__},
        profile=_profile_info(profile),
        target=target.describe(),
        run=RunInfo(
            id=ctx.run_id, started=started, ended=_now(), duration_s=time.monotonic() - t0,
            writes=ctx.writes_allowed, write_refusal=ctx.write_refusal, left=left,
            # NGSI-LD has no operation to delete a tenant: the empty tenants the tenancy checks
            # created stay, and the report says which.
            tenants_created=sorted({str(t) for t in (*ctx.created, *ctx.subscriptions) if t and t != ctx.tenant}),
            quality={k: v for k, v in profile.quality.items() if k != "declarations"}
            | {"declarations": profile.quality.get("declarations", [])},
            only=sorted(only) if only else None),
        summary=_summary(results, full),
        results=results,
        not_tested_checks=_not_tested(results, full),
        clauses=_clauses(results),
    )


async def run(profile: Profile, target: Target, *, only: set[str] | None = None) -> dict[str, Any]:
    """Run every check the profile selects (or ``only`` those ids) and return the JSON report."""
    return (await run_report(profile, target, only=only)).to_json()


def _ran(results: list[CheckResult]) -> set[str]:
    return {r.id for r in results if r.verdict in ("pass", "fail", "error")}


def _summary(results: list[CheckResult], full: dict[str, str] | None = None) -> Summary:
    # A check that does not apply to this target neither counts for nor against acceptance; a
    # mandatory check that could not run (skip) still blocks it.
    mandatory = [r for r in results if r.counts_as_mandatory]
    passed = sum(1 for r in mandatory if r.verdict == "pass")
    by_level: dict[str, dict[str, int]] = {}
    for level in LEVELS:
        lr = [r for r in results if r.level == level]
        if lr:
            by_level[level] = {v: sum(1 for r in lr if r.verdict == v) for v in VERDICTS}
            by_level[level]["mandatory"] = sum(1 for r in lr if r.counts_as_mandatory)
    total = len(mandatory)
    # Mandatory checks that all turned out not applicable prove nothing: not an acceptance.
    accepted = passed == total and (bool(mandatory) or not any(r.status == "mandatory" for r in results))
    if full is not None:  # --only: every mandatory check of the profile counts, run or not
        not_applicable = {r.id for r in results if r.verdict == "not_applicable"}
        total = sum(1 for cid, st in full.items() if st == "mandatory" and cid not in not_applicable)
        accepted = passed == total
    return Summary(
        selected=len(results),
        counts={v: sum(1 for r in results if r.verdict == v) for v in VERDICTS},
        waived=sum(1 for r in results if r.status == "waived"),
        mandatory_total=total, mandatory_passed=passed, accepted=accepted, by_level=by_level)


def _not_tested(results: list[CheckResult], full: dict[str, str] | None) -> list[NotTestedCheck]:
    cmap = clause_map()
    cat = catalogue()
    ran = _ran(results)
    by_id = {r.id: r for r in results}
    checks = []
    for cid in sorted(cat):
        if cid in ran:
            continue
        r = by_id.get(cid)
        if r is not None:
            why = r.reason
        elif full is not None and cid in full:
            why = "not run: --only selected other checks"
        else:
            why = "not selected by the profile"
        checks.append(NotTestedCheck(cid, cat[cid].level, cat[cid].title, cmap.references(cid), why))
    return checks


def _clauses(results: list[CheckResult]) -> list[ClauseCoverage]:
    cmap = clause_map()
    ran = _ran(results)
    clauses = []
    for doc, sections in cmap.clauses.items():
        for section, title in sections.items():
            ref = f"{doc} {section}"
            users = [cid for cid, refs in cmap.checks.items() if ref in refs]
            done = [c for c in users if c in ran]
            state = "tested" if users and len(done) == len(users) else "partly tested" if done else "not tested"
            clauses.append(ClauseCoverage(doc, section, title, state, users, done))
    return clauses


def _profile_info(profile: Profile) -> ProfileInfo:
    cmap = clause_map()
    return ProfileInfo(
        id=profile.id, version=profile.version, title=profile.title, source=profile.source, sha256=profile.sha256,
        mandatory_levels=profile.mandatory_levels, optional_levels=profile.optional_levels,
        models=list(profile.models), waivers=profile.waivers,
        standards={k: {"title": v["title"], "version": v["version"]} for k, v in cmap.documents.items()})


def exit_code(report: Report | dict[str, Any]) -> int:
    """0 when every mandatory check passed, 1 otherwise."""
    accepted = report.summary.accepted if isinstance(report, Report) else report["summary"]["accepted"]
    return 0 if accepted else 1
