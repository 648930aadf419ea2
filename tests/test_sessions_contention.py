"""Ten `offload serve` processes (ten Claude Code sessions) share one ledger and one daily budget.

Real subprocesses over stdio through mcp's Client, each with its own OFFLOAD_SESSION, all
calling routed_complete at once against the emulator running in this process until the budget
refuses them. The daily budget must hold to the picodollar, every refusal must say which budget
and what to do, no hold may be left behind, and every answered API call must be a ledger row.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from offload.config.settings import shipped

pytestmark = pytest.mark.anyio

SESSIONS = 10
VENV_BIN = Path(sys.executable).parent
OFFLOAD = str(VENV_BIN / "offload")
LIMIT_USD = "0.004"
LIMIT_PUSD = 4 * 10**9
# The most one call below can reserve: opus (premium) 1h-write rate on an upper bound of a few
# hundred prompt bytes + 120 output tokens at $20/MTok, rounded up generously.
MAX_WORST_PUSD = 400 * 8_000_000 + 120 * 20_000_000


def policy(tmp_path: Path, on_exceed: str) -> Path:
    text = shipped("default.yaml").read_text(encoding="utf-8")
    text = text.replace("  session_usd: 2\n", "  session_usd: 100\n").replace(
        "daily_usd: 20", f'daily_usd: "{LIMIT_USD}"'
    )
    text = text.replace("on_exceed: downgrade", f"on_exceed: {on_exceed}")
    assert f'daily_usd: "{LIMIT_USD}"' in text and f"on_exceed: {on_exceed}" in text
    path = tmp_path / f"{on_exceed}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def session(i: int, tmp_path: Path, url: str, policy_path: Path, out: dict[str, Any]) -> None:
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(tmp_path / "shared.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
        "OFFLOAD_POLICY": str(policy_path),
        "OFFLOAD_SESSION": f"sess-{i}",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": url,
    }
    rng = random.Random(i)
    params = StdioServerParameters(command=OFFLOAD, args=["serve"], env=env)
    with (tmp_path / f"stderr-{i}.log").open("w") as err:
        async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
            for _ in range(200):
                args: dict[str, Any] = {
                    "prompt": f"session {i}: " + "count the words " * rng.randint(1, 15),
                    "max_tokens": rng.randint(20, 120),
                }
                if rng.random() < 0.5:
                    args["difficulty"] = rng.choice(["medium", "hard"])
                res = await c.call_tool("routed_complete", args)
                if res.is_error:
                    out["refusals"].append(res.content[0].text)  # type: ignore[union-attr]
                    return
                data = res.structured_content
                assert isinstance(data, dict)
                out["answers"].append({**data, "text": res.content[0].text})  # type: ignore[union-attr]
            raise AssertionError(f"session {i} was never refused")


def db(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "shared.db")
    conn.row_factory = sqlite3.Row
    return conn


async def run_sessions(tmp_path: Path, url: str, policy_path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"refusals": [], "answers": []}
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for i in range(SESSIONS):
                tg.start_soon(session, i, tmp_path, url, policy_path, out)
    return out


def check_ledger(tmp_path: Path, emu: Any, out: dict[str, Any]) -> None:
    conn = db(tmp_path)
    try:
        rows = conn.execute("SELECT * FROM attempts").fetchall()
        held = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
    finally:
        conn.close()
    total = sum(int(r["cost_pusd"]) for r in rows)
    # the budget held, and it really was used up (not refused early by stale holds)
    assert total <= LIMIT_PUSD, total
    assert total > LIMIT_PUSD - SESSIONS * MAX_WORST_PUSD, total
    assert held == 0
    served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
    # every paid attempt reached the host inside an answer: none was paid for and then dropped
    attempts = sum(len(a["attempts"]) for a in out["answers"])
    assert len(rows) == len(served) == attempts, (len(rows), len(served), attempts)
    assert len({r["session_id"] for r in rows}) > 1  # (a late starter may find the budget gone)


async def test_ten_stdio_sessions_never_overrun_a_shared_daily_budget(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    with running() as emu:
        out = await run_sessions(tmp_path, emu.url, policy(tmp_path, "refuse"))
        check_ledger(tmp_path, emu, out)
    assert len(out["refusals"]) == SESSIONS
    for text in out["refusals"]:
        assert "daily budget $0.004" in text and "would be exceeded" in text, text
        assert "left" in text and "resets" in text and "cheaper tier" in text, text


async def test_ten_stdio_sessions_downgrade_then_refuse_within_the_daily_budget(
    running: Callable[..., Any], tmp_path: Path
) -> None:
    with running() as emu:
        out = await run_sessions(tmp_path, emu.url, policy(tmp_path, "downgrade"))
        check_ledger(tmp_path, emu, out)
    assert len(out["refusals"]) == SESSIONS
    for text in out["refusals"]:
        assert "daily budget" in text, text
    # downgrade mode kept answering on cheaper tiers once the premium tier no longer fit
    assert any("downgraded from premium" in a["text"] for a in out["answers"])
