"""The sharing policy reaches the store from `jonction store --sharing` and from the gateway's config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from gateway.errors import ConfigInvalid
from gateway.runtime.app import store_settings
from tests.runtime.support import config, running
from tests.store.test_sharing_reads import POLICY, SYNDICAT_TOKEN

ROOT = Path(__file__).resolve().parents[2]


def test_the_gateway_loads_the_policy_file_relative_to_its_config(tmp_path: Path) -> None:
    (tmp_path / "sharing.yaml").write_text(POLICY, encoding="utf-8")
    cfg = config(tmp_path, embedded_store={"sharing": str(tmp_path / "sharing.yaml")}, admin={"token": "a" * 24})
    assert cfg.embedded_sharing is not None and "syndicat" in cfg.embedded_sharing.principals
    settings = store_settings(cfg)
    assert settings.sharing is cfg.embedded_sharing
    settings.check()


def test_a_bad_policy_file_names_the_config_key_and_the_pointer(tmp_path: Path) -> None:
    (tmp_path / "sharing.yaml").write_text("version: 1\ntenants:\n  a:\n    share: [{with: [nobody], types: [X]}]\n",
                                           encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        config(tmp_path, embedded_store={"sharing": str(tmp_path / "sharing.yaml")})
    assert any(p.startswith("/embedded_store/sharing: /tenants/a/share/0/with") for p in caught.value.problems)
    assert any("needs admin.token" in p for p in caught.value.problems)


async def test_the_gateways_store_applies_the_policy(tmp_path: Path) -> None:
    (tmp_path / "sharing.yaml").write_text(POLICY, encoding="utf-8")
    cfg = config(tmp_path, embedded_store={"sharing": str(tmp_path / "sharing.yaml")}, admin={"token": "a" * 24})
    async with running(cfg) as (base, _), aiohttp.ClientSession() as session:
        headers = {"NGSILD-Tenant": "commune-a", "Authorization": "Bearer " + "a" * 24,
                   "Content-Type": "application/json"}
        entity = {"id": "urn:ngsi-ld:Open311ServiceRequest:r1", "type": "Open311ServiceRequest"}
        async with session.post(f"{base}/ngsi-ld/v1/entities", json=entity, headers=headers) as created:
            assert created.status == 201
        reader = {"NGSILD-Tenant": "commune-a", "Authorization": f"Bearer {SYNDICAT_TOKEN}"}
        async with session.get(f"{base}/ngsi-ld/v1/entities/{entity['id']}", headers=reader) as hidden:
            assert hidden.status == 404


def test_the_store_command_refuses_a_bad_policy_before_serving(tmp_path: Path) -> None:
    (tmp_path / "sharing.yaml").write_text("version: 2\ntenants: {}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "store", "--data", str(tmp_path / "data"),
                           "--sharing", str(tmp_path / "sharing.yaml"), "--port", "0"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode != 0
    assert "sharing.yaml" in done.stderr and "/version" in done.stderr
    assert not (tmp_path / "data" / "store.sqlite").exists()
