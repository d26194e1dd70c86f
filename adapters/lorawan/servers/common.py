"""Helpers the network-server parsers share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters.lorawan.normalize import number
from adapters.lorawan.uplink import Radio
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
    sf = number(spreading_factor, f"{pointer}/spreadingFactor")
    freq = number(frequency, f"{pointer}/frequency")
    dr = number(data_rate, f"{pointer}/dr")
    bw = number(bandwidth, f"{pointer}/bandwidth")
    return Radio(
        rssi=rssi,
        snr=snr,
        gateways=gateways,
        spreading_factor=int(sf) if sf is not None else None,
        frequency=int(freq) if freq is not None else None,
        data_rate=int(dr) if dr is not None else None,
        bandwidth=int(bw) if bw is not None else None,
    )


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
