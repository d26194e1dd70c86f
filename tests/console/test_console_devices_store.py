"""Devices added at run time, at the adapter: kept in ``<state_dir>/devices.json``, validated again at start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.chirpstack_v4 import ChirpstackV4Adapter
from gateway.contract import DeviceProvisioning
from gateway.errors import ConfigInvalid
from tests.console.test_console_devices_http import AM307, EM310


def _config(state_dir: Path | None, devices: list[dict[str, Any]]) -> dict[str, Any]:
    cfg: dict[str, Any] = {"name": "lora", "tenant": "ville-a", "transport": "http",
                           "http": {"listen": {"host": "127.0.0.1", "port": 0}}, "devices": devices}
    if state_dir is not None:
        cfg["state_dir"] = str(state_dir)
    return cfg


def test_an_added_device_is_reloaded_and_the_config_wins_over_it(tmp_path: Path) -> None:
    adapter = ChirpstackV4Adapter(_config(tmp_path, [AM307]))
    assert isinstance(adapter, DeviceProvisioning)
    adapter.add_device(EM310)
    again = ChirpstackV4Adapter(_config(tmp_path, [AM307]))
    record = again.registry.known("24e124713b100001")
    assert record is not None and record.entity_id == EM310["entity_id"]
    # the operator moved the device into the config with another entity id: the config's entry is used
    moved = {**EM310, "entity_id": "urn:ngsi-ld:WasteContainer:ville-a:moved"}
    third = ChirpstackV4Adapter(_config(tmp_path, [AM307, moved]))
    record = third.registry.known("24e124713b100001")
    assert record is not None and record.entity_id == "urn:ngsi-ld:WasteContainer:ville-a:moved"


def test_a_broken_devices_file_names_the_file_and_entry(tmp_path: Path) -> None:
    (tmp_path / "devices.json").write_text(json.dumps([{"dev_eui": "xyz", "profile": "milesight-am307"}]))
    with pytest.raises(ConfigInvalid) as caught:
        ChirpstackV4Adapter(_config(tmp_path, [AM307]))
    assert any(p.startswith("devices.json:/0/dev_eui") for p in caught.value.problems)
    (tmp_path / "devices.json").write_text("{not json")
    with pytest.raises(ConfigInvalid, match=r"devices\.json: cannot read"):
        ChirpstackV4Adapter(_config(tmp_path, [AM307]))


def test_without_a_state_folder_nothing_is_added(tmp_path: Path) -> None:
    adapter = ChirpstackV4Adapter(_config(None, [AM307]))
    with pytest.raises(ConfigInvalid, match="no state folder"):
        adapter.add_device(EM310)
    assert adapter.registry.known("24e124713b100001") is None
    assert [d["devEui"] for d in adapter.devices()] == ["24e124707c100002"]
