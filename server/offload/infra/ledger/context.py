"""`context_kept_out`: what the context tools kept out of the host's context (migration 0040)."""

from __future__ import annotations

from datetime import datetime

from offload.infra.ledger.db import Also, Ledger, WriteConn
from offload.infra.ledger.windows import iso, utcnow


async def record_kept_out(
    ledger: Ledger, session_id: str, tool: str, tokens_in: int, tokens_out: int, *, now: datetime | None = None
) -> None:
    async with ledger.write(inline=True) as conn:
        await record_in(session_id, tool, tokens_in, tokens_out, now=now)(conn)


def record_in(session_id: str, tool: str, tokens_in: int, tokens_out: int, *, now: datetime | None = None) -> Also:
    """`record_kept_out` as a write to add to another transaction (e.g. the trimmed original's)."""

    async def write(conn: WriteConn) -> None:
        await conn.execute(
            "INSERT INTO context_kept_out (ts, session_id, tool, tokens_in, tokens_out) VALUES (?, ?, ?, ?, ?)",
            (iso(now or utcnow()), session_id, tool, max(0, tokens_in), max(0, tokens_out)),
        )

    return write
