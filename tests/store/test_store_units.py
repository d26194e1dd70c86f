"""Small units of the store (problems, options, write semantics) and mounting it in another app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.store import open_storage
from gateway.store import operations as ops
from gateway.store.app import STORAGE_KEY, StoreSettings, create_store_app
from gateway.store.jsonld import NULL_URN
from gateway.store.problems import PROBLEM_TYPES, NgsiError, problem
from gateway.store.representation import parse_options
from tests.conftest import free_port
from tests.store.conftest import streetlight

NOW = "2026-11-22T10:00:00Z"
LATER = "2026-11-22T11:00:00Z"


@pytest.mark.parametrize(("name", "status"), [
    ("BadRequestData", 400), ("InvalidRequest", 400), ("AlreadyExists", 409), ("ResourceNotFound", 404),
    ("NonexistentTenant", 404), ("OperationNotSupported", 422), ("TooComplexQuery", 403), ("TooManyResults", 403),
    ("InternalError", 500), ("NoMultiTenantSupport", 501), ("LdContextNotAvailable", 504), ("NotImplemented", 501),
])
def test_problem_types(name: str, status: int) -> None:
    err = problem(name, "why")
    assert err.status == status == PROBLEM_TYPES[name][0]
    assert err.to_problem_details() == {
        "type": f"https://uri.etsi.org/ngsi-ld/errors/{name}", "title": PROBLEM_TYPES[name][1], "detail": "why",
        "status": status,
    }


def test_problem_overrides() -> None:
    err = NgsiError("https://example.org/errors/Custom", "d", 418, title="teapot")
    assert err.type_uri == "https://example.org/errors/Custom"
    assert err.to_problem_details()["status"] == 418
    assert problem("BadRequestData", "x", 422).status == 422


@pytest.mark.parametrize(("options", "fmt", "expected"), [
    (None, None, ("normalized", False, set())),
    ("keyValues,sysAttrs", None, ("keyValues", True, set())),
    ("concise", "concise", ("concise", False, set())),
    (None, "simplified", ("keyValues", False, set())),
    ("noOverwrite", None, ("normalized", False, {"noOverwrite"})),
    (" , keyValues", None, ("keyValues", False, set())),
])
def test_parse_options(options: str | None, fmt: str | None, expected: tuple[Any, ...]) -> None:
    assert parse_options(options, fmt, allowed=frozenset({"noOverwrite"})) == expected


def _doc(**attrs: Any) -> dict[str, Any]:
    return {"id": "urn:x:1", "type": ["T"], **attrs}


def _p(value: Any, **extra: Any) -> list[dict[str, Any]]:
    return [{"type": "Property", "value": value, **extra}]


def test_create_stamps_and_refuses_existing() -> None:
    m = ops.create(_doc(a=_p(1)))(None, NOW)
    assert m.outcome == "created" and m.doc is not None
    assert m.doc["createdAt"] == m.doc["modifiedAt"] == NOW
    assert m.doc["a"][0]["createdAt"] == NOW
    assert m.written == [("a", m.doc["a"][0])]
    with pytest.raises(NgsiError) as info:
        ops.create(_doc())(m.doc, LATER)
    assert info.value.type == "AlreadyExists"


def test_update_keeps_created_and_reports_missing() -> None:
    current = ops.create(_doc(a=_p(1)))(None, NOW).doc
    m = ops.update_attrs(_doc(a=_p(2), b=_p(3)), strict=True)(current, LATER)
    assert m.doc is not None
    assert m.doc["a"][0] == {"type": "Property", "value": 2, "createdAt": NOW, "modifiedAt": LATER}
    assert "b" not in m.doc and m.not_updated == [("b", "attribute (or datasetId instance) not found")]
    assert current is not None and current["a"][0]["value"] == 1  # the input is never edited


def test_update_with_null_deletes() -> None:
    current = ops.create(_doc(a=_p(1), b=_p(2)))(None, NOW).doc
    m = ops.update_attrs(_doc(a=_p(NULL_URN)), strict=True)(current, LATER)
    assert m.doc is not None and "a" not in m.doc and "b" in m.doc


def test_append_no_overwrite_unchanged() -> None:
    current = ops.create(_doc(a=_p(1)))(None, NOW).doc
    m = ops.update_attrs(_doc(a=_p(5)), no_overwrite=True, strict=False)(current, LATER)
    assert m.outcome == "unchanged" and m.not_updated


def test_merge_and_replace_semantics() -> None:
    current = ops.create(_doc(a=_p(1, unitCode="C62"), b=_p(2)))(None, NOW).doc
    merged = ops.merge(_doc(a=[{"type": "Property", "value": 9}], b=_p(NULL_URN)))(current, LATER).doc
    assert merged is not None and merged["a"][0]["unitCode"] == "C62" and merged["a"][0]["value"] == 9
    assert "b" not in merged
    replaced = ops.replace(_doc(c=_p(3)))(current, LATER).doc
    assert replaced is not None and set(replaced) == {"id", "type", "createdAt", "modifiedAt", "c"}
    assert replaced["createdAt"] == NOW
    with pytest.raises(NgsiError):
        ops.replace(_doc())(None, LATER)


def test_upsert_modes() -> None:
    current = ops.create(_doc(a=_p(1)))(None, NOW).doc
    updated = ops.upsert(_doc(b=_p(2)), "update")(current, LATER)
    assert updated.doc is not None and set(updated.doc) >= {"a", "b"} and updated.outcome == "updated"
    replaced = ops.upsert(_doc(b=_p(2)), "replace")(current, LATER)
    assert replaced.doc is not None and "a" not in replaced.doc
    created = ops.upsert(_doc(b=_p(2)), "update")(None, LATER)
    assert created.outcome == "created"


def test_delete_attr_dataset_ids() -> None:
    insts = [{"type": "Property", "value": 1}, {"type": "Property", "value": 2, "datasetId": "urn:d:1"}]
    current = ops.create(_doc(a=insts))(None, NOW).doc
    one = ops.delete_attr("a", dataset_id="urn:d:1")(current, LATER).doc
    assert one is not None and len(one["a"]) == 1
    gone = ops.delete_attr("a", delete_all=True)(current, LATER).doc
    assert gone is not None and "a" not in gone
    with pytest.raises(NgsiError):
        ops.delete_attr("zzz")(current, LATER)


async def test_mounted_in_another_app_shares_storage(tmp_path: Path) -> None:
    """The runtime mounts the store app and writes through the same Storage (STORAGE_KEY)."""
    parent = web.Application()
    store_app = create_store_app(StoreSettings(data_dir=tmp_path))
    parent.add_subapp("/ngsi-ld/v1", store_app)
    runner = web.AppRunner(parent)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        storage = store_app[STORAGE_KEY]
        result = await storage.upsert("commune-a", [streetlight(1)])
        assert result.success == ["urn:ngsi-ld:Streetlight:1"]
        link = '<https://jonction.eu/ns/context/v1.jsonld>; rel="http://www.w3.org/ns/json-ld#context"'
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"http://127.0.0.1:{port}/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:1",
                headers={"NGSILD-Tenant": "commune-a", "Link": link},
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["type"] == "Streetlight"
    finally:
        await runner.cleanup()


async def test_given_storage_is_not_closed_by_the_app(tmp_path: Path) -> None:
    storage = await open_storage(tmp_path / "store.sqlite")
    app = create_store_app(StoreSettings(data_dir=tmp_path), storage=storage)
    runner = web.AppRunner(app)
    await runner.setup()
    await runner.cleanup()
    assert await storage.count("") == 0  # still open
    await storage.close()


async def test_unexpected_error_is_logged_500_problem(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store_app = create_store_app(StoreSettings(data_dir=tmp_path))

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("bug with a secret-free message")

    store_app.router.add_get("/broken", broken)
    parent = web.Application()
    parent.add_subapp("/ngsi-ld/v1", store_app)
    runner = web.AppRunner(parent)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/ngsi-ld/v1/broken") as resp:
                assert resp.status == 500
                body = await resp.json()
                assert body["type"] == "https://uri.etsi.org/ngsi-ld/errors/InternalError"
                assert "bug" not in body["detail"]
    finally:
        await runner.cleanup()
    assert "RuntimeError" in caplog.text
