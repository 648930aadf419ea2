"""Savings on the reference workload: offload's exact ledger cost vs all-Opus and all-Sonnet.

The workload (bench/workload.py) is replayed through the real MCP client (in memory) into the
real server, the real SDK and the emulator; routed tasks through routed_complete, the
batchable share through batch_submit. The offload figure is the ledger's exact sum (every
rung of every escalation, batch rows at batch rates). Baselines price the token usage of
each task's final answer on a single model, synchronously, every prompt token at the plain
input rate (PriceTable.baseline_cost): what a host pays sending the same sub-work itself.

Two caching rows follow: the workload's cache net gain (what reads saved minus what write
premiums cost, at each row's rates), and a batch sharing a long system prompt, priced against
the same batch with nothing cached, under the emulator's best-effort batch cache hits.

    python bench/bench_savings.py [--quick]
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, ratio, table, usd
from offload.config.pricing import load_prices
from offload.config.settings import Settings, shipped
from offload.core.pricing import Usage
from offload.mcp.server import build_server
from offload_emulator import EmulatorConfig, serve_in_thread
from workload import SCRIPT, TIER_RANK, Task, reference_workload

OPUS, SONNET = "claude-opus-5-5", "claude-sonnet-5-5"


def _bench_policy(workdir: Path) -> Path:
    # The shipped default with budgets lifted: the bench measures routing, not budget refusals.
    text = shipped("default.yaml").read_text()
    for key, value in (("session_usd: 2", "session_usd: 10000"), ("daily_usd: 20", "daily_usd: 10000")):
        text = text.replace(key, value)
    text = text.replace("monthly_usd: 300", "monthly_usd: 100000")
    path = workdir / "bench-policy.yaml"
    path.write_text(text)
    return path


async def _replay(client: Client, tasks: list[Task]) -> tuple[int, int, str]:
    """Returns (adequate, finished, how the batchable share ran)."""
    adequate = finished = 0
    routed = [t for t in tasks if not t.batchable]
    batch = [t for t in tasks if t.batchable]
    limiter = anyio.CapacityLimiter(8)

    async def one(task: Task) -> None:
        nonlocal adequate, finished
        async with limiter:
            result = await client.call_tool("routed_complete", task.args)
        if result.is_error:
            return
        finished += 1
        data: dict[str, Any] = result.structured_content or {}
        if data.get("check_passed") and TIER_RANK[data["tier"]] >= TIER_RANK[task.needs]:
            adequate += 1

    async with anyio.create_task_group() as tg:
        for task in routed:
            tg.start_soon(one, task)

    requests = [{"prompt": t.args["prompt"], "custom_id": f"b{i}"} for i, t in enumerate(batch)]
    sub = await client.call_tool("batch_submit", {"requests": requests, "task": "tag", "tier": "cheap"})
    if sub.is_error:  # the batch path is unavailable: run the share synchronously and say so
        async with anyio.create_task_group() as tg:
            for task in batch:
                tg.start_soon(one, task)
        return adequate, finished, "routed (batch_submit failed)"
    batch_id = (sub.structured_content or {})["batch_id"]
    with anyio.fail_after(300):
        while True:
            status = await client.call_tool("batch_status", {"batch_id": batch_id})
            if (status.structured_content or {}).get("state") == "done":
                break
            await anyio.sleep(0.5)
    succeeded = int((status.structured_content or {}).get("counts", {}).get("succeeded", 0))
    return adequate + succeeded, finished + succeeded, "batch_submit"


def _ledger(db: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM attempts").fetchall()
    finally:
        conn.close()


def _usage(r: sqlite3.Row) -> Usage:
    return Usage(r["input_tokens"], r["output_tokens"], r["cache_write_5m"], r["cache_write_1h"], r["cache_read"])


def cache_gain(rows: list[sqlite3.Row]) -> int:
    """The ledger's own figure: what cache reads saved minus what write premiums cost."""
    return sum(int(r["cache_gain_pusd"]) for r in rows)


# A batch whose requests share a long system prompt: the case batch caching is for. The
# emulator honours only a seeded share of its cache lookups (best-effort, as the batch docs say).
SHARED_SYSTEM = "You label support tickets by topic. " + " ".join(f"rule{i}: keep labels short." for i in range(600))


async def _shared_prefix_batch(client: Client, n: int) -> str:
    items = [f"ticket {i}: my invoice #{i} was charged twice" for i in range(n)]
    args = {"template": "Label: {item}", "items": items, "system": SHARED_SYSTEM, "tier": "cheap", "task": "tag"}
    sub = await client.call_tool("batch_submit", args)
    assert not sub.is_error, sub
    batch_id = str((sub.structured_content or {})["batch_id"])
    with anyio.fail_after(300):
        while True:
            status = await client.call_tool("batch_status", {"batch_id": batch_id})
            if (status.structured_content or {}).get("state") == "done":
                return batch_id
            await anyio.sleep(0.5)


async def measure(quick: bool = False) -> list[Row]:
    tasks = reference_workload(scale=0.25 if quick else 1.0)
    prices = load_prices()
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve_in_thread(EmulatorConfig(seed=5, script=SCRIPT, batch_delay_s=0.5)) as emu,
    ):
        workdir = Path(tmp)
        settings = Settings(
            policy_path=_bench_policy(workdir),
            db_path=workdir / "ledger.db",
            session_id="bench-savings",
            roots=(workdir,),
            api_key="bench-key",
            base_url=emu.url,
        )
        async with Client(build_server(settings)) as client:
            adequate, finished, batch_mode = await _replay(client, tasks)
            rows = _ledger(settings.db_path)
            shared_n = 50 if quick else 200
            shared_id = await _shared_prefix_batch(client, shared_n)
        shared = [r for r in _ledger(settings.db_path) if r["batch_id"] == shared_id]
        hit_rate = emu.config.batch_cache_hit_rate

    total = sum(int(r["cost_pusd"]) for r in rows)
    # One final answer per task: the last rung of each routed call, and every batch result.
    finals = [r for r in rows if r["outcome"] != "escalated"]
    opus = sum(prices.baseline_cost(OPUS, _usage(r)) for r in finals)
    sonnet = sum(prices.baseline_cost(SONNET, _usage(r)) for r in finals)
    premium_share = sum(t.needs == "premium" for t in tasks) / len(tasks)
    escalations = sum(r["outcome"] == "escalated" for r in rows)
    n = len(tasks)
    gain = cache_gain(rows)
    shared_cost = sum(int(r["cost_pusd"]) for r in shared)
    shared_gain = cache_gain(shared)
    hits = sum(1 for r in shared if r["cache_read"])
    prefix = max((max(r["cache_read"], r["cache_write_5m"] + r["cache_write_1h"]) for r in shared), default=0)
    return [
        Row(
            "savings",
            f"workload cost ({n} tasks)",
            usd(total),
            f"all-Opus sync {usd(opus)}",
            ratio(total, opus),
            f"ledger sum, {len(rows)} priced calls incl. {escalations} escalated rungs",
        ),
        Row(
            "savings",
            f"workload cost ({n} tasks)",
            usd(total),
            f"all-Sonnet sync {usd(sonnet)}",
            ratio(total, sonnet),
            f"Sonnet would fail the {premium_share:.0%} premium-only tasks' checks",
        ),
        Row(
            "savings",
            "tasks ending on an adequate tier",
            f"{adequate}/{n} ({adequate / n:.1%})",
            "all-Opus 100%",
            ratio(adequate, n),
            f"{finished}/{n} answered; batchable share via {batch_mode}",
        ),
        Row(
            "savings",
            "cache net gain (reads saved - write premiums)",
            usd(gain),
            "no caching $0",
            "",
            f"ledger rows of the {n}-task workload, each at its own rates",
        ),
        Row(
            "savings",
            f"batch of {len(shared)} sharing a {prefix / 1000:.1f}k-token cached prefix",
            usd(shared_cost),
            f"same batch uncached {usd(shared_cost + shared_gain)}",
            ratio(shared_cost, shared_cost + shared_gain),
            f"best-effort cache: {hits}/{len(shared)} read it (emulator rate {hit_rate:.0%}, docs 30-98%)",
        ),
    ]


def run(quick: bool = False) -> list[Row]:
    result: list[Row] = anyio.run(measure, quick)
    return result


if __name__ == "__main__":
    print(table(run(quick="--quick" in sys.argv)))
