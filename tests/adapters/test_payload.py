"""Strict JSON for payloads (adapters/kit/payload.py) and the model helpers adapters rely on for hostile input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.kit.payload import MAX_DEPTH, NotJson, finite, load_json, token
from gateway.errors import TranslationError
from gateway.model import ModelError, epoch_time, urn

FIXTURES = sorted((Path(__file__).resolve().parents[2] / "adapters").glob("*/fixtures/*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_recorded_payloads_parse_as_json_does(path: Path) -> None:
    data = path.read_bytes()
    assert load_json(data) == json.loads(data)


@pytest.mark.parametrize(
    ("text", "pointer", "says"),
    [
        ('{"a": [1, {"b": NaN}]}', "/a/1/b", "NaN is not a JSON number"),
        ('{"a": -Infinity}', "/a", "-Infinity is not a JSON number"),
        ('{"a": [0, 1e400]}', "/a/1", "overflows a double"),
        ('{"a": 18446744073709551616}', "/a", "outside 64 bits"),  # 2**64
        ('{"a": -9223372036854775809}', "/a", "outside 64 bits"),  # -2**63 - 1
        ('{"a": {"b": ' + "9" * 5000 + "}}", "/a/b", "5000 digits"),
        ('{"a": "caf\\udce9"}', "/a", "lone UTF-16 surrogate"),
        ('{"a": {"x\\ud800": 1}}', "/a", "member name"),
        ('{"a/b": {"c~d": NaN}}', "/a~1b/c~0d", "NaN"),
    ],
)
def test_hostile_values_are_refused_with_their_pointer(text: str, pointer: str, says: str) -> None:
    with pytest.raises(TranslationError) as caught:
        load_json(text.encode())
    assert caught.value.pointer == pointer and says in caught.value.reason
    with pytest.raises(TranslationError) as again:
        load_json(text, base="/objectJSON")  # a JSON document inside a string member
    assert again.value.pointer == "/objectJSON" + pointer


def test_raw_surrogate_bytes_are_refused_too() -> None:
    # ED A0 80 is the CESU-8 form of U+D800: invalid UTF-8 that json decodes with "surrogatepass".
    with pytest.raises(TranslationError, match="surrogate") as caught:
        load_json(b'{"id": "x\xed\xa0\x80"}')
    assert caught.value.pointer == "/id"
    assert load_json(b'{"smile": "\\ud83d\\ude00"}') == {"smile": "\U0001f600"}  # a valid pair


def test_nesting_is_bounded() -> None:
    assert load_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(TranslationError, match="nested") as caught:
        load_json(b'{"a": ' + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b"}")
    assert caught.value.pointer == "/a" + "/0" * (MAX_DEPTH - 1)
    with pytest.raises(TranslationError, match="nested") as deep:  # past the interpreter's own limit
        load_json(b"[" * 100_000)
    assert deep.value.pointer == ""


def test_text_that_is_not_json_is_not_json() -> None:
    for data in (b"", b"<html>", b"\xff\xfe\x00", b'{"a": 1', "\ufeff{}"):
        with pytest.raises(NotJson):
            load_json(data)
    assert load_json(b"\xef\xbb\xbf{}") == {}  # a UTF-8 BOM on bytes, as json.loads accepts


def test_pointer_tokens_escape_tilde_and_slash() -> None:
    assert token("a/b~c") == "/a~1b~0c" and token(3) == "/3"


def test_finite_refuses_what_a_computation_overflowed() -> None:
    assert finite(1.5, "/v") == 1.5 and finite(2**64 - 1, "/v") == 2**64 - 1 and finite(True, "/v") is True
    for bad in (float("nan"), float("inf"), 2**64, -(2**63) - 1):
        with pytest.raises(TranslationError) as caught:
            finite(bad, "/v")
        assert caught.value.pointer == "/v"


def test_translation_error_text_is_always_utf8() -> None:
    # A dead letter stores reason and pointer as UTF-8 text: a quoted lone surrogate must not stop it.
    exc = TranslationError("unknown event '\ud800'", "/a\udfff")
    assert exc.reason.encode("utf-8") and exc.pointer.encode("utf-8")
    assert "\\ud800" in exc.reason


def test_urn_and_epoch_time_raise_model_errors() -> None:
    with pytest.raises(ModelError, match="not Unicode text"):
        urn("Device", "x\ud800")
    for seconds in (1e20, -1e12, float("nan")):
        with pytest.raises(ModelError):
            epoch_time(seconds)
