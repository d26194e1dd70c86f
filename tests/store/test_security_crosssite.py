"""Store access control: tokens once configured bind loopback too; cross-site writes are refused (403)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.crosssite import HostPolicy, host_name, refusal, same_origin
from gateway.store.app import StoreSettings
from tests.conftest import free_port
from tests.store.conftest import BACKENDS, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""

EVIL = {"Host": "evil.example", "Origin": "http://evil.example"}


@pytest.fixture
async def tokened(tmp_path: Path) -> AsyncIterator[StoreServer]:
    """A store on loopback with a token configured (and nothing forcing authentication)."""
    srv = StoreServer(StoreSettings(data_dir=tmp_path / "tok", tokens=frozenset({"sesame"})))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


async def test_a_configured_token_is_required_on_loopback(tokened: StoreServer) -> None:
    assert tokened.settings.loopback and tokened.settings.requires_auth
    refused = await tokened.post("/entities", streetlight(1))
    assert refused.status == 401 and refused.problem() == "Unauthorized"
    wrong = await tokened.post("/entities", streetlight(1), headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    assert (await tokened.get("/entities/urn:ngsi-ld:Streetlight:1")).status == 404  # nothing was written
    ok = await tokened.post("/entities", streetlight(1), headers={"Authorization": "Bearer sesame"})
    assert ok.status == 201


async def test_no_token_on_loopback_stays_open(server: StoreServer) -> None:
    assert not server.settings.requires_auth
    assert (await server.post("/entities", streetlight(1))).status == 201
    assert (await server.delete("/entities/urn:ngsi-ld:Streetlight:1")).status == 204


def test_tenant_tokens_alone_also_bind_loopback() -> None:
    settings = StoreSettings(tenant_tokens={"commune-a": frozenset({"alpha"})})
    assert settings.loopback and settings.requires_auth
    assert not StoreSettings().requires_auth
    assert replace(settings, auth_required=False).requires_auth is False


@pytest.mark.parametrize("with_token", [False, True])
@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        EVIL,
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://127.0.0.1:1"},  # same host, another port: another origin
    ],
    ids=["host", "origin", "null-origin", "both", "fetch-site", "other-port"],
)
async def test_cross_site_writes_are_refused(
    tmp_path: Path, headers: dict[str, str], with_token: bool
) -> None:
    tokens = frozenset({"sesame"}) if with_token else frozenset()
    srv = StoreServer(StoreSettings(data_dir=tmp_path / "d", tokens=tokens))
    await srv.start()
    try:
        auth = {"Authorization": "Bearer sesame"} if with_token else {}
        for method, path, body in (
            ("POST", "/entities", streetlight(1)),
            ("POST", "/entityOperations/upsert", [streetlight(2)]),
            ("DELETE", "/entities/urn:ngsi-ld:Streetlight:3", None),
            ("POST", "/subscriptions", {"type": "Subscription", "entities": [{"type": "Streetlight"}],
                                        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}}),
        ):
            reply = await srv.request(method, path, json_body=body, headers={**auth, **headers})
            assert reply.status == 403, (method, path, reply.raw)
            assert reply.problem() == "Forbidden"
        # text/plain is what a cross-site form sends: refused too (415 on its own, 403 with a foreign Origin)
        plain = await srv.request("POST", "/entities", data=b"{}", content_type="text/plain",
                                  headers={**auth, **headers})
        assert plain.status == 403
        listed = await srv.get("/entities", params={"type": "Streetlight"}, headers=auth)
        assert listed.status == 200 and listed.json == []  # nothing was written
    finally:
        await srv.close()


async def test_legitimate_writes_pass(server: StoreServer) -> None:
    # curl and SDKs: no Origin at all
    assert (await server.post("/entities", streetlight(1))).status == 201
    # a page served by the store's own origin
    same = {"Origin": f"http://127.0.0.1:{server.port}", "Sec-Fetch-Site": "same-origin"}
    assert (await server.post("/entities", streetlight(2), headers=same)).status == 201
    # localhost is a loopback name, whatever the port
    assert (await server.post("/entities", streetlight(3), headers={"Host": f"localhost:{server.port}"})).status == 201
    # reads are not checked: a cross-site page cannot read the answer anyway (no CORS headers)
    assert (await server.get("/entities/urn:ngsi-ld:Streetlight:1", headers=EVIL)).status == 200


async def test_configured_public_names_are_accepted(tmp_path: Path) -> None:
    srv = StoreServer(StoreSettings(data_dir=tmp_path / "d", allowed_hosts=frozenset({"broker.city.example"})))
    await srv.start()
    try:
        named = {"Host": "broker.city.example:1026", "Origin": "http://broker.city.example:1026"}
        assert (await srv.post("/entities", streetlight(1), headers=named)).status == 201
        assert (await srv.post("/entities", streetlight(2), headers={"Host": "other.example"})).status == 403
    finally:
        await srv.close()


def test_host_and_origin_rules() -> None:
    assert host_name("LocalHost:8080") == "localhost"
    assert host_name("[::1]:1026") == "::1"
    assert host_name("evil.example/x") is None and host_name("a@b") is None and host_name("::1") is None
    loop = HostPolicy.of("127.0.0.1")
    assert loop.accepts("127.0.0.1:1026") and loop.accepts("localhost") and loop.accepts("[::1]:80")
    assert loop.accepts("127.8.9.10:1") and loop.accepts("app.localhost")
    assert not loop.accepts("evil.example") and not loop.accepts("127.0.0.1.evil.example")
    assert not loop.accepts("")
    assert HostPolicy.of("0.0.0.0").open and not HostPolicy.of("0.0.0.0", ["city.example"]).open
    assert HostPolicy.of("127.0.0.1", ["*"]).accepts("anything.example")
    assert same_origin("http://127.0.0.1:1026", "127.0.0.1:1026", "http")
    assert same_origin("http://localhost", "localhost:80", "http")
    assert same_origin("http://[::1]:8080", "[::1]:8080", "http")
    assert same_origin("https://city.example", "city.example", "http")  # behind a TLS proxy
    assert not same_origin("ftp://127.0.0.1:1026", "127.0.0.1:1026", "http")
    assert not same_origin("http://127.0.0.1:1027", "127.0.0.1:1026", "http")
    assert not same_origin("null", "127.0.0.1:1026", "http")
    assert not same_origin("http://127.0.0.1:99999", "127.0.0.1:1026", "http")
    assert refusal(loop, host="127.0.0.1:1", origin=None, scheme="http") is None
    assert refusal(loop, host="127.0.0.1:1", origin="http://evil.example", scheme="http")


def _request(url: str, *, method: str = "GET", body: bytes | None = None,
             headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_jonction_store_with_a_token_file_on_loopback(tmp_path: Path) -> None:
    """The command itself, as an operator runs it: ``jonction store --token-file`` on 127.0.0.1."""
    token_file = tmp_path / "tokens"
    token_file.write_text("s3cret-token\n", encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "JONCTION_STORE_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "store", "--host", "127.0.0.1", "--port", str(port),
         "--data", str(tmp_path / "data"), "--token-file", str(token_file), "--durability", "normal"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert "serving NGSI-LD" in line, proc.stderr.read().decode() if proc.stderr else line
        base = f"http://127.0.0.1:{port}/ngsi-ld/v1"
        body = b'{"id": "urn:ngsi-ld:Streetlight:cli", "type": "Streetlight"}'
        ctype = {"Content-Type": "application/json"}
        assert _request(f"{base}/entities", method="POST", body=body, headers=ctype) == 401
        auth = {**ctype, "Authorization": "Bearer s3cret-token"}
        assert _request(f"{base}/entities", method="POST", body=body, headers={**auth, **EVIL}) == 403
        assert _request(f"{base}/entities", method="POST", body=body, headers=auth) == 201
        assert _request(f"{base}/entities/urn:ngsi-ld:Streetlight:cli") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == 0
