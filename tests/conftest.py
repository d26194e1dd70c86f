"""Shared fixtures: paths to the read-only reference material and free loopback ports."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SAMPLES = SHARED / "samples"
REFERENCE = SHARED / "reference"
HAS_SHARED = SHARED.is_dir()
SHARED_ABSENT = (
    "../shared (upstream reference material and real vendor samples) is absent on a plain clone: "
    "this upstream cross-check runs on the development and CI machines only"
)
needs_shared = pytest.mark.skipif(not HAS_SHARED, reason=SHARED_ABSENT)
"""Mark a test that reads ../shared: it skips by name where the folder is absent."""


def shared_params(read: Callable[[], list[Any]], arity: int = 1) -> list[Any]:
    """Parameters read from ../shared by ``read()``, or one named skip where it is absent."""
    if HAS_SHARED:
        return read()
    return [pytest.param(*([None] * arity), marks=needs_shared, id="shared-absent")]


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def samples() -> Path:
    """The folder of real vendor payloads (read-only); skips the test where it is absent."""
    if not HAS_SHARED:
        pytest.skip(SHARED_ABSENT)
    return SAMPLES


@pytest.fixture
def reference() -> Path:
    """The folder of upstream reference material (read-only); skips the test where it is absent."""
    if not HAS_SHARED:
        pytest.skip(SHARED_ABSENT)
    return REFERENCE


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A PostgreSQL + PostGIS server for the session (tests/postgres.py); skips by name when unavailable."""
    from tests import postgres

    reason = postgres.unavailable()
    if reason is not None:
        pytest.skip(reason)
    server = postgres.PostgresServer()
    try:
        server.start()
    except Exception:
        server.stop()  # installed but not starting is a failure, not a skip
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """The URL of a fresh database (PostGIS ready) for one test."""
    url: str = postgres_server.new_database()
    return url
