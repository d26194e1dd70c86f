"""Conformance checker and procurement clause: checks, profiles, targets, runner, reports."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("jonction")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

TOOL_NAME = "jonction check"
"""Name of the test tool as the clause and the reports cite it."""
