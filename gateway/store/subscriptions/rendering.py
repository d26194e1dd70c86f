"""Notification contents (ETSI GS CIM 009 V1.9.1 §5.3.1, §5.8.6, §4.5.18 showChanges, §4.21 pick/omit, §4.5.23 join).

Each notified entity is rendered from the stored documents before and after the change, in the
subscription's @context, format and attribute selection. A deleted attribute (or instance) is
notified with NGSI-LD Null as its value; with ``showChanges`` each changed or deleted instance
also carries its previous value (previousValue, previousObject, previousLanguageMap...). With
``join`` the entities the notified ones link to are loaded at delivery time and notified inline
(under each relationship's ``entity``) or flat (after the notified entities).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from gateway import model
from gateway.store import jsonld
from gateway.store.base import Doc
from gateway.store.join import Fetch, join_entities
from gateway.store.problems import NgsiError
from gateway.store.representation import RenderOptions, render
from gateway.store.subscriptions.parsing import LINK_REL, Subscription, now

log = logging.getLogger("jonction.store.subscriptions")

NULL: Final = "urn:ngsi-ld:null"
"""NGSI-LD Null: the value of a deleted attribute in a notification (§4.5.18)."""
_ENTITY_KEEP: Final = ("id", "type", "scope", "createdAt", "modifiedAt")
"""What a deleted entity keeps in a notification (the rest is its attributes, notified as deleted)."""


@dataclass(slots=True)
class Change:
    """One entity to notify: its stored document before and after (None when absent)."""

    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


def previous_key(key: str) -> str:
    """previousValue for value, previousLanguageMap for languageMap... (§4.5.18)."""
    return "previous" + key[0].upper() + key[1:]


def _instances(doc: Mapping[str, Any] | None, name: str) -> dict[Any, Mapping[str, Any]]:
    insts = (doc or {}).get(name)
    if not isinstance(insts, list):
        return {}
    return {i.get("datasetId"): i for i in insts if isinstance(i, Mapping)}


def _selected(sub: Subscription, iri: str, dataset_id: Any) -> bool:
    if sub.attributes is not None and iri not in sub.attributes:
        return False
    if iri in sub.omit:
        return False
    return sub.dataset_ids is None or (dataset_id if dataset_id is not None else "@none") in sub.dataset_ids


def _compact_value(ctx: jsonld.Context, inst: Mapping[str, Any], key: str) -> Any:
    value = inst.get(key)
    if key == "vocab":
        return ctx.compact_iri(value) if isinstance(value, str) else [ctx.compact_iri(v) for v in value or []]
    return value


def _add_instance(out: dict[str, Any], name: str, inst: dict[str, Any]) -> None:
    current = out.get(name)
    if current is None:
        out[name] = inst
    elif isinstance(current, list):
        current.append(inst)
    else:
        out[name] = [current, inst]


def _deleted_instance(
    sub: Subscription, ctx: jsonld.Context, prior: Mapping[str, Any], stamp: str, *, entity_deleted: bool
) -> dict[str, Any]:
    attr_type = str(prior.get("type", "Property"))
    key = model.VALUE_KEY.get(attr_type, "value")
    null: Any = NULL
    if attr_type == "LanguageProperty" and not entity_deleted:
        null = {"@none": NULL}  # a languageMap's own Null (§4.5.18); a whole deleted entity gives plain Null
    inst: dict[str, Any] = {"type": attr_type, key: null}
    if prior.get("datasetId") is not None:
        inst["datasetId"] = prior["datasetId"]
    if sub.show_changes:
        inst[previous_key(key)] = _compact_value(ctx, prior, key)
    if sub.sys_attrs:
        for member in ("createdAt", "modifiedAt"):
            if member in prior:
                inst[member] = prior[member]
        inst["deletedAt"] = stamp
    return inst


def _with_previous(ctx: jsonld.Context, rendered: dict[str, Any], change: Change) -> None:
    """showChanges: each changed instance carries the value it had before."""
    before, after = change.before or {}, change.after or {}
    for iri, insts in after.items():
        if iri in ("id", "type", "scope", "createdAt", "modifiedAt") or not isinstance(insts, list):
            continue
        old = _instances(before, iri)
        if not old:
            continue
        name = ctx.compact_iri(iri)
        shown = rendered.get(name)
        shown_list = shown if isinstance(shown, list) else [shown] if isinstance(shown, dict) else []
        by_ds = {i.get("datasetId"): i for i in shown_list if isinstance(i, dict)}
        for inst in insts:
            prior = old.get(inst.get("datasetId"))
            target = by_ds.get(inst.get("datasetId"))
            if prior is None or target is None:
                continue
            key = model.VALUE_KEY.get(str(inst.get("type")), "value")
            if key in prior and prior.get(key) != inst.get(key):
                target[previous_key(key)] = _compact_value(ctx, prior, key)


def _options(sub: Subscription) -> RenderOptions:
    """How the notified entities are rendered (normalized; the format is applied last)."""
    return RenderOptions(
        form="normalized",
        sys_attrs=sub.sys_attrs,
        attrs=frozenset(sub.attributes) if sub.attributes is not None else None,
        keep_members=sub.pick_members,
        omit=sub.omit,
        lang=sub.definition["lang"] if isinstance(sub.definition.get("lang"), str) else None,
        dataset_ids=sub.dataset_ids,
    )


def _in_format(sub: Subscription, entity: dict[str, Any]) -> dict[str, Any]:
    if sub.format == "keyValues":
        return model.to_key_values(entity)
    if sub.format == "concise":
        return model.to_concise(entity)
    return entity


def render_change(sub: Subscription, change: Change, stamp: str) -> dict[str, Any]:
    """One entity of a notification, in the subscription's @context, format and selection."""
    return _in_format(sub, _render_normalized(sub, change, stamp))


def _render_normalized(sub: Subscription, change: Change, stamp: str) -> dict[str, Any]:
    """One entity of a notification, normalized (deleted attributes as Null, previous values)."""
    ctx = sub.notify_ctx
    assert ctx is not None
    entity_deleted = change.after is None
    if change.after is None:
        before = change.before or {}
        base: dict[str, Any] = {k: before[k] for k in _ENTITY_KEEP if k in before}
        base["deletedAt"] = stamp
    else:
        base = dict(change.after)
    out = render(base, ctx, _options(sub))
    if entity_deleted:
        out["deletedAt"] = stamp  # what the notification is about: shown with or without sysAttrs
    if sub.show_changes and change.before is not None and change.after is not None:
        _with_previous(ctx, out, change)
    if change.before is not None and (
        sub.show_changes or "attributeDeleted" in sub.triggers or "entityUpdated" in sub.triggers
    ):
        # deleted attributes and instances are notified with NGSI-LD Null (§4.5.18); without
        # showChanges only the watched ones (the ones that triggered the notification)
        for iri, insts in change.before.items():
            if iri in _ENTITY_KEEP or iri == "deletedAt" or not isinstance(insts, list):
                continue
            if not sub.show_changes and sub.watched is not None and iri not in sub.watched:
                continue
            if entity_deleted and not sub.show_changes and "attributeDeleted" not in sub.triggers:
                continue
            remaining = _instances(change.after, iri)
            gone = {ds: prior for ds, prior in _instances(change.before, iri).items() if ds not in remaining}
            if gone and not remaining:
                # the whole attribute went: one Null for it, not one per instance
                prior = gone.get(None) or next(iter(gone.values()))
                gone = {None: {k: v for k, v in prior.items() if k != "datasetId"}}
            for ds, prior in gone.items():
                if _selected(sub, iri, ds):
                    _add_instance(
                        out, ctx.compact_iri(iri),
                        _deleted_instance(sub, ctx, prior, stamp, entity_deleted=entity_deleted),
                    )
    return out


async def _entities(
    sub: Subscription, changes: Sequence[Change], stamp: str, fetch: Fetch | None
) -> list[dict[str, Any]]:
    """The ``data`` of a notification: the notified entities, with what they link to when joined."""
    ctx = sub.notify_ctx
    assert ctx is not None
    rendered = [_render_normalized(sub, change, stamp) for change in changes]
    if sub.join is None or fetch is None:
        return [_in_format(sub, entity) for entity in rendered]
    mode, level = sub.join
    opts = replace(_options(sub), form=sub.format)
    try:
        return await join_entities([], ctx, opts, _skipping_null(fetch), mode, level, rendered=rendered)
    except NgsiError as exc:
        # too many linked entities: the notification still goes out, with the entities alone
        log.warning("subscription %s: linked entities left out of a notification: %s", sub.id, exc.detail)
        return [_in_format(sub, entity) for entity in rendered]


def _skipping_null(fetch: Fetch) -> Fetch:
    """A deleted relationship is notified with NGSI-LD Null as its object: nothing to load for it."""

    async def run(ids: Sequence[str]) -> Mapping[str, Doc]:
        wanted = [i for i in ids if i != NULL]
        return await fetch(wanted) if wanted else {}

    return run


async def notification(
    sub: Subscription, changes: Sequence[Change], fetch: Fetch | None = None, ident: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """(Notification body, headers) for one delivery (§5.3.1): HTTP headers or MQTT metadata.

    ``fetch`` loads the linked entities of a subscription with ``join`` (none are notified without it);
    ``ident`` is the notification's id when it must be the same on a re-send (else a random one).
    """
    ctx = sub.notify_ctx
    assert ctx is not None
    stamp = now()
    data = await _entities(sub, changes, stamp, fetch)
    body: dict[str, Any] = {
        "id": ident or f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        "type": "Notification",
        "subscriptionId": sub.id,
        "notifiedAt": stamp,
        "data": data,
    }
    headers = {"Content-Type": sub.accept}
    if sub.accept == "application/ld+json":
        context = ctx.as_json()
        body["@context"] = context
        for entity in data:  # each entity is a JSON-LD document of its own (§6.3.6)
            entity["@context"] = context
    else:
        headers["Link"] = f'<{sub.notify_link}>; rel="{LINK_REL}"; type="application/ld+json"'
    if sub.tenant:
        headers["NGSILD-Tenant"] = sub.tenant
    for key, value in sub.receiver_info:
        headers[key] = value
    return body, headers
