"""HTTP rules of the store API (§6.3): media types, lengths, @context placement, errors."""

from __future__ import annotations

import io
import json

import aiohttp
import pytest

from tests.store.conftest import BACKENDS, CONTEXT_REL, CORE, JONCTION, LINK_JONCTION, StoreServer, streetlight

STORE_BACKENDS = BACKENDS
"""Every test here runs on SQLite and on PostgreSQL."""


async def test_create_then_retrieve_normalized(server: StoreServer) -> None:
    r = await server.post("/entities", streetlight(1))
    assert r.status == 201
    assert r.headers["Location"] == "/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:1"
    got = await server.get("/entities/urn:ngsi-ld:Streetlight:1")
    assert got.status == 200
    assert got.headers["Content-Type"] == "application/json"
    assert got.json == streetlight(1)
    assert got.links == [f'<{CORE}>; rel="{CONTEXT_REL}"; type="application/ld+json"']


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/merge-patch+json"])
async def test_write_with_wrong_content_type_is_bare_415(server: StoreServer, content_type: str) -> None:
    r = await server.post("/entities", streetlight(1), headers={"Content-Type": content_type})
    assert r.status == 415
    assert r.raw == b""


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/entities/urn:ngsi-ld:Streetlight:1"), ("POST", "/entities/urn:ngsi-ld:Streetlight:1/attrs"),
     ("POST", "/entityOperations/upsert"), ("PUT", "/entities/urn:ngsi-ld:Streetlight:1/attrs/powerState")],
)
async def test_merge_patch_only_for_patch(server: StoreServer, method: str, path: str) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.request(method, path, json_body={"powerState": 1},
                             headers={"Content-Type": "application/merge-patch+json"})
    assert r.status == 415


@pytest.mark.parametrize("path", ["/entities/urn:ngsi-ld:Streetlight:1/attrs",
                                  "/entities/urn:ngsi-ld:Streetlight:1/attrs/powerState"])
async def test_merge_patch_accepted_for_other_patches(server: StoreServer, path: str) -> None:
    await server.post("/entities", streetlight(1))
    body = {"powerState": {"type": "Property", "value": "off"}} if path.endswith("/attrs") else {"value": "off"}
    r = await server.patch(path, body, headers={"Content-Type": "application/merge-patch+json"})
    assert r.status == 204


async def test_write_without_content_type_is_415(server: StoreServer) -> None:
    r = await server.request("POST", "/entities", data=b"{}", content_type=None)
    assert r.status == 415


async def test_merge_patch_content_type_accepted_for_patch(server: StoreServer) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.patch(
        "/entities/urn:ngsi-ld:Streetlight:1",
        {"powerState": {"type": "Property", "value": "off"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status == 204


async def test_chunked_body_is_bare_411(server: StoreServer) -> None:
    assert server.session is not None

    async def chunks():  # type: ignore[no-untyped-def]
        yield json.dumps(streetlight(1)).encode()

    async with server.session.post(
        server.base + "/entities", data=chunks(), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 411
        assert await resp.read() == b""


async def test_body_not_json_is_invalid_request(server: StoreServer) -> None:
    r = await server.request("POST", "/entities", data=b"{not json")
    assert r.status == 400
    assert r.problem() == "InvalidRequest"
    assert "line 1" in r.json["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Streetlight"},
        {"id": "not a uri", "type": "Streetlight"},
        {"id": "urn:ngsi-ld:X:1"},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "a": {"type": "Property"}},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "a": {"type": "Relationship", "object": "nope"}},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "a": {"type": "Weird", "value": 1}},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "location": {"type": "GeoProperty", "value": {"type": "Point"}}},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "location": {"type": "GeoProperty",
                                                             "value": {"type": "Point", "coordinates": [200, 0]}}},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "a": {"type": "Property", "value": 1, "datasetId": "bad"}},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "a": {"type": "Property", "value": 1, "observedAt": "yesterday"}},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "a": None},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "a b": 1},
        {"id": "urn:ngsi-ld:X:1", "type": "X", "scope": "no scope"},
        {"id": "urn:ngsi-ld:X:1", "type": "type"},  # "type" is the core alias of @type: no IRI
        {"id": "urn:ngsi-ld:X:1", "type": "@id"},
    ],
)
async def test_wrong_data_is_bad_request_data(server: StoreServer, body: object) -> None:
    r = await server.post("/entities", body)
    assert r.status == 400
    assert r.problem() == "BadRequestData"


async def test_bad_request_names_the_pointer(server: StoreServer) -> None:
    r = await server.post("/entities", streetlight(1, temperature={"type": "Property", "value": None}))
    assert r.problem() == "BadRequestData"
    assert "/temperature" in r.json["detail"]


async def test_json_body_with_context_is_bad_request(server: StoreServer) -> None:
    r = await server.post("/entities", {**streetlight(1), "@context": JONCTION})
    assert r.status == 400
    assert r.problem() == "BadRequestData"


async def test_ld_json_without_context_in_body_is_bad_request(server: StoreServer) -> None:
    r = await server.post("/entities", streetlight(1), headers={"Content-Type": "application/ld+json"})
    assert r.problem() == "BadRequestData"


async def test_ld_json_with_link_header_is_bad_request(server: StoreServer) -> None:
    r = await server.post(
        "/entities",
        {**streetlight(1), "@context": JONCTION},
        headers={"Content-Type": "application/ld+json", "Link": LINK_JONCTION},
    )
    assert r.problem() == "BadRequestData"


async def test_context_from_link_header_expands_and_compacts(server: StoreServer) -> None:
    r = await server.post("/entities", streetlight(1), headers={"Link": LINK_JONCTION})
    assert r.status == 201
    # With the jonction context, Streetlight is a Smart Data Models IRI: the core-only reader
    # sees the full IRI, the jonction reader sees the short name again.
    core_view = (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).json
    assert core_view["type"] == "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"
    jon = await server.get("/entities/urn:ngsi-ld:Streetlight:1", headers={"Link": LINK_JONCTION})
    assert jon.json["type"] == "Streetlight"
    assert jon.links[0].startswith(f"<{JONCTION}>")


async def test_ld_json_body_context_and_ld_json_response(server: StoreServer) -> None:
    r = await server.post(
        "/entities", {**streetlight(1), "@context": [JONCTION]}, headers={"Content-Type": "application/ld+json"}
    )
    assert r.status == 201
    got = await server.get(
        "/entities/urn:ngsi-ld:Streetlight:1", headers={"Accept": "application/ld+json", "Link": LINK_JONCTION}
    )
    assert got.headers["Content-Type"] == "application/ld+json"
    assert got.json["@context"] == JONCTION  # echoed as the client sent it (§6.3.6)
    assert got.json["type"] == "Streetlight"
    assert "Link" not in got.headers


async def test_inline_context_object(server: StoreServer) -> None:
    body = {**streetlight(1), "@context": {"powerState": "https://example.org/ns/power"}}
    r = await server.post("/entities", body, headers={"Content-Type": "application/ld+json"})
    assert r.status == 201
    core_view = (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).json
    assert "https://example.org/ns/power" in core_view


async def test_core_context_always_wins(server: StoreServer) -> None:
    # A user context that redefines a core term does not change what the core term means.
    body = {**streetlight(1), "@context": {"location": "https://example.org/ns/myLocation"}}
    await server.post("/entities", body, headers={"Content-Type": "application/ld+json"})
    core_view = (await server.get("/entities/urn:ngsi-ld:Streetlight:1")).json
    assert "location" in core_view


async def test_unknown_remote_context_is_504(server: StoreServer) -> None:
    link = f'<https://example.org/unknown-context.jsonld>; rel="{CONTEXT_REL}"'
    r = await server.post("/entities", streetlight(1), headers={"Link": link})
    assert r.status == 504
    assert r.problem() == "LdContextNotAvailable"


async def test_two_context_links_are_bad_request(server: StoreServer) -> None:
    r = await server.get(
        "/entities?type=Streetlight", headers={"Link": f"{LINK_JONCTION}, <{CORE}>; rel=\"{CONTEXT_REL}\""}
    )
    assert r.problem() == "BadRequestData"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        ("application/ld+json", "application/ld+json"),
        ("application/geo+json", "application/geo+json"),
        ("text/html;q=0.9, application/ld+json;q=0.5", "application/ld+json"),
        ("application/json;q=0.1, application/ld+json", "application/ld+json"),
    ],
)
async def test_accept_negotiation(server: StoreServer, accept: str | None, expected: str) -> None:
    await server.post("/entities", streetlight(1))
    headers = {"Accept": accept} if accept else {}
    r = await server.get("/entities/urn:ngsi-ld:Streetlight:1", headers=headers)
    assert r.status == 200
    assert r.headers["Content-Type"] == expected


@pytest.mark.parametrize("path", ["/entities/urn:ngsi-ld:Streetlight:1", "/types"])
async def test_unacceptable_accept_is_406_listing_types(server: StoreServer, path: str) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.get(path, headers={"Accept": "text/html"})
    assert r.status == 406
    assert "application/json" in r.json["detail"]
    assert "application/ld+json" in r.json["detail"]


async def test_geo_json_not_offered_for_types(server: StoreServer) -> None:
    r = await server.get("/types", headers={"Accept": "application/geo+json"})
    assert r.status == 406


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/entities?type=Streetlight&foo=bar", "InvalidRequest"),
        ("/entities/urn:ngsi-ld:Streetlight:1?bogus=1", "InvalidRequest"),
        ("/types?x=1", "InvalidRequest"),
        ("/entities?type=Streetlight&csf=a", "NotImplemented"),
        ("/entities?type=Streetlight&join=sideways", "BadRequestData"),
    ],
)
async def test_unknown_parameters(server: StoreServer, path: str, code: str) -> None:
    await server.post("/entities", streetlight(1))
    r = await server.get(path)
    assert r.problem() == code


async def test_body_too_large_is_413(server: StoreServer) -> None:
    big = b'{"id": "urn:ngsi-ld:X:1", "type": "X", "a": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    r = await server.request("POST", "/entities", data=io.BytesIO(big))
    assert r.status == 413
    assert r.problem() == "PayloadTooLarge"


async def test_unknown_path_is_problem_details(server: StoreServer) -> None:
    r = await server.get("/nothing-here")
    assert r.status == 404
    assert r.problem() == "ResourceNotFound"


async def test_method_not_allowed_is_problem_details(server: StoreServer) -> None:
    r = await server.request("POST", "/entities/urn:ngsi-ld:X:1", data=b"{}")
    assert r.status == 405
    assert r.problem() == "OperationNotSupported"


async def test_entity_id_in_path_must_be_uri(server: StoreServer) -> None:
    r = await server.get("/entities/not-a-uri")
    assert r.problem() == "BadRequestData"


async def test_server_never_answers_500_on_deep_json(server: StoreServer) -> None:
    deep = b"[" * 100000 + b"]" * 100000
    r = await server.request("POST", "/entities", data=deep)
    assert r.status == 400
    assert r.problem() == "InvalidRequest"


async def test_concurrent_requests(server: StoreServer) -> None:
    import asyncio

    replies = await asyncio.gather(*(server.post("/entities", streetlight(i)) for i in range(50)))
    assert all(r.status == 201 for r in replies)
    r = await server.get("/entities?type=Streetlight&count=true&limit=0")
    assert r.headers["NGSILD-Results-Count"] == "50"


async def test_client_error_types_are_problem_json(server: StoreServer) -> None:
    assert server.session is not None
    async with server.session.get(server.base + "/entities/urn:x:1") as resp:
        assert resp.status == 404
        body = await resp.json()
        assert body["type"].endswith("/ResourceNotFound")
        assert resp.headers["Content-Type"] == "application/json"
    assert isinstance(aiohttp.__version__, str)


@pytest.mark.parametrize(
    "raw", [b'{"id": "urn:x:1", "type": "T", "a": NaN}', b'{"id": "urn:x:1", "type": "T", "a": Infinity}', b"",
            b"\xff\xfe", b'{"id": "urn:x:1", "type": "T", "a": {"type": "Property", "value": "x\\ud800"}}']
)
async def test_non_json_bodies_are_invalid_request(server: StoreServer, raw: bytes) -> None:
    r = await server.request("POST", "/entities", data=raw)
    assert r.status == 400
    assert r.problem() == "InvalidRequest"
