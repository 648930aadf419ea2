"""Settled calls per second (reserve -> record) with 1 and with 8 processes sharing one ledger,
on SQLite and on PostgreSQL side by side, and the overspend of a budget the calls run into.

    python bench/bench_ledger.py [--calls N] [--procs 8] [--pg URL]

PostgreSQL: `--pg` (or OFFLOAD_TEST_PG_URL) names a server whose user may create databases;
without it a throwaway server is started in a temp dir (tests/pg_fixtures.py), fsync off, as
the tests run it. The daily budget is 90% of what every call would settle, so the last calls
are refused: overspend (settled spend past the limit) must be 0 on both backends.

Both runs happen in this invocation on fresh temp files, so the ratio compares like with like on
the same machine. Every call takes the write lock twice (reserve, then record + release), so the
8-process figure measures SQLite lock hand-off, not parallel speed-up. A final `offload
statusline` timing shows the per-redraw cost against an empty `python -c pass` baseline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path

# The tests' throwaway PostgreSQL and their outside-offload ledger reader.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import target_rows
from pg_fixtures import new_database, throwaway_server

WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from offload.core.errors import BudgetExceededError
    from offload.infra.ledger.db import Ledger
    from offload.infra.ledger.budgets import BudgetLimits, reserve
    from offload.infra.ledger.records import Attempt, record
    from offload.core.pricing import Usage

    async def main(db, n, tag, start_at, daily):
        led = await Ledger.open(db)
        limits = BudgetLimits(session_pusd=10**18, daily_pusd=daily, monthly_pusd=10**18)
        while time.time() < start_at:  # start together, after every process has imported
            await asyncio.sleep(0.005)
        for i in range(n):
            try:
                hold = await reserve(led, tag, 1000, limits)
            except BudgetExceededError:
                continue
            await record(led, Attempt(f"{tag}-{i}", tag, "bench", "claude-haiku-5-5", Usage(10, 5), 900), hold)
        await led.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])))
    """
)


COST = 900  # pusd each call settles (reserving 1000)


def run(procs: int, calls_per_proc: int, workdir: Path, pg: str | None = None) -> tuple[float, int]:
    """(calls per second, overspend in pusd) of `procs` processes on a fresh ledger (a file, or a database on `pg`)."""
    db: Path | str = new_database(pg) if pg else workdir / f"bench-{procs}.db"
    daily = procs * calls_per_proc * COST * 9 // 10
    script = workdir / "worker.py"
    script.write_text(WORKER)
    # Migrate once up front so the timed runs measure settling, not eight simultaneous first opens.
    init = (
        "import asyncio\nfrom offload.infra.ledger.db import Ledger\n"
        f"async def m():\n    led = await Ledger.open({str(db)!r})\n    await led.close()\nasyncio.run(m())"
    )
    subprocess.run([sys.executable, "-c", init], check=True)
    start_at = time.time() + 1.5
    ps = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), str(calls_per_proc), f"p{i}", str(start_at), str(daily)]
        )
        for i in range(procs)
    ]
    for p in ps:
        if p.wait() != 0:
            raise SystemExit(f"worker failed with {p.returncode}")
    elapsed = time.time() - start_at
    ((spent,),) = target_rows(db, "SELECT COALESCE(SUM(cost_pusd), 0) FROM attempts")
    return procs * calls_per_proc / elapsed, max(0, int(spent) - daily)


def time_cmd(argv: list[str], env: dict[str, str], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=400, help="settled calls per run (split across processes)")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--pg", default=os.environ.get("OFFLOAD_TEST_PG_URL"), help="PostgreSQL server URL")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        pg = args.pg or stack.enter_context(throwaway_server())
        rows = []
        for procs, calls in ((1, args.calls), (args.procs, max(1, args.calls // args.procs))):
            rows.append((procs, run(procs, calls, work), run(procs, calls, work, pg)))
        (_, (lite_one, _), (pg_one, _)) = rows[0]
        print(f"{'processes':>10} {'SQLite calls/s':>15} {'ratio':>6} {'overspend':>10}"
              f" {'PostgreSQL calls/s':>19} {'ratio':>6} {'overspend':>10}")  # fmt: skip
        for procs, (lite, lite_over), (pgs, pg_over) in rows:
            print(f"{procs:>10} {lite:>15.0f} {lite / lite_one:>6.2f} {lite_over:>10}"
                  f" {pgs:>19.0f} {pgs / pg_one:>6.2f} {pg_over:>10}")  # fmt: skip
        env = {**os.environ, "OFFLOAD_DB": str(work / "bench-1.db")}
        base = time_cmd([sys.executable, "-c", "pass"], env, 5)
        line = time_cmd([sys.executable, "-m", "offload.cli.main", "statusline"], env, 5)
        print(f"statusline process: {line * 1000:.0f} ms (python -c pass: {base * 1000:.0f} ms, x{line / base:.1f})")


if __name__ == "__main__":
    main()
