"""OPC UA client transport (asyncua): connect, secure, resolve, subscribe, reconnect, dedupe.

One ``ServerLink`` per configured server. Each link loops: connect (with the configured
security policy and identity), resolve node ids and browse paths, read engineering units,
create one subscription with a monitored item per node (sampling interval and deadband
filter), then forward every data change to ``emit``. On any loss it tears down, logs
"unavailable" once, backs off, and starts over; the fresh monitored items deliver current
values first (and, if the server keeps history, the values missed meanwhile are read back),
while a per-node memory of source timestamps drops what was already emitted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeEvent, OpcEvent, OverflowPolicy, StatusChangeEvent
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from cryptography import x509

from gateway.contract import Emit, register_secret
from gateway.errors import AuthFailed, ConfigInvalid, Unavailable
from gateway.model import RawMessage, epoch_time, format_time
from gateway.secrets import read_secret

from .translate import UNECE_NAMESPACE, node_ref

_AUTH_CODES = frozenset(
    {
        StatusCodes.BadUserAccessDenied,
        StatusCodes.BadIdentityTokenRejected,
        StatusCodes.BadIdentityTokenInvalid,
        StatusCodes.BadCertificateUntrusted,
        StatusCodes.BadCertificateInvalid,
        StatusCodes.BadSecurityChecksFailed,
    }
)
_TRANSIENT = (OSError, asyncio.TimeoutError, ConnectionError, UaError, RuntimeError)
_SEEN_PER_NODE = 64
_ITEMS_PER_CALL = 500


def encode_value(value: Any) -> Any:
    """An OPC UA variant value as JSON (exact integers, ISO times, base64 bytes, NaN as text)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, datetime):
        return format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return value.to_string()
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if hasattr(value, "__dataclass_fields__"):
        return {name: encode_value(getattr(value, name)) for name in value.__dataclass_fields__}
    return str(value)


def _ts(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return format_time(moment if moment.tzinfo else moment.replace(tzinfo=UTC))




class _Redact(logging.Filter):
    """Masks secrets in asyncua's own records: at DEBUG it prints whole requests, passwords included."""

    secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message with every known secret masked."""
        if not self.secrets:
            return True
        text = record.getMessage()
        if any(secret in text for secret in self.secrets):
            for secret in self.secrets:
                text = text.replace(secret, "***")
            record.msg, record.args = text, ()
        return True


_REDACT = _Redact()


def protect_secret(secret: str) -> None:
    """Never let ``secret`` reach a log record, ours or asyncua's (every asyncua logger is filtered)."""
    if len(secret) < 4:
        return
    _Redact.secrets.add(secret)
    register_secret(secret)
    names = [n for n in logging.root.manager.loggerDict if n == "asyncua" or n.startswith("asyncua.")]
    for name in names:
        logger = logging.getLogger(name)
        if _REDACT not in logger.filters:
            logger.addFilter(_REDACT)


def certificate_uri(path: str) -> str | None:
    """The application URI (SubjectAltName URI) of a PEM or DER certificate file."""
    data = Path(path).read_bytes()
    cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


@dataclass(slots=True)
class _Item:
    ref: str
    node: Node
    node_id: str
    sampling_ms: float
    deadband: Mapping[str, Any] | None
    eu: dict[str, Any] | None = None
    eu_range: tuple[float, float] | None = None
    last_value: float | None = None
    last_status: int | None = None

    def passes_client_deadband(self, value: Any, status: int) -> bool:
        """The OPC UA deadband rule, applied by the client (for servers that ignore it)."""
        spec = self.deadband
        if not spec or not spec.get("client_side"):
            return True
        if isinstance(value, bool) or not isinstance(value, int | float):
            return True
        previous, previous_status = self.last_value, self.last_status
        if previous is None or previous_status != status:
            return True
        threshold = float(spec["value"])
        if spec["type"] == "percent":
            if self.eu_range is None:
                return True  # without an EURange a percent deadband cannot apply (Part 8 §6.2)
            threshold = threshold / 100.0 * (self.eu_range[1] - self.eu_range[0])
        return abs(float(value) - previous) > threshold


@dataclass(slots=True)
class _Seen:
    """Recent source timestamps per node: the memory that turns redeliveries into no-ops."""

    by_node: dict[str, OrderedDict[str, None]] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)

    def has(self, node: str, stamp: str) -> bool:
        """True if ``stamp`` was already emitted for ``node``."""
        return stamp in self.by_node.get(node, ())

    def add(self, node: str, stamp: str) -> None:
        """Record ``stamp`` for ``node`` once its message is durably accepted."""
        recent = self.by_node.setdefault(node, OrderedDict())
        recent[stamp] = None
        while len(recent) > _SEEN_PER_NODE:
            recent.popitem(last=False)
        if stamp > self.last.get(node, ""):
            self.last[node] = stamp


class ServerLink:
    """One OPC UA server: its client session, subscription and reconnect loop."""

    def __init__(
        self, cfg: Mapping[str, Any], *, source: str, log: logging.Logger, state_dir: str | None = None
    ) -> None:
        self.cfg = cfg
        self.name: str = cfg["name"]
        self.endpoint: str = cfg["endpoint"]
        self.source = source
        self.tenant: str = cfg.get("tenant", "")
        self.log = log
        self.timeout: float = float(cfg.get("timeout_s", 4.0))
        self.watchdog: float = float(cfg.get("watchdog_s", 5.0))
        self.publishing_ms: float = float(cfg.get("publishing_interval_ms", 500))
        self.sampling_ms: float = float(cfg.get("sampling_interval_ms", 250))
        self.deadband: Mapping[str, Any] | None = cfg.get("deadband")
        self.queue_size: int = int(cfg.get("queue_size", 10))
        self.history: bool = bool(cfg.get("history_on_reconnect", False))
        backoff = cfg.get("reconnect", {})
        self.backoff_min: float = float(backoff.get("min_s", 1.0))
        self.backoff_max: float = float(backoff.get("max_s", 30.0))
        self.seen = _Seen()
        self.state_path = Path(state_dir) / f"opcua-{cfg['name']}.json" if state_dir else None
        self._saved_at = 0.0
        self._lost: WeakKeyDictionary[Client, asyncio.Event] = WeakKeyDictionary()
        """Per client session, set when asyncua reports the connection lost."""
        self._load_state()
        self.down = False
        self.connected = asyncio.Event()
        """Set while a subscription is live (tests and the admin API read it)."""
        self.connections = 0
        self._stopping = asyncio.Event()
        self._client: Client | None = None

    # ------------------------------------------------------------------ state

    def _load_state(self) -> None:
        """Last source timestamp per node from a previous run: no re-emission, history resumes there."""
        if self.state_path is None or not self.state_path.exists():
            return
        try:
            last = json.loads(self.state_path.read_text(encoding="utf-8"))["last"]
        except (OSError, ValueError, KeyError, TypeError):
            self.log.warning("opcua state unreadable; starting afresh", extra={"path": str(self.state_path)})
            return
        for node, stamp in last.items():
            if isinstance(stamp, str):
                self.seen.add(node, stamp)

    def save_state(self, *, force: bool = False) -> None:
        """Write the last timestamps (atomically), at most every few seconds unless forced."""
        if self.state_path is None or (not force and time.monotonic() - self._saved_at < 5.0):
            return
        self._saved_at = time.monotonic()
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"last": self.seen.last}, sort_keys=True), encoding="utf-8")
        tmp.replace(self.state_path)

    # ------------------------------------------------------------------ connection

    async def _client_for(self) -> Client:
        # The watchdog reads the server state every watchdog_s (with that timeout): a closed
        # socket is noticed at once anyway, the probe is for silent cuts, and a short probe
        # would turn a busy machine into spurious reconnections.
        client = Client(self.endpoint, timeout=self.timeout, watchdog_intervall=self.watchdog)
        client.name = "jonction"
        client.description = "jonction OPC UA adapter"
        client.session_timeout = 600_000  # what most servers grant; asking more only logs a warning
        security = self.cfg.get("security") or {}
        policy = security.get("policy", "None")
        if policy != "None":
            mode = getattr(ua.MessageSecurityMode, security.get("mode", "SignAndEncrypt"))
            cert = security["certificate"]
            client.application_uri = security.get("application_uri") or certificate_uri(cert) or (
                client.application_uri
            )
            await client.set_security(
                getattr(security_policies, f"SecurityPolicy{policy}"),
                certificate=cert,
                private_key=security["private_key_file"],
                private_key_password=self._key_password(security),
                server_certificate=security.get("server_certificate"),
                mode=mode,
            )
        username = self.cfg.get("username")
        if username:
            client.set_user(username)
            password = read_secret(self.cfg, "password")
            if password is not None:
                protect_secret(password)
                client.set_password(password)
        return client

    @staticmethod
    def _key_password(security: Mapping[str, Any]) -> str | None:
        secret = read_secret(security, "private_key_password")
        if secret:
            protect_secret(secret)
        return secret

    async def _connect(self) -> Client:
        client = await self._client_for()
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:  # noqa: ARG001  # asyncua callback signature
            """asyncua's watchdog saw the connection die: the session loop reconnects."""
            lost.set()

        client.connection_lost_callback = on_lost
        await asyncio.wait_for(client.connect(auto_reconnect=False), self.timeout * 2)
        self._lost[client] = lost
        return client

    async def _close(self, client: Client | None) -> None:
        if client is None:
            return
        # Closing a session that may already be dead: whatever asyncua raises, there is nothing to do.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), self.timeout)

    # ------------------------------------------------------------------ resolution

    async def _namespace_index(self, client: Client, uri: str) -> int:
        try:
            return await client.get_namespace_index(uri)
        except ValueError as exc:
            raise ConfigInvalid(f"server {self.name}: namespace {uri!r} is not in its namespace array") from exc

    async def _resolve_node_id(self, client: Client, text: str) -> ua.NodeId:
        if text.startswith("nsu="):
            uri, _, rest = text[4:].partition(";")
            idx = await self._namespace_index(client, uri)
            text = f"ns={idx};{rest}"
        return ua.NodeId.from_string(text)

    async def _resolve_path(self, client: Client, path: str) -> Node:
        default_ns = self.cfg.get("namespace")
        default_idx = await self._namespace_index(client, default_ns) if default_ns else None
        node = client.nodes.objects
        for element in (p for p in path.strip("/").split("/") if p):
            if ":" in element and element.split(":", 1)[0].isdigit():
                node = await node.get_child(element)
            elif default_idx is not None:
                node = await node.get_child(f"{default_idx}:{element}")
            else:
                # No namespace given: the first child with that name, whatever its namespace.
                node = await self._child_named(node, element)
        return node

    @staticmethod
    async def _child_named(node: Node, name: str) -> Node:
        for child in await node.get_children():
            if (await child.read_browse_name()).Name == name:
                return child
        raise UaError(f"BadNoMatch: no child named {name!r} below {node.nodeid.to_string()}")

    async def _resolve_ref(self, client: Client, ref: str) -> Node:
        """A node given either as a node id (``i=``, ``ns=``, ``nsu=``, ``s=``) or a browse path."""
        if ref.split("=", 1)[0] in ("i", "ns", "nsu", "s", "g", "b"):
            return client.get_node(await self._resolve_node_id(client, ref))
        return await self._resolve_path(client, ref)

    async def _resolve(self, client: Client) -> list[_Item]:
        # Several nodes at a time: with thousands of nodes, one round trip after the other
        # (id, rank, value, units) would make every reconnection slow. Order is kept.
        limit = asyncio.Semaphore(16)

        async def one(spec: Mapping[str, Any]) -> _Item:
            async with limit:
                return await self._resolve_one(client, spec)

        return list(await asyncio.gather(*(one(spec) for spec in self.cfg.get("nodes", []))))

    async def _resolve_one(self, client: Client, spec: Mapping[str, Any]) -> _Item:
        if spec.get("node"):
            node = client.get_node(await self._resolve_node_id(client, spec["node"]))
        else:
            node = await self._resolve_path(client, spec["browse_path"])
        deadband = spec.get("deadband")
        if deadband is None and self.deadband and await self._is_scalar(node):
            # The server-wide default applies to scalars only: a deadband on an array or a
            # text is either refused or mishandled by servers.
            deadband = self.deadband
        item = _Item(
            ref=node_ref(spec),
            node=node,
            node_id=node.nodeid.to_string(),
            sampling_ms=float(spec.get("sampling_interval_ms", self.sampling_ms)),
            deadband=deadband,
        )
        item.eu = await self._read_eu(node)
        if deadband and deadband.get("type") == "percent":
            item.eu_range = await self._read_range(node)
        return item

    @staticmethod
    async def _is_scalar(node: Node) -> bool:
        rank = await node.read_value_rank()
        value = await node.read_value()
        return int(rank) == -1 and isinstance(value, int | float) and not isinstance(value, bool)

    async def _read_range(self, node: Node) -> tuple[float, float] | None:
        try:
            value = await (await node.get_child("0:EURange")).read_value()
        except (TimeoutError, UaError, OSError):
            return None
        if isinstance(value, ua.Range) and value.High > value.Low:
            return float(value.Low), float(value.High)
        return None

    async def _read_eu(self, node: Node) -> dict[str, Any] | None:
        try:
            prop = await node.get_child("0:EngineeringUnits")
            eu = await prop.read_value()
        except (TimeoutError, UaError, OSError):
            return None
        if not isinstance(eu, ua.EUInformation):
            return None
        return {
            "namespace": eu.NamespaceUri or UNECE_NAMESPACE,
            "unit_id": int(eu.UnitId),
            "display": eu.DisplayName.Text if eu.DisplayName else None,
        }

    # ------------------------------------------------------------------ subscription

    @staticmethod
    def _filter(deadband: Mapping[str, Any] | None) -> ua.DataChangeFilter | None:
        if not deadband:
            return None
        kind = {"absolute": ua.DeadbandType.Absolute, "percent": ua.DeadbandType.Percent}[deadband["type"]]
        return ua.DataChangeFilter(
            Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=kind, DeadbandValue=float(deadband["value"])
        )

    @staticmethod
    def monitored_item_request(item: _Item, handle: int, queue_size: int) -> ua.MonitoredItemCreateRequest:
        """The CreateMonitoredItems request for one node (sampling interval and deadband)."""
        params = ua.MonitoringParameters(
            ClientHandle=handle,
            SamplingInterval=item.sampling_ms,
            QueueSize=queue_size,
            DiscardOldest=True,
        )
        flt = ServerLink._filter(item.deadband)
        if flt is not None:
            params.Filter = flt
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=item.node.nodeid, AttributeId=AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting,
            RequestedParameters=params,
        )

    async def _fill_from_history(self, items: list[_Item], emit: Emit) -> None:
        for item in items:
            last = self.seen.last.get(item.node_id)
            if not last:
                continue
            start = datetime.fromisoformat(last.replace("Z", "+00:00"))
            try:
                values = await item.node.read_raw_history(starttime=start, endtime=datetime.now(UTC))
            except (TimeoutError, UaError, OSError) as exc:
                self.log.info("history not available", extra={"server": self.name, "node": item.node_id,
                                                                "reason": str(exc)})
                continue
            for dv in sorted(values, key=lambda d: d.SourceTimestamp or datetime.min.replace(tzinfo=UTC)):
                await self._forward(item, dv, emit, initial=False, history=True)

    async def _forward(
        self, item: _Item, dv: ua.DataValue, emit: Emit, *, initial: bool, history: bool = False
    ) -> None:
        source_ts = _ts(dv.SourceTimestamp)
        server_ts = _ts(dv.ServerTimestamp)
        received = epoch_time(time.time())
        stamp = source_ts or server_ts or received
        if self.seen.has(item.node_id, stamp):
            return
        variant = dv.Value
        status = dv.StatusCode or ua.StatusCode()
        raw_value = variant.Value if variant is not None else None
        if not history and not item.passes_client_deadband(raw_value, int(status.value)):
            return
        doc: dict[str, Any] = {
            "server": self.name,
            "ref": item.ref,
            "node": item.node_id,
            "value": encode_value(variant.Value if variant is not None else None),
            "datatype": variant.VariantType.name if variant is not None and variant.Value is not None else None,
            "status": {"code": int(status.value), "name": status.name},
            "source_ts": source_ts,
            "server_ts": server_ts,
        }
        if item.eu:
            doc["eu"] = item.eu
        if initial:
            doc["initial"] = True
        if history:
            doc["history"] = True
        payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        await emit(
            RawMessage(
                source=self.source,
                tenant=self.tenant,
                received_at=received,
                payload=payload,
                idempotency_key=f"opcua:{self.name}:{item.node_id}:{stamp}",
                metadata={"server": self.name, "node": item.node_id, "endpoint": self.endpoint},
            )
        )
        self.seen.add(item.node_id, stamp)
        if isinstance(raw_value, int | float) and not isinstance(raw_value, bool):
            item.last_value = float(raw_value)
        item.last_status = int(status.value)
        self.save_state()

    async def _forward_event(self, ref: str, event: Any, emit: Emit) -> None:
        event_id = getattr(event, "EventId", None)
        key = event_id.hex() if isinstance(event_id, bytes | bytearray) else str(event_id or "")
        received = epoch_time(time.time())
        time_ts = _ts(getattr(event, "Time", None))
        stamp = key or time_ts or received
        if self.seen.has(f"event:{ref}", stamp):
            return
        message = getattr(event, "Message", None)
        doc: dict[str, Any] = {
            "server": self.name,
            "ref": ref,
            "kind": "event",
            "event_id": key,
            "event_type": encode_value(getattr(event, "EventType", None)),
            "source_name": getattr(event, "SourceName", None),
            "source_node": encode_value(getattr(event, "SourceNode", None)),
            "message": message.Text if isinstance(message, ua.LocalizedText) else encode_value(message),
            "severity": int(getattr(event, "Severity", 0) or 0),
            "time": time_ts,
            "receive_time": _ts(getattr(event, "ReceiveTime", None)),
        }
        await emit(
            RawMessage(
                source=self.source,
                tenant=self.tenant,
                received_at=received,
                payload=json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
                idempotency_key=f"opcua:{self.name}:event:{stamp}",
                metadata={"server": self.name, "node": ref, "endpoint": self.endpoint, "kind": "event"},
            )
        )
        self.seen.add(f"event:{ref}", stamp)

    async def _session(self, client: Client, emit: Emit) -> None:
        items = await self._resolve(client)
        lost = self._lost[client]
        sub = await client.create_subscription(
            self.publishing_ms, handler=None, queue_maxsize=10_000, overflow=OverflowPolicy.DISCONNECT
        )
        by_handle: dict[int, _Item] = {}
        requests = []
        for number, item in enumerate(items, start=1):
            by_handle[number] = item
            requests.append(self.monitored_item_request(item, number, self.queue_size))
        results: list[Any] = []
        for start in range(0, len(requests), _ITEMS_PER_CALL):
            # Servers cap MaxMonitoredItemsPerCall; 500 per request stays under common limits.
            results += await sub.create_monitored_items(requests[start : start + _ITEMS_PER_CALL])
        for number, result in enumerate(results, start=1):
            if isinstance(result, ua.StatusCode):
                self.log.error("cannot monitor node", extra={"server": self.name, "node": by_handle[number].node_id,
                                                             "status": result.name})
        events: dict[int, str] = {}
        for spec in self.cfg.get("events", []):
            source = str(spec.get("source", "i=2253"))
            handle = await sub.subscribe_events(await self._resolve_ref(client, source))
            events[int(handle)] = source
        if self.history:
            await self._fill_from_history(items, emit)
        self.connected.set()
        first: set[int] = set()
        while not self._stopping.is_set():
            if lost.is_set():
                raise ConnectionError("connection lost")
            event = await sub.next_event(timeout=0.5)
            if event is None:
                continue
            if isinstance(event, StatusChangeEvent):
                if not ua.StatusCode(event.notification.Status.value).is_good():
                    raise ConnectionError(f"subscription status {event.notification.Status.name}")
                continue
            if isinstance(event, OpcEvent):
                ref = events.get(int(getattr(event.event, "server_handle", -1) or -1))
                if ref is not None:
                    await self._forward_event(ref, event.event, emit)
                continue
            if not isinstance(event, DataChangeEvent):
                continue
            handle = event.data.monitored_item.ClientHandle
            target = by_handle.get(handle)
            if target is None:
                continue
            initial = handle not in first
            first.add(handle)
            await self._forward(target, event.data.monitored_item.Value, emit, initial=initial)

    # ------------------------------------------------------------------ browsing

    async def browse(self, root: str = "", depth: int = 4, limit: int = 5000) -> list[dict[str, Any]]:
        """List the variables below ``root`` (a browse path; Objects if empty), to write mappings."""
        client = await self._connect()
        try:
            start = await self._resolve_path(client, root) if root else client.nodes.objects
            namespaces = await client.get_namespace_array()
            found: list[dict[str, Any]] = []
            queue: list[tuple[Node, list[str], int]] = [(start, [], 0)]
            while queue and len(found) < limit:
                node, path, level = queue.pop(0)
                for child in await node.get_children():
                    qname = await child.read_browse_name()
                    name = qname.Name
                    here = [*path, name]
                    node_class = await child.read_node_class()
                    if node_class == ua.NodeClass.Variable:
                        if name in ("EngineeringUnits", "EURange") and qname.NamespaceIndex == 0:
                            continue
                        dtype = await child.read_data_type_as_variant_type()
                        node_id = child.nodeid.to_string()
                        index = child.nodeid.NamespaceIndex
                        portable = node_id
                        if 0 < index < len(namespaces) and node_id.startswith(f"ns={index};"):
                            portable = f"nsu={namespaces[index]};" + node_id.split(";", 1)[1]
                        found.append({"node": node_id, "node_nsu": portable, "browse_path": "/".join(here),
                                      "datatype": dtype.name, "eu": await self._read_eu(child)})
                    elif node_class == ua.NodeClass.Object and level + 1 < depth and not (
                        level == 0 and not root and qname.NamespaceIndex == 0
                    ):
                        # The standard Server object (namespace 0) is skipped: it is not process data.
                        queue.append((child, here, level + 1))
            return found
        finally:
            await self._close(client)

    # ------------------------------------------------------------------ lifecycle

    async def check(self) -> None:
        """Connect once and resolve every configured node; raise AuthFailed/Unavailable/ConfigInvalid."""
        client: Client | None = None
        try:
            client = await self._connect()
            await self._resolve(client)
        except UaStatusCodeError as exc:
            if exc.code in _AUTH_CODES:
                raise AuthFailed(f"server {self.name} refused the session: {exc}") from exc
            raise Unavailable(f"server {self.name}: {exc}") from exc
        except UaError as exc:
            if "No matching endpoints" in str(exc):
                raise ConfigInvalid(
                    f"server {self.name} offers no endpoint for this security policy and mode",
                    [f"/servers/{self.name}/security: {exc}"],
                ) from exc
            raise Unavailable(f"server {self.name} at {self.endpoint} is unavailable: {exc!r}") from exc
        except _TRANSIENT as exc:
            raise Unavailable(f"server {self.name} at {self.endpoint} is unavailable: {exc!r}") from exc
        finally:
            await self._close(client)

    async def run(self, emit: Emit) -> None:
        """Connect, subscribe and forward until stopped, reconnecting with backoff."""
        delay = self.backoff_min
        while not self._stopping.is_set():
            client: Client | None = None
            try:
                client = await self._connect()
                self._client = client
                self.connections += 1
                if self.down:
                    self.down = False
                    self.log.warning("recovered", extra={"server": self.name, "endpoint": self.endpoint})
                delay = self.backoff_min
                await self._session(client, emit)
            except ConfigInvalid:
                raise
            except _TRANSIENT as exc:
                if not self.down:
                    self.down = True
                    self.log.warning(
                        "unavailable", extra={"server": self.name, "endpoint": self.endpoint, "reason": repr(exc)}
                    )
            finally:
                self.connected.clear()
                self._client = None
                self.save_state(force=True)
                await self._close(client)
            if self._stopping.is_set():
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.backoff_max)

    async def stop(self) -> None:
        """Ask the loop to end; the run task closes the session."""
        self._stopping.set()
