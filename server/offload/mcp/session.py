"""Which budget session a tool call belongs to.

Over stdio one process serves one host conversation, so the session is the process's
`settings.session_id` (`OFFLOAD_SESSION`, else Claude Code's `CLAUDE_CODE_SESSION_ID`, else one
minted per process). One HTTP server serves many hosts at once, and a per-session budget
shared between them would let one host spend another's allowance,
so each caller gets its own session under the process's id:

1. `Mcp-Session-Id` (handshake-era protocol, <= 2025-11-25): one budget session per MCP
   session. The SDK only routes ids it issued, and only to the token that opened them, so a
   client cannot pick or borrow someone else's.
2. No MCP session (the 2026-07-28 protocol is sessionless: every request stands alone): one
   budget session per bearer token, the only stable identity such a request carries.
3. Neither (sessionless and no auth, i.e. loopback only): the process's own session plus
   `:http`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from offload.state import AppState

MCP_SESSION_HEADER = "mcp-session-id"
# Enough of a 128-bit random id to keep concurrent sessions apart, short enough for a report column.
SESSION_ID_CHARS = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def session_id(ctx: Context[Any, Any], state: AppState) -> str:
    """The budget session id for the tool call `ctx` is serving."""
    base = state.settings.session_id
    request = ctx.request_context.request
    headers = getattr(request, "headers", None)
    if headers is None:  # stdio, or an in-process client: no HTTP request behind the call
        return base
    scope = getattr(request, "scope", {})
    token = getattr(scope.get("user"), "access_token", None)
    return http_session_id(base, headers.get(MCP_SESSION_HEADER), getattr(token, "client_id", None))


def http_session_id(base: str, mcp_session_id: str | None, principal: str | None) -> str:
    """Pure part of `session_id` for an HTTP request (see the module docstring for the order)."""
    for candidate in (mcp_session_id, principal):
        # Ids from the wire go into ledger rows and reports: keep them short and printable.
        cleaned = _UNSAFE.sub("", candidate or "")[:SESSION_ID_CHARS]
        if cleaned:
            return f"{base}:{cleaned}"
    return f"{base}:http"
