"""Collection under stress: two processes' collectors on one ledger, and an interrupted submission."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from helpers import target_rows
from offload.config.settings import Settings
from offload.infra.ledger import batches as store
from offload.infra.ledger import windows as w
from offload.services.batches import SubmitArgs, run_once, status, submit
from offload.services.batches.build import Shared
from offload.state import open_state

pytestmark = pytest.mark.anyio


def count(db: Path | str, sql: str) -> int:
    return int(target_rows(db, sql)[0][0])


def on(target: Path | str) -> dict[str, Any]:
    """make_settings overrides putting the ledger on `target` (a file, or a postgresql:// URL)."""
    return {"db_url": target} if isinstance(target, str) else {"db_path": target}


async def test_two_collectors_on_one_ledger_settle_each_item_exactly_once(
    running: Callable[..., Any], make_settings: Callable[..., Settings], ledger_target: Path | str
) -> None:
    with running(batch_delay_s=0.2) as emu:
        settings = make_settings(emu.url, **on(ledger_target))
        async with open_state(settings) as a, open_state(settings) as b:
            out = await submit(a, "s1", SubmitArgs(template="Tag {item}", items=tuple(f"x{i}" for i in range(300))))
            bid = out.data["batch_id"]
            # The whole worst case is held, by the batch rather than by this process.
            db = settings.ledger_target
            held = count(db, "SELECT amount_pusd FROM reservations WHERE pid = 0 AND host = 'batch'")
            assert held > 0 and held == count(db, "SELECT worst_pusd FROM batches")

            async def loop(state: Any) -> None:
                while (await status(state, "s1", bid)).data["state"] != "done":
                    await run_once(state)
                    await anyio.sleep(0.05)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(loop, a)
                    tg.start_soon(loop, b)
            # A late, redundant collection pass changes nothing.
            ref = store.PartRef(bid, 0, out.data["api_batches"][0], "ended", 9)
            from offload.services.batches.collect import collect_part

            await collect_part(b, ref)
        results_calls = [r for r in emu.state.calls() if r.path.endswith("/results")]
    assert count(db, "SELECT COUNT(*) FROM attempts WHERE batch = 1") == 300
    assert count(db, "SELECT COUNT(DISTINCT request_key) FROM attempts") == 300
    assert count(db, "SELECT COUNT(*) FROM reservations") == 0
    assert count(db, "SELECT SUM(cost_pusd) FROM attempts") == count(db, "SELECT SUM(cost_pusd) FROM batch_items")
    assert len(results_calls) == 2  # one real collection (the lease kept the other out) + the redundant one


async def test_submission_interrupted_before_the_api_answered_is_surfaced_not_resent(
    running: Callable[..., Any], make_settings: Callable[..., Settings], ledger_target: Path | str
) -> None:
    with running(batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url, **on(ledger_target))
        async with open_state(settings) as state:
            from offload.infra.ledger import budgets
            from offload.metering.metered import limits_of

            # What a process killed mid-submit leaves behind: the batch saved, part 0 'submitting'.
            res = await budgets.reserve(state.ledger, "s1", 10**9, limits_of(state.policy))
            shared = Shared(model="claude-haiku-5-5", max_tokens=20, prefix="Tag ").to_json()
            nb = store.NewBatch(
                "b_cut", "s1", "default", "cheap", "claude-haiku-5-5", "claude-opus-5-5", 2, 10**9, 1, 2, shared
            )
            await store.create(
                state.ledger, nb, [(0, 0, "a", "a", None, 5 * 10**8), (1, 0, "b", "b", None, 5 * 10**8)], [2], res
            )
            assert await store.begin_submit(state.ledger, "b_cut", 0)
            # Later (the lease has run out), a collector notices.
            await store.claim_due(state.ledger, now=w.utcnow() + timedelta(hours=1))
            text = (await status(state, "s1", "b_cut")).text
            assert "interrupted during submission" in text and "retry_failed='b_cut'" in text, text
            assert count(settings.ledger_target, "SELECT amount_pusd FROM reservations") == 10**9  # still held
            assert emu.state.calls("/v1/messages/batches") == []  # nothing was resent on a guess

            again = await submit(state, "s1", SubmitArgs(retry_failed="b_cut"))
            assert again.data["requests"] == 2
            sent = [r.body for r in emu.state.calls("/v1/messages/batches") if r.method == "POST"]
            assert [q["params"]["messages"][0]["content"][-1]["text"] for q in sent[0]["requests"]] == ["a", "b"]


async def test_a_late_collection_leaves_another_calls_hold_that_reused_the_batch_holds_id(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """Collected after its hold expired (25 h: the server was off), a batch must not cut or free the
    hold another call took since: SQLite reuses the newest reservation id once that row is gone."""
    from offload.infra.ledger import budgets
    from offload.metering.metered import limits_of

    with running(batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        async with open_state(settings) as state:
            out = await submit(state, "s1", SubmitArgs(template="Tag {item}", items=("a", "b", "c")))
            bid = out.data["batch_id"]
            batch_hold = count(settings.db_path, "SELECT id FROM reservations")
            later = w.utcnow() + timedelta(hours=26)  # the batch's hold has expired and is purged
            live = await budgets.reserve(state.ledger, "s2", 10**9, limits_of(state.policy), ttl_s=3600, now=later)
            assert live.id == batch_hold
            with anyio.fail_after(30):
                while (await status(state, "s1", bid)).data["state"] != "done":
                    await run_once(state)
                    await anyio.sleep(0.05)
            # Read while the server runs: a clean stop frees whatever its instance still holds.
            conn = sqlite3.connect(settings.db_path)
            try:
                rows = conn.execute("SELECT id, session_id, amount_pusd FROM reservations").fetchall()
            finally:
                conn.close()
    assert rows == [(live.id, "s2", 10**9)]
