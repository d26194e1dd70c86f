"""Every runtime test starts and ends with the test adapter in its default state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.runtime.support import FakeAdapter


@pytest.fixture(autouse=True)
def _reset_fake_adapter() -> Iterator[None]:
    """DIVISOR back to 100 (no mapping bug) and no instance left from another test, before and after."""
    FakeAdapter.DIVISOR = 100.0
    FakeAdapter.instances.clear()
    yield
    FakeAdapter.DIVISOR = 100.0
    FakeAdapter.instances.clear()
