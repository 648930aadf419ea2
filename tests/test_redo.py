"""The host as the judge: call_ids, `redo_of`, verdicts in the ledger, and savings that count them.

Real MCP client → server → real SDK over HTTP → emulator → SQLite.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from helpers import ledger_rows, query
from offload.config.settings import Settings, shipped
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

# pusd per token, written out by hand (USD/MTok x 10^6)
RATES = {
    "claude-haiku-5-5": {"in": 100_000, "w5m": 125_000, "read": 10_000, "out": 500_000},
    "claude-sonnet-5-5": {"in": 2_000_000, "w5m": 2_500_000, "read": 100_000, "out": 10_000_000},
    "claude-opus-5-5": {"in": 4_000_000, "w5m": 5_000_000, "read": 200_000, "out": 20_000_000},
}

SCRIPT = [
    {"model": "claude-haiku-5-5", "match": "capital", "reply": "The capital of Australia is Sydney."},
    {"model": "claude-sonnet-5-5", "match": "capital", "reply": "The capital of Australia is Canberra."},
    {"model": "claude-opus-5-5", "match": "capital", "reply": "Canberra."},
]


def price(model: str, usage: dict[str, Any]) -> int:
    r = RATES[model]
    cost: int = (
        usage["input_tokens"] * r["in"]
        + (usage.get("cache_creation_input_tokens") or 0) * r["w5m"]
        + (usage.get("cache_read_input_tokens") or 0) * r["read"]
        + usage["output_tokens"] * r["out"]
    )
    return cost


@asynccontextmanager
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as c:
        yield c


def text_of(result: Any) -> str:
    return str(result.content[0].text)


async def test_redo_reruns_the_same_request_one_tier_up_and_records_the_verdict(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    system = "You answer geography questions. " + "Be exact and name your source. " * 300  # cached prefix
    # Every cacheable prefix cached, so both tiers write the system prompt to their own caches.
    policy = tmp_path / "always.yaml"
    policy.write_text(shipped("default.yaml").read_text().replace("caching:\n", "caching:\n  placement: always\n"))
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url, policy_path=policy)
        async with client(settings) as c:
            first = await c.call_tool(
                "routed_complete",
                {"prompt": "What is the capital of Australia?", "system": system, "task": "summarize"},
            )
            first_id = first.structured_content["call_id"]
            redo = await c.call_tool("routed_complete", {"redo_of": first_id, "reason": "Sydney is wrong"})
            status = await c.call_tool("budget_status", {"scope": "session"})
        calls = [r for r in emu.state.calls("/v1/messages") if r.status == 200]

    assert not first.is_error and not redo.is_error, (first.content, redo.content)
    assert re.fullmatch(r"rc_[0-9a-f]{8}", first_id)
    assert text_of(first).splitlines()[-1].endswith(f" · id {first_id}]")
    assert "unchecked" in text_of(first).splitlines()[-1]
    data = redo.structured_content
    assert data is not None
    assert text_of(redo).startswith("The capital of Australia is Canberra.")
    assert data["tier"] == "standard" and data["redo_of"] == first_id and data["call_id"] != first_id
    assert data["rule"] == "redo"

    # the same request went up a tier: same system, same prompt, nothing resent by the host
    assert [c.model for c in calls] == ["claude-haiku-5-5", "claude-sonnet-5-5"]
    assert calls[0].body["system"] == calls[1].body["system"]
    assert calls[0].body["messages"] == calls[1].body["messages"]

    # the verdict sits on the earlier call; only the answer the host kept carries a baseline
    verdicts = query(settings.db_path, "SELECT call_id, verdict, redo_of, tier, reason FROM calls ORDER BY ts, rowid")
    assert [tuple(v) for v in verdicts] == [
        (first_id, "redone", None, "cheap", None),  # the reason is host text: not kept without store_text
        (data["call_id"], None, first_id, "standard", None),
    ]
    rows = ledger_rows(settings.db_path)
    assert [r["baseline_pusd"] > 0 for r in rows] == [False, True]

    # self-reported savings == an independent recomputation from the emulator's usage:
    # offload paid for both calls; the baseline is the kept request on Opus with the same caching.
    # Sonnet wrote the system prompt to its own cache, but a host on Opus alone would have had it
    # cached since the first call: there it is a read.
    cost = sum(price(str(c.model), c.usage) for c in calls)
    written = calls[1].usage["cache_creation_input_tokens"]
    assert written > 2048 and calls[0].usage["cache_creation_input_tokens"] == written
    as_read = {**calls[1].usage, "cache_creation_input_tokens": 0, "cache_read_input_tokens": written}
    baseline = price("claude-opus-5-5", as_read)
    s = status.structured_content
    assert s is not None
    assert Decimal(s["cost_usd"]) * 10**12 == cost
    assert Decimal(s["baseline_usd"]) * 10**12 == baseline
    assert Decimal(s["saved_usd"]) * 10**12 == baseline - cost
    assert s["answers"] == {"answers": 2, "checked": 0, "redone": 1, "unchecked": 1}
    assert "answers: 2 (0 checked, 1 redone, 1 unchecked)" in text_of(status)
    # `offload spend` shows the same quality next to the same money
    spend = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "offload.cli.main",
                "spend",
                "--json",
                "--by",
                "model",
                "--db",
                str(settings.db_path),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    total = spend["total"]
    assert (total["answers"], total["checked"], total["redone"], total["unchecked"]) == (2, 0, 1, 1)
    assert Decimal(total["saved_usd"]) * 10**12 == baseline - cost
    by_model = {r["key"]: (r["answers"], r["redone"]) for r in spend["rows"]}
    assert by_model == {"claude-haiku-5-5": (1, 1), "claude-sonnet-5-5": (1, 0)}
    table = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "spend", "--by", "model", "--db", str(settings.db_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "redone" in table and "unchecked" in table


async def test_redo_of_an_unknown_or_expired_id_says_to_resend_the_prompt(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url, redo_max_items=1)
        async with client(settings) as c:
            unknown = await c.call_tool("routed_complete", {"redo_of": "rc_00000000"})
            first = await c.call_tool("routed_complete", {"prompt": "capital of Australia?", "difficulty": "medium"})
            await c.call_tool(
                "routed_complete", {"prompt": "capital of Austria?", "difficulty": "medium"}
            )  # pushes the first out
            expired = await c.call_tool(
                "routed_complete",
                {"redo_of": first.structured_content["call_id"]},
            )
            mixed = await c.call_tool("routed_complete", {"redo_of": "rc_00000000", "prompt": "again"})
        n_calls = len([r for r in emu.state.calls("/v1/messages") if r.status == 200])
    for result in (unknown, expired):
        assert result.is_error
        assert "unknown or expired" in text_of(result) and "send the prompt again" in text_of(result)
    assert mixed.is_error and "send only redo_of" in text_of(mixed)
    assert n_calls == 2  # no redo reached the API
    assert query(settings.db_path, "SELECT COUNT(*) FROM calls WHERE verdict IS NOT NULL")[0][0] == 0


async def test_redo_past_the_top_tier_is_refused_clearly_and_the_verdict_kept(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url)
        async with client(settings) as c:
            first = await c.call_tool("routed_complete", {"prompt": "capital of Australia?", "tier": "standard"})
            second = await c.call_tool(
                "routed_complete",
                {"redo_of": first.structured_content["call_id"]},
            )
            assert second.structured_content["tier"] == "premium"
            third = await c.call_tool(
                "routed_complete",
                {"redo_of": second.structured_content["call_id"]},
            )
        n_calls = len([r for r in emu.state.calls("/v1/messages") if r.status == 200])
    assert third.is_error
    assert "top tier" in text_of(third) and "no higher tier" in text_of(third)
    assert n_calls == 2
    verdicts = [r["verdict"] for r in query(settings.db_path, "SELECT verdict FROM calls ORDER BY ts, rowid")]
    assert verdicts == ["redone", "rejected"]
    # the host is left with the premium answer: it keeps its baseline
    rows = ledger_rows(settings.db_path)
    assert [r["baseline_pusd"] > 0 for r in rows] == [False, True]
