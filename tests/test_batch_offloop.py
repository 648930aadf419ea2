"""A large batch_submit builds its requests off the event loop: other calls are answered meanwhile.

Real parts: the in-memory MCP client and server, the SDK to the emulator's batch API, SQLite.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client

from offload.config.settings import Settings
from offload.mcp.http import bind_socket
from offload.mcp.server import build_server
from reliability.conftest import result_text

pytestmark = pytest.mark.anyio

ITEMS = 60_000


@contextmanager
def _emulator_process(tmp_path: Path) -> Iterator[str]:
    """The emulator in its own process: parsing a 10 MB batch body must not take this process's GIL."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    with (tmp_path / "emulator.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "offload"), "emulator", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "emulator.log").read_text()
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def test_a_large_batch_submit_leaves_the_loop_free(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    items = [f"item number {i} with a little text to classify" for i in range(ITEMS)]
    with _emulator_process(tmp_path) as url:
        async with Client(build_server(make_settings(url)), read_timeout_seconds=300) as c:
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
