"""Attempt records on a real SQLite file and a real PostgreSQL database: idempotency, atomic release, crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from helpers import ledger_query
from offload.config.pricing import load_prices
from offload.core.errors import BudgetExceededError
from offload.core.pricing import Usage
from offload.infra.ledger.budgets import BudgetLimits, reserve
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record, record_many, record_policy

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def attempt(key: str, cost: int, *, session: str = "s1", ts: datetime | None = NOW) -> Attempt:
    return Attempt(key, session, "routed_complete", "claude-haiku-5-5", Usage(10, 5), cost_pusd=cost, ts=ts)


async def test_record_is_idempotent_on_request_key(ledger: Ledger) -> None:
    assert await record(ledger, attempt("k1", 700)) is True
    assert await record(ledger, attempt("k1", 700)) is False  # a retry of the same logical record
    assert await record(ledger, attempt("k2", 300)) is True
    assert await ledger_query(ledger, "SELECT request_key, cost_pusd FROM attempts ORDER BY id") == [
        ("k1", 700),
        ("k2", 300),
    ]


async def test_record_stores_every_column(ledger: Ledger) -> None:
    table = load_prices()
    a = Attempt.priced(
        table,
        request_key="k",
        session_id="s1",
        tool="batch_results",
        model="claude-sonnet-5-5",
        usage=Usage(input_tokens=10, output_tokens=50, cache_write_5m=2000, cache_write_1h=3, cache_read=4),
        batch=True,
        baseline_model="claude-opus-5-5",
        policy="default",
        tier="standard",
        step=1,
        outcome="escalated",
        stop_reason="max_tokens",
        request_hash="abc",
        batch_id="b-1",
        ts=NOW,
    )
    # batch sonnet: 10x1_000_000 + 2000x1_250_000 + 3x2_000_000 + 4x50_000 + 50x5_000_000
    assert a.cost_pusd == 2_766_200_000
    # opus baseline, same caching, sync rates: 10x4_000_000 + 2000x5_000_000 + 3x8_000_000 + 4x200_000
    # + 50x20_000_000 (a 2,007-token cached prefix is above Opus's 1,024 minimum)
    assert a.baseline_pusd == 11_064_800_000
    await record(ledger, a)
    (row,) = await ledger_query(
        ledger,
        "SELECT ts, session_id, tool, policy, tier, model, input_tokens, output_tokens, cache_write_5m,"
        " cache_write_1h, cache_read, cost_pusd, baseline_pusd, batch, step, outcome, stop_reason,"
        " request_hash, batch_id, prompt_text, completion_text FROM attempts",
    )
    assert row == (
        "2026-11-23T12:00:00.000000Z", "s1", "batch_results", "default", "standard", "claude-sonnet-5-5",
        10, 50, 2000, 3, 4, 2_766_200_000, 11_064_800_000, 1, 1, "escalated", "max_tokens", "abc", "b-1",
        None, None,
    )  # fmt: skip


async def test_record_releases_its_reservation_in_the_same_transaction(ledger: Ledger) -> None:
    limits = BudgetLimits(daily_pusd=1000)
    r = await reserve(ledger, "s1", 900, limits, now=NOW)
    assert await ledger_query(ledger, "SELECT amount_pusd FROM reservations") == [(900,)]
    assert await record(ledger, attempt("k1", 400), r)
    assert await ledger_query(ledger, "SELECT COUNT(*) FROM reservations") == [(0,)]
    # a duplicate record still releases (and never double counts)
    r2 = await reserve(ledger, "s1", 600, limits, now=NOW)
    assert await record(ledger, attempt("k1", 400), r2) is False
    assert await ledger_query(ledger, "SELECT COUNT(*), SUM(cost_pusd) FROM attempts") == [(1, 400)]
    assert await ledger_query(ledger, "SELECT COUNT(*) FROM reservations") == [(0,)]


async def test_failed_record_keeps_the_reservation(ledger: Ledger) -> None:
    """Both or neither: an insert that fails must not free the hold it was meant to settle."""
    r = await reserve(ledger, "s1", 900, BudgetLimits(daily_pusd=1000), now=NOW)
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        await record(ledger, attempt("bad", -1), r)  # CHECK (cost_pusd >= 0)
    assert await ledger_query(ledger, "SELECT COUNT(*) FROM attempts") == [(0,)]
    assert await ledger_query(ledger, "SELECT amount_pusd FROM reservations") == [(900,)]


async def test_record_many_and_policy_snapshot(ledger: Ledger) -> None:
    r = await reserve(ledger, "s1", 50, BudgetLimits(), now=NOW)
    n = await record_many(ledger, [attempt("a", 1), attempt("b", 2), attempt("a", 1)], [r])
    assert n == 2
    assert await ledger_query(ledger, "SELECT COUNT(*) FROM reservations") == [(0,)]
    await record_policy(ledger, "s1", "frugal", BudgetLimits.from_usd(daily="20", monthly="300"), ["0.8", "0.95"])
    assert await ledger_query(
        ledger, "SELECT policy, session_pusd, daily_pusd, monthly_pusd, warn_at FROM policy_snapshots"
    ) == [("frugal", None, 20 * 10**12, 300 * 10**12, "0.8,0.95")]


CRASHER = textwrap.dedent(
    """
    import asyncio, sys, time
    from datetime import datetime, UTC
    from offload.infra.ledger.db import Ledger
    from offload.infra.ledger.budgets import BudgetLimits, reserve
    from offload.infra.ledger.records import Attempt, record
    from offload.core.pricing import Usage

    async def main():
        led = await Ledger.open(sys.argv[1])
        limits = BudgetLimits(daily_pusd=1000)
        r = await reserve(led, "crasher", 300, limits)
        done = Attempt("done-1", "crasher", "t", "claude-haiku-5-5", Usage(1, 1), cost_pusd=250)
        await record(led, done, r)
        await reserve(led, "crasher", 700, limits, ttl_s=3600)  # held when the process dies
        print("ready", flush=True)
        time.sleep(60)

    asyncio.run(main())
    """
)


async def test_sigkilled_process_frees_its_hold_and_keeps_its_rows(ledger: Ledger, tmp_path: Path) -> None:
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    target = str(ledger.url or ledger.path)
    proc = subprocess.Popen([sys.executable, str(script), target], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # while it lives, its 700 hold counts: 250 spent + 700 held + 100 > 1000
        with pytest.raises(BudgetExceededError, match="daily budget"):
            await reserve(ledger, "other", 100, BudgetLimits(daily_pusd=1000))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    # dead pid on this host: the next reserve clears its hold at once (no 1 h wait)
    r = await reserve(ledger, "other", 750, BudgetLimits(daily_pusd=1000))
    assert r.amount_pusd == 750
    assert await ledger_query(ledger, "SELECT session_id, amount_pusd FROM reservations") == [("other", 750)]
    assert await ledger_query(ledger, "SELECT request_key, cost_pusd FROM attempts") == [("done-1", 250)]


async def test_expired_hold_is_ignored_and_purged(ledger: Ledger) -> None:
    limits = BudgetLimits(daily_pusd=1000)
    await reserve(ledger, "s1", 900, limits, ttl_s=60, now=NOW)
    with pytest.raises(BudgetExceededError, match="daily budget"):
        await reserve(ledger, "s1", 200, limits, now=NOW.replace(second=59))
    later = NOW.replace(minute=1, second=0)  # exactly at expiry
    await reserve(ledger, "s1", 200, limits, now=later)
    assert await ledger_query(ledger, "SELECT amount_pusd FROM reservations") == [(200,)]
