"""Actility ThingPark: LRC-AS tunnel HTTP pushes (``DevEUI_uplink``...) with token security, or MQTT.

ThingPark signs each push with a ``Token`` query parameter: the lower-case hex SHA-256 of
selected body fields, the query string that precedes ``&Token=``, and the LRC-AS key (lower-case
hex). It is a keyed hash, not an HMAC; we recompute it, compare in constant time, and check that
the ``Time`` query parameter is within ``max_clock_skew`` seconds of our clock to refuse replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from adapters.kit.lorawan.adapter import NetworkServerAdapter, load_json
from adapters.kit.lorawan.servers import thingpark
from adapters.kit.push import Authenticate, PushRequest
from gateway.contract import Manifest, load_config_schema
from gateway.errors import TranslationError
from gateway.secrets import read_secret

# Body fields concatenated before the query string, per message kind (ThingPark tunnel security).
_SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "DevEUI_uplink": ("CustomerID", "DevEUI", "FPort", "FCntUp", "payload_hex"),
    "DevEUI_downlink_Sent": ("CustomerID", "DevEUI", "FPort", "FCntDn"),
    "DevEUI_location": ("CustomerID", "DevEUI"),
}


def _field(msg: Mapping[str, Any], name: str, member: str) -> str:
    value = msg.get(name, "")
    text = value if isinstance(value, str) else json.dumps(value)
    if member == "DevEUI_location" and name == "DevEUI":
        return text.lower()
    return text


def expected_token(body: Mapping[str, Any], query_before_token: str, as_key: str) -> str:
    """The Token ThingPark computes for a message body and query string (lower-case hex)."""
    member, msg = thingpark.root(body)
    fields = _SIGNED_FIELDS.get(member)
    if fields is None:
        raise TranslationError(f"no token scheme known for {member}")
    text = "".join(_field(msg, name, member) for name in fields) + query_before_token + as_key.lower()
    return hashlib.sha256(text.encode()).hexdigest()


def query_before_token(raw_query: str) -> str | None:
    """The raw query string up to ``&Token=`` (None when there is no Token parameter)."""
    marker = raw_query.find("&Token=")
    if marker < 0:
        return "" if raw_query.startswith("Token=") else None
    return raw_query[:marker]


class ThingparkAdapter(NetworkServerAdapter):
    """Reads ThingPark ``DevEUI_uplink`` messages (strings for numbers, local offsets, hex payloads)."""

    manifest: ClassVar[Manifest] = Manifest.load(__package__)
    config_schema: ClassVar[Mapping[str, Any]] = load_config_schema(__package__)
    parser = staticmethod(thingpark.parse)
    transports = ("http", "mqtt")
    default_http_path = "/thingpark"

    def authenticator(self) -> Authenticate | None:
        """LRC-AS token security when an AS key is configured, else the shared header token."""
        http = self.config.get("http") or {}
        key = read_secret(http, "as_key", where=f"{self.source}: http.")
        if not key:
            return super().authenticator()
        skew = float(http.get("max_clock_skew", 120))
        as_id = http.get("as_id")

        def check(request: PushRequest, body: bytes) -> str | None:
            raw_query = request.rel_url.raw_query_string
            signed = query_before_token(raw_query)
            token = request.query.get("Token")
            if signed is None or not token:
                return "missing Token query parameter (ThingPark tunnel security)"
            if as_id is not None and request.query.get("AS_ID") != as_id:
                return f"AS_ID {request.query.get('AS_ID')!r} is not the configured application server"
            moment = request.query.get("Time", "").replace(" ", "+")
            try:
                sent = datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
            except ValueError:
                return "missing or unreadable Time query parameter"
            if abs(time.time() - sent) > skew:
                return f"Time {moment} is more than {skew:g} s from our clock (replayed or stale)"
            try:
                expected = expected_token(load_json(body), signed, key)
            except TranslationError as exc:
                return f"cannot verify the token: {exc.reason}"
            if not hmac.compare_digest(expected, token.lower()):
                return "Token does not match (wrong LRC-AS key, or the message was altered)"
            return None

        return check
