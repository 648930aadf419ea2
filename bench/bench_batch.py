"""A 100,001-request batch_submit: time and peak Python memory against building the requests bare.

    python bench/bench_batch.py [--requests 100001]

Baseline: build the same request list in memory and serialize it as create bodies, as a
script without offload would. offload additionally prices every request, writes every item and
the reservation to SQLite before the API call, splits at 100,000 requests, and sends each part
to an emulator running in a separate process (so its memory is not counted here). Both runs
happen in this process with tracemalloc on, so the peak-memory ratio compares like with like;
times are taken in separate runs without tracemalloc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emulator_process
from offload.config.settings import Settings, shipped
from offload.services.batches import SubmitArgs, submit
from offload.services.batches.build import MAX_REQUESTS_PER_BATCH
from offload.state import open_state

TEMPLATE = "Classify the sentiment of this review as positive, negative or mixed:\n{item}"


def items(n: int) -> tuple[str, ...]:
    return tuple(f"review {i}: the delivery was late but the product works well enough" for i in range(n))


def baseline(its: tuple[str, ...]) -> int:
    """What a plain script does: one params dict per request, serialized per 100,000."""
    sent = 0
    for start in range(0, len(its), MAX_REQUESTS_PER_BATCH):
        lines: list[dict[str, Any]] = []
        for i, item in enumerate(its[start : start + MAX_REQUESTS_PER_BATCH], start):
            text = TEMPLATE.replace("{item}", item)
            params = {"model": "claude-haiku-5-5", "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
            lines.append({"custom_id": f"i{i}", "params": params})
        sent += len(json.dumps({"requests": lines}).encode())
    return sent


async def offload_submit(settings: Settings, its: tuple[str, ...]) -> list[str]:
    async with open_state(settings) as state:
        out = await submit(state, "bench", SubmitArgs(template=TEMPLATE, items=its, max_tokens=16))
    return list(out.data["api_batches"])


def measure(fn: Any, traced: bool) -> tuple[float, int, Any]:
    if traced:
        tracemalloc.start()
        tracemalloc.reset_peak()
    t0 = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t0
    peak = 0
    if traced:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return dt, peak, result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=100_001)
    n = ap.parse_args().requests
    with emulator_process("--batch-delay", "3600") as url, tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "bench.yaml"
        text = shipped("default.yaml").read_text()
        policy.write_text(
            text.replace("session_usd: 2", "session_usd: 100000")
            .replace("daily_usd: 20", "daily_usd: 100000")
            .replace("monthly_usd: 300", "monthly_usd: 100000")
        )
        its = items(n)
        runs = {}
        for i, traced in enumerate((False, True)):
            settings = Settings(
                policy_path=policy,
                db_path=Path(tmp) / f"ledger{i}.db",
                session_id="bench",
                roots=(Path(tmp),),
                api_key="bench-key",
                base_url=url,
            )
            runs[("base", traced)] = measure(lambda: baseline(its), traced)
            runs[("off", traced)] = measure(lambda s=settings: asyncio.run(offload_submit(s, its)), traced)
        api_batches = runs[("off", False)][2]
        db_bytes = os.path.getsize(Path(tmp) / "ledger0.db")
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bt, ot = runs[("base", False)][0], runs[("off", False)][0]
    bm, om = runs[("base", True)][1], runs[("off", True)][1]
    print(f"requests: {n:,} -> {len(api_batches)} API batches")
    print(f"time:        offload {ot:.2f} s   baseline {bt:.2f} s   ratio {ot / bt:.2f}x")
    mib = 2**20
    print(f"peak memory: offload {om / mib:.1f} MiB   baseline {bm / mib:.1f} MiB   ratio {om / bm:.2f}x (tracemalloc)")
    print(f"ledger file: {db_bytes / 2**20:.1f} MiB; process max RSS {rss_mib:.0f} MiB")
    return 0 if len(api_batches) == -(-n // MAX_REQUESTS_PER_BATCH) else 1


if __name__ == "__main__":
    sys.exit(main())
