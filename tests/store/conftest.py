"""Fixtures for the store tests: a real store server on a loopback port, restartable on its file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.store import jsonld
from gateway.store.app import StoreSettings, create_root_app
from gateway.store.base import ChangeEvent, Storage
from tests.loopback import Loopback

CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.9.jsonld"
JONCTION = "https://jonction.eu/ns/context/v1.jsonld"
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
LINK_JONCTION = f'<{JONCTION}>; rel="{CONTEXT_REL}"; type="application/ld+json"'
LINK_JONCTION_H = {"Link": LINK_JONCTION}
"""The Link header of the jonction @context, as request headers."""
ERR = "https://uri.etsi.org/ngsi-ld/errors/"


@dataclass
class Reply:
    """One HTTP response, read completely."""

    status: int
    headers: Mapping[str, str]
    raw: bytes
    links: list[str]

    @property
    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.raw)

    def problem(self) -> str:
        """The short error type of a ProblemDetails body."""
        body = self.json
        assert self.headers["Content-Type"].startswith("application/json")
        assert body["type"].startswith(ERR), body
        assert body["title"] and "detail" in body
        return str(body["type"][len(ERR):])


class StoreServer(Loopback):
    """A running store app on 127.0.0.1 with a client session; restart() reopens the same file."""

    def __init__(self, settings: StoreSettings) -> None:
        super().__init__()
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        """The NGSI-LD base URL."""
        return f"{self.url}/ngsi-ld/v1"

    def application(self) -> web.Application:
        """The store app (a new one at each start: it opens the storage, its cleanup closes it)."""
        return create_root_app(self.settings)

    async def start(self) -> None:
        """Start the server (opens the storage)."""
        await super().start()
        if self.session is None:
            self.session = aiohttp.ClientSession()

    async def restart(self) -> None:
        """Close and reopen the storage on the same file."""
        await self.stop()
        await self.start()

    async def close(self) -> None:
        """Stop everything."""
        await self.stop()
        if self.session is not None:
            await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> Reply:
        """Send a request to ``base + path`` and read the whole response."""
        assert self.session is not None
        hdrs = dict(headers or {})
        body = data
        if json_body is not None:
            body = json.dumps(json_body).encode()
        if body is not None and content_type is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = content_type
        async with self.session.request(method, self.base + path, data=body, headers=hdrs, params=params) as resp:
            raw = await resp.read()
            return Reply(resp.status, dict(resp.headers), raw, resp.headers.getall("Link", []))

    async def get(self, path: str, **kw: Any) -> Reply:
        """GET."""
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        """POST a JSON body."""
        return await self.request("POST", path, json_body=body, **kw)

    async def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        """PATCH a JSON body."""
        return await self.request("PATCH", path, json_body=body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        """PUT a JSON body."""
        return await self.request("PUT", path, json_body=body, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        """DELETE."""
        return await self.request("DELETE", path, **kw)


BACKENDS = ("sqlite", "postgresql")
"""The store backends a test module can run over: it sets ``STORE_BACKENDS = BACKENDS``."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of a module that lists ``STORE_BACKENDS`` once per backend (ids ``[sqlite]``...)."""
    backends = getattr(metafunc.module, "STORE_BACKENDS", None)
    if backends and "store_backend" in metafunc.fixturenames:
        metafunc.parametrize("store_backend", backends, scope="function")


@pytest.fixture
def store_backend() -> str:
    """The backend under test: SQLite unless the module asks for several (``STORE_BACKENDS``)."""
    return "sqlite"


@pytest.fixture
def store_settings(tmp_path: Path, store_backend: str, request: pytest.FixtureRequest) -> StoreSettings:
    """Settings with the data directory in tmp_path (and a fresh PostgreSQL database for that backend)."""
    database = request.getfixturevalue("postgres_url") if store_backend == "postgresql" else None
    return StoreSettings(data_dir=tmp_path / "data", database=database)


@pytest.fixture
async def server(store_settings: StoreSettings) -> AsyncIterator[StoreServer]:
    """A running store."""
    srv = StoreServer(store_settings)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[StoreServer]:
    """A running store that requires tokens (global 'sesame', tenant 'commune-a' token 'alpha')."""
    settings = replace(
        StoreSettings(data_dir=tmp_path / "secure"),
        auth_required=True,
        tokens=frozenset({"sesame"}),
        tenant_tokens={"commune-a": frozenset({"alpha"})},
    )
    srv = StoreServer(settings)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


def jonction_iri(term: str) -> str:
    """A term expanded with the jonction @context (how a storage's documents name it)."""
    return jsonld.ContextCache().get([jsonld.jonction_context_iri()]).expand_term(term)


def recorded_changes(storage: Storage) -> list[ChangeEvent]:
    """The change events ``storage`` emits from now on (a list that grows)."""
    events: list[ChangeEvent] = []

    async def listen(batch: Sequence[ChangeEvent]) -> None:
        events.extend(batch)

    storage.add_listener(listen)
    return events


def streetlight(n: int | str, **attrs: Any) -> dict[str, Any]:
    """A small normalized Streetlight entity (core context names)."""
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": "Streetlight",
        "powerState": {"type": "Property", "value": "on"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [2.35, 48.85]}},
    }
    entity.update(attrs)
    return entity
