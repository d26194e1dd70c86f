"""Errors that name the problem: missing keys, YAML reasons, variable names, log levels, readiness."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import pytest

from gateway.cli import main
from gateway.contract import Manifest
from gateway.errors import ConfigInvalid
from gateway.runtime.config import check_source_configs, load, parse
from gateway.runtime.logging import redact, setup_logging
from gateway.runtime.state import RUNTIME
from tests.runtime.support import FakeAdapter, config, eventually, running


def _problems(tmp_path: Path, text: str) -> str:
    from gateway.contract import discover

    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    adapters = discover()
    with pytest.raises(ConfigInvalid) as caught:
        check_source_configs(load(path, adapters=adapters), adapters)
    return f"{caught.value}\n" + "\n".join(caught.value.problems)


def test_a_missing_choice_of_keys_names_the_keys(tmp_path: Path) -> None:
    text = _problems(tmp_path, "sources:\n  - {name: lights, adapter: rest_mapping, config: {url: 'http://127.0.0.1:9/x'}}\n")
    assert "/sources/0/config: missing key: give 'mapping' or 'mapping_file'" in text
    # Never the object the runtime completed (keys the user did not write).
    assert "state_dir" not in text and "not valid under any" not in text


def test_two_exclusive_keys_say_give_only_one(tmp_path: Path) -> None:
    text = _problems(tmp_path, "sources:\n  - {name: lights, adapter: rest_mapping, config: "
                               "{url: 'http://127.0.0.1:9/x', mapping_file: a.yaml, mapping: {}}}\n")
    assert "give only one of 'mapping', 'mapping_file'" in text


def test_a_wrong_duration_says_what_is_expected() -> None:
    with pytest.raises(ConfigInvalid) as caught:
        parse({"archive": {"max_age": "5 minutes"}})
    assert caught.value.problems == [
        "/archive/max_age: '5 minutes' is not valid: expected seconds, or a number followed by s, m, h or d"]


def test_yaml_syntax_errors_give_the_parsers_reason(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("server:\n  port: 8080\n sources: []\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        load(path)
    message = str(caught.value)
    assert "line 3, column" in message
    assert "while parsing a block mapping, expected <block end>" in message


def test_an_empty_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        load(path)
    assert "is empty" in str(caught.value) and "gateway.example.yaml" in caught.value.problems[0]


def test_a_config_without_sources_is_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    assert main(["run", "--config", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "configures no source" in out


def test_a_variable_name_is_never_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JC_TEST_ADMIN_TOKEN", "Zq7vK2wP9xL4-jc-admin")
    adapters = {"open311": _open311()}
    cfg = parse({"admin": {"token": "${JC_TEST_ADMIN_TOKEN}"},
                 "sources": [{"name": "reports", "adapter": "open311",
                              "config": {"listen": {"api_keys_env": "OPEN311_APP_KEYS", "port": "80"}}}]},
                adapters=adapters)
    with pytest.raises(ConfigInvalid) as caught:
        check_source_configs(cfg, adapters)
    text = "\n".join(caught.value.problems)
    assert "/sources/0/config/listen/port" in text and "***" not in text
    assert redact("OPEN311_APP_KEYS is not set") == "OPEN311_APP_KEYS is not set"
    assert redact("token Zq7vK2wP9xL4-jc-admin") == "token ***"  # the secret value itself is masked


def _open311() -> Any:
    from gateway.contract import load_adapter

    return load_adapter("open311")


def test_an_unknown_log_level_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--log-level", "FOO", "adapters"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "unknown log level 'FOO'" in err and "debug, info, warning, error" in err


def test_third_party_libraries_log_warnings_only_unless_debug() -> None:
    stream = io.StringIO()
    try:
        setup_logging("INFO", stream)
        logging.getLogger("asyncua.server.address_space").info("third-party chatter")
        logging.getLogger("asyncua.client").warning("third-party warning")
        logging.getLogger("jonction.runtime").info("our own news")
        lines = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
        assert lines == ["third-party warning", "our own news"]
        setup_logging("DEBUG", stream)
        logging.getLogger("asyncua.server.address_space").info("now shown")
        assert json.loads(stream.getvalue().splitlines()[-1])["msg"] == "now shown"
    finally:
        setup_logging("WARNING")
        logging.getLogger().handlers.clear()


class BrokenAdapter(FakeAdapter):
    """A source whose check finds its configuration invalid: it fails for good."""

    manifest: ClassVar[Manifest] = Manifest("broken", "Broken test source", ("test",), ("WasteContainer",))

    async def check(self) -> None:
        raise ConfigInvalid("the vendor refused the configured site id")


async def test_readyz_is_not_ready_while_a_source_has_failed(tmp_path: Path) -> None:
    cfg = config(tmp_path, sources=[{"name": "bins", "adapter": "fake"}, {"name": "site", "adapter": "broken"}])
    async with running(cfg, adapters={"fake": FakeAdapter, "broken": BrokenAdapter}) as (base, app):
        rt = app[RUNTIME]
        await eventually(lambda: rt.sources["site"].status.state == "failed", what="the source failed")
        async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as resp:
            doc = await resp.json()
    assert resp.status == 503 and doc["status"] == "not-ready"
    assert doc["checks"]["sources"]["site"]["status"] == "failed"
    assert "site id" in doc["checks"]["sources"]["site"]["error"]
