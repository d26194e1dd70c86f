"""REST polling with a declarative mapping: onboard a vendor API with a YAML file, no Python."""

from adapters.rest_mapping.adapter import RestMappingAdapter

__all__ = ["RestMappingAdapter"]
