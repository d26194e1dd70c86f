"""MappingAdapter: what the mapping-driven adapters share (settings, item routing, pure translation)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.files import FilesAdapter
from adapters.kit.mapping.adapter import MappingAdapter
from adapters.rest_mapping import RestMappingAdapter
from adapters.webhook import WebhookAdapter
from gateway.contract import Emit, Manifest
from gateway.errors import ConfigInvalid
from gateway.model import RawMessage

MAPPING: dict[str, Any] = {
    "entity_type": "WeatherObserved",
    "id": "urn:ngsi-ld:WeatherObserved:station-{code}",
    "items": "stations",
    "tenant": "commune",
    "attributes": {"temperature": {"select": "t", "unit": "CEL"}},
}


class Probe(MappingAdapter, package="adapters.webhook"):
    """A transport-less subclass: only the shared part."""

    async def check(self) -> None:
        """Nothing to probe."""

    async def run(self, emit: Emit) -> None:
        """Nothing to run."""

    async def stop(self) -> None:
        """Nothing to stop."""


def test_subclass_loads_its_package_and_reads_the_shared_settings() -> None:
    assert isinstance(Probe.manifest, Manifest) and Probe.manifest.domain == "webhook"
    assert Probe.config_schema["type"] == "object"
    probe = Probe({"mapping": MAPPING, "tenant": "metropole"})
    assert probe.source == "webhook" and probe.tenant == "metropole" and probe.split == "message"
    assert probe.log.name == "jonction.adapters.webhook"
    assert probe.per_item  # items routed to tenants are always split
    assert probe.tenant_of({"commune": "sete"}) == "sete"
    assert probe.tenant_of({}) == "metropole"
    named = Probe({"mapping": {k: v for k, v in MAPPING.items() if k != "tenant"}, "name": "meteo-1"})
    assert named.source == "meteo-1" and not named.per_item


def test_to_entities_translates_a_document_or_one_item() -> None:
    probe = Probe({"mapping": MAPPING})
    whole = RawMessage("s", "", "2024-01-01T00:00:00Z", b'{"stations": [{"code": "a", "t": 1}, {"code": "b", "t": 2}]}',
                       "k")
    assert [e["id"] for e in probe.to_entities(whole)] == [
        "urn:ngsi-ld:WeatherObserved:station-a", "urn:ngsi-ld:WeatherObserved:station-b"]
    item = RawMessage("s", "", "2024-01-01T00:00:00Z", b'{"code": "c", "t": 3}', "k",
                      metadata={"split": "item", "index": "4"})
    [entity] = probe.to_entities(item)
    assert entity["temperature"]["value"] == 3


def test_the_three_mapping_adapters_share_the_base() -> None:
    for cls in (FilesAdapter, RestMappingAdapter, WebhookAdapter):
        assert issubclass(cls, MappingAdapter)
        assert cls.manifest.domain == cls.package.rsplit(".", 1)[1]
    assert RestMappingAdapter.default_split == "item"


def test_a_mapping_is_required() -> None:
    with pytest.raises(ConfigInvalid, match="mapping is required"):
        Probe({})
