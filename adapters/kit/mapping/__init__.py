"""Declarative mappings: vendor JSON, CSV or GeoJSON to NGSI-LD entities, written in YAML, no Python.

Shared by the ``rest_mapping``, ``webhook`` and ``files`` adapters; see docs/onboarding-a-vendor.md.
"""

from adapters.kit.mapping.engine import (
    MAPPING_SCHEMA,
    EntityMapping,
    apply_mapping,
    compile_mapping,
    item_tenant,
    load_mapping,
    load_yaml,
    map_item,
    parse_time,
    select_items,
)

__all__ = [
    "MAPPING_SCHEMA",
    "EntityMapping",
    "apply_mapping",
    "compile_mapping",
    "item_tenant",
    "load_mapping",
    "load_yaml",
    "map_item",
    "parse_time",
    "select_items",
]
