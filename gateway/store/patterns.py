"""User-supplied regular expressions, run on a linear-time engine (RE2).

Every pattern a client sends — ``q`` with ``~=`` / ``!~=``, ``idPattern`` (queries, POST Query
entity selectors, subscriptions) — goes through :func:`compile_user_pattern`. RE2 matches in time
linear in the subject, so ``(a+)+b`` cannot stall the event loop the way a backtracking engine
would; the price is that backreferences and lookaround are not available, and such patterns are
refused with BadRequestData naming the construct. Compiled programs are bounded in memory, and
pattern and subject lengths are capped, so one query's matching work stays bounded.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

import re2

from gateway.store.problems import NgsiError, bad_request

MAX_PATTERN_LENGTH: Final = 256
"""Longest pattern accepted; longer ones are TooComplexQuery."""
MAX_SUBJECT_LENGTH: Final = 16384
"""Longest string a pattern is applied to; longer values are matched on this prefix."""
MAX_PROGRAM_BYTES: Final = 1 << 20
"""Memory RE2 may use for one compiled pattern; a bigger program is TooComplexQuery."""


class Matcher:
    """A compiled user pattern: :meth:`search` finds it anywhere in a string, in linear time."""

    __slots__ = ("_regex", "source")

    def __init__(self, regex: Any, source: str) -> None:
        self._regex = regex
        self.source = source

    def search(self, text: str) -> bool:
        """True when the pattern matches somewhere in ``text`` (CIM 009 regex search, not anchored)."""
        return self._regex.search(text[:MAX_SUBJECT_LENGTH]) is not None

    def __repr__(self) -> str:
        return f"Matcher({self.source!r})"


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a bad client pattern is a 400, not a line on the server's stderr
    options.max_mem = MAX_PROGRAM_BYTES
    return options


_OPTIONS: Final = _options()


@lru_cache(maxsize=512)
def _compile(source: str) -> Any:
    return re2.compile(source, _OPTIONS)


def compile_user_pattern(source: str, what: str = "pattern") -> Matcher:
    """Compile a client's regular expression for RE2; BadRequestData when RE2 cannot take it
    (backreferences, lookaround, bad syntax), TooComplexQuery when it is too long or too large."""
    if not isinstance(source, str) or not source:
        raise bad_request(f"{what}: an empty regular expression")
    if len(source) > MAX_PATTERN_LENGTH:
        raise NgsiError("TooComplexQuery", f"{what}: regular expression longer than {MAX_PATTERN_LENGTH} characters")
    try:
        return Matcher(_compile(source), source)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        if "too large" in text or "repetition size" in text:
            raise NgsiError("TooComplexQuery", f"{what}: regular expression too large ({text})") from None
        raise bad_request(
            f"{what}: {source!r} is not a regular expression this store accepts ({text}); patterns run on a "
            "linear-time engine (RE2 syntax): backreferences and lookaround are not supported"
        ) from None
