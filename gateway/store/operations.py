"""NGSI-LD write semantics as pure functions over stored documents (§5.6 of CIM 009 V1.9.1).

Each factory returns a :data:`gateway.store.base.Mutator`: given the current document (or
None) and the commit time, it returns the new document and what happened, or raises an
NgsiError for that entity alone. Backends run them inside their transaction, in array order,
so duplicates in one batch see each other's effect.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from gateway.store.base import Doc, Mutation, Mutator
from gateway.store.history import to_micros
from gateway.store.jsonld import NULL_URN
from gateway.store.problems import NgsiError, bad_request, not_found

_ENTITY_KEYS = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})


def copy_doc(doc: Doc) -> Doc:
    """Copy a stored document deep enough for the mutators: its lists (they replace, never edit, instances)."""
    # Instances are shared with ``doc``: every mutator builds a new dict for an instance it changes,
    # so copying each one (three dicts per telemetry update) bought nothing.
    return {key: list(value) if isinstance(value, list) else value for key, value in doc.items()}


def attr_names(doc: Doc) -> list[str]:
    """The attribute IRIs of a stored document."""
    return [k for k in doc if k not in _ENTITY_KEYS]


def _is_null(inst: dict[str, Any]) -> bool:
    """An NGSI-LD Null instance (§4.5.0): its value member is ``urn:ngsi-ld:null``.

    A LanguageProperty says it with ``{"@none": "urn:ngsi-ld:null"}`` (its languageMap is a map).
    """
    get = inst.get
    language_map = get("languageMap")
    if NULL_URN not in inst.values():
        # the usual instance: no member is the null URN (one pass in C instead of eight lookups)
        return isinstance(language_map, dict) and language_map == {"@none": NULL_URN}
    return (
        get("value") == NULL_URN
        or get("object") == NULL_URN
        or get("vocab") == NULL_URN
        or get("json") == NULL_URN
        or language_map == NULL_URN
        or (isinstance(language_map, dict) and language_map == {"@none": NULL_URN})
        or get("valueList") == NULL_URN
        or get("objectList") == NULL_URN
    )


def is_null(inst: dict[str, Any]) -> bool:
    """Public form of the NGSI-LD Null test, for handlers that refuse Null where it means nothing."""
    return _is_null(inst)


def _stamp(inst: dict[str, Any], now: str, created: str | None = None) -> dict[str, Any]:
    out = dict(inst)
    out["createdAt"] = created or now
    out["modifiedAt"] = now
    return out


def _fresh(doc: Doc, now: str) -> tuple[Doc, list[tuple[str, dict[str, Any]]]]:
    """A new document stamped with ``now`` everywhere, and the instances it writes."""
    out: Doc = {"id": doc["id"], "type": list(doc["type"])}
    if "scope" in doc:
        out["scope"] = doc["scope"]
    out["createdAt"] = now
    out["modifiedAt"] = now
    written: list[tuple[str, dict[str, Any]]] = []
    for name in attr_names(doc):
        insts = []
        for inst in doc[name]:
            if _is_null(inst):
                continue
            stamped = _stamp(inst, now)
            insts.append(stamped)
            written.append((name, stamped))
        if insts:
            out[name] = insts
    return out, written


def _find(insts: list[dict[str, Any]], dataset_id: Any) -> int:
    if len(insts) == 1:  # the usual attribute: one instance
        return 0 if insts[0].get("datasetId") == dataset_id else -1
    for i, inst in enumerate(insts):
        if inst.get("datasetId") == dataset_id:
            return i
    return -1


def _union_types(current: list[str], new: list[str] | None) -> list[str]:
    if not new:
        return current
    return current + [t for t in new if t not in current]


def create(doc: Doc) -> Mutator:
    """Create Entity: AlreadyExists when the id is taken."""

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is not None:
            raise NgsiError("AlreadyExists", f"entity {doc['id']} already exists")
        new, written = _fresh(doc, now)
        return Mutation(new, "created", written)

    return mutate


def replace(doc: Doc, *, must_exist: bool = True) -> Mutator:
    """Replace Entity: every attribute replaced, createdAt kept; 404 when missing."""

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is None:
            if must_exist:
                raise not_found(f"entity {doc['id']} does not exist")
            new, written = _fresh(doc, now)
            return Mutation(new, "created", written)
        new, written = _fresh({**doc, "type": doc.get("type") or current["type"]}, now)
        new["createdAt"] = current.get("createdAt", now)
        return Mutation(new, "updated", written)

    return mutate


def _apply_attrs(
    current: Doc, fragment: Doc, now: str, *, no_overwrite: bool, strict: bool
) -> Mutation:
    new = copy_doc(current)
    written: list[tuple[str, dict[str, Any]]] = []
    not_updated: list[tuple[str, str]] = []
    changed = False
    for name in attr_names(fragment):
        existing = new.get(name)
        for inst in fragment[name]:
            ds = inst.get("datasetId")
            pos = _find(existing, ds) if existing else -1
            if _is_null(inst):
                if pos < 0 or existing is None:
                    not_updated.append((name, "attribute (or datasetId instance) not found"))
                    continue
                del existing[pos]
                if not existing:
                    del new[name]
                    existing = None
                changed = True
                continue
            if pos >= 0 and existing is not None:
                if no_overwrite:
                    not_updated.append((name, "attribute exists and noOverwrite was asked"))
                    continue
                stamped = _stamp(inst, now, existing[pos].get("createdAt"))
                existing[pos] = stamped
            else:
                if strict:
                    not_updated.append((name, "attribute (or datasetId instance) not found"))
                    continue
                stamped = _stamp(inst, now)
                if existing is None:
                    existing = new[name] = []
                existing.append(stamped)
            written.append((name, stamped))
            changed = True
    if changed:
        new["modifiedAt"] = now
    return Mutation(new, "updated" if changed else "unchanged", written, not_updated)


def update_attrs(fragment: Doc, *, no_overwrite: bool = False, strict: bool = True) -> Mutator:
    """Update (``strict``: existing attributes only) or Append Entity Attributes."""

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is None:
            raise not_found(f"entity {fragment['id']} does not exist")
        result = _apply_attrs(current, fragment, now, no_overwrite=no_overwrite, strict=strict)
        doc = result.doc
        if doc is None:
            return result
        if fragment.get("type"):
            # Entity types are only ever added (§4.16): update and append both extend the set.
            types = _union_types(doc["type"], fragment.get("type"))
            if types != doc["type"]:
                doc["type"] = types
                doc["modifiedAt"] = now
                result.outcome = "updated"
        if "scope" in fragment:
            new_scope = list(fragment["scope"])
            old_scope = doc.get("scope")
            if strict and old_scope is None:
                # Update only touches what exists (§5.6.2): an absent scope is not added.
                result.not_updated.append(("scope", "the entity has no scope to update"))
            else:
                if no_overwrite and old_scope is not None:
                    # Append without overwrite adds the new scopes to the existing ones (§4.18).
                    new_scope = list(old_scope) + [s for s in new_scope if s not in old_scope]
                if new_scope != old_scope:
                    doc["scope"] = new_scope
                    doc["modifiedAt"] = now
                    result.outcome = "updated"
        return result

    return mutate


def upsert(doc: Doc, mode: Literal["update", "replace"], *, skip_unchanged: bool = False) -> Mutator:
    """Batch upsert: create when missing, else replace the entity or update its attributes.

    ``skip_unchanged`` (the runtime's writes, mode ``update``): an entity sent again exactly as
    stored — every attribute instance the same, ``observedAt`` included — is left alone
    (outcome ``unchanged``): no rewrite, no history instance, no notification. The temporal
    evolution records observations; a redelivered one is not a new observation.

    In that mode an older observation never overwrites a newer one, whichever process sent it:
    an instance whose ``observedAt`` is strictly older than the stored instance's (same attribute,
    same datasetId) is a late reading. It goes to the attribute's temporal history only, stamped
    like ``StorageBase.append_history`` stamps it (§6.20.3.1: the current state untouched), and
    the fragment's other attributes are applied as usual. The guard lives here, in the store
    every gateway instance shares, because a publisher's own memory of what it wrote cannot see
    what the other instances on one ``$share`` feed wrote. An entity whose every attribute is
    late keeps outcome ``unchanged`` (no rewrite, no notification) while its late instances
    still reach the history (``Mutation.late``: a late reading sent again replaces the one of
    its ``observedAt`` instead of doubling it). Instances without ``observedAt``, on either
    side, are not compared: the last write wins. The API's upserts (no ``skip_unchanged``) keep
    the standard's semantics: an older observation overwrites.
    """
    replace_fn = replace(doc, must_exist=False)
    update_fn = update_attrs(doc, no_overwrite=False, strict=False)
    skip = skip_unchanged and mode == "update"

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is None or mode == "replace":
            return replace_fn(current, now)
        if skip:
            if same_content(current, doc):
                return Mutation(current, "unchanged")
            fresh, late = _split_late(current, doc, now)
            if late:
                if same_content(current, fresh):
                    return Mutation(current, "unchanged", late=late)
                result = update_attrs(fresh, no_overwrite=False, strict=False)(current, now)
                result.outcome = "updated"
                result.late = late
                return result
        result = update_fn(current, now)
        result.outcome = "updated"
        return result

    return mutate


def _older(observed: Any, than: Any) -> bool:
    """True when the ``observedAt`` text ``observed`` is strictly before ``than`` (False when either is missing)."""
    if type(observed) is not str or type(than) is not str or observed == than:
        return False
    if len(observed) == len(than):
        # Stored and expanded observedAt are RFC 3339 UTC as jonction writes it (jsonld normalizes
        # them): two texts of one length have one precision, so their text order is their time order.
        return observed < than
    try:
        return to_micros(observed) < to_micros(than)
    except ValueError:  # not a time this comparison understands: no guard, as without observedAt
        return False


def _split_late(current: Doc, fragment: Doc, now: str) -> tuple[Doc, list[tuple[str, dict[str, Any]]]]:
    """The fragment without its late instances, and those instances stamped for the history only.

    A late instance is older (``observedAt``) than the stored instance of its attribute and
    datasetId. An NGSI-LD Null (a deletion) is never late. With no late instance, ``fragment``
    itself comes back (the usual new reading: nothing copied).
    """
    late: list[tuple[str, dict[str, Any]]] = []
    kept_doc: Doc | None = None
    for name in attr_names(fragment):
        existing = current.get(name)
        if not existing:
            continue
        insts = fragment[name]
        kept: list[dict[str, Any]] | None = None
        for i, inst in enumerate(insts):
            pos = _find(existing, inst.get("datasetId"))
            if pos >= 0 and _older(inst.get("observedAt"), existing[pos].get("observedAt")) and not _is_null(inst):
                if kept is None:
                    kept = list(insts[:i])
                # the system times a history-only write gives (history.temporal_rows): written now
                late.append((name, {**inst, "createdAt": now, "modifiedAt": now}))
            elif kept is not None:
                kept.append(inst)
        if kept is not None:
            if kept_doc is None:
                kept_doc = dict(fragment)
            if kept:
                kept_doc[name] = kept
            else:
                del kept_doc[name]
    return (fragment if kept_doc is None else kept_doc), late


_SYSTEM_TIMES: Final = frozenset({"createdAt", "modifiedAt"})


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, types included (``1``, ``1.0`` and ``true`` are three different values)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return len(a) == len(b) and all(k in b and same_json(v, b[k]) for k, v in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _same_instance(stored: dict[str, Any], inst: dict[str, Any]) -> bool:
    """True when writing ``inst`` over ``stored`` would change nothing but the system times."""
    if stored.get("observedAt") != inst.get("observedAt"):
        return False  # the usual difference of a new reading: checked before anything else
    members = 0
    for key, value in stored.items():
        if key in _SYSTEM_TIMES:
            continue
        members += 1
        if key not in inst or not same_json(value, inst[key]):
            return False
    return members == len(inst)


def same_content(current: Doc, fragment: Doc) -> bool:
    """True when an update-mode upsert of ``fragment`` would leave ``current`` as it is (system times aside)."""
    types = fragment.get("type")
    if types and any(t not in current["type"] for t in types):
        return False
    if "scope" in fragment and fragment["scope"] != current.get("scope"):
        return False
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for name in attr_names(fragment):
        existing = current.get(name)
        if not existing:
            return False
        for inst in fragment[name]:
            pos = _find(existing, inst.get("datasetId"))
            if pos < 0:
                return False
            stored = existing[pos]
            if stored.get("observedAt") != inst.get("observedAt"):
                return False  # a new reading: known before any value is compared
            pairs.append((stored, inst))
    return all(not _is_null(inst) and _same_instance(stored, inst) for stored, inst in pairs)


def _merge_instance(old: dict[str, Any], patch: dict[str, Any], now: str) -> dict[str, Any]:
    out = dict(old)
    for key, value in patch.items():
        if isinstance(value, dict) and _is_null(value):
            out.pop(key, None)  # a sub-attribute set to urn:ngsi-ld:null is removed
        elif value == NULL_URN and key not in ("value", "object"):
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and "type" in value and ":" in key:
            out[key] = _merge_instance(out[key], value, now)
        else:
            out[key] = value
    if patch.get("type") and patch["type"] != old.get("type"):
        out["type"] = patch["type"]
    out["createdAt"] = old.get("createdAt", now)
    out["modifiedAt"] = now
    return out


def merge(fragment: Doc) -> Mutator:
    """Merge Entity (merge-patch; ``urn:ngsi-ld:null`` deletes); 404 when missing."""

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is None:
            raise not_found(f"entity {fragment['id']} does not exist")
        new = copy_doc(current)
        written: list[tuple[str, dict[str, Any]]] = []
        for name in attr_names(fragment):
            existing = new.get(name)
            for inst in fragment[name]:
                ds = inst.get("datasetId")
                pos = _find(existing, ds) if existing else -1
                if _is_null(inst):
                    if existing is not None and pos >= 0:
                        del existing[pos]
                        if not existing:
                            del new[name]
                            existing = None
                    continue
                if existing is not None and pos >= 0:
                    merged = _merge_instance(existing[pos], inst, now)
                    existing[pos] = merged
                else:
                    merged = _stamp(inst, now)
                    if existing is None:
                        existing = new[name] = []
                    existing.append(merged)
                written.append((name, merged))
        new["type"] = _union_types(new["type"], fragment.get("type"))
        if "scope" in fragment:
            new["scope"] = fragment["scope"]
        new["modifiedAt"] = now
        return Mutation(new, "updated", written)

    return mutate


def delete() -> Mutator:
    """Delete Entity; 404 when missing."""

    def mutate(current: Doc | None, now: str) -> Mutation:  # noqa: ARG001  # the mutation callback signature
        if current is None:
            raise not_found("entity does not exist")
        return Mutation(None, "deleted")

    return mutate


def delete_attr(attr: str, *, dataset_id: str | None = None, delete_all: bool = False) -> Mutator:
    """Delete Entity Attribute (one datasetId instance, the default one, or all); 404 when missing."""

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is None:
            raise not_found("entity does not exist")
        insts = current.get(attr)
        if not insts:
            raise not_found("attribute does not exist")
        new = copy_doc(current)
        if delete_all:
            del new[attr]
        else:
            pos = _find(new[attr], dataset_id)
            if pos < 0:
                raise not_found(f"attribute instance with datasetId {dataset_id!r} does not exist")
            del new[attr][pos]
            if not new[attr]:
                del new[attr]
        new["modifiedAt"] = now
        return Mutation(new, "updated")

    return mutate


def delete_scope() -> Mutator:
    """Delete the scope of an entity (DELETE /entities/{id}/attrs/scope, §4.18); 404 when it has none."""

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is None:
            raise not_found("entity does not exist")
        if "scope" not in current:
            raise not_found("the entity has no scope")
        new = copy_doc(current)
        del new["scope"]
        new["modifiedAt"] = now
        return Mutation(new, "updated")

    return mutate


def purge(*, keep: frozenset[str] | None = None, drop: frozenset[str] | None = None) -> Mutator:
    """One entity of Purge Entities (§5.6.21): delete it, or only ``drop`` / all attributes but ``keep``.

    An entity that vanished since it was selected is simply skipped.
    """

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is None:
            return Mutation(None, "unchanged")
        if keep is None and drop is None:
            return Mutation(None, "deleted")
        names = attr_names(current)
        gone = [n for n in names if n in drop] if drop is not None else [n for n in names if n not in (keep or ())]
        if not gone:
            return Mutation(current, "unchanged")
        new = copy_doc(current)
        for name in gone:
            del new[name]
        new["modifiedAt"] = now
        return Mutation(new, "updated")

    return mutate


def patch_attr(attr: str, patch: dict[str, Any]) -> Mutator:
    """Partial Attribute Update (§5.6.4): merge members into an existing instance; 404 when missing."""

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is None:
            raise not_found("entity does not exist")
        insts = current.get(attr)
        pos = _find(insts, patch.get("datasetId")) if insts else -1
        if insts is None or pos < 0:
            raise not_found("attribute (or datasetId instance) does not exist")
        new = copy_doc(current)
        if _is_null(patch):
            del new[attr][pos]
            if not new[attr]:
                del new[attr]
            new["modifiedAt"] = now
            return Mutation(new, "updated")
        old = new[attr][pos]
        if patch.get("type") and patch["type"] != old.get("type"):
            raise bad_request(f"the attribute is a {old.get('type')}, not a {patch['type']}")
        merged = _merge_instance(old, patch, now)
        new[attr][pos] = merged
        new["modifiedAt"] = now
        return Mutation(new, "updated", [(attr, merged)])

    return mutate


def replace_attr(attr: str, inst: dict[str, Any]) -> Mutator:
    """Replace Entity Attribute (PUT /entities/{id}/attrs/{attr}); 404 when missing."""

    def mutate(current: Doc | None, now: str) -> Mutation:
        if current is None:
            raise not_found("entity does not exist")
        insts = current.get(attr)
        pos = _find(insts, inst.get("datasetId")) if insts else -1
        if insts is None or pos < 0:
            raise not_found("attribute (or datasetId instance) does not exist")
        new = copy_doc(current)
        stamped = _stamp(inst, now, insts[pos].get("createdAt"))
        new[attr][pos] = stamped
        new["modifiedAt"] = now
        return Mutation(new, "updated", [(attr, stamped)])

    return mutate
