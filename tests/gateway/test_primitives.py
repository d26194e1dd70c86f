"""The shared primitives: one OAuth2 client, one secret resolver, one problem writer, one JSON pointer."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import schemas
from gateway import model
from gateway.errors import AuthFailed, ConfigInvalid, Unavailable
from gateway.oauth2 import MAX_TOKEN_BYTES, ClientCredentials, OAuth2Client
from gateway.pointer import escape, join, pointer, unescape
from gateway.problems import PROBLEM_JSON, problem_details, problem_error, problem_response, write_problem
from gateway.runtime import config as config_mod
from gateway.secrets import from_env, from_file, read_secret, redact, register_secret
from gateway.store import history, query
from gateway.store.settings import load_tokens

ROOT = Path(__file__).resolve().parents[2]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------------------- OAuth2


class TokenServer:
    """A token endpoint on loopback: counts requests, answers what the test decides."""

    def __init__(self, expires_in: Any = 3600, body: bytes | None = None, status: int = 200) -> None:
        self.expires_in = expires_in
        self.body = body
        self.status = status
        self.issued = 0
        self.requests: list[tuple[dict[str, str], dict[str, str]]] = []

    async def token(self, request: web.Request) -> web.StreamResponse:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((dict(request.headers), form))
        if self.body is not None:
            return web.Response(body=self.body, status=self.status, content_type="application/json")
        if self.status != 200:
            return web.json_response({"error": "invalid_client"}, status=self.status)
        self.issued += 1
        return web.json_response({"access_token": f"tok-{self.issued}-0123456789", "token_type": "Bearer",
                                  "expires_in": self.expires_in})


@asynccontextmanager
async def serving(server: TokenServer) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/token", server.token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}/token"
    finally:
        await runner.cleanup()


def _client(url: str, **extra: Any) -> OAuth2Client:
    return OAuth2Client(ClientCredentials(token_url=url, client_id="gw", client_secret="s3cret/+=x", **extra))


async def test_token_is_cached_masked_and_never_in_a_repr() -> None:
    server = TokenServer()
    async with serving(server) as url, aiohttp.ClientSession() as http:
        client = _client(url, scope="write")
        token = await client.token(http)
        assert await client.token(http) == token and server.issued == 1  # cached until expiry
        assert await client.authorization(http) == f"Bearer {token}"
    assert redact(f"sent {token}") == "sent ***"
    assert token not in repr(client) and "s3cret" not in repr(client) and "token=***" in repr(client)
    assert "s3cret" not in repr(client.credentials)
    headers, form = server.requests[0]
    # client_secret_basic: both parts form-encoded (RFC 6749 §2.3.1), nothing secret in the body
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"gw:s3cret%2F%2B%3Dx").decode()
    assert form == {"grant_type": "client_credentials", "scope": "write"}


async def test_client_secret_post_sends_the_credentials_in_the_body() -> None:
    server = TokenServer()
    async with serving(server) as url, aiohttp.ClientSession() as http:
        await _client(url, client_auth="body").token(http)
    headers, form = server.requests[0]
    assert "Authorization" not in headers
    assert form == {"grant_type": "client_credentials", "client_id": "gw", "client_secret": "s3cret/+=x"}


async def test_token_is_renewed_before_expiry_and_after_invalidate() -> None:
    server = TokenServer(expires_in=0.4)  # the margin shrinks to half the lifetime: renewal after 0.2 s
    async with serving(server) as url, aiohttp.ClientSession() as http:
        client = _client(url)
        first = await client.token(http)
        assert await client.token(http) == first
        await asyncio.sleep(0.25)
        second = await client.token(http)
        assert second != first and client.tokens_fetched == 2
        client.invalidate()  # what a caller does once on a 401
        assert await client.token(http) not in (first, second)
        assert server.issued == 3


async def test_concurrent_callers_share_one_fetch() -> None:
    server = TokenServer()
    async with serving(server) as url, aiohttp.ClientSession() as http:
        client = _client(url)
        tokens = await asyncio.gather(*(client.token(http) for _ in range(5)))
    assert len(set(tokens)) == 1 and server.issued == 1


async def test_token_response_body_is_bounded() -> None:
    huge = json.dumps({"access_token": "x" * (MAX_TOKEN_BYTES + 10)}).encode()
    async with serving(TokenServer(body=huge)) as url, aiohttp.ClientSession() as http:
        with pytest.raises(Unavailable, match="more than 65536 bytes"):
            await _client(url).token(http)


@pytest.mark.parametrize(("status", "body", "error"), [
    (401, None, AuthFailed),
    (400, None, AuthFailed),
    (200, b'{"token_type": "Bearer"}', Unavailable),
    (200, b"not json", Unavailable),
    (502, b"<html>bad gateway</html>", Unavailable),
])
async def test_refusals_and_bad_answers(status: int, body: bytes | None, error: type[Exception]) -> None:
    async with serving(TokenServer(status=status, body=body)) as url, aiohttp.ClientSession() as http:
        client = _client(url)
        with pytest.raises(error) as caught:
            await client.token(http)
    assert "s3cret" not in str(caught.value)


async def test_unreachable_token_endpoint_is_unavailable() -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(Unavailable, match="unreachable"):
            await _client("http://127.0.0.1:9/token", timeout=2.0).token(http)


# ---------------------------------------------------------------------------- secrets


def test_secret_forms_union(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s.txt").write_text("  from-file-secret-1\n")
    monkeypatch.setenv("JONCTION_PRIM_SECRET", "from-env-secret-2")
    assert read_secret({"token_file": "s.txt"}, "token", base=tmp_path) == "from-file-secret-1"
    assert read_secret({"token_env": "JONCTION_PRIM_SECRET"}, "token") == "from-env-secret-2"
    assert read_secret({"token": "${JONCTION_PRIM_SECRET}"}, "token") == "from-env-secret-2"
    assert read_secret({"token": "literal-secret-3"}, "token") == "literal-secret-3"
    assert read_secret({"keys": ["k-one-4", "k-two-5"]}, "keys") == "k-one-4,k-two-5"
    assert redact("from-file-secret-1 literal-secret-3 k-two-5") == "*** *** ***"
    assert from_env("JONCTION_PRIM_UNSET", "x", environ={}, required=False) is None


def test_secret_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as missing:
        from_file("absent", "/admin/token_file", base=tmp_path)
    assert missing.value.problems[0].startswith("/admin/token_file: ")
    (tmp_path / "blank").write_text("\n")
    with pytest.raises(ConfigInvalid, match="is empty"):
        from_file("blank", "token_file", base=tmp_path)
    assert from_file("blank", "token file", base=tmp_path, allow_empty=True) == ""
    with pytest.raises(ConfigInvalid) as unset:
        from_env("JONCTION_PRIM_UNSET", "auth.password", environ={})
    assert unset.value.problems == ["auth.password: environment variable JONCTION_PRIM_UNSET is unset"]


def test_gateway_config_and_store_tokens_use_the_resolver(tmp_path: Path) -> None:
    (tmp_path / "client.secret").write_text("cfg-client-secret-6\n")
    doc = {"sinks": [{"name": "city", "url": "http://127.0.0.1:1026",
                      "auth": {"oauth2": {"token_url": "http://127.0.0.1:9/t", "client_id": "gw",
                                          "client_secret_file": "client.secret"}}}],
           "admin": {"token_file": "absent.token"}}
    with pytest.raises(ConfigInvalid) as caught:
        config_mod.parse(doc, base=tmp_path)
    assert any(p.startswith("/admin/token_file: ") for p in caught.value.problems), caught.value.problems
    del doc["admin"]
    cfg = config_mod.parse(doc, base=tmp_path)
    assert cfg.sinks[0].settings.oauth2 is not None
    assert cfg.sinks[0].settings.oauth2["client_secret"] == "cfg-client-secret-6"
    (tmp_path / "tokens").write_text("store-token-7\ncommune store-token-8\n")
    everyone, per = load_tokens(tmp_path / "tokens", env={"JONCTION_STORE_TOKEN": "store-token-9"})
    assert everyone == {"store-token-7", "store-token-9"} and per == {"commune": {"store-token-8"}}
    assert redact("store-token-7 store-token-8 store-token-9") == "*** *** ***"


# ---------------------------------------------------------------------------- problem+json


def test_problem_bodies() -> None:
    response = problem_response(403, "Forbidden", "cross-site request")
    assert response.status == 403 and response.content_type == PROBLEM_JSON
    assert response.body == (b'{"type": "about:blank", "title": "Forbidden", "status": 403, '
                             b'"detail": "cross-site request"}')
    assert problem_details(409, "Conflict") == {"type": "about:blank", "title": "Conflict", "status": 409}
    error = problem_error(400, "Bad Request", "body is not JSON")
    assert isinstance(error, web.HTTPBadRequest) and error.content_type == PROBLEM_JSON
    assert json.loads(error.text or "") == problem_details(400, "Bad Request", "body is not JSON")
    ngsi = {"type": "https://uri.etsi.org/ngsi-ld/errors/BadRequestData", "title": "t", "detail": "é", "status": 400}
    store = write_problem(ngsi, 400, content_type="application/json")
    assert store.body == json.dumps(ngsi, ensure_ascii=False).encode() and store.content_type == "application/json"


# ---------------------------------------------------------------------------- JSON pointer


@pytest.mark.parametrize("token", ["a", "a/b", "m~n", "~1", "/~0/", "", "é/~", 3])
def test_pointer_escape_round_trip(token: str | int) -> None:
    escaped = escape(token)
    assert "/" not in escaped
    assert unescape(escaped) == str(token)
    assert join("/base", token) == "/base/" + escaped
    # schemas cannot import gateway (layer rule): its copy must agree with the one implementation
    assert schemas.pointer([token, "x/y"]) == pointer([token, "x/y"])


def test_pointer_examples_from_rfc_6901() -> None:
    assert pointer([]) == ""
    assert pointer(["a/b"]) == "/a~1b"
    assert pointer(["m~n"]) == "/m~0n"
    assert join("", "foo", 0) == "/foo/0"


# ---------------------------------------------------------------------------- NGSI-LD table


def test_value_member_table_is_defined_once() -> None:
    assert model.VALUE_MEMBERS == ("value", "object", "languageMap", "vocab", "valueList", "objectList", "json")
    assert vars(history)["VALUE_KEY"] is model.VALUE_KEY and vars(query)["VALUE_KEY"] is model.VALUE_KEY


# ---------------------------------------------------------------------------- one implementation each


def _sources() -> list[tuple[Path, str]]:
    out = []
    for room in ("gateway", "adapters", "conformance", "schemas"):
        for path in sorted((ROOT / room).rglob("*.py")):
            out.append((path, path.read_text(encoding="utf-8")))
    return out


@pytest.mark.parametrize(("pattern", "allowed"), [
    # the JSON-pointer escape: gateway.pointer, plus schemas (which imports nothing of ours)
    (r'replace\("~", "~0"\)', {"gateway/pointer.py", "schemas/__init__.py"}),
    # the client side of the client-credentials grant
    (r'"grant_type": "client_credentials"', {"gateway/oauth2.py"}),
    # a problem-details media type written into a response
    (r'"application/problem\+json"', {"gateway/problems.py"}),
    # the NGSI-LD attribute type -> value member table
    (r'"ListRelationship": "objectList"', {"gateway/model.py"}),
    # resolving a secret: the resolver and the error messages the three old ones wrote
    (r"def read_secret\b|cannot read the secret file|cannot read token file|is unset\"", {"gateway/secrets.py"}),
])
def test_one_implementation_each(pattern: str, allowed: set[str]) -> None:
    found = {str(path.relative_to(ROOT)) for path, text in _sources() if re.search(pattern, text)}
    assert found <= allowed, sorted(found - allowed)


def test_a_secret_containing_another_is_masked_whole() -> None:
    # Registered shortest first, so the order of registration cannot hide the longer one's tail.
    register_secret("part-7f3a")
    register_secret("part-7f3a-and-its-tail-91c2")
    assert redact("sent part-7f3a-and-its-tail-91c2 then part-7f3a") == "sent *** then ***"
