"""Settled calls per second (reserve -> record) with 1 and with 8 processes sharing one ledger, on
SQLite and on PostgreSQL side by side, and the overspend of a budget the calls run into.

    python bench/bench_ledger.py [--calls N] [--procs 8] [--reps 3] [--pg URL]

Each configuration runs `--reps` times, alternating, on fresh ledgers in this invocation, and the
medians are reported, so ratios compare like with like on the same (shared) machine. Every call
takes the write lock twice (reserve, then record + release), so the 8-process figure measures lock
hand-off, not parallel speed-up. CPU ms per call (the workers' user + system time, start-up taken
off) says what a call costs whatever else the machine is doing.

The daily budget is 90% of what every call would settle, so the last calls are refused: every run
checks overspend (settled spend past the limit) is 0, every row is priced right, and no hold is
left. PostgreSQL: `--pg` (or OFFLOAD_TEST_PG_URL) names a server whose user may create databases;
without it a throwaway server is started in a temp dir (tests/pg_fixtures.py), fsync off, as the
tests run it. A final `offload statusline` timing shows the per-redraw cost against an empty
`python -c pass` baseline.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The tests' throwaway PostgreSQL and their outside-offload ledger reader.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import machine_line
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


@dataclass(frozen=True)
class Result:
    calls_per_s: float
    cpu_ms_per_call: float
    overspend_pusd: int


def run(procs: int, calls_per_proc: int, db: Path | str, workdir: Path) -> Result:
    """`procs` processes settle `calls_per_proc` calls each on the ledger `db` (a file or a URL)."""
    daily = procs * calls_per_proc * COST * 9 // 10
    script = workdir / "worker.py"
    script.write_text(WORKER)
    # Migrate once up front so the timed runs measure settling, not eight simultaneous first opens.
    init = (
        "import asyncio\nfrom offload.infra.ledger.db import Ledger\n"
        f"async def m():\n    led = await Ledger.open({str(db)!r})\n    await led.close()\nasyncio.run(m())"
    )
    subprocess.run([sys.executable, "-c", init], check=True)
    start_at = time.time() + 1.5 + 0.2 * procs
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    settled = _check(db)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # The workers' CPU includes their start-up (imports, the open): measured once and taken off.
    cpu_ms = max(0.0, cpu - procs * _startup_cpu(workdir)) * 1000 / max(1, settled)
    ((spent,),) = target_rows(db, "SELECT COALESCE(SUM(cost_pusd), 0) FROM attempts")
    return Result(procs * calls_per_proc / elapsed, cpu_ms, max(0, int(spent) - daily))


def _check(db: Path | str) -> int:
    """Settled calls; every one priced as charged and no hold left, or the bench stops."""
    ((rows, total),) = target_rows(db, "SELECT COUNT(*), COALESCE(SUM(cost_pusd), 0) FROM attempts")
    ((held,),) = target_rows(db, "SELECT COUNT(*) FROM reservations")
    if int(total) != int(rows) * COST or int(held):
        raise SystemExit(f"ledger does not add up: {rows} rows, {total} pusd, {held} holds left")
    return int(rows)


_STARTUP: list[float] = []


def _startup_cpu(workdir: Path) -> float:
    if not _STARTUP:
        script = workdir / "worker.py"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, str(script), str(workdir / "startup.db"), "0", "s", "0", "0"], check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        _STARTUP.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return _STARTUP[0]


def time_cmd(argv: list[str], env: dict[str, str], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1600, help="calls per run (split across processes)")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pg", default=os.environ.get("OFFLOAD_TEST_PG_URL"), help="PostgreSQL server URL")
    ap.add_argument("--backends", default="SQLite,PostgreSQL", help="which to run, comma-separated")
    args = ap.parse_args()
    backends = [b for b in ("SQLite", "PostgreSQL") if b in args.backends.split(",")]
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        pg = args.pg or ("" if "PostgreSQL" not in backends else stack.enter_context(throwaway_server()))
        got: dict[tuple[str, int], list[Result]] = {}
        for rep in range(args.reps):
            for backend in backends:
                for procs in (1, args.procs):
                    db: Path | str = new_database(pg) if backend == "PostgreSQL" else work / f"b-{procs}-{rep}.db"
                    got.setdefault((backend, procs), []).append(run(procs, max(1, args.calls // procs), db, work))
        print(f"{'backend':>10} {'processes':>10} {'settled calls/s':>16} {'ratio':>7} {'CPU ms/call':>12}"
              f" {'overspend':>10}  runs (calls/s)")  # fmt: skip
        for (backend, procs), results in got.items():
            one = statistics.median(r.calls_per_s for r in got[(backend, 1)])
            rate = statistics.median(r.calls_per_s for r in results)
            cpu = statistics.median(r.cpu_ms_per_call for r in results)
            over = max(r.overspend_pusd for r in results)
            runs = ", ".join(f"{r.calls_per_s:.0f}" for r in results)
            print(f"{backend:>10} {procs:>10} {rate:>16.0f} {rate / one:>7.2f} {cpu:>12.3f} {over:>10}  {runs}")
        print(machine_line())
        env = {**os.environ, "OFFLOAD_DB": str(work / "b-1-0.db")}
        base = time_cmd([sys.executable, "-c", "pass"], env, 5)
        line = time_cmd([sys.executable, "-m", "offload.cli.main", "statusline"], env, 5)
        print(f"statusline process: {line * 1000:.0f} ms (python -c pass: {base * 1000:.0f} ms, x{line / base:.1f})")


if __name__ == "__main__":
    main()
