"""File imports (CSV, GeoJSON, JSON; open data and GIS exports) translated with a declarative mapping."""

from adapters.files.adapter import FilesAdapter

__all__ = ["FilesAdapter"]
