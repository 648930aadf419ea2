"""A 100,001-request batch_submit: time and peak Python memory against building the requests bare.

    python bench/bench_batch.py [--requests 100001]

Baseline: build the same request list in memory and serialize it as create bodies, as a
script without offload would. offload additionally prices every request, writes every item and
the reservation to SQLite before the API call, splits at 100,000 requests, and sends each part
to an emulator running in a separate process (so its memory is not counted here). Both runs
happen in this process with tracemalloc on, so the peak-memory ratio compares like with like;
times are taken in separate runs without tracemalloc.

Then the same batch_submit goes to a real `offload serve` over one MCP stdio session (the
arguments travel as JSON, as from a host), and the server process reports its own max RSS
(VmHWM) when it exits: the figure the issue's `max RSS <= 300 MB` target is about.
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

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from common import emulator_process, machine_line
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


# VmHWM, not ru_maxrss: Linux carries ru_maxrss across execve, so a server forked from this
# (large) bench process would report the bench's peak as its own.
SERVE_REPORTING_RSS = (
    "import atexit, os, sys\n"
    "def report():\n"
    "    kib = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
    "    with open(os.environ['BENCH_RSS_OUT'], 'w') as fh:\n"
    "        fh.write(kib)\n"
    "atexit.register(report)\n"
    "from offload.cli.main import main\n"
    "sys.exit(main(['serve']))\n"
)


async def served(policy: Path, url: str, root: Path, its: tuple[str, ...]) -> tuple[float, float, list[str]]:
    """(seconds for the tool call, the server's max RSS in MiB, the API batch ids) over stdio."""
    rss_out = root / "server-rss.txt"
    env = {
        "HOME": str(root),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(root / "served.db"),
        "OFFLOAD_ROOTS": str(root),
        "OFFLOAD_POLICY": str(policy),
        "ANTHROPIC_API_KEY": "bench-key",
        "ANTHROPIC_BASE_URL": url,
        "BENCH_RSS_OUT": str(rss_out),
        # Passed on so an A/B run against another checkout (PYTHONPATH=<it>/server) measures its server.
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }
    server = StdioServerParameters(command=sys.executable, args=["-c", SERVE_REPORTING_RSS], env=env)
    args = {"template": TEMPLATE, "items": list(its), "max_tokens": 16}
    with open(os.devnull, "w") as devnull:
        async with Client(stdio_client(server, errlog=devnull), read_timeout_seconds=600) as client:
            t0 = time.perf_counter()
            result = await client.call_tool("batch_submit", args)
            took = time.perf_counter() - t0
    for _ in range(100):  # the server writes it at exit, just after the session closes
        if rss_out.exists() and rss_out.read_text():
            break
        await asyncio.sleep(0.1)
    data = result.structured_content or {}
    return took, int(rss_out.read_text()) / 1024, list(data.get("api_batches") or [])


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
        served_s, served_rss, served_batches = asyncio.run(served(policy, url, Path(tmp), its))
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bt, ot = runs[("base", False)][0], runs[("off", False)][0]
    bm, om = runs[("base", True)][1], runs[("off", True)][1]
    print(f"requests: {n:,} -> {len(api_batches)} API batches")
    print(f"time:        offload {ot:.2f} s   baseline {bt:.2f} s   ratio {ot / bt:.2f}x")
    mib = 2**20
    print(f"peak memory: offload {om / mib:.1f} MiB   baseline {bm / mib:.1f} MiB   ratio {om / bm:.2f}x (tracemalloc)")
    print(f"ledger file: {db_bytes / 2**20:.1f} MiB; process max RSS {rss_mib:.0f} MiB (both runs and the baseline)")
    print(
        f"via MCP stdio: batch_submit {served_s:.2f} s, server max RSS {served_rss:.0f} MiB "
        f"({served_rss * 2**20 / 1e6:.0f} MB), {len(served_batches)} API batches"
    )
    print(machine_line())
    parts = -(-n // MAX_REQUESTS_PER_BATCH)
    return 0 if len(api_batches) == parts and len(served_batches) == parts else 1


if __name__ == "__main__":
    sys.exit(main())
