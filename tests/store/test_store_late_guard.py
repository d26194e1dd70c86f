"""An older observation never overwrites a newer one, in the store itself (the runtime's upserts).

Several gateway instances on one MQTT ``$share`` feed write one shared store; each publisher only
remembers what it wrote itself, so instance B may send reading t2 after instance A wrote t3. The
store's runtime upsert (``Storage.upsert``, update mode) compares ``observedAt`` with the stored
instance in its write transaction: the older instance goes to the temporal history only, the
fragment's other attributes are applied; the same late reading sent again replaces its history
instance instead of doubling it. Without ``observedAt`` the last write wins, and the API's
batch upsert keeps the standard's semantics (an older observation overwrites). Run on SQLite and
PostgreSQL, the history read back through the temporal API over loopback HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from gateway.store import jsonld, open_storage
from gateway.store.app import StoreSettings, create_root_app
from gateway.store.base import ChangeEvent, Storage
from tests.loopback import serving
from tests.runtime.support import eventually
from tests.store.conftest import LINK_JONCTION_H, jonction_iri, recorded_changes

STORE_BACKENDS = ("sqlite", "postgresql")

BIN = "urn:ngsi-ld:WasteContainer:w1"
T1, T2, T3, T4 = (f"2026-03-04T07:0{n}:00Z" for n in (1, 2, 3, 4))
WINDOW = {"timerel": "between", "timeAt": "2026-03-04T00:00:00Z", "endTimeAt": "2026-03-05T00:00:00Z"}


def _level(value: Any, observed: str | None, **meta: Any) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "Property", "value": value, **meta}
    if observed is not None:
        prop["observedAt"] = observed
    return prop


def _bin(**attrs: Any) -> dict[str, Any]:
    return {"id": BIN, "type": "WasteContainer", **attrs}


@dataclass
class Store:
    """A storage opened by the test (the runtime's interface) and the store API serving it on loopback."""

    storage: Storage
    base: str
    events: list[ChangeEvent]

    async def temporal(self, attr: str, *, sys_attrs: bool = False) -> list[dict[str, Any]]:
        """Every instance of one attribute of BIN in the temporal API, oldest first."""
        params = {**WINDOW, "attrs": attr, **({"options": "sysAttrs"} if sys_attrs else {})}
        async with aiohttp.ClientSession() as http, http.get(
                f"{self.base}/temporal/entities/{BIN}", params=params, headers=LINK_JONCTION_H) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        found = body.get(attr, [])
        instances: list[dict[str, Any]] = found if isinstance(found, list) else [found]
        return sorted(instances, key=lambda i: str(i.get("observedAt")))

    async def current(self, attr: str) -> dict[str, Any]:
        """The current instance of one attribute of BIN (compacted)."""
        entity = await self.storage.get("", BIN)
        assert entity is not None
        value: dict[str, Any] = entity[attr]
        return value


@pytest.fixture
async def store(store_settings: StoreSettings) -> AsyncIterator[Store]:
    """A storage the test writes through, served by the store API (whose temporal API reads it)."""
    storage = await open_storage(store_settings.database_url)
    events = recorded_changes(storage)
    # PostgreSQL: only the process holding the notifier lock (taken in the background) hears its commits
    await eventually(storage.delivers_notifications, what="the notifier lock")
    try:
        async with serving(create_root_app(store_settings, storage=storage)) as port:
            yield Store(storage, f"http://127.0.0.1:{port}/ngsi-ld/v1", events)
    finally:
        await storage.close()


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _readings(instances: Sequence[dict[str, Any]]) -> list[tuple[Any, str]]:
    return [(i["value"], i["observedAt"]) for i in instances]


async def test_an_older_reading_goes_to_the_history_only(store: Store) -> None:
    """t3 then t2 through the runtime's upsert: t3 stays current; t2, unnotified, joins the history."""
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.3, T3, unitCode="C62"))])).errors
    before = await store.storage.get_doc("", BIN)
    assert len(store.events) == 1
    result = await store.storage.upsert("", [_bin(fillingLevel=_level(0.2, T2, unitCode="C62"))])
    assert result.success == [BIN] and not result.errors and not result.created
    assert await store.storage.get_doc("", BIN) == before  # modifiedAt included: the current state untouched
    assert len(store.events) == 1  # nothing changed, nothing notified
    assert _readings(await store.temporal("fillingLevel")) == [(0.2, T2), (0.3, T3)]
    # The shape of a late reading the runtime's own guard sends through append_history: the same members,
    # and system times of the write (createdAt = modifiedAt, not the stored instance's createdAt).
    assert not (await store.storage.append_history("", [_bin(fillingLevel=_level(0.1, T1, unitCode="C62"))])).errors
    t1, t2, t3 = await store.temporal("fillingLevel", sys_attrs=True)
    assert set(t2) == set(t1) == set(t3)
    assert t2["unitCode"] == "C62" and t2["createdAt"] == t2["modifiedAt"]
    assert t1["createdAt"] == t1["modifiedAt"]
    assert _moment(t2["modifiedAt"]) >= _moment(t3["modifiedAt"])  # written after t3, not stamped with its times


async def test_a_fragment_with_a_late_and_a_new_attribute_applies_the_new_one(store: Store) -> None:
    """fillingLevel late, status new: status becomes current; fillingLevel keeps t3 and gets t2 in its history."""
    first = _bin(fillingLevel=_level(0.3, T3), status=_level("ok", T3))
    assert not (await store.storage.upsert("", [first])).errors
    mixed = _bin(fillingLevel=_level(0.2, T2), status=_level("full", T4))
    result = await store.storage.upsert("", [mixed])
    assert result.success == [BIN] and not result.errors
    assert (await store.current("status"))["value"] == "full"
    level = await store.current("fillingLevel")
    assert (level["value"], level["observedAt"]) == (0.3, T3)
    assert _readings(await store.temporal("fillingLevel")) == [(0.2, T2), (0.3, T3)]
    assert _readings(await store.temporal("status")) == [("ok", T3), ("full", T4)]
    # subscribers hear of the new status, never of the late fillingLevel
    assert len(store.events) == 2
    after = store.events[1].after
    assert after is not None
    assert after[jonction_iri("fillingLevel")][0]["observedAt"] == T3
    assert after[jonction_iri("status")][0]["observedAt"] == T4


async def test_only_the_same_dataset_instance_is_compared(store: Store) -> None:
    """An older reading of another datasetId is a new instance of the current state, not a late one."""
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.3, T3))])).errors
    other = _level(0.2, T2, datasetId="urn:ngsi-ld:Dataset:lidar")
    assert not (await store.storage.upsert("", [_bin(fillingLevel=other)])).errors
    doc = await store.storage.get_doc("", BIN)
    assert doc is not None
    observed = {i.get("datasetId"): i["observedAt"] for i in doc[jonction_iri("fillingLevel")]}
    assert observed == {None: T3, "urn:ngsi-ld:Dataset:lidar": T2}


async def test_without_observed_at_the_last_write_wins(store: Store) -> None:
    """No observedAt on either side: nothing to compare, the newer write is the current value."""
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.3, None))])).errors
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.2, None))])).errors
    assert (await store.current("fillingLevel"))["value"] == 0.2
    # observedAt on one side only
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.4, T3))])).errors
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.1, None))])).errors
    level = await store.current("fillingLevel")
    assert level["value"] == 0.1 and "observedAt" not in level
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.5, T1))])).errors
    level = await store.current("fillingLevel")
    assert (level["value"], level["observedAt"]) == (0.5, T1)


async def test_the_api_batch_upsert_still_overwrites_with_an_older_reading(store: Store) -> None:
    """POST /entityOperations/upsert (and upsert_entities) keep the standard's semantics: the older value is current."""
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.3, T3))])).errors
    async with aiohttp.ClientSession() as http, http.post(
            f"{store.base}/entityOperations/upsert", params={"options": "update"},
            json=[_bin(fillingLevel=_level(0.2, T2))], headers=LINK_JONCTION_H) as resp:
        assert resp.status == 204, await resp.text()
    level = await store.current("fillingLevel")
    assert (level["value"], level["observedAt"]) == (0.2, T2)
    ctx = store.storage.contexts.get([jsonld.jonction_context_iri()])
    older = ctx.expand_entity(_bin(fillingLevel=_level(0.1, T1)))
    assert not (await store.storage.upsert_entities("", [older], mode="update")).errors
    level = await store.current("fillingLevel")
    assert (level["value"], level["observedAt"]) == (0.1, T1)


async def test_two_instances_on_one_database_keep_the_newer_reading(store_settings: StoreSettings) -> None:
    """Two storages on one database (two gateway instances): t3 through one, t2 through the other; t3 stays."""
    first = await open_storage(store_settings.database_url)
    second = await open_storage(store_settings.database_url)
    try:
        assert not (await first.upsert("", [_bin(fillingLevel=_level(0.3, T3))])).errors
        assert not (await second.upsert("", [_bin(fillingLevel=_level(0.2, T2))])).errors
        for storage in (first, second):
            entity = await storage.get("", BIN)
            assert entity is not None
            assert (entity["fillingLevel"]["value"], entity["fillingLevel"]["observedAt"]) == (0.3, T3)
        # and the other way round: the newer reading through the second one still becomes current
        assert not (await second.upsert("", [_bin(fillingLevel=_level(0.4, T4))])).errors
        entity = await first.get("", BIN)
        assert entity is not None and entity["fillingLevel"]["observedAt"] == T4
    finally:
        await second.close()
        await first.close()


async def test_an_older_reading_in_the_same_batch_goes_to_the_history(store: Store) -> None:
    """One batch holding t3 then t2 (an ordered upsert of all rounds): t3 current, both in the history."""
    batch = [_bin(fillingLevel=_level(0.1, T1)), _bin(fillingLevel=_level(0.3, T3)), _bin(fillingLevel=_level(0.2, T2))]
    result = await store.storage.upsert("", batch)
    assert result.success == [BIN] * 3 and not result.errors
    level = await store.current("fillingLevel")
    assert (level["value"], level["observedAt"]) == (0.3, T3)
    assert _readings(await store.temporal("fillingLevel")) == [(0.1, T1), (0.2, T2), (0.3, T3)]


async def test_a_late_reading_sent_again_is_kept_once(store: Store) -> None:
    """The same late reading upserted twice (redelivered to an instance that never saw t3) is one history instance."""
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.3, T3))])).errors
    for _ in range(2):
        assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.2, T2))])).errors
    assert _readings(await store.temporal("fillingLevel")) == [(0.2, T2), (0.3, T3)]
    # a late reading that corrects one in the history replaces it, as append_history does
    assert not (await store.storage.upsert("", [_bin(fillingLevel=_level(0.25, T2))])).errors
    assert _readings(await store.temporal("fillingLevel")) == [(0.25, T2), (0.3, T3)]
