"""Which committed changes a subscription notifies (ETSI GS CIM 009 V1.9.1 §5.11, §5.2.12).

Entity selection (entities, q, scopeQ, geoQ), watchedAttributes and notificationTrigger are
checked against the stored documents before and after each change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.store.base import ChangeEvent
from gateway.store.subscriptions.parsing import Subscription


def _without_created(insts: Any) -> Any:
    # modifiedAt stays in the comparison: an attribute written again with the same value is an
    # update (the store stamps it), as NGSI-LD brokers notify it
    if not isinstance(insts, list):
        return insts
    return [{k: v for k, v in i.items() if k != "createdAt"} for i in insts]


def _by_dataset(insts: Any) -> dict[Any, Any]:
    if not isinstance(insts, list):
        return {}
    return {i.get("datasetId"): i for i in insts if isinstance(i, Mapping)}


def _changed_attrs(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> tuple[set[str], set[str], set[str]]:
    """(created, updated, deleted) attribute IRIs between two stored documents.

    Instances count one by one (§4.5.5): an attribute that lost one of its datasetIds had an
    instance deleted, one that gained a datasetId had an instance created.
    """
    skip = {"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"}
    old = {k: v for k, v in (before or {}).items() if k not in skip}
    new = {k: v for k, v in (after or {}).items() if k not in skip}
    created = set(new) - set(old)
    deleted = set(old) - set(new)
    updated: set[str] = set()
    for name in set(new) & set(old):
        was, now = _by_dataset(old[name]), _by_dataset(new[name])
        if set(was) - set(now):
            deleted.add(name)
        if set(now) - set(was):
            created.add(name)
        if any(_without_created([now[d]]) != _without_created([was[d]]) for d in set(now) & set(was)):
            updated.add(name)
    if before is not None and after is not None and before.get("scope") != after.get("scope"):
        updated.add("scope")
    return created, updated, deleted


def selected(sub: Subscription, doc: Mapping[str, Any]) -> bool:
    """Entity selection and filters (not the trigger): entities, q, scopeQ, geoQ."""
    if sub.entities and not any(info.matches(doc) for info in sub.entities):
        return False
    ctx = sub.ctx
    assert ctx is not None
    if sub.q is not None and not sub.q.evaluate(doc, ctx.expand_term):
        return False
    if sub.scope_q is not None and not sub.scope_q.matches(doc.get("scope")):
        return False
    if sub.geo is not None:
        insts = doc.get(sub.geo_iri or "") or []
        if not any(isinstance(i, Mapping) and sub.geo.matches(i.get("value")) for i in insts):
            return False
    return True


def triggered(sub: Subscription, event: ChangeEvent) -> bool:
    """True when this committed change must be notified to ``sub`` (§5.11)."""
    if sub.time_interval is not None or sub.status != "active" or event.tenant != sub.tenant:
        return False
    before, after = event.before, event.after
    if after is None:
        if before is None or not selected(sub, before):
            return False
        if "entityDeleted" in sub.triggers:
            return True
        # the entity's attributes went with it: an attributeDeleted for each watched one
        return "attributeDeleted" in sub.triggers and (
            sub.watched is None or any(a in before for a in sub.watched)
        )
    if not selected(sub, after):
        return False
    if before is None:
        if "entityCreated" not in sub.triggers and "attributeCreated" not in sub.triggers:
            return False
        return sub.watched is None or any(a in after for a in sub.watched)
    created, updated, deleted = _changed_attrs(before, after)
    relevant: set[str] = set()
    if "attributeCreated" in sub.triggers or "entityUpdated" in sub.triggers:
        relevant |= created
    if "attributeUpdated" in sub.triggers or "entityUpdated" in sub.triggers:
        relevant |= updated
    if "attributeDeleted" in sub.triggers or "entityUpdated" in sub.triggers:
        relevant |= deleted
    if sub.watched is None:
        return bool(relevant)
    return any(a in relevant for a in sub.watched)


