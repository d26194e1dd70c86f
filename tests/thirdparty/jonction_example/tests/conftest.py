"""Make ``example_meter`` importable from a plain checkout, installed or not."""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
"""The example package's project folder (its pyproject.toml and ``example_meter/``)."""

if str(PROJECT) not in sys.path:
    # The package is tested from its source folder; pyproject's pythonpath does the same when
    # this project is tested on its own, this covers being collected from jonction's tests.
    sys.path.append(str(PROJECT))
