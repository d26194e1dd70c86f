"""Operator-supplied map outlines (``console.outlines``): a GeoJSON file, checked when the config is read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

MAX_BYTES: Final = 8 << 20
"""Largest outlines file (the browser draws every vertex)."""
BUILTIN: Final = Path(__file__).parent / "outlines"
"""Outlines shipped with jonction (``builtin:NAME``): only a hand-drawn sketch of the demo territory."""


def outlines_path(value: str, base: Path) -> Path:
    """The file ``console.outlines`` names: ``builtin:NAME`` or a path (relative to the config's folder)."""
    if value.startswith("builtin:"):
        return BUILTIN / f"{value.removeprefix('builtin:')}.geojson"
    path = Path(value)
    return path if path.is_absolute() else base / path


def outline_problems(path: Path, *, max_bytes: int = MAX_BYTES) -> list[str]:
    """Problems of a GeoJSON outlines file (empty when it can be drawn): size, JSON, geometry types."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return [f"cannot read {path}: {exc.strerror}"]
    if size > max_bytes:
        return [f"{path}: {size} bytes, more than the {max_bytes} allowed"]
    try:
        doc: Any = json.loads(path.read_bytes())
    except ValueError as exc:
        return [f"{path}: not JSON ({exc})"]
    features = doc.get("features") if isinstance(doc, dict) and doc.get("type") == "FeatureCollection" else None
    if not isinstance(features, list):
        return [f"{path}: /type must be FeatureCollection with a features array"]
    allowed = {"Polygon", "MultiPolygon", "LineString", "MultiLineString", "Point", "MultiPoint"}
    problems = []
    for i, feature in enumerate(features):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geometry, dict) or geometry.get("type") not in allowed \
                or not isinstance(geometry.get("coordinates"), list):
            problems.append(f"{path}: /features/{i}/geometry must be a GeoJSON geometry with coordinates "
                            f"({', '.join(sorted(allowed))})")
    return problems
