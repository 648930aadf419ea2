"""Budget reservations against a real ledger file: scopes, windows, messages, headroom."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from offload.core.errors import BudgetExceededError
from offload.core.pricing import Usage
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import BudgetLimits, Headroom, Spent, headroom, release, reserve, warnings
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record

pytestmark = pytest.mark.anyio
USD = 10**12
CENT = 10**10


async def spend(ledger: Ledger, key: str, cost: int, at: datetime, session: str = "s1") -> None:
    assert await record(ledger, Attempt(key, session, "t", "claude-haiku-5-5", Usage(1, 1), cost_pusd=cost, ts=at))


async def test_refusal_message_says_which_budget_spent_left_and_reset(ledger: Ledger) -> None:
    now = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
    limits = BudgetLimits(daily_pusd=20 * USD)
    await spend(ledger, "a", 1987 * CENT, now)
    await reserve(ledger, "s1", 10 * CENT, limits, now=now)
    with pytest.raises(BudgetExceededError) as info:
        await reserve(ledger, "s1", 25 * CENT, limits, now=now)
    assert str(info.value).startswith(
        "daily budget $20.00 would be exceeded: spent $19.87, reserved $0.10, this call needs up to $0.25;"
        " $0.03 left; resets 2026-11-24 00:00 UTC."
    )
    assert info.value.scope == "daily"
    assert info.value.remaining_pusd == 3 * CENT
    assert info.value.resets_at == "2026-11-24T00:00:00.000000Z"
    # exactly the remaining 3 cents still fits
    r = await reserve(ledger, "s1", 3 * CENT, limits, now=now)
    assert r.amount_pusd == 3 * CENT


async def test_day_resets_at_utc_midnight_month_does_not(ledger: Ledger) -> None:
    limits = BudgetLimits(daily_pusd=1 * USD, monthly_pusd=150 * CENT)
    await spend(ledger, "late", 90 * CENT, datetime(2026, 11, 23, 23, 59, tzinfo=UTC))
    with pytest.raises(BudgetExceededError, match="daily budget"):
        await reserve(ledger, "s1", 20 * CENT, limits, now=datetime(2026, 11, 23, 23, 59, 30, tzinfo=UTC))
    midnight = datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    await reserve(ledger, "s1", 50 * CENT, limits, now=midnight)  # new day; month 90 + 50 <= 150
    with pytest.raises(BudgetExceededError) as info:
        await reserve(ledger, "s1", 20 * CENT, limits, now=midnight)  # month: 90 + 50 held + 20 > 150
    assert info.value.scope == "monthly"
    assert "resets 2026-12-01 00:00 UTC" in str(info.value)
    # a new month: November's spend no longer counts (the held 50 cents expired long ago)
    r = await reserve(ledger, "s1", 95 * CENT, limits, now=datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    assert r.amount_pusd == 95 * CENT


def test_windows_cross_year_end() -> None:
    t = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert w.next_day(t) == datetime(2027, 1, 1, tzinfo=UTC)
    assert w.next_month(t) == datetime(2027, 1, 1, tzinfo=UTC)
    assert w.month_start(t) == datetime(2026, 12, 1, tzinfo=UTC)
    assert w.iso(t) == "2026-12-31T23:59:59.000000Z"
    assert w.parse_since("7d", t) == datetime(2026, 12, 24, 23, 59, 59, tzinfo=UTC)
    assert w.parse_since("24h", t) == datetime(2026, 12, 30, 23, 59, 59, tzinfo=UTC)
    assert w.parse_since("2026-11-01", t) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected a date like"):
        w.parse_since("last week", t)


async def test_session_budget_is_per_session_daily_is_shared(ledger: Ledger) -> None:
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    limits = BudgetLimits(session_pusd=50 * CENT, daily_pusd=1 * USD)
    await spend(ledger, "a", 40 * CENT, now, session="s1")
    with pytest.raises(BudgetExceededError) as info:
        await reserve(ledger, "s1", 20 * CENT, limits, now=now)
    assert info.value.scope == "session" and info.value.resets_at is None
    assert "resets when a new session starts" in str(info.value)
    await reserve(ledger, "s2", 20 * CENT, limits, now=now)  # s2 has its own session budget
    with pytest.raises(BudgetExceededError, match="daily budget"):
        await reserve(ledger, "s3", 45 * CENT, limits, now=now)  # day: 40 + 20 held + 45 > 100


async def test_headroom_and_release(ledger: Ledger) -> None:
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    limits = BudgetLimits(session_pusd=1 * USD, daily_pusd=2 * USD)
    await spend(ledger, "a", 30 * CENT, now, session="s1")
    await spend(ledger, "b", 50 * CENT, now, session="s2")
    r = await reserve(ledger, "s2", 10 * CENT, limits, now=now)
    h = await headroom(ledger, "s1", limits, now=now)
    assert h == Headroom(session_pusd=70 * CENT, daily_pusd=110 * CENT, monthly_pusd=None)
    assert h.min_pusd == 70 * CENT
    await release(ledger, r)
    assert (await headroom(ledger, "s1", limits, now=now)).daily_pusd == 120 * CENT
    assert (await headroom(ledger, "s1", BudgetLimits(), now=now)).min_pusd is None


async def test_concurrent_tasks_on_one_connection_never_overbook(ledger: Ledger) -> None:
    limits = BudgetLimits(daily_pusd=1000)

    async def one() -> bool:
        try:
            await reserve(ledger, "s1", 100, limits)
        except BudgetExceededError:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(20)))
    assert results.count(True) == 10


def test_warnings_name_the_scope_past_its_threshold() -> None:
    limits = BudgetLimits(session_pusd=1 * USD, daily_pusd=2 * USD, monthly_pusd=10 * USD)
    spent = Spent(session_pusd=85 * CENT, daily_pusd=150 * CENT, monthly_pusd=1 * USD)
    assert warnings(spent, limits, ["0.8"]) == ["session budget 85% used ($0.85 of $1.00)"]
    assert warnings(spent, limits, [0.5, 0.75]) == [
        "session budget 85% used ($0.85 of $1.00)",
        "daily budget 75% used ($1.50 of $2.00)",
    ]
    assert warnings(spent, BudgetLimits(), ["0.1"]) == []


async def test_a_late_release_never_frees_the_hold_that_took_its_purged_id(ledger: Ledger) -> None:
    """SQLite hands a purged hold's id to the next hold (INTEGER PRIMARY KEY is max(id) + 1): a call
    whose hold expired (a stalled server) and that then releases or records must not free the live
    hold now bearing its id, or a third call overspends."""
    limits = BudgetLimits(daily_pusd=1000)
    t0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
    stale = await reserve(ledger, "s-a", 600, limits, ttl_s=1, now=t0)
    live = await reserve(ledger, "s-b", 600, limits, now=t0.replace(second=5))  # purges the expired one first
    await release(ledger, stale)  # the stalled call gives up late
    with pytest.raises(BudgetExceededError):
        await reserve(ledger, "s-c", 600, limits, now=t0.replace(second=6))
    await record(ledger, Attempt("k-late", "s-a", "t", "claude-haiku-5-5", Usage(1, 1), 10), stale)
    with pytest.raises(BudgetExceededError):
        await reserve(ledger, "s-c", 600, limits, now=t0.replace(second=7))
    await release(ledger, live)
    await reserve(ledger, "s-c", 600, limits, now=t0.replace(second=8))
