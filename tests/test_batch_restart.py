"""SIGKILL after submit, before results: a new `offload serve` process collects, nothing counts twice."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from helpers import VENV_BIN, children_serving, server_env, target_rows

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_sigkilled_server_is_replaced_and_the_batch_settles_once(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    n = 200
    with running(batch_delay_s=3.0) as emu:
        env = server_env(tmp_path, emu.url, "restart")
        params = StdioServerParameters(command=str(VENV_BIN / "offload"), args=["serve"], env=env)
        with (tmp_path / "first.log").open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
                sub = await c.call_tool(
                    "batch_submit", {"template": "Tag {item}", "items": [f"x{i}" for i in range(n)]}
                )
                assert not sub.is_error, sub
                assert isinstance(sub.structured_content, dict)
                bid = sub.structured_content["batch_id"]
                (pid,) = children_serving(db)
                os.kill(pid, signal.SIGKILL)
                with anyio.fail_after(10):
                    while children_serving(db):
                        await anyio.sleep(0.05)
        # Killed before the batch ended: nothing settled, the batch's hold survived its process.
        assert target_rows(db, "SELECT COUNT(*) FROM attempts")[0][0] == 0
        assert target_rows(db, "SELECT COUNT(*) FROM reservations WHERE host = 'batch'")[0][0] == 1

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
    assert target_rows(db, "SELECT COUNT(*) FROM attempts WHERE batch = 1")[0][0] == n
    assert target_rows(db, "SELECT COUNT(DISTINCT request_key) FROM attempts")[0][0] == n
    assert target_rows(db, "SELECT COUNT(*) FROM reservations")[0][0] == 0
    assert "Traceback" not in (tmp_path / "second.log").read_text()
