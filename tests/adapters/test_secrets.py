"""The one rule every adapter follows for secrets: file, then environment, then the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigInvalid
from gateway.runtime.logging import redact
from gateway.secrets import read_secret


def test_file_wins_then_env_then_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file-1234\n")
    monkeypatch.setenv("JONCTION_TEST_TOKEN", "from-env-5678")
    assert read_secret({"token": "inline", "token_file": str(secret_file)}, "token") == "from-file-1234"
    assert read_secret({"token": "inline", "token_env": "JONCTION_TEST_TOKEN"}, "token") == "from-env-5678"
    assert read_secret({"token": "${JONCTION_TEST_TOKEN}"}, "token") == "from-env-5678"
    assert read_secret({"token": "inline-9012"}, "token") == "inline-9012"
    assert read_secret({"api_keys": ["key-aaaa", "key-bbbb"]}, "api_keys") == "key-aaaa,key-bbbb"
    assert read_secret({}, "token") is None
    # every value read is masked in logs from then on
    assert redact("got from-env-5678 and key-bbbb") == "got *** and ***"


def test_errors_name_the_key_never_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JONCTION_TEST_UNSET", raising=False)
    with pytest.raises(ConfigInvalid) as unset:
        read_secret({"password": "${JONCTION_TEST_UNSET}"}, "password", where="auth.")
    assert unset.value.problems == ["auth.password: environment variable JONCTION_TEST_UNSET is unset"]
    with pytest.raises(ConfigInvalid, match=r"cannot read http\.token_file"):
        read_secret({"token_file": str(tmp_path / "absent")}, "token", where="http.")
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigInvalid, match="token_file is empty"):
        read_secret({"token_file": str(tmp_path / "empty")}, "token")
    with pytest.raises(ConfigInvalid, match="secret is required"):
        read_secret({}, "secret", required=True)
