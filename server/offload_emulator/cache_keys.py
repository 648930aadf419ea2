"""Request settings that invalidate cached prefixes although they are not content blocks.

"Prompt caching: what invalidates the cache"
(https://platform.claude.com/docs/en/build-with-claude/prompt-caching#what-invalidates-the-cache):
the cache follows tools -> system -> messages, and a change at one level invalidates it and
every later level. Per that table:

- ``speed`` invalidates the system and message caches (tools kept);
- ``tool_choice``, the ``thinking`` settings and ``output_config.effort`` invalidate the
  message cache only. "Setting effort explicitly to the model's default is equivalent to
  omitting it and does not invalidate", so effort is keyed with the default filled in
  ("high", https://platform.claude.com/docs/en/build-with-claude/effort).

prompt.py folds these values into the running prefix hash just before the level they guard.
Simplification: the thinking and effort rows also invalidate tools/system on models that
render the thinking configuration ahead of them; the emulator treats every model as one
that does not.
"""

from __future__ import annotations

from typing import Any

DEFAULT_EFFORT = "high"


def system_settings(body: dict[str, Any]) -> dict[str, Any]:
    return {"speed": body.get("speed")}


def message_settings(body: dict[str, Any]) -> dict[str, Any]:
    output = body.get("output_config")
    effort = output.get("effort") if isinstance(output, dict) else None
    return {
        "tool_choice": body.get("tool_choice"),
        "thinking": body.get("thinking"),
        "effort": effort or DEFAULT_EFFORT,
    }
