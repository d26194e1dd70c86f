"""End to end: a folder of CSV files, the files adapter, the runtime, the store and its dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from adapters.files import FilesAdapter
from gateway.runtime.state import RUNTIME
from gateway.validation import validate
from tests.runtime.support import config, eventually, running

ROOT = Path(__file__).resolve().parents[3]


async def test_file_import_through_the_runtime_keeps_one_dead_letter_per_bad_line(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "inventaire.csv").write_bytes((ROOT / "tests/adapters/files/data/inventaire_eclairage.csv").read_bytes())
    source = {"name": "inventaire", "adapter": "files", "tenant": "",
              "config": {"path": str(inbox), "settle": 0, "interval": 0.2,
                         "mapping_file": "builtin:streetlights_gis.yaml"}}
    async with running(config(tmp_path, sources=[source]), adapters={"files": FilesAdapter}) as (base, app):
        rt = app[RUNTIME]
        stored = await eventually(lambda: rt.embedded_store.get("", "urn:ngsi-ld:Streetlight:Montpellier-PL-0009"),
                                  what="the last good row in the store")
        assert validate(stored).valid

        async def five_dead_letters() -> list[dict[str, Any]] | None:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/admin/deadletters") as resp:
                letters: list[dict[str, Any]] = (await resp.json())["deadLetters"]
            return letters if len(letters) >= 5 else None

        letters = await eventually(five_dead_letters, what="five dead letters")
    reasons = sorted(letter["reason"] for letter in letters)
    assert [r.split(":")[0] for r in reasons] == [f"inventaire.csv line {n}" for n in (4, 5, 7, 8, 9)]
    assert all(letter["stage"] == "translation" for letter in letters)
