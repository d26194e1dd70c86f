"""Helpers the network-server parsers share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters.kit.lorawan.normalize import number
from adapters.kit.lorawan.uplink import Radio
from adapters.kit.payload import finite
from gateway.errors import TranslationError


def mapping(value: Any, pointer: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, ``{}`` if absent, TranslationError otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TranslationError("expected a JSON object", pointer)
    return value


def sequence(value: Any, pointer: str) -> Sequence[Any]:
    """``value`` if it is a JSON array, ``()`` if absent, TranslationError otherwise."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TranslationError("expected a JSON array", pointer)
    return value


def text(value: Any, pointer: str) -> str | None:
    """A name or id the server sends as a string (a number is read as its digits); None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise TranslationError(f"expected a string, got {type(value).__name__}", pointer)


def best_reception(
    receptions: Sequence[tuple[str, float | None, float | None]],
) -> tuple[float | None, float | None, tuple[str, ...]]:
    """(best RSSI, SNR at that gateway, every gateway id) from (gateway, rssi, snr) triples."""
    best_rssi: float | None = None
    best_snr: float | None = None
    for _gateway, rssi, snr in receptions:
        if rssi is not None and (best_rssi is None or rssi > best_rssi):
            best_rssi, best_snr = rssi, snr
        elif best_rssi is None and best_snr is None and snr is not None:
            best_snr = snr
    gateways = tuple(g for g, _r, _s in receptions if g)
    return best_rssi, best_snr, gateways


def radio(
    receptions: Sequence[tuple[str, float | None, float | None]],
    *,
    spreading_factor: Any = None,
    frequency: Any = None,
    data_rate: Any = None,
    bandwidth: Any = None,
    pointer: str = "",
) -> Radio:
    """A :class:`Radio` from receptions and transmission settings (numbers may be strings)."""
    rssi, snr, gateways = best_reception(receptions)
    return Radio(
        rssi=rssi,
        snr=snr,
        gateways=gateways,
        spreading_factor=_whole(spreading_factor, f"{pointer}/spreadingFactor"),
        frequency=_whole(frequency, f"{pointer}/frequency"),
        data_rate=_whole(data_rate, f"{pointer}/dr"),
        bandwidth=_whole(bandwidth, f"{pointer}/bandwidth"),
    )


def _whole(value: Any, pointer: str) -> int | None:
    """A radio setting as an integer (truncated, as servers send 868100000.0), None if absent."""
    parsed = number(value, pointer)
    return None if parsed is None else finite(int(parsed), pointer)


def string_tags(value: Any) -> dict[str, str]:
    """Device tags as a str→str mapping (non-string values are dropped)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def names(*values: Any) -> tuple[str, ...]:
    """The non-empty values as strings, in order, without repeats (application id and name)."""
    out: list[str] = []
    for value in values:
        if value is not None and value != "" and str(value) not in out:
            out.append(str(value))
    return tuple(out)
