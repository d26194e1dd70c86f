"""Refusal of cross-site and DNS-rebinding requests: ``Host``, ``Origin`` and content-type checks.

A browser on the operator's machine can reach a server bound to loopback. Two things then let a
hostile web page act on it: a cross-site form or ``fetch`` (the browser sends ``Origin``, and may
send ``Content-Type: text/plain`` to avoid a CORS preflight), and DNS rebinding (the page's own
name resolves to 127.0.0.1, so the browser sends ``Host: evil.example``). Bearer tokens are not
sent by browsers on their own, but without a token a loopback server is open: hence these checks,
with or without a token. Clients that are not browsers (curl, SDKs, brokers) send no ``Origin``
and a ``Host`` naming the address they dialled, and pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost", "ip6-loopback"})
"""Host names that always name this machine."""

WILDCARDS: Final = frozenset({"", "0.0.0.0", "::"})
"""Bind addresses that listen everywhere (the public name is then unknown)."""

SIMPLE_CONTENT_TYPES: Final = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
"""Content types a browser sends cross-site without a CORS preflight."""

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def host_name(value: str) -> str | None:
    """The host part of a ``Host`` header (lowercase, no port, IPv6 brackets removed); None if malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/\\@ \t?#"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1:] and not value[end + 1:].startswith(":")):
            return None
        name, port = value[1:end], value[end + 2:]
    elif value.count(":") > 1:
        return None  # an IPv6 address must be bracketed in a Host header
    else:
        name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def _is_loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostPolicy:
    """Which ``Host`` names a server answers to: loopback names, its bind address, and configured names."""

    bound: str = "127.0.0.1"
    """The address the server is bound to."""
    allowed: frozenset[str] = frozenset()
    """Extra names (its public host names); ``*`` accepts any name."""

    @classmethod
    def of(cls, bound: str, allowed: Iterable[str] = ()) -> HostPolicy:
        """A policy for a server bound to ``bound`` also answering to ``allowed`` (names or ``host:port``)."""
        names = set()
        for item in allowed:
            item = item.strip().lower()
            if item == "*":
                names.add("*")
            elif item:
                names.add(host_name(item) or item)
        return cls(bound.strip().lower().strip("[]"), frozenset(names))

    @property
    def open(self) -> bool:
        """True when any name is accepted: ``*`` configured, or bound everywhere with no name configured."""
        return "*" in self.allowed or (self.bound in WILDCARDS and not self.allowed)

    def accepts(self, host_header: str | None) -> bool:
        """True when ``host_header`` names this server."""
        if self.open:
            return True
        if host_header is None:
            return True  # HTTP/1.0 clients send none; a browser always does
        name = host_name(host_header)
        if name is None:
            return False
        return _is_loopback(name) or name == self.bound or name in self.allowed


def same_origin(origin: str, host_header: str | None, scheme: str) -> bool:  # noqa: ARG001  # see below
    """True when the ``Origin`` header names the very server (host and port) the request was sent to.

    The scheme is not compared: behind a TLS-terminating proxy the request arrives over http while
    the page's origin is https, and no other site can serve pages from the same host and port.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return False
    if host_header is None:
        return False
    host = host_header.strip().lower()
    name = host_name(host)
    if name is None:
        return False
    _, _, host_port = host.rpartition("]") if host.startswith("[") else ("", "", host)
    given = host_port.rpartition(":")[2] if ":" in host_port else ""
    origin_port = port if port is not None else _DEFAULT_PORTS[parts.scheme]
    request_port = int(given) if given.isdigit() else _DEFAULT_PORTS[parts.scheme]
    return parts.hostname.rstrip(".") == name and origin_port == request_port


def refusal(
    policy: HostPolicy,
    *,
    host: str | None,
    origin: str | None,
    scheme: str,
    fetch_site: str | None = None,
) -> str | None:
    """Why a request must be refused as cross-site, or None when it may proceed."""
    if not policy.accepts(host):
        return "the Host header does not name this server (configure its public name in the allowed hosts)"
    if origin is not None and not same_origin(origin, host, scheme):
        return "cross-origin requests are refused (the Origin header names another site)"
    if fetch_site is not None and fetch_site.strip().lower() == "cross-site":
        return "cross-site requests are refused (Sec-Fetch-Site: cross-site)"
    return None


def json_content_type(value: str | None) -> bool:
    """True for ``application/json`` and the ``+json`` types (ld+json, merge-patch+json, problem+json)."""
    if value is None:
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def simple_content_type(value: str | None) -> bool:
    """True for the content types browsers send cross-site without asking (forms, text/plain)."""
    if value is None:
        return False
    return value.split(";", 1)[0].strip().lower() in SIMPLE_CONTENT_TYPES
