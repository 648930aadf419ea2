"""Caller-supplied regular expressions, run with a size cap and a time budget. Pure.

Python's `re` backtracks without limit and holds the GIL while it does: a 24-character answer
against `(a+)+$` took seconds, doubling per character, and froze every other tool call. The
`regex` engine (same syntax) takes a timeout and releases the GIL while matching.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import regex

from offload.core.errors import InputError

MAX_PATTERN_CHARS = 1_000
MATCH_BUDGET_S = 0.25  # for all the caller's regexes on one answer together

_deadline: ContextVar[float | None] = ContextVar("offload_regex_deadline", default=None)


class RegexBudgetExceeded(Exception):
    """The caller's regexes ran past MATCH_BUDGET_S on one answer."""


def compile_pattern(pattern: str, what: str) -> regex.Pattern[str]:
    """Compile a caller's regex up front (before any call is paid), or say what is wrong."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InputError(
            f"{what} is {len(pattern):,} characters; the limit is {MAX_PATTERN_CHARS:,}: send a shorter regex"
        )
    try:
        return regex.compile(pattern, regex.VERSION0)
    except (regex.error, ValueError, OverflowError, RecursionError) as exc:
        raise InputError(f"{what} is not a valid regular expression: {exc}; send a Python regex") from None


@contextmanager
def budget(seconds: float = MATCH_BUDGET_S) -> Iterator[None]:
    """Every `search` inside shares one deadline."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def search(pattern: str | regex.Pattern[str], text: str) -> bool:
    """True if `pattern` is found in `text` within the current budget (MATCH_BUDGET_S if none)."""
    deadline = _deadline.get()
    left = MATCH_BUDGET_S if deadline is None else deadline - time.monotonic()
    if left <= 0:
        raise RegexBudgetExceeded(f"regex checks ran past {MATCH_BUDGET_S} s")
    compiled = pattern if isinstance(pattern, regex.Pattern) else compile_pattern(pattern, "a schema pattern")
    try:
        return compiled.search(text, timeout=left, concurrent=True) is not None
    except TimeoutError:
        raise RegexBudgetExceeded(f"regex checks ran past {MATCH_BUDGET_S} s") from None
