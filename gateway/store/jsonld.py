"""The slice of JSON-LD that NGSI-LD needs, offline: term expansion and compaction of entities.

A :class:`Context` is built from the list of @context entries a request carries (IRIs or
inline objects). IRIs resolve through the contexts bundled in ``schemas.contexts`` or the
contexts this store hosts (``/jsonldContexts``); any other IRI is LdContextNotAvailable (504),
because the product never fetches a @context from the network. The NGSI-LD core context is
always applied last, so its terms always win (§5.5.7).

Stored entities are *expanded normalized*: entity type and attribute names are IRIs, each
attribute is a list of instances, members of an instance (``type``, ``value``, ``observedAt``…)
keep their core names, sub-attribute names are IRIs, and values are untouched except
VocabProperty ``vocab`` values, which are expanded like types::

    {"id": "urn:ngsi-ld:X:1", "type": ["https://…/X"], "scope": [...]?,
     "createdAt": "…", "modifiedAt": "…",
     "https://…/temperature": [{"type": "Property", "value": 21.5, "createdAt": …, …}]}
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, cast

from gateway import model
from gateway.pointer import escape
from gateway.store.problems import NgsiError, bad_request

ContextEntry = str | Mapping[str, Any]
"""One @context entry: an IRI or an inline context object."""

Resolver = Callable[[str], Mapping[str, Any] | None]
"""Returns the context document (or its @context value) for an IRI, or None when unknown."""

NGSI_LD: Final = "https://uri.etsi.org/ngsi-ld/"
DEFAULT_VOCAB: Final = "https://uri.etsi.org/ngsi-ld/default-context/"
NULL_URN: Final = "urn:ngsi-ld:null"
"""The NGSI-LD null marker used by merge-patch and partial updates to delete."""

SYS_ATTRS: Final = frozenset({"createdAt", "modifiedAt", "deletedAt"})
_MAX_DEPTH: Final = 8
_MAX_ATTRS: Final = 2000
_MAX_GEO: Final = 64
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_CORE_ALIAS = re.compile(r"^https://uri\.etsi\.org/ngsi-ld/v1/ngsi-ld-core-context(-v1\.\d+)?\.jsonld$")
_CANONICAL_TIME = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{3}|\.\d{6})?Z$"
)
"""RFC 3339 UTC as jonction writes it: kept as is (the common case), anything else is parsed."""
_TERM_OK = re.compile(r"^[^\s<>\"'=;()\\&?*]+$")
_PLAIN_MEMBERS: Final = model.ATTRIBUTE_MEMBERS - SYS_ATTRS - {"instanceId"}
"""Instance members copied as they are: an instance with only these needs no per-member walk."""
_NAME_CACHE: Final = 10000
"""Most names (attributes, types) one context remembers: a batch repeats the same few."""


def core_context_iri() -> str:
    """The IRI of the NGSI-LD core @context (v1.8/1.9), from ``schemas.contexts``."""
    from schemas import contexts

    return str(contexts.CORE_CONTEXT_IRI)


def jonction_context_iri() -> str:
    """The IRI of jonction's merged @context (core + Smart Data Models terms)."""
    from schemas import contexts

    return str(contexts.JONCTION_CONTEXT_IRI)


def bundled(iri: str) -> Mapping[str, Any] | None:
    """A context shipped with the product, or None."""
    from schemas import contexts

    try:
        found = contexts.bundled_context(iri)
    except (KeyError, LookupError, ValueError):
        return None
    return found if isinstance(found, Mapping) else None


def _context_value(document: Mapping[str, Any]) -> Any:
    """The @context value of a context document (or the document itself if it has none)."""
    return document["@context"] if "@context" in document else document


class Context:
    """Term definitions resolved from a list of @context entries, with the core context last."""

    def __init__(self, entries: Sequence[ContextEntry], resolve: Resolver | None = None) -> None:
        self.entries: tuple[ContextEntry, ...] = tuple(entries)
        self._resolve = resolve
        self.terms: dict[str, str] = {}
        """term → absolute IRI."""
        self.vocab_typed: set[str] = set()
        """Terms whose values are themselves terms (``"@type": "@vocab"``)."""
        self.vocab: str = DEFAULT_VOCAB
        self._raw: dict[str, Any] = {}
        self._core_terms: dict[str, str] = {}
        self._user_vocab: str | None = None
        for entry in self.entries:
            self._load(entry, 0, core=False)
        user_raw = self._raw
        self._raw = {}
        core_iri = core_context_iri()
        core_doc = bundled(core_iri)
        if core_doc is None:  # pragma: no cover - the schemas room ships it
            raise NgsiError("InternalError", f"the core @context {core_iri} is not bundled")
        self._load_value(_context_value(core_doc), 0, core=True)
        core_raw = self._raw
        # Core wins: its definitions overwrite any user term of the same name.
        merged = {**user_raw, **core_raw}
        self._raw = merged
        for term in merged:
            iri = self._define(term, set())
            if iri is not None:
                self.terms[term] = iri
                if term in core_raw:
                    self._core_terms[term] = iri
        if self._user_vocab is not None:
            self.vocab = self._user_vocab
        self.prefixes: dict[str, str] = {
            t: iri for t, iri in self.terms.items() if iri.endswith(("/", "#", ":")) and ":" not in t
        }
        # Inverse map for compaction: user terms (later definitions win), then core terms win.
        self._inverse: dict[str, str] = {}
        for term, iri in self.terms.items():
            if term not in core_raw:
                self._inverse[iri] = term
        for term, iri in self._core_terms.items():
            self._inverse[iri] = term
        self._expand_cache: dict[str, str] = {}
        self._compact_cache: dict[str, str] = {}
        self._valid_names: set[str] = set()
        # Per-name results of expand_entity, checked once: attribute name -> (IRI, JSON pointer) and
        # entity type term -> IRI. A context is immutable once built, so they never go stale.
        self._attr_iris: dict[str, tuple[str, str]] = {}
        self._type_iris: dict[str, str] = {}

    # ------------------------------------------------------------------ loading

    def _load(self, entry: Any, depth: int, *, core: bool) -> None:
        if depth > _MAX_DEPTH:
            raise bad_request("@context nesting is too deep")
        if isinstance(entry, str):
            if entry == core_context_iri() or _CORE_ALIAS.match(entry):
                return  # the core context is always applied last anyway
            document = bundled(entry)
            if document is None and self._resolve is not None:
                document = self._resolve(entry)
            if document is None:
                raise NgsiError(
                    "LdContextNotAvailable",
                    f"@context {entry} is neither bundled nor hosted here, and remote contexts are "
                    "never fetched",
                )
            self._load_value(_context_value(document), depth + 1, core=core)
        elif isinstance(entry, Mapping):
            self._load_value(entry, depth, core=core)
        elif entry is None:
            self._raw.clear()
        else:
            raise bad_request(f"@context entry of type {type(entry).__name__} is not an IRI or an object")

    def _load_value(self, value: Any, depth: int, *, core: bool) -> None:
        if isinstance(value, list):
            for item in value:
                self._load(item, depth + 1, core=core)
            return
        if isinstance(value, str) or value is None:
            self._load(value, depth + 1, core=core)
            return
        if not isinstance(value, Mapping):
            raise bad_request("@context must be an IRI, an object or an array of them")
        for term, definition in value.items():
            if term == "@vocab":
                if isinstance(definition, str):
                    if core:
                        pass  # the core @vocab is the default; a user @vocab takes precedence
                    else:
                        self._user_vocab = definition
                continue
            if term.startswith("@"):
                continue  # @version, @protected, @base, @language: not needed for names
            if definition is None:
                self._raw.pop(term, None)
                continue
            if not isinstance(definition, str | Mapping):
                raise bad_request(f"@context term {term!r} has an invalid definition")
            self._raw[term] = definition
            if isinstance(definition, Mapping) and definition.get("@type") == "@vocab":
                self.vocab_typed.add(term)

    def _define(self, term: str, seen: set[str]) -> str | None:
        """Resolve one raw term definition to an absolute IRI (prefixes and term chains)."""
        definition = self._raw.get(term)
        target: Any = definition.get("@id") if isinstance(definition, Mapping) else definition
        if target is None:
            target = term
        if not isinstance(target, str) or target.startswith("@"):
            return None  # keyword aliases such as "id": "@id"
        if term in seen:
            return None
        seen.add(term)
        return self._resolve_iri(target, seen, allow_self=target != term)

    def _resolve_iri(self, value: str, seen: set[str], *, allow_self: bool = True) -> str | None:
        if ":" in value:
            prefix, _, suffix = value.partition(":")
            if not suffix.startswith("//") and prefix in self._raw and prefix not in seen:
                base = self._define(prefix, set(seen))
                if base is not None:
                    return base + suffix
            return value
        if allow_self and value in self._raw:
            return self._define(value, seen)
        vocab = self._user_vocab or DEFAULT_VOCAB
        return vocab + value

    # ------------------------------------------------------------------ terms

    def expand_term(self, term: str) -> str:
        """The IRI of a term, compact IRI or absolute IRI (via @vocab when undefined)."""
        cached = self._expand_cache.get(term)
        if cached is not None:
            return cached
        iri = self.terms.get(term)
        if iri is None:
            if ":" in term:
                prefix, _, suffix = term.partition(":")
                base = self.prefixes.get(prefix) or self.terms.get(prefix)
                iri = base + suffix if base is not None and not suffix.startswith("//") else term
            else:
                iri = self.vocab + term
        if len(self._expand_cache) < 10000:
            self._expand_cache[term] = iri
        return iri

    def compact_iri(self, iri: str) -> str:
        """The shortest term naming ``iri`` in this context, else a compact IRI, else ``iri``."""
        cached = self._compact_cache.get(iri)
        if cached is not None:
            return cached
        term = self._inverse.get(iri)
        if term is None:
            if iri.startswith(self.vocab) and len(iri) > len(self.vocab):
                suffix = iri[len(self.vocab) :]
                if suffix not in self.terms and ":" not in suffix:
                    term = suffix
            if term is None:
                best = ""
                for prefix, base in self.prefixes.items():
                    if iri.startswith(base) and len(base) > len(best) and len(iri) > len(base):
                        best = base
                        term = f"{prefix}:{iri[len(base):]}"
            if term is None:
                term = iri
        if len(self._compact_cache) < 10000:
            self._compact_cache[iri] = term
        return term

    # ------------------------------------------------------------------ entities

    def expand_type(self, value: Any, pointer: str = "/type") -> list[str]:
        """Expand an entity type member (string or array of strings) to a list of IRIs."""
        if type(value) is str:
            known = self._type_iris.get(value)
            if known is not None:
                return [known]
        names = value if isinstance(value, list) else [value]
        if not names:
            raise bad_request(f"{pointer}: an entity needs at least one type")
        out: list[str] = []
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name or not _TERM_OK.match(name) or self.is_keyword(name):
                raise bad_request(f"{pointer}/{i}: invalid entity type {name!r}")
            iri = self.expand_term(name)
            if iri not in out:
                out.append(iri)
        if type(value) is str and len(self._type_iris) < _NAME_CACHE:
            self._type_iris[value] = out[0]  # checked: the next entity of this type skips the checks
        return out

    def expand_entity(self, item: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
        """Validate and expand an entity (normalized or concise) to the stored form.

        ``partial`` accepts fragments without id/type (attribute updates, merge patches) and
        keeps ``urn:ngsi-ld:null`` markers for the caller to interpret.
        """
        if not isinstance(item, Mapping):
            raise bad_request("the entity must be a JSON object")
        if len(item) > _MAX_ATTRS:
            raise bad_request(f"too many attributes (more than {_MAX_ATTRS})")
        out: dict[str, Any] = {}
        entity_id = item.get("id", item.get("@id"))
        if entity_id is not None or not partial:
            if not model.is_uri(entity_id):
                raise bad_request(f"/id: entity id {entity_id!r} is missing or not a URI")
            out["id"] = entity_id
        entity_type = item.get("type", item.get("@type"))
        if entity_type is not None or not partial:
            if entity_type is None:
                raise bad_request("/type: the entity type is missing")
            out["type"] = self.expand_type(entity_type)
        if "scope" in item:
            out["scope"] = _check_scope(item["scope"])
        geo_count = 0
        known_names = self._attr_iris
        entity_members = model.ENTITY_MEMBERS
        for name, value in item.items():
            if name in entity_members:
                continue
            known = known_names.get(name)
            if known is None:
                # first sight of this name: the value's errors are reported before the name's
                pointer = f"/{escape(name)}"
                insts = self.expand_attribute(value, pointer, partial=partial)
                iri = self.expand_attr_name(name, f"/{name}")
                if len(known_names) < _NAME_CACHE:
                    known_names[name] = (iri, pointer)
            else:
                iri, pointer = known
                insts = self.expand_attribute(value, pointer, partial=partial)
            out[iri] = insts
            for inst in insts:
                if inst.get("type") == "GeoProperty":
                    geo_count += 1
        if geo_count > _MAX_GEO:
            raise bad_request(f"more than {_MAX_GEO} GeoProperty instances in one entity")
        return out

    def is_keyword(self, name: str) -> bool:
        """True for a JSON-LD keyword or a term the context aliases to one (``type`` → ``@type``).

        Such a name expands to no IRI, so it can name neither an entity type nor an attribute.
        """
        if name.startswith("@"):
            return True
        definition = self._raw.get(name)
        target = definition.get("@id") if isinstance(definition, Mapping) else definition
        return isinstance(target, str) and target.startswith("@")

    def expand_attr_name(self, name: str, pointer: str) -> str:
        """Expand an attribute name after checking it is usable as a term."""
        if name not in self._valid_names:
            if not name or not _TERM_OK.match(name) or name.startswith("@"):
                raise bad_request(f"{pointer}: invalid attribute name {name!r}")
            if len(self._valid_names) < 10000:
                self._valid_names.add(name)
        return self.expand_term(name)

    def expand_attribute(self, value: Any, pointer: str, *, partial: bool = False) -> list[dict[str, Any]]:
        """Validate and expand one attribute (any form) to its list of instances."""
        if partial and value == NULL_URN:
            return [{"type": "Property", "value": NULL_URN}]
        if value is None:
            raise bad_request(f"{pointer}: null is not a valid attribute value")
        if type(value) is dict and str(value.get("type")) in model.ATTRIBUTE_TYPES:
            return [self._expand_instance(value, pointer, partial=partial)]  # already normalized: fast path
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if (
                isinstance(item, Mapping)
                and "type" in item
                and str(item["type"]) not in model.ATTRIBUTE_TYPES
                and not model.is_geojson(item)
                and any(k in item for k in model.VALUE_KEY.values())
            ):
                where = f"{pointer}/{i}" if isinstance(value, list) else pointer
                raise bad_request(f"{where}/type: {item['type']!r} is not an NGSI-LD attribute type")
        normalized = model._normalize_attr(value)
        items = normalized if isinstance(normalized, list) else [normalized]
        seen: set[str | None] = set()
        out = []
        for i, inst in enumerate(items):
            where = f"{pointer}/{i}" if isinstance(normalized, list) else pointer
            expanded = self._expand_instance(inst, where, partial=partial)
            ds = expanded.get("datasetId")
            if ds in seen:
                raise bad_request(f"{where}: two instances with the same datasetId {ds!r}")
            seen.add(ds)
            out.append(expanded)
        return out

    def expand_attribute_fragment(self, value: Any, pointer: str = "") -> dict[str, Any]:
        """Expand the body of a Partial Attribute Update (§5.6.4): members of one instance, ``type`` optional.

        With a ``type`` and its value member it is a whole instance; otherwise only the members
        given are checked (a value, a datasetId, sub-attributes…). An empty fragment is refused.
        """
        if not isinstance(value, Mapping):
            raise bad_request(f"{pointer or '/'}: the attribute fragment must be a JSON object")
        if not value:
            raise bad_request(f"{pointer or '/'}: the attribute fragment is empty")
        attr_type = value.get("type")
        if attr_type is not None and attr_type not in model.ATTRIBUTE_TYPES:
            raise bad_request(f"{pointer}/type: {attr_type!r} is not an NGSI-LD attribute type")
        if attr_type is not None and model.VALUE_KEY[str(attr_type)] in value:
            return self._expand_instance(value, pointer, partial=True)
        out: dict[str, Any] = {}
        for member, sub in value.items():
            if member in SYS_ATTRS or member == "instanceId":
                continue
            if member in model.ATTRIBUTE_MEMBERS:
                if sub is None:
                    raise bad_request(f"{pointer}/{member}: null is not allowed")
                out[member] = sub
            else:
                sub_iri = self.expand_attr_name(member, f"{pointer}/{escape(member)}")
                out[sub_iri] = self.expand_attribute(sub, f"{pointer}/{escape(member)}", partial=True)[0]
        if not any(k for k in out if k != "datasetId"):
            raise bad_request(f"{pointer or '/'}: the attribute fragment changes nothing")
        if "datasetId" in out and not model.is_uri(out["datasetId"]):
            raise bad_request(f"{pointer}/datasetId: {out['datasetId']!r} is not a URI")
        if "observedAt" in out:
            try:
                out["observedAt"] = model.utc_time(out["observedAt"])
            except (model.ModelError, TypeError) as exc:
                raise bad_request(f"{pointer}/observedAt: {exc}") from None
        return out

    def _expand_instance(self, inst: Mapping[str, Any], pointer: str, *, partial: bool) -> dict[str, Any]:
        attr_type = inst.get("type")
        if attr_type not in model.ATTRIBUTE_TYPES:
            raise bad_request(f"{pointer}/type: {attr_type!r} is not an NGSI-LD attribute type")
        key = model.VALUE_KEY[str(attr_type)]
        if key not in inst:
            raise bad_request(f"{pointer}: a {attr_type} needs a {key!r} member")
        val = inst[key]
        if val is None:
            raise bad_request(f"{pointer}/{key}: null is not allowed")
        is_null = partial and val == NULL_URN
        out: dict[str, Any]
        if inst.keys() <= _PLAIN_MEMBERS:
            out = dict(inst)  # the usual instance: no sub-attribute, nothing system-generated to drop
        else:
            out = {}
            for member, sub in inst.items():
                if member in SYS_ATTRS or member == "instanceId":
                    continue  # system-generated: never taken from the client
                if member in model.ATTRIBUTE_MEMBERS:
                    out[member] = sub
                else:
                    # sub-attribute names repeat on every entity (LoRaWAN radio metadata): checked and
                    # escaped once per context, in the cache of attribute names (same IRI, same pointer)
                    known = self._attr_iris.get(member)
                    if known is None:
                        tail = f"/{escape(member)}"
                        sub_iri = self.expand_attr_name(member, pointer + tail)
                        if len(self._attr_iris) < _NAME_CACHE:
                            self._attr_iris[member] = (sub_iri, tail)
                    else:
                        sub_iri, tail = known
                    sub_insts = self.expand_attribute(sub, pointer + tail, partial=partial)
                    out[sub_iri] = sub_insts[0]
        if not is_null and attr_type != "Property":  # a Property's value can be any JSON
            _check_value(str(attr_type), val, f"{pointer}/{key}")
            if attr_type == "VocabProperty":
                out["vocab"] = self._expand_vocab(val, f"{pointer}/vocab")
        if "datasetId" in out and not model.is_uri(out["datasetId"]):
            raise bad_request(f"{pointer}/datasetId: {out['datasetId']!r} is not a URI")
        observed = out.get("observedAt")
        if observed is not None and not (isinstance(observed, str) and _CANONICAL_TIME.match(observed)):
            try:
                out["observedAt"] = model.utc_time(observed)
            except (model.ModelError, TypeError) as exc:
                raise bad_request(f"{pointer}/observedAt: {exc}") from None
        if "unitCode" in out and not isinstance(out["unitCode"], str):
            raise bad_request(f"{pointer}/unitCode: must be a string")
        return out

    def _expand_vocab(self, value: Any, pointer: str) -> Any:
        if isinstance(value, str):
            return self.expand_term(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [self.expand_term(v) for v in value]
        raise bad_request(f"{pointer}: a vocab must be a term or an array of terms")

    def compact_entity(self, doc: Mapping[str, Any], *, sys_attrs: bool = True) -> dict[str, Any]:
        """Compact a stored (expanded) entity to the normalized form (without sysAttrs if asked)."""
        out: dict[str, Any] = {}
        for name, value in doc.items():
            if name == "id":
                out["id"] = value
            elif name == "type":
                types = [self.compact_iri(t) for t in value]
                out["type"] = types[0] if len(types) == 1 else types
            elif name in SYS_ATTRS:
                if sys_attrs:
                    out[name] = value
            elif name == "scope":
                # JSON-LD compaction: a set of one scope is the bare string (§4.18 examples)
                out[name] = value[0] if isinstance(value, list) and len(value) == 1 else value
            else:
                insts = [self.compact_instance(i, sys_attrs=sys_attrs) for i in value]
                out[self.compact_iri(name)] = insts[0] if len(insts) == 1 else insts
        return out

    def compact_instance(self, inst: Mapping[str, Any], *, sys_attrs: bool = True) -> dict[str, Any]:
        """Compact one stored attribute instance (sub-attribute names and vocab values)."""
        out: dict[str, Any] = {}
        members = model.ATTRIBUTE_MEMBERS
        for member, value in inst.items():
            if member in members:
                if member in SYS_ATTRS and not sys_attrs:
                    continue
                if member == "vocab" and inst.get("type") == "VocabProperty":
                    out[member] = (
                        self.compact_iri(value) if isinstance(value, str) else [self.compact_iri(v) for v in value]
                    )
                else:
                    out[member] = value
            else:
                out[self.compact_iri(member)] = self.compact_instance(value, sys_attrs=sys_attrs)
        return out

    def as_json(self) -> Any:
        """The @context value to put in an ld+json response body: the request's own, as it came.

        §6.3.6 answers with the context the client used; the core context is implied (it always
        wins), so it is only named when the client named nothing.
        """
        if not self.entries:
            return core_context_iri()
        if len(self.entries) == 1:
            return self.entries[0]
        return list(self.entries)


def _check_scope(value: Any) -> list[str]:
    scopes = value if isinstance(value, list) else [value]
    for s in scopes:
        if not isinstance(s, str) or not re.fullmatch(r"/?[^\s/]+(/[^\s/]+)*|/", s):
            raise bad_request(f"/scope: {s!r} is not a valid scope")
    return list(scopes)


def _check_value(attr_type: str, value: Any, pointer: str) -> None:
    if attr_type == "Relationship":
        if not model.is_uri(value) and not (
            isinstance(value, list) and value and all(model.is_uri(v) for v in value)
        ):
            raise bad_request(f"{pointer}: a Relationship object must be a URI")
    elif attr_type == "GeoProperty":
        _check_geometry(value, pointer)
    elif attr_type == "LanguageProperty":
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | list) for k, v in value.items()
        ):
            raise bad_request(f"{pointer}: a languageMap maps language tags to strings")
    elif attr_type in ("ListProperty", "ListRelationship"):
        if not isinstance(value, list):
            raise bad_request(f"{pointer}: must be an array")


def _check_geometry(value: Any, pointer: str) -> None:
    if type(value) is dict and value.get("type") == "Point":
        # the usual geometry, checked without the general walk (which also reports what is wrong)
        coords = value.get("coordinates")
        if (
            type(coords) is list
            and 2 <= len(coords) <= 3
            and all(type(c) is float or type(c) is int for c in coords)
            and -180 <= coords[0] <= 180
            and -90 <= coords[1] <= 90
        ):
            return
    if not model.is_geojson(value):
        raise bad_request(f"{pointer}: a GeoProperty value must be a GeoJSON geometry")
    if value["type"] == "GeometryCollection":
        geoms = value.get("geometries")
        if not isinstance(geoms, list):
            raise bad_request(f"{pointer}/geometries: must be an array")
        for i, g in enumerate(geoms):
            _check_geometry(g, f"{pointer}/geometries/{i}")
        return
    depth = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2,
             "MultiPolygon": 3}[value["type"]]
    if not _positions_ok(value["coordinates"], depth):
        raise bad_request(f"{pointer}/coordinates: invalid {value['type']} coordinates")


def _positions_ok(coords: Any, depth: int) -> bool:
    if depth == 0:
        return (
            isinstance(coords, list)
            and 2 <= len(coords) <= 3
            and all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords)
            and -180 <= coords[0] <= 180
            and -90 <= coords[1] <= 90
        )
    return isinstance(coords, list) and bool(coords) and all(_positions_ok(c, depth - 1) for c in coords)


class ContextCache:
    """Contexts built once per list of entries (IRIs and inline objects), LRU-bounded."""

    def __init__(self, resolve: Resolver | None = None, size: int = 256) -> None:
        self._resolve = resolve
        self._size = size
        self._items: OrderedDict[str | tuple[str, ...], Context] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entries: Sequence[ContextEntry]) -> Context:
        """The Context for these entries, built on first use."""
        key: str | tuple[str, ...]
        if all(type(e) is str for e in entries):
            # IRIs only (a Link header, the runtime's context): looked up once per entity of a batch,
            # where serializing the key cost more than expanding a small entity's names
            key = tuple(cast(Sequence[str], entries))
        else:
            key = json.dumps(list(entries), sort_keys=True, separators=(",", ":"))
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        built = Context(entries, self._resolve)
        with self._lock:
            self._items[key] = built
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return built

    def clear(self) -> None:
        """Forget every cached context (a hosted context changed)."""
        with self._lock:
            self._items.clear()


def normalize_entries(value: Any) -> list[ContextEntry]:
    """The @context value of a request as a list of entries (validated)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str | Mapping):
            raise bad_request("@context must be an IRI, an object or an array of them")
        if isinstance(item, str) and not _ABSOLUTE.match(item):
            raise bad_request(f"@context entry {item!r} is not an absolute IRI")
    return list(items)
