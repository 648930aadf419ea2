"""Checks a caller can state, run on an answer. Pure.

offload escalates on these, not on hedging words: a check either passes or names the trigger
(`max_tokens`, `refusal`, `schema_invalid`, `must_match_failed`) the policy may climb on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import regex
from referencing.exceptions import Unresolvable

from offload.core import safe_regex
from offload.core.schema_guard import compile_schema

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


@dataclass(frozen=True)
class Checks:
    response_schema: dict[str, Any] | None = None
    must_match: regex.Pattern[str] | None = None
    validator: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, response_schema: dict[str, Any] | None, must_match: str | None) -> Checks:
        """Validate the caller's checks up front, so a bad schema or regex costs no API call."""
        validator = compile_schema(response_schema) if response_schema is not None else None
        pattern = safe_regex.compile_pattern(must_match, "must_match") if must_match is not None else None
        return cls(response_schema=response_schema, must_match=pattern, validator=validator)

    def instruction(self) -> str | None:
        """What to tell the model so a capable tier passes on the first try."""
        if self.response_schema is None:
            return None
        schema = json.dumps(self.response_schema, separators=(",", ":"))
        return f"Reply with only a JSON value that validates against this JSON Schema, no prose: {schema}"


def parse_json_answer(text: str) -> Any:
    """The answer as JSON, tolerating a Markdown code fence around it."""
    m = _FENCE.match(text)
    return json.loads(m.group(1) if m else text)


def failed_check(text: str, stop_reason: str | None, checks: Checks) -> str | None:
    """The first failing trigger, or None when the answer is good enough.

    Never raises: the answer is already paid for, so a check that breaks on it (an answer
    nested too deep, regexes past their time budget) counts as that check failing.
    """
    if stop_reason == "max_tokens":
        return "max_tokens"
    if stop_reason == "refusal":
        return "refusal"
    with safe_regex.budget():
        if checks.response_schema is not None and not _schema_passes(text, checks):
            return "schema_invalid"
        if checks.must_match is not None:
            try:
                if not safe_regex.search(checks.must_match, text):
                    return "must_match_failed"
            except safe_regex.RegexBudgetExceeded:
                return "must_match_failed"
    return None


def _schema_passes(text: str, checks: Checks) -> bool:
    validator = checks.validator or compile_schema(checks.response_schema or {})
    try:
        value = parse_json_answer(text)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except (ValueError, RecursionError, safe_regex.RegexBudgetExceeded, Unresolvable):
        return False
    return error is None
