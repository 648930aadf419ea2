"""Money audit across the integrated features: escalation, redo_of, batches, summaries and a
stream that breaks on the ladder. Every total agrees to the picodollar: the tool results'
cost_usd, the ledger, `offload spend --json` and budget_status.

Real parts: the mcp Client in-memory (or the services on a real AppState), the SDK over HTTP
to the emulator, real SQLite, the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from helpers import ledger_rows, query
from offload.config.settings import Settings, shipped
from offload.core.errors import UpstreamError
from offload.infra.claude import ClaudeClient
from offload.mcp.server import build_server
from offload.services import routed
from offload.services.routed import RoutedArgs
from offload.services.status import budget_status
from offload.state import open_state
from test_money_audit import run_cli

pytestmark = pytest.mark.anyio

SCRIPT = [
    {"model": "claude-haiku-5-5", "match": "ESCALATE", "reply": "no figures at all"},
    {"model": "claude-sonnet-5-5", "match": "ESCALATE", "reply": "the answer is 42"},
    {"model": "claude-haiku-5-5", "match": "capital", "reply": "Sydney."},
    {"model": "claude-sonnet-5-5", "match": "capital", "reply": "Canberra."},
]


def pusd(usd: str) -> int:
    value = Decimal(usd) * 10**12
    assert value == value.to_integral_value()
    return int(value)


def totals_agree(db: Path, tool_pusd: int, status: dict[str, Any]) -> None:
    rows = ledger_rows(db)
    ledger = sum(int(r["cost_pusd"]) for r in rows)
    spend = json.loads(run_cli("spend", "--json", "--by", "model", db=db))
    assert tool_pusd == ledger, (tool_pusd, ledger, [(r["model"], r["outcome"], r["cost_pusd"]) for r in rows])
    assert pusd(spend["total"]["cost_usd"]) == ledger
    assert pusd(status["cost_usd"]) == ledger
    assert spend["total"]["calls"] == status["calls"] == len(rows)


async def test_escalation_redo_batch_and_summary_agree_to_the_picodollar(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    words = " ".join(f"w{i}" for i in range(3000))
    (tmp_path / "a.txt").write_text(f"Section A. {words}\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text(f"Section B. {words}\n", encoding="utf-8")
    with running(script=SCRIPT, batch_delay_s=0.2) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:

            async def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
                res = await c.call_tool(name, args)
                assert not res.is_error, (name, res.content)
                assert isinstance(res.structured_content, dict)
                return res.structured_content

            escalating = {"prompt": "ESCALATE: a number", "must_match": "[0-9]", "task": "extract"}
            esc = await call("routed_complete", escalating)
            first = await call("routed_complete", {"prompt": "The capital of Australia?", "task": "summarize"})
            redo = await call("routed_complete", {"redo_of": first["call_id"]})
            summary = await call("summarize_context", {"paths": ["a.txt", "b.txt"], "target_tokens": 150})
            sub = await call("batch_submit", {"template": "Label: {item}", "items": ["a", "b", "c"], "max_tokens": 16})
            with anyio.fail_after(30):
                while (done := await call("batch_status", {"batch_id": sub["batch_id"]}))["state"] != "done":
                    await anyio.sleep(0.2)
            status = await call("budget_status", {"scope": "session"})
    assert [a["outcome"] for a in esc["attempts"]] == ["escalated", "ok"]
    assert redo["tier"] == "standard"
    reported = [esc, first, redo, summary, done]
    totals_agree(settings.db_path, sum(pusd(d["cost_usd"]) for d in reported), status)


def _dropping_policy(tmp_path: Path) -> Path:
    """The cheap tier's answer is long enough to stream; a broken stream escalates."""
    path = tmp_path / "policy.yaml"
    shutil.copy(shipped("default.yaml"), path)
    text = path.read_text().replace("  cheap: 4096\n", "  cheap: 30000\n")
    text = text.replace("on: [max_tokens, refusal,", "on: [api_error, max_tokens, refusal,")
    assert "cheap: 30000" in text and "on: [api_error" in text
    path.write_text(text)
    return path


async def test_a_stream_broken_on_the_ladder_is_in_the_cost_the_tool_reports(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Events 1 s apart and a 0.5 s read timeout: the cheap rung's stream breaks after its first
    # event (the prompt is billed); the standard rung does not stream and answers.
    with running(script=SCRIPT, stream_delay_s=1.0) as emu:
        settings = make_settings(emu.url, policy_path=_dropping_policy(tmp_path))
        async with open_state(settings) as state:
            state._claude = ClaudeClient.from_settings(settings, max_retries=0, timeout=0.5)
            ask = RoutedArgs(prompt="The capital of Australia?", task="summarize")
            out = await routed.routed_complete(state, "s", ask)
            # A drop on the only rung there is: an error, but its cost is still in every total.
            with pytest.raises(UpstreamError, match="stream broke off"):
                await routed.routed_complete(state, "s", RoutedArgs(prompt="Again?", tier="premium", max_tokens=30_000))
            status = await budget_status(state, "s", "session")
    rows = ledger_rows(settings.db_path)
    assert [r["outcome"] for r in rows] == ["dropped", "ok", "dropped"]
    assert int(rows[0]["cost_pusd"]) > 0
    assert out.text.startswith("Canberra.")
    assert [(a["tier"], a["outcome"]) for a in out.data["attempts"]] == [("cheap", "dropped"), ("standard", "ok")]
    dropped_alone = int(rows[2]["cost_pusd"])
    totals_agree(settings.db_path, pusd(out.data["cost_usd"]) + dropped_alone, status.data)


async def test_concurrent_calls_in_one_server_all_land_in_every_total(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    words = " ".join(f"w{i}" for i in range(2000))
    (tmp_path / "a.txt").write_text(f"Section A. {words}\n", encoding="utf-8")
    with running(script=SCRIPT, faults="latency=50-250ms") as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            reported: list[str] = []

            async def call(name: str, args: dict[str, Any]) -> dict[str, Any]:
                res = await c.call_tool(name, args)
                assert not res.is_error, (name, res.content)
                assert isinstance(res.structured_content, dict)
                reported.append(res.structured_content["cost_usd"])
                return res.structured_content

            firsts: list[dict[str, Any]] = []

            async def first(i: int) -> None:
                firsts.append(await call("routed_complete", {"prompt": f"The capital, take {i}?", "task": "summarize"}))

            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(first, i)
            async with anyio.create_task_group() as tg:
                for done in firsts:
                    tg.start_soon(call, "routed_complete", {"redo_of": done["call_id"]})
                for i in range(2):
                    escalating = {"prompt": f"ESCALATE {i}: a number", "must_match": "[0-9]", "task": "extract"}
                    tg.start_soon(call, "routed_complete", escalating)
                tg.start_soon(call, "summarize_context", {"paths": ["a.txt"], "target_tokens": 100})
            status = (await c.call_tool("budget_status", {"scope": "session"})).structured_content
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
    assert isinstance(status, dict) and len(reported) == 9
    assert len(ledger_rows(settings.db_path)) == len(served)
    totals_agree(settings.db_path, sum(pusd(x) for x in reported), status)
    verdicts = [r["verdict"] for r in query(settings.db_path, "SELECT verdict FROM calls WHERE verdict IS NOT NULL")]
    assert verdicts == ["redone"] * 3
