"""Gateway configuration: YAML, ``${ENV}`` substitution, JSON Schema check, typed settings.

Every problem in a file is reported at once, each naming its key (a JSON pointer). Secrets are
read from the environment (``${NAME}``) or from files (``token_file``), registered for masking
in logs, and never echoed back in an error message.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

import schemas
from gateway.console.outlines import outline_problems, outlines_path
from gateway.contract import Adapter
from gateway.errors import ConfigInvalid
from gateway.opendata.export import OpenDataSettings
from gateway.opendata.schedule import OpenDataJob
from gateway.pointer import pointer
from gateway.rules import config as rules_config
from gateway.rules.config import RuleSet
from gateway.runtime.logging import redact, register_secret
from gateway.runtime.pipeline import Route
from gateway.runtime.publisher import PublisherSettings
from gateway.runtime.routing import Router
from gateway.runtime.routing import build as build_router
from gateway.runtime.sinks import PROFILES, RemoteSettings
from gateway.secrets import read_secret
from gateway.store import sharing
from gateway.store.settings import load_tokens
from gateway.store.sharing import Policies

MAX_CONFIG_BYTES: Final = 1 << 20
LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
_WILDCARD: Final = frozenset({"0.0.0.0", "::", ""})
CONTEXT_PATH: Final = "/contexts/jonction.jsonld"
"""Where the gateway serves the jonction @context (GET, no token: brokers fetch it)."""
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?) ?([KMG])i?B$")
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd])$")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _alternatives(error: Any) -> str:
    """Say what a oneOf/anyOf wanted, in the user's words (never the whole object it was given)."""
    branches = error.validator_value if isinstance(error.validator_value, list) else []
    keys = [b["required"] for b in branches if isinstance(b, Mapping) and set(b) == {"required"}]
    instance = error.instance
    if keys and len(keys) == len(branches) and isinstance(instance, Mapping):
        names = [" and ".join(repr(k) for k in group) for group in keys]
        given = [n for n, group in zip(names, keys, strict=True) if all(k in instance for k in group)]
        if error.validator == "oneOf" and len(given) > 1:
            return f"give only one of {', '.join(given)} (both are set)"
        return f"missing key: give {' or '.join(names)}"
    description = error.schema.get("description") if isinstance(error.schema, Mapping) else None
    shown = repr(instance) if not isinstance(instance, Mapping | list) else type(instance).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{shown} is not valid" + (f": expected {description}" if description else "")


def schema_problems(schema: Mapping[str, Any], document: Any) -> list[str]:
    """Every problem of ``document`` against ``schema``, each naming its pointer and, for a choice
    between keys (oneOf/anyOf of ``required``), the key that is missing."""
    out: list[str] = []
    for error in schemas.problems(schema, document):
        where = pointer(error.absolute_path) or "/"
        text = _alternatives(error) if error.validator in ("oneOf", "anyOf") else error.message
        out.append(f"{where}: {text}")
    return out


def gateway_schema() -> dict[str, Any]:
    """The JSON Schema of the gateway configuration."""
    return schemas.load_schema("config/gateway.schema.json")


def duration(value: Any, default: float) -> float:
    """Seconds from a number or ``"30s"``/``"5m"``/``"2h"``/``"7d"``."""
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ConfigInvalid(f"{value!r} is not a duration")
    return float(match.group(1)) * _UNITS[match.group(2)]


def size(value: Any, default: int) -> int:
    """Bytes from an integer or ``"512MB"``/``"1GiB"`` (powers of 1024)."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigInvalid(f"{value!r} is not a size")
    return int(float(match.group(1)) * 1024 ** (" KMG".index(match.group(2))))


@dataclass(slots=True)
class SourceConfig:
    """One source: an adapter instance routed to a tenant."""

    name: str
    adapter: str
    config: dict[str, Any]
    tenant: str = ""
    routes: tuple[Route, ...] = ()
    enabled: bool = True
    routing: Router | None = None
    """``routing``: each entity to its commune's tenant (mapping, attribute, location)."""


@dataclass(slots=True)
class SinkConfig:
    """One remote NGSI-LD broker."""

    name: str
    settings: RemoteSettings
    tenants: frozenset[str] | None = None
    latest_only: bool = False
    """Merge an entity's readings waiting together into one upsert (brokers without history)."""


@dataclass(slots=True)
class SimulatorConfig:
    """A simulated vendor source started in-process (demo)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class GatewayConfig:
    """Everything ``jonction run`` needs, typed and checked."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None
    """How brokers and clients reach this gateway (``server.public_url``); None: from host and port."""
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    admin_token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    """Public host names the admin and write APIs answer to, besides loopback and the bind address."""
    durability: str = "normal"
    max_body: int = 1 << 20
    workers: int | None = None
    """``server.workers``: ingestion processes of ``jonction run``; None: auto (the number of cores)."""
    archive_max_bytes: int = 1 << 30
    archive_max_age_s: float = 7 * 86400.0
    outbox_max_bytes: int = 1 << 30
    dedup_max_age_s: float = 86400.0
    dedup_database: str | None = None
    """``dedup.database``: idempotency keys shared with other instances (PostgreSQL URL); None: local only."""
    dedup_password: str | None = None
    schema_validation: bool = True
    publisher: PublisherSettings = field(default_factory=PublisherSettings)
    drain_timeout_s: float = 10.0
    embedded: bool = True
    embedded_tenants: frozenset[str] | None = None
    embedded_database: str | None = None
    """``embedded_store.database``: the store's database URL (None: SQLite in the data directory)."""
    embedded_latest_only: bool = False
    """Publish only the latest of an entity's readings waiting together to the embedded store."""
    embedded_sharing: Policies | None = None
    embedded_tokens: tuple[frozenset[str], Mapping[str, frozenset[str]]] = (frozenset(), {})
    """Store tokens from ``embedded_store.tokens_file``: (for every tenant, per tenant); writes, commands
    included, of a tenant need its token (or the admin token)."""
    """``embedded_store.sharing``: the sharing policy file, loaded and checked (None: owners only)."""
    allow_unfiltered_queries: bool = False
    sinks: list[SinkConfig] = field(default_factory=list)
    sources: list[SourceConfig] = field(default_factory=list)
    simulators: list[SimulatorConfig] = field(default_factory=list)
    console_outlines: Path | None = None
    open_data: OpenDataJob | None = None
    """``open_data``: the periodic export of what communes share with the public."""
    """``console.outlines``: a GeoJSON file drawn under the console's map (checked when parsed)."""
    rules: RuleSet | None = None
    """``rules``: the rules and interventions (a YAML file, or inline), checked when parsed."""

    @property
    def loopback(self) -> bool:
        """True when the server listens on loopback only."""
        return self.host in LOOPBACK or self.host.startswith("127.")

    @property
    def base_url(self) -> str:
        """The gateway's public base URL: ``server.public_url``, or one derived from the listen address.

        A wildcard address (0.0.0.0, ::) is not reachable as such: the machine's name stands in
        for it, and an operator behind a proxy or NAT sets ``server.public_url``.
        """
        if self.public_url:
            return self.public_url.rstrip("/")
        host = socket.getfqdn() if self.host in _WILDCARD else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal in a URL (RFC 3986 §3.2.2)
        return f"http://{host}:{self.port}"

    @property
    def context_url(self) -> str:
        """The public URL of the jonction @context this gateway serves (the Link remote sinks send)."""
        return self.base_url + CONTEXT_PATH


def _substitute(node: Any, path: str, problems: list[str]) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in every string, listing unset variables."""
    if isinstance(node, dict):
        return {k: _substitute(v, f"{path}/{k}", problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, f"{path}/{i}", problems) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        def repl(match: re.Match[str]) -> str:
            value = os.environ.get(match.group(1), match.group(2))
            if value is None:
                problems.append(f"{path or '/'}: environment variable {match.group(1)} is not set")
                return ""
            if _secret_key(path.rsplit("/", 1)[-1]):
                register_secret(value)  # masked before any error message can quote it
            return value
        return _ENV.sub(repl, node)
    return node


def _secret(block: Mapping[str, Any] | None, key: str, where: str, problems: list[str], base: Path) -> str | None:
    """The secret ``key`` of ``block`` (``<key>_file``, ``<key>_env`` or the value), listing any problem."""
    try:
        return read_secret(block or {}, key, where=f"{where}/", base=base)
    except ConfigInvalid as exc:
        problems.extend(exc.problems)
        return None


def _mask_url_password(block: Any, key: str) -> None:
    """Mask the password a database URL carries (``postgresql://user:secret@host/db``) before any message quotes it."""
    if isinstance(block, dict) and isinstance(block.get(key), str):
        with contextlib.suppress(ValueError):
            register_secret(urlsplit(block[key]).password)


def parse(
    document: Any, *, base: Path | None = None, adapters: Mapping[str, type[Adapter]] | None = None
) -> GatewayConfig:
    """Check a config document (already parsed from YAML) and build the typed config.

    With ``adapters`` (name → class), each source's adapter and its config are checked in the
    same pass, so that one run lists every problem of the file.
    """
    base = base or Path.cwd()
    if document is None:
        document = {}
    problems: list[str] = []
    # Inline rules keep their ${field} templates (filled per alert, not from the environment).
    inline_rules = document.get("rules") if isinstance(document, dict) else None
    if isinstance(inline_rules, dict):
        document = {k: v for k, v in document.items() if k != "rules"}
    document = _substitute(document, "", problems)
    if isinstance(inline_rules, dict):
        document["rules"] = inline_rules
    if not isinstance(document, dict):
        raise ConfigInvalid("the configuration must be a mapping", ["/: expected a mapping of settings"])
    _mask_url_password(document.get("dedup"), "database")
    problems.extend(redact(p) for p in schema_problems(gateway_schema(), document))
    if problems:
        if adapters is not None:
            problems.extend(_early_source_problems(document, adapters, base))
        raise ConfigInvalid("invalid configuration", problems)
    cfg = GatewayConfig()
    server = document.get("server", {})
    cfg.host = server.get("host", cfg.host)
    cfg.port = server.get("port", cfg.port)
    cfg.public_url = server.get("public_url")
    cfg.max_body = size(server.get("max_body"), cfg.max_body)
    workers = server.get("workers", "auto")
    cfg.workers = None if workers == "auto" else int(workers)
    cfg.allowed_hosts = tuple(server.get("allowed_hosts", ()))
    if "data_dir" in document:
        data = Path(document["data_dir"])
        cfg.data_dir = data if data.is_absolute() else base / data
    cfg.log_level = str(document.get("log_level", cfg.log_level)).upper()
    cfg.admin_token = _secret(document.get("admin"), "token", "/admin", problems, base)
    cfg.durability = document.get("storage", {}).get("durability", cfg.durability)
    archive = document.get("archive", {})
    cfg.archive_max_bytes = size(archive.get("max_bytes"), cfg.archive_max_bytes)
    cfg.archive_max_age_s = duration(archive.get("max_age"), cfg.archive_max_age_s)
    cfg.outbox_max_bytes = size(document.get("outbox", {}).get("max_bytes"), cfg.outbox_max_bytes)
    dedup = document.get("dedup", {})
    cfg.dedup_max_age_s = duration(dedup.get("max_age"), cfg.dedup_max_age_s)
    cfg.dedup_database = dedup.get("database")
    cfg.dedup_password = _secret(dedup, "password", "/dedup", problems, base)
    cfg.schema_validation = bool(document.get("validation", {}).get("schemas", True))
    pub = document.get("publisher", {})
    defaults = PublisherSettings()
    cfg.publisher = PublisherSettings(
        batch_size=pub.get("batch_size", defaults.batch_size),
        linger_s=duration(pub.get("linger"), defaults.linger_s),
        backoff_initial_s=duration(pub.get("backoff_initial"), defaults.backoff_initial_s),
        backoff_max_s=duration(pub.get("backoff_max"), defaults.backoff_max_s),
        breaker_threshold=pub.get("breaker_threshold", defaults.breaker_threshold),
        breaker_cooldown_s=duration(pub.get("breaker_cooldown"), defaults.breaker_cooldown_s),
        max_attempts=pub.get("max_attempts", defaults.max_attempts),
    )
    cfg.drain_timeout_s = duration(document.get("shutdown", {}).get("drain_timeout"), cfg.drain_timeout_s)
    embedded = document.get("embedded_store", {})
    cfg.embedded = bool(embedded.get("enabled", True))
    cfg.allow_unfiltered_queries = bool(embedded.get("allow_unfiltered_queries", False))
    cfg.embedded_database = embedded.get("database")
    cfg.embedded_latest_only = bool(embedded.get("latest_only", False))
    if embedded.get("sharing"):
        sharing_path = Path(embedded["sharing"])
        try:
            cfg.embedded_sharing = sharing.load(sharing_path if sharing_path.is_absolute() else base / sharing_path)
        except ConfigInvalid as exc:
            problems.extend(f"/embedded_store/sharing: {p}" for p in exc.problems)
        if not cfg.admin_token:
            problems.append("/embedded_store/sharing: needs admin.token, the owners' store token (a policy tells "
                            "owners from other readers by it)")
    if embedded.get("tokens_file"):
        tokens_path = Path(embedded["tokens_file"])
        try:
            cfg.embedded_tokens = load_tokens(tokens_path if tokens_path.is_absolute() else base / tokens_path)
        except ConfigInvalid as exc:
            problems.append(f"/embedded_store/tokens_file: {exc}")
    if "tenants" in embedded:
        cfg.embedded_tenants = frozenset(embedded["tenants"])
    names: set[str] = set()
    for index, sink in enumerate(document.get("sinks", [])):
        where = f"/sinks/{index}"
        if sink["name"] in names or sink["name"] == "embedded":
            problems.append(f"{where}/name: sink name {sink['name']!r} is used twice (or reserved)")
        names.add(sink["name"])
        auth = sink.get("auth", {})
        bearer = _secret(auth.get("bearer"), "token", f"{where}/auth/bearer", problems, base)
        oauth: dict[str, str] | None = None
        if "oauth2" in auth:
            o = auth["oauth2"]
            secret = _secret(o, "client_secret", f"{where}/auth/oauth2", problems, base)
            if secret is None:
                problems.append(f"{where}/auth/oauth2: client_secret or client_secret_file is required")
            oauth = {"token_url": o["token_url"], "client_id": o["client_id"], "client_secret": secret or ""}
            if o.get("scope"):
                oauth["scope"] = o["scope"]
        tls = sink.get("tls", {})
        if tls.get("ca_file") and not Path(tls["ca_file"]).is_file():
            problems.append(f"{where}/tls/ca_file: no such file {tls['ca_file']!r}")
        context, context_mode = _sink_context(sink, cfg)
        settings = RemoteSettings(
            url=sink["url"], profile=sink.get("profile", "generic"), tenant_header=sink.get("tenant_header"),
            context=context, context_mode=context_mode,
            max_batch=sink.get("batch_size"), timeout_s=duration(sink.get("timeout"), 10.0),
            bearer_token=bearer, oauth2=oauth, ca_file=tls.get("ca_file"), verify_tls=tls.get("verify", True),
            tenant_map=sink.get("tenant_map"), late_readings=sink.get("late_readings", "drop"))
        tenants = frozenset(sink["tenants"]) if "tenants" in sink else None
        cfg.sinks.append(SinkConfig(sink["name"], settings, tenants, bool(sink.get("latest_only", False))))
    source_names: set[str] = set()
    for index, src in enumerate(document.get("sources", [])):
        if src["name"] in source_names:
            problems.append(f"/sources/{index}/name: source name {src['name']!r} is used twice")
        source_names.add(src["name"])
        routes = tuple(Route(tenant=r["tenant"], entity=r.get("entity"), device=r.get("device"))
                       for r in src.get("routes", []))
        router = None
        if "routing" in src:
            router, routing_problems = build_router(src["routing"], base=base, where=f"/sources/{index}/routing")
            problems.extend(routing_problems)
        cfg.sources.append(SourceConfig(src["name"], src["adapter"], dict(src.get("config", {})),
                                        src.get("tenant", ""), routes, src.get("enabled", True), router))
    if "outlines" in document.get("console", {}):
        cfg.console_outlines = outlines_path(document["console"]["outlines"], base)
        problems.extend(f"/console/outlines: {p}" for p in outline_problems(cfg.console_outlines))
    if "rules" in document:
        try:
            cfg.rules = rules_config.load(document["rules"], base=base)
        except ConfigInvalid as exc:
            problems.extend(redact(p) for p in exc.problems)
        if cfg.rules is not None and not cfg.embedded:
            problems.append("/rules: rules read the entities written to the embedded store: enable embedded_store")
    if "open_data" in document:
        cfg.open_data = _open_data(document["open_data"], base, cfg.embedded, problems)
    for sim in document.get("simulators", []):
        cfg.simulators.append(SimulatorConfig(sim["name"], dict(sim.get("options", {}))))
    if not cfg.embedded and not cfg.sinks:
        problems.append("/sinks: no sink configured and the embedded store is disabled: nowhere to publish")
    if problems:
        raise ConfigInvalid("invalid configuration", problems)
    return cfg


def _open_data(block: Mapping[str, Any], base: Path, embedded: bool, problems: list[str]) -> OpenDataJob | None:
    """The periodic export, its policy file checked now (it is read again at every export)."""
    from gateway.store import sharing

    def resolved(value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else base / path

    if not embedded:
        problems.append("/open_data: the export reads the embedded store, which is disabled")
    policy = resolved(block["sharing"])
    try:
        sharing.load(policy)
    except ConfigInvalid as exc:
        problems.extend(f"/open_data/sharing: {p}" for p in exc.problems)
    every = duration(block.get("every"), 86400.0)
    if every <= 0:
        problems.append("/open_data/every: must be more than 0")
    settings = OpenDataSettings(out=resolved(block["out"]), licence=block.get("licence", "etalab-2.0"),
                                publisher=block.get("publisher", "jonction"), title=block.get("title", "Open data"),
                                base_url=block.get("base_url"), contact=block.get("contact"))
    return OpenDataJob(settings, policy, every)


def _sink_context(sink: Mapping[str, Any], cfg: GatewayConfig) -> tuple[str | None, str | None]:
    """(context URL, mode) of a sink: ``context: link`` (default) | ``inline`` | a URL to link to.

    ``link`` names the @context this gateway serves, at its public URL, so that any broker can
    fetch it; ``inline`` puts the terms each entity uses in the body (nothing to fetch). A sink
    whose profile has a @context its broker knows offline (``jonction``) keeps that one.
    """
    value = sink.get("context")
    mode = sink.get("context_mode")
    if value == "inline":
        return None, "inline"
    if isinstance(value, str) and value != "link":
        return value, mode
    if mode == "inline" and value is None:
        return None, "inline"
    if PROFILES[sink.get("profile", "generic")].context_iri:
        return None, mode
    return cfg.context_url, "link"


def _early_source_problems(document: Mapping[str, Any], adapters: Mapping[str, type[Adapter]], base: Path) -> list[str]:
    """Source problems of a document that already failed the gateway schema (best effort)."""
    sources = []
    raw_sources = document.get("sources")
    for item in raw_sources if isinstance(raw_sources, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("adapter"), str) and isinstance(item.get("name"), str):
            config = item.get("config", {})
            sources.append(SourceConfig(item["name"], item["adapter"], dict(config) if isinstance(config, Mapping)
                                        else {}, str(item.get("tenant", ""))))
        else:
            sources.append(SourceConfig("", "", {}, enabled=False))
    probe = GatewayConfig(data_dir=base / "data", sources=sources)
    try:
        check_source_configs(probe, adapters)
    except ConfigInvalid as exc:
        return list(exc.problems)
    return []


def load(path: Path, *, adapters: Mapping[str, type[Adapter]] | None = None) -> GatewayConfig:
    """Read, check and build the configuration in ``path``."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigInvalid(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigInvalid(f"{path}: not valid YAML {yaml_reason(exc)}") from None
    if document is None:
        # An empty file is almost always a mistake (a wrong path, a file not yet written): refuse it
        # rather than start a gateway that receives nothing.
        raise ConfigInvalid(f"{path}: the configuration is empty", [
            "/: nothing is configured; start from docs/gateway.example.yaml (every key, commented), "
            "or run `jonction run` without --config for the demo territory"])
    return parse(document, base=path.parent, adapters=adapters)


def yaml_reason(exc: yaml.YAMLError) -> str:
    """Where and why YAML parsing failed, as the parser says it ("at line 3, column 7: ...")."""
    marked = exc if isinstance(exc, yaml.MarkedYAMLError) else None
    mark = marked.problem_mark if marked is not None else None
    where = f"at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    reason = ", ".join(str(x) for x in ((marked.context, marked.problem) if marked is not None else ()) if x)
    return redact(f"{where}: {reason}" if reason else where or str(exc))


def check_source_configs(cfg: GatewayConfig, adapters: Mapping[str, type[Adapter]]) -> None:
    """Check each source's adapter exists and its config validates, all problems together."""
    problems: list[str] = []
    for index, src in enumerate(cfg.sources):
        if not src.enabled:
            continue
        cls = adapters.get(src.adapter)
        if cls is None:
            known = ", ".join(sorted(adapters)) or "none"
            problems.append(f"/sources/{index}/adapter: unknown adapter {src.adapter!r} (installed: {known})")
            continue
        schema = cls.config_schema
        effective = source_config(src, schema, cfg.data_dir)
        _register_write_only(schema, effective)
        for msg in schema_problems(schema, effective):
            where, _, text = msg.partition(": ")
            where = "" if where == "/" else where
            problems.append(redact(f"/sources/{index}/config{where}: {text}"))
    if problems:
        raise ConfigInvalid("invalid source configuration", problems)


def source_config(src: SourceConfig, schema: Mapping[str, Any], data_dir: Path) -> dict[str, Any]:
    """The config an adapter receives: its own block plus what the runtime knows.

    ``name`` and ``tenant`` come from the source entry and ``state_dir`` defaults to
    ``<data>/state/<source>``, each only where the adapter's schema declares it (or accepts
    any member), so that a strict schema never sees a member it does not know.
    """
    props = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
    open_schema = isinstance(schema, Mapping) and schema.get("additionalProperties", True) is not False
    out = dict(src.config)
    defaults = {"name": src.name, "tenant": src.tenant, "state_dir": str(data_dir / "state" / src.name)}
    for key, value in defaults.items():
        if key not in out and (key in props or (open_schema and key != "state_dir")):
            out[key] = value
    return out


_SECRET_NAMES: Final = ("token", "password", "secret", "api_key", "apikey")
_NAME_SUFFIXES: Final = ("_env", "_file", "_url")
"""Keys that name where a secret is (a variable, a file, an endpoint), never a secret themselves."""


def _secret_key(key: str) -> bool:
    """True when the value of ``key`` is a secret to mask (``api_key``), not its name (``api_keys_env``)."""
    low = key.lower()
    return any(n in low for n in _SECRET_NAMES) and not low.endswith(_NAME_SUFFIXES)


def _register_write_only(schema: Mapping[str, Any], config: Any) -> None:
    """Mask the values of ``writeOnly`` (or secret-named) fields of an adapter config in logs."""
    if not isinstance(config, Mapping):
        return
    props = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
    for key, value in config.items():
        sub = props.get(key, {}) if isinstance(props, Mapping) else {}
        if isinstance(value, str) and ((isinstance(sub, Mapping) and sub.get("writeOnly"))
                                       or _secret_key(str(key))):
            register_secret(value)
        elif isinstance(value, Mapping):
            _register_write_only(sub if isinstance(sub, Mapping) else {}, value)
