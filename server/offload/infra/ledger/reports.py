"""Read-side reports: the `budget_status` summary and the rows behind `offload spend`.

Savings are measured against each attempt's `baseline_pusd` (what the same tokens would cost
sent plainly to the policy's baseline model); cache hit rate is cache-read tokens over prompt
tokens. Money stays integer pusd until it is printed.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from offload.core.errors import InputError
from offload.core.money import usd_json
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import BudgetLimits, ScopeState, scope_states
from offload.infra.ledger.statusline import open_ro

if TYPE_CHECKING:
    import aiosqlite

    from offload.infra.ledger.db import Ledger

__all__ = ["BudgetSummary", "SpendRow", "pct", "read_spend", "spend_rows", "summary"]

UNTAGGED = "(none)"  # attempts recorded without a project or user
_BY = {
    "day": "substr(ts, 1, 10)",
    "model": "model",
    "tool": "tool",
    "session": "session_id",
    "project": f"COALESCE(project, '{UNTAGGED}')",
    "user": f"COALESCE(user_name, '{UNTAGGED}')",
}
_WINDOWS = {"session": None, "day": (w.day_start, w.next_day), "month": (w.month_start, w.next_month)}


def pct(part: int, whole: int) -> Decimal:
    # One decimal place, exact (Decimal), 0 when there is nothing to compare against.
    if whole <= 0:
        return Decimal(0)
    return (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"))


class _Savings:
    """Savings against the baseline model, for any figures that carry both costs."""

    cost_pusd: int
    baseline_pusd: int

    @property
    def saved_pusd(self) -> int:
        return self.baseline_pusd - self.cost_pusd

    @property
    def saved_pct(self) -> Decimal:
        return pct(self.saved_pusd, self.baseline_pusd)


@dataclass(frozen=True)
class ModelSpend:
    model: str
    calls: int
    cost_pusd: int


@dataclass(frozen=True)
class BudgetSummary(_Savings):
    scopes: list[ScopeState]  # session, daily, monthly: spent / reserved / limit / remaining
    window: str  # which attempts the figures below cover: session | day | month
    cost_pusd: int
    baseline_pusd: int
    calls: int
    cache_read_tokens: int
    prompt_tokens: int
    top_models: list[ModelSpend]
    pending_batches: int

    @property
    def cache_hit_pct(self) -> Decimal:
        return pct(self.cache_read_tokens, self.prompt_tokens)


async def _table_exists(conn: aiosqlite.Connection, name: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return await cur.fetchone() is not None


async def summary(
    ledger: Ledger,
    session_id: str,
    limits: BudgetLimits,
    now: datetime | None = None,
    *,
    window: str = "session",
    top: int = 3,
) -> BudgetSummary:
    """Budgets for every scope, plus savings, cache hits and top models for `window`."""
    if window not in _WINDOWS:
        raise InputError(f"scope {window!r} is not one of session, day, month")
    now = now or w.utcnow()
    conn = ledger.conn
    states = await scope_states(conn, session_id, limits, now)
    bounds = _WINDOWS[window]
    params: tuple[str, ...]
    if bounds is None:
        where, params = "session_id = ?", (session_id,)
    else:
        where, params = "ts >= ? AND ts < ?", (w.iso(bounds[0](now)), w.iso(bounds[1](now)))
    cur = await conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(cost_pusd), 0), COALESCE(SUM(baseline_pusd), 0),"
        " COALESCE(SUM(cache_read), 0),"
        " COALESCE(SUM(input_tokens + cache_write_5m + cache_write_1h + cache_read), 0)"
        f" FROM attempts WHERE {where}",
        params,
    )
    row = await cur.fetchone()
    assert row is not None
    calls, cost, base, cache_read, prompt = (int(v) for v in row)
    cur = await conn.execute(
        f"SELECT model, COUNT(*), SUM(cost_pusd) AS c FROM attempts WHERE {where}"
        " GROUP BY model ORDER BY c DESC, model LIMIT ?",
        (*params, top),
    )
    models = [ModelSpend(str(r[0]), int(r[1]), int(r[2])) for r in await cur.fetchall()]
    pending = 0
    if await _table_exists(conn, "batches"):
        # 0003_batches.sql: a local batch is 'open' until every request is settled.
        got = await (await conn.execute("SELECT COUNT(*) FROM batches WHERE state = 'open'")).fetchone()
        pending = int(got[0]) if got else 0
    return BudgetSummary(states, window, cost, base, calls, cache_read, prompt, models, pending)


# --- offload spend ------------------------------------------------------------------------


@dataclass(frozen=True)
class SpendRow(_Savings):
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read: int
    cost_pusd: int
    baseline_pusd: int

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read,
            "cost_usd": usd_json(self.cost_pusd),
            "baseline_usd": usd_json(self.baseline_pusd),
            "saved_usd": usd_json(self.saved_pusd),
            "saved_pct": str(self.saved_pct),
        }


def spend_rows(conn: sqlite3.Connection, by: str, since: datetime) -> list[SpendRow]:
    """Spend grouped by day | model | tool | session | project | user since `since`.

    Synchronous on a stdlib connection: the CLI must not pay for an event loop.
    """
    if by not in _BY:
        raise InputError(f"--by {by!r}: expected one of {', '.join(_BY)}")
    key = _BY[by]
    rows = conn.execute(
        f"SELECT {key} AS k, COUNT(*), SUM(input_tokens + cache_write_5m + cache_write_1h),"
        " SUM(output_tokens),"
        " SUM(cache_read), SUM(cost_pusd), SUM(baseline_pusd)"
        " FROM attempts WHERE ts >= ? GROUP BY k ORDER BY " + ("k" if by == "day" else "SUM(cost_pusd) DESC, k"),
        (w.iso(since),),
    ).fetchall()
    return [SpendRow(str(r[0]), *(int(v) for v in r[1:])) for r in rows]


def total(rows: list[SpendRow]) -> SpendRow:
    return SpendRow(
        "total",
        sum(r.calls for r in rows),
        sum(r.input_tokens for r in rows),
        sum(r.output_tokens for r in rows),
        sum(r.cache_read for r in rows),
        sum(r.cost_pusd for r in rows),
        sum(r.baseline_pusd for r in rows),
    )


def read_spend(path: Path, by: str, since: datetime) -> list[SpendRow]:
    """`spend_rows` on a read-only connection to the ledger file at `path` (none there: no rows)."""
    if not path.exists():
        return []
    try:
        conn = open_ro(path)
    except sqlite3.Error as exc:  # a directory, no read permission
        raise InputError(f"{path}: cannot read the ledger ({exc})") from None
    try:
        return spend_rows(conn, by, since)
    except sqlite3.DatabaseError as exc:  # OperationalError, or "file is not a database"
        if "no such column" in str(exc):
            raise InputError(
                f"{path}: this ledger predates project and user tracking; any `offload serve` on it adds them"
            ) from None
        if "no such table" not in str(exc):
            raise InputError(f"{path}: cannot read the ledger ({exc})") from None
        return []
    finally:
        conn.close()
