"""Budgets enforced across processes: reserve worst case -> call -> record (which releases).

Claude Code runs one server process per session, all sharing one ledger file. A reservation
is checked and inserted inside `ledger.write()` (BEGIN IMMEDIATE), which holds SQLite's write
lock, so two processes can never both see the same headroom and jointly overspend. Recording
the attempt deletes its reservation in the same transaction (see records.py).

A reservation belongs to a server instance (instances.py): once the instance's heartbeat lease
runs out its holds stop counting on every host and the next reserve purges them; on the
instance's own host a dead pid frees them at once. Holds of no instance (from servers before
migration 0111) fall back to the pid check on this host and their expiry.

Team scopes (user, project, team; see core/scopes.py) are checked in the same transaction as the
others: a hold carries the user and project it was taken for, so concurrent calls of one user
on several machines cannot jointly pass that user's limit either.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from offload.core.errors import BudgetExceededError
from offload.core.money import fmt_usd, usd_to_pusd
from offload.core.scopes import SCOPES, TEAM_SCOPES
from offload.core.tenancy import current_owner
from offload.infra.ledger import instances
from offload.infra.ledger import windows as w
from offload.infra.ledger.instances import LIVE_HOLD
from offload.infra.processes import pid_alive

if TYPE_CHECKING:
    from offload.infra.ledger.db import Conn, Ledger, WriteConn

_HOST = socket.gethostname()


@dataclass(frozen=True)
class BudgetLimits:
    """Limits in pusd; None means unlimited."""

    session_pusd: int | None = None
    daily_pusd: int | None = None
    monthly_pusd: int | None = None
    user_pusd: int | None = None
    project_pusd: int | None = None
    team_pusd: int | None = None

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
        return cls(**{f"{scope}_pusd": got.get(scope) for scope in SCOPES})

    def limit(self, scope: str) -> int | None:
        if scope not in SCOPES:
            raise KeyError(scope)
        value: int | None = getattr(self, f"{scope}_pusd")
        return value


@dataclass(frozen=True)
class Who:
    """Whom spend and holds are for: the user and the project (None: not known)."""

    user: str | None = None
    project: str | None = None


def acting(ledger: Ledger) -> Who:
    """The caller of the current tool call: the HTTP token's name, else this process's OFFLOAD_USER;
    the project this process serves (CLAUDE_PROJECT_DIR or OFFLOAD_PROJECT)."""
    return Who(current_owner() or ledger.user, ledger.project)


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
    name: str | None = None  # whose budget, for user and project: the user or project name

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
    user_pusd: int | None = None
    project_pusd: int | None = None
    team_pusd: int | None = None
    # The tightest budget in words for refusals: 'user budget for ana ($5.00: spent $4.99, reserved $0.00)'.
    detail: str | None = field(default=None, compare=False)

    def _by(self) -> list[tuple[str, int | None]]:
        return [(scope, getattr(self, f"{scope}_pusd")) for scope in SCOPES]

    @property
    def min_pusd(self) -> int | None:
        limited = [v for _, v in self._by() if v is not None]
        return min(limited) if limited else None

    @property
    def tightest(self) -> str | None:
        """The scope whose budget leaves the least (session on a tie), None when nothing is limited."""
        limited = [(v, i, scope) for i, (scope, v) in enumerate(self._by()) if v is not None]
        return min(limited)[2] if limited else None


def _money(pusd: int) -> str:
    # Whole cents print as cents ("$0.10"); smaller amounts keep 4 places so they stay visible.
    return fmt_usd(pusd, places=2) if pusd % 10**10 == 0 else fmt_usd(pusd)


async def purge_stale(conn: WriteConn, now: datetime, ledger: Ledger, dead: Sequence[int] = ()) -> None:
    """Drop expired holds, dead instances with their holds, and holds of dead local processes
    (inside the caller's write transaction)."""
    await conn.execute("DELETE FROM reservations WHERE expires_at <= ?", (w.iso(now),))
    await instances.purge_dead(conn, now, ledger.instance)
    if dead:
        marks = ",".join("?" * len(dead))
        await conn.execute(
            f"DELETE FROM reservations WHERE instance_id IS NULL AND host = ? AND pid IN ({marks})", (_HOST, *dead)
        )


def _tagged(column: str, value: str | None) -> tuple[str, tuple[str, ...]]:
    # Calls with no known user (or project) share one budget, so leaving OFFLOAD_USER unset
    # does not escape a user budget. Two spellings rather than `IS ?`: portable SQL.
    return (f"{column} IS NULL", ()) if value is None else (f"{column} = ?", (value,))


def _rollup_key(name: str | None) -> str:
    """The rollups' user_key / project_key for a user or project: '' when not known, else '=' + name
    (0150_spend_rollup.sql says why; its triggers spell the same rule in SQL)."""
    return "" if name is None else "=" + name


# Every base scope's spend and live holds in one statement (each statement is a round trip to the
# database thread; a routed call used to make fifteen of these reads), then the count of what a
# purge would drop (expired holds, holds of instances whose lease ran out, such instances), then,
# on request, one row per process on this host holding money, whose pids a reserve checks. Stale
# rows are rare, so a reserve needs no further statement when nothing is stale. A dead instance's
# holds never count (LIVE_HOLD) whether or not they have been purged yet.
# Spend comes from the rollups of migration 0150, not attempts: a session's from spend_rollup (a
# row per day, user and project it spent on), a day's or month's from spend_by_day (a row per day,
# user and project), however many attempts and sessions there were. The windows start at UTC
# midnight, so [start, end) of time stamps is exactly [start day, end day) of the rollups.
_TOTALS = (
    "SELECT 0,"
    " (SELECT COALESCE(SUM(cost_pusd), 0) FROM spend_rollup WHERE session_id = ?),"
    " (SELECT COALESCE(SUM(cost_pusd), 0) FROM spend_by_day WHERE day >= ? AND day < ?),"
    " (SELECT COALESCE(SUM(cost_pusd), 0) FROM spend_by_day WHERE day >= ? AND day < ?),"
    f" (SELECT COALESCE(SUM(amount_pusd), 0) FROM reservations WHERE session_id = ? AND {LIVE_HOLD}),"
    f" (SELECT COALESCE(SUM(amount_pusd), 0) FROM reservations WHERE {LIVE_HOLD}),"
    f" (SELECT COUNT(*) FROM reservations WHERE NOT ({LIVE_HOLD}))"
    " + (SELECT COUNT(*) FROM server_instances WHERE lease_until <= ?)"
)
# Other processes on this host that hold money or run a server instance: a dead one's holds go at once.
_OTHER_PIDS = (
    " UNION ALL SELECT DISTINCT 1, pid, 0, 0, 0, 0, 0 FROM reservations WHERE host = ? AND pid != ?"
    " UNION ALL SELECT DISTINCT 1, pid, 0, 0, 0, 0, 0 FROM server_instances WHERE host_id = ? AND pid != ? ORDER BY 1"
)


@dataclass(frozen=True)
class _Totals:
    states: list[ScopeState]
    stale: int  # rows a purge would drop
    other_pids: list[int]  # other processes on this host holding money


async def _totals(
    conn: Conn, session_id: str, limits: BudgetLimits, now: datetime, who: Who | None, *, pids: str | None = None
) -> _Totals:
    """`pids`: this host's id, to also list the pids of other local processes holding money."""
    live = w.iso(now)
    d0, d1 = w.day_start(now), w.next_day(now)
    m0, m1 = w.month_start(now), w.next_month(now)
    sql = _TOTALS + (_OTHER_PIDS if pids else "")
    params: tuple[object, ...] = (session_id, w.day(d0), w.day(d1), w.day(m0), w.day(m1))
    params += (session_id, live, live, live, live, live, live, live)
    params += (_HOST, os.getpid(), pids, os.getpid()) if pids else ()
    rows = list(await (await conn.execute(sql, params)).fetchall())
    _, spent_session, spent_day, spent_month, held_session, held_all, stale = (int(v or 0) for v in rows[0])
    states = [
        ScopeState("session", spent_session, held_session, limits.session_pusd, None),
        ScopeState("daily", spent_day, held_all, limits.daily_pusd, d1),
        ScopeState("monthly", spent_month, held_all, limits.monthly_pusd, m1),
    ]
    who = who or Who()
    month = (w.day(m0), w.day(m1))
    for scope, column, name in (("user", "user_name", who.user), ("project", "project", who.project)):
        limit = limits.limit(scope)
        if limit is None:
            continue  # not read at all: budgets without team limits cost no extra query
        where, args = _tagged(column, name)
        sql = (
            f"SELECT (SELECT COALESCE(SUM(cost_pusd), 0) FROM spend_by_day"
            f" WHERE {scope}_key = ? AND day >= ? AND day < ?),"
            f" (SELECT COALESCE(SUM(amount_pusd), 0) FROM reservations WHERE {where} AND {LIVE_HOLD})"
        )
        row = await (await conn.execute(sql, (_rollup_key(name), *month, *args, live, live))).fetchone()
        assert row is not None  # a SELECT of two subqueries answers one row
        spent, held = (int(v or 0) for v in row)
        states.append(ScopeState(scope, spent, held, limit, m1, name))
    if limits.team_pusd is not None:
        states.append(ScopeState("team", spent_month, held_all, limits.team_pusd, m1))
    return _Totals(states, stale, [int(r[1]) for r in rows[1:]])


async def scope_states(
    conn: Conn, session_id: str, limits: BudgetLimits, now: datetime, who: Who | None = None
) -> list[ScopeState]:
    """Spend and holds per scope: session, daily and monthly always, user, project and team when
    their limit is set. Unexpired holds of live servers count against every scope they touch."""
    return (await _totals(conn, session_id, limits, now, who)).states


_NOBODY = {"user": "calls with no user (set OFFLOAD_USER)", "project": "calls with no project (set OFFLOAD_PROJECT)"}


def label(state: ScopeState) -> str:
    """'daily budget', 'user budget for ana', 'team budget': how messages and status name a scope."""
    if state.scope not in _NOBODY:
        return f"{state.scope} budget"
    return f"{state.scope} budget for {state.name or _NOBODY[state.scope]}"


def _refusal(state: ScopeState, amount_pusd: int) -> BudgetExceededError:
    assert state.limit_pusd is not None
    left = state.remaining_pusd or 0
    resets = "resets when a new session starts" if state.resets_at is None else f"resets {w.fmt_reset(state.resets_at)}"
    head, _, tail = label(state).partition(" for ")
    named = f"{head} {_money(state.limit_pusd)}" + (f" for {tail}" if tail else "")
    # A shared limit is not the caller's to change: say which policy key sets it.
    owner = f" (budgets.{state.scope}_usd in the policy)" if state.scope in TEAM_SCOPES else ""
    msg = (
        f"{named} would be exceeded: "
        f"spent {_money(state.spent_pusd)}, "
        f"reserved {_money(state.reserved_pusd)}, this call needs up to {_money(amount_pusd)}; "
        f"{_money(left)} left{owner}; {resets}. Use a cheaper tier, a smaller max_tokens, or less context."
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
    who: Who | None = None,
) -> Reservation:
    """Hold `amount_pusd` (a worst case) against every budget, or raise BudgetExceededError.

    `who` defaults to the acting caller (`acting(ledger)`); the hold counts against its user and project.
    """
    if amount_pusd < 0:
        raise ValueError("reservation amount must be >= 0 pusd")
    now = now or w.utcnow()
    who = who or acting(ledger)
    expires = w.iso(now + timedelta(seconds=ttl_s))
    async with ledger.write(inline=True) as conn:
        if ledger.instance is not None:
            await instances.ensure(conn, ledger.instance, max(now, w.utcnow()))
        seen = await _totals(conn, session_id, limits, now, who, pids=instances.host_of(ledger.instance))
        dead = [pid for pid in seen.other_pids if not pid_alive(pid)]
        if seen.stale or dead:
            await purge_stale(conn, now, ledger, dead)
            seen = await _totals(conn, session_id, limits, now, who)
        states = seen.states
        for state in states:
            if state.limit_pusd is not None and (
                state.spent_pusd + state.reserved_pusd + amount_pusd > state.limit_pusd
            ):
                raise _refusal(state, amount_pusd)
        # RETURNING, not lastrowid: both backends answer it (PostgreSQL has no lastrowid).
        cur = await conn.execute(
            "INSERT INTO reservations"
            " (session_id, amount_pusd, created_at, expires_at, pid, host, user_name, project, instance_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                session_id,
                amount_pusd,
                w.iso(now),
                expires,
                os.getpid(),
                _HOST,
                who.user,
                who.project,
                ledger.instance.id if ledger.instance else None,
            ),
        )
        row = await cur.fetchone()
    assert row is not None
    return Reservation(int(row[0]), session_id, amount_pusd, expires, tuple(states))


# A hold is named by its id, session and expiry together: SQLite hands a purged hold's id to the
# next hold (INTEGER PRIMARY KEY takes max(id) + 1), and holds of a stalled server are purged by
# lease, so an id alone could free, or hand to a batch, another call's live hold.
HOLD = "id = ? AND session_id = ? AND expires_at = ?"


def hold_key(reservation: Reservation) -> tuple[int, str, str]:
    return (reservation.id, reservation.session_id, reservation.expires_at)


async def delete_hold(conn: WriteConn, reservation: Reservation) -> None:
    """Drop `reservation`'s hold inside the caller's write transaction (nothing if it is gone)."""
    await conn.execute("DELETE FROM reservations WHERE " + HOLD, hold_key(reservation))


async def release(ledger: Ledger, reservation: Reservation) -> None:
    """Drop a hold without recording spend (the call was never sent). Idempotent."""
    async with ledger.write(inline=True) as conn:
        await delete_hold(conn, reservation)


async def live_states(
    ledger: Ledger, session_id: str, limits: BudgetLimits, now: datetime | None = None, who: Who | None = None
) -> list[ScopeState]:
    """`scope_states` after dropping expired holds and holds of dead instances and processes, so
    reports don't show them in flight. One read when there is nothing to drop: a status read takes
    the write lock only then (behind a long write, a 60k-item batch being stored, it would wait)."""
    now = now or w.utcnow()
    seen = await _totals(ledger.quick, session_id, limits, now, who, pids=instances.host_of(ledger.instance))
    dead = [pid for pid in seen.other_pids if not pid_alive(pid)]
    if not seen.stale and not dead:
        return seen.states
    async with ledger.write(inline=True) as conn:
        await purge_stale(conn, now, ledger, dead)
    return await scope_states(ledger.quick, session_id, limits, now, who)


async def headroom(
    ledger: Ledger, session_id: str, limits: BudgetLimits, now: datetime | None = None, who: Who | None = None
) -> Headroom:
    states = await scope_states(ledger.quick, session_id, limits, now or w.utcnow(), who or acting(ledger))
    by = {s.scope: s.remaining_pusd for s in states}
    room = Headroom(by["session"], by["daily"], by["monthly"], by.get("user"), by.get("project"), by.get("team"))
    tight = next((s for s in states if s.scope == room.tightest), None)
    if tight is None or tight.limit_pusd is None:
        return room
    detail = (
        f"{label(tight)} ({_money(tight.limit_pusd)}: spent {_money(tight.spent_pusd)},"
        f" reserved {_money(tight.reserved_pusd)})"
    )
    return replace(room, detail=detail)


@dataclass(frozen=True)
class Spent:
    """Settled spend per scope, for warnings."""

    session_pusd: int = 0
    daily_pusd: int = 0
    monthly_pusd: int = 0
    user_pusd: int = 0
    project_pusd: int = 0
    team_pusd: int = 0

    @classmethod
    def of(cls, states: Sequence[ScopeState]) -> Spent:
        return cls(**{f"{s.scope}_pusd": s.spent_pusd for s in states})


def warnings(spent: Spent, limits: BudgetLimits, warn_at: Sequence[Decimal | str | float]) -> list[str]:
    """One line per scope past its highest crossed threshold, e.g. 'daily budget 85% used ...'."""
    # Thresholds are fractions, not money; str() keeps 0.8 as exactly 0.8.
    thresholds = sorted((Decimal(str(t)) for t in warn_at), reverse=True)
    out: list[str] = []
    for scope in SCOPES:
        used = getattr(spent, f"{scope}_pusd")
        limit = limits.limit(scope)
        if not limit or not thresholds:
            continue
        frac = Decimal(used) / Decimal(limit)
        if any(frac >= t for t in thresholds):
            pct = int(frac * 100)
            out.append(f"{scope} budget {pct}% used ({_money(used)} of {_money(limit)})")
    return out
