"""SIGKILL after submit, before results: a new `offload serve` process collects, nothing counts twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent


def _children_serving(db: Path) -> list[int]:
    """Our child processes running `offload serve` on this ledger (found via /proc, Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and f"OFFLOAD_DB={db}".encode() in env:
            found.append(int(entry.name))
    return found


def _count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the server's pid through /proc")
async def test_sigkilled_server_is_replaced_and_the_batch_settles_once(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    n = 200
    with running(batch_delay_s=3.0) as emu:
        env = {
            "HOME": str(tmp_path),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "OFFLOAD_DB": str(db),
            "OFFLOAD_ROOTS": str(tmp_path),
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": emu.url,
        }
        params = StdioServerParameters(command=str(VENV_BIN / "offload"), args=["serve"], env=env)
        with (tmp_path / "first.log").open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
                sub = await c.call_tool(
                    "batch_submit", {"template": "Tag {item}", "items": [f"x{i}" for i in range(n)]}
                )
                assert not sub.is_error, sub
                assert isinstance(sub.structured_content, dict)
                bid = sub.structured_content["batch_id"]
                (pid,) = _children_serving(db)
                os.kill(pid, signal.SIGKILL)
                with anyio.fail_after(10):
                    while _children_serving(db):
                        await anyio.sleep(0.05)
        # Killed before the batch ended: nothing settled, the batch's hold survived its process.
        assert _count(db, "SELECT COUNT(*) FROM attempts") == 0
        assert _count(db, "SELECT COUNT(*) FROM reservations WHERE host = 'batch'") == 1

        with (tmp_path / "second.log").open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
                with anyio.fail_after(40):
                    while True:
                        st = await c.call_tool("batch_status", {"batch_id": bid})
                        assert isinstance(st.structured_content, dict), st
                        if st.structured_content["state"] == "done":
                            break
                        await anyio.sleep(0.25)
        assert len([r for r in emu.state.calls("/v1/messages/batches") if r.method == "POST"]) == 1
    assert _count(db, "SELECT COUNT(*) FROM attempts WHERE batch = 1") == n
    assert _count(db, "SELECT COUNT(DISTINCT request_key) FROM attempts") == n
    assert _count(db, "SELECT COUNT(*) FROM reservations") == 0
    assert "Traceback" not in (tmp_path / "second.log").read_text()
