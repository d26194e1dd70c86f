"""The records of a bundle: entities, history instances and subscriptions as NDJSON lines, and back.

Every line is NGSI-LD in the normalized form, compacted with the export's @context and carrying
it (``@context`` member), so any NGSI-LD tool reads a line on its own:

- ``entities.ndjson``: one entity per line, with its system times (createdAt, modifiedAt);
- ``history.ndjson``: one attribute instance per line, as a temporal fragment
  ``{"id", "type", "<attribute>": {instance with instanceId, observedAt, createdAt, modifiedAt}}``
  — exactly what ``POST /temporal/entities/{id}/attrs`` accepts;
- ``subscriptions.ndjson``: one subscription per line, as ``GET /subscriptions`` shows it
  (credentials in ``receiverInfo`` and endpoint URIs replaced by a marker).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from gateway.model import ENTITY_MEMBERS
from gateway.store.jsonld import Context

SECRET_MARKER: Final = "<secret removed by jonction export>"
"""What replaces a secret in an exported configuration or subscription."""
_SECRET_KEY: Final = re.compile(r"token|secret|passw|pwd|api[-_]?key|apikey|credential|authorization|cookie",
                                re.IGNORECASE)
_NAME_SUFFIXES: Final = ("_env", "_file")
"""Keys naming where a secret is (a variable, a file), never the secret itself: kept."""
SYS_TIMES: Final = ("createdAt", "modifiedAt")


def is_secret_key(key: str) -> bool:
    """True when the value of ``key`` is a credential (``token``, ``password``, ``api_key``, ``Authorization``…)."""
    return bool(_SECRET_KEY.search(key)) and not key.lower().endswith(_NAME_SUFFIXES)


def redact_uri(uri: str) -> tuple[str, bool]:
    """``scheme://user:pass@host`` → the password replaced; (text, True when something was removed)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri, False
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return uri, False
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{SECRET_MARKER}@{host}").geturl(), True


def redact(node: Any, pointer: str, removed: list[str]) -> Any:
    """A copy of ``node`` with secret-named values and URI passwords replaced; ``removed`` gets their pointers."""
    pair = isinstance(node, Mapping) and isinstance(node.get("key"), str) and "value" in node
    if pair and is_secret_key(node["key"]):
        # a key/value pair (receiverInfo, notifierInfo): an Authorization header is a credential
        removed.append(f"{pointer}/value")
        return {**node, "value": SECRET_MARKER}
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            here = f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if is_secret_key(str(key)) and value not in (None, "", [], {}):
                out[key] = SECRET_MARKER
                removed.append(here)
            else:
                out[key] = redact(value, here, removed)
        return out
    if isinstance(node, list):
        return [redact(v, f"{pointer}/{i}", removed) for i, v in enumerate(node)]
    if isinstance(node, str) and "://" in node and "@" in node:
        text, changed = redact_uri(node)
        if changed:
            removed.append(pointer)
        return text
    return node


def entity_line(ctx: Context, doc: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """A stored (expanded) entity as its export line: compacted, system times kept, @context given."""
    line = ctx.compact_entity(doc, sys_attrs=True)
    line["@context"] = context
    return line


def instance_line(
    ctx: Context, entity_id: str, types: list[str], attr: str, instance: Mapping[str, Any], context: Any
) -> dict[str, Any]:
    """One expanded history instance as its export line (a one-attribute temporal fragment)."""
    compact_types = [ctx.compact_iri(t) for t in types]
    return {
        "id": entity_id,
        "type": compact_types[0] if len(compact_types) == 1 else compact_types,
        ctx.compact_iri(attr): ctx.compact_instance(instance, sys_attrs=True),
        "@context": context,
    }


def split_instance(line: Mapping[str, Any]) -> tuple[str, Any, str, dict[str, Any]]:
    """(entity id, type, attribute name, instance) of a history line; ValueError when it is not one."""
    entity_id = line.get("id")
    attrs = [k for k in line if k not in ENTITY_MEMBERS]
    if not isinstance(entity_id, str) or "type" not in line or len(attrs) != 1:
        raise ValueError("a history line holds id, type and exactly one attribute")
    instance = line[attrs[0]]
    if not isinstance(instance, Mapping):
        raise ValueError(f"/{attrs[0]}: the instance is not a JSON object")
    return entity_id, line["type"], attrs[0], dict(instance)


def restore_times(expanded: dict[str, Any], line: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Put back the system times that expansion drops (entity and every instance), from the line."""
    for name in SYS_TIMES:
        if isinstance(line.get(name), str):
            expanded[name] = line[name]
    for name, value in line.items():
        if name in ENTITY_MEMBERS:
            continue
        insts = value if isinstance(value, list) else [value]
        stored = expanded.get(ctx.expand_attr_name(name, f"/{name}"))
        if not isinstance(stored, list) or len(stored) != len(insts):
            continue
        for target, source in zip(stored, insts, strict=True):
            if isinstance(source, Mapping) and isinstance(target, dict):
                for member in SYS_TIMES:
                    if isinstance(source.get(member), str):
                        target[member] = source[member]
    return expanded


def subscription_line(stored: Mapping[str, Any], sub_id: str, removed: list[str], where: str) -> dict[str, Any]:
    """A subscription from the store's table document (definition, context, times) as its export line."""
    definition = redact(dict(stored.get("definition") or {}), where, removed)
    line: dict[str, Any] = {**definition, "id": sub_id, "type": "Subscription"}
    for name in SYS_TIMES:
        if isinstance(stored.get(name), str) and stored[name]:
            line[name] = stored[name]
    context = stored.get("context")
    if context:
        line["@context"] = context[0] if isinstance(context, list) and len(context) == 1 else context
    return line


def subscription_stored(line: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(id, the store's table document) of a subscription line."""
    sub_id = line.get("id")
    if not isinstance(sub_id, str):
        raise ValueError("a subscription line needs an id")
    context = line.get("@context")
    definition = {k: v for k, v in line.items() if k not in ("id", "type", "@context", *SYS_TIMES)}
    return sub_id, {
        "definition": definition,
        "context": [] if context is None else (context if isinstance(context, list) else [context]),
        "createdAt": line.get("createdAt", ""),
        "modifiedAt": line.get("modifiedAt", ""),
        "stats": {},
    }
