"""UN/CEFACT Recommendation 20 unit codes: recognition, human-symbol aliases and linear conversions.

NGSI-LD ``unitCode`` carries a Rec 20 "common code". The list below covers the codes the supported
Smart Data Models use and their neighbours; ``convert`` knows the linear conversions adapters need.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from gateway.model import ModelError

UNECE_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # dimensionless, ratios, counts
        "C62": "one", "P1": "percent", "59": "part per million", "61": "part per billion",
        "IE": "person", "NIU": "number of international units", "E37": "pixel",
        "EA": "each", "PR": "pair", "MIL": "thousand",
        # temperature
        "CEL": "degree Celsius", "KEL": "kelvin", "FAH": "degree Fahrenheit",
        # length
        "MTR": "metre", "CMT": "centimetre", "MMT": "millimetre", "KMT": "kilometre", "DMT": "decimetre",
        "4H": "micrometre", "C45": "nanometre", "INH": "inch", "FOT": "foot", "YRD": "yard", "SMI": "mile",
        "NMI": "nautical mile", "ACR": "acre", "FTK": "square foot", "INK": "square inch", "YDK": "square yard",
        "FTQ": "cubic foot", "INQ": "cubic inch", "GLI": "gallon (UK)", "MAL": "megalitre",
        "KTN": "kilotonne", "DTN": "decitonne", "STN": "ton (US) or short ton (UK/US)", "LTN": "ton (UK) or long ton",
        "HGM": "hectogram", "C47": "nanosecond", "NEW": "newton", "NU": "newton metre", "BQL": "becquerel",
        "2M": "centimetre per second", "C34": "mole", "A53": "electronvolt", "HN": "millimetre of mercury",
        "GV": "gigajoule", "BTU": "British thermal unit (international table)",
        # area and volume
        "MTK": "square metre", "CMK": "square centimetre", "MMK": "square millimetre", "KMK": "square kilometre",
        "HAR": "hectare", "MTQ": "cubic metre", "LTR": "litre", "MLT": "millilitre", "CLT": "centilitre",
        "DLT": "decilitre", "HLT": "hectolitre", "CMQ": "cubic centimetre", "MMQ": "cubic millimetre",
        "DMQ": "cubic decimetre", "GLL": "gallon (US)",
        # flow
        "MQH": "cubic metre per hour", "MQS": "cubic metre per second", "L2": "litre per minute",
        "E32": "litre per hour", "G51": "litre per second", "2J": "cubic centimetre per second",
        "S4": "square metre per second",
        # mass
        "KGM": "kilogram", "GRM": "gram", "MGM": "milligram", "MC": "microgram", "TNE": "tonne",
        "LBR": "pound", "ONZ": "ounce",
        # concentration and density
        "GQ": "microgram per cubic metre", "GP": "milligram per cubic metre", "M1": "milligram per litre",
        "GL": "gram per litre", "KMQ": "kilogram per cubic metre", "23": "gram per cubic centimetre",
        "H29": "microgram per litre", "H64": "milligram per gram", "NA": "milligram per kilogram",
        # time
        "SEC": "second", "MIN": "minute", "HUR": "hour", "DAY": "day", "WEE": "week", "MON": "month",
        "ANN": "year", "C26": "millisecond", "B98": "microsecond", "E91": "reciprocal day",
        "2A": "radian per second",
        # speed and acceleration
        "MTS": "metre per second", "KMH": "kilometre per hour", "HM": "mile per hour", "KNT": "knot",
        "MSK": "metre per second squared",
        # pressure
        "PAL": "pascal", "A97": "hectopascal", "KPA": "kilopascal", "MPA": "megapascal",
        "BAR": "bar", "MBR": "millibar", "ATM": "standard atmosphere", "80": "pound-force per square inch",
        # electricity
        "VLT": "volt", "KVT": "kilovolt", "2Z": "millivolt", "AMP": "ampere", "4K": "milliampere",
        "B22": "kiloampere", "OHM": "ohm", "B49": "kiloohm", "HTZ": "hertz", "KHZ": "kilohertz",
        "MHZ": "megahertz", "AMH": "ampere hour", "E09": "milliampere hour",
        "FAR": "farad", "D10": "siemens per metre", "H61": "millisiemens per centimetre",
        "G42": "microsiemens per centimetre",
        # power and energy
        "WTT": "watt", "KWT": "kilowatt", "MAW": "megawatt", "C31": "milliwatt",
        "D46": "volt - ampere", "KVA": "kilovolt - ampere", "MVA": "megavolt - ampere",
        "D44": "var", "KVR": "kilovolt ampere (reactive)", "WHR": "watt hour", "KWH": "kilowatt hour",
        "MWH": "megawatt hour (1000 kW.h)", "GWH": "gigawatt hour", "K3": "kilovolt ampere (reactive) hour",
        "C79": "kilovolt ampere hour", "JOU": "joule", "KJO": "kilojoule", "3B": "megajoule",
        "D32": "terawatt hour", "E46": "kilowatt hour per cubic metre", "K14": "kilowatt hour per hour",
        # light, sound, radiation
        "LUX": "lux", "CDL": "candela", "LUM": "lumen", "2N": "decibel", "D33": "tesla",
        "D54": "watt per square metre",
        # angle and geography
        "DD": "degree (unit of angle)", "C81": "radian", "D61": "minute (unit of angle)",
        "D62": "second (unit of angle)",
        # data
        "AD": "byte", "2P": "kilobyte", "4L": "megabyte", "E34": "gigabyte", "E35": "terabyte",
        "A99": "bit", "C74": "kilobit per second", "E20": "megabit per second", "D36": "megabit",
        # rates and miscellaneous used around sensors
        "H10": "reciprocal hour", "C94": "reciprocal minute", "RPM": "revolutions per minute", "E36": "petabyte",
        "Q30": "pH (potential of Hydrogen)", "4G": "microlitre",
    }
)
"""Rec 20 common code -> name (the subset jonction recognises)."""

CODES: Final = frozenset(UNECE_CODES)
"""The recognised Rec 20 common codes."""

UNIT_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "°C": "CEL", "ºC": "CEL", "degC": "CEL", "C": "CEL", "celsius": "CEL",
        "K": "KEL", "°F": "FAH", "degF": "FAH",
        "%": "P1", "percent": "P1", "ppm": "59", "ppb": "61", "1": "C62", "ratio": "C62",
        "dB": "2N", "dBA": "2N", "dB(A)": "2N",
        "kWh": "KWH", "Wh": "WHR", "MWh": "MWH", "W": "WTT", "kW": "KWT", "MW": "MAW",
        "VA": "D46", "kVA": "KVA", "var": "D44", "VAr": "D44", "kvar": "KVR", "kVArh": "K3", "kvarh": "K3",
        "kVAh": "C79", "J": "JOU", "kJ": "KJO", "MJ": "3B",
        "V": "VLT", "kV": "KVT", "mV": "2Z", "A": "AMP", "mA": "4K", "Ah": "AMH", "mAh": "E09",
        "Ω": "OHM", "ohm": "OHM", "Hz": "HTZ", "kHz": "KHZ",
        "m": "MTR", "cm": "CMT", "mm": "MMT", "km": "KMT", "µm": "4H", "um": "4H",
        "m2": "MTK", "m²": "MTK", "ha": "HAR", "km2": "KMK", "km²": "KMK",
        "m3": "MTQ", "m³": "MTQ", "l": "LTR", "L": "LTR", "ml": "MLT", "mL": "MLT",
        "m3/h": "MQH", "m³/h": "MQH", "m3/s": "MQS", "m³/s": "MQS", "l/min": "L2", "L/min": "L2",
        "l/h": "E32", "L/h": "E32", "l/s": "G51", "L/s": "G51",
        "kg": "KGM", "g": "GRM", "mg": "MGM", "µg": "MC", "t": "TNE",
        "µg/m3": "GQ", "µg/m³": "GQ", "ug/m3": "GQ", "ug/m³": "GQ", "mg/m3": "GP", "mg/m³": "GP",
        "mg/l": "M1", "mg/L": "M1", "g/l": "GL", "g/L": "GL", "µg/l": "H29", "µg/L": "H29",
        "kg/m3": "KMQ", "kg/m³": "KMQ",
        "s": "SEC", "min": "MIN", "h": "HUR", "d": "DAY", "ms": "C26",
        "m/s": "MTS", "km/h": "KMH", "kmh": "KMH", "mph": "HM", "kn": "KNT", "m/s2": "MSK", "m/s²": "MSK",
        "Pa": "PAL", "hPa": "A97", "kPa": "KPA", "MPa": "MPA", "bar": "BAR", "mbar": "MBR", "atm": "ATM",
        "psi": "80",
        "lx": "LUX", "lux": "LUX", "cd": "CDL", "lm": "LUM", "W/m2": "D54", "W/m²": "D54",
        "°": "DD", "deg": "DD", "rad": "C81",
        "B": "AD", "kB": "2P", "MB": "4L", "GB": "E34", "rpm": "RPM",
        "mS/cm": "H61", "µS/cm": "G42", "uS/cm": "G42", "S/m": "D10",
    }
)
"""Human unit symbols -> Rec 20 common codes (what vendors write -> what NGSI-LD carries)."""


def is_uncefact(code: object) -> bool:
    """True when ``code`` is a UN/CEFACT Rec 20 common code jonction recognises."""
    return isinstance(code, str) and code in CODES


def code_for(symbol: str) -> str:
    """The Rec 20 code of a human symbol or of a code itself; raise ``UnitError`` otherwise."""
    if symbol in CODES:
        return symbol
    code = UNIT_ALIASES.get(symbol.strip())
    if code is None:
        raise UnitError(f"unknown unit {symbol!r}: not a UN/CEFACT common code nor a known symbol")
    return code


class UnitError(ModelError):
    """A unit code that is unknown, or a conversion jonction does not know."""


# Each dimension: code -> (factor, offset) so that base = value * factor + offset.
_DIMENSIONS: Final[tuple[Mapping[str, tuple[float, float]], ...]] = (
    {"CEL": (1.0, 0.0), "KEL": (1.0, -273.15), "FAH": (5 / 9, -32 * 5 / 9)},
    {"MTR": (1.0, 0.0), "CMT": (0.01, 0.0), "MMT": (0.001, 0.0), "KMT": (1000.0, 0.0), "DMT": (0.1, 0.0),
     "4H": (1e-6, 0.0), "INH": (0.0254, 0.0), "FOT": (0.3048, 0.0)},
    {"MTQ": (1.0, 0.0), "LTR": (0.001, 0.0), "MLT": (1e-6, 0.0), "DMQ": (0.001, 0.0), "CMQ": (1e-6, 0.0),
     "HLT": (0.1, 0.0), "CLT": (1e-5, 0.0)},
    {"MQH": (1.0, 0.0), "MQS": (3600.0, 0.0), "L2": (0.06, 0.0), "E32": (0.001, 0.0), "G51": (3.6, 0.0)},
    {"PAL": (1.0, 0.0), "A97": (100.0, 0.0), "KPA": (1000.0, 0.0), "MPA": (1e6, 0.0),
     "BAR": (1e5, 0.0), "MBR": (100.0, 0.0), "ATM": (101325.0, 0.0)},
    {"WHR": (1.0, 0.0), "KWH": (1000.0, 0.0), "MWH": (1e6, 0.0), "GWH": (1e9, 0.0), "JOU": (1 / 3600, 0.0),
     "KJO": (1000 / 3600, 0.0), "3B": (1e6 / 3600, 0.0)},
    {"WTT": (1.0, 0.0), "KWT": (1000.0, 0.0), "MAW": (1e6, 0.0), "C31": (0.001, 0.0)},
    {"VLT": (1.0, 0.0), "KVT": (1000.0, 0.0), "2Z": (0.001, 0.0)},
    {"AMP": (1.0, 0.0), "4K": (0.001, 0.0), "B22": (1000.0, 0.0)},
    {"C62": (1.0, 0.0), "P1": (0.01, 0.0), "59": (1e-6, 0.0), "61": (1e-9, 0.0)},
    {"SEC": (1.0, 0.0), "MIN": (60.0, 0.0), "HUR": (3600.0, 0.0), "DAY": (86400.0, 0.0), "C26": (0.001, 0.0)},
    {"MTS": (1.0, 0.0), "KMH": (1 / 3.6, 0.0), "HM": (0.44704, 0.0), "KNT": (1852 / 3600, 0.0)},
    {"KGM": (1.0, 0.0), "GRM": (0.001, 0.0), "MGM": (1e-6, 0.0), "MC": (1e-9, 0.0), "TNE": (1000.0, 0.0)},
    {"GQ": (1.0, 0.0), "GP": (1000.0, 0.0), "KMQ": (1e9, 0.0)},
    {"M1": (1.0, 0.0), "GL": (1000.0, 0.0), "H29": (0.001, 0.0)},
    {"HTZ": (1.0, 0.0), "KHZ": (1000.0, 0.0), "MHZ": (1e6, 0.0)},
    {"MTK": (1.0, 0.0), "KMK": (1e6, 0.0), "HAR": (1e4, 0.0), "CMK": (1e-4, 0.0)},
    {"D46": (1.0, 0.0), "KVA": (1000.0, 0.0), "MVA": (1e6, 0.0)},
    {"D44": (1.0, 0.0), "KVR": (1000.0, 0.0)},
)


def _dimension(code: str) -> Mapping[str, tuple[float, float]] | None:
    for dimension in _DIMENSIONS:
        if code in dimension:
            return dimension
    return None


def convert(value: float, from_code: str, to_code: str) -> float:
    """Convert ``value`` between two Rec 20 codes (or known symbols) of the same dimension.

    Raises ``UnitError`` naming both units when the pair is not a known linear conversion.
    """
    source, target = code_for(from_code), code_for(to_code)
    if source == target:
        return float(value)
    dimension = _dimension(source)
    if dimension is None or target not in dimension:
        raise UnitError(f"no conversion from {from_code!r} ({source}) to {to_code!r} ({target})")
    factor_in, offset_in = dimension[source]
    factor_out, offset_out = dimension[target]
    base = float(value) * factor_in + offset_in
    # 12 significant digits: drop the binary noise of offset arithmetic (300 K -> 26.85 °C).
    return float(f"{(base - offset_out) / factor_out:.12g}")
