"""A remote broker behind TLS signed by the territory's own CA (``tls.ca_file``)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from aiohttp import web

from gateway.runtime.sinks import RemoteBrokerSink, RemoteSettings, SinkUnavailable
from tests.conftest import free_port

x509 = pytest.importorskip("cryptography.x509", reason="cryptography comes with the opcua extra")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


def _certificates(tmp: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Territoire CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "broker.pem", tmp / "broker.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_file, cert_file, key_file


async def test_tls_broker_trusted_through_custom_ca_only(tmp_path: Path) -> None:
    ca_file, cert_file, key_file = _certificates(tmp_path)
    received: list[str] = []

    async def upsert(request: web.Request) -> web.Response:
        received.extend(e["id"] for e in await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", upsert)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert_file, key_file)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ssl).start()
    url = f"https://127.0.0.1:{port}"
    item = {"id": "urn:ngsi-ld:WasteContainer:tls", "type": "WasteContainer"}
    untrusted = RemoteBrokerSink("plain", RemoteSettings(url=url))
    trusted = RemoteBrokerSink("ca", RemoteSettings(url=url, ca_file=str(ca_file)))
    try:
        with pytest.raises(SinkUnavailable):
            await untrusted.upsert("", [item], "c")  # the system trust store does not know our CA
        assert (await trusted.upsert("", [item], "c")).failed == {}
        assert received == ["urn:ngsi-ld:WasteContainer:tls"]
    finally:
        await untrusted.close()
        await trusted.close()
        await runner.cleanup()
