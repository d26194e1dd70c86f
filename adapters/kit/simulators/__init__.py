"""Simulated vendor sources for the demo territory and the tests (found via ``jonction.simulators``)."""
