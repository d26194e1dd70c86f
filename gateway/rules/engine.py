"""The rules engine: evaluates published entities, opens and closes Alerts, calls maintenance systems.

It sees each entity the runtime writes to the embedded store (the embedded sink calls
:meth:`RulesEngine.observe` after a successful upsert) and wakes on a periodic tick for durations,
retries and work-order polling. Its state lives in the gateway database, in three tables it owns:

- ``rule_state``: per rule and entity, the phase (``idle``, ``holding`` since when, ``open``,
  ``resolved`` = closed by its work order while the condition still holds) and the Alert's number;
- ``rule_calls``: every outgoing call (one per alert, target and action: the unique key is the
  deduplication), its state (``pending``, ``done``, ``failed``, ``cancelled``), attempts, the
  remote id (work order or service request) and the target's last answer;
- ``rule_samples``: the readings an aggregate rule needs (its window only).

A restart resumes from these tables: a pending call is sent once, a sent call is not sent again,
an open Alert stays open until its condition clears. An Alert is upserted to the store before the
state that names it is committed, so a crash in between re-upserts the same Alert id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp

from gateway.model import Entity, RawMessage
from gateway.rules.config import Rule, RuleSet, Target
from gateway.rules.targets import Answer, poll_status, send
from gateway.rules.templates import render
from gateway.runtime.db import Database
from gateway.runtime.deadletters import DeadLetters
from gateway.runtime.logging import redact
from gateway.store.base import Storage

log = logging.getLogger("jonction.rules")

STAGE: Final = "intervention"
"""The dead-letter stage of a refused call."""

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS rule_state(
  rule TEXT NOT NULL, tenant TEXT NOT NULL, entity TEXT NOT NULL, phase TEXT NOT NULL, since REAL NOT NULL,
  seq INTEGER NOT NULL DEFAULT 0, alert TEXT, vars TEXT NOT NULL DEFAULT '{}',
  PRIMARY KEY(rule, tenant, entity));
CREATE INDEX IF NOT EXISTS rule_state_phase ON rule_state(phase);
CREATE TABLE IF NOT EXISTS rule_calls(
  id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, tenant TEXT NOT NULL, entity TEXT NOT NULL,
  alert TEXT NOT NULL, target TEXT NOT NULL, action TEXT NOT NULL, state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, sent_at REAL, remote_id TEXT, remote_status TEXT,
  answer TEXT, created REAL NOT NULL, UNIQUE(alert, target, action));
CREATE INDEX IF NOT EXISTS rule_calls_state ON rule_calls(state, next_at);
CREATE TABLE IF NOT EXISTS rule_samples(
  rule TEXT NOT NULL, tenant TEXT NOT NULL, entity TEXT NOT NULL, at REAL NOT NULL, value REAL NOT NULL,
  PRIMARY KEY(rule, tenant, entity, at));
"""

_ALERT_CONTEXT: Final = None
MAX_CACHED: Final = 100_000
"""States kept in memory at most (the cache starts over beyond)."""


def iso(at: float) -> str:
    """RFC 3339 UTC, seconds."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _value(attr: Any) -> Any:
    """The plain value of a normalized attribute (first instance)."""
    if isinstance(attr, list):
        attr = attr[0] if attr else None
    if not isinstance(attr, Mapping):
        return attr
    for key in ("value", "object", "@value"):
        if key in attr:
            return attr[key]
    return None


def _observed(entity: Mapping[str, Any], names: Sequence[str]) -> float | None:
    """The latest observedAt among the named attributes (the reading's time, not its arrival)."""
    times = []
    for name in names:
        attr = entity.get(name)
        for inst in attr if isinstance(attr, list) else [attr]:
            if isinstance(inst, Mapping) and (at := _epoch(inst.get("observedAt"))) is not None:
                times.append(at)
    return max(times) if times else None


def entity_vars(entity: Mapping[str, Any]) -> dict[str, Any]:
    """Template fields from the entity: each attribute's plain value, its id and type, lat/long of its point."""
    out: dict[str, Any] = {}
    for name, attr in entity.items():
        if name in ("id", "type", "@context") or name.startswith("@"):
            continue
        value = _value(attr)
        if isinstance(value, str | int | float | bool):
            out[name] = value
    location = _value(entity.get("location"))
    if isinstance(location, Mapping) and location.get("type") == "Point":
        coords = location.get("coordinates")
        if isinstance(coords, list) and len(coords) >= 2:
            out["long"], out["lat"] = coords[0], coords[1]
    out["entityId"] = out["alertSource"] = entity.get("id")
    types = entity.get("type")
    out["entityType"] = types if isinstance(types, str) else ",".join(types or ())
    return out


def _closed_by(target: Target) -> str:
    """The ``closedBy`` of an alert its target closed: a work order, or an Open311 service request."""
    return "serviceRequestClosed" if target.kind == "open311" else "workOrderClosed"


class RulesEngine:
    """Evaluates rules over entities and drives their interventions (one instance per gateway)."""

    def __init__(self, ruleset: RuleSet, db: Database, store: Storage, deadletters: DeadLetters,
                 http: aiohttp.ClientSession) -> None:
        self.ruleset = ruleset
        self.db = db
        self.store = store
        self.deadletters = deadletters
        self.http = http
        self.rules = {r.id: r for r in ruleset.rules}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        """Held by state transitions (evaluation, opening, closing): never across an outgoing call."""
        self._ticking = asyncio.Lock()
        self._latest: dict[tuple[str, str, str], Entity] = {}
        """The latest reading of each condition holding (its alert's template fields), kept in memory."""
        self._states: dict[tuple[str, str, str], tuple[str, float, int, str | None] | None] = {}
        """A read-through cache of ``rule_state`` (every write drops its key): most readings change nothing."""
        db.create(SCHEMA)

    # ------------------------------------------------------------------ evaluation

    async def observe(self, tenant: str, entities: Sequence[Entity]) -> None:
        """Evaluate every rule that watches these just-written entities (never raises)."""
        try:
            async with self._lock:
                self._store_samples(tenant, entities)
                for ent in entities:
                    for rule in self.ruleset.rules:
                        if rule.applies(tenant, ent.get("type")):
                            await self._evaluate(rule, tenant, ent)
        except Exception as exc:  # a rule must never stop publishing
            log.error("rules evaluation failed: %s", redact(str(exc)), exc_info=exc)
        self._wake.set()

    async def _evaluate(self, rule: Rule, tenant: str, ent: Entity) -> None:
        names = sorted(rule.when.attributes()) if rule.when is not None else []
        if rule.aggregate is not None:
            names.append(rule.aggregate.attribute)
        if not any(n in ent for n in names):
            return  # a partial update that says nothing about this rule's condition
        at = _observed(ent, names) or time.time()
        agg = rule.aggregate
        hour = datetime.fromtimestamp(at, UTC).hour
        if agg is not None and agg.hours is not None and not agg.hours[0] <= hour < agg.hours[1]:
            return  # a daytime reading says nothing about a night-flow rule: its state waits for the next night
        holds = True
        if rule.when is not None:
            holds = rule.when.evaluate(ent, lambda term: term)
        if rule.aggregate is not None:
            holds = self._aggregate(rule, tenant, ent, at) and holds
        await self._transition(rule, tenant, ent, holds, at)

    def _store_samples(self, tenant: str, entities: Sequence[Entity]) -> None:
        """Keep the readings aggregate rules need (a batch in one transaction); drop those out of their window."""
        rows: list[tuple[str, str, str, float, float]] = []
        latest: dict[tuple[str, str], tuple[float, float]] = {}
        for rule in self.ruleset.rules:
            agg = rule.aggregate
            if agg is None:
                continue
            for ent in entities:
                value = _value(ent.get(agg.attribute))
                if not rule.applies(tenant, ent.get("type")) or not isinstance(value, int | float) or isinstance(
                        value, bool):
                    continue
                at = _observed(ent, [agg.attribute]) or time.time()
                if agg.hours is not None and not agg.hours[0] <= datetime.fromtimestamp(at, UTC).hour < agg.hours[1]:
                    continue
                eid = str(ent["id"])
                rows.append((rule.id, tenant, eid, at, float(value)))
                key = (rule.id, eid)
                latest[key] = (max(at, latest.get(key, (at, 0.0))[0]), agg.window_s)
        if not rows:
            return
        with self.db.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO rule_samples VALUES (?,?,?,?,?)", rows)
            conn.executemany("DELETE FROM rule_samples WHERE rule=? AND tenant=? AND entity=? AND at <= ?",
                             [(rule_id, tenant, eid, at - window) for (rule_id, eid), (at, window) in latest.items()])

    def _aggregate(self, rule: Rule, tenant: str, ent: Entity, at: float) -> bool:
        agg = rule.aggregate
        assert agg is not None
        function = {"mean": "AVG", "max": "MAX", "min": "MIN"}[agg.function]
        figure, count = self.db.conn.execute(
            f"SELECT {function}(value), COUNT(*) FROM rule_samples WHERE rule=? AND tenant=? AND entity=?"
            " AND at > ? AND at <= ?", (rule.id, tenant, str(ent["id"]), at - agg.window_s, at)).fetchone()
        return bool(count >= agg.min_samples and figure is not None and figure > agg.above)

    def _state(self, rule: str, tenant: str, entity: str) -> tuple[str, float, int, str | None] | None:
        key = (rule, tenant, entity)
        if key in self._states:
            return self._states[key]
        row = self.db.conn.execute("SELECT phase, since, seq, alert FROM rule_state WHERE rule=? AND tenant=? AND"
                                   " entity=?", key).fetchone()
        state = None if row is None else (str(row[0]), float(row[1]), int(row[2]), row[3])
        if len(self._states) >= MAX_CACHED:
            self._states.clear()
        self._states[key] = state
        return state

    async def _transition(self, rule: Rule, tenant: str, ent: Entity, holds: bool, at: float) -> None:
        eid = str(ent["id"])
        state = self._state(rule.id, tenant, eid)
        phase = state[0] if state else "idle"
        if holds:
            if phase == "idle":
                fields = json.dumps(entity_vars(ent), default=str)
                with self.db.transaction() as conn:
                    conn.execute("INSERT INTO rule_state(rule, tenant, entity, phase, since, vars) VALUES"
                                 " (?,?,?,'holding',?,?) ON CONFLICT(rule, tenant, entity) DO UPDATE SET"
                                 " phase='holding', since=excluded.since, vars=excluded.vars",
                                 (rule.id, tenant, eid, at, fields))
                self._states.pop((rule.id, tenant, eid), None)
                phase, since = "holding", at
            else:
                assert state is not None
                since = state[1]
            if phase == "holding":
                # The latest reading fills the alert's templates; written with the opening, not per reading.
                self._latest[(rule.id, tenant, eid)] = ent
                if at - since >= rule.for_s:
                    await self._open(rule, tenant, eid, at)
        elif phase in ("holding", "resolved"):
            self._latest.pop((rule.id, tenant, eid), None)
            with self.db.transaction() as conn:
                conn.execute("UPDATE rule_state SET phase='idle' WHERE rule=? AND tenant=? AND entity=?",
                             (rule.id, tenant, eid))
            self._states.pop((rule.id, tenant, eid), None)
        elif phase == "open":
            await self._close(rule, tenant, eid, at, "conditionCleared", next_phase="idle")

    # ------------------------------------------------------------------ alerts

    def _alert_id(self, rule: str, tenant: str, entity: str, seq: int) -> str:
        digest = hashlib.sha256(f"{tenant}\0{entity}".encode()).hexdigest()[:16]
        return f"urn:ngsi-ld:Alert:jonction-rule:{rule}:{digest}:{seq}"

    def _vars(self, rule: str, tenant: str, entity: str) -> dict[str, Any]:
        row = self.db.conn.execute("SELECT vars FROM rule_state WHERE rule=? AND tenant=? AND entity=?",
                                   (rule, tenant, entity)).fetchone()
        return json.loads(row[0]) if row else {}

    async def _open(self, rule: Rule, tenant: str, entity: str, at: float) -> None:
        state = self._state(rule.id, tenant, entity)
        if state is None or state[0] != "holding":
            return
        latest = self._latest.pop((rule.id, tenant, entity), None)
        if latest is not None:
            with self.db.transaction() as conn:
                conn.execute("UPDATE rule_state SET vars=? WHERE rule=? AND tenant=? AND entity=?",
                             (json.dumps(entity_vars(latest), default=str), rule.id, tenant, entity))
        seq = state[2] + 1
        alert = self._alert_id(rule.id, tenant, entity, seq)
        fields = self._fields(rule, tenant, entity, alert, at)
        doc: Entity = {
            "id": alert, "type": "Alert",
            "category": {"type": "Property", "value": rule.category},
            "severity": {"type": "Property", "value": rule.severity},
            "alertSource": {"type": "Relationship", "object": entity},
            "dateIssued": {"type": "Property", "value": iso(time.time())},
            "validFrom": {"type": "Property", "value": iso(at)},
            "name": {"type": "Property", "value": rule.title},
            "description": {"type": "Property", "value": str(fields["description"])},
            "source": {"type": "Property", "value": f"jonction rule {rule.id}"},
            "alertStatus": {"type": "Property", "value": "open"},
        }
        if rule.sub_category:
            doc["subCategory"] = {"type": "Property", "value": rule.sub_category}
        if isinstance(fields.get("lat"), int | float) and isinstance(fields.get("long"), int | float):
            doc["location"] = {"type": "GeoProperty",
                               "value": {"type": "Point", "coordinates": [fields["long"], fields["lat"]]}}
        await self._write(tenant, doc)
        now = time.time()
        with self.db.transaction() as conn:
            conn.execute("UPDATE rule_state SET phase='open', seq=?, alert=? WHERE rule=? AND tenant=? AND entity=?",
                         (seq, alert, rule.id, tenant, entity))
            self._states.pop((rule.id, tenant, entity), None)
            for target in rule.actions:
                conn.execute("INSERT OR IGNORE INTO rule_calls(rule, tenant, entity, alert, target, action, state,"
                             " next_at, created) VALUES (?,?,?,?,?,'open','pending',?,?)",
                             (rule.id, tenant, entity, alert, target, now, now))
        log.info("alert opened", extra={"rule": rule.id, "tenant": tenant, "entity": entity, "alert": alert})

    async def _close(self, rule: Rule, tenant: str, entity: str, at: float, reason: str, *, next_phase: str) -> None:
        state = self._state(rule.id, tenant, entity)
        if state is None or state[3] is None:
            return
        alert = state[3]
        await self._write(tenant, {"id": alert, "type": "Alert",
                                   "validTo": {"type": "Property", "value": iso(at)},
                                   "alertStatus": {"type": "Property", "value": "closed"},
                                   "closedBy": {"type": "Property", "value": reason}})
        with self.db.transaction() as conn:
            conn.execute("UPDATE rule_state SET phase=? WHERE rule=? AND tenant=? AND entity=?",
                         (next_phase, rule.id, tenant, entity))
            self._states.pop((rule.id, tenant, entity), None)
            # A call not yet sent has nothing to do any more (Open311 has no call to withdraw a request).
            conn.execute("UPDATE rule_calls SET state='cancelled' WHERE alert=? AND state='pending' AND action='open'",
                         (alert,))
            conn.execute("UPDATE rule_calls SET state='done' WHERE alert=? AND state='polling'", (alert,))
            if reason == "conditionCleared":
                # The work orders this alert opened are closed too, once each (the unique key), in the same
                # transaction as the phase: a restart finds the close call pending, never lost nor doubled.
                self._queue_closes(conn, alert, at)
        await self._refresh(tenant, alert)
        self._wake.set()
        log.info("alert closed", extra={"rule": rule.id, "tenant": tenant, "entity": entity, "alert": alert,
                                        "reason": reason})

    def _queue_closes(self, conn: Any, alert: str, at: float, target: str | None = None) -> None:
        """Queue the close call of each work order opened for ``alert`` whose target declares one."""
        closing = [name for name, spec in self.ruleset.targets.items()
                   if spec.close_url is not None and (target is None or name == target)]
        if not closing:
            return
        marks = ",".join("?" * len(closing))
        conn.execute(
            "INSERT OR IGNORE INTO rule_calls(rule, tenant, entity, alert, target, action, state, next_at, created,"
            " remote_id) SELECT rule, tenant, entity, alert, target, 'close', 'pending', ?, ?, remote_id FROM"
            f" rule_calls WHERE alert=? AND action='open' AND state='done' AND remote_id IS NOT NULL AND target IN"
            f" ({marks})", (at, at, alert, *closing))

    def _fields(self, rule: Rule, tenant: str, entity: str, alert: str, at: float) -> dict[str, Any]:
        fields = self._vars(rule.id, tenant, entity)
        fields.update({"id": alert, "alertId": alert, "rule": rule.id, "title": rule.title,
                       "severity": rule.severity, "category": rule.category,
                       "subCategory": rule.sub_category or "", "tenant": tenant, "alertSource": entity,
                       "entityId": entity, "validFrom": iso(at), "dateIssued": iso(at)})
        fields["description"] = render(rule.description, fields)
        return fields

    async def _write(self, tenant: str, doc: Entity) -> None:
        result = await self.store.upsert(tenant, [doc], context=_ALERT_CONTEXT, mode="update")
        if result.errors:
            raise RuntimeError(f"the store refused the Alert {doc['id']}: {result.errors[0].error}")

    async def _refresh(self, tenant: str, alert: str) -> None:
        """Write the interventions of an Alert (each call's target, state, remote id and answer) onto it."""
        rows = self.db.conn.execute(
            "SELECT target, action, state, attempts, remote_id, remote_status, answer FROM rule_calls WHERE alert=?"
            " ORDER BY id", (alert,)).fetchall()
        items: list[dict[str, Any]] = []
        failure: str | None = None
        for target, action, state, attempts, remote_id, remote_status, answer in rows:
            item: dict[str, Any] = {"target": target, "action": action, "state": state, "attempts": attempts}
            kind = self.ruleset.targets[target].kind if target in self.ruleset.targets else "webhook"
            if remote_id:
                item["serviceRequestId" if kind == "open311" else "workOrderId"] = remote_id
            if remote_status:
                item["status"] = remote_status
            if state == "failed" and answer:
                item["error"] = answer
                failure = f"{target}: {answer}"
            items.append(item)
        states = {item["state"] for item in items}
        summary = (f"failed: {failure}" if failure is not None else "pending" if "pending" in states
                   else "sent" if items else "none")
        # One attribute always written (a merge cannot drop one): a replayed call that succeeds clears the failure.
        await self._write(tenant, {"id": alert, "type": "Alert",
                                   "interventions": {"type": "Property", "value": items},
                                   "interventionStatus": {"type": "Property", "value": summary}})

    # ------------------------------------------------------------------ the tick

    async def run(self) -> None:
        """Tick until cancelled: durations, pending calls, polls."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.ruleset.tick_s)
            self._wake.clear()
            try:
                await self.tick()
            except Exception as exc:  # the next tick tries again; the gateway keeps running
                log.error("rules tick failed: %s", redact(str(exc)), exc_info=exc)

    async def tick(self, now: float | None = None) -> None:
        """One pass: open what held long enough, send what is due, poll open work orders.

        One pass at a time (``_ticking``); the calls go out without the state lock, so that a slow
        target never holds back the publisher, which evaluates rules under that lock.
        """
        async with self._ticking:
            now = time.time() if now is None else now
            async with self._lock:
                for rule_id, tenant, entity, since in self.db.conn.execute(
                        "SELECT rule, tenant, entity, since FROM rule_state WHERE phase='holding'").fetchall():
                    rule = self.rules.get(rule_id)
                    if rule is not None and now - since >= rule.for_s:
                        await self._open(rule, tenant, entity, since + rule.for_s)
            due = self.db.conn.execute(
                "SELECT id, rule, tenant, entity, alert, target, action, state, attempts, remote_id FROM rule_calls"
                " WHERE state IN ('pending', 'polling') AND next_at <= ? ORDER BY id", (now,)).fetchall()
            for row in due:
                await self._call(row, now)

    def _limited(self, rule: Rule, target: Target, now: float) -> bool:
        for column, key, rate in (("rule", rule.id, rule.rate), ("target", target.name, target.rate)):
            if rate is None:
                continue
            sent = self.db.conn.execute(f"SELECT COUNT(*) FROM rule_calls WHERE {column}=? AND sent_at > ?",
                                        (key, now - rate.per_s)).fetchone()[0]
            if sent >= rate.max:
                return True
        return False

    def _cleared(self, rule: str, tenant: str, entity: str, alert: str) -> bool:
        """True when ``alert`` closed because its condition cleared (not open, not closed by its work order)."""
        state = self._state(rule, tenant, entity)
        return state is not None and state[0] in ("idle", "holding") and state[3] == alert

    def _current(self, call_id: int) -> str | None:
        row = self.db.conn.execute("SELECT state FROM rule_calls WHERE id=?", (call_id,)).fetchone()
        return None if row is None else str(row[0])

    def _is_open(self, rule: str, tenant: str, entity: str, alert: str) -> bool:
        state = self._state(rule, tenant, entity)
        return state is not None and state[0] == "open" and state[3] == alert

    async def _call(self, row: tuple[Any, ...], now: float) -> None:
        call_id, rule_id, tenant, entity, alert, target_name, action, state, attempts, remote_id = row
        rule, target = self.rules.get(rule_id), self.ruleset.targets.get(target_name)
        if rule is None or target is None:
            return  # the rule or target left the file: the call waits for it to come back
        if state == "polling":
            status = await poll_status(self.http, target, remote_id)
            async with self._lock:
                still_open = self._is_open(rule_id, tenant, entity, alert)
                with self.db.transaction() as conn:
                    conn.execute("UPDATE rule_calls SET state=?, next_at=?, remote_status=COALESCE(?, remote_status)"
                                 " WHERE id=? AND state='polling'",
                                 ("polling" if still_open else "done", now + target.poll_every_s, status, call_id))
                if still_open and status is not None and status in target.closed:
                    await self._close(rule, tenant, entity, now, _closed_by(target), next_phase="resolved")
            return
        if self._limited(rule, target, now):
            return  # waits its turn: the next tick tries again
        fields = self._fields(rule, tenant, entity, alert, now)
        if action == "close":
            fields.update({"workOrderId": remote_id or "", "closedBy": "conditionCleared"})
        answer: Answer = await send(self.http, target, fields, action)
        attempts += 1
        async with self._lock:
            await self._answered(rule, target, call_id, alert, action, tenant, entity, attempts, now, answer)

    async def _answered(self, rule: Rule, target: Target, call_id: int, alert: str, action: str, tenant: str,
                        entity: str, attempts: int, now: float, answer: Answer) -> None:
        rule_id, target_name = rule.id, target.name
        if answer.ok:
            # Sent while its alert closed (cancelled meanwhile, or a dead letter replayed after): recorded, not
            # polled, and its work order closed when the condition cleared.
            cleared = action == "open" and self._cleared(rule_id, tenant, entity, alert)
            polling = (action == "open" and target.poll_url is not None and answer.remote_id is not None
                       and self._current(call_id) == "pending" and not cleared)
            with self.db.transaction() as conn:
                conn.execute("UPDATE rule_calls SET state=?, attempts=?, sent_at=?, next_at=?,"
                             " remote_id=COALESCE(?, remote_id), remote_status=COALESCE(?, remote_status), answer=NULL"
                             " WHERE id=?",
                             ("polling" if polling else "done", attempts, now, now + target.poll_every_s,
                              answer.remote_id, answer.remote_status, call_id))
                if cleared:
                    self._queue_closes(conn, alert, now, target_name)
            log.info("intervention sent", extra={"rule": rule_id, "target": target_name, "alert": alert,
                                                 "remote_id": answer.remote_id})
        elif answer.retry and attempts <= target.retries:
            with self.db.transaction() as conn:
                conn.execute("UPDATE rule_calls SET attempts=?, sent_at=?, next_at=?, answer=? WHERE id=?",
                             (attempts, now, now + target.backoff_s * 2 ** (attempts - 1), answer.text, call_id))
            log.warning("intervention failed, will retry: %s", answer.text,
                        extra={"rule": rule_id, "target": target_name, "alert": alert})
        else:
            meta = {"target": target_name, "url": target.url, "alert": alert, "action": action}
            raw = RawMessage(f"rules:{rule_id}", tenant, iso(now), answer.request, f"{alert}#{target_name}#{action}",
                             answer.content_type, meta)
            with self.db.transaction() as conn:
                conn.execute("UPDATE rule_calls SET state='failed', attempts=?, sent_at=?, answer=? WHERE id=?",
                             (attempts, now, answer.text, call_id))
                self.deadletters.add(conn, stage=STAGE, adapter="rules", raw=raw, pointer=f"/targets/{target_name}",
                                     reason=f"{target_name} refused the {action} call for {alert}: {answer.text}",
                                     corr=alert, sink=target_name)
            log.error("intervention refused: %s", answer.text, extra={"rule": rule_id, "target": target_name,
                                                                     "alert": alert})
        await self._refresh(tenant, alert)

    # ------------------------------------------------------------------ operator and target input

    def rearm(self, alert: str, target: str, action: str = "open") -> bool:
        """Send a refused call again (a dead letter replayed after the target was fixed); False if none failed."""
        with self.db.transaction() as conn:
            changed = conn.execute(
                "UPDATE rule_calls SET state='pending', attempts=0, next_at=?, answer=NULL WHERE alert=? AND"
                " target=? AND action=? AND state='failed'", (time.time(), alert, target, action)).rowcount
        self._wake.set()
        return changed > 0

    async def work_order_status(self, target: str, remote_id: str, status: str) -> bool:
        """A work order's status pushed by its target; a closed one closes its Alert. False if unknown."""
        async with self._lock:
            row = self.db.conn.execute(
                "SELECT id, rule, tenant, entity, alert FROM rule_calls WHERE target=? AND remote_id=? AND"
                " action='open' ORDER BY id DESC LIMIT 1", (target, remote_id)).fetchone()
            if row is None:
                return False
            call_id, rule_id, tenant, entity, alert = row
            with self.db.transaction() as conn:
                conn.execute("UPDATE rule_calls SET remote_status=? WHERE id=?", (status[:200], call_id))
            rule, spec = self.rules.get(rule_id), self.ruleset.targets.get(target)
            if (rule is not None and spec is not None and status in spec.closed
                    and self._is_open(rule_id, tenant, entity, alert)):
                await self._close(rule, tenant, entity, time.time(), _closed_by(spec), next_phase="resolved")
            else:
                await self._refresh(tenant, alert)
        return True

    # ------------------------------------------------------------------ views

    def status(self) -> dict[str, Any]:
        """Open alerts and conditions holding, per rule, and every call not done (the admin view)."""
        states = self.db.conn.execute(
            "SELECT rule, tenant, entity, phase, since, alert FROM rule_state WHERE phase != 'idle' ORDER BY rule"
        ).fetchall()
        return {
            "rules": [r.id for r in self.ruleset.rules],
            "states": [{"rule": r, "tenant": t, "entity": e, "phase": p, "since": iso(s), "alert": a}
                       for r, t, e, p, s, a in states],
            "calls": [c for c in self.calls() if c["state"] not in ("done", "cancelled")],
        }

    def calls(self) -> list[dict[str, Any]]:
        """Every outgoing call, oldest first (for tests and the admin view)."""
        cols = ("id", "rule", "tenant", "entity", "alert", "target", "action", "state", "attempts", "remote_id",
                "remote_status", "answer")
        rows = self.db.conn.execute(f"SELECT {', '.join(cols)} FROM rule_calls ORDER BY id").fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]
