"""Budget reads against a month of spend: how long one `scope_states` takes (the read every reserve
makes under the ledger's single write lock) with N attempts this month, and what recording costs.

    python bench/bench_rollup.py [--attempts 100000] [--sessions 50] [--spread] [--pg]

The ledger gets N attempts from `--sessions` sessions (each session one of 10 users and 3
projects), all a minute ago or, with `--spread`, spread over this month so far with `--sessions`
new sessions a day. Reported: attempts recorded per second (record_many, 5,000 a transaction),
scope_states ms (median of 50) with the base scopes (session, daily, monthly) and with team scopes
(user, project, team) too, and reserve + release pairs per second. `--pg` runs on a throwaway
PostgreSQL (tests/pg_fixtures.py) instead of a SQLite file.
To compare with a tree before migration 0150, run this file with PYTHONPATH pointing at it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import machine_line
from offload.core.pricing import Usage
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import BudgetLimits, Who, release, reserve, scope_states
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record_many
from pg_fixtures import new_database, throwaway_server

BIG = 10**18
BASE = BudgetLimits(session_pusd=BIG, daily_pusd=BIG, monthly_pusd=BIG)
TEAM = BudgetLimits(BIG, BIG, BIG, BIG, BIG, BIG)


async def _fill(led: Ledger, n: int, sessions: int, spread: bool) -> float:
    now = w.utcnow()
    start = w.month_start(now)
    rng = random.Random(18)
    took = 0.0
    for chunk in range(0, n, 5000):
        batch = []
        for i in range(chunk, min(n, chunk + 5000)):
            s = i % sessions
            ts = start + (now - start) * rng.random() if spread else now - timedelta(minutes=1)
            # Spread: a session lives one day, as a Claude Code session does; `sessions` a day.
            name = f"s{s}" if not spread or ts.day == now.day else f"s{s}d{ts.day}"
            batch.append(
                Attempt(f"k{i}", name, "bench", "claude-haiku-5-5", Usage(10, 5), 900 + i % 7, ts=ts,
                        user=f"u{s % 10}", project=f"p{s % 3}")
            )  # fmt: skip
        t = time.perf_counter()
        await record_many(led, batch)
        took += time.perf_counter() - t
    return n / took


async def _median_ms(led: Ledger, limits: BudgetLimits, reps: int = 50) -> float:
    now, who = w.utcnow(), Who("u1", "p1")
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        await scope_states(led.conn, "s1", limits, now, who)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


async def _reserves_per_s(led: Ledger, limits: BudgetLimits, pairs: int = 300) -> float:
    who = Who("u1", "p1")
    t = time.perf_counter()
    for _ in range(pairs):
        await release(led, await reserve(led, "s1", 10**9, limits, who=who))
    return pairs / (time.perf_counter() - t)


async def run(target: Path | str, spool: Path, n: int, sessions: int, spread: bool) -> None:
    led = await Ledger.open(target, spool=spool)
    try:
        rate = await _fill(led, n, sessions, spread)
        print(f"  recorded: {rate:,.0f} attempts/s")
        for name, limits in (("base scopes", BASE), ("team scopes", TEAM)):
            ms = await _median_ms(led, limits)
            print(
                f"  scope_states, {name}: {ms:.3f} ms; reserve + release: {await _reserves_per_s(led, limits):,.0f}/s"
            )
    finally:
        await led.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attempts", type=int, default=100_000)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--spread", action="store_true", help="over this month so far, not all a minute ago")
    ap.add_argument("--pg", action="store_true", help="a throwaway PostgreSQL instead of a SQLite file")
    args = ap.parse_args()
    print(machine_line())
    where = "PostgreSQL" if args.pg else "SQLite"
    print(f"{where}: {args.attempts:,} attempts this month, {args.sessions} sessions, spread={args.spread}")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-rollup-")))
        target: Path | str = tmp / "ledger.db"
        if args.pg:
            target = new_database(stack.enter_context(throwaway_server()))
        asyncio.run(run(target, tmp / "spool.db", args.attempts, args.sessions, args.spread))


if __name__ == "__main__":
    main()
