"""Settled calls per second (reserve -> record) with 1 and with 8 processes sharing one ledger.

    python bench/bench_ledger.py [--calls N] [--procs 8] [--reps 3]

Both configurations run `--reps` times, alternating, on fresh temp files in this invocation, and
the medians are reported, so the ratio compares like with like on the same (shared) machine.
Every call takes the write lock twice (reserve, then record + release), so the 8-process figure
measures lock hand-off, not parallel speed-up. CPU ms per call (the workers' user + system time)
says what a call costs whatever else the machine is doing. Every run checks that nothing was
overspent: the ledger's total equals the calls times their cost, and no hold is left. A final
`offload statusline` timing shows the per-redraw cost against an empty `python -c pass` baseline.

`run(procs, calls_per_proc, db)` is the unit to extend (e.g. a ledger URL for another backend).
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line

WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from offload.infra.ledger.db import Ledger
    from offload.infra.ledger.budgets import BudgetLimits, reserve
    from offload.infra.ledger.records import Attempt, record
    from offload.core.pricing import Usage

    COST = 900

    async def main(db, n, tag, start_at):
        led = await Ledger.open(db)
        limits = BudgetLimits(session_pusd=10**18, daily_pusd=10**18, monthly_pusd=10**18)
        while time.time() < start_at:  # start together, after every process has imported
            await asyncio.sleep(0.005)
        for i in range(n):
            hold = await reserve(led, tag, 1000, limits)
            await record(led, Attempt(f"{tag}-{i}", tag, "bench", "claude-haiku-5-5", Usage(10, 5), COST), hold)
        await led.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])))
    """
)


COST_PUSD = 900


@dataclass(frozen=True)
class Result:
    calls_per_s: float
    cpu_ms_per_call: float


def run(procs: int, calls_per_proc: int, db: Path) -> Result:
    """`procs` processes settle `calls_per_proc` calls each on the ledger at `db`; checks no overspend."""
    script = db.with_name("worker.py")
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
        subprocess.Popen([sys.executable, str(script), str(db), str(calls_per_proc), f"p{i}", str(start_at)])
        for i in range(procs)
    ]
    for p in ps:
        if p.wait() != 0:
            raise SystemExit(f"worker failed with {p.returncode}")
    elapsed = time.time() - start_at
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    calls = procs * calls_per_proc
    _check_settled(db, calls)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # The workers' CPU includes their start-up (imports, the open): measured once and taken off.
    return Result(calls / elapsed, max(0.0, cpu - procs * _startup_cpu()) * 1000 / calls)


def _check_settled(db: Path, calls: int) -> None:
    conn = sqlite3.connect(db)
    try:
        rows, total = conn.execute("SELECT COUNT(*), COALESCE(SUM(cost_pusd), 0) FROM attempts").fetchone()
        held = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
    finally:
        conn.close()
    if rows != calls or total != calls * COST_PUSD or held:
        raise SystemExit(f"ledger does not add up: {rows} rows, {total} pusd, {held} holds left for {calls} calls")


_STARTUP: list[float] = []


def _startup_cpu() -> float:
    if not _STARTUP:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "worker.py"
            script.write_text(WORKER)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, str(script), str(Path(tmp) / "s.db"), "0", "s", "0"], check=True)
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
    ap.add_argument("--calls", type=int, default=1600, help="settled calls per run (split across processes)")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        got: dict[int, list[Result]] = {1: [], args.procs: []}
        for rep in range(args.reps):
            for procs in got:
                got[procs].append(run(procs, max(1, args.calls // procs), work / f"bench-{procs}-{rep}.db"))
        one = statistics.median(r.calls_per_s for r in got[1])
        print(f"{'processes':>10} {'settled calls/s':>16} {'ratio':>7} {'CPU ms/call':>12}  runs (calls/s)")
        for procs, results in got.items():
            rate = statistics.median(r.calls_per_s for r in results)
            cpu = statistics.median(r.cpu_ms_per_call for r in results)
            runs = ", ".join(f"{r.calls_per_s:.0f}" for r in results)
            print(f"{procs:>10} {rate:>16.0f} {rate / one:>7.2f} {cpu:>12.3f}  {runs}")
        print("overspend: none (every run: rows = calls, total = calls x cost, no hold left)")
        print(machine_line())
        env = {**os.environ, "OFFLOAD_DB": str(work / "bench-1-0.db")}
        base = time_cmd([sys.executable, "-c", "pass"], env, 5)
        line = time_cmd([sys.executable, "-m", "offload.cli.main", "statusline"], env, 5)
        print(f"statusline process: {line * 1000:.0f} ms (python -c pass: {base * 1000:.0f} ms, x{line / base:.1f})")


if __name__ == "__main__":
    main()
