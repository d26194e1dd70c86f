"""Reports (JSON against its schema, JUnit, HTML in a real browser) and the exit codes of `jonction check`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.profile import load_profile
from conformance.reports import html_report, junit_xml, validate_report, write_all
from conformance.runner import run
from conformance.targets import EndpointTarget
from gateway.cli import main
from tests.conformance.support import TOKEN, breaking_proxy, model_example, running_store, seed
from tests.conftest import ROOT, free_port

CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
JONCTION = str(Path(sys.executable).parent / "jonction")
ONLY = {"L2-RET-001", "L2-RET-016", "L6-TEN-001", "L6-TEN-002", "L6-TEN-003", "L6-AUT-001", "L3-CRE-012"}


@pytest.fixture
async def broken_report(tmp_path: Path) -> dict[str, Any]:
    """A real run with passes and failures (tenant not echoed), evidence included."""
    profile = load_profile("territoire-complet")
    async with running_store(tmp_path / "store") as store, breaking_proxy(store, "tenant-echo") as url:
        return await run(profile, EndpointTarget(url=url, token=TOKEN, token_source="test", allow_write=True),
                         only=ONLY)


async def test_json_report_validates_and_redacts_secrets(broken_report: dict[str, Any]) -> None:
    assert validate_report(broken_report) == []
    verdicts = {r["id"]: r["verdict"] for r in broken_report["results"]}
    assert verdicts == {"L2-RET-001": "pass", "L2-RET-016": "pass", "L3-CRE-012": "pass", "L6-AUT-001": "pass",
                        "L6-TEN-001": "fail", "L6-TEN-002": "fail", "L6-TEN-003": "fail"}
    text = json.dumps(broken_report)
    assert TOKEN not in text
    assert '"Authorization": "[redacted]"' in text
    assert broken_report["summary"]["accepted"] is False
    assert broken_report["profile"]["sha256"] == load_profile("territoire-complet").sha256
    failed = next(r for r in broken_report["results"] if r["id"] == "L6-TEN-001")
    assert failed["references"] == ["CIM009 §6.3.14"]
    assert failed["evidence"]["exchanges"][-1]["response"]["status"] == 200
    not_tested = {c["id"] for c in broken_report["not_tested"]["checks"]}
    assert "L2-QRY-001" in not_tested and "L6-TEN-001" not in not_tested
    states = {(c["document"], c["clause"]): c["state"] for c in broken_report["not_tested"]["clauses"]}
    assert states[("CIM009", "§5.9")] == "not tested"


async def test_invalid_report_is_caught(broken_report: dict[str, Any]) -> None:
    broken_report["results"][0]["verdict"] = "maybe"
    assert any("/results/0/verdict" in p for p in validate_report(broken_report))


async def test_junit_xml_has_one_case_per_check(broken_report: dict[str, Any]) -> None:
    root = ET.fromstring(junit_xml(broken_report))
    cases = root.findall(".//testcase")
    assert len(cases) == len(ONLY)
    assert root.get("failures") == "3" and root.get("tests") == str(len(ONLY))
    failures = [c.get("name", "") for c in cases if c.find("failure") is not None]
    assert sorted(n.split()[0] for n in failures) == ["L6-TEN-001", "L6-TEN-002", "L6-TEN-003"]


async def test_html_report_renders_in_chromium_without_errors(broken_report: dict[str, Any],
                                                              tmp_path: Path) -> None:
    assert HAVE_CHROMIUM, f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    from playwright.async_api import async_playwright

    paths = write_all(broken_report, tmp_path / "out", lang="fr")
    page_html = paths["html"].read_text(encoding="utf-8")
    assert "<link" not in page_html and "<script" not in page_html and "src=" not in page_html
    errors: list[str] = []
    requests: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            page = await browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            await page.goto(paths["html"].as_uri())
            banner = await page.text_content(".banner")
            bars = await page.locator("svg rect").count()
            failure_ids = await page.locator(".failure h3").all_text_contents()
            body = await page.text_content("body")
            pdf = await page.pdf()
        finally:
            await browser.close()
    assert errors == []
    assert requests == [paths["html"].as_uri()]  # self-contained: nothing else was fetched
    assert banner is not None and "NON CONFORME" in banner
    assert bars >= 4
    assert [t.split()[0] for t in failure_ids] == ["L6-TEN-001", "L6-TEN-002", "L6-TEN-003"]
    assert body is not None and "Non testé" in body and "NGSILD-Tenant" in body
    assert pdf[:4] == b"%PDF"


async def test_html_report_english_shows_request_response_and_requirement(broken_report: dict[str, Any]) -> None:
    page = html_report(broken_report, "en")
    assert "NOT ACCEPTED" in page
    assert "What the standard requires" in page and "ETSI GS CIM 009 V1.9.1 §6.3.14" in page
    assert "GET http://127.0.0.1:" in page and "HTTP 200" in page
    assert TOKEN not in page


async def _jonction(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(JONCTION, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, cwd=str(ROOT),
                                                env={**os.environ, "JONCTION_CHECK_TOKEN": TOKEN})
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=300)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.slow
async def test_cli_exit_0_when_every_mandatory_check_passes(tmp_path: Path) -> None:
    profile = load_profile("territoire-essentiel")
    async with running_store(tmp_path / "store") as url:
        await seed(url, [model_example(m) for m in profile.model_names])
        target = tmp_path / "target.yaml"
        (tmp_path / "token").write_text(TOKEN)
        target.write_text(yaml.safe_dump({"kind": "endpoint", "url": url + "/ngsi-ld/v1", "allow_write": True,
                                          "credentials": {"token_file": "token"}}))
        code, out = await _jonction("check", "--profile", "territoire-essentiel", "--target", str(target),
                                    "--out", str(tmp_path / "out"))
    assert code == 0, out
    assert "ACCEPTED" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert validate_report(report) == []
    assert report["summary"]["mandatory_passed"] == report["summary"]["mandatory_total"] == 126
    assert (tmp_path / "out" / "report.junit.xml").is_file() and (tmp_path / "out" / "report.html").is_file()


async def test_cli_exit_1_when_a_mandatory_check_fails(tmp_path: Path) -> None:
    async with running_store(tmp_path / "store") as store, breaking_proxy(store, "tenant-echo") as url:
        code, out = await _jonction("check", "--profile", "territoire-essentiel", "--target", url,
                                    "--allow-write", "--only", "L6-TEN-001,L2-RET-001", "--out",
                                    str(tmp_path / "out"))
    assert code == 1, out
    assert "L6-TEN-001 fail" in out


async def test_cli_exit_2_when_the_target_cannot_be_reached(tmp_path: Path) -> None:
    code, out = await _jonction("check", "--profile", "territoire-essentiel", "--target",
                                f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path / "out"))
    assert code == 2, out
    assert "cannot be reached" in out
    assert not (tmp_path / "out").exists()


def test_cli_exit_2_when_the_profile_is_invalid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"id": "bad", "version": "1.0", "title": {"fr": "x", "en": "x"},
                                   "ngsi_ld": {"standard": "ETSI GS CIM 009", "version": "V1.9.1"},
                                   "levels": {"mandatory": ["L2"]}, "waivers": [{"check": "L2-RET-001"}]}))
    assert main(["check", "--profile", str(bad), "--target", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "/waivers/0" in err and "reason" in err
    assert main(["check", "--profile", "no-such-profile", "--target", "http://127.0.0.1:1"]) == 2


def test_cli_lists_the_selected_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--profile", "fournisseur-donnees", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("L1-") and lines[-1].startswith("Q-")
    assert len(lines) == len(load_profile("fournisseur-donnees").selection())


async def test_adapter_target_runs_the_adapter_over_recorded_payloads(tmp_path: Path) -> None:
    """A vendor proves its proprietary API maps cleanly: the adapter's to_entities over its payloads."""
    fixtures = ROOT / "adapters" / "open311" / "fixtures"
    payloads = sorted(p for p in fixtures.glob("*.json") if not p.name.endswith((".golden.json", ".meta.json")))
    config = yaml.safe_load((ROOT / "adapters" / "open311" / "sample.yaml").read_text())
    target_file = tmp_path / "target.yaml"
    target_file.write_text(yaml.safe_dump({"kind": "adapter", "adapter": "open311", "config": config,
                                           "payloads": [str(p) for p in payloads]}))
    from conformance.profile import parse_profile
    from conformance.targets import load_target

    profile = parse_profile(yaml.safe_dump({
        "id": "open311-data", "version": "1.0", "title": {"fr": "Signalements", "en": "Citizen reports"},
        "ngsi_ld": {"standard": "ETSI GS CIM 009", "version": "V1.9.1"}, "levels": {"mandatory": ["L1"]},
        "models": [{"name": "service_requests", "version": "0.1.0"}]}).encode(), "test")
    report = await run(profile, load_target(str(target_file)))
    assert validate_report(report) == []
    verdicts = {r["id"]: r["verdict"] for r in report["results"]}
    assert verdicts["L1-SDM-023"] == "pass", report["results"]
    assert set(verdicts.values()) == {"pass"}, {r["id"]: r["reason"] for r in report["results"]}
    assert report["target"]["kind"] == "adapter" and "config" not in report["target"]


async def test_a_partial_run_is_never_an_acceptance(tmp_path: Path) -> None:
    """--only is for diagnosis: the mandatory checks it leaves out count as not passed."""
    async with running_store(tmp_path / "store") as url:
        report = await run(load_profile("territoire-essentiel"),
                           EndpointTarget(url=url, token=TOKEN, token_source="test", allow_write=True),
                           only={"L6-TEN-005"})
    assert validate_report(report) == []
    assert [r["verdict"] for r in report["results"]] == ["pass"]
    assert report["summary"]["accepted"] is False
    assert report["summary"]["mandatory_total"] == 126 and report["summary"]["mandatory_passed"] == 1
    assert report["run"]["only"] == ["L6-TEN-005"]
    why = {c["id"]: c["why"] for c in report["not_tested"]["checks"]}
    assert why["L2-RET-001"] == "not run: --only selected other checks"
    assert why["L4-SUB-001"] == "not selected by the profile"
