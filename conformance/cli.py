"""`jonction check` and `jonction clause`, registered through the ``jonction.commands`` entry points."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from conformance.profile import SHIPPED, Profile, load_profile, load_vendor_sheet
from gateway.errors import ConfigInvalid


def _profile(args: argparse.Namespace) -> Profile:
    profile = load_profile(args.profile)
    sheet = getattr(args, "vendor_sheet", None)
    if sheet:
        profile.quality.update(load_vendor_sheet(Path(sheet)))
    if getattr(args, "window", None) is not None:
        profile.quality["window_seconds"] = args.window
    if getattr(args, "poll", None) is not None:
        profile.quality["poll_interval_seconds"] = args.poll
    return profile


def register_check(sub: Any) -> None:
    """Add the `check` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "check", help="run a conformance profile against a target and write the reports",
        description="Run a profile's checks against an NGSI-LD endpoint, an adapter over recorded payloads or "
                    "entity files. Exit code 0 when every mandatory check passes, 1 otherwise, 2 when the "
                    "target cannot be reached or the profile is invalid.")
    parser.add_argument("--profile", required=True, help=f"shipped profile ({', '.join(SHIPPED)}) or a YAML file")
    parser.add_argument("--target", help="endpoint URL (http://host:port[/ngsi-ld/v1]), a target YAML file, or "
                                          "entity files: a .json (one entity or an array), an .ndjson, or a folder")
    parser.add_argument("--out", default="conformance-report", help="directory for report.json/.junit.xml/.html")
    parser.add_argument("--vendor-sheet", help="YAML vendor sheet: the models the vendor supplies and its quality "
                                               "promises (Q level)")
    parser.add_argument("--allow-write", action="store_true", default=None,
                        help="let the checker write to an endpoint given by URL (target files say allow_write)")
    parser.add_argument("--window", type=float, help="observation window in seconds (Q level)")
    parser.add_argument("--poll", type=float, help="poll interval in seconds during the observation window")
    parser.add_argument("--only", help="comma-separated check ids to run (diagnosis; the report says so)")
    parser.add_argument("--lang", choices=("en", "fr"), default="en", help="language of the HTML report")
    parser.add_argument("--list", action="store_true", help="list the checks the profile selects and exit")
    parser.set_defaults(handler=_handle_check)


def _handle_check(args: argparse.Namespace) -> int:
    from conformance.registry import catalogue

    profile = _profile(args)
    if args.list:
        cat = catalogue()
        for cid, status in profile.selection().items():
            print(f"{cid}\t{status}\t{cat[cid].title}")
        return 0
    if not args.target:
        raise ConfigInvalid("--target is required (an endpoint URL, a target YAML file, or entity files)")
    from conformance.reports import validate_report, write_all
    from conformance.runner import exit_code, run_report
    from conformance.targets import load_target

    target = load_target(args.target, allow_write=args.allow_write)
    only = {x.strip() for x in args.only.split(",")} if args.only else None
    result = asyncio.run(run_report(profile, target, only=only))
    report = result.to_json()
    problems = validate_report(report)
    if problems:  # a checker bug: say so loudly rather than hand over an invalid report
        print("error: the report does not validate against report.schema.json:\n  " + "\n  ".join(problems[:20]),
              file=sys.stderr)
        return 2
    paths = write_all(report, Path(args.out), args.lang)
    s, n = result.summary, result.summary.counts
    print(f"{profile.id}: {s.mandatory_passed}/{s.mandatory_total} mandatory checks passed "
          f"({n['pass']} pass, {n['fail']} fail, {n['skip']} skip, {n['error']} error, "
          f"{n['not_applicable']} not applicable) — {'ACCEPTED' if s.accepted else 'NOT ACCEPTED'}")
    for r in result.results:
        if r.status == "mandatory" and r.verdict not in ("pass", "not_applicable"):
            print(f"  {r.id} {r.verdict}: {r.reason[:200]}")
    if n["not_applicable"]:
        print(f"  {n['not_applicable']} checks do not apply to this target (listed apart in the report; "
              "they do not block acceptance)")
    print(f"reports: {paths['json']} {paths['junit']} {paths['html']}")
    return exit_code(result)


def register_clause(sub: Any) -> None:
    """Add the `clause` command to the CLI."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "clause", help="generate the contract clause and its technical annex from a profile")
    parser.add_argument("--profile", required=True, help=f"shipped profile ({', '.join(SHIPPED)}) or a YAML file")
    parser.add_argument("--lang", choices=("fr", "en"), default="fr", help="language of the clause (default: fr)")
    parser.add_argument("--format", choices=("md", "html"), default="md", help="Markdown (default) or HTML")
    parser.add_argument("--out", help="file to write (default: standard output)")
    parser.set_defaults(handler=_handle_clause)


def _handle_clause(args: argparse.Namespace) -> int:
    from conformance.clause import render

    text = render(load_profile(args.profile), lang=args.lang, fmt=args.format)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
