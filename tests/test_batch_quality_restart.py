"""SIGKILL after a follow-up round was sent, before it ended: a new `offload serve` collects it once."""

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
from test_batch_quality import REQUESTS, SCRIPT

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_a_server_killed_while_a_follow_up_round_runs_is_replaced_and_it_settles_once(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    with running(script=SCRIPT, batch_delay_s=2.0) as emu:
        env = server_env(tmp_path, emu.url, "restart")
        params = StdioServerParameters(command=str(VENV_BIN / "offload"), args=["serve"], env=env)
        round_1 = "SELECT p.state FROM batch_parts p JOIN batches b ON b.id = p.batch_id WHERE b.round = 1"
        with (tmp_path / "first.log").open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
                sub = await c.call_tool("batch_submit", {"requests": REQUESTS, "must_match": r"ANSWER: \d+"})
                assert not sub.is_error, sub
                assert isinstance(sub.structured_content, dict)
                bid = sub.structured_content["batch_id"]
                with anyio.fail_after(30):  # round 0 collected, round 1 sent and running at the API
                    while target_rows(db, round_1) != [("in_progress",)]:
                        await anyio.sleep(0.05)
                (pid,) = children_serving(db)
                os.kill(pid, signal.SIGKILL)
                with anyio.fail_after(10):
                    while children_serving(db):
                        await anyio.sleep(0.05)
        assert target_rows(db, "SELECT COUNT(*) FROM attempts") == [(5,)]  # round 0 only

        with (tmp_path / "second.log").open("w") as err:
            async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
                with anyio.fail_after(60):
                    while True:
                        st = await c.call_tool("batch_status", {"batch_id": bid})
                        assert isinstance(st.structured_content, dict), st
                        if st.structured_content["state"] == "done":
                            break
                        await anyio.sleep(0.25)
                res = await c.call_tool("batch_results", {"batch_id": bid})
        posts = emu.state.calls("/v1/messages/batches", "POST")
    assert [len(p.body["requests"]) for p in posts] == [5, 3, 1]
    assert target_rows(db, "SELECT COUNT(*), COUNT(DISTINCT request_key) FROM attempts WHERE batch = 1") == [(9, 9)]
    assert target_rows(db, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert isinstance(res.structured_content, dict)
    assert [i["status"] for i in res.structured_content["items"]] == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 2
    assert "Traceback" not in (tmp_path / "second.log").read_text()
