"""Where `redo_of` meets tenancy, concurrency, budgets and a ledger that cannot take a write.

Real parts: the mcp Client (in-memory, or streamable HTTP with two bearer tokens), the SDK over
HTTP to the emulator, real SQLite files; the locked ledger is another real connection holding
SQLite's write lock.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from helpers import ledger_rows, query, uvicorn_serving
from offload.config.settings import Settings, shipped
from offload.infra.ledger.journal import pending
from offload.mcp.http import build_http_app
from offload.mcp.server import build_server
from offload.metering.metered import collecting_notes
from offload.services import routed
from offload.services.routed import RoutedArgs
from offload.state import open_state
from reliability.conftest import result_text
from test_tenancy_http import TOKEN_A, TOKEN_B, _settings, client

pytestmark = pytest.mark.anyio

SCRIPT = [
    {"model": "claude-haiku-5-5", "match": "capital", "reply": "The capital of Australia is Sydney."},
    {"model": "claude-sonnet-5-5", "match": "capital", "reply": "The capital of Australia is Canberra."},
    {"model": "claude-opus-5-5", "match": "capital", "reply": "Canberra."},
]
ASK = {"prompt": "What is the capital of Australia?", "task": "summarize"}  # starts on the cheap tier


def served(emu: Any) -> list[Any]:
    return [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_token_b_cannot_redo_a_call_token_a_got(running: Callable[..., Any], tmp_path: Path, mode: str) -> None:
    with running(script=SCRIPT) as emu, uvicorn_serving(build_http_app(_settings(tmp_path, emu.url))) as url:
        async with client(url, TOKEN_A, mode=mode) as a:
            first = await a.call_tool("routed_complete", ASK)
            assert not first.is_error, result_text(first)
            call_id = first.structured_content["call_id"]
            async with client(url, TOKEN_B, mode=mode) as b:
                stolen = await b.call_tool("routed_complete", {"redo_of": call_id, "reason": "B says so"})
            # A's own redo still works afterwards: B's attempt judged and consumed nothing.
            own = await a.call_tool("routed_complete", {"redo_of": call_id})
        n_served = len(served(emu))
    assert stolen.is_error and "unknown or expired" in result_text(stolen), result_text(stolen)
    assert not own.is_error and own.structured_content["redo_of"] == call_id, result_text(own)
    assert n_served == 2  # A's call and A's redo; B's reached no API
    rows = query(tmp_path / "ledger.db", "SELECT call_id, verdict, redo_of, session_id FROM calls ORDER BY ts, rowid")
    assert [(r["verdict"], r["redo_of"]) for r in rows] == [("redone", None), (None, call_id)]
    assert all(":token-1" in r["session_id"] for r in rows)


async def test_two_concurrent_redos_of_one_call_are_all_billed_and_recorded(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(script=SCRIPT, faults="latency=300ms") as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            first = await c.call_tool("routed_complete", ASK)
            call_id = first.structured_content["call_id"]
            results: list[Any] = []

            async def redo() -> None:
                results.append(await c.call_tool("routed_complete", {"redo_of": call_id}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(redo)
                tg.start_soon(redo)
            again = await c.call_tool("routed_complete", {"redo_of": call_id})
            status = await c.call_tool("budget_status", {"scope": "session"})
        calls = served(emu)
    db = settings.db_path
    rows = ledger_rows(db)
    ok = [r for r in results if not r.is_error]
    # Every answer the API served is one ledger row, and every tool result's cost is in it.
    assert len(rows) == len(calls) == 1 + len(ok)
    tool_total = sum(Decimal(r.structured_content["cost_usd"]) for r in [first, *ok])
    assert tool_total * 10**12 == sum(int(r["cost_pusd"]) for r in rows)
    assert Decimal(status.structured_content["cost_usd"]) == tool_total
    verdicts = query(db, "SELECT call_id, verdict, redo_of FROM calls ORDER BY ts, rowid")
    assert [v["verdict"] for v in verdicts if v["call_id"] == call_id] == ["redone"]
    # One host question stands for one baseline call: the redone answer lost its baseline, and
    # only one answer to it may carry one.
    with_baseline = [r for r in rows if int(r["baseline_pusd"]) > 0]
    assert len(with_baseline) == 1, [(r["model"], r["baseline_pusd"]) for r in rows]
    # The second concurrent redo is refused before any money moves, and says why.
    assert len(ok) == 1, [result_text(r) for r in results]
    (refused,) = [r for r in results if r.is_error]
    assert "already" in result_text(refused) and call_id in result_text(refused), result_text(refused)
    # Later, the host is pointed at the redo's own id rather than paying for the same tier again.
    (done,) = ok
    assert again.is_error and f"redo_of={done.structured_content['call_id']}" in result_text(again)


def _budget_policy(tmp_path: Path, session_usd: str) -> Path:
    path = tmp_path / "policy.yaml"
    shutil.copy(shipped("default.yaml"), path)
    text = path.read_text().replace("session_usd: 2\n", f'session_usd: "{session_usd}"\n')
    path.write_text(text.replace("on_exceed: downgrade", "on_exceed: refuse"))
    return path


async def test_a_redo_the_budget_refuses_leaves_the_first_answer_standing_and_redoable(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url, policy_path=_budget_policy(tmp_path, "0.0005"))
        async with Client(build_server(settings)) as c:
            first = await c.call_tool("routed_complete", {**ASK, "max_tokens": 50})
            assert not first.is_error, result_text(first)
            call_id = first.structured_content["call_id"]
            refused = await c.call_tool("routed_complete", {"redo_of": call_id})
            # The refused redo released its claim: asking again meets the budget, not "already running".
            again = await c.call_tool("routed_complete", {"redo_of": call_id})
        n_served = len(served(emu))
    for r in (refused, again):
        assert r.is_error and "budget" in result_text(r), result_text(r)
    assert n_served == 1
    (row,) = ledger_rows(settings.db_path)
    assert int(row["baseline_pusd"]) > 0  # the host keeps its first answer, and its baseline
    assert [r["verdict"] for r in query(settings.db_path, "SELECT verdict FROM calls")] == [None]
    assert query(settings.db_path, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0


async def test_a_redo_is_never_downgraded_to_the_tier_the_host_judged_wrong(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Room for a cheap answer (worst case ~$0.002), not for a standard one (~$0.08).
    policy = _budget_policy(tmp_path, "0.01")
    policy.write_text(policy.read_text().replace("on_exceed: refuse", "on_exceed: downgrade"))
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url, policy_path=policy)
        async with Client(build_server(settings)) as c:
            first = await c.call_tool("routed_complete", ASK)
            assert not first.is_error and first.structured_content["tier"] == "cheap", result_text(first)
            refused = await c.call_tool("routed_complete", {"redo_of": first.structured_content["call_id"]})
        models = [r.model for r in served(emu)]
    text = result_text(refused)
    assert refused.is_error and "a redo on tier 'standard'" in text and "the earlier answer stands" in text, text
    assert models == ["claude-haiku-5-5"]  # nothing paid again for the tier judged wrong
    assert [r["verdict"] for r in query(settings.db_path, "SELECT verdict FROM calls")] == [None]
    assert int(ledger_rows(settings.db_path)[0]["baseline_pusd"]) > 0


async def test_a_redo_paid_while_the_ledger_is_locked_still_reaches_the_host(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(script=SCRIPT, faults="latency=500ms") as emu:
        settings = make_settings(emu.url)
        db = settings.db_path
        async with open_state(settings) as state:
            first = await routed.routed_complete(state, "s", RoutedArgs(prompt=ASK["prompt"], task=ASK["task"]))
            call_id = first.data["call_id"]
            # Keep waits short: the point is the lock held for the whole rest of the call.
            state.ledger.wconn.busy_timeout_ms = 20
            state.ledger.busy_retries = 1
            other = sqlite3.connect(db, isolation_level=None, timeout=0.05)
            out: list[Any] = []

            async def redo() -> None:
                with collecting_notes() as notes:
                    out.append(await routed.routed_complete(state, "s", RoutedArgs(redo_of=call_id)))
                out.append(notes)

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(redo)
                    with anyio.fail_after(10):  # the redo's hold is taken: the API call is under way
                        while not query(db, "SELECT id FROM reservations"):
                            await anyio.sleep(0.02)
                    other.execute("BEGIN IMMEDIATE")  # another process writes for a long time
            finally:
                if other.in_transaction:
                    other.execute("ROLLBACK")
                other.close()
            answer, notes = out
            assert answer.text.startswith("The capital of Australia is Canberra.")
            assert answer.data["redo_of"] == call_id and answer.data["cost_usd"] != "0"
            assert any("recorded on the next start" in n for n in notes), notes
            # The paid redo answer waits in the journal, its hold still counted against the budget.
            assert len(ledger_rows(db)) == 1 and pending(db) == 1
            assert len(query(db, "SELECT id FROM reservations")) == 1
            # The lock is gone: this server's next recorded call records the spooled one too,
            # without waiting for a restart.
            later = await routed.routed_complete(state, "s", RoutedArgs(prompt="Another capital question?"))
            assert pending(db) == 0 and query(db, "SELECT id FROM reservations") == []
            rows = ledger_rows(db)
            assert len(rows) == len(served(emu)) == 3
            reported = sum(int(Decimal(o.data["cost_usd"]) * 10**12) for o in [first, answer, later])
            assert sum(int(r["cost_pusd"]) for r in rows) == reported
        async with open_state(settings):  # a later start finds nothing left to replay
            pass
        assert len(ledger_rows(db)) == 3


async def test_a_call_id_another_session_holds_is_drawn_again_not_lost_or_shared(
    running: Callable[..., Any], make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ids are 32 random bits in a ledger every session shares: at 100k answers a clash is likely.
    # Forced here by replaying offload's own id draw (the SDK and the ledger stay real).
    draws = iter(["rc_0000000a", "rc_0000000a", "rc_0000000b", "rc_0000000c"])
    monkeypatch.setattr(routed, "new_call_id", lambda: next(draws))
    with running(script=SCRIPT) as emu:
        settings = make_settings(emu.url)
        async with open_state(settings) as state:
            mine = await routed.routed_complete(state, "alice", RoutedArgs(prompt=ASK["prompt"], task=ASK["task"]))
            theirs = await routed.routed_complete(state, "bob", RoutedArgs(prompt=ASK["prompt"], task=ASK["task"]))
            redo = await routed.routed_complete(state, "bob", RoutedArgs(redo_of=theirs.data["call_id"]))
        n_served = len(served(emu))
    assert (mine.data["call_id"], theirs.data["call_id"]) == ("rc_0000000a", "rc_0000000b")
    assert redo.data["redo_of"] == "rc_0000000b" and n_served == 3
    rows = query(settings.db_path, "SELECT call_id, session_id, verdict FROM calls WHERE redo_of IS NULL ORDER BY ts")
    # Bob's verdict landed on Bob's call; Alice's answer is untouched.
    assert [tuple(r) for r in rows] == [("rc_0000000a", "alice", None), ("rc_0000000b", "bob", "redone")]
