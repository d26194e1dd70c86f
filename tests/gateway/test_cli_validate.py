"""`jonction validate` in a subprocess: verdicts, exit codes, and bad input without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

EXAMPLES = sorted((ROOT / "schemas" / "examples").glob("*.json"))


def jonction(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would (a fresh interpreter)."""
    completed = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "validate", *args],
        input=stdin.decode("latin-1") if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in completed.stderr, completed.stderr
    return completed


def entity(**extra: Any) -> dict[str, Any]:
    """A valid WasteContainer, with overrides."""
    base: dict[str, Any] = {
        "id": "urn:ngsi-ld:WasteContainer:grenoble-12",
        "type": "WasteContainer",
        "fillingLevel": {"type": "Property", "value": 0.4},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [5.7245, 45.1885]}},
    }
    base.update(extra)
    return base


def test_shipped_examples_are_valid() -> None:
    assert len(EXAMPLES) >= 4
    done = jonction(*map(str, EXAMPLES))
    assert done.returncode == 0, done.stdout
    assert "0 invalid" in done.stdout


def test_invalid_entity_exit_1_with_pointer(tmp_path: Path) -> None:
    path = tmp_path / "batch.json"
    path.write_text(json.dumps([entity(), entity(fillingLevel={"type": "Property", "value": 75})]))
    done = jonction(str(path))
    assert done.returncode == 1
    assert "/fillingLevel/value" in done.stdout
    report = json.loads(jonction("--format", "json", str(path)).stdout)
    assert report["summary"] == {"entities": 2, "valid": 1, "invalid": 1, "unusable": 0}
    errors = report["files"][0]["verdicts"][1]["errors"]
    assert [e["pointer"] for e in errors] == ["/fillingLevel/value"]


def test_ndjson_and_stdin(tmp_path: Path) -> None:
    path = tmp_path / "entities.ndjson"
    path.write_text("\n".join(json.dumps(entity(id=f"urn:ngsi-ld:WasteContainer:{i}")) for i in range(5)) + "\n")
    assert jonction(str(path)).returncode == 0
    done = jonction("-", stdin=json.dumps(entity()).encode())
    assert done.returncode == 0
    assert "1 entities: 1 valid" in done.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "urn:x:1",\n  "type": }', "not valid JSON at line 2, column 11"),
        (b'{"id": "urn:x:\xff"}', "byte 0xff at offset 14 is not UTF-8"),
        (b"[" * 10_000 + b"]" * 10_000, "nested deeper than 64 levels"),
        (b"", "empty input"),
    ],
)
def test_unusable_input_exit_2_clear_message(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    done = jonction(str(path))
    assert done.returncode == 2
    assert message in done.stderr, done.stderr


def test_deep_nesting_without_the_depth_guard_is_still_clean(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 10_000 + b"]" * 10_000)
    done = jonction("--max-depth", "100000", str(path))
    assert done.returncode == 2
    assert "nested too deeply" in done.stderr


def test_fifty_megabyte_array_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    item = json.dumps(entity()).encode()
    with path.open("wb") as out:
        out.write(b"[")
        count = 50 * 1024 * 1024 // (len(item) + 1) + 1
        out.write(b",".join([item] * count))
        out.write(b"]")
    assert path.stat().st_size > 50 * 1024 * 1024
    done = jonction(str(path))
    assert done.returncode == 2
    assert "larger than 16777216" in done.stderr
    assert "NDJSON" in done.stderr
    # The same bytes on stdin: read at most the limit, then refused.
    with path.open("rb") as stream:
        piped = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "validate", "-"],
            stdin=stream, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
        )
    assert piped.returncode == 2
    assert "larger than 16777216 bytes" in piped.stderr
    assert "Traceback" not in piped.stderr


def test_missing_file_exit_2(tmp_path: Path) -> None:
    done = jonction(str(tmp_path / "nope.json"))
    assert done.returncode == 2
    assert "cannot read" in done.stderr


def test_json_ld_graph_and_ndjson_without_extension_in_process(tmp_path: Path) -> None:
    from gateway.commands.validate import run

    graph = tmp_path / "graph.jsonld"
    graph.write_text(json.dumps({"@context": ["https://jonction.eu/ns/context/v1.jsonld"],
                                 "@graph": [entity(), entity(id="not a uri")]}))
    lines = tmp_path / "lines.json"
    lines.write_text(json.dumps(entity()) + "\n" + json.dumps(entity(id="urn:ngsi-ld:WasteContainer:2")) + "\n")
    results = run([str(graph), str(lines)], max_bytes=1 << 20, max_depth=64)
    assert [[v.valid for v in r.verdicts] for r in results] == [[True, False], [True, True]]
    assert results[0].verdicts[1].errors[0].pointer == "/id"
    assert all(r.error is None for r in results)
