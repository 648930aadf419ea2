"""A call sent without a task label takes one from its prompt's first word only where that label is
what routes it: otherwise it must learn, and be capped, as the unlabelled call it is.

Through the real MCP client, server, SDK and emulator. The scripts answer "ticket" prompts with one
word, so the label's learned output cap is a few tokens, and everything long with a long answer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from helpers import query
from offload.config.settings import Settings, shipped
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

LONG = " ".join(["The outage began when the connection pool was exhausted by retries."] * 40)
SCRIPT = [
    {"match": "^Task to rate:[\\s\\S]*outage", "reply": "hard", "output_tokens": 1},
    {"match": "^Task to rate:", "reply": "easy", "output_tokens": 1},
    {"match": "ticket", "reply": "billing"},
    {"match": "outage|Explain", "reply": LONG},
]


async def _call(c: Client, args: dict[str, Any]) -> dict[str, Any]:
    result = await c.call_tool("routed_complete", args)
    assert not result.is_error, result.content
    data = dict(result.structured_content or {})
    data["text"] = result.content[0].text  # type: ignore[union-attr]
    return data


async def _short_answers(c: Client, label: str) -> None:
    """Five one-word answers for `label` (its output cap becomes a few tokens), five long others."""
    for i in range(5):
        await _call(c, {"prompt": f"{label} this ticket #{i}: card charged twice"})
        await _call(c, {"prompt": f"Explain item {i} of the design"})


async def _asked_after_short_answers(
    running: Callable[..., Any], settings: Callable[[str], Settings], label: str, args: dict[str, Any]
) -> tuple[dict[str, Any], Path]:
    """`args` sent after `_short_answers(label)`, on a fresh emulator and ledger: (answer, ledger path)."""
    with running(script=SCRIPT) as emu:
        made = settings(emu.url)
        async with Client(build_server(made)) as c:
            await _short_answers(c, label)
            return await _call(c, args), made.db_path


def _last_call(db: Path) -> tuple[str, str]:
    row = query(db, "SELECT family, tier FROM calls ORDER BY ts DESC, rowid DESC LIMIT 1")[0]
    return str(row["family"]), str(row["tier"])


async def test_a_stated_difficulty_routes_and_the_label_is_not_taken(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # default.yaml: the `hard` rule routes it; the summarize family's short answers must not cut it.
    args = {"prompt": "Summarize the root cause of the outage, with reasoning", "difficulty": "hard"}
    got, db = await _asked_after_short_answers(running, make_settings, "Summarize", args)
    assert got["tier"] == "premium" and LONG in got["text"]
    assert _last_call(db) == ("*@hard", "premium")


async def test_a_prompt_matches_rule_routes_and_the_label_is_not_taken(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # quality.yaml sends reasoning work to premium by a prompt_matches rule below its task rule.
    def quality(url: str) -> Settings:
        return make_settings(url, policy_path=shipped("quality.yaml"))

    args = {"prompt": "Classify the root cause of this production outage from these logs: ..."}
    got, db = await _asked_after_short_answers(running, quality, "Classify", args)
    assert got["tier"] == "premium" and LONG in got["text"]
    assert _last_call(db)[0] == "*"


async def test_learning_does_not_pull_an_unlabelled_call_down_by_a_label_it_only_starts_with(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    text = shipped("quality.yaml").read_text()
    policy = tmp_path / "q.yaml"
    policy.write_text(text + "\nlearning:\n  enabled: true\n  min_samples: 3\n  explore: 0\n")
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url, policy_path=policy)
        async with Client(build_server(settings)) as c:
            for i in range(4):  # classify is adequate on the cheap tier
                await _call(c, {"prompt": f"Classify this ticket #{i}", "task": "classify", "must_match": "billing"})
            got = await _call(c, {"prompt": "Classify the root cause of this production outage from these logs: ..."})
    assert got["tier"] == "premium", got["rule"]


async def test_where_triage_guesses_the_difficulty_no_label_is_taken(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # A policy with triage on: the call is triaged as without inference, `hard` sends it to the top
    # tier, and the classify family's one-word answers do not cut that answer.
    policy = tmp_path / "t.yaml"
    policy.write_text(
        shipped("default.yaml").read_text().replace("triage:\n  enabled: false", "triage:\n  enabled: true")
    )
    args = {"prompt": "Classify the failures in this outage log and explain each one: ..."}
    got, _ = await _asked_after_short_answers(
        running, lambda url: make_settings(url, policy_path=policy), "Classify", args
    )
    assert (got["triaged_difficulty"], got["tier"]) == ("hard", "premium")
    assert LONG in got["text"]


async def test_the_top_rung_is_never_cut_at_a_learned_output_cap(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # Even for a labelled call: a cut answer on the top rung would be the host's answer, and its redo
    # would be refused. Lower rungs are still cut (and climb).
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            await _short_answers(c, "Classify")
            await _short_answers(c, "Extract")
            top = await _call(c, {"prompt": "Explain the outage in full", "task": "classify", "tier": "premium"})
            low = await _call(c, {"prompt": "Explain the outage in full", "task": "extract", "tier": "cheap"})
    assert next(a["failed"] for a in low["attempts"]) == "max_tokens"  # cut on cheap, then climbed
    assert LONG in low["text"]
    assert LONG in top["text"] and [a["tier"] for a in top["attempts"]] == ["premium"]


async def test_a_large_prompt_is_judged_at_its_counted_size(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # ~250 KB of log: ~250k tokens by the byte bound (the long-input rule, > 150k, would match
    # without the label), ~92k counted (it does not). The rules see the counted size, so must this.
    log = "".join(
        f"2026-11-29 12:00:{i % 60:02d} INFO worker-{i % 7} request {i} served in 12 ms\n" for i in range(4000)
    )
    (tmp_path / "app.log").write_text(log)
    with running() as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            got = await _call(c, {"prompt": "Summarize this log", "context_files": ["app.log"]})
    assert got["tier"] == "cheap" and got["rule"].startswith("rules[0] mechanical")
    assert _last_call(settings.db_path) == ("summarize", "cheap")


async def test_a_forced_tier_takes_no_label(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # Nothing routes by the label then, and classify's one-word cap would cut the answer and climb
    # to a tier the caller did not ask for.
    args = {"prompt": "Classify the failures in this outage log, explain each", "tier": "standard"}
    got, db = await _asked_after_short_answers(running, make_settings, "Classify", args)
    assert [a["tier"] for a in got["attempts"]] == ["standard"] and LONG in got["text"]
    assert _last_call(db) == ("*", "standard")


async def test_a_first_try_downgraded_to_fit_the_budget_is_not_cut(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # session_usd 0.10: the hard call's premium worst case does not fit, so it runs on standard;
    # premium is then out of reach, and a standard answer cut at the output cap could not climb.
    policy = tmp_path / "p.yaml"
    policy.write_text(shipped("default.yaml").read_text().replace("session_usd: 2", "session_usd: 0.10"))
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url, policy_path=policy)
        async with Client(build_server(settings)) as c:
            for i in range(5):
                await _call(c, {"prompt": f"Classify this ticket #{i}: card charged twice"})
            got = await _call(c, {"prompt": "Explain the outage, with reasoning", "difficulty": "hard"})
    assert got["tier"] == "standard" and "downgraded" in got["text"]
    assert [a["failed"] for a in got["attempts"]] == [None] and LONG in got["text"]


async def test_a_judging_host_stops_getting_the_lower_tier_first_once_it_redoes_it(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # judged_start tries standard before premium while that pays on average. It must price both at
    # the same answer length: priced uncut on premium, standard always looked worth a try.
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            first = await _call(c, {"prompt": "Classify this ticket #0: card charged twice"})
            for i in range(1, 5):
                await _call(c, {"prompt": f"Classify this ticket #{i}: card charged twice"})
            await c.call_tool("routed_complete", {"redo_of": first["call_id"]})  # the host judges
            starts = []
            for i in range(8):
                got = await _call(c, {"prompt": f"Explain outage {i} and prove the fix", "difficulty": "hard"})
                starts.append(got["attempts"][0]["tier"])
                if got["tier"] == "standard":
                    redo = await c.call_tool("routed_complete", {"redo_of": got["call_id"]})
                    assert not redo.is_error, redo.content
    assert starts.count("standard") <= 2, starts
