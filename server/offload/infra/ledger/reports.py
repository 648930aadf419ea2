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
from typing import TYPE_CHECKING, Any

from offload.core.errors import InputError
from offload.core.money import usd_json
from offload.infra.ledger import pg
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import BudgetLimits, ScopeState, Who, live_states
from offload.infra.ledger.statusline import open_ro

if TYPE_CHECKING:
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
# The same keys on the attempts table joined as `a` (quality counts group answers by their attempt).
_BY_ATTEMPT = {
    "day": "substr(a.ts, 1, 10)",
    "model": "a.model",
    "tool": "a.tool",
    "session": "a.session_id",
    "project": f"COALESCE(a.project, '{UNTAGGED}')",
    "user": f"COALESCE(a.user_name, '{UNTAGGED}')",
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
class Quality:
    """What became of the answers offload returned: a caller's check passed on them, the host
    judged them wrong (redo_of), or neither. Next to the money, so savings are read with it."""

    answers: int = 0
    checked: int = 0
    redone: int = 0

    @property
    def unchecked(self) -> int:
        return self.answers - self.checked - self.redone

    def to_json(self) -> dict[str, int]:
        return {"answers": self.answers, "checked": self.checked, "redone": self.redone, "unchecked": self.unchecked}


# A redone answer counts as redone even if its check had passed: the host's verdict is the stronger word.
# CASE rather than summing booleans: PostgreSQL has no integer value for a comparison.
_QUALITY = (
    "COUNT(*), COALESCE(SUM(CASE WHEN c.checked = 1 AND c.verdict IS NULL THEN 1 ELSE 0 END), 0),"
    " COALESCE(SUM(CASE WHEN c.verdict IS NOT NULL THEN 1 ELSE 0 END), 0)"
)


@dataclass(frozen=True)
class ModelSpend:
    model: str
    calls: int
    cost_pusd: int


@dataclass(frozen=True)
class BudgetSummary(_Savings):
    scopes: list[ScopeState]  # session, daily, monthly (+ user, project, team when limited): spent / held / limit
    window: str  # which attempts the figures below cover: session | day | month
    cost_pusd: int
    baseline_pusd: int
    calls: int
    cache_read_tokens: int
    prompt_tokens: int
    top_models: list[ModelSpend]
    pending_batches: int
    quality: Quality = Quality()
    cache_gain_pusd: int = 0  # reads saved minus write premiums (0050_attempt_cache_gain.sql)

    @property
    def cache_hit_pct(self) -> Decimal:
        return pct(self.cache_read_tokens, self.prompt_tokens)


async def summary(
    ledger: Ledger,
    session_id: str,
    limits: BudgetLimits,
    now: datetime | None = None,
    *,
    window: str = "session",
    top: int = 3,
    owner: Any = None,
    who: Who | None = None,
) -> BudgetSummary:
    """Budgets for every scope, plus savings, cache hits and top models for `window`."""
    if window not in _WINDOWS:
        raise InputError(f"scope {window!r} is not one of session, day, month")
    now = now or w.utcnow()
    conn = ledger.conn
    states = await live_states(ledger, session_id, limits, now, who)
    bounds = _WINDOWS[window]
    params: tuple[str, ...]
    if bounds is None:
        where, params = "session_id = ?", (session_id,)
    else:
        where, params = "ts >= ? AND ts < ?", (w.iso(bounds[0](now)), w.iso(bounds[1](now)))
    # Totals, answer quality and pending batches in one statement, the top models in a second:
    # each statement is a round trip to the database thread.
    rows = await conn.execute_fetchall(
        "SELECT * FROM (SELECT COUNT(*), COALESCE(SUM(cost_pusd), 0), COALESCE(SUM(baseline_pusd), 0),"
        " COALESCE(SUM(cache_read), 0),"
        " COALESCE(SUM(input_tokens + cache_write_5m + cache_write_1h + cache_read), 0),"
        f" COALESCE(SUM(cache_gain_pusd), 0) FROM attempts WHERE {where}) a"
        # 0003_batches.sql: a local batch is 'open' until every request is settled.
        # Only the caller's own batches: over HTTP another token's are none of its business.
        " CROSS JOIN (SELECT COUNT(*) FROM batches WHERE state = 'open' AND owner IS ?) b"
        f" CROSS JOIN (SELECT {_QUALITY} FROM calls c WHERE {where}) q",
        (*params, owner, *params),
    )
    calls, cost, base, cache_read, prompt, gain, pending, *answers = (int(v or 0) for v in rows[0])
    quality = Quality(*answers)
    top_rows = await conn.execute_fetchall(
        f"SELECT model, COUNT(*), SUM(cost_pusd) AS c FROM attempts WHERE {where}"
        " GROUP BY model ORDER BY c DESC, model LIMIT ?",
        (*params, top),
    )
    models = [ModelSpend(str(r[0]), int(r[1]), int(r[2])) for r in top_rows]
    return BudgetSummary(states, window, cost, base, calls, cache_read, prompt, models, pending, quality, gain)


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
    quality: Quality = Quality()
    cache_gain_pusd: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            **self.quality.to_json(),
            "key": self.key,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read,
            "cost_usd": usd_json(self.cost_pusd),
            "baseline_usd": usd_json(self.baseline_pusd),
            "saved_usd": usd_json(self.saved_pusd),
            "saved_pct": str(self.saved_pct),
            "cache_net_gain_usd": usd_json(self.cache_gain_pusd),
        }


def spend_rows(conn: sqlite3.Connection | pg.SyncConn, by: str, since: datetime) -> list[SpendRow]:
    """Spend grouped by day | model | tool | session | project | user since `since`.

    Synchronous on a stdlib connection: the CLI must not pay for an event loop.
    """
    if by not in _BY:
        raise InputError(f"--by {by!r}: expected one of {', '.join(_BY)}")
    key = _BY[by]
    # The CLI reads without migrating: a ledger no server has opened since 0050 lacks the column.
    columns = {str(d[0]) for d in conn.execute("SELECT * FROM attempts LIMIT 0").description or ()}
    gain = "SUM(cache_gain_pusd)" if "cache_gain_pusd" in columns else "0"
    rows = conn.execute(
        f"SELECT {key} AS k, COUNT(*), SUM(input_tokens + cache_write_5m + cache_write_1h),"
        " SUM(output_tokens),"
        f" SUM(cache_read), SUM(cost_pusd), SUM(baseline_pusd), {gain}"
        " FROM attempts WHERE ts >= ? GROUP BY k ORDER BY " + ("k" if by == "day" else "SUM(cost_pusd) DESC, k"),
        (w.iso(since),),
    ).fetchall()
    quality: dict[str, Quality] = {}
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'calls'").fetchone():
        # Each answer is grouped with the attempt that gave it (its day, model, tool and session).
        for r in conn.execute(
            f"SELECT {_BY_ATTEMPT[by]} AS k, {_QUALITY} FROM calls c JOIN attempts a ON a.request_key = c.final_key"
            " WHERE a.ts >= ? GROUP BY k",
            (w.iso(since),),
        ):
            quality[str(r[0])] = Quality(int(r[1]), int(r[2]), int(r[3]))
    out = []
    for r in rows:
        calls, input_tokens, output_tokens, cache_read, cost, base, gain_pusd = (int(v) for v in r[1:])
        k = str(r[0])
        q = quality.get(k, Quality())
        out.append(SpendRow(k, calls, input_tokens, output_tokens, cache_read, cost, base, q, gain_pusd))
    return out


def total(rows: list[SpendRow]) -> SpendRow:
    return SpendRow(
        "total",
        sum(r.calls for r in rows),
        sum(r.input_tokens for r in rows),
        sum(r.output_tokens for r in rows),
        sum(r.cache_read for r in rows),
        sum(r.cost_pusd for r in rows),
        sum(r.baseline_pusd for r in rows),
        Quality(
            sum(r.quality.answers for r in rows),
            sum(r.quality.checked for r in rows),
            sum(r.quality.redone for r in rows),
        ),
        sum(r.cache_gain_pusd for r in rows),
    )


def read_spend(path: Path | str, by: str, since: datetime) -> list[SpendRow]:
    """`spend_rows` on a read-only connection to the ledger at `path`: a file (none there: no rows),
    or a postgresql:// URL."""
    if pg.is_url(path):
        with pg.connect_sync(str(path)) as shared:
            return spend_rows(shared, by, since)
    path = Path(path)
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
