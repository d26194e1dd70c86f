"""Hostile input against every adapter's translation: entities that are strict JSON, or the contract's error.

Parametrized by the contract suite (every discovered adapter, its recorded fixtures), so that a
new adapter is fuzzed without writing anything. Two complementary runs per adapter:

* an exhaustive sweep: every place of every fixture receives, one at a time, each hostile value
  of a short list (or is dropped) — deterministic, and it reaches the deep, rarely drawn paths;
* hypothesis: 1 to 3 mutations combined (drop, retype, NaN/Infinity, huge numbers, lone
  surrogates, deep nesting, empty values, renamed keys, damaged bytes, hostile transport
  metadata), ``JONCTION_FUZZ_EXAMPLES`` cases (2,000 by default, derandomized so that CI is
  reproducible; ``make fuzz`` runs more with ``JONCTION_FUZZ_RANDOM=1`` for fresh cases).

Either way ``to_entities`` must return entities that ``json.dumps(allow_nan=False)`` writes as
UTF-8 with storable numbers, or raise ``TranslationError`` with a JSON pointer — nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import os
import traceback
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.model import RawMessage
from tests.adapters.fuzzing import contract_problem, mutate, single_mutations
from tests.adapters.test_contract import ADAPTERS, _fixture_cases, _instance, _raw

EXAMPLES = int(os.environ.get("JONCTION_FUZZ_EXAMPLES", "2000"))
"""Hypothesis cases per adapter (CI runs the default; ``make fuzz`` sets more)."""
RANDOM = os.environ.get("JONCTION_FUZZ_RANDOM") == "1"
"""Fresh random cases on each run instead of the fixed, reproducible sequence."""


def _fixtures(domain: str) -> list[tuple[RawMessage, Any]]:
    return [(raw, json.loads(raw.payload)) for raw in (_raw(d, p) for d, p in _fixture_cases() if d == domain)]


class _Draws:
    """The mutation engine's choices, drawn from hypothesis (so that failures shrink)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def pick(self, options: Any) -> Any:
        # An index rather than sampled_from: integer strategies are cached, which halves the overhead.
        return options[self.data.draw(st.integers(0, len(options) - 1))]

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def text(self) -> str:
        return self.data.draw(st.text(st.characters(exclude_categories=()), max_size=12))

    def number(self) -> float:
        return self.data.draw(st.floats())


@pytest.mark.parametrize("domain", list(ADAPTERS))
def test_every_hostile_value_at_every_place(domain: str) -> None:
    adapter = _instance(domain)
    outcomes: Counter[str] = Counter()
    broken: list[str] = []
    for raw, doc in _fixtures(domain):
        for label, payload, metadata in single_mutations(doc, raw.metadata):
            try:
                problem = _translate(adapter, dataclasses.replace(raw, payload=payload, metadata=metadata), outcomes)
            except Exception as exc:  # listed with the others, so that one run shows every crash site
                problem = f"raised {type(exc).__name__} at {_site(exc)}: {exc}"
            if problem:
                broken.append(f"{raw.idempotency_key} {label}: {problem}")
    assert not broken, f"{len(broken)} of {sum(outcomes.values())} cases broke the contract:\n" + "\n".join(broken[:20])
    # Both outcomes occur, or the sweep tested nothing (e.g. every payload refused before translation).
    assert outcomes["entities"] and outcomes["error"], outcomes


@pytest.mark.parametrize("domain", list(ADAPTERS))
def test_combined_mutations_keep_the_contract(domain: str) -> None:
    adapter = _instance(domain)
    fixtures = _fixtures(domain)
    outcomes: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        draws = _Draws(data)
        raw, doc = draws.pick(fixtures)
        payload, metadata = mutate(doc, raw.metadata, draws)
        problem = _translate(adapter, dataclasses.replace(raw, payload=payload, metadata=metadata), outcomes)
        assert problem is None, problem

    check()
    assert outcomes["entities"] and outcomes["error"], outcomes


def _site(exc: BaseException) -> str:
    """file:line of the deepest project frame that raised ``exc``."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/adapters/" in f.filename
              or "/gateway/" in f.filename]
    return f"{'/'.join(frames[-1].filename.rsplit('/', 2)[-2:])}:{frames[-1].lineno}" if frames else "?"


def _translate(adapter: Any, raw: RawMessage, outcomes: Counter[str]) -> str | None:
    """How one translation broke the contract (None if it kept it); counts the outcome."""
    produced: list[Any] = []

    def run() -> Any:
        produced.append(adapter.to_entities(raw))
        return produced[0]

    problem = contract_problem(run)
    outcomes["entities" if produced else "error"] += 1
    return problem
