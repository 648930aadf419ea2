"""Thin MCP tool adapters: validate, call a service, format a compact result.

Every `OffloadError` becomes a `ToolError` whose text tells the model what to send instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from offload.app import AppState


def register(server: MCPServer[AppState]) -> None:
    """Attach every offload tool to `server`."""
