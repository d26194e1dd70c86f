"""Export from a broker by URL (a real store server on loopback, with a token), import into another."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.reversibility.territory import ajonction, feed, jonction, lines, manifest
from tests.store.conftest import StoreServer

TOKEN = "sesame-export-token"


def _records(out: Path, kind: str, tenant: str) -> list[dict[str, Any]]:
    return [r for f in manifest(out)["files"] if f["kind"] == kind and f["tenant"] == tenant
            for r in lines(out / f["path"])]


STRIP = ("createdAt", "modifiedAt")


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k not in STRIP}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def bare(records: list[dict[str, Any]]) -> list[str]:
    """Entities without system times, canonical and sorted."""
    return sorted(json.dumps(_strip(r), sort_keys=True) for r in records)


def _observations(records: list[dict[str, Any]]) -> set[tuple[str, str, str, str, str]]:
    """(entity, attribute, datasetId, observedAt, value) of the instances that have an observedAt."""
    out = set()
    for r in records:
        for name, inst in r.items():
            if isinstance(inst, dict) and "observedAt" in inst:
                out.add((r["id"], name, inst.get("datasetId", ""), inst["observedAt"], json.dumps(inst["value"])))
    return out


async def test_export_from_a_broker_url_equals_the_embedded_export(server: StoreServer, tmp_path: Path) -> None:
    await feed(server)
    await server.stop()
    local = tmp_path / "local"
    jonction("export", "--data", server.settings.data_dir, "--out", local)
    secured = StoreServer(replace(server.settings, auth_required=True, tokens=frozenset({TOKEN}), protect_reads=True))
    await secured.start()
    try:
        refused = await ajonction("export", "--source", secured.base, "--out", tmp_path / "no", check=None)
        assert refused.returncode == 2 and "--token-file" in refused.stderr
        assert not (tmp_path / "no").exists()
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n", encoding="utf-8")
        remote = tmp_path / "remote.tar"
        done = await ajonction("export", "--source", secured.base, "--tenant", "ville-a", "--tenant", "",
                               "--out", remote, "--token-file", token_file)
        assert TOKEN not in done.stdout + done.stderr
    finally:
        await secured.close()
    unpacked = tmp_path / "unpacked"
    import tarfile

    with tarfile.open(remote) as tar:
        tar.extractall(unpacked, filter="data")
    assert TOKEN not in json.dumps(manifest(unpacked))
    for tenant in ("", "ville-a"):
        # the same entities (system times included) and the same instances, read over HTTP
        mine = sorted(json.dumps(r, sort_keys=True) for r in _records(local, "entities", tenant))
        theirs = sorted(json.dumps(r, sort_keys=True) for r in _records(unpacked, "entities", tenant))
        assert theirs == mine
        assert sorted(json.dumps(r, sort_keys=True) for r in _records(unpacked, "history", tenant)) == sorted(
            json.dumps(r, sort_keys=True) for r in _records(local, "history", tenant))
        assert manifest(unpacked)["tenants"][tenant]["entities"] == manifest(local)["tenants"][tenant]["entities"]


async def test_import_into_a_broker_url(server: StoreServer, tmp_path: Path) -> None:
    await feed(server)
    await server.stop()
    out = tmp_path / "export"
    jonction("export", "--data", server.settings.data_dir, "--out", out)
    target = StoreServer(replace(server.settings, data_dir=tmp_path / "target"))
    await target.start()
    try:
        await ajonction("import", out, "--target", target.base)
        back = tmp_path / "back"
        await ajonction("export", "--source", target.base, "--tenant", "ville-a", "--tenant", "", "--out", back)
        await ajonction("import", out, "--target", target.base, "--restart")  # entities held as exported: left alone
        twice = tmp_path / "twice"
        await ajonction("export", "--source", target.base, "--tenant", "ville-a", "--tenant", "", "--out", twice)
    finally:
        await target.close()
    for tenant in ("", "ville-a"):
        assert bare(_records(back, "entities", tenant)) == bare(_records(out, "entities", tenant))
        # every observation is there, once (the broker replaces an instance sent again for the same observedAt)
        assert _observations(_records(back, "history", tenant)) == _observations(_records(out, "history", tenant))
        assert _observations(_records(twice, "history", tenant)) == _observations(_records(out, "history", tenant))
        timed = [r for r in _records(twice, "history", tenant) if any(
            isinstance(v, dict) and "observedAt" in v for v in r.values())]
        assert len(timed) == len(_observations(_records(out, "history", tenant)))
        assert len(_records(back, "subscriptions", tenant)) == 1
