"""Export and import on the SQLite store: archives, the temporal API after import, check --target,
a tampered file, a killed import resumed, credentials left out."""

from __future__ import annotations

import json
import signal
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

from tests.reversibility.territory import (
    READINGS,
    SECRET_HEADER,
    at,
    content_sums,
    feed,
    jonction,
    lines,
    manifest,
    tenant_headers,
)
from tests.store.conftest import StoreServer


async def test_imported_store_answers_the_temporal_api(server: StoreServer, tmp_path: Path) -> None:
    await feed(server)
    await server.stop()
    out = tmp_path / "export.tar.gz"
    jonction("export", "--data", server.settings.data_dir, "--out", out)
    with tarfile.open(out) as tar:
        assert tar.getnames()[0] == "manifest.json"
    fresh = StoreServer(type(server.settings)(data_dir=tmp_path / "fresh"))
    jonction("import", out, "--data", fresh.settings.data_dir)
    await fresh.start()
    try:
        reply = await fresh.get("/temporal/entities/urn:ngsi-ld:WasteContainer:test:0",
                                headers=tenant_headers("ville-a"))
        assert reply.status == 200, reply.raw
        levels = reply.json["fillingLevel"]
        assert [i["value"] for i in levels][:2] == [0.01, 0.0]  # the back-filled reading first, in time order
        assert len(levels) == READINGS + 1
        reply = await fresh.get("/subscriptions", headers={"NGSILD-Tenant": "ville-a"})
        assert reply.status == 200 and len(reply.json) == 1
    finally:
        await fresh.close()


async def test_check_target_export_passes_l1_and_catches_a_truncated_file(server: StoreServer, tmp_path: Path) -> None:
    await feed(server)
    await server.stop()
    out = tmp_path / "export"
    jonction("export", "--data", server.settings.data_dir, "--out", out)
    passed = jonction("check", "--profile", "territoire-essentiel", "--target", out, "--out", tmp_path / "report")
    assert "ACCEPTED" in passed.stdout and "NOT ACCEPTED" not in passed.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))
    verdicts = {r["id"]: r["verdict"] for r in report["results"]}
    assert report["target"]["kind"] == "export"
    assert verdicts["L1-ENT-001"] == "pass" and verdicts["L1-SDM-013"] == "pass" and verdicts["L1-SDM-020"] == "pass"
    assert verdicts["L2-QRY-001"] == "not_applicable"
    # a history file cut short: its hash, its line count and the counts per type no longer match
    history = next(f for f in manifest(out)["files"] if f["kind"] == "history" and f["tenant"] == "ville-a")
    path = out / history["path"]
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:-3]), encoding="utf-8")
    failed = jonction("check", "--profile", "territoire-essentiel", "--target", out, "--out", tmp_path / "r2", check=1)
    assert "L1-ENT-001 fail" in failed.stdout
    report = json.loads((tmp_path / "r2" / "report.json").read_text(encoding="utf-8"))
    reason = next(r["reason"] for r in report["results"] if r["id"] == "L1-ENT-001")
    assert "does not match its manifest" in reason and f"{history['path']}:" in reason


async def test_tampered_file_is_refused_before_anything_is_written(server: StoreServer, tmp_path: Path) -> None:
    await feed(server)
    await server.stop()
    out = tmp_path / "export"
    jonction("export", "--data", server.settings.data_dir, "--out", out)
    history = next(f for f in manifest(out)["files"] if f["kind"] == "history" and f["tenant"] == "ville-a")
    path = out / history["path"]
    text = path.read_text(encoding="utf-8").splitlines(keepends=True)
    record = json.loads(text[5])
    name = next(k for k in record if k not in ("id", "type", "@context"))
    record[name]["value"] = 42  # one reading changed, still valid JSON
    text[5] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(text), encoding="utf-8")
    refused = jonction("import", out, "--data", tmp_path / "fresh", check=1)
    assert f"{history['path']}:1: lines 1 to " in refused.stderr
    assert "nothing was imported" in refused.stderr
    assert not (tmp_path / "fresh" / "store.sqlite").exists()
    # a line that is no longer JSON is named exactly
    text[7] = text[7][:40] + "\n"
    path.write_text("".join(text), encoding="utf-8")
    refused = jonction("import", out, "--data", tmp_path / "fresh", check=1)
    assert f"{history['path']}:8: line 8 is not JSON" in refused.stderr


async def test_a_killed_import_resumes_to_the_same_result(server: StoreServer, tmp_path: Path) -> None:
    await feed(server)
    await server.stop()
    out = tmp_path / "export"
    jonction("export", "--data", server.settings.data_dir, "--out", out)
    fresh = tmp_path / "fresh"
    # SIGKILL after 60 lines are committed, before they are journaled: the worst moment
    killed = jonction("import", out, "--data", fresh, "--batch", "20", env={"JONCTION_IMPORT_KILL_AFTER": "60"},
                      check=None)
    assert killed.returncode == -signal.SIGKILL
    journal = json.loads(next(fresh.glob("import-*.journal.json")).read_text(encoding="utf-8"))
    assert not journal["complete"] and 0 < sum(journal["done"].values()) < 60
    resumed = jonction("import", out, "--data", fresh, "--batch", "20")
    assert "resumed" in resumed.stdout
    again = tmp_path / "again"
    jonction("export", "--data", fresh, "--out", again)
    assert content_sums(again) == content_sums(out)
    conn = sqlite3.connect(fresh / "store.sqlite")
    try:
        (instances,) = conn.execute("SELECT count(*) FROM history_instances").fetchone()
    finally:
        conn.close()
    assert instances == manifest(out)["totals"]["history"]


async def test_subscription_credentials_are_left_out(server: StoreServer, tmp_path: Path) -> None:
    await feed(server)
    await server.stop()
    out = tmp_path / "export"
    jonction("export", "--data", server.settings.data_dir, "--out", out)
    subs: list[dict[str, Any]] = [r for f in manifest(out)["files"] if f["kind"] == "subscriptions"
                                  for r in lines(out / f["path"])]
    assert len(subs) == 2
    assert SECRET_HEADER not in json.dumps(subs)
    assert all(s["notification"]["endpoint"]["uri"] == "http://127.0.0.1:9/notify" for s in subs)
    assert len(manifest(out)["secrets_removed"]) == 2


async def test_filters_choose_tenants_types_and_a_period(server: StoreServer, tmp_path: Path) -> None:
    await feed(server)
    await server.stop()
    out = tmp_path / "part"
    jonction("export", "--data", server.settings.data_dir, "--out", out, "--tenant", "ville-a",
             "--type", "WasteContainer", "--since", at(2), "--until", at(5))
    facts = manifest(out)["tenants"]
    assert list(facts) == ["ville-a"]
    assert facts["ville-a"]["entities"] == {"WasteContainer": 1}
    history = [r for f in manifest(out)["files"] if f["kind"] == "history" for r in lines(out / f["path"])]
    observed = sorted(r["fillingLevel"]["observedAt"] for r in history if "fillingLevel" in r)
    assert observed == [at(2), at(3), at(4)]
    assert {r["id"] for r in history} == {"urn:ngsi-ld:WasteContainer:test:0"}
    assert facts["ville-a"]["time_range"] == {"first": at(2), "last": at(4)}
    missing = jonction("export", "--data", server.settings.data_dir, "--out", tmp_path / "none",
                       "--tenant", "ville-z", check=2)
    assert "ville-z" in missing.stderr and not (tmp_path / "none").exists()
    assert jonction("export", "--data", tmp_path / "nowhere", "--out", tmp_path / "n2", check=2).stderr.startswith(
        "error: no store at")
