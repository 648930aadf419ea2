"""routed_complete end to end: real MCP client → server → real SDK over HTTP → emulator → SQLite."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from helpers import ledger_rows as rows
from helpers import query
from offload.config.settings import Settings, shipped
from offload.core.money import fmt_usd, usd_json
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

# Published rates in pusd per token (= USD per million tokens × 10^6), written out by hand.
HAIKU = {"in": 100_000, "w5m": 125_000, "read": 10_000, "out": 500_000}
SONNET = {"in": 2_000_000, "w5m": 2_500_000, "read": 100_000, "out": 10_000_000}
OPUS_IN, OPUS_OUT = 4_000_000, 20_000_000


def hand_cost(rates: dict[str, int], usage: dict[str, Any]) -> int:
    return int(
        usage["input_tokens"] * rates["in"]
        + (usage.get("cache_creation_input_tokens") or 0) * rates["w5m"]
        + (usage.get("cache_read_input_tokens") or 0) * rates["read"]
        + usage["output_tokens"] * rates["out"]
    )


@asynccontextmanager
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as c:
        yield c


def message_calls(emu: Any) -> list[Any]:
    return [r for r in emu.state.calls("/v1/messages") if r.status == 200]


async def test_schema_failure_on_cheap_tier_escalates_once(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    script = [
        {"model": "claude-haiku-5-5", "match": "invoice", "reply": "The total is probably 42."},
        {"model": "claude-sonnet-5-5", "match": "invoice", "reply": '{"total": 42}'},
    ]
    with running(script=script) as emu:
        settings = make_settings(emu.url)
        async with client(settings) as c:
            result = await c.call_tool(
                "routed_complete",
                {
                    "prompt": "Extract the total of this invoice: ... TOTAL 42 EUR",
                    "task": "extract",
                    "response_schema": {"type": "object", "required": ["total"]},
                },
            )
        calls = message_calls(emu)

    assert not result.is_error, result.content
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith('{"total": 42}')
    footer = text.splitlines()[-1]
    assert footer.startswith("[sonnet-5-5 · $") and "escalated 1" in footer
    data = result.structured_content
    assert data is not None
    assert [a["outcome"] for a in data["attempts"]] == ["escalated", "ok"]
    assert [a["failed"] for a in data["attempts"]] == ["schema_invalid", None]

    ledger = rows(settings.db_path)
    assert [(r["tier"], r["model"], r["outcome"], r["step"]) for r in ledger] == [
        ("cheap", "claude-haiku-5-5", "escalated", 0),
        ("standard", "claude-sonnet-5-5", "ok", 1),
    ]
    assert [c.model for c in calls] == ["claude-haiku-5-5", "claude-sonnet-5-5"]
    expected = [hand_cost(HAIKU, calls[0].usage), hand_cost(SONNET, calls[1].usage)]
    assert [r["cost_pusd"] for r in ledger] == expected
    # The footer shows the whole call's cost: both rungs.
    assert Decimal(data["cost_usd"]) == Decimal(sum(expected)) / 10**12
    # Only the answer the host used stands for "what the host would have paid": one Opus call
    # with the same caching (this short prompt caches nothing).
    u = calls[1].usage
    assert not u.get("cache_read_input_tokens") and not u.get("cache_creation_input_tokens")
    assert ledger[0]["baseline_pusd"] == 0
    assert ledger[1]["baseline_pusd"] == u["input_tokens"] * OPUS_IN + u["output_tokens"] * OPUS_OUT
    # No reservation is left behind once the calls are settled.
    conn = sqlite3.connect(settings.db_path)
    assert conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0
    conn.close()


async def test_shared_context_files_are_cached_once_reuse_shows_and_read_after(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Large enough to pass Haiku 5.5's 2,048-token minimum cacheable prefix.
    for i in range(3):
        source = "".join(f"def handler_{i}_{n}(x):\n    return x * {n}\n" for n in range(400))
        (tmp_path / f"module{i}.py").write_text(source)
    settings = make_settings(emulator.url)
    questions = ["Which handler doubles?", "Which handler triples?", "Which handler quadruples?"]
    async with client(settings) as c:
        results = [
            await c.call_tool("routed_complete", {"prompt": q, "context_files": ["*.py"], "difficulty": "easy"})
            for q in questions
        ]
        status = await c.call_tool("budget_status", {"scope": "session"})
    assert not any(r.is_error for r in results)
    u1, u2, u3 = (r.structured_content["usage"] for r in results)
    # A prefix never seen before is a one-off as far as anyone knows: no write premium.
    assert u1["cache_write_tokens"] == 0 and u1["cache_read_tokens"] == 0
    # Seen again within five minutes: a 5m write, which the third call reads.
    assert u2["cache_write_tokens"] > 2048 and u2["cache_read_tokens"] == 0
    assert u3["cache_read_tokens"] == u2["cache_write_tokens"] and u3["cache_write_tokens"] == 0
    sent = [c.body for c in message_calls(emulator)]
    assert "cache_control" not in str(sent[0])
    assert "'ttl': '5m'" in str(sent[1]) and "'ttl': '1h'" not in str(sent[1])
    ledger = rows(settings.db_path)
    assert ledger[2]["cache_read"] == u3["cache_read_tokens"]
    # Reads cost a tenth of input and writes 1.25x: the third call is several times cheaper.
    assert ledger[2]["cost_pusd"] * 4 < ledger[1]["cost_pusd"]
    assert "cached " in results[2].content[0].text.splitlines()[-1]  # type: ignore[union-attr]
    # The files were read by the server, never sent by the host: the prompt holds them.
    assert "def handler_2_399" in str(sent[-1]["messages"][0]["content"])
    # The cache's net gain, by hand: reads saved (input - read rate), minus 5m-write premiums.
    cached = [r for r in ledger if r["cache_write_5m"] or r["cache_read"]]
    assert len(cached) == 2 and {r["model"] for r in cached} == {"claude-haiku-5-5"}
    saved, premium = HAIKU["in"] - HAIKU["read"], HAIKU["w5m"] - HAIKU["in"]
    gains = [r["cache_read"] * saved - r["cache_write_5m"] * premium for r in cached]
    assert gains[0] < 0 < gains[1]  # the write cost a premium, the read repaid it several times
    assert [r["cache_gain_pusd"] for r in cached] == gains
    assert status.structured_content is not None
    assert status.structured_content["cache_net_gain_usd"] == usd_json(sum(gains))
    assert f"cache net +{fmt_usd(sum(gains))}" in status.content[0].text  # type: ignore[union-attr]
    # The ledger holds digests of the prefixes with the TTL placed on each use, never their text.
    uses = query(settings.db_path, "SELECT prefix_hash, ttl FROM prefix_uses ORDER BY id")
    assert [u["ttl"] for u in uses] == [None, "5m", "5m"] and len({u["prefix_hash"] for u in uses}) == 1
    assert "handler" not in str([tuple(u) for u in uses])


def _policy(path: Path, classify_tier: str, **budgets: Any) -> None:
    text = shipped("default.yaml").read_text()
    text = text.replace(
        "    when: {task: [classify, extract, summarize, trim]}\n    tier: cheap",
        f"    when: {{task: [classify, extract, summarize, trim]}}\n    tier: {classify_tier}",
    )
    for key, value in budgets.items():
        text = text.replace(f"  {key}: ", f"  {key}: {value} #", 1)
    path.write_text(text)


async def test_editing_the_policy_file_changes_the_next_decision_and_a_broken_edit_does_not(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    _policy(policy, "cheap")
    settings = make_settings(emulator.url, policy_path=policy)
    args = {"prompt": "Is this spam? 'WIN A PRIZE'", "task": "classify"}
    async with client(settings) as c:
        before = await c.call_tool("routed_complete", args)
        _policy(policy, "standard")
        os.utime(policy, ns=(1, 1))  # a rewrite within the same mtime tick must still be seen
        after = await c.call_tool("routed_complete", args)
        policy.write_text("name: broken\ntiers: [this is not a mapping\n")
        still = await c.call_tool("routed_complete", args)
        status = await c.call_tool("budget_status", {})
    assert before.structured_content["tier"] == "cheap"
    assert after.structured_content["tier"] == "standard"
    assert still.structured_content["tier"] == "standard"
    assert status.structured_content["policy_error"]
    assert str(policy) in status.structured_content["policy_error"]
    assert "policy file error" in status.content[0].text  # type: ignore[union-attr]


async def test_over_budget_with_refuse_is_a_clear_error_and_costs_nothing(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = tmp_path / "tight.yaml"
    _policy(policy, "cheap", session_usd="0.0001", on_exceed="refuse")
    settings = make_settings(emulator.url, policy_path=policy)
    async with client(settings) as c:
        result = await c.call_tool("routed_complete", {"prompt": "hello " * 50, "task": "classify"})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "session budget" in text and "left" in text
    assert message_calls(emulator) == []
    assert rows(settings.db_path) == []


async def test_downgrade_picks_a_cheaper_tier_that_fits_the_headroom(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = tmp_path / "down.yaml"
    _policy(policy, "cheap", session_usd="0.05")  # premium's worst case (8192 out × $20/M) is $0.16
    settings = make_settings(emulator.url, policy_path=policy)
    async with client(settings) as c:
        result = await c.call_tool("routed_complete", {"prompt": "Prove it.", "difficulty": "hard"})
    assert not result.is_error, result.content
    assert result.structured_content["tier"] in ("cheap", "standard")
    assert "downgraded from premium" in result.content[0].text  # type: ignore[union-attr]
    # The premium hold was refused before anything was sent: one request paid, one row, no hold left.
    assert len([r for r in emulator.state.calls("/v1/messages", "POST") if r.status == 200]) == 1
    assert len(rows(settings.db_path)) == 1
    assert query(settings.db_path, "SELECT id FROM reservations") == []


async def test_without_an_api_key_the_tool_says_how_to_fix_it(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(None)
    async with client(settings) as c:
        tools = await c.list_tools()
        result = await c.call_tool("routed_complete", {"prompt": "hi"})
    assert {t.name for t in tools.tools} >= {"routed_complete", "budget_status"}
    assert result.is_error
    # The model reads offload's own sentence, not the SDK's "Error executing tool …" wrapper.
    assert result.content[0].text.startswith("ANTHROPIC_API_KEY is not set")  # type: ignore[union-attr]


async def test_overloaded_api_becomes_a_clear_error_and_releases_the_hold(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    script = [{"match": "busy", "error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}}]
    with running(script=script) as emu:
        settings = make_settings(emu.url)
        async with client(settings) as c:
            result = await c.call_tool("routed_complete", {"prompt": "busy day", "task": "classify"})
        attempts = emu.state.calls("/v1/messages")
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "529" in text and "overloaded" in text.lower() and "batch_submit" in text
    assert len(attempts) == 3  # the SDK's two retries, then a clear error; not retried forever
    conn = sqlite3.connect(settings.db_path)
    assert conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0] == 0
    conn.close()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"prompt": "x", "context_files": ["/etc/passwd"]}, "OFFLOAD_ROOTS"),
        ({"prompt": "x", "must_match": "(unclosed"}, "must_match"),
        ({"prompt": "x", "response_schema": {"type": "no-such-type"}}, "response_schema"),
        ({"prompt": "x", "tier": "galactic"}, "tier="),
        ({"prompt": "   "}, "prompt is empty"),
    ],
)
async def test_bad_input_is_refused_before_any_api_call(
    emulator: Any, make_settings: Callable[..., Settings], args: dict[str, Any], needle: str
) -> None:
    async with client(make_settings(emulator.url)) as c:
        result = await c.call_tool("routed_complete", args)
        ok = await c.call_tool("budget_status", {})
    assert result.is_error
    assert needle in result.content[0].text  # type: ignore[union-attr]
    assert not ok.is_error
    assert emulator.state.calls("/v1/messages") == []


async def test_triage_sets_the_difficulty_when_the_caller_gives_none(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    script = [{"model": "claude-haiku-5-5", "match": "Task to rate", "reply": "hard"}]
    with running(script=script) as emu:
        settings = make_settings(emu.url, policy_path=shipped("quality.yaml"))
        async with client(settings) as c:
            result = await c.call_tool("routed_complete", {"prompt": "Design a lock-free queue."})
        calls = message_calls(emu)
    assert not result.is_error, result.content
    data = result.structured_content
    assert data is not None
    assert data["triaged_difficulty"] == "hard" and data["tier"] == "premium"
    assert [c.model for c in calls] == ["claude-haiku-5-5", "claude-opus-5-5"]
    ledger = rows(settings.db_path)
    assert [(r["outcome"], r["baseline_pusd"] > 0) for r in ledger] == [("triage", False), ("ok", True)]
    # The footer's cost covers the triage call too.
    assert Decimal(data["cost_usd"]) * 10**12 == sum(r["cost_pusd"] for r in ledger)


async def test_json_looking_text_arguments_arrive_as_the_text_sent(
    emulator: Any, make_settings: Callable[..., Settings]
) -> None:
    # mcp pre-parses JSON-looking strings for non-`str` parameters; offload turns them back.
    async with client(make_settings(emulator.url)) as c:
        result = await c.call_tool(
            "routed_complete",
            {"prompt": "Give me 3 digits", "system": '{"format": "digits"}', "must_match": "[0-9]", "task": "1"},
        )
    assert not result.is_error, result.content
    body = emulator.state.calls("/v1/messages")[-1].body
    assert '{"format": "digits"}' in body["system"][0]["text"]


async def test_budget_status_does_not_count_a_dead_process_hold_as_in_flight(
    make_settings: Callable[..., Settings],
) -> None:
    import subprocess
    import sys

    from offload.infra.ledger import budgets
    from offload.infra.ledger.db import Ledger

    settings = make_settings(None)
    ledger = await Ledger.open(settings.db_path)
    await budgets.reserve(ledger, "test-session", 5 * 10**10, budgets.BudgetLimits())
    await ledger.close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    conn = sqlite3.connect(settings.db_path)
    with conn:
        conn.execute("UPDATE reservations SET pid = ?", (int(dead.stdout),))
    conn.close()
    async with client(settings) as c:
        status = await c.call_tool("budget_status", {})
    assert status.structured_content["scopes"]["daily"]["reserved_usd"] == "0"
    assert "reserved" not in status.content[0].text  # type: ignore[union-attr]


async def test_past_warn_at_every_spending_tool_says_so(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = tmp_path / "warn.yaml"
    _policy(policy, "cheap", session_usd="0.01", warn_at="[0.001]")
    settings = make_settings(emulator.url, policy_path=policy)
    (tmp_path / "notes.md").write_text("\n\n".join(f"Paragraph {n}: the deploy took 40 s." for n in range(400)))
    async with client(settings) as c:
        routed = await c.call_tool("routed_complete", {"prompt": "Label: 'refund please'", "task": "classify"})
        summary = await c.call_tool("summarize_context", {"paths": ["notes.md"], "target_tokens": 100})
        local = await c.call_tool("trim_result", {"content": "a\n" * 50})
    assert "session budget" in routed.content[0].text.splitlines()[-1]  # type: ignore[union-attr]
    assert not summary.is_error, summary.content
    assert "[budget: session budget" in summary.content[0].text  # type: ignore[union-attr]
    assert summary.structured_content["budget_warnings"]
    assert "budget" not in local.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ({"prompt": "x", "difficulty": "extreme"}, ["difficulty", "'easy', 'medium' or 'hard'", "got 'extreme'"]),
        ({"difficulty": "easy"}, ["prompt is empty", "redo_of"]),
        ({"prompt": "x", "files": ["a.py"]}, ["unknown argument(s) files", "context_files"]),
    ],
)
async def test_argument_mistakes_read_as_instructions(
    make_settings: Callable[..., Settings], args: dict[str, Any], needles: list[str]
) -> None:
    async with client(make_settings(None)) as c:
        result = await c.call_tool("routed_complete", args)
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    for needle in needles:
        assert needle in text
    assert "pydantic" not in text and "validation error for" not in text


async def test_a_schema_call_reads_the_cached_system_prompt(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # The schema's instruction is a block of its own after the shared system prompt: two calls
    # with different schemas still share (and read) one cached system prefix. The first call's
    # prefix is new (no write); the second use shows reuse (a write), the third reads it.
    system = "You extract fields from invoices. " + "Amounts are in the invoice currency. " * 400
    script = [{"match": "invoice", "reply": '{"total": 42, "currency": "EUR"}'}]
    with running(script=script) as emu:
        settings = make_settings(emu.url)
        async with client(settings) as c:
            for required in (["total"], ["currency"], ["total", "currency"]):
                result = await c.call_tool(
                    "routed_complete",
                    {
                        "prompt": "From this invoice: TOTAL 42 EUR",
                        "system": system,
                        "task": "extract",
                        "response_schema": {"type": "object", "required": required},
                    },
                )
                assert not result.is_error, result.content
        calls = message_calls(emu)
    new, first, second = calls
    assert "cache_control" not in new.body["system"][0] and not new.usage.get("cache_creation_input_tokens")
    assert first.body["system"][0]["text"] == system and "cache_control" in first.body["system"][0]
    assert "JSON Schema" in first.body["system"][1]["text"] and "cache_control" not in first.body["system"][1]
    assert first.body["system"][1] != second.body["system"][1]
    assert first.usage["cache_creation_input_tokens"] > 2048
    assert second.usage["cache_read_input_tokens"] == first.usage["cache_creation_input_tokens"]


async def test_a_call_without_a_task_is_routed_and_learned_by_the_task_its_prompt_names(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # The shipped default sends classify/extract/summarize/trim work to the cheap tier and the
    # rest to standard: a host that leaves out `task` but writes "Classify ..." gets the cheap tier.
    async with client(make_settings(emulator.url)) as c:
        named = await c.call_tool("routed_complete", {"prompt": "Classify this ticket: the refund never arrived."})
        other = await c.call_tool("routed_complete", {"prompt": "Why does the refund job classify tickets twice?"})
        stated = await c.call_tool("routed_complete", {"prompt": "Classify this ticket", "task": "code"})
        blank = await c.call_tool("routed_complete", {"prompt": "Classify this one", "task": ""})
        templated = await c.call_tool(
            "batch_submit", {"template": "Classify this ticket: {item}", "items": ["refund late", "login fails"]}
        )
    assert not templated.is_error, templated.content
    tiers = [(r.structured_content or {}).get("tier") for r in (named, other, stated, blank)]
    assert tiers == ["cheap", "standard", "standard", "cheap"]
    assert (named.structured_content or {})["rule"].startswith("rules[0] mechanical")
    db = make_settings(emulator.url).db_path
    families = [r["family"] for r in query(db, "SELECT family FROM calls ORDER BY ts, rowid")]
    assert families == ["classify", "*", "code", "classify"]
    quality = query(db, "SELECT quality FROM batches")[0]["quality"]
    assert json.loads(quality)["task"] == "classify"  # the batch's follow-up rounds and learning see it too


async def test_task_inference_off_leaves_an_unlabelled_call_on_the_default_tier(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(shipped("default.yaml").read_text() + "\ninfer_task: false\n")
    async with client(make_settings(emulator.url, policy_path=policy)) as c:
        result = await c.call_tool("routed_complete", {"prompt": "Classify this ticket: the refund never arrived."})
    assert (result.structured_content or {})["tier"] == "standard"
