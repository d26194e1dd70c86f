"""The TALQ CMS listener over TLS (certificate and key from the config), as the specification's transport."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path

import aiohttp
import pytest

from adapters.talq import TalqAdapter
from adapters.talq.simulator import create
from gateway.errors import ConfigInvalid
from gateway.model import RawMessage

pytest.importorskip("cryptography.x509", reason="cryptography comes with the opcua extra")
from tests.runtime.test_tls import _certificates


async def test_gateways_reach_the_cms_over_tls_only(tmp_path: Path) -> None:
    ca_file, cert_file, key_file = _certificates(tmp_path)
    received: list[RawMessage] = []

    async def emit(raw: RawMessage) -> None:
        received.append(raw)

    adapter = TalqAdapter({"http": {"listen": {"host": "127.0.0.1", "port": 0}, "token": "t0k3n-for-tls",
                                    "tls": {"cert_file": str(cert_file), "key_file": str(key_file)}}})
    task = asyncio.create_task(adapter.run(emit))
    await asyncio.wait_for(adapter.receiver.started.wait(), 10)
    url = adapter.receiver.url
    assert url.startswith("https://")
    devices = create({"lamps": 2}).devices()
    params = {"clientAddress": str(uuid.uuid4()), "talqRequestId": str(uuid.uuid4())}
    headers = {"talq-api-version": "2.7.1", "Authorization": "Bearer t0k3n-for-tls"}
    try:
        trusted = ssl.create_default_context(cafile=str(ca_file))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/devices", json=devices, params=params, headers=headers,
                                 ssl=trusted) as resp:
                assert resp.status == 201
            with pytest.raises(aiohttp.ClientError):  # plain HTTP on the TLS port
                async with http.post(f"{url.replace('https', 'http', 1)}/devices", json=devices, params=params,
                                     headers=headers) as resp:
                    await resp.read()
    finally:
        await adapter.stop()
        await asyncio.wait_for(task, 10)
    assert len(received) == 1 and len(adapter.to_entities(received[0])) == 3


async def test_unreadable_tls_files_and_an_open_listener_without_token_are_refused(tmp_path: Path) -> None:
    missing = TalqAdapter({"http": {"tls": {"cert_file": str(tmp_path / "none.pem"), "key_file": "x"}}})
    with pytest.raises(ConfigInvalid):
        await missing.check()
    with pytest.raises(ConfigInvalid):
        await TalqAdapter({"http": {"listen": {"host": "0.0.0.0"}}}).check()
