"""Pure request assembly: one builder for every Messages API request offload sends.

Requests are laid out stable-parts-first (system, then shared material, then the task prompt)
with `cache_control` breakpoints on the stable parts, because the API caches byte-exact
prefixes in the order tools -> system -> messages. Sync calls, fan-outs and batches all go
through `build_params`, so they place breakpoints by one rule.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from offload.core.tokens import approx_tokens

Ttl = Literal["5m", "1h"]


@dataclass(frozen=True)
class Breakpoints:
    """The TTL of each breakpoint `build_params` may place; None places none there.

    Decided from reuse history (`core.cache_placement`) by the caller: this module only places them.
    """

    system: Ttl | None = None
    content: Ttl | None = None


@dataclass(frozen=True)
class Prompt:
    """What to ask, split by how stable each part is across calls."""

    prompt: str
    system: str | None = None
    # Per-call instructions (a response_schema's "reply with JSON..."): a system block of its own
    # after the cached system prefix, so one shared system prompt stays cached across schemas.
    instruction: str | None = None
    documents: tuple[tuple[str, str], ...] = ()  # (label, text): shared material, cached
    prefix: str | None = None  # shared unlabelled text before the prompt (a batch template's head)
    prefill: str | None = None
    # False when the system prompt is this request's own (a batch request overriding the
    # batch-wide one): a breakpoint there would pay a write premium that no other request reads.
    shared_system: bool = True


def cache_control(ttl: str) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": ttl}


def build_params(
    model: str,
    prompt: Prompt,
    *,
    max_tokens: int,
    ttl: str = "5m",
    min_cacheable: int = 1024,
    breakpoints: Breakpoints | None = None,
) -> dict[str, Any]:
    """Messages API params with breakpoints on the stable prefix.

    `breakpoints` says which of the two places get one and with what TTL; without it both
    may, with `ttl`.

    A breakpoint is placed only where the prefix up to it plausibly reaches the model's
    minimum cacheable length: below it the API caches nothing anyway, and above it a write
    costs 1.25x (5m) or 2x (1h) input once, then reads cost 0.1x on every reuse.
    """
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    system_ttl, content_ttl = (ttl, ttl) if breakpoints is None else (breakpoints.system, breakpoints.content)
    prefix_tokens = 0
    if prompt.system:
        prefix_tokens = approx_tokens(prompt.system)
        block: dict[str, Any] = {"type": "text", "text": prompt.system}
        if prefix_tokens >= min_cacheable and prompt.shared_system and system_ttl:
            # Cached on its own too: other calls reuse the same system prompt with other documents.
            block["cache_control"] = cache_control(system_ttl)
        params["system"] = [block]
    if prompt.instruction:
        prefix_tokens += approx_tokens(prompt.instruction)
        params.setdefault("system", []).append({"type": "text", "text": prompt.instruction})
    content: list[dict[str, Any]] = []
    for label, text in prompt.documents:
        prefix_tokens += approx_tokens(text)
        content.append({"type": "text", "text": f'<document name="{label}">\n{text}\n</document>'})
    if prompt.prefix:
        prefix_tokens += approx_tokens(prompt.prefix)
        content.append({"type": "text", "text": prompt.prefix})
    if content and prefix_tokens >= min_cacheable and content_ttl:
        content[-1]["cache_control"] = cache_control(content_ttl)
    content.append({"type": "text", "text": prompt.prompt})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if prompt.prefill:
        messages.append({"role": "assistant", "content": prompt.prefill})
    params["messages"] = messages
    return params


def prefix_sizes(prompt: Prompt) -> tuple[int, int]:
    """Approximate tokens up to the system breakpoint and up to the content breakpoint."""
    system = approx_tokens(prompt.system) if prompt.system else 0
    content = system + approx_tokens(prompt.instruction or "")
    content += sum(approx_tokens(text) for _, text in prompt.documents) + approx_tokens(prompt.prefix or "")
    return system, content


def prefix_keys(model: str, prompt: Prompt, min_cacheable: int) -> tuple[str | None, str | None]:
    """Digests of the two cacheable prefixes of `prompt` on `model`: the system prompt alone, and
    everything up to the content breakpoint (system, instruction, documents, shared prefix).

    None where `build_params` would place no breakpoint whatever the TTLs. The model is part of the key because
    every model keeps its own cache. Digests only: the ledger never holds the text.
    """
    system_tokens, content_tokens = prefix_sizes(prompt)
    system = None
    if prompt.system and prompt.shared_system and system_tokens >= min_cacheable:
        system = _digest(["system", model, prompt.system])
    content = None
    if (prompt.documents or prompt.prefix) and content_tokens >= min_cacheable:
        docs = [part for doc in prompt.documents for part in doc]
        content = _digest(["content", model, prompt.system or "", prompt.instruction or "", *docs, prompt.prefix or ""])
    return system, content


def _digest(parts: list[str]) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:32]


def request_hash(params: dict[str, Any]) -> str:
    """Stable digest of a request, so the ledger can tie attempts to content without storing it."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]
