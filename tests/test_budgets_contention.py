"""Eight OS processes share one daily budget (one SQLite file, or one PostgreSQL database): it must
hold, and no row may be lost or doubled.

Each worker loops reserve -> spend (simulated, or a real call to the emulator through the
anthropic SDK, priced from its usage) -> record, exactly as a Claude Code session's server would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from emulator_fixtures import running
from helpers import target_rows

PROCS = 8

WORKER = textwrap.dedent(
    """
    import asyncio, json, random, sys
    from offload.core.errors import BudgetExceededError
    from offload.infra.ledger.db import Ledger
    from offload.infra.ledger.budgets import BudgetLimits, reserve
    from offload.infra.ledger.records import Attempt, record
    from offload.config.pricing import load_prices
    from offload.core.pricing import Usage
    from offload.core.tokens import request_upper_bound

    MODEL = "claude-haiku-5-5"

    async def main(db, limit, n, seed, url):
        rng = random.Random(seed)
        table = load_prices()
        led = await Ledger.open(db)
        limits = BudgetLimits(daily_pusd=limit)
        session = f"sess-{seed}"
        out = {"recorded": [], "refused": [], "over": 0}
        client = None
        if url:
            import anthropic
            client = anthropic.AsyncAnthropic(base_url=url, api_key="test-key")
        try:
            for i in range(n):
                key = f"{seed}-{i}"
                if client is None:
                    amount = rng.randint(10**9, 10**10)
                else:
                    prompt = "budget word " * rng.randint(5, 120)
                    max_tokens = rng.randint(16, 200)
                    amount = table.worst_case(MODEL, request_upper_bound([prompt]), max_tokens)
                try:
                    hold = await reserve(led, session, amount, limits)
                except BudgetExceededError as exc:
                    out["refused"].append(str(exc))
                    continue
                if client is None:
                    usage = Usage()
                    attempt = Attempt(key, session, "contention", MODEL, usage, cost_pusd=rng.randint(0, amount))
                else:
                    msg = await client.messages.create(
                        model=MODEL, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}]
                    )
                    attempt = Attempt.priced(
                        table, request_key=key, session_id=session, tool="contention", model=MODEL,
                        usage=Usage.from_api(msg.usage),
                    )
                    out["over"] += attempt.cost_pusd > amount
                assert await record(led, attempt, hold)
                out["recorded"].append([key, attempt.cost_pusd])
                if i % 4 == 0:  # a retried record of the same attempt must be ignored
                    assert not await record(led, attempt)
        finally:
            if client is not None:
                await client.close()
            await led.close()
        print(json.dumps(out))

    db, limit, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    asyncio.run(main(db, limit, n, seed, sys.argv[5] if len(sys.argv) > 5 else None))
    """
)


def _hammer(
    tmp_path: Path, db: Path | str, limit: int, n: int, url: str | None = None
) -> tuple[list[dict[str, Any]], Path | str]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    # Create the schema once so eight first-openers don't all migrate at the same instant.
    subprocess.run([sys.executable, "-c", f"import asyncio; from offload.infra.ledger.db import Ledger\n"
                    f"async def m():\n    l = await Ledger.open({str(db)!r}); await l.close()\n"
                    "asyncio.run(m())"], check=True)  # fmt: skip
    extra = [url] if url else []
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), str(limit), str(n), str(seed), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(PROCS)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err  # any exception other than BudgetExceededError fails the worker
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results, db


def _check_ledger(results: list[dict[str, Any]], db: Path | str, limit: int) -> tuple[int, int]:
    reported = {key: cost for r in results for key, cost in r["recorded"]}
    assert len(reported) == sum(len(r["recorded"]) for r in results)  # keys unique across workers
    stored = {str(k): int(v) for k, v in target_rows(db, "SELECT request_key, cost_pusd FROM attempts")}
    held = target_rows(db, "SELECT COUNT(*) FROM reservations")[0][0]
    assert stored == reported  # nothing lost, nothing doubled, costs exact
    assert sum(stored.values()) <= limit
    assert held == 0  # every hold was settled by its record
    refusals = [msg for r in results for msg in r["refused"]]
    assert all(m.startswith("daily budget ") and " left; resets " in m for m in refusals)
    return len(stored), len(refusals)


@pytest.mark.slow
def test_eight_processes_never_overspend_one_daily_budget(tmp_path: Path, ledger_target: Path | str) -> None:
    limit = 100 * 10**9  # $0.10; reservations are $0.001-$0.01 each, so the budget runs out
    results, db = _hammer(tmp_path, ledger_target, limit, n=40)
    recorded, refused = _check_ledger(results, db, limit)
    assert recorded > 10 and refused > 0


@pytest.mark.slow
def test_eight_processes_calling_the_emulator_stay_within_budget(tmp_path: Path, ledger_target: Path | str) -> None:
    limit = 3 * 10**9  # $0.003 of haiku calls
    with running() as emu:
        results, db = _hammer(tmp_path, ledger_target, limit, n=12, url=emu.url)
        calls = len(emu.state.calls("/v1/messages"))
    recorded, refused = _check_ledger(results, db, limit)
    assert recorded > 10 and refused > 0
    assert calls == recorded  # every real call was recorded, once
    assert all(r["over"] == 0 for r in results)  # a settled cost never exceeded its reservation
