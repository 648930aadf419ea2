"""`prefix_uses`: when each cacheable prompt prefix was sent, and with what breakpoint (migration 0130).

The lookup and the record of a call's use happen in one write transaction, so two processes
sending the same prefix at once see each other: the second one finds the first's use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import cast

from offload.core.cache_placement import Ttl
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.windows import iso, utcnow

HISTORY = 32  # recent uses per prefix: enough to tell a loop from a one-off
KEEP_DAYS = 7

# Earlier uses of one prefix, oldest first: (seconds since the epoch, the TTL placed or None).
Uses = list[tuple[float, Ttl | None]]
Decide = Callable[[Mapping[str, Uses]], Mapping[str, Ttl | None]]


async def place(ledger: Ledger, keys: Sequence[str], now: datetime, decide: Decide) -> Mapping[str, Ttl | None]:
    """Read each key's recent uses, let `decide` pick its TTL, and record this use with it."""
    if not keys:
        return {}
    since = iso(now - timedelta(days=KEEP_DAYS))
    async with ledger.write(inline=True) as conn:
        history: dict[str, Uses] = {}
        for key in keys:
            cur = await conn.execute(
                "SELECT ts, ttl FROM prefix_uses WHERE prefix_hash = ? AND ts >= ? ORDER BY ts DESC, id DESC LIMIT ?",
                (key, since, HISTORY),
            )
            rows = await cur.fetchall()
            await cur.close()
            history[key] = [(datetime.fromisoformat(str(ts)).timestamp(), cast("Ttl | None", ttl)) for ts, ttl in rows][
                ::-1
            ]
        chosen = decide(history)
        stamp = iso(now)
        await conn.executemany(
            "INSERT INTO prefix_uses (prefix_hash, ts, ttl) VALUES (?, ?, ?)",
            [(key, stamp, chosen.get(key)) for key in keys],
        )
    return chosen


async def prune(ledger: Ledger, *, now: datetime | None = None) -> None:
    """Forget uses older than the history window."""
    cutoff = iso((now or utcnow()) - timedelta(days=KEEP_DAYS))
    async with ledger.write() as conn:
        await conn.execute("DELETE FROM prefix_uses WHERE ts < ?", (cutoff,))
