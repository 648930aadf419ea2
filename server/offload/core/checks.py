"""Checks a caller can state, run on an answer. Pure.

offload escalates on these, not on hedging words: a check either passes or names the trigger
(`max_tokens`, `refusal`, `schema_invalid`, `must_match_failed`) the policy may climb on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

from offload.core.errors import InputError

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


@dataclass(frozen=True)
class Checks:
    response_schema: dict[str, Any] | None = None
    must_match: re.Pattern[str] | None = None

    @classmethod
    def build(cls, response_schema: dict[str, Any] | None, must_match: str | None) -> Checks:
        """Validate the caller's checks up front, so a bad schema or regex costs no API call."""
        if response_schema is not None:
            try:
                jsonschema.validators.validator_for(response_schema).check_schema(response_schema)
            except jsonschema.SchemaError as exc:
                raise InputError(
                    f"response_schema is not a valid JSON Schema: {exc.message}; send a JSON Schema object"
                    ' such as {"type": "object", "properties": {...}, "required": [...]}'
                ) from None
        pattern = None
        if must_match is not None:
            try:
                pattern = re.compile(must_match)
            except re.error as exc:
                raise InputError(f"must_match is not a valid regular expression: {exc}; send a Python regex") from None
        return cls(response_schema=response_schema, must_match=pattern)

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
    """The first failing trigger, or None when the answer is good enough."""
    if stop_reason == "max_tokens":
        return "max_tokens"
    if stop_reason == "refusal":
        return "refusal"
    if checks.response_schema is not None:
        try:
            value = parse_json_answer(text)
            jsonschema.validate(value, checks.response_schema)
        except (ValueError, jsonschema.ValidationError):
            return "schema_invalid"
    if checks.must_match is not None and not checks.must_match.search(text):
        return "must_match_failed"
    return None
