"""Noting what a context tool kept out of the host's context (shown per session by the dashboard)."""

from __future__ import annotations

from offload.core.output import ToolOutput
from offload.infra.ledger.context import record_kept_out
from offload.state import AppState


async def noted(state: AppState, session: str, tool: str, out: ToolOutput) -> ToolOutput:
    """`out` unchanged, after recording its `tokens_in` / `tokens_out` against the session."""
    await record_kept_out(state.ledger, session, tool, int(out.data["tokens_in"]), int(out.data["tokens_out"]))
    return out
