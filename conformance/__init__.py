"""Conformance checker and procurement clause: checks, profiles, targets, runner, reports."""
