"""The ``jonction`` CLI fuzzed as a subprocess: exit code 0, 1 or 2 and never a traceback.

Each hypothesis example is one real ``jonction`` process given a batch of generated inputs (mutated
entities: NaN, Infinity, 5,000-digit integers, lone surrogates, deep nesting, bad bytes, truncation),
so that hundreds of inputs cost a few dozen interpreter starts. ``JONCTION_FUZZ_SCALE`` multiplies
the number of examples (``make fuzz``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT

pytestmark = pytest.mark.fuzz

SCALE = max(1, int(os.environ.get("JONCTION_FUZZ_SCALE", "1")))
BATCH = 16
"""Inputs per process for the validate runs."""
VALIDATE_RUNS = 13 * SCALE
"""Processes for the validate runs: 13 x 16 = 208 inputs in CI."""
HUGE = "9" * 5000
# No shrinking: every step is an interpreter start; the failing batch is in the assertion message.
FUZZ_SETTINGS: Any = dict(deadline=None, database=None, derandomize=SCALE == 1,
                          phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INPUTS: list[int] = []
"""Inputs fed to the CLI so far (checked against the 200-run floor at the end)."""


def jonction(
    *args: str | bytes, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """One real ``jonction`` process; asserts the contract every run must keep."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], input=stdin, capture_output=True, cwd=ROOT,
        timeout=120, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    stderr = done.stderr.decode("utf-8", "replace")
    assert "Traceback" not in stderr, (args, stderr[-3000:])
    assert done.returncode in (0, 1, 2), (args, done.returncode, stderr[-2000:])
    if done.returncode == 2:
        assert stderr.strip(), f"exit 2 without a reason: {args}"
    return done


# ------------------------------------------------------------------ generated inputs

SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d"])
TEXT = st.one_of(st.text(max_size=12), SURROGATES)
NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.just("__HUGE__"), st.just("-__HUGE__"),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=10
)
ATTRIBUTE = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["Property", "Relationship", "GeoProperty", "LanguageProperty",
                                                    "Number", "JsonProperty", ""]),
                           "value": VALUES}, optional={"unitCode": TEXT, "observedAt": TEXT, "object": VALUES}),
    st.fixed_dictionaries({"type": st.just("GeoProperty"),
                           "value": st.fixed_dictionaries({"type": st.sampled_from(["Point", "Polygon", "Nope"]),
                                                           "coordinates": st.lists(NUMBERS, max_size=3)})}),
    VALUES,
)
ENTITY = st.fixed_dictionaries(
    {"id": st.one_of(st.just("urn:ngsi-ld:WasteContainer:1"), TEXT.map(lambda t: "urn:ngsi-ld:X:" + t), VALUES),
     "type": st.one_of(st.sampled_from(["WasteContainer", "Streetlight", "AirQualityObserved", "WeatherObserved"]),
                       VALUES)},
    optional={"fillingLevel": ATTRIBUTE, "location": ATTRIBUTE, "name": ATTRIBUTE, "@context": VALUES},
).flatmap(lambda e: st.dictionaries(TEXT, ATTRIBUTE, max_size=3).map(lambda extra: {**extra, **e}))
DOCUMENT = st.one_of(ENTITY, st.lists(ENTITY, max_size=3), VALUES)


def serialise(document: Any) -> bytes:
    """JSON text of ``document`` as a sloppy client writes it: NaN/Infinity allowed, surrogates escaped.

    Huge integers stay a short marker until :func:`write` (hypothesis prints failing inputs).
    """
    return json.dumps(document, allow_nan=True).encode()  # ensure_ascii: a lone surrogate becomes \\ud800


def write(path: Path, data: bytes) -> None:
    """Write one generated input, its huge-integer markers expanded."""
    path.write_bytes(data.replace(b'"-__HUGE__"', b"-" + HUGE.encode()).replace(b'"__HUGE__"', HUGE.encode()))


MUTATIONS = st.sampled_from(["none", "none", "none", "truncate", "badbyte", "bom", "deep", "ndjson", "empty",
                             "raw-surrogate", "junk"])


@st.composite
def inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    """One input file: (suffix, bytes)."""
    data = serialise(draw(DOCUMENT))
    mutation = draw(MUTATIONS)
    suffix = ".json"
    if mutation == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "badbyte":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + data[at:]
    elif mutation == "bom":
        data = b"\xef\xbb\xbf" + data
    elif mutation == "deep":
        depth = draw(st.sampled_from([63, 64, 65, 200, 5000]))
        data = b"[" * depth + data + b"]" * depth
    elif mutation == "ndjson":
        suffix = ".ndjson"
        data = b"\n".join([data, serialise(draw(DOCUMENT)), b"", draw(st.binary(max_size=20))])
    elif mutation == "empty":
        data = draw(st.sampled_from([b"", b"   \n", b"null", b"[]", b"{}"]))
    elif mutation == "raw-surrogate":
        data = data + b"\n" + b'{"id": "urn:x:\\udc00", "type": "T"}'
        suffix = ".ndjson"
    elif mutation == "junk":
        data = draw(st.binary(max_size=64))
    return suffix, data


# ------------------------------------------------------------------ the runs


@settings(max_examples=VALIDATE_RUNS, **FUZZ_SETTINGS)
@given(batch=st.lists(inputs(), min_size=BATCH, max_size=BATCH), fmt=st.sampled_from(["text", "json"]),
       encoding=st.sampled_from([None, None, "ascii", "latin-1"]),
       flags=st.sampled_from([[], ["--quiet"], ["--verbose"]]))
def test_validate_fuzzed(tmp_path_factory: pytest.TempPathFactory, batch: list[tuple[str, bytes]], fmt: str,
                         encoding: str | None, flags: list[str]) -> None:
    folder = tmp_path_factory.mktemp("cli-fuzz")
    names = []
    for index, (suffix, data) in enumerate(batch):
        path = folder / f"input-{index}{suffix}"
        write(path, data)
        names.append(str(path))
    env = {"PYTHONIOENCODING": encoding} if encoding else {}
    done = jonction("validate", "--format", fmt, *flags, *names, env=env)
    INPUTS.append(len(names))
    if fmt == "json":
        try:
            report = json.loads(done.stdout)  # still JSON, whatever the entities held and the encoding
        except ValueError as exc:
            pytest.fail(f"not JSON ({exc}) with PYTHONIOENCODING={encoding} for {batch!r}")
        assert len(report["files"]) == BATCH
        unusable = report["summary"]["unusable"]
        invalid = report["summary"]["invalid"]
        assert done.returncode == (2 if unusable else 1 if invalid else 0)


@settings(max_examples=3 * SCALE, **FUZZ_SETTINGS)
@given(data=inputs())
def test_validate_fuzzed_stdin(tmp_path_factory: pytest.TempPathFactory, data: tuple[str, bytes]) -> None:
    path = tmp_path_factory.mktemp("cli-stdin") / "input"
    write(path, data[1])
    jonction("validate", "-", stdin=path.read_bytes())
    INPUTS.append(1)


ARGUMENTS = st.sampled_from([
    ["validate"],
    ["validate", "--max-bytes", "-1", "x.json"],
    ["validate", "--max-depth", "0", "x.json"],
    ["validate", "--max-bytes", "1e9", "x.json"],
    ["validate", "/nonexistent/file.json"],
    ["validate", "/"],
    ["validate", "/dev/null"],
    ["translate", "--adapter", "{text}", "{file}"],
    ["translate", "--adapter", "webhook", "{file}"],
    ["translate", "--adapter", "ngsi_v2", "--format", "json", "{file}"],
    ["translate", "--adapter", "webhook", "--config", "{file}", "{file}"],
    ["run", "--check", "--config", "{file}"],
    ["run", "--check", "--config", "/nonexistent.yaml"],
    ["run", "--check", "--port", "{text}"],
    ["store", "--port", "70000"],
    ["store", "--token-file", "/nonexistent/tokens"],
    ["store", "--token-file", "{file}", "--host", "{text}", "--port", "-1"],
    ["adapters", "--format", "{text}"],
    ["{text}"],
    ["--log-level", "{text}", "validate", "{file}"],
    ["check", "--profile", "{text}"],
    ["clause", "{text}"],
])


@settings(max_examples=12 * SCALE, **FUZZ_SETTINGS)
@given(template=ARGUMENTS, text=TEXT.filter(lambda t: "\x00" not in t), data=inputs())
def test_commands_fuzzed(tmp_path_factory: pytest.TempPathFactory, template: list[str], text: str,
                         data: tuple[str, bytes]) -> None:
    path = tmp_path_factory.mktemp("cli-args") / f"input{data[0]}"
    write(path, data[1])
    # argv as bytes: a lone surrogate becomes bytes that are not UTF-8, as a hostile shell can pass
    raw_text = text.encode("utf-8", "surrogatepass") or b"x"
    args = [arg.encode().replace(b"{file}", bytes(path)).replace(b"{text}", raw_text) for arg in template]
    jonction(*args)
    INPUTS.append(1)


def test_the_reported_inputs(tmp_path: Path) -> None:
    """The issue's cases verbatim: a lone surrogate in an id, a 5,000-digit integer; text and JSON output."""
    surrogate = tmp_path / "surrogate.json"
    surrogate.write_bytes(b'{"id": "urn:ngsi-ld:WasteContainer:\\ud800", "type": "WasteContainer"}')
    huge = tmp_path / "huge.json"
    huge.write_bytes(b'{"id": "urn:ngsi-ld:WasteContainer:1", "type": "WasteContainer", '
                     b'"fillingLevel": {"type": "Property", "value": ' + HUGE.encode() + b"}}")
    nan = tmp_path / "nan.json"
    nan.write_bytes(b'{"id": "urn:ngsi-ld:WasteContainer:2", "type": "WasteContainer", '
                    b'"fillingLevel": {"type": "Property", "value": NaN}}')
    for fmt in ("text", "json"):
        done = jonction("validate", "--format", fmt, str(surrogate), str(huge), str(nan))
        assert done.returncode == 1  # invalid entities, not unusable input
        out = done.stdout.decode("utf-8")
        assert "\\ud800" in out
        assert "/fillingLevel/value" in out and "64-bit" in out and "NaN" in out
    INPUTS.append(6)


def test_at_least_200_inputs_were_fed() -> None:
    """Runs last in this module: the fuzzing above did reach the floor the issue sets."""
    if len(INPUTS) < 4:
        pytest.skip("the fuzz tests of this module were not run (selected alone)")
    assert sum(INPUTS) >= 200
