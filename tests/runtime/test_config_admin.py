"""Configuration checks, admin authentication, supervision and secret hygiene."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import ConfigInvalid
from gateway.runtime import config as config_mod
from gateway.runtime.app import create_app
from gateway.runtime.logging import JsonFormatter
from gateway.runtime.state import RUNTIME
from tests.runtime.support import FakeAdapter, RecordingBroker, config, eventually, running


def test_every_problem_is_reported_together_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "server: {port: 99999}\n"
        "publisher: {batch_size: 0, linger: soon}\n"
        "sinks:\n  - {name: City, url: ftp://broker}\n"
        "sources:\n  - {name: bins}\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as info:
        config_mod.load(path)
    text = "\n".join(info.value.problems)
    for pointer in ("/server/port", "/publisher/batch_size", "/publisher/linger", "/sinks/0/name",
                    "/sinks/0/url", "/sources/0"):
        assert pointer in text, pointer
    assert len(info.value.problems) >= 6


def test_schema_and_source_problems_come_in_one_report(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("server: {port: -1}\n"
                    "sources:\n  - {name: bins, adapter: fake, config: {fail_check: maybe}}\n"
                    "  - {name: other, adapter: nope}\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as info:
        config_mod.load(path, adapters={"fake": FakeAdapter})
    text = "\n".join(info.value.problems)
    assert "/server/port" in text
    assert "/sources/0/config/fail_check" in text
    assert "/sources/1/adapter: unknown adapter 'nope'" in text


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("server:\n  port: [1\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid, match="line"):
        config_mod.load(path)


def test_secrets_from_env_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITY_TOKEN", "env-token-123456")
    (tmp_path / "admin.token").write_text("file-token-abcdef\n", encoding="utf-8")
    path = tmp_path / "gw.yaml"
    path.write_text(
        "admin: {token_file: admin.token}\n"
        "sinks:\n  - name: city\n    url: http://127.0.0.1:1\n    auth: {bearer: {token: '${CITY_TOKEN}'}}\n",
        encoding="utf-8")
    cfg = config_mod.load(path)
    assert cfg.admin_token == "file-token-abcdef"
    assert cfg.sinks[0].settings.bearer_token == "env-token-123456"
    monkeypatch.delenv("CITY_TOKEN")
    with pytest.raises(ConfigInvalid, match="CITY_TOKEN is not set"):
        config_mod.load(path)


def test_source_config_checked_against_the_adapter_schema_before_any_io(tmp_path: Path) -> None:
    cfg = config(tmp_path, sources=[{"name": "bins", "adapter": "fake", "config": {"fail_check": "yes"}},
                                    {"name": "other", "adapter": "nope"}])
    with pytest.raises(ConfigInvalid) as info:
        create_app(cfg, adapters={"fake": FakeAdapter})
    text = "\n".join(info.value.problems)
    assert "/sources/0/config/fail_check" in text
    assert "/sources/1/adapter: unknown adapter 'nope'" in text
    assert not (tmp_path / "data").exists()  # nothing was opened


def test_non_loopback_without_token_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path, server={"host": "0.0.0.0", "port": 0})
    with pytest.raises(ConfigInvalid, match="bearer token"):
        create_app(cfg, adapters={"fake": FakeAdapter})


async def test_admin_requires_token_and_secrets_stay_out_of_logs_and_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin_token = "admin-secret-0123456789"
    broker_token = "broker-secret-9876543210"
    monkeypatch.setenv("ADMIN_TOKEN", admin_token)
    broker = RecordingBroker()
    await broker.start()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        cfg = config(tmp_path, admin={"token": "${ADMIN_TOKEN}"},
                     sinks=[{"name": "city", "url": broker.url, "auth": {"bearer": {"token": broker_token}}}],
                     sources=[{"name": "bins", "adapter": "fake", "config": {"api_token": "vendor-secret-55555"}}])
        async with running(cfg) as (base, app):
            rt = app[RUNTIME]
            await FakeAdapter.instances["bins"].send({"id": "s1", "device": "bin-s", "fill": 1,
                                                      "at": "2026-01-01T10:00:00Z"})
            await eventually(lambda: broker.requests, what="publish")
            assert broker.requests[0]["headers"]["Authorization"] == f"Bearer {broker_token}"
            # a secret that ends up in an error message is masked too
            logging.getLogger("jonction.test").error("vendor said: bad key vendor-secret-55555")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/admin/outbox") as resp:
                    assert resp.status == 401
                async with http.get(f"{base}/admin/outbox", headers={"Authorization": "Bearer wrong"}) as resp:
                    assert resp.status == 401
                async with http.get(f"{base}/admin/outbox",
                                    headers={"Authorization": f"Bearer {admin_token}"}) as resp:
                    assert resp.status == 200
                async with http.get(f"{base}/admin/openapi.json") as resp:
                    spec = await resp.json()
                assert spec["openapi"].startswith("3.1")
                assert "/admin/deadletters/{id}/replay" in spec["paths"]
                async with http.get(f"{base}/metrics") as resp:
                    metrics_text = await resp.text()
                async with http.get(f"{base}/admin/sinks", headers={"Authorization": f"Bearer {admin_token}"}) as r:
                    sinks_text = await r.text()
            assert rt.publishers["city"].published == 1
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        await broker.stop()
    logs = stream.getvalue()
    assert '"correlation_id"' in logs
    for secret in (admin_token, broker_token, "vendor-secret-55555"):
        assert secret not in logs
        assert secret not in metrics_text
        assert secret not in sinks_text
    assert "vendor said: bad key ***" in logs


async def test_failing_source_restarts_and_logs_unavailable_and_recovered_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.runtime import supervisor

    caplog.set_level(logging.WARNING, logger="jonction.supervisor")
    monkeypatch.setattr(supervisor, "BACKOFF_INITIAL_S", 0.01)
    monkeypatch.setattr(supervisor, "BACKOFF_MAX_S", 0.02)
    cfg = config(tmp_path, sources=[{"name": "bins", "adapter": "fake", "config": {"fail_check": True}}])
    async with running(cfg) as (base, app):
        rt = app[RUNTIME]
        await eventually(lambda: rt.sources["bins"].status.state == "running"
                         and rt.sources["bins"].status.restarts == 2, what="recovery")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/admin/sources") as resp:
                doc = await resp.json()
        assert doc["sources"][0]["state"] == "running"
        assert doc["sources"][0]["restarts"] == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "jonction.supervisor"]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1


def test_run_check_reports_problems_without_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "gw.yaml"
    path.write_text("sources:\n  - {name: v2, adapter: ngsi_v2, config: {listen: {port: '80'}}}\n",
                    encoding="utf-8")
    jonction = str(Path(sys.executable).with_name("jonction"))
    bad = subprocess.run([jonction, "run", "--check", "--config", str(path)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 2
    assert "/sources/0/config/listen/port" in bad.stderr and "Traceback" not in bad.stderr
    path.write_text("sources:\n  - {name: v2, adapter: ngsi_v2, config: {listen: {port: 0}}}\n", encoding="utf-8")
    good = subprocess.run([jonction, "run", "--check", "--config", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert good.returncode == 0, good.stderr
    assert "configuration valid: 1 source(s)" in good.stdout
