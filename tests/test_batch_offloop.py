"""A large batch_submit builds its requests off the event loop: other calls are answered meanwhile.

Real parts: the in-memory MCP client and server, the SDK to the emulator's batch API, SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client

from offload.config.settings import Settings
from offload.mcp.server import build_server
from reliability.conftest import result_text

pytestmark = pytest.mark.anyio

ITEMS = 60_000


async def test_a_large_batch_submit_leaves_the_loop_free(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    items = [f"item number {i} with a little text to classify" for i in range(ITEMS)]
    with running(batch_delay_s=3600) as emu:
        async with Client(build_server(make_settings(emu.url)), read_timeout_seconds=300) as c:
            waits: list[float] = []
            done = anyio.Event()

            async def other_client() -> None:
                while not done.is_set():
                    t0 = time.monotonic()
                    assert not (await c.call_tool("budget_status", {"scope": "session"})).is_error
                    waits.append(time.monotonic() - t0)
                    await anyio.sleep(0.05)

            async with anyio.create_task_group() as tg:
                tg.start_soon(other_client)
                await anyio.sleep(0.3)
                t0 = time.monotonic()
                result = await c.call_tool(
                    "batch_submit",
                    {"template": "Classify: {item}", "items": items, "task": "classify", "max_tokens": 4},
                )
                took = time.monotonic() - t0
                done.set()
    assert not result.is_error, result_text(result)[:500]
    assert result.structured_content is not None and result.structured_content["requests"] == ITEMS
    assert len(waits) >= 5, (waits, took)
    # Relative, not wall-clock (the machine may be loaded): a build on the event loop would stall
    # one of the other client's calls for most of the submit; off the loop none waits that long.
    assert max(waits) < took / 4, (max(waits), took)
