"""Learning the starting tier per task family from the host's verdicts, through the real MCP client,
the emulator and one shared SQLite file (also across two stdio server processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from offload.config.settings import Settings, shipped
from offload.infra.ledger import learning
from offload.infra.ledger import windows as w
from offload.infra.ledger.db import Ledger
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

VENV_BIN = Path(sys.executable).parent
OFFLOAD = str(VENV_BIN / "offload")


def policy_text(explore: str) -> str:
    # The shipped default with its learning section switched on (small numbers so a test sees it move).
    base = shipped("default.yaml").read_text()
    section = (
        "learning:\n  enabled: true\n  target: 0.9\n  min_samples: 2\n  window: 3\n"
        f"  explore: {explore}\n  seed: 7\n  judged_trials: false\n"
    )
    start = base.index("learning:\n")
    end = base.index("\nbatch:", start)
    return base[:start] + section + base[end:]


def script(wrong_cheap_answers: int) -> list[dict[str, Any]]:
    return [
        {"model": "claude-haiku-5-5", "match": "capital", "reply": "Sydney.", "times": wrong_cheap_answers},
        {"match": "capital", "reply": "Canberra."},
    ]


async def ask(c: Client, redo_if_wrong: bool = True) -> dict[str, Any]:
    """A judging host: it reads the answer and asks for a redo when it is wrong."""
    r = await c.call_tool("routed_complete", {"prompt": "What is the capital of Australia?", "task": "summarize"})
    assert not r.is_error, r.content
    data = dict(r.structured_content or {})
    if redo_if_wrong and r.content[0].text.startswith("Sydney"):  # type: ignore[union-attr]
        redo = await c.call_tool("routed_complete", {"redo_of": data["call_id"]})
        assert not redo.is_error, redo.content
        data["redone_to"] = (redo.structured_content or {})["tier"]
    return data


async def test_start_tier_moves_up_after_verdicts_and_back_down_after_exploration(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = tmp_path / "learn.yaml"
    policy.write_text(policy_text("0"))
    with running(script=script(wrong_cheap_answers=2)) as emu:
        settings = make_settings(emu.url, policy_path=policy)
        async with Client(build_server(settings)) as c:
            first, second = await ask(c), await ask(c)
            assert (first["tier"], first["redone_to"]) == ("cheap", "standard")
            assert (second["tier"], second["redone_to"]) == ("cheap", "standard")
            # two verdicts against cheap answers of this family: it now starts on standard
            third = await ask(c)
            assert third["tier"] == "standard" and third["rule"].startswith("learned"), third
            assert "redone_to" not in third
            # Haiku has got better (the script's wrong answers are used up). Exploration sends
            # some calls one tier lower; their answers stand, so the family comes back down.
            policy.write_text(policy_text("0.9"))
            tiers = [(await ask(c))["tier"] for _ in range(8)]
        explain = subprocess.run(
            [
                OFFLOAD,
                "policy",
                "explain",
                str(policy),
                "capital?",
                "--task",
                "summarize",
                "--db",
                str(settings.db_path),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    assert "cheap" in tiers and tiers[-1] == "cheap", tiers
    assert tiers[-3:] == ["cheap"] * 3, tiers
    assert "summarize: adequate cheap 3/3" in explain and "<- this prompt" in explain, explain
    assert "tier       cheap" in explain, explain

    reset = subprocess.run(
        [OFFLOAD, "policy", "reset-learning", "--family", "summarize", "--db", str(settings.db_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert reset.startswith("forgot ") and " of summarize" in reset
    after = subprocess.run(
        [OFFLOAD, "policy", "explain", str(policy), "capital?", "--task", "summarize", "--db", str(settings.db_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "summarize:" not in after


async def test_two_server_processes_share_what_they_learned(running: Callable[..., Any], tmp_path: Path) -> None:
    policy = tmp_path / "learn.yaml"
    policy.write_text(policy_text("0"))
    with running(script=script(wrong_cheap_answers=100)) as emu:

        def params(session: str) -> StdioServerParameters:
            env = {
                "HOME": str(tmp_path),
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "OFFLOAD_DB": str(tmp_path / "ledger.db"),
                "OFFLOAD_ROOTS": str(tmp_path),
                "OFFLOAD_POLICY": str(policy),
                "OFFLOAD_SESSION": session,
                "ANTHROPIC_API_KEY": "test-key",
                "ANTHROPIC_BASE_URL": emu.url,
            }
            return StdioServerParameters(command=OFFLOAD, args=["serve"], env=env)

        with (tmp_path / "err.log").open("w") as err:
            async with (
                Client(stdio_client(params("judge-a"), errlog=err), read_timeout_seconds=60) as a,
                Client(stdio_client(params("other-b"), errlog=err), read_timeout_seconds=60) as b,
            ):
                # before anything is learned, process B starts this family on the rules' tier
                assert (await ask(b, redo_if_wrong=False))["tier"] == "cheap"
                await ask(a)
                await ask(a)
                # process A's verdicts reach process B through the ledger
                learned = await ask(b, redo_if_wrong=False)
    assert learned["tier"] == "standard" and learned["rule"].startswith("learned"), learned


async def test_a_runaway_answer_is_cut_at_twice_the_longest_answer_the_family_accepted(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    replies = [
        {"match": "runaway", "reply": "word " * 50, "output_tokens": 100_000},
        {"match": "label", "reply": "billing", "output_tokens": 40},
    ]
    with running(script=replies) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            for i in range(5):  # the shipped default trusts a family's record after 5 answers
                await c.call_tool("routed_complete", {"prompt": f"label ticket {i}", "task": "classify"})
            cut = await c.call_tool("routed_complete", {"prompt": "runaway ticket", "task": "classify"})
            own = await c.call_tool(
                "routed_complete", {"prompt": "runaway again", "task": "classify", "max_tokens": 500}
            )
        sent = [r.body["max_tokens"] for r in emu.state.calls("/v1/messages") if r.status == 200]
    assert sent[:5] == [4096] * 5
    assert sent[5] == 81  # 2 x 40 + 1: a runaway answer costs 81 output tokens, not 4,096
    assert sent[6] == 8192  # the escalation after it gets the tier's full length
    assert cut.structured_content["attempts"][0]["failed"] == "max_tokens"
    assert sent[-1] == 500 and own.structured_content is not None  # the caller's own max_tokens stands


async def test_a_new_tasks_runaway_answer_is_cut_by_every_tasks_record_and_difficulty_does_not_split_it(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """The costliest runaways come before a task has 5 answers of its own: the longest answer of
    any task bounds them then; and a task's answers at one stated difficulty bound it at another."""
    replies = [
        {"match": "runaway", "reply": "word " * 50, "output_tokens": 100_000},
        {"match": "label", "reply": "billing", "output_tokens": 40},
        {"match": "summary", "reply": "short summary", "output_tokens": 90},
    ]
    with running(script=replies) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            for i in range(3):
                await c.call_tool("routed_complete", {"prompt": f"label ticket {i}", "task": "classify"})
            for i in range(2):
                await c.call_tool("routed_complete", {"prompt": f"summary {i}", "task": "summarize"})
            # 'extract' has no record: 5 answers of other tasks, the longest 90 tokens
            first = await c.call_tool("routed_complete", {"prompt": "runaway invoice", "task": "extract"})
            for i in range(3):
                await c.call_tool(
                    "routed_complete", {"prompt": f"label more {i}", "task": "classify", "difficulty": "easy"}
                )
            # classify has 6 answers at two difficulties (3 unstated, 3 easy): its own record of 40 tokens
            hard = await c.call_tool(
                "routed_complete", {"prompt": "runaway ticket", "task": "classify", "difficulty": "medium"}
            )
        calls = [r.body for r in emu.state.calls("/v1/messages") if r.status == 200]
    sent = [b["max_tokens"] for b in calls]
    assert sent[5] == 181  # 2 x 90 + 1, not the tier's 4,096
    assert first.structured_content is not None
    assert first.structured_content["attempts"][0]["failed"] == "max_tokens"
    assert hard.structured_content is not None
    assert hard.structured_content["attempts"][0]["failed"] == "max_tokens"
    # classify's own record (40 tokens) bounds its medium-difficulty try, whatever tier that starts on
    tries = [b["max_tokens"] for b in calls if "runaway ticket" in json.dumps(b["messages"])]
    assert tries[0] == 81, sent


async def test_an_answer_written_without_its_task_is_read_by_its_task(ledger: Ledger) -> None:
    # A server of the previous release sharing the ledger (or `offload ledger migrate` copying an
    # older one) writes answers without `task`: migration 0180's trigger gives each the task of its
    # family, so the task's signals count it.
    async with ledger.write() as conn:
        await conn.execute(
            "INSERT INTO calls (call_id, ts, session_id, family, tier, final_key, out_tokens, ended)"
            " VALUES ('c1', ?, 's', 'rare@hard', 'cheap', NULL, 77, 1)",
            (w.iso(w.utcnow()),),
        )
    signals = await learning.signals(ledger.quick, "s", "rare", 50, 250, 1)
    tasks = await ledger.conn.execute_fetchall("SELECT task FROM calls")
    assert [tuple(r) for r in tasks] == [("rare",)]
    assert (signals.answers, signals.longest) == (1, 77)
