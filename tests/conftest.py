"""Shared fixtures: paths to the read-only reference material and free loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SAMPLES = SHARED / "samples"
REFERENCE = SHARED / "reference"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def samples() -> Path:
    """The folder of real vendor payloads (read-only)."""
    return SAMPLES


@pytest.fixture
def reference() -> Path:
    """The folder of upstream reference material (read-only)."""
    return REFERENCE
