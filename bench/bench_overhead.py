"""Overhead of going through offload over stdio, against direct calls in the same process.

- routed_complete (MCP over stdio to an `offload serve` subprocess, which reserves, calls the
  emulator through the SDK, prices and records) vs the same request sent straight to the same
  emulator with the SDK;
- budget_status and trim_result vs a bare MCP tool returning a constant, served by a tiny
  MCPServer subprocess over the same transport.

    python bench/bench_overhead.py [--quick]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, latency_rows, table
from offload_emulator import EmulatorConfig, serve_in_thread

BIN = Path(sys.executable).parent
PROMPT = "Classify this ticket: the refund never arrived."


def bare_server() -> None:
    from mcp.server import MCPServer

    server: MCPServer[Any] = MCPServer("bare")

    @server.tool()
    def constant() -> str:
        """Returns a constant."""
        return "ok"

    server.run()


async def _time(n: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    await call()  # warm up: imports, connections, first ledger write
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t)
    return samples


def _env(root: Path, url: str) -> dict[str, str]:
    return {
        "HOME": str(root),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(root / "ledger.db"),
        "OFFLOAD_ROOTS": str(root),
        "ANTHROPIC_API_KEY": "bench-key",
        "ANTHROPIC_BASE_URL": url,
    }


async def measure(quick: bool = False) -> list[Row]:
    n = 40 if quick else 200
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread(EmulatorConfig(seed=4)) as emu:
        root = Path(tmp)
        (root / "resp.json").write_text(
            '{"items": [' + ",".join(f'{{"id": {i}, "ok": true}}' for i in range(200)) + "]}"
        )
        offload = StdioServerParameters(command=str(BIN / "offload"), args=["serve"], env=_env(root, emu.url))
        bare = StdioServerParameters(
            command=sys.executable, args=[str(Path(__file__).resolve()), "--bare-server"], env=_env(root, emu.url)
        )
        sdk = anthropic.AsyncAnthropic(base_url=emu.url, api_key="bench-key")
        with open(os.devnull, "w") as devnull:
            try:
                async with (
                    Client(stdio_client(offload, errlog=devnull), read_timeout_seconds=60) as oc,
                    Client(stdio_client(bare, errlog=devnull), read_timeout_seconds=60) as bc,
                ):
                    direct = await _time(
                        n,
                        lambda: sdk.messages.create(
                            model="claude-haiku-5-5", max_tokens=4096, messages=[{"role": "user", "content": PROMPT}]
                        ),
                    )
                    routed = await _time(n, lambda: oc.call_tool("routed_complete", {"prompt": PROMPT}))
                    const = await _time(n, lambda: bc.call_tool("constant", {}))
                    status = await _time(n, lambda: oc.call_tool("budget_status", {}))
                    trim = await _time(n, lambda: oc.call_tool("trim_result", {"path": "resp.json", "max_tokens": 200}))
            finally:
                await sdk.close()
    rows += latency_rows("overhead", "routed_complete via stdio", routed, direct, "direct SDK call")
    rows += latency_rows("overhead", "budget_status via stdio", status, const, "constant tool")
    rows += latency_rows("overhead", "trim_result (8 KB JSON) via stdio", trim, const, "constant tool")
    return rows


def run(quick: bool = False) -> list[Row]:
    result: list[Row] = anyio.run(measure, quick)
    return result


if __name__ == "__main__":
    if "--bare-server" in sys.argv:
        bare_server()
    else:
        print(table(run(quick="--quick" in sys.argv)))
