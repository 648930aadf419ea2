"""Settled calls per second (reserve -> record) with 1 and with 8 processes sharing one ledger.

    python bench/bench_ledger.py [--calls N] [--procs 8]

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
from pathlib import Path

WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from offload.infra.ledger.db import Ledger
    from offload.infra.ledger.budgets import BudgetLimits, reserve
    from offload.infra.ledger.records import Attempt, record
    from offload.core.pricing import Usage

    async def main(db, n, tag, start_at):
        led = await Ledger.open(db)
        limits = BudgetLimits(session_pusd=10**18, daily_pusd=10**18, monthly_pusd=10**18)
        while time.time() < start_at:  # start together, after every process has imported
            await asyncio.sleep(0.005)
        for i in range(n):
            hold = await reserve(led, tag, 1000, limits)
            await record(led, Attempt(f"{tag}-{i}", tag, "bench", "claude-haiku-5-5", Usage(10, 5), 900), hold)
        await led.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])))
    """
)


def run(procs: int, calls_per_proc: int, workdir: Path) -> float:
    db = workdir / f"bench-{procs}.db"
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
        subprocess.Popen([sys.executable, str(script), str(db), str(calls_per_proc), f"p{i}", str(start_at)])
        for i in range(procs)
    ]
    for p in ps:
        if p.wait() != 0:
            raise SystemExit(f"worker failed with {p.returncode}")
    elapsed = time.time() - start_at
    return procs * calls_per_proc / elapsed


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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        one = run(1, args.calls, work)
        many = run(args.procs, max(1, args.calls // args.procs), work)
        print(f"{'processes':>10} {'settled calls/s':>16} {'ratio':>7}")
        print(f"{1:>10} {one:>16.0f} {1.0:>7.2f}")
        print(f"{args.procs:>10} {many:>16.0f} {many / one:>7.2f}")
        env = {**os.environ, "OFFLOAD_DB": str(work / "bench-1.db")}
        base = time_cmd([sys.executable, "-c", "pass"], env, 5)
        line = time_cmd([sys.executable, "-m", "offload.cli.main", "statusline"], env, 5)
        print(f"statusline process: {line * 1000:.0f} ms (python -c pass: {base * 1000:.0f} ms, x{line / base:.1f})")


if __name__ == "__main__":
    main()
