"""Fixtures for the reversibility tests: the store server of the store tests, on both backends."""

from __future__ import annotations

from tests.store.conftest import (  # noqa: F401  (fixtures and the backend parametrization, shared)
    pytest_generate_tests,
    server,
    store_backend,
    store_settings,
)
