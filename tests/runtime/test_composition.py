"""The composition root and the pipeline's two paths: who owns what, and what each path writes."""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.model import RawMessage, epoch_time
from gateway.runtime.app import HTTP, create_app
from gateway.runtime.pipeline import SinkRoute
from gateway.runtime.state import RUNTIME
from gateway.store.problems import NgsiError
from gateway.store.settings import STORAGE_KEY
from gateway.store.subscriptions import Notifier
from tests.runtime.support import FakeAdapter, PipelineParts, config, running

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- composition root


async def test_the_app_owns_storage_and_http_and_hands_them_over(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as (_, app):
        rt = app[RUNTIME]
        store_api = next(r.get_info()["app"] for r in app.router.resources() if "app" in r.get_info())
        assert rt.store is not None
        assert store_api[STORAGE_KEY] is rt.store  # one Storage: the store API serves what the runtime writes
        assert rt.http is app[HTTP] and not rt.http.closed
        http, storage = rt.http, rt.store
    assert http.closed
    with pytest.raises(NgsiError, match="closed"):  # closed by the app that created it
        await storage.count("")


async def test_the_storage_outlives_the_store_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opened before the store API starts, closed after it has cleaned up (its notifier stops on an open store)."""
    counts: list[int] = []
    original = Notifier.stop

    async def stop(self: Notifier) -> None:
        counts.append(await self.storage.count(""))
        await original(self)

    monkeypatch.setattr(Notifier, "stop", stop)
    async with running(config(tmp_path)):
        pass
    assert counts == [0]


async def test_no_embedded_store_means_no_storage_nor_store_api(tmp_path: Path) -> None:
    cfg = config(tmp_path, embedded_store={"enabled": False},
                 sinks=[{"name": "city", "url": "http://127.0.0.1:9", "profile": "generic"}])
    async with running(cfg) as (_, app):
        rt = app[RUNTIME]
        assert rt.store is None and list(rt.publishers) == ["city"]
        assert not any("app" in r.get_info() for r in app.router.resources())


def test_create_app_does_no_io(tmp_path: Path) -> None:
    app = create_app(config(tmp_path), adapters={"fake": FakeAdapter})
    assert isinstance(app, web.Application)
    assert not (tmp_path / "data").exists()  # nothing opened before the app starts
    assert RUNTIME not in app


def test_no_dynamic_imports_in_the_gateway() -> None:
    """Dependencies are plain imports: only entry points (gateway.contract) link to other packages."""
    found = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = (node.func.attr if isinstance(node.func, ast.Attribute) else
                    node.func.id if isinstance(node.func, ast.Name) else "") if isinstance(node, ast.Call) else ""
            if isinstance(node, ast.Call) and name in ("import_module", "__import__"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


# ---------------------------------------------------------------------------- the pipeline's paths


def _parts(tmp: Path) -> PipelineParts:
    """A pipeline over a real database, with two remote sink routes and the fake adapter."""
    return PipelineParts(tmp, [SinkRoute("a"), SinkRoute("b", frozenset({"other"}))], max_bytes=1 << 20)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[PipelineParts]:
    p = _parts(tmp_path)
    yield p
    p.close()


def raw(doc: dict[str, object], key: str, tenant: str = "") -> RawMessage:
    return RawMessage("bins", tenant, epoch_time(time.time()), json.dumps(doc).encode(), key)


async def test_ingest_archives_once_and_queues_per_sink(parts: PipelineParts) -> None:
    first = await parts.pipeline.submit(raw({"device": "d1", "fill": 40}, "k1"))
    again = await parts.pipeline.submit(raw({"device": "d1", "fill": 40}, "k1"))
    assert first.queued == ["urn:ngsi-ld:WasteContainer:d1"] and not first.duplicate
    assert again.duplicate and again.queued == []
    assert parts.archive.count() == 1 and parts.seen.count() == 1
    assert [(b.sink, b.entities) for b in parts.outbox.status()] == [("a", 1)]  # "b" takes tenant "other" only
    assert parts.archive.bytes == parts.archive.stored_bytes() and parts.outbox.bytes == parts.outbox.stored_bytes()


async def test_ingest_dead_letters_each_stage(parts: PipelineParts) -> None:
    translation = await parts.pipeline.submit(raw({"device": "d2"}, "k2"))  # no fill: TranslationError
    FakeAdapter.DIVISOR = 1.0
    validation = await parts.pipeline.submit(raw({"device": "d3", "fill": 40}, "k3"))  # 40 > 1: schema
    assert len(translation.dead_letters) == 1 and len(validation.dead_letters) == 1
    assert parts.letters.count() == {("bins", "translation"): 1, ("bins", "validation"): 1}
    assert parts.archive.count() == 2  # a dead letter's message is archived all the same


def test_replay_narrows_to_one_sink_and_drops_the_letter(parts: PipelineParts) -> None:
    FakeAdapter.DIVISOR = 1.0
    with parts.db.transaction() as conn:
        letter = parts.letters.add(conn, stage="validation", adapter="fake", raw=raw({}, "x"), reason="r",
                                   pointer="", corr="c")
    FakeAdapter.DIVISOR = 100.0
    outcome = parts.pipeline.replay(raw({"device": "d4", "fill": 40}, "k4", tenant="other"), "c",
                                    only_sink="b", delete_letter=letter)
    assert outcome.queued == ["urn:ngsi-ld:WasteContainer:d4"]
    assert [(b.sink, b.tenant) for b in parts.outbox.status()] == [("b", "other")]
    assert parts.letters.get(letter) is None
    assert parts.archive.count() == 0 and parts.seen.count() == 0  # replay neither archives nor records keys


def test_replay_of_an_unknown_source_is_refused(parts: PipelineParts) -> None:
    from gateway.errors import TranslationError

    with pytest.raises(TranslationError):
        parts.pipeline.replay(RawMessage("gone", "", "2026-01-01T00:00:00Z", b"{}", "k"), "c")


def test_components_recount_their_own_tables(parts: PipelineParts) -> None:
    parts.archive.bytes = parts.outbox.bytes = 12345  # as after a rolled-back group commit
    parts.archive.recount()
    parts.outbox.recount()
    assert parts.archive.bytes == 0 and parts.outbox.bytes == 0
    assert parts.letters.discard(999) is False
