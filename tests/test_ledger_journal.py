"""A paid answer survives a ledger that cannot take it, and idle servers leave the write lock alone.

Real parts: the SDK over HTTP to the emulator, real SQLite files. The full disk is SQLite's own
SQLITE_FULL, produced by capping the server's write connection with `PRAGMA max_page_count`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from helpers import query
from offload.config.pricing import load_prices
from offload.config.settings import Settings, shipped
from offload.core.errors import LedgerUnavailableError
from offload.core.pricing import Usage
from offload.infra.ledger import batches as store
from offload.infra.ledger import learning
from offload.infra.ledger.budgets import BudgetLimits, release, reserve
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.instances import Instance, heartbeat
from offload.infra.ledger.journal import journal_path, pending, replay, spool
from offload.infra.ledger.records import Attempt
from offload.infra.processes import host_id
from offload.metering.metered import collecting_notes
from offload.services import routed
from offload.services.routed import RoutedArgs
from offload.state import open_state

pytestmark = pytest.mark.anyio


def _storing_policy(tmp_path: Path) -> Path:
    # Stored prompt text makes the attempt row larger than the free space of the pages the
    # small reservation row fits in: the reserve succeeds, the record hits the full disk.
    path = tmp_path / "policy.yaml"
    shutil.copy(shipped("default.yaml"), path)
    path.write_text(path.read_text().replace("store_text: false", "") + "\nstore_text: true\n")
    return path


async def test_full_disk_spools_the_paid_answer_and_the_next_open_records_it_once(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(emulator.url, policy_path=_storing_policy(tmp_path))
    db = settings.db_path
    async with open_state(settings) as state:
        pages = await (await state.ledger.wconn.execute("PRAGMA page_count")).fetchone()
        assert pages is not None
        await state.ledger.wconn.execute(f"PRAGMA max_page_count = {int(pages[0])}")
        with collecting_notes() as notes:
            out = await routed.routed_complete(state, "full-disk", RoutedArgs(prompt="Say hello. " + "x" * 20_000))
    served = [r for r in emulator.state.calls("/v1/messages", "POST") if r.status == 200]
    prices = load_prices()

    assert served
    assert out.text.strip() and out.data["cost_usd"] != "0"  # the host got its answer
    assert notes and "recorded on the next start" in notes[0], notes
    assert query(db, "SELECT COUNT(*) AS n FROM attempts")[0]["n"] == 0  # the disk refused the row
    assert pending(db) == len(served)
    assert query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == len(served)  # held until replayed

    for _ in range(2):  # the first open replays; a second finds nothing left to add
        led = await Ledger.open(db)
        await led.close()
        rows = query(db, "SELECT session_id, model, cost_pusd, prompt_text FROM attempts ORDER BY id")
        assert len(rows) == len(served) and {r["session_id"] for r in rows} == {"full-disk"}
        assert sorted(int(r["cost_pusd"]) for r in rows) == sorted(
            prices.cost(str(r.model), Usage.from_api(r.usage)) for r in served
        )
        assert rows[0]["prompt_text"].startswith("Say hello.")
        assert query(db, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
        assert pending(db) == 0


async def test_replay_is_idempotent_even_if_the_journal_survives_a_crash(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A crash after the replay committed but before the journal was emptied replays again: one row."""
    settings = make_settings(emulator.url, policy_path=_storing_policy(tmp_path))
    db = settings.db_path
    async with open_state(settings) as state:
        await state.ledger.wconn.execute("PRAGMA max_page_count = 1")
        await routed.routed_complete(state, "s", RoutedArgs(prompt="Say hello. " + "y" * 20_000))
    kept = journal_path(db).read_text()
    led = await Ledger.open(db)
    await led.close()
    journal_path(db).write_text(kept)  # as if the process died before truncating
    led = await Ledger.open(db)
    await led.close()
    served = [r for r in emulator.state.calls("/v1/messages", "POST") if r.status == 200]
    assert query(db, "SELECT COUNT(*) AS n FROM attempts")[0]["n"] == len(served) > 0
    assert pending(db) == 0


async def test_an_idle_collector_takes_no_write_lock(ledger: Ledger) -> None:
    other = sqlite3.connect(ledger.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process is writing (for a long time)
        with anyio.fail_after(2):  # taking the lock would wait for busy_timeout (30 s)
            assert await store.claim_due(ledger) == []
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_a_write_waits_out_another_process_and_reads_do_not_block_it(ledger: Ledger) -> None:
    other = sqlite3.connect(ledger.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")

    async def later() -> None:
        await anyio.sleep(0.3)
        other.execute("COMMIT")

    async with anyio.create_task_group() as tg:
        tg.start_soon(later)
        # A read in flight on this process must not turn our BEGIN IMMEDIATE into an instant BUSY.
        rows = await (await ledger.conn.execute("SELECT * FROM attempts")).fetchall()
        async with ledger.write() as conn:
            await conn.execute("DELETE FROM reservations")
    other.close()
    assert rows == []


async def test_begin_immediate_retries_past_busy_timeout_then_says_what_is_wrong(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    led = await Ledger.open(db, busy_timeout_ms=20, busy_retries=8)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")

        async def release_later() -> None:
            await anyio.sleep(0.6)  # far past busy_timeout: only the retries can carry the write through
            other.execute("COMMIT")

        async with anyio.create_task_group() as tg:
            tg.start_soon(release_later)
            async with led.write() as conn:
                await conn.execute("DELETE FROM reservations")

        other.execute("BEGIN IMMEDIATE")  # now held for good: the retries run out
        led.busy_retries = 2
        with pytest.raises(LedgerUnavailableError, match="locked by other processes past every retry"):
            async with led.write() as conn:
                await conn.execute("DELETE FROM reservations")
    finally:
        other.execute("ROLLBACK")
        other.close()
        await led.close()


# SQLite reuses the newest row id once it is gone; PostgreSQL identities never repeat.
@pytest.mark.parametrize("ledger_target", ["sqlite"], indirect=True)
async def test_replay_frees_the_spooled_hold_not_another_call_that_reused_its_id(ledger: Ledger) -> None:
    """Reservation ids are reused once the newest row is gone: a hold swept while its attempt sat in
    the journal (its process died, or it expired) may be another live call's id at replay time."""
    limits = BudgetLimits.from_usd(daily="5")
    hold = await reserve(ledger, "spooler", 10**9, limits)
    attempt = Attempt("routed_complete:spooled", "spooler", "routed_complete", "claude-haiku-5-5", Usage(), 7)
    spool(ledger.path, attempt, hold)
    await release(ledger, hold)  # swept meanwhile
    live = await reserve(ledger, "another-call", 2 * 10**9, limits)
    assert live.id == hold.id  # SQLite handed the same id out again
    await replay(ledger)
    rows = query(ledger.path, "SELECT id, session_id FROM reservations")
    assert [(r["id"], r["session_id"]) for r in rows] == [(live.id, "another-call")]
    assert query(ledger.path, "SELECT cost_pusd FROM attempts")[0]["cost_pusd"] == 7


async def test_the_replay_also_frees_holds_of_servers_that_died_on_the_full_disk(tmp_path: Path) -> None:
    # A server on a full disk spools its paid answers, but the release of a call it failed before
    # sending is refused too: that hold outlived the server until some later reserve swept it, so a
    # ledger reopened for a report still showed it held. The reopen's replay sweeps it.
    db = tmp_path / "ledger.db"
    limits = BudgetLimits.from_usd(daily="5")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    led = await Ledger.open(db)
    try:
        for instance in (Instance("i_dead", host_id(), gone.pid, 30), Instance("i_live", host_id(), os.getpid(), 30)):
            await heartbeat(led, instance)
        led.instance = Instance("i_live", host_id(), os.getpid(), 30)
        await reserve(led, "still-running", 10**9, limits)
        led.instance = Instance("i_dead", host_id(), gone.pid, 30)  # as it was while it lived
        paid = await reserve(led, "paid", 10**9, limits)
        await reserve(led, "refused", 10**9, limits)  # its release never landed
        spool(db, Attempt("routed_complete:paid", "paid", "routed_complete", "claude-haiku-5-5", Usage(), 7), paid)
    finally:
        await led.close()
    led = await Ledger.open(db)
    await led.close()
    assert [r["session_id"] for r in query(db, "SELECT session_id FROM reservations")] == ["still-running"]
    assert [r["cost_pusd"] for r in query(db, "SELECT cost_pusd FROM attempts")] == [7]


async def test_a_replayed_answer_gives_its_calls_row_the_length_learning_reads(ledger: Ledger) -> None:
    # The ledger was busy when the answer was paid: its attempt went to the journal, and its calls
    # row went in afterwards without a length. The replay fills it in, so the output cap and the
    # signals count that answer like any other.
    hold = await reserve(ledger, "busy", 10**9, BudgetLimits.from_usd(daily="5"))
    paid = Attempt("routed_complete:journaled", "busy", "routed_complete", "claude-haiku-5-5", Usage(30, 321), 9)
    spool(ledger.path, dataclasses.replace(paid, stop_reason="end_turn"), hold)
    call = learning.CallRecord("rc_journal1", "busy", "triage", "cheap", paid.request_key, False, None)
    assert await learning.record_call(ledger, call, [("cheap", None)])
    before = await learning.signals(ledger.conn, "busy", "triage", 20, 100, 1)
    assert (before.answers, before.longest) == (0, 0)  # a row with no length is not an answer yet

    assert await replay(ledger) == 1

    row = (await ledger.conn.execute_fetchall("SELECT out_tokens, ended FROM calls WHERE call_id = 'rc_journal1'"))[0]
    assert (row[0], row[1]) == (321, 1)
    after = await learning.signals(ledger.conn, "busy", "triage", 20, 100, 1)
    assert (after.answers, after.longest) == (1, 321)
