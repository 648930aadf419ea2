"""``max_tokens: 0``: a cache pre-warm, which prefills (and writes the cache) but generates nothing.

"Pre-warming the cache" (https://platform.claude.com/docs/en/build-with-claude/prompt-caching):
"The response has an empty ``content`` array, ``stop_reason: "max_tokens"``, and a fully
populated ``usage`` block ... Zero output tokens are billed." The combinations the API
rejects (anthropics/skills, skills/claude-api/shared/prompt-caching.md): "``max_tokens: 0``
is an ``invalid_request_error`` with ``stream: true``, ``thinking.type: "enabled"``,
``output_config.format``, ``tool_choice`` of ``{"type":"tool"}`` or ``{"type":"any"}``, or
inside a Message Batches request."
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError


def is_prewarm(body: dict[str, Any]) -> bool:
    return body.get("max_tokens") == 0


def check(body: dict[str, Any], *, in_batch: bool) -> None:
    """Raise the API's 400 when a pre-warm asks for something that needs generation."""
    thinking = body.get("thinking")
    output = body.get("output_config")
    tool_choice = body.get("tool_choice")
    conflicts = {
        "stream": bool(body.get("stream")),
        "thinking": isinstance(thinking, dict) and thinking.get("type") == "enabled",
        "output_config.format": isinstance(output, dict) and output.get("format") is not None,
        "tool_choice": isinstance(tool_choice, dict) and tool_choice.get("type") in ("tool", "any"),
        "a Message Batches request": in_batch,
    }
    for name, bad in conflicts.items():
        if bad:
            raise ApiError.invalid(
                f"max_tokens: 0 (cache pre-warm) cannot be combined with {name}; "
                "send max_tokens >= 1, or pre-warm with a plain non-streaming request"
            )
