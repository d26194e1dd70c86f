"""Embedded NGSI-LD context store (ETSI GS CIM 009 V1.9.1): storage, JSON-LD terms and HTTP API.

The runtime writes through :class:`~gateway.store.base.Storage` (``open_storage``); the HTTP
API is the aiohttp sub-application built by ``gateway.store.app.create_store_app``.
"""

from __future__ import annotations

from gateway.store.backends import open_storage
from gateway.store.base import (
    DEFAULT_TENANT,
    BatchError,
    BatchResult,
    ChangeEvent,
    Listener,
    QuerySpec,
    Storage,
)
from gateway.store.problems import NgsiError, problem

__all__ = [
    "DEFAULT_TENANT",
    "BatchError",
    "BatchResult",
    "ChangeEvent",
    "Listener",
    "NgsiError",
    "QuerySpec",
    "Storage",
    "open_storage",
    "problem",
]
