"""What a service hands back to a tool adapter: compact text for the host, details as data.

Services stay free of `mcp`; `tools.py` turns a `ToolOutput` into a `CallToolResult`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

# (done, total, message) -> None; tools.py binds it to the MCP progress notification.
Progress = Callable[[float, float | None, str | None], Awaitable[None]]


async def no_progress(done: float, total: float | None = None, message: str | None = None) -> None:
    return None


@dataclass(frozen=True)
class ToolOutput:
    text: str
    data: dict[str, Any] = field(default_factory=dict)
