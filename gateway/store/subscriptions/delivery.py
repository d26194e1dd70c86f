"""Sending one notification: HTTP POST (§6.3.13 binding) or MQTT publish (CIM 009 V1.9.1 §5.8.6, Annex MQTT).

An MQTT endpoint is ``mqtt[s]://[user[:password]@]host[:port]/topic``; the message is the JSON
object ``{"metadata": {headers}, "body": notification}``, published with the QoS and protocol
version the subscription's ``notifierInfo`` names (MQTT-QoS 0/1/2, MQTT-Version mqtt3.1.1 or
mqtt5.0; defaults 0 and 3.1.1). Both senders answer (delivered, reason) and never raise.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aiohttp

MQTT_DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}


def redacted(url: str) -> str:
    """The endpoint URI without its user information, for logs (the password must never be logged)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


async def post(
    session: aiohttp.ClientSession | None, url: str, payload: bytes, headers: Mapping[str, str]
) -> tuple[bool, str]:
    """POST one notification; a 2xx answer is a success."""
    if session is None:
        return False, "the notifier is stopped"
    try:
        async with session.post(url, data=payload, headers=dict(headers)) as response:
            await response.read()
            if 200 <= response.status < 300:
                return True, ""
            return False, f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return False, type(exc).__name__


def mqtt_message(body: Mapping[str, Any], headers: Mapping[str, str]) -> bytes:
    """The MQTT payload of a notification: metadata (the would-be HTTP headers) and body."""
    return json.dumps({"metadata": dict(headers), "body": body}, ensure_ascii=False, separators=(",", ":")).encode()


async def publish(
    url: str, payload: bytes, notifier_info: Mapping[str, str], wait: float
) -> tuple[bool, str]:
    """Publish one notification to an MQTT broker (one connection per notification)."""
    try:
        import aiomqtt
    except ImportError:  # pragma: no cover - parsing refuses mqtt endpoints without the extra
        return False, "the mqtt extra (aiomqtt) is not installed"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or MQTT_DEFAULT_PORTS.get(scheme, 1883)
    except ValueError:
        return False, "invalid port"
    topic = unquote(parts.path).lstrip("/")
    version = (
        aiomqtt.ProtocolVersion.V5
        if notifier_info.get("MQTT-Version") == "mqtt5.0"
        else aiomqtt.ProtocolVersion.V311
    )
    qos = int(notifier_info.get("MQTT-QoS", "0"))
    try:
        async with aiomqtt.Client(
            parts.hostname or "localhost",
            port,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            protocol=version,
            tls_context=ssl.create_default_context() if scheme == "mqtts" else None,
            timeout=wait,
        ) as client:
            await client.publish(topic, payload=payload, qos=qos, timeout=wait)
        return True, ""
    except (aiomqtt.MqttError, TimeoutError, OSError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
