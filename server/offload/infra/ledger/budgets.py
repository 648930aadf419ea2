"""Budgets enforced across processes: reserve worst case -> call -> record (which releases).

Claude Code runs one server process per session, all sharing one ledger file. A reservation
is checked and inserted inside `ledger.write()` (BEGIN IMMEDIATE), which holds SQLite's write
lock, so two processes can never both see the same headroom and jointly overspend. Recording
the attempt deletes its reservation in the same transaction (see records.py).

A reservation held by a process that died (SIGKILL, crash) is freed by the next reserve on the
same host via a pid liveness check, and everywhere else by its expiry.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from offload.core.errors import BudgetExceededError
from offload.core.money import fmt_usd, usd_to_pusd
from offload.infra.ledger import windows as w
from offload.infra.processes import pid_alive

if TYPE_CHECKING:
    import aiosqlite

    from offload.infra.ledger.db import Conn, Ledger

_HOST = socket.gethostname()


@dataclass(frozen=True)
class BudgetLimits:
    """Limits in pusd; None means unlimited."""

    session_pusd: int | None = None
    daily_pusd: int | None = None
    monthly_pusd: int | None = None

    @classmethod
    def from_usd(
        cls,
        session: Decimal | str | int | None = None,
        daily: Decimal | str | int | None = None,
        monthly: Decimal | str | int | None = None,
    ) -> BudgetLimits:
        def conv(v: Decimal | str | int | None) -> int | None:
            return None if v is None else usd_to_pusd(v)

        return cls(conv(session), conv(daily), conv(monthly))

    @classmethod
    def from_budgets(cls, budgets: Any) -> BudgetLimits:
        """From a policy's `budgets` section (anything with `limits_pusd() -> {scope: pusd}`)."""
        got = budgets.limits_pusd()
        return cls(got.get("session"), got.get("daily"), got.get("monthly"))

    def limit(self, scope: str) -> int | None:
        return {"session": self.session_pusd, "daily": self.daily_pusd, "monthly": self.monthly_pusd}[scope]


@dataclass(frozen=True)
class Reservation:
    id: int
    session_id: str
    amount_pusd: int
    expires_at: str
    # Every scope as the reservation saw it, before this hold: a caller reuses these figures
    # (budget warnings after the call) instead of summing the ledger again.
    seen: tuple[ScopeState, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class ScopeState:
    """One budget scope right now: settled spend, money held in flight, and the limit."""

    scope: str
    spent_pusd: int
    reserved_pusd: int
    limit_pusd: int | None
    resets_at: datetime | None  # None for the session scope: it ends with the session

    @property
    def remaining_pusd(self) -> int | None:
        if self.limit_pusd is None:
            return None
        return max(0, self.limit_pusd - self.spent_pusd - self.reserved_pusd)


@dataclass(frozen=True)
class Headroom:
    """What may still be spent per scope (None = unlimited) and the tightest of them."""

    session_pusd: int | None
    daily_pusd: int | None
    monthly_pusd: int | None

    @property
    def min_pusd(self) -> int | None:
        limited = [v for v in (self.session_pusd, self.daily_pusd, self.monthly_pusd) if v is not None]
        return min(limited) if limited else None

    @property
    def tightest(self) -> str | None:
        """The scope whose budget leaves the least (session on a tie), None when nothing is limited."""
        by = {"session": self.session_pusd, "daily": self.daily_pusd, "monthly": self.monthly_pusd}
        limited = [(v, i, scope) for i, (scope, v) in enumerate(by.items()) if v is not None]
        return min(limited)[2] if limited else None


def _money(pusd: int) -> str:
    # Whole cents print as cents ("$0.10"); smaller amounts keep 4 places so they stay visible.
    return fmt_usd(pusd, places=2) if pusd % 10**10 == 0 else fmt_usd(pusd)


async def _purge(conn: aiosqlite.Connection, now: datetime, dead: Sequence[int] = ()) -> None:
    await conn.execute("DELETE FROM reservations WHERE expires_at <= ?", (w.iso(now),))
    if dead:
        marks = ",".join("?" * len(dead))
        await conn.execute(f"DELETE FROM reservations WHERE host = ? AND pid IN ({marks})", (_HOST, *dead))


# Every scope's spend and holds in one statement (each statement is a round trip to the database
# thread; a routed call used to make fifteen of these reads), followed by one row per other process
# on this host holding money, whose pids a reserve checks for dead ones, and the count of expired
# holds: both rare to need purging, so a reserve needs no further statement when nothing is stale.
_TOTALS = (
    "SELECT 0,"
    " (SELECT COALESCE(SUM(cost_pusd), 0) FROM attempts WHERE session_id = ?),"
    " (SELECT COALESCE(SUM(cost_pusd), 0) FROM attempts WHERE ts >= ? AND ts < ?),"
    " (SELECT COALESCE(SUM(cost_pusd), 0) FROM attempts WHERE ts >= ? AND ts < ?),"
    " (SELECT COALESCE(SUM(amount_pusd), 0) FROM reservations WHERE session_id = ? AND expires_at > ?),"
    " (SELECT COALESCE(SUM(amount_pusd), 0) FROM reservations WHERE expires_at > ?),"
    " (SELECT COUNT(*) FROM reservations WHERE expires_at <= ?)"
)
_OTHER_PIDS = (
    " UNION ALL SELECT DISTINCT 1, pid, 0, 0, 0, 0, 0 FROM reservations WHERE host = ? AND pid != ? ORDER BY 1"
)


@dataclass(frozen=True)
class _Totals:
    states: list[ScopeState]
    expired: int  # holds past their expiry
    other_pids: list[int]  # other processes on this host holding money


async def _totals(conn: Conn, session_id: str, limits: BudgetLimits, now: datetime, *, pids: bool = False) -> _Totals:
    live = w.iso(now)
    d0, d1 = w.day_start(now), w.next_day(now)
    m0, m1 = w.month_start(now), w.next_month(now)
    sql = _TOTALS + (_OTHER_PIDS if pids else "")
    params: tuple[object, ...] = (session_id, w.iso(d0), w.iso(d1), w.iso(m0), w.iso(m1), session_id, live, live, live)
    params += (_HOST, os.getpid()) if pids else ()
    rows = list(await conn.execute_fetchall(sql, params))
    _, spent_session, spent_day, spent_month, held_session, held_all, expired = (int(v or 0) for v in rows[0])
    states = [
        ScopeState("session", spent_session, held_session, limits.session_pusd, None),
        ScopeState("daily", spent_day, held_all, limits.daily_pusd, d1),
        ScopeState("monthly", spent_month, held_all, limits.monthly_pusd, m1),
    ]
    return _Totals(states, expired, [int(r[1]) for r in rows[1:]])


async def scope_states(conn: Conn, session_id: str, limits: BudgetLimits, now: datetime) -> list[ScopeState]:
    """Spend and holds per scope. Unexpired reservations count against every scope they touch."""
    return (await _totals(conn, session_id, limits, now)).states


def _refusal(state: ScopeState, amount_pusd: int) -> BudgetExceededError:
    assert state.limit_pusd is not None
    left = state.remaining_pusd or 0
    resets = "resets when a new session starts" if state.resets_at is None else f"resets {w.fmt_reset(state.resets_at)}"
    msg = (
        f"{state.scope} budget {_money(state.limit_pusd)} would be exceeded: "
        f"spent {_money(state.spent_pusd)}, "
        f"reserved {_money(state.reserved_pusd)}, this call needs up to {_money(amount_pusd)}; "
        f"{_money(left)} left; {resets}. Use a cheaper tier, a smaller max_tokens, or less context."
    )
    return BudgetExceededError(
        msg,
        scope=state.scope,
        remaining_pusd=left,
        resets_at=None if state.resets_at is None else w.iso(state.resets_at),
    )


async def reserve(
    ledger: Ledger,
    session_id: str,
    amount_pusd: int,
    limits: BudgetLimits,
    *,
    ttl_s: float = 600,
    now: datetime | None = None,
) -> Reservation:
    """Hold `amount_pusd` (a worst case) against every budget, or raise BudgetExceededError."""
    if amount_pusd < 0:
        raise ValueError("reservation amount must be >= 0 pusd")
    now = now or w.utcnow()
    expires = w.iso(now + timedelta(seconds=ttl_s))
    async with ledger.write() as conn:
        seen = await _totals(conn, session_id, limits, now, pids=True)
        dead = [pid for pid in seen.other_pids if not pid_alive(pid)]
        if seen.expired or dead:
            await _purge(conn, now, dead)
            seen = await _totals(conn, session_id, limits, now)
        states = seen.states
        for state in states:
            if state.limit_pusd is not None and (
                state.spent_pusd + state.reserved_pusd + amount_pusd > state.limit_pusd
            ):
                raise _refusal(state, amount_pusd)
        cur = await conn.execute(
            "INSERT INTO reservations (session_id, amount_pusd, created_at, expires_at, pid, host)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (session_id, amount_pusd, w.iso(now), expires, os.getpid(), _HOST),
        )
        rid = cur.lastrowid
    assert rid is not None
    return Reservation(rid, session_id, amount_pusd, expires, tuple(states))


async def release(ledger: Ledger, reservation: Reservation) -> None:
    """Drop a hold without recording spend (the call was never sent). Idempotent."""
    async with ledger.write() as conn:
        await conn.execute("DELETE FROM reservations WHERE id = ?", (reservation.id,))


async def live_states(
    ledger: Ledger, session_id: str, limits: BudgetLimits, now: datetime | None = None
) -> list[ScopeState]:
    """`scope_states` after dropping expired holds and holds of dead local processes, so reports
    don't show them in flight. One read when there is nothing to drop: a status read takes the
    write lock only then (behind a long write, a 60k-item batch being stored, it would wait)."""
    now = now or w.utcnow()
    seen = await _totals(ledger.conn, session_id, limits, now, pids=True)
    dead = [pid for pid in seen.other_pids if not pid_alive(pid)]
    if not seen.expired and not dead:
        return seen.states
    async with ledger.write() as conn:
        await _purge(conn, now, dead)
    return await scope_states(ledger.conn, session_id, limits, now)


async def headroom(ledger: Ledger, session_id: str, limits: BudgetLimits, now: datetime | None = None) -> Headroom:
    states = await scope_states(ledger.conn, session_id, limits, now or w.utcnow())
    by = {s.scope: s.remaining_pusd for s in states}
    return Headroom(by["session"], by["daily"], by["monthly"])


@dataclass(frozen=True)
class Spent:
    """Settled spend per scope, for warnings."""

    session_pusd: int = 0
    daily_pusd: int = 0
    monthly_pusd: int = 0


def warnings(spent: Spent, limits: BudgetLimits, warn_at: Sequence[Decimal | str | float]) -> list[str]:
    """One line per scope past its highest crossed threshold, e.g. 'daily budget 85% used ...'."""
    # Thresholds are fractions, not money; str() keeps 0.8 as exactly 0.8.
    thresholds = sorted((Decimal(str(t)) for t in warn_at), reverse=True)
    out: list[str] = []
    for scope, used in (
        ("session", spent.session_pusd),
        ("daily", spent.daily_pusd),
        ("monthly", spent.monthly_pusd),
    ):
        limit = limits.limit(scope)
        if not limit or not thresholds:
            continue
        frac = Decimal(used) / Decimal(limit)
        if any(frac >= t for t in thresholds):
            pct = int(frac * 100)
            out.append(f"{scope} budget {pct}% used ({_money(used)} of {_money(limit)})")
    return out
