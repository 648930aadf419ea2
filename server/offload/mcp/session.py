"""Which budget session, and which owner, a tool call belongs to.

Over stdio one process serves one host conversation, so the session is the process's
`settings.session_id` (`OFFLOAD_SESSION`, else Claude Code's `CLAUDE_CODE_SESSION_ID`, else one
minted per process) and the owner is local (None). One HTTP server serves many hosts at once,
so each caller gets its own session and its own batches and handles, derived only from what
the server itself vouches for:

- the principal: the name of the bearer token the request authenticated with (`token-N`);
- the MCP session id the server issued (handshake-era protocol). It comes from the server's
  own connection, never from the `Mcp-Session-Id` header: on the sessionless 2026-07-28
  protocol nothing checks that header, and a client could name any session it liked.

Budget session: `<base>:<principal>[:<mcp session>]`; tokenless loopback uses `http` for the
principal. Owner: the principal (None without auth).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.server.mcpserver import Context

    from offload.state import AppState

# Enough of a 128-bit random id to keep concurrent sessions apart, short enough for a report column.
SESSION_ID_CHARS = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _request(ctx: Context[Any, Any]) -> Any:
    return ctx.request_context.request


def principal(ctx: Context[Any, Any]) -> str | None:
    """The authenticated token's name for an HTTP call, None for stdio, in-process or no auth."""
    request = _request(ctx)
    scope = getattr(request, "scope", None) or {}
    token = getattr(scope.get("user"), "access_token", None)
    name = getattr(token, "client_id", None)
    return name if isinstance(name, str) and name else None


def _issued_session(ctx: Context[Any, Any]) -> str | None:
    """The MCP session id the server issued for this connection (None when sessionless)."""
    connection = getattr(ctx.request_context.session, "_connection", None)
    sid = getattr(connection, "session_id", None)
    return sid if isinstance(sid, str) and sid else None


def session_id(ctx: Context[Any, Any], state: AppState) -> str:
    """The budget session id for the tool call `ctx` is serving."""
    base = state.settings.session_id
    if getattr(_request(ctx), "headers", None) is None:  # stdio, or an in-process client
        return base
    return http_session_id(base, _issued_session(ctx), principal(ctx))


def http_session_id(base: str, issued_session: str | None, principal: str | None) -> str:
    """Pure part of `session_id` for an HTTP request (see the module docstring)."""
    # Ids go into ledger rows and reports: keep them short and printable.
    who = _UNSAFE.sub("", principal or "")[:32] or "http"
    sid = _UNSAFE.sub("", issued_session or "")[:SESSION_ID_CHARS]
    return f"{base}:{who}:{sid}" if sid else f"{base}:{who}"
