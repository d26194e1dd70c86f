"""Entity representations on read (§4.5, §6.3.7): normalized, concise, keyValues, GeoJSON.

A stored document is filtered (attrs/pick/omit, datasetId), stripped of system attributes
unless ``sysAttrs`` was asked, language-filtered (``lang``, §4.15), compacted with the
request's @context, then projected to the requested form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway import model
from gateway.store.jsonld import SYS_ATTRS, Context
from gateway.store.problems import bad_request

Form = Literal["normalized", "concise", "keyValues"]

_FORMS: Final[Mapping[str, Form]] = {
    "normalized": "normalized",
    "concise": "concise",
    "keyValues": "keyValues",
    "simplified": "keyValues",
}
_ENTITY_KEYS: Final = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})


@dataclass(slots=True)
class RenderOptions:
    """How to render entities for one request."""

    form: Form = "normalized"
    sys_attrs: bool = False
    attrs: frozenset[str] | None = None
    """Attribute IRIs to keep (attrs or pick); None keeps every attribute."""
    keep_members: frozenset[str] | None = None
    """With pick: which of id/type/scope to keep; None keeps them all."""
    omit: frozenset[str] = frozenset()
    """Attribute IRIs and entity members to drop."""
    lang: str | None = None
    dataset_ids: frozenset[str] | None = None
    """Instances to keep by datasetId (``@none`` is the default instance)."""


def parse_options(
    options: str | None, fmt: str | None, *, allowed: frozenset[str] = frozenset()
) -> tuple[Form, bool, set[str]]:
    """Read ``options`` and ``format``: (form, sysAttrs, other allowed options present)."""
    form: Form | None = None
    sys_attrs = False
    others: set[str] = set()
    for item in (options or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item in _FORMS and item != "simplified":
            chosen = _FORMS[item]
            if form is not None and form != chosen:
                raise bad_request(f"options: {form} and {chosen} cannot be combined")
            form = chosen
        elif item == "sysAttrs":
            sys_attrs = True
        elif item in allowed:
            others.add(item)
        else:
            raise bad_request(f"options: unknown or unsupported option {item!r} for this operation")
    if fmt is not None:
        chosen_fmt = _FORMS.get(fmt)
        if chosen_fmt is None:
            raise bad_request(f"format: {fmt!r} is not one of normalized, concise, simplified, keyValues")
        if form is not None and form != chosen_fmt:
            raise bad_request(f"format={fmt} contradicts options={form}")
        form = chosen_fmt
    return form or "normalized", sys_attrs, others


def _strip_sys(inst: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in inst.items():
        if key in SYS_ATTRS:
            continue
        if isinstance(value, dict) and key not in model.ATTRIBUTE_MEMBERS:
            out[key] = _strip_sys(value)
        else:
            out[key] = value
    return out


def _pick_language(language_map: Mapping[str, Any], lang: str) -> tuple[str, Any] | None:
    if lang in language_map:
        return lang, language_map[lang]
    for tag in lang.split(","):
        tag = tag.split(";", 1)[0].strip()
        if tag in language_map:
            return tag, language_map[tag]
        for key in language_map:
            if key.split("-")[0] == tag.split("-")[0]:
                return key, language_map[key]
    if "@none" in language_map:
        return "@none", language_map["@none"]
    if language_map:
        first = next(iter(language_map))
        return first, language_map[first]
    return None


def _apply_lang(inst: dict[str, Any], lang: str) -> dict[str, Any]:
    if inst.get("type") != "LanguageProperty" or lang == "*":
        return inst
    language_map = inst.get("languageMap")
    if not isinstance(language_map, Mapping):
        return inst
    chosen = _pick_language(language_map, lang)
    out = {k: v for k, v in inst.items() if k not in ("type", "languageMap")}
    out = {"type": "Property", **out}
    if chosen is None:
        out["value"] = None
    else:
        out["value"] = chosen[1]
        if chosen[0] != "@none":
            out["lang"] = chosen[0]
    return out


def filter_doc(doc: Mapping[str, Any], opts: RenderOptions) -> dict[str, Any]:
    """Select members, attributes and instances; strip sysAttrs; apply ``lang``."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _ENTITY_KEYS:
            if key in SYS_ATTRS and not opts.sys_attrs:
                continue
            if key in opts.omit:
                continue
            if opts.keep_members is not None and key in ("type", "scope") and key not in opts.keep_members:
                continue
            out[key] = value
            continue
        if opts.attrs is not None and key not in opts.attrs:
            continue
        if key in opts.omit:
            continue
        insts = value
        if opts.dataset_ids is not None:
            insts = [i for i in insts if i.get("datasetId", "@none") in opts.dataset_ids]
            if not insts:
                continue
        if not opts.sys_attrs:
            insts = [_strip_sys(i) for i in insts]
        if opts.lang is not None:
            insts = [_apply_lang(i, opts.lang) for i in insts]
        out[key] = insts
    if opts.keep_members is not None and "id" not in opts.keep_members:
        out.pop("id", None)
    return out


def _selects(opts: RenderOptions) -> bool:
    return (
        opts.attrs is not None
        or bool(opts.omit)
        or opts.keep_members is not None
        or opts.lang is not None
        or opts.dataset_ids is not None
    )


def render(doc: Mapping[str, Any], ctx: Context, opts: RenderOptions) -> dict[str, Any]:
    """One stored document as the response entity for this request."""
    if _selects(opts):
        compacted = ctx.compact_entity(filter_doc(doc, opts))
    else:  # the common case: one pass that compacts and drops system attributes together
        compacted = ctx.compact_entity(doc, sys_attrs=opts.sys_attrs)
    if opts.form == "keyValues":
        return model.to_key_values(compacted)
    if opts.form == "concise":
        return model.to_concise(compacted)
    return compacted


def render_feature(
    doc: Mapping[str, Any], ctx: Context, opts: RenderOptions, geometry_iri: str
) -> dict[str, Any]:
    """One stored document as a GeoJSON Feature (§6.3.15), geometry from ``geometry_iri``."""
    geometry = None
    for inst in doc.get(geometry_iri) or []:
        if inst.get("type") == "GeoProperty" and model.is_geojson(inst.get("value")):
            geometry = inst["value"]
            break
    body = render(doc, ctx, opts)
    properties = {k: v for k, v in body.items() if k != "id"}
    return {"id": doc["id"], "type": "Feature", "geometry": geometry, "properties": properties}
