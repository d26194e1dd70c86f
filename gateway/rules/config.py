"""The rules file: YAML (or an inline mapping), checked against ``rules.schema.json``, typed.

Every problem is reported at once, each naming its JSON pointer; a ``when`` that is not a valid
NGSI-LD ``q`` expression, an action naming no target and an unreadable secret are problems too.
Nothing here does network I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import yaml

import schemas
from gateway.errors import ConfigInvalid
from gateway.pointer import pointer
from gateway.secrets import read_secret
from gateway.store.problems import NgsiError
from gateway.store.query import QExpr, parse_q

MAX_RULES_BYTES: Final = 1 << 20
_DURATION: Final = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd])$")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: Any, default: float) -> float:
    """Seconds from a number or a schema-checked ``"30m"``."""
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if match is None:  # the schema checked it; kept for callers that did not
        raise ConfigInvalid(f"{value!r} is not a duration")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``max`` calls per ``per_s`` seconds."""

    max: int
    per_s: float


@dataclass(frozen=True, slots=True)
class Target:
    """A maintenance system: a templated webhook (GMAO/CMMS) or an Open311 GeoReport v2 endpoint."""

    name: str
    kind: str
    url: str
    method: str = "POST"
    format: str = "json"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None
    id_field: str = "id"
    status_field: str = "status"
    poll_url: str | None = None
    poll_every_s: float = 300.0
    closed: tuple[str, ...] = ("closed",)
    service_code: str = ""
    jurisdiction_id: str | None = None
    api_key: str | None = None
    rate: Rate | None = None
    retries: int = 3
    backoff_s: float = 5.0
    timeout_s: float = 10.0
    close_method: str = "POST"
    close_url: str | None = None
    """The call closing the work order when the condition clears (webhook); None sends none."""
    close_body: Any = None


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A check over the recent readings of one attribute: ``function`` over ``window_s`` above ``above``."""

    attribute: str
    function: str
    window_s: float
    above: float
    hours: tuple[int, int] | None = None
    min_samples: int = 1


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: which entities, what condition for how long, what Alert, which targets."""

    id: str
    title: str
    types: frozenset[str]
    tenants: frozenset[str] | None
    when: QExpr | None
    for_s: float
    aggregate: Aggregate | None
    severity: str
    category: str
    sub_category: str | None
    description: str
    actions: tuple[str, ...]
    rate: Rate | None = None

    def applies(self, tenant: str, types: Any) -> bool:
        """True when the rule watches an entity of ``types`` in ``tenant``."""
        if self.tenants is not None and tenant not in self.tenants:
            return False
        names = [types] if isinstance(types, str) else list(types or ())
        return any(t in self.types for t in names)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The whole rules file, typed."""

    rules: tuple[Rule, ...]
    targets: Mapping[str, Target]
    tick_s: float = 30.0


def rules_schema() -> dict[str, Any]:
    """The JSON Schema of a rules file."""
    return schemas.load_schema("config/rules.schema.json")


def _rate(block: Any) -> Rate | None:
    return Rate(int(block["max"]), seconds(block["per"], 0.0)) if isinstance(block, Mapping) else None


def parse(document: Any, *, base: Path, where: str = "") -> RuleSet:
    """Check a rules document and build the typed rule set; ConfigInvalid lists every problem by pointer."""
    problems = [f"{where}{pointer(e.absolute_path) or '/'}: {e.message}"
                for e in schemas.problems(rules_schema(), document)]
    if problems:
        raise ConfigInvalid("invalid rules", problems)
    targets: dict[str, Target] = {}
    for name, t in document.get("targets", {}).items():
        at = f"{where}/targets/{name}"
        api_key: str | None = None
        token: str | None = None
        try:
            api_key = read_secret(t, "api_key", where=f"{at}/", base=base)
            token = read_secret(t.get("bearer", {}), "token", where=f"{at}/bearer/", base=base)
        except ConfigInvalid as exc:
            problems.extend(exc.problems)
        headers = dict(t.get("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if t["kind"] == "open311" and not t.get("service_code"):
            problems.append(f"{at}/service_code: an open311 target needs the service_code to request")
        poll = t.get("poll", {})
        poll_url = poll.get("url")
        if t["kind"] == "open311" and poll_url is None:
            # GeoReport v2: GET {base}/requests/{service_request_id}.json next to POST {base}/requests.json.
            base = t["url"].split("?", 1)[0].rsplit("/", 1)[0]
            poll_url = f"{base}/requests/${{workOrderId}}.json"
            if t.get("jurisdiction_id"):
                poll_url += "?" + urlencode({"jurisdiction_id": t["jurisdiction_id"]})
        elif "poll" in t and poll_url is None:
            problems.append(f"{at}/poll/url: a webhook target polls the url given here (it may name ${{workOrderId}})")
        if t["kind"] == "open311" and "close" in t:
            problems.append(f"{at}/close: GeoReport v2 has no call to close a request; only a webhook closes")
        close = t.get("close", {})
        targets[name] = Target(
            name, t["kind"], t["url"], t.get("method", "POST"), "form" if t["kind"] == "open311" else
            t.get("format", "json"), headers, t.get("body"), t.get("id_field", "id"), t.get("status_field", "status"),
            poll_url, seconds(poll.get("every"), 300.0), tuple(poll.get("closed", ("closed",))),
            t.get("service_code", ""), t.get("jurisdiction_id"), api_key, _rate(t.get("rate_limit")),
            int(t.get("retries", 3)), seconds(t.get("backoff"), 5.0), seconds(t.get("timeout"), 10.0),
            close.get("method", "POST"), close.get("url"), close.get("body"))
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, r in enumerate(document["rules"]):
        at = f"{where}/rules/{index}"
        if r["id"] in seen:
            problems.append(f"{at}/id: rule id {r['id']!r} is used twice")
        seen.add(r["id"])
        when: QExpr | None = None
        if "when" in r:
            try:
                when = parse_q(r["when"])
            except (NgsiError, ValueError) as exc:
                problems.append(f"{at}/when: not a valid q expression: {exc}")
        for i, action in enumerate(r["actions"]):
            if action not in targets:
                known = ", ".join(sorted(targets)) or "none"
                problems.append(f"{at}/actions/{i}: no target named {action!r} (targets: {known})")
        agg = r.get("aggregate")
        aggregate = None if agg is None else Aggregate(
            agg["attribute"], agg["function"], seconds(agg["window"], 0.0), float(agg["above"]),
            (int(agg["hours"][0]), int(agg["hours"][1])) if "hours" in agg else None, int(agg.get("min_samples", 1)))
        rules.append(Rule(
            r["id"], r.get("title", r["id"]), frozenset(r["types"]),
            frozenset(r["tenants"]) if "tenants" in r else None, when, seconds(r.get("for"), 0.0), aggregate,
            r.get("severity", "medium"), r.get("category", "environment"), r.get("subCategory"),
            r.get("description", "${title}: ${alertSource}"), tuple(r["actions"]), _rate(r.get("rate_limit"))))
    if problems:
        raise ConfigInvalid("invalid rules", problems)
    return RuleSet(tuple(rules), targets, seconds(document.get("tick"), 30.0))


def load(value: Any, *, base: Path) -> RuleSet:
    """The rule set of the gateway config's ``rules`` key: a path to a YAML file, or the document inline."""
    if isinstance(value, Mapping):
        return parse(dict(value), base=base, where="/rules")
    path = Path(str(value))
    path = path if path.is_absolute() else base / path
    try:
        if path.stat().st_size > MAX_RULES_BYTES:
            raise ConfigInvalid(f"{path}: larger than {MAX_RULES_BYTES} bytes", [f"/rules: {path} is too large"])
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid(f"{path}: cannot read", [f"/rules: cannot read {path} ({exc.strerror})"]) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigInvalid(f"{path}: not valid YAML", [f"/rules: {path.name} is not valid YAML{line}"]) from None
    try:
        return parse(document, base=path.parent)
    except ConfigInvalid as exc:
        raise ConfigInvalid("invalid rules", [f"/rules ({path.name}) {p}" for p in exc.problems]) from None
