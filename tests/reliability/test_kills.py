"""SIGKILL an `offload serve` stdio process mid-call, restart on the same ledger: consistent.

The server is a real subprocess speaking raw JSON-RPC on stdin/stdout (we need its pid), the
emulator is slowed with latency faults so the kill lands while the API call is in flight.
Batch submit/collection kills are covered with the batch service's own tests.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from helpers import handshake, server_env
from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.money import usd_json
from offload.core.pricing import Usage
from offload.mcp.server import build_server

from .conftest import ledger_rows, result_text

pytestmark = pytest.mark.anyio

VENV_BIN = Path(sys.executable).parent
OFFLOAD = str(VENV_BIN / "offload")


def _start_server(tmp_path: Path, base_url: str, session: str) -> subprocess.Popen[bytes]:
    env = server_env(tmp_path, base_url, session)
    errlog = (tmp_path / f"{session}.stderr").open("wb")
    try:
        proc = subprocess.Popen(
            [OFFLOAD, "serve"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errlog, env=env, cwd=tmp_path
        )
    finally:
        errlog.close()
    return proc


def _send(proc: subprocess.Popen[bytes], *messages: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
    proc.stdin.flush()


def _call(rid: int, prompt: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": "routed_complete", "arguments": {"prompt": prompt}},
    }


def _wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL


async def _after_restart(settings: Settings) -> tuple[Any, Any]:
    """A new server on the same ledger makes one call (its reserve runs the dead-pid check)."""
    async with Client(build_server(settings)) as client:
        answer = await client.call_tool("routed_complete", {"prompt": "after the restart"})
        status = await client.call_tool("budget_status", {"scope": "day"})
    return answer, status


def _integrity(db: Path) -> str:
    return str(ledger_rows(db, "PRAGMA integrity_check")[0][0])


async def test_sigkill_while_the_api_call_is_in_flight(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    with running(faults="latency=5s") as emu:
        proc = _start_server(tmp_path, emu.url, "doomed")
        try:
            _send(proc, *handshake("kill-test"), _call(2, "a slow sub-task"))
            _wait_for(lambda: bool(emu.state.calls("/v1/messages")), "the server's API request")
            held = ledger_rows(db, "SELECT pid, session_id, amount_pusd FROM reservations")
            _kill(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        # The dead process left its worst-case hold and nothing else.
        assert [(r["pid"], r["session_id"]) for r in held] == [(proc.pid, "doomed")]
        assert held[0]["amount_pusd"] > 0
        assert ledger_rows(db, "SELECT COUNT(*) AS n FROM attempts")[0]["n"] == 0
        assert _integrity(db) == "ok"

        emu.state.set_faults(None)
        settings = make_settings(emu.url, db_path=db)
        answer, status = await _after_restart(settings)
        served = [r for r in emu.state.calls("/v1/messages") if r.status == 200]

    assert not answer.is_error, result_text(answer)
    assert not status.is_error, result_text(status)
    assert ledger_rows(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
    rows = ledger_rows(db, "SELECT session_id, cost_pusd FROM attempts")
    # The killed call's response was never served (the kill landed inside the latency), so the
    # only row is the new call, priced exactly.
    assert len(served) == 1 and [r["session_id"] for r in rows] == ["test-session"]
    cost = load_prices().cost(str(served[0].model), Usage.from_api(served[0].usage))
    assert rows[0]["cost_pusd"] == cost
    day = status.structured_content["scopes"]["daily"]
    assert day["spent_usd"] == usd_json(cost) and day["reserved_usd"] == "0"
    assert _integrity(db) == "ok"


async def test_sigkill_at_an_arbitrary_moment_of_a_busy_stream(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Many calls in flight and settling when the kill lands: no partial or phantom rows."""
    db = tmp_path / "ledger.db"
    with running(faults="latency=20-200ms", seed=7) as emu:
        proc = _start_server(tmp_path, emu.url, "busy")
        try:
            _send(proc, *handshake("kill-test"), *(_call(10 + i, f"stream task {i}") for i in range(40)))

            def settled() -> bool:  # some calls recorded, most still in flight
                try:
                    return bool(ledger_rows(db, "SELECT COUNT(*) AS n FROM attempts")[0]["n"] >= 3)
                except sqlite3.OperationalError:  # the server has not created the schema yet
                    return False

            _wait_for(settled, "a few settled calls")
            _kill(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        served = {r.request_id: r for r in emu.state.calls("/v1/messages") if r.status == 200}
        rows_before = ledger_rows(db, "SELECT model, cost_pusd FROM attempts")
        assert _integrity(db) == "ok"

        emu.state.set_faults(None)
        answer, status = await _after_restart(make_settings(emu.url, db_path=db))

    assert not answer.is_error and not status.is_error, (result_text(answer), result_text(status))
    # Every row is a served response priced exactly; a response served in the instant before
    # the kill may lack its row (the process died before recording it), never the reverse.
    prices = load_prices()
    served_costs = sorted(prices.cost(str(r.model), Usage.from_api(r.usage)) for r in served.values())
    row_costs = sorted(int(r["cost_pusd"]) for r in rows_before)
    assert len(row_costs) <= len(served_costs)
    remaining = list(served_costs)
    for cost in row_costs:
        assert cost in remaining, f"ledger row costing {cost} pusd matches no served response"
        remaining.remove(cost)
    # Rows recorded before the kill are durable (WAL commit), so none was lost to it.
    assert len(row_costs) >= 3
    assert ledger_rows(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
    assert _integrity(db) == "ok"
