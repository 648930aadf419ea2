"""Validate a Messages request body and lay its prompt out as a token-counted sequence.

The sequence runs tools -> system -> messages (the API's prefix order), so prompt
caching (caching.py) and token counting share one view of the request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from . import tokenizer
from .cache_keys import message_settings, system_settings
from .errors import ApiError
from .models import ModelSpec, get_model

API_VERSION = "2026-10-21"
MAX_BREAKPOINTS = 4
TTL_SECONDS = {"5m": 300, "1h": 3600}

_COMMON = {
    "messages",
    "model",
    "cache_control",
    "output_config",
    "speed",
    "system",
    "thinking",
    "tool_choice",
    "tools",
    "user_profile_id",
}
CREATE_FIELDS = _COMMON | {
    "max_tokens",
    "container",
    "diagnostics",
    "inference_geo",
    "metadata",
    "service_tier",
    "stop_sequences",
    "stream",
}
COUNT_FIELDS = _COMMON
# Sampling knobs were removed from the API in this version; the real API rejects them
# rather than ignoring them, so clients that still send them must find out here.
REMOVED_FIELDS = ("temperature", "top_p", "top_k")


def canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Item:
    """One prompt element: a tool, a system/message block, or a fixed overhead."""

    key: object  # what identifies the content for caching (cache_control removed)
    tokens: int
    ttl: str | None = None  # set when this item carries a cache breakpoint
    block: bool = False  # a content block (tool, system or message block), not an overhead


@dataclass(frozen=True)
class Boundary:
    """The end of one content block: where the cache can hold a prefix."""

    key: str  # model + hash of the canonical prefix up to and including the block
    prefix_tokens: int
    position: int = 0  # lookback position: a run of tool_use (or tool_result) blocks is one


@dataclass
class Breakpoint:
    key: str  # the key of its block's boundary
    prefix_tokens: int
    ttl: str
    block: int  # index of its block in Prompt.boundaries (for the lookback)


@dataclass
class Prompt:
    model: ModelSpec
    items: list[Item]
    body: dict[str, Any]
    breakpoints: list[Breakpoint] = field(default_factory=list)
    boundaries: list[Boundary] = field(default_factory=list)  # one per content block, in order

    @property
    def total_tokens(self) -> int:
        return sum(i.tokens for i in self.items)

    @property
    def last_user_text(self) -> str:
        for msg in reversed(self.body["messages"]):
            if msg["role"] == "user":
                return _text_of(msg["content"])
        return ""


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    parts = [b.get("text", "") for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    return "\n".join(p for p in parts if isinstance(p, str))


def parse_create(body: object) -> Prompt:
    prompt = _parse(body, CREATE_FIELDS)
    mt = prompt.body.get("max_tokens")
    if mt is None:
        raise ApiError.invalid("max_tokens: Field required")
    # 0 is allowed: a cache pre-warm (prewarm.py), not an answer.
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 0:
        raise ApiError.invalid("max_tokens: Input should be a non-negative integer")
    if mt > prompt.model.max_tokens:
        raise ApiError.invalid(
            f"max_tokens: {mt} > {prompt.model.max_tokens}, which is the maximum allowed number of "
            f"output tokens for {prompt.model.id}"
        )
    stops = prompt.body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        raise ApiError.invalid("stop_sequences: Input should be a list of non-empty strings")
    if prompt.body["messages"][-1]["role"] == "assistant" and not prompt.model.prefill:
        # https://platform.claude.com/docs/en/api/errors: 4.6+ models reject a final assistant turn.
        raise ApiError.invalid(
            "This model does not support assistant message prefill. The conversation must end with a user message."
        )
    return prompt


def parse_count(body: object) -> Prompt:
    return _parse(body, COUNT_FIELDS)


def _check_fields(body: object, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError.invalid("request body must be a JSON object")
    for name in REMOVED_FIELDS:
        if name in body:
            raise ApiError.invalid(f"{name}: this parameter is not supported in API version {API_VERSION}; remove it")
    for name in body:
        if name not in allowed:
            raise ApiError.invalid(f"{name}: Extra inputs are not permitted")
    if "model" not in body:
        raise ApiError.invalid("model: Field required")
    return body


class _Parts:
    """The prompt's cacheable items in order (tools -> system -> messages) and their breakpoints."""

    def __init__(self) -> None:
        self.items: list[Item] = [Item(("request",), tokenizer.REQUEST_OVERHEAD)]
        self.marked: list[tuple[int, str, str]] = []  # (item index, ttl, where)

    def add_block(self, key_prefix: str, block: object, where: str) -> None:
        key, tokens, cc = _block(block, where, is_tool=key_prefix == "tool")
        if cc is not None:
            self.marked.append((len(self.items), cc, where))
        self.items.append(Item((key_prefix, key), tokens, block=True))

    def add_text(self, key_prefix: str, text: str) -> None:
        self.items.append(Item((key_prefix, {"type": "text", "text": text}), tokenizer.count_text(text), block=True))

    def add_tools(self, tools: object) -> None:
        if tools is None:
            return
        if not isinstance(tools, list):
            raise ApiError.invalid("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise ApiError.invalid(f"tools.{i}: each tool needs a string 'name'")
            self.add_block("tool", tool, f"tools.{i}")

    def add_system(self, system: object) -> None:
        if system is None:
            return
        self.items.append(Item(("system",), tokenizer.MESSAGE_OVERHEAD))
        if isinstance(system, str):
            self.add_text("system", system)
        elif isinstance(system, list):
            for i, block in enumerate(system):
                if not isinstance(block, dict) or block.get("type") != "text":
                    raise ApiError.invalid(f"system.{i}: system blocks must be text blocks")
                self.add_block("system", block, f"system.{i}")
        else:
            raise ApiError.invalid("system: Input should be a string or a list of text blocks")

    def add_messages(self, messages: object) -> None:
        if not isinstance(messages, list) or not messages:
            raise ApiError.invalid("messages: at least one message is required")
        prev_role: str | None = None
        for m, msg in enumerate(messages):
            role = _message_role(msg, m)
            # "Consecutive user or assistant turns in your request will be combined into a single
            # turn" (Messages API reference): a continuation adds content, not a turn's overhead.
            if role != prev_role:
                self.items.append(Item(("message", role), tokenizer.MESSAGE_OVERHEAD))
            prev_role = role
            content = msg.get("content")
            if isinstance(content, str):
                if not content and m != len(messages) - 1:
                    raise ApiError.invalid(f"messages.{m}.content: text content must be non-empty")
                self.add_text("block", content)
            elif isinstance(content, list) and content:
                for b, block in enumerate(content):
                    self.add_block("block", block, f"messages.{m}.content.{b}")
            else:
                raise ApiError.invalid(f"messages.{m}.content: Input should be a string or a non-empty list")

    def add_automatic_breakpoint(self, top_cc: object) -> None:
        if top_cc is None:
            return
        # Automatic caching: the marker lands on the last cacheable block of the request.
        ttl = _cache_control(top_cc, "cache_control")
        last = len(self.items) - 1
        if not any(idx == last for idx, _, _ in self.marked):
            self.marked.append((last, ttl, "cache_control"))

    def check_breakpoints(self) -> None:
        if len(self.marked) > MAX_BREAKPOINTS:
            raise ApiError.invalid(
                f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(self.marked)}."
            )
        seen_5m = False
        for _, ttl, where in sorted(self.marked):
            if ttl == "5m":
                seen_5m = True
            elif seen_5m:
                raise ApiError.invalid(
                    f"{where}.cache_control: a ttl='1h' cache_control block must not come after a "
                    "ttl='5m' cache_control block (longer TTLs must appear first)"
                )


def _message_role(msg: object, m: int) -> str:
    if not isinstance(msg, dict):
        raise ApiError.invalid(f"messages.{m}: Input should be an object with 'role' and 'content'")
    extra = set(msg) - {"role", "content"}
    if extra:
        raise ApiError.invalid(f"messages.{m}.{sorted(extra)[0]}: Extra inputs are not permitted")
    role = msg.get("role")
    if role not in ("user", "assistant"):
        raise ApiError.invalid(f"messages.{m}.role: Input should be 'user' or 'assistant'")
    if m == 0 and role != "user":
        raise ApiError.invalid("messages: the first message must use the 'user' role")
    return str(role)


def _parse(body: object, allowed: set[str]) -> Prompt:
    body = _check_fields(body, allowed)
    model = get_model(body["model"])
    parts = _Parts()
    parts.add_tools(body.get("tools"))
    # Settings the API renders into the prompt, so a change misses every cache after them:
    # speed ahead of system, message-level settings ahead of the messages (cache_keys.py).
    parts.items.append(Item(("settings", system_settings(body)), 0))
    parts.add_system(body.get("system"))
    if body.get("messages") is None:
        raise ApiError.invalid("messages: Field required")
    parts.items.append(Item(("settings", message_settings(body)), 0))
    parts.add_messages(body["messages"])
    parts.add_automatic_breakpoint(body.get("cache_control"))
    parts.check_breakpoints()
    items, marked = parts.items, parts.marked
    prompt = Prompt(model=model, items=items, body=body)
    for idx, ttl, _ in marked:
        items[idx].ttl = ttl
    prompt.boundaries, prompt.breakpoints = _boundaries(model.id, items)
    if prompt.total_tokens > model.max_input_tokens:
        raise ApiError.invalid(f"prompt is too long: {prompt.total_tokens} tokens > {model.max_input_tokens} maximum")
    return prompt


def _block(block: object, where: str, *, is_tool: bool = False) -> tuple[dict[str, Any], int, str | None]:
    # Custom tools may omit "type"; every content block must carry one.
    if not isinstance(block, dict) or not (is_tool or isinstance(block.get("type"), str)):
        raise ApiError.invalid(f"{where}: content blocks must be objects with a 'type'")
    cc = block.get("cache_control")
    ttl = _cache_control(cc, f"{where}.cache_control") if cc is not None else None
    key = {k: v for k, v in block.items() if k != "cache_control"}
    if block.get("type") == "text" and not is_tool:
        text = block.get("text")
        if not isinstance(text, str):
            raise ApiError.invalid(f"{where}.text: Field required")
        if not text:
            raise ApiError.invalid(f"{where}: text content blocks must be non-empty")
        return key, tokenizer.count_text(text), ttl
    return key, tokenizer.count_text(canonical(key)), ttl


def _cache_control(cc: object, where: str) -> str:
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise ApiError.invalid(f"{where}: Input should be {{'type': 'ephemeral'}}")
    extra = set(cc) - {"type", "ttl"}
    if extra:
        raise ApiError.invalid(f"{where}.{sorted(extra)[0]}: Extra inputs are not permitted")
    ttl = cc.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise ApiError.invalid(f"{where}.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _block_type(key: object) -> object:
    # Item keys of content blocks are ("block" | "system" | "tool", block dict).
    if isinstance(key, tuple) and len(key) == 2 and key[0] == "block" and isinstance(key[1], dict):
        return key[1].get("type")
    return None


def _boundaries(model_id: str, items: list[Item]) -> tuple[list[Boundary], list[Breakpoint]]:
    # One running hash over the canonical prefix: the key at a block's end covers every
    # byte before it, so any earlier change yields a different key (a miss). Every block
    # end gets a key (the lookback reads at any of them); breakpoints are where writes go.
    h = hashlib.sha256(model_id.encode())
    bounds: list[Boundary] = []
    points: list[Breakpoint] = []
    running = 0
    position, prev_kind = -1, None
    for item in items:
        h.update(b"\x1e" + canonical(item.key).encode())
        running += item.tokens
        if item.block:
            # "A run of consecutive tool_use blocks counts as one position, and so does a run of
            # consecutive tool_result blocks" (prompt-caching docs, lookback).
            kind = _block_type(item.key)
            if not (kind in ("tool_use", "tool_result") and kind == prev_kind):
                position += 1
            prev_kind = kind
            bounds.append(Boundary(key=h.hexdigest(), prefix_tokens=running, position=position))
        if item.ttl is not None:
            points.append(Breakpoint(key=h.hexdigest(), prefix_tokens=running, ttl=item.ttl, block=len(bounds) - 1))
    return bounds, points
