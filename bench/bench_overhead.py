"""Overhead of going through offload over stdio, against its baseline measured in the same run.

- routed_complete (one MCP stdio session to an `offload serve` subprocess, which reserves, calls
  the emulator through the SDK, prices and records) vs the same request sent straight to the
  same emulator with the SDK from this process;
- budget_status and trim_result vs a bare MCP tool returning a constant, served by a tiny
  MCPServer subprocess over the same transport.

The emulator runs in its own process, so its work shares neither this process's GIL nor the
offload server's. The calls are interleaved round by round (direct, routed, constant, status,
trim), so a burst of load from elsewhere on the machine falls on every series alike.

    python bench/bench_overhead.py [--quick] [--rounds N]
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import anyio
from anthropic.types import MessageParam
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, emulator_process, latency_rows, machine_line, table

BIN = Path(sys.executable).parent
PROMPT = "Classify this ticket: the refund never arrived."
ROUNDS = 300
QUICK_ROUNDS = 60
MAX_TOKENS = 4096


def bare_server() -> None:
    from mcp.server import MCPServer

    server: MCPServer[Any] = MCPServer("bare")

    @server.tool()
    def constant() -> str:
        """Returns a constant."""
        return "ok"

    server.run()


def _env(root: Path, url: str) -> dict[str, str]:
    return {
        "HOME": str(root),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(root / "ledger.db"),
        "OFFLOAD_ROOTS": str(root),
        "ANTHROPIC_API_KEY": "bench-key",
        "ANTHROPIC_BASE_URL": url,
        # An A/B run against another checkout: BENCH_SERVER_PYTHONPATH=<it>/server runs its server
        # (only the server: the emulator and the direct calls stay the same on both sides).
        **({"PYTHONPATH": os.environ["BENCH_SERVER_PYTHONPATH"]} if "BENCH_SERVER_PYTHONPATH" in os.environ else {}),
    }


async def _rounds(rounds: int, calls: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, list[float]]:
    """Every call once per round, in a shuffled order, after one warm-up round."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        await call()  # warm up: imports, connections, first ledger write
    order = list(calls)
    rng = random.Random(18)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            t = time.perf_counter()
            await calls[name]()
            samples[name].append(time.perf_counter() - t)
    return samples


def write_fixture(root: Path) -> None:
    (root / "resp.json").write_text('{"items": [' + ",".join(f'{{"id": {i}, "ok": true}}' for i in range(200)) + "]}")


async def measure(rounds: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp, emulator_process("--seed", "4") as url:
        root = Path(tmp)
        write_fixture(root)
        offload = StdioServerParameters(command=str(BIN / "offload"), args=["serve"], env=_env(root, url))
        bare = StdioServerParameters(
            command=sys.executable, args=[str(Path(__file__).resolve()), "--bare-server"], env=_env(root, url)
        )
        sdk = anthropic.AsyncAnthropic(base_url=url, api_key="bench-key")
        # The direct call sends what offload sends: the same text block, max_tokens and model (the
        # one offload's routing picks, read from its first answer). Another model's reply differs in
        # length, and the emulator's time for it is not offload's overhead.
        message: list[MessageParam] = [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]
        ask = {"prompt": PROMPT, "max_tokens": MAX_TOKENS}
        with open(os.devnull, "w") as devnull:
            try:
                async with (
                    Client(stdio_client(offload, errlog=devnull), read_timeout_seconds=60) as oc,
                    Client(stdio_client(bare, errlog=devnull), read_timeout_seconds=60) as bc,
                ):
                    first = await oc.call_tool("routed_complete", ask)
                    model = str((first.structured_content or {})["model"])
                    got = await _rounds(
                        rounds,
                        {
                            "direct": lambda: sdk.messages.create(model=model, max_tokens=MAX_TOKENS, messages=message),
                            "routed": lambda: oc.call_tool("routed_complete", ask),
                            "const": lambda: bc.call_tool("constant", {}),
                            "status": lambda: oc.call_tool("budget_status", {}),
                            "trim": lambda: oc.call_tool("trim_result", {"path": "resp.json", "max_tokens": 200}),
                        },
                    )
            finally:
                await sdk.close()
    rows = latency_rows("overhead", "routed_complete via stdio", got["routed"], got["direct"], "direct SDK call")
    rows.append(own_share(got["routed"], got["direct"], got["const"]))
    rows += latency_rows("overhead", "budget_status via stdio", got["status"], got["const"], "constant tool")
    rows += latency_rows("overhead", "trim_result (8 KB JSON) via stdio", got["trim"], got["const"], "constant tool")
    return rows


def own_share(routed: list[float], direct: list[float], const: list[float]) -> Row:
    """What a routed call adds beyond the API call and one MCP round trip, both measured in this
    run: offload's own per-call work. The issue's +2 ms target was set where a round trip took
    1.7 ms, leaving 0.3 ms for it; here a round trip's cost moves with the machine's load, so the
    three are taken round by round (each round runs all of them) and the median of that is shown."""
    rt = statistics.median(const)
    own = statistics.median(r - d - c for r, d, c in zip(routed, direct, const, strict=True))
    return Row(
        "overhead",
        "routed_complete - direct call - one MCP round trip, per round, median",
        f"{own * 1000:+.2f} ms",
        f"MCP round trip {rt * 1000:.2f} ms",
        "",
        "offload's own work per call; the issue's budget for it: 2 ms - 1.7 ms = 0.3 ms",
    )


def run(quick: bool = False) -> list[Row]:
    result: list[Row] = anyio.run(measure, QUICK_ROUNDS if quick else ROUNDS)
    return result


if __name__ == "__main__":
    if "--bare-server" in sys.argv:
        bare_server()
    else:
        rounds = QUICK_ROUNDS if "--quick" in sys.argv else ROUNDS
        if "--rounds" in sys.argv:
            rounds = int(sys.argv[sys.argv.index("--rounds") + 1])
        before = machine_line()
        rows: list[Row] = anyio.run(measure, rounds)
        print(before)
        print(table(rows))
        print(machine_line())
