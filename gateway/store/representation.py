"""Entity representations on read (§4.5, §6.3.7): normalized, concise, keyValues, GeoJSON.

A stored document is filtered (attrs/pick/omit, datasetId), stripped of system attributes
unless ``sysAttrs`` was asked, language-filtered (``lang``, §4.15), compacted with the
request's @context, then projected to the requested form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from gateway import model
from gateway.store.jsonld import SYS_ATTRS, Context
from gateway.store.problems import NgsiError, bad_request

Form = Literal["normalized", "concise", "keyValues"]

_FORMS: Final[Mapping[str, Form]] = {
    "normalized": "normalized",
    "concise": "concise",
    "keyValues": "keyValues",
    "simplified": "keyValues",
}
_ENTITY_KEYS: Final = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})
ENTITY_MEMBERS: Final = frozenset({"id", "type", "scope"})
"""Entity members that pick/omit address by name beside attributes."""
MAX_PROJECTION_NAMES: Final = 256
"""Most names in one pick/omit expression (nested ones included)."""
MAX_PROJECTION_DEPTH: Final = 8
"""Deepest nesting of ``{...}`` in pick/omit."""
_PROJECTION_NAME = re.compile(r"[A-Za-z0-9_@#:/.\-]+")


@dataclass(frozen=True, slots=True)
class Projection:
    """A parsed ``pick`` or ``omit`` (§4.21): names at this level, sub-projections for linked entities.

    ``locatedAt{id,name}`` names the relationship ``locatedAt`` here and projects the entities it
    links to (with ``join``) through ``{id,name}``.
    """

    names: tuple[str, ...]
    children: Mapping[str, Projection] = field(default_factory=dict)


def parse_projection(text: str, what: str) -> Projection:
    """Parse ``a,b{c,d{e}}``; BadRequestData names the problem (empty item, brace, character)."""
    pos = 0
    count = 0

    def fail(message: str) -> Exception:
        return bad_request(f"{what}: {message} at position {pos} in {text!r}")

    def parse_list(depth: int) -> Projection:
        nonlocal pos, count
        if depth > MAX_PROJECTION_DEPTH:
            raise fail(f"more than {MAX_PROJECTION_DEPTH} nested braces")
        names: list[str] = []
        children: dict[str, Projection] = {}
        while True:
            match = _PROJECTION_NAME.match(text, pos)
            if match is None:
                found = repr(text[pos]) if pos < len(text) else "the end"
                raise fail(f"expected an attribute or member name, found {found}")
            name = match.group()
            pos = match.end()
            count += 1
            if count > MAX_PROJECTION_NAMES:
                raise fail(f"more than {MAX_PROJECTION_NAMES} names")
            names.append(name)
            if pos < len(text) and text[pos] == "{":
                pos += 1
                children[name] = parse_list(depth + 1)
                if pos >= len(text) or text[pos] != "}":
                    raise fail("unclosed '{'")
                pos += 1
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            return Projection(tuple(dict.fromkeys(names)), children)

    if not text:
        raise bad_request(f"{what} must name at least one attribute or member")
    tree = parse_list(0)
    if pos != len(text):
        raise fail(f"unexpected {text[pos]!r}")
    return tree


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
    pick: Projection | None = None
    """The pick expression, kept for the entities a ``join`` links to."""
    omit_tree: Projection | None = None
    """The omit expression, kept for the entities a ``join`` links to."""

    def for_link(self, name: str, expand: Callable[[str], str]) -> RenderOptions:
        """The options for an entity reached through relationship ``name`` (pick/omit sub-projections)."""
        pick = _child(self.pick, name, expand)
        omit = _child(self.omit_tree, name, expand)
        base = replace(self, attrs=None, keep_members=None, omit=frozenset(), pick=None, omit_tree=None)
        if pick is not None:
            base = replace(base, pick=pick, **selection_from_pick(pick, expand))
        if omit is not None:
            base = replace(base, omit_tree=omit, omit=omitted(omit, expand))
        return base


def _child(tree: Projection | None, name: str, expand: Callable[[str], str]) -> Projection | None:
    """The sub-projection for relationship ``name`` (matched as written or by its expanded IRI)."""
    if tree is None or not tree.children:
        return None
    if name in tree.children:
        return tree.children[name]
    iri = expand(name)
    for key, sub in tree.children.items():
        if expand(key) == iri:
            return sub
    return None


def selection_from_pick(pick: Projection, expand: Callable[[str], str]) -> dict[str, Any]:
    """``keep_members`` and ``attrs`` (IRIs) for a pick projection."""
    return {
        "keep_members": frozenset(n for n in pick.names if n in ENTITY_MEMBERS),
        "attrs": frozenset(expand(n) for n in pick.names if n not in ENTITY_MEMBERS),
    }


def omitted(omit: Projection, expand: Callable[[str], str]) -> frozenset[str]:
    """What an omit projection drops at its level: members and attribute IRIs, but not a name that
    only carries a sub-projection (``locatedAt{name}`` keeps ``locatedAt`` and omits in what it links)."""
    dropped = [n for n in omit.names if n not in omit.children]
    return frozenset(n if n in ENTITY_MEMBERS else expand(n) for n in dropped)


def parse_options(
    options: str | None,
    fmt: str | None,
    *,
    allowed: frozenset[str] = frozenset(),
    unknown: Callable[[str], NgsiError] = bad_request,
) -> tuple[Form, bool, set[str]]:
    """Read ``options`` and ``format``: (form, sysAttrs, other allowed options present).

    An unknown value raises ``unknown(detail)``: reads answer InvalidRequest (§6.3.7, ETSI 018_16),
    writes keep BadRequestData.
    """
    form: Form | None = None
    sys_attrs = False
    others: set[str] = set()
    for item in (options or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item in _FORMS:
            chosen = _FORMS[item]
            if form is not None and form != chosen:
                raise bad_request(f"options: {form} and {chosen} cannot be combined")
            form = chosen
        elif item == "sysAttrs":
            sys_attrs = True
        elif item in allowed:
            others.add(item)
        else:
            raise unknown(f"options: unknown or unsupported option {item!r} for this operation")
    if fmt is not None:
        chosen_fmt = _FORMS.get(fmt)
        if chosen_fmt is None:
            raise unknown(f"format: {fmt!r} is not one of normalized, concise, simplified, keyValues")
        # §6.3.7: format, when present, takes precedence over a representation named in options
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
    # "*" (any language, §4.15) falls through to the first entry of the map
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
    if inst.get("type") != "LanguageProperty":
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
    scope = compacted.get("scope")
    if isinstance(scope, list) and len(scope) == 1:
        # one scope is rendered as a string, like a single type (JSON-LD compaction of a one-item set)
        compacted["scope"] = scope[0]
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
