"""The runner builds a typed report serialised once, and enters its client and receiver with ``async with``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import conformance.runner as runner
from conformance.http import Client
from conformance.profile import load_profile
from conformance.receiver import Receiver
from conformance.report import Report
from conformance.reports import validate_report
from conformance.targets import EndpointTarget, load_target
from tests.conformance.test_files_acceptance import _delivery


async def test_run_report_is_typed_and_serialises_to_the_json_report(tmp_path: Path) -> None:
    target = load_target(str(_delivery(tmp_path / "livraison")))
    report = await runner.run_report(load_profile("fournisseur-donnees"), target)
    assert isinstance(report, Report)
    doc = report.to_json()
    assert validate_report(doc) == []
    assert json.loads(json.dumps(doc)) == doc  # plain JSON, nothing left to convert
    assert [r["id"] for r in doc["results"]] == [r.id for r in report.results]
    assert doc["summary"]["mandatory_rate"] == report.summary.mandatory_rate
    assert {c["id"] for c in doc["not_applicable"]} == {r.id for r in report.not_applicable}
    assert runner.exit_code(report) == runner.exit_code(doc) == (0 if report.summary.accepted else 1)


async def test_partial_run_counts_every_mandatory_check(tmp_path: Path) -> None:
    profile = load_profile("fournisseur-donnees")
    target = load_target(str(_delivery(tmp_path / "livraison")))
    only = {"L1-SDM-013"}
    report = await runner.run_report(profile, target, only=only)
    assert report.run.only == ["L1-SDM-013"] and len(report.results) == 1
    assert report.summary.mandatory_total > report.summary.selected
    assert report.summary.accepted is False
    doc = report.to_json()
    assert validate_report(doc) == []
    assert doc["run"]["only"] == ["L1-SDM-013"]
    whys = {c["why"] for c in doc["not_tested"]["checks"]}
    assert "not run: --only selected other checks" in whys


async def test_client_is_closed_when_the_target_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Client] = []

    class Tracked(Client):
        async def __aenter__(self) -> Client:
            opened.append(self)
            return await super().__aenter__()

    monkeypatch.setattr(runner, "Client", Tracked)
    with pytest.raises(runner.TargetUnreachable):
        await runner.run_report(load_profile("territoire-essentiel"),
                                EndpointTarget(url="http://127.0.0.1:9", timeout=2.0))
    assert len(opened) == 1
    session: Any = opened[0]._session
    assert session is not None and session.closed


async def test_receiver_is_an_async_context_manager() -> None:
    async with Receiver() as receiver:
        assert receiver.port != 0
        async with aiohttp.ClientSession() as http, http.post(receiver.url("k"), json={"a": 1}) as resp:
            assert resp.status == 204
        assert receiver.of("k")[0].body == {"a": 1}
    assert receiver._runner is None
