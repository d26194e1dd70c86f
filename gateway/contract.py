"""The adapter contract: what every adapter provides, and how adapters are discovered.

The gateway consumes adapters only through this contract and the ``jonction.adapters``
entry-point group; it never imports a concrete adapter. Adapter authors import these names
from ``adapters`` (which re-exports them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata
from importlib.resources import files
from typing import Any, ClassVar, Protocol, runtime_checkable

import aiohttp

from gateway.errors import ConfigInvalid, UnknownAdapter
from gateway.model import Entity, RawMessage
from gateway.secrets import register_secret

__all__ = [
    "ADAPTER_FILES",
    "ENTRY_POINT_GROUP",
    "SHARED_PORTS",
    "SIMULATOR_GROUP",
    "Adapter",
    "AdapterFactory",
    "CommandAcknowledgements",
    "CommandReport",
    "CommandTarget",
    "DeviceProvisioning",
    "Emit",
    "Manifest",
    "Simulator",
    "SimulatorFactory",
    "adapter_logger",
    "discover",
    "discover_simulators",
    "instantiate",
    "load_adapter",
    "load_config_schema",
    "register_secret",
]

ENTRY_POINT_GROUP = "jonction.adapters"
"""Entry-point group under which adapters register (name == folder == manifest domain)."""

SHARED_PORTS: ContextVar[bool] = ContextVar("jonction_shared_ports", default=False)
"""True in a worker of ``jonction run --workers N``: push listeners bind with ``SO_REUSEPORT``, so that
the workers share each port and the kernel spreads connections among them."""

ADAPTER_FILES = ("manifest.json", "config.schema.json", "sample.yaml", "README.md", "__init__.py")
"""Files every adapter folder must have (``fixtures/`` holds recorded payloads and goldens)."""

Emit = Callable[[RawMessage], Awaitable[None]]
"""Callback a transport calls for each message; it returns once the message is durably accepted."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """What an adapter declares about itself (loaded from its ``manifest.json``)."""

    domain: str
    name: str
    protocols: tuple[str, ...]
    entity_types: tuple[str, ...]
    requirements: tuple[str, ...] = ()
    extra: str | None = None
    version: str = "0.1.0"

    @classmethod
    def load(cls, package: str) -> Manifest:
        """Read and check ``manifest.json`` from an adapter package."""
        raw = json.loads(files(package).joinpath("manifest.json").read_text(encoding="utf-8"))
        required = ("domain", "name", "protocols", "entity_types")
        problems = [f"manifest.json: missing key '{k}'" for k in required if k not in raw]
        if problems:
            raise ConfigInvalid(f"adapter package {package} has an invalid manifest", problems)
        return cls(
            domain=raw["domain"],
            name=raw["name"],
            protocols=tuple(raw["protocols"]),
            entity_types=tuple(raw["entity_types"]),
            requirements=tuple(raw.get("requirements", ())),
            extra=raw.get("extra"),
            version=raw.get("version", "0.1.0"),
        )


def load_config_schema(package: str) -> Mapping[str, Any]:
    """Read an adapter package's ``config.schema.json`` (its ``config_schema``)."""
    loaded: Mapping[str, Any] = json.loads(
        files(package).joinpath("config.schema.json").read_text(encoding="utf-8")
    )
    return loaded


@runtime_checkable
class Adapter(Protocol):
    """One vendor API or protocol, translated to NGSI-LD.

    ``__init__(config, *, http, log)`` does no I/O; ``config`` has already been validated
    against ``config_schema`` (secrets are marked ``writeOnly`` there).
    """

    manifest: ClassVar[Manifest]
    config_schema: ClassVar[Mapping[str, Any]]

    async def check(self) -> None:
        """Probe the source; raise AuthFailed, Unavailable or ConfigInvalid."""

    async def run(self, emit: Emit) -> None:
        """Receive or poll messages forever, calling ``emit`` for each; reconnect with backoff."""

    async def stop(self) -> None:
        """Stop receiving; idempotent."""

    def to_entities(self, raw: RawMessage) -> list[Entity]:
        """Translate one raw message: pure and deterministic (no I/O, no clock, no randomness).

        Whatever the payload, the result is entities that are strict JSON (finite numbers, UTF-8
        text), or a TranslationError whose pointer names the offending value; nothing else.
        """


@runtime_checkable
class DeviceProvisioning(Protocol):
    """Optional adapter capability: provisioned devices listed and added at run time.

    An adapter that keeps a device registry (the LoRaWAN network-server adapters) offers it so
    that the admin API and the console can show and extend it without knowing the adapter.
    Everything crosses as plain JSON-ready dicts.
    """

    def devices(self) -> list[dict[str, Any]]:
        """Provisioned devices (with their last radio metadata when seen), in a stable order."""

    def device_profiles(self) -> list[dict[str, Any]]:
        """The device profiles a new device may name (id, entity type, parameters, requirements)."""

    def add_device(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """Validate one device like the config's and keep it durably; ConfigInvalid names each problem
        with a JSON pointer relative to ``item`` (``/dev_eui: ...``)."""


@runtime_checkable
class CommandTarget(Protocol):
    """Optional adapter capability: writes to some attributes of its entities go back to the field.

    The runtime (:mod:`gateway.runtime.commands`) turns an NGSI-LD write of a commandable attribute
    into a durable command and hands it here, as a plain dict: ``{"id", "tenant", "entity_id",
    "entity_type", "attribute", "value", "issued_at"}``.
    """

    def command_attributes(self) -> dict[str, list[str]]:
        """Entity type → names of the attributes this adapter can command."""

    async def send_command(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Send one command: ``{"status": "acknowledged"|"sent"|"failed", "detail": str, "retry": bool}``.

        ``sent``: accepted by the target, the field's acknowledgement pending; ``failed`` with
        ``retry`` true is retried with backoff, with ``retry`` false it is a final failure.
        """


CommandReport = Callable[[str, Mapping[str, Any]], None]
"""``report(command_id, {"status": "acknowledged"|"failed", "detail": str})``: a field acknowledgement."""


@runtime_checkable
class CommandAcknowledgements(Protocol):
    """Optional companion of :class:`CommandTarget`: the field's acknowledgement arrives later.

    The runtime binds a reporter once, when the source starts; the adapter calls it (from its
    event loop, without blocking) when the device acknowledges, or refuses, a command it sent.
    """

    def bind_command_reports(self, report: CommandReport) -> None:
        """Keep ``report`` to call when a sent command is acknowledged or refused by the field."""


AdapterFactory = Callable[..., Adapter]
"""An adapter class: ``factory(config, *, http=session, log=logger)``."""


def discover() -> dict[str, type[Adapter]]:
    """All installed adapters by domain, from the ``jonction.adapters`` entry points."""
    found: dict[str, type[Adapter]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return dict(sorted(found.items()))


def instantiate(
    cls: type[Adapter], config: Mapping[str, Any], *, http: aiohttp.ClientSession, log: logging.Logger
) -> Adapter:
    """An adapter instance: ``cls(config, http=session, log=logger)`` (no I/O happens here)."""
    factory: AdapterFactory = cls  # the Protocol does not declare __init__: the factory type does
    return factory(config, http=http, log=log)


def load_adapter(domain: str) -> type[Adapter]:
    """The adapter class registered under ``domain``; UnknownAdapter if none is."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP, name=domain):
        cls: type[Adapter] = ep.load()
        return cls
    known = ", ".join(discover()) or "none"
    raise UnknownAdapter(f"unknown adapter {domain!r} (installed: {known})")


def adapter_logger(domain: str) -> logging.Logger:
    """The logger an adapter instance receives."""
    return logging.getLogger(f"jonction.adapters.{domain}")


SIMULATOR_GROUP = "jonction.simulators"
"""Entry-point group of simulated vendor sources (the demo territory)."""


class Simulator(Protocol):
    """A simulated vendor platform, run in-process beside the gateway (demo, tests)."""

    async def start(self) -> None:
        """Start serving (or publishing)."""

    async def stop(self) -> None:
        """Stop; idempotent."""


SimulatorFactory = Callable[[Mapping[str, Any]], Simulator]
"""What a ``jonction.simulators`` entry point loads: ``factory(options)`` (no I/O until ``start``)."""


def discover_simulators() -> dict[str, SimulatorFactory]:
    """Installed simulators by name, from the ``jonction.simulators`` entry points (loaded lazily)."""
    return {ep.name: _LazySimulator(ep) for ep in metadata.entry_points(group=SIMULATOR_GROUP)}


@dataclass(frozen=True, slots=True)
class _LazySimulator:
    """Loads its entry point only when a simulator is wanted (a broken one never blocks the others)."""

    entry_point: metadata.EntryPoint

    def __call__(self, options: Mapping[str, Any]) -> Simulator:
        factory: SimulatorFactory = self.entry_point.load()
        return factory(options)
