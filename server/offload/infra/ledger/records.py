"""One row per API attempt, written idempotently, releasing its reservation atomically.

`request_key` is the idempotency key: recording the same logical attempt twice (a retry after
a timeout, a batch result collected twice) inserts once. The insert and the release of the
attempt's budget hold happen in one IMMEDIATE transaction, so a crash leaves either both or
neither: money is never counted twice, nor dropped from the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from offload.core.pricing import Usage
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import BudgetLimits, Reservation, acting, delete_hold

if TYPE_CHECKING:
    from offload.core.pricing import PriceTable
    from offload.infra.ledger.db import Also, Ledger, WriteConn


@dataclass(frozen=True)
class Attempt:
    request_key: str
    session_id: str
    tool: str
    model: str
    usage: Usage
    cost_pusd: int
    baseline_pusd: int = 0
    policy: str = ""
    tier: str = ""
    batch: bool = False
    step: int = 0
    outcome: str = "ok"  # ok | escalated | dropped (stream broke off) | error | refused | expired | canceled ...
    stop_reason: str | None = None
    request_hash: str | None = None
    batch_id: str | None = None
    prompt_text: str | None = None  # stored only when the user opted in
    completion_text: str | None = None
    ts: datetime | None = None  # None = when recorded
    # None = the recording ledger's own (set per process); a journal line carries the spooler's.
    project: str | None = None
    user: str | None = None
    cache_gain_pusd: int = 0  # PriceTable.cache_gain: reads saved minus write premiums

    @classmethod
    def priced(
        cls,
        table: PriceTable,
        *,
        request_key: str,
        session_id: str,
        tool: str,
        model: str,
        usage: Usage,
        batch: bool = False,
        baseline_model: str | None = None,
        **rest: object,
    ) -> Attempt:
        """Price `usage` on `model`; savings are measured against `baseline_model` (default: same)."""
        cost = table.cost(model, usage, batch=batch)
        baseline = table.baseline_cost(baseline_model or model, usage)
        return cls(
            cache_gain_pusd=table.cache_gain(model, usage, batch=batch),
            request_key=request_key,
            session_id=session_id,
            tool=tool,
            model=model,
            usage=usage,
            cost_pusd=cost,
            baseline_pusd=baseline,
            batch=batch,
            **rest,  # type: ignore[arg-type]
        )


_COLUMNS = (
    "request_key, ts, session_id, tool, policy, tier, model, input_tokens, output_tokens,"
    " cache_write_5m, cache_write_1h, cache_read, cost_pusd, baseline_pusd, batch, step, outcome,"
    " stop_reason, request_hash, batch_id, prompt_text, completion_text, project, user_name, cache_gain_pusd"
)
# ON CONFLICT(request_key), not INSERT OR IGNORE: OR IGNORE would also silently drop a row that
# breaks a CHECK constraint, and a lost row is lost money.
_INSERT = f"INSERT INTO attempts ({_COLUMNS}) VALUES ({', '.join('?' * 25)}) ON CONFLICT (request_key) DO NOTHING"


def _row(a: Attempt, now: datetime, tags: tuple[str | None, str | None]) -> tuple[object, ...]:
    u = a.usage
    return (
        a.request_key,
        w.iso(a.ts or now),
        a.session_id,
        a.tool,
        a.policy,
        a.tier,
        a.model,
        u.input_tokens,
        u.output_tokens,
        u.cache_write_5m,
        u.cache_write_1h,
        u.cache_read,
        a.cost_pusd,
        a.baseline_pusd,
        int(a.batch),
        a.step,
        a.outcome,
        a.stop_reason,
        a.request_hash,
        a.batch_id,
        a.prompt_text,
        a.completion_text,
        *tags,
        a.cache_gain_pusd,
    )


async def _insert(conn: WriteConn, a: Attempt, now: datetime, ledger: Ledger, *, own: bool = False) -> bool:
    """`own`: the attempt's user and project are final, None included (a batch result is its
    submitter's spend, a journal line was stamped when spooled), whoever writes it down."""
    # Otherwise project and user belong to the caller (the HTTP token, else the process's
    # OFFLOAD_USER): the ledger and the call's context carry them, not every caller that builds an Attempt.
    who = acting(ledger)
    tags = (a.project, a.user) if own else (a.project or who.project, a.user or who.user)
    cur = await conn.execute(_INSERT, _row(a, now, tags))
    return cur.rowcount == 1


async def record(
    ledger: Ledger,
    attempt: Attempt,
    reservation: Reservation | None = None,
    *,
    now: datetime | None = None,
    also: Also | None = None,
) -> bool:
    """Insert `attempt` unless its request_key is already there; release `reservation` with it.

    Returns True if a new row was written, False for a duplicate (which still releases).
    """
    now = now or w.utcnow()
    async with ledger.write(inline=True) as conn:
        inserted = await _insert(conn, attempt, now, ledger)
        if reservation is not None:
            await delete_hold(conn, reservation)
        if also is not None:
            await also(conn)
    return inserted


async def record_many(
    ledger: Ledger,
    attempts: Sequence[Attempt],
    reservations: Sequence[Reservation] = (),
    *,
    now: datetime | None = None,
) -> int:
    """Record many attempts (e.g. one batch's results) in one transaction; returns rows inserted."""
    now = now or w.utcnow()
    n = 0
    async with ledger.write() as conn:
        for a in attempts:
            n += await _insert(conn, a, now, ledger)
        for r in reservations:
            await delete_hold(conn, r)
    return n


async def record_policy(
    ledger: Ledger,
    session_id: str,
    policy: str,
    limits: BudgetLimits,
    warn_at: Sequence[Decimal | str | float] = (),
    *,
    source: str = "",
    now: datetime | None = None,
) -> None:
    """Note the policy a server loaded, so the statusline can show budget left without YAML."""
    async with ledger.write(inline=True) as conn:
        await conn.execute(
            "INSERT INTO policy_snapshots"
            " (ts, session_id, policy, source, session_pusd, daily_pusd, monthly_pusd, warn_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                w.iso(now or w.utcnow()),
                session_id,
                policy,
                source,
                limits.session_pusd,
                limits.daily_pusd,
                limits.monthly_pusd,
                ",".join(str(t) for t in warn_at),
            ),
        )


async def record_policy_snapshot(
    ledger: Ledger, policy: Any, source: str, session_id: str, *, now: datetime | None = None
) -> None:
    """`record_policy` for a loaded `offload.policy.models.Policy` (duck-typed: no pydantic import here)."""
    await record_policy(
        ledger,
        session_id,
        policy.name,
        BudgetLimits.from_budgets(policy.budgets),
        tuple(policy.budgets.warn_at),
        source=source,
        now=now,
    )
