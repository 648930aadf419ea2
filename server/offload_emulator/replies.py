"""Scripted replies (YAML rules, first match wins) and the deterministic default reply.

Script format — a YAML list (or a mapping with a ``rules:`` list) of rules::

    - model: claude-haiku-5-5        # optional; exact id or a regex (full match)
      match: "(?i)summari[sz]e"      # optional; regex searched in the last user message text
      reply: "A short summary."      # text of the answer (default: the generated reply)
      stop_reason: end_turn          # optional: end_turn|max_tokens|refusal|stop_sequence
      output_tokens: 120             # optional override of the counted output tokens
      times: 2                       # optional: the rule applies N times, then is skipped
    - match: "fail"
      error: {status: 529, type: overloaded_error, message: "busy"}
    - match: "weather"
      reply: "Let me look that up."    # optional text block before the call
      tool_use: {name: get_weather, input: {location: Paris}}   # stop_reason becomes tool_use

A ``tool_use`` reply has the shape of the tool-use docs' example
(https://platform.claude.com/docs/en/agents-and-tools/tool-use/overview): an optional text
block, then ``{"type": "tool_use", "id": "toolu_...", "name", "input"}``, with
``stop_reason: "tool_use"``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import tokenizer
from .errors import ERROR_TYPES, ApiError

STOP_REASONS = ("end_turn", "max_tokens", "refusal", "stop_sequence")
_RULE_KEYS = {"model", "match", "reply", "stop_reason", "output_tokens", "error", "times", "tool_use"}


class ScriptError(ValueError):
    """A script file or rule list is invalid; the message names the source and rule index."""


@dataclass
class Rule:
    model: str | None = None
    match: str | None = None
    reply: str | None = None
    stop_reason: str | None = None
    output_tokens: int | None = None
    error: ApiError | None = None
    times: int | None = None
    tool_use: dict[str, Any] | None = None  # {"name": str, "input": dict}

    def __post_init__(self) -> None:
        self._model_re = re.compile(self.model) if self.model is not None else None
        self._match_re = re.compile(self.match) if self.match is not None else None

    def matches(self, model: str, text: str) -> bool:
        if self.model is not None and self.model != model:
            assert self._model_re is not None
            if not self._model_re.fullmatch(model):
                return False
        return self._match_re is None or self._match_re.search(text) is not None


@dataclass(frozen=True)
class Reply:
    text: str
    stop_reason: str
    output_tokens: int
    stop_sequence: str | None = None
    tool_use: dict[str, Any] | None = None  # a complete tool_use content block

    def content(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if self.text or self.tool_use is None:
            blocks.append({"type": "text", "text": self.text, "citations": None})
        if self.tool_use is not None:
            blocks.append(self.tool_use)
        return blocks


class Script:
    """Thread-safe rule list; ``times`` counters are consumed as rules fire."""

    def __init__(self, rules: list[Rule] | None = None) -> None:
        self._rules = list(rules or [])
        self._left = [r.times for r in self._rules]
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: str | Path | list[Any] | dict[str, Any] | None) -> Script:
        """From a YAML file path, or from already-parsed rules (a list of dicts)."""
        if source is None:
            return cls()
        if isinstance(source, (str, Path)):
            path = Path(source)
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ScriptError(f"{path}: cannot read script: {exc}") from exc
            except yaml.YAMLError as exc:
                raise ScriptError(f"{path}: not valid YAML: {exc}") from exc
            return cls(parse_rules(data, str(path)))
        return cls(parse_rules(source, "<script>"))

    def pick(self, model: str, text: str) -> Rule | None:
        with self._lock:
            for i, rule in enumerate(self._rules):
                left = self._left[i]
                if left is not None and left <= 0:
                    continue
                if rule.matches(model, text):
                    if left is not None:
                        self._left[i] = left - 1
                    return rule
        return None


def parse_rules(data: object, source: str) -> list[Rule]:
    if data is None:
        return []
    if isinstance(data, dict):
        if set(data) != {"rules"}:
            raise ScriptError(f"{source}: expected a list of rules or a mapping with only 'rules'")
        data = data["rules"]
    if not isinstance(data, list):
        raise ScriptError(f"{source}: expected a list of rules, got {type(data).__name__}")
    return [_rule(raw, f"{source}: rule {i}") for i, raw in enumerate(data)]


def _rule(raw: object, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ScriptError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise ScriptError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_RULE_KEYS)}")
    for key in ("model", "match", "reply"):
        if key in raw and not isinstance(raw[key], str):
            raise ScriptError(f"{where}: '{key}' must be a string")
    for key in ("model", "match"):
        if key in raw:
            try:
                re.compile(raw[key])
            except re.error as exc:
                raise ScriptError(f"{where}: '{key}' is not a valid regex: {exc}") from exc
    stop = raw.get("stop_reason")
    if stop is not None and stop not in STOP_REASONS:
        raise ScriptError(f"{where}: stop_reason must be one of {', '.join(STOP_REASONS)}")
    for key in ("output_tokens", "times"):
        val = raw.get(key)
        if val is not None and (not isinstance(val, int) or isinstance(val, bool) or val < 0):
            raise ScriptError(f"{where}: '{key}' must be a non-negative integer")
    tool_use = _tool_use(raw, where, stop)
    error = None
    if "error" in raw:
        error = _error(raw["error"], where)
        if "reply" in raw:
            raise ScriptError(f"{where}: give either 'reply' or 'error', not both")
    return Rule(
        model=raw.get("model"),
        match=raw.get("match"),
        reply=raw.get("reply"),
        stop_reason=stop,
        output_tokens=raw.get("output_tokens"),
        error=error,
        times=raw.get("times"),
        tool_use=tool_use,
    )


def _tool_use(raw: dict[str, Any], where: str, stop: object) -> dict[str, Any] | None:
    tool_use = raw.get("tool_use")
    if tool_use is None:
        return None
    if (
        not isinstance(tool_use, dict)
        or set(tool_use) - {"name", "input"}
        or not isinstance(tool_use.get("name"), str)
        or not isinstance(tool_use.get("input", {}), dict)
    ):
        raise ScriptError(f"{where}: 'tool_use' must be a mapping with a string 'name' and a mapping 'input'")
    if "error" in raw or stop is not None:
        raise ScriptError(f"{where}: a 'tool_use' rule sets stop_reason itself; drop 'error'/'stop_reason'")
    return {"name": tool_use["name"], "input": dict(tool_use.get("input", {}))}


def _error(raw: object, where: str) -> ApiError:
    if not isinstance(raw, dict) or set(raw) - {"status", "type", "message"}:
        raise ScriptError(f"{where}: 'error' must be a mapping with status, type, message")
    status = raw.get("status")
    if not isinstance(status, int) or not 400 <= status <= 599:
        raise ScriptError(f"{where}: error.status must be an HTTP error status (400-599)")
    type_ = raw.get("type", ERROR_TYPES.get(status, "api_error"))
    message = raw.get("message", f"scripted {status}")
    if not isinstance(type_, str) or not isinstance(message, str):
        raise ScriptError(f"{where}: error.type and error.message must be strings")
    return ApiError(status, type_, message)


def default_text(model: str, prompt_text: str) -> str:
    digest = hashlib.sha256(f"{model}\n{prompt_text}".encode()).hexdigest()[:8]
    echo = " ".join(prompt_text.split()[:8])
    return f"Emulated answer ({model}): {digest} {echo}".rstrip()


def _tool_reply(rule: Rule, tool_use: dict[str, Any], model: str, prompt_text: str, max_tokens: int) -> Reply:
    text = rule.reply or ""
    digest = hashlib.sha256(f"{model}\n{prompt_text}\n{tool_use['name']}".encode()).hexdigest()[:24]
    block = {"type": "tool_use", "id": f"toolu_{digest}", "name": tool_use["name"], "input": tool_use["input"]}
    counted = tokenizer.count_text(text) + tokenizer.count_text(json.dumps(block, sort_keys=True))
    out = rule.output_tokens if rule.output_tokens is not None else counted
    if out > max_tokens:
        # Cut off inside the call: the API returns no usable tool_use block then.
        return Reply(tokenizer.truncate(text, max_tokens), "max_tokens", max_tokens)
    return Reply(text=text, stop_reason="tool_use", output_tokens=max(out, 1), tool_use=block)


def make_reply(rule: Rule | None, model: str, prompt_text: str, max_tokens: int, stop_sequences: list[str]) -> Reply:
    if rule is not None and rule.tool_use is not None:
        return _tool_reply(rule, rule.tool_use, model, prompt_text, max_tokens)
    text = rule.reply if rule is not None and rule.reply is not None else default_text(model, prompt_text)
    stop_reason = rule.stop_reason if rule is not None and rule.stop_reason else "end_turn"
    stop_sequence: str | None = None
    if stop_reason == "stop_sequence":
        stop_sequence = stop_sequences[0] if stop_sequences else None
    # A custom stop sequence occurring in the text ends generation there, as on the API.
    cuts = [(text.find(s), s) for s in stop_sequences if s in text]
    if cuts:
        at, seq = min(cuts)
        text, stop_reason, stop_sequence = text[:at], "stop_sequence", seq
    counted = tokenizer.count_text(text)
    out = rule.output_tokens if rule is not None and rule.output_tokens is not None else counted
    if counted > max_tokens or out > max_tokens:
        text = tokenizer.truncate(text, max_tokens)
        out, stop_reason, stop_sequence = max_tokens, "max_tokens", None
    # The API never bills zero output tokens, even for an empty answer.
    return Reply(text=text, stop_reason=stop_reason, output_tokens=max(out, 1), stop_sequence=stop_sequence)
