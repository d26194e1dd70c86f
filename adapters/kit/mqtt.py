"""Shared MQTT transport (aiomqtt ≥ 2): TLS, credentials from env or file, persistent QoS 1 sessions.

Delivery guarantee: messages are acknowledged *manually*. The PUBACK for a QoS 1 message goes
out only after the handler (which awaits the runtime's ``emit``) has returned; if the handler
fails, or the connection drops first, the message stays unacknowledged in the broker's session
and is delivered again after we reconnect (``clean_start`` false, session expiry > 0, a stable
client id). aiomqtt 2.x has no manual-ack switch of its own, so the underlying paho-mqtt client's
``manual_ack_set``/``ack`` are used (paho-mqtt ≥ 2.0). The broker bounds how many unacknowledged
messages are in flight (MQTT 5 Receive Maximum), which bounds our memory under a burst.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from adapters.kit.mqtt_properties import share_property_tables
from gateway.errors import AuthFailed, ConfigInvalid, Unavailable
from gateway.secrets import read_secret

share_property_tables()

Handler = Callable[[aiomqtt.Message], Awaitable[None]]
"""Called once per received message; returns once the message is durably accepted."""

MQTT_CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["host"],
    "properties": {
        "host": {"type": "string", "minLength": 1, "description": "broker host name"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                 "description": "broker port (default 1883, or 8883 with TLS)"},
        "username": {"type": "string"},
        "password": {"type": "string", "writeOnly": True,
                     "description": "prefer password_file or password_env; never logged"},
        "password_file": {"type": "string", "description": "file holding the password"},
        "password_env": {"type": "string", "description": "environment variable holding the password"},
        "client_id": {"type": "string", "minLength": 1, "maxLength": 128,
                      "description": "stable client id: the broker keeps our session (and queued messages) "
                                     "under it while we are away"},
        "topics": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "shared_group": {"type": "string", "pattern": "^[^/+#$]+$",
                         "description": "MQTT 5 shared subscription group ($share/<group>/<topic>): several "
                                        "jonction instances split the load"},
        "qos": {"enum": [0, 1, 2], "default": 1},
        "protocol": {"enum": ["5", "3.1.1"], "default": "5"},
        "session_expiry": {"type": "integer", "minimum": 0, "default": 86400,
                           "description": "seconds the broker keeps our session while disconnected (MQTT 5)"},
        "keepalive": {"type": "integer", "minimum": 5, "maximum": 3600, "default": 30},
        "receive_maximum": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 100,
                            "description": "unacknowledged messages the broker may send us at once"},
        "max_message_bytes": {"type": "integer", "minimum": 1024, "default": 262144},
        "tls": {
            "type": "object",
            "additionalProperties": False,
            "description": "TLS; present (even empty) means TLS on, verified against the system CAs "
                           "or ca_file",
            "properties": {
                "ca_file": {"type": "string"},
                "cert_file": {"type": "string", "description": "client certificate (PEM)"},
                "key_file": {"type": "string", "description": "client private key (PEM)"},
                "key_password_file": {"type": "string"},
                "insecure_skip_hostname_check": {"type": "boolean", "default": False},
            },
        },
        "backoff": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "initial": {"type": "number", "minimum": 0.01, "default": 1},
                "max": {"type": "number", "minimum": 0.1, "default": 60},
            },
        },
    },
}
"""JSON Schema of the ``mqtt`` member of an adapter config."""




@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Validated MQTT connection settings (the password is read when connecting, not before)."""

    host: str
    port: int
    client_id: str
    topics: tuple[str, ...]
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    shared_group: str | None = None
    qos: int = 1
    protocol: str = "5"
    session_expiry: int = 86400
    keepalive: int = 30
    receive_maximum: int = 100
    max_message_bytes: int = 262144
    tls: Mapping[str, Any] | None = None
    backoff_initial: float = 1.0
    backoff_max: float = 60.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, client_id: str,
                    default_topics: tuple[str, ...] = ()) -> MqttSettings:
        """Settings from the ``mqtt`` member of a config (already schema-valid)."""
        topics = tuple(config.get("topics") or default_topics)
        if not topics:
            raise ConfigInvalid("mqtt: no topics to subscribe to", ["/mqtt/topics: required for this adapter"])
        tls = config.get("tls")
        backoff = config.get("backoff") or {}
        return cls(
            host=config["host"],
            port=int(config.get("port", 8883 if tls is not None else 1883)),
            client_id=str(config.get("client_id", client_id)),
            topics=topics,
            username=config.get("username"),
            password=config.get("password"),
            password_file=config.get("password_file"),
            password_env=config.get("password_env"),
            shared_group=config.get("shared_group"),
            qos=int(config.get("qos", 1)),
            protocol=str(config.get("protocol", "5")),
            session_expiry=int(config.get("session_expiry", 86400)),
            keepalive=int(config.get("keepalive", 30)),
            receive_maximum=int(config.get("receive_maximum", 100)),
            max_message_bytes=int(config.get("max_message_bytes", 262144)),
            tls=tls,
            backoff_initial=float(backoff.get("initial", 1.0)),
            backoff_max=float(backoff.get("max", 60.0)),
        )

    def subscriptions(self) -> list[str]:
        """Topic filters to subscribe to, under ``$share/<group>/`` when a group is set."""
        if self.shared_group:
            return [f"$share/{self.shared_group}/{t}" for t in self.topics]
        return list(self.topics)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (custom CA, client certificate), or None without TLS."""
        if self.tls is None:
            return None
        try:
            context = ssl.create_default_context(cafile=self.tls.get("ca_file"))
            if self.tls.get("cert_file"):
                key_password = read_secret(self.tls, "key_password", where="mqtt.tls.")
                context.load_cert_chain(self.tls["cert_file"], self.tls.get("key_file"), key_password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigInvalid(f"mqtt tls: {exc}") from exc
        if self.tls.get("insecure_skip_hostname_check"):
            context.check_hostname = False
        return context


class MqttSubscriber:
    """Subscribes with a persistent session and hands each message to a handler, acking after it."""

    def __init__(self, settings: MqttSettings, *, log: logging.Logger, name: str) -> None:
        self.settings = settings
        self.log = log
        self.name = name
        self._task: asyncio.Future[None] | None = None
        self._stopping = False
        self._unavailable = False
        self.connected = asyncio.Event()
        """Set while subscribed (tests and health checks wait on it)."""
        self._current: aiomqtt.Client | None = None
        self._window: asyncio.Queue[Any] | None = None

    def in_flight(self) -> int:
        """Messages received and not yet acknowledged (bounded by about ``receive_maximum``)."""
        client = self._current
        buffered = len(client.messages) if client is not None else 0
        return buffered + (self._window.qsize() if self._window is not None else 0)

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        password = read_secret({"password": s.password, "password_file": s.password_file,
                                "password_env": s.password_env}, "password", where=f"{self.name}: mqtt.")
        v5 = s.protocol == "5"
        properties = None
        if v5:
            # paho-mqtt's Properties constructor carries no annotations (an untyped third-party API).
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = s.session_expiry
            properties.ReceiveMaximum = s.receive_maximum
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=password,
            identifier=s.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            clean_start=False,
            keepalive=s.keepalive,
            properties=properties,
            tls_context=self.settings.ssl_context(),
            tls_insecure=bool(s.tls and s.tls.get("insecure_skip_hostname_check")) or None,
            max_inflight_messages=None,
            timeout=10,
            logger=self.log.getChild("paho"),
        )
        # Acknowledge only after the handler returned (see the module docstring).
        client._client.manual_ack_set(True)
        return client

    async def check(self) -> None:
        """Connect once and disconnect: AuthFailed for refused credentials, Unavailable otherwise."""
        try:
            async with self._client():
                pass
        except aiomqtt.MqttCodeError as exc:
            if _is_auth_error(exc):
                raise AuthFailed(f"{self.name}: MQTT broker refused the credentials ({exc})") from exc
            raise Unavailable(f"{self.name}: MQTT broker {self.settings.host}:{self.settings.port}: {exc}") from exc
        except aiomqtt.MqttError as exc:
            raise Unavailable(f"{self.name}: MQTT broker {self.settings.host}:{self.settings.port}: {exc}") from exc

    async def run(self, handle: Handler) -> None:
        """Receive until :meth:`stop`, reconnecting with exponential backoff."""
        self._stopping = False
        self._task = asyncio.ensure_future(self._loop(handle))
        try:
            await self._task
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            self.connected.clear()

    async def stop(self) -> None:
        """Stop receiving; idempotent. Messages not yet acknowledged stay in the broker's session."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # stopping: nothing to report
                pass

    async def _loop(self, handle: Handler) -> None:
        delay = self.settings.backoff_initial
        s = self.settings
        while not self._stopping:
            client: aiomqtt.Client | None = None
            try:
                client = self._client()
                self._current = client
                async with client:
                    for topic in s.subscriptions():
                        await client.subscribe(topic, qos=s.qos)
                    self.connected.set()
                    delay = s.backoff_initial
                    if self._unavailable:
                        self._unavailable = False
                        self.log.info("%s: MQTT broker %s:%s recovered", self.name, s.host, s.port)
                    else:
                        self.log.info("%s: subscribed to %s on %s:%s", self.name, ", ".join(s.subscriptions()),
                                      s.host, s.port)
                    await self._consume(client, handle)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                if isinstance(exc, aiomqtt.MqttCodeError) and _is_auth_error(exc):
                    self.log.error("%s: MQTT broker refused the credentials: %s", self.name, exc)
                elif not self._unavailable:
                    self._unavailable = True
                    self.log.warning("%s: MQTT broker %s:%s unavailable (%s); retrying with backoff",
                                     self.name, s.host, s.port, exc)
            except ConfigInvalid:
                raise
            except Exception as exc:  # handler failed: reconnect, the broker redelivers
                self.connected.clear()
                self.log.error("%s: message not accepted (%s: %s); reconnecting so the broker redelivers it",
                               self.name, type(exc).__name__, exc)
            finally:
                _consume_disconnect(client)
            if self._stopping:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, s.backoff_max)


    async def _consume(self, client: aiomqtt.Client, handle: Handler) -> None:
        """Handle messages concurrently (the pipeline commits them in groups), acknowledge in order.

        Up to ``receive_maximum`` messages are in the handler at once; a PUBACK leaves only when
        its own handler and every earlier one have returned, in the order the PUBLISHes arrived
        (MQTT 3.1.1 §4.6, MQTT 5 §4.6). The first failure ends the connection, so nothing after
        it is acknowledged and the broker redelivers it.
        """
        window: asyncio.Queue[tuple[aiomqtt.Message, asyncio.Future[None]] | None] = asyncio.Queue(
            maxsize=self.settings.receive_maximum)
        outstanding: set[asyncio.Future[None]] = set()
        self._window = window

        buffered = client._queue
        paho = client._client
        limit = self.settings.receive_maximum

        def burst(first: aiomqtt.Message) -> list[aiomqtt.Message]:
            # Take what the socket already holds (paho reads one packet per readiness event): a
            # burst then reaches the pipeline within one loop turn and is committed as one group.
            batch = [first]
            size = -1
            for _ in range(limit):
                if buffered.qsize() == size or buffered.qsize() >= limit:
                    break
                size = buffered.qsize()
                try:
                    paho.loop_read()
                except Exception:  # a broken socket: aiomqtt's own reader reports the disconnection
                    break
            while len(batch) < limit and not buffered.empty():
                batch.append(buffered.get_nowait())
            return batch

        async def receive() -> None:
            async for first in client.messages:
                for message in burst(first):
                    if client._disconnected.done():
                        # The link is gone: its unacknowledged messages will be redelivered, so
                        # handling what is still buffered would only produce duplicates.
                        raise aiomqtt.MqttError("connection lost")
                    future = asyncio.ensure_future(handle(message))
                    outstanding.add(future)
                    future.add_done_callback(outstanding.discard)
                    await window.put((message, future))

        async def acknowledge() -> None:
            while True:
                item = await window.get()
                if item is None:
                    return
                message, future = item
                await future
                if message.qos > 0 and not client._disconnected.done():
                    client._client.ack(message.mid, message.qos)

        receiver = asyncio.ensure_future(receive())
        acker = asyncio.ensure_future(acknowledge())
        try:
            done, _ = await asyncio.wait({receiver, acker}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (receiver, acker):
                task.cancel()
            await asyncio.gather(receiver, acker, return_exceptions=True)
            if outstanding:
                # Let accepted work finish (never acknowledged now): cancelling mid-commit helps nobody.
                await asyncio.wait(set(outstanding), timeout=30)
                for future in outstanding:
                    if future.done() and not future.cancelled():
                        future.exception()


def _consume_disconnect(client: aiomqtt.Client | None) -> None:
    """Mark the client's disconnection reason as seen (we logged it), so asyncio does not report it."""
    # aiomqtt keeps this future private and has no public way to mark it seen; read it only if present.
    future = getattr(client, "_disconnected", None)
    if isinstance(future, asyncio.Future) and future.done() and not future.cancelled():
        future.exception()


def _is_auth_error(exc: aiomqtt.MqttCodeError) -> bool:
    rc = exc.rc
    value = rc.value if isinstance(rc, ReasonCode) else rc
    # MQTT 3.1.1 CONNACK 4/5, MQTT 5 reason codes 0x86 (bad user name or password), 0x87 (not authorized)
    return value in (4, 5, 0x86, 0x87)


def topic_text(message: aiomqtt.Message) -> str:
    """The topic of a received message as text."""
    return str(message.topic.value)


def payload_of(message: aiomqtt.Message) -> bytes:
    """The payload of a received message as bytes."""
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()
