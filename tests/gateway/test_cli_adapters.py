"""`jonction adapters` and `jonction translate` as a user runs them: exit codes, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "adapters/ngsi_v2/fixtures"


def _jonction(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


def test_adapters_lists_every_installed_adapter_as_json() -> None:
    result = _jonction("adapters", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["domain"]: row for row in json.loads(result.stdout)}
    assert rows["ngsi_v2"]["protocols"] == ["http-push"]
    assert "WasteContainer" in rows["ngsi_v2"]["entity_types"]


def test_translate_prints_valid_entities_and_exits_0() -> None:
    result = _jonction("translate", "--adapter", "ngsi_v2", "--format", "json", str(FIXTURES / "waste_and_air.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = json.loads(result.stdout)
    assert [e["id"] for e in report["entities"]] == [
        "urn:ngsi-ld:WasteContainer:lyon-7-0042",
        "urn:ngsi-ld:AirQualityObserved:AirQualityObserved-Lyon-Gerland",
    ]
    assert all(v["valid"] for v in report["validation"])


def test_translate_reports_an_untranslatable_payload_with_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"subscriptionId": "s", "data": [{"id": "x", "type": "T", "a": 3}]}')
    result = _jonction("translate", "--adapter", "ngsi_v2", str(bad))
    assert result.returncode == 1
    assert "/data/0/a" in result.stdout
    assert "Traceback" not in result.stderr


def test_translate_flags_invalid_entities_with_exit_1(tmp_path: Path) -> None:
    payload = tmp_path / "level.json"
    payload.write_text(json.dumps({"subscriptionId": "s", "data": [
        {"id": "urn:ngsi-ld:WasteContainer:w1", "type": "WasteContainer",
         "fillingLevel": {"type": "Number", "value": 75}}]}))
    result = _jonction("translate", "--adapter", "ngsi_v2", "--format", "json", str(payload))
    assert result.returncode == 1
    (report,) = json.loads(result.stdout)
    (verdict,) = report["validation"]
    assert not verdict["valid"]
    assert any(p["pointer"] == "/fillingLevel/value" for p in verdict["errors"])


def test_unusable_input_exits_2_without_traceback(tmp_path: Path) -> None:
    unknown = _jonction("translate", "--adapter", "nope", str(FIXTURES / "waste_and_air.json"))
    assert unknown.returncode == 2
    assert "unknown adapter 'nope'" in unknown.stderr
    missing = _jonction("translate", "--adapter", "ngsi_v2", str(tmp_path / "absent.json"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    config = tmp_path / "bad.yaml"
    config.write_text("listen: {port: not-a-port}\n")
    payload = str(FIXTURES / "waste_and_air.json")
    invalid = _jonction("translate", "--adapter", "ngsi_v2", "--config", str(config), payload)
    assert invalid.returncode == 2
    assert "/listen/port" in invalid.stderr
    for result in (unknown, missing, invalid):
        assert "Traceback" not in result.stderr


def test_adapters_table_is_aligned() -> None:
    result = _jonction("adapters")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0]
    assert header.split() == ["ADAPTER", "PROTOCOLS", "ENTITY", "TYPES"]
    protocols_at, types_at = header.index("PROTOCOLS"), header.index("ENTITY TYPES")
    rows = lines[1::2]
    assert len(rows) == len(json.loads(_jonction("adapters", "--format", "json").stdout))
    for row in rows:
        # Every column starts where its header does, whatever the length of the cells before it.
        assert row[protocols_at - 2:protocols_at] == "  " and row[protocols_at] != " ", row
        assert row[types_at - 2:types_at] == "  " and row[types_at] != " ", row
