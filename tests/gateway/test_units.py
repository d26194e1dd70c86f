"""UN/CEFACT codes, human aliases and the linear conversions adapters use."""

from __future__ import annotations

import pytest

import schemas
from gateway.model import ModelError
from gateway.units import CODES, UNIT_ALIASES, UnitError, code_for, convert, is_uncefact


@pytest.mark.parametrize(
    "code",
    ["CEL", "KEL", "FAH", "P1", "C62", "KWH", "WHR", "MWH", "WTT", "KWT", "MTR", "CMT", "MMT", "KMT", "LTR",
     "MTQ", "MQH", "L2", "E32", "GQ", "GP", "59", "61", "2N", "A97", "PAL", "BAR", "KPA", "MBR", "VLT", "AMP",
     "HTZ", "KMH", "MTS", "DD", "SEC", "MIN", "HUR", "K3", "D44", "D46", "C79", "M1", "S4", "E91"],
)
def test_common_codes_are_recognised(code: str) -> None:
    assert is_uncefact(code)


@pytest.mark.parametrize("bad", ["°C", "%", "kWh", "cel", "", "RRC", "XYZ", None, 12])
def test_symbols_and_garbage_are_not_codes(bad: object) -> None:
    assert not is_uncefact(bad)


def test_aliases_point_at_recognised_codes() -> None:
    assert {UNIT_ALIASES[s] for s in ("°C", "kWh", "%", "µg/m3", "ppm", "dB", "m3", "V", "A", "W")} == {
        "CEL", "KWH", "P1", "GQ", "59", "2N", "MTQ", "VLT", "AMP", "WTT"}
    assert set(UNIT_ALIASES.values()) <= CODES
    assert code_for("µg/m³") == "GQ"
    assert code_for("KWH") == "KWH"


def test_every_model_unit_is_a_recognised_code() -> None:
    for name in schemas.MODELS:
        for attr, spec in schemas.model(name).attributes.items():
            assert spec.unit is None or is_uncefact(spec.unit), (name, attr)


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (1500, "WHR", "KWH", 1.5),
        (2.5, "KWH", "WHR", 2500),
        (3, "MWH", "KWH", 3000),
        (212, "FAH", "CEL", 100),
        (32, "°F", "°C", 0),
        (300, "KEL", "CEL", 26.85),
        (-40, "CEL", "FAH", -40),
        (1234, "MMT", "MTR", 1.234),
        (12, "CMT", "MMT", 120),
        (2500, "LTR", "MTQ", 2.5),
        (1013.25, "A97", "PAL", 101325),
        (1013.25, "hPa", "BAR", 1.01325),
        (75, "P1", "C62", 0.75),
        (0.4, "C62", "%", 40),
        (36, "KMH", "MTS", 10),
        (90, "MIN", "HUR", 1.5),
        (60, "L2", "MQH", 3.6),
    ],
)
def test_linear_conversions(value: float, source: str, target: str, expected: float) -> None:
    assert convert(value, source, target) == pytest.approx(expected)


@pytest.mark.parametrize(("source", "target"), [("CEL", "MTR"), ("KWH", "WTT"), ("furlong", "MTR")])
def test_unknown_pairs_raise_a_clear_error(source: str, target: str) -> None:
    with pytest.raises(UnitError) as caught:
        convert(1, source, target)
    assert source in str(caught.value)
    assert isinstance(caught.value, ModelError)
