"""Short ledger transactions run their statements on the event loop; waiting never does.

Real SQLite files; "another process" is a second sqlite3 connection holding the write lock, as a
second offload process would. Where statements run is read from SQLite itself (a user function
returning the calling thread), and how much a read walks from SQLite's progress handler, which
counts virtual-machine steps: a read bounded by its window takes as many steps on a ledger of a
few calls as on one of thousands.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest

from offload.core.pricing import Usage
from offload.infra.ledger import learning, records
from offload.infra.ledger.db import Ledger, ReadConn, migrations
from offload.infra.ledger.lite import LiteConn
from offload.infra.ledger.records import Attempt, record_many
from offload.infra.ledger.windows import utcnow

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("ledger_target", ["sqlite"], indirect=True)]


def _thread_of(conn: LiteConn) -> None:
    conn.raw.create_function("thread_id", 0, threading.get_ident)


async def test_inline_statements_run_on_the_loop_and_others_on_the_database_thread(ledger: Ledger) -> None:
    _thread_of(ledger.wconn)
    async with ledger.write(inline=True) as conn:
        inline = (await (await conn.execute("SELECT thread_id()")).fetchone() or [0])[0]
    async with ledger.write() as conn:
        threaded = (await (await conn.execute("SELECT thread_id()")).fetchone() or [0])[0]
    assert inline == threading.get_ident()
    assert threaded not in (0, threading.get_ident())


async def test_an_inline_write_waits_for_another_process_off_the_loop(ledger: Ledger) -> None:
    other = sqlite3.connect(ledger.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.01)

    async def release_later() -> None:
        await anyio.sleep(0.4)
        other.execute("INSERT INTO reservations (session_id, amount_pusd, created_at, expires_at, pid, host)"
                      " VALUES ('other', 1, '2026-01-01', '2999-01-01', 1, 'h')")  # fmt: skip
        other.execute("COMMIT")

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            tg.start_soon(release_later)
            async with ledger.write(inline=True) as conn:
                # The lock was taken after the other process committed: its row is visible here.
                seen = await (await conn.execute("SELECT COUNT(*) FROM reservations")).fetchone()
            tg.cancel_scope.cancel()
    finally:
        other.close()
    assert seen is not None and seen[0] == 1
    # The loop kept running while the write waited ~0.4 s: a wait on the loop would freeze the ticker.
    assert ticks >= 10, ticks


async def test_a_write_cancelled_while_waiting_for_the_lock_leaves_the_connection_clean(ledger: Ledger) -> None:
    other = sqlite3.connect(ledger.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ledger.wconn.busy_timeout_ms = 300  # the thread's wait ends soon after the other process lets go
    try:
        with anyio.move_on_after(0.1) as scope:
            async with ledger.write(inline=True) as conn:
                await conn.execute("DELETE FROM reservations")
        assert scope.cancelled_caught
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not ledger.wconn.in_transaction
    async with ledger.write(inline=True) as conn:  # usable at once, and its lock is free for others
        await conn.execute(
            "INSERT INTO reservations (session_id, amount_pusd, created_at, expires_at, pid, host)"
            " VALUES ('me', 1, '2026-01-01', '2999-01-01', 1, 'h')"
        )
    third = sqlite3.connect(ledger.path, isolation_level=None, timeout=0)
    try:
        third.execute("BEGIN IMMEDIATE")  # raises "database is locked" if the cancelled BEGIN kept the lock
        third.execute("ROLLBACK")
        assert third.execute("SELECT COUNT(*) FROM reservations").fetchone()[0] == 1
    finally:
        third.close()


async def test_an_inline_read_waits_for_a_threaded_read_on_the_same_connection(ledger: Ledger) -> None:
    # Two tasks share the read connection: the inline one must not use it while the thread does.
    assert isinstance(ledger.conn, ReadConn)
    slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) SELECT COUNT(*) FROM n"
    got: dict[str, int] = {}

    async def threaded() -> None:
        got["slow"] = (await ledger.conn.execute_fetchall(slow))[0][0]

    async def inline() -> None:
        got["quick"] = (await ledger.quick.execute_fetchall("SELECT 7"))[0][0]

    async with anyio.create_task_group() as tg:
        tg.start_soon(threaded)
        await anyio.sleep(0)
        tg.start_soon(inline)
    assert got == {"slow": 300000, "quick": 7}


def _steps(path: Path, sql: str, params: tuple[object, ...]) -> int:
    conn = sqlite3.connect(path)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 100)
    conn.execute(sql, params).fetchall()
    conn.close()
    return steps


async def _answers(ledger: Ledger, family: str, n: int, start: int) -> None:
    now = utcnow()
    await record_many(
        ledger,
        [
            Attempt(f"k{i}", "s", "bench", "claude-haiku-5-5", Usage(10, 5 + i % 7), 900)
            for i in range(start, start + n)
        ],
        now=now,
    )
    async with ledger.write() as conn:
        for i in range(start, start + n):
            await learning.insert_call(conn, learning.CallRecord(f"c{i}", "s", family, "cheap", f"k{i}", False), [])


async def test_the_learning_signals_read_walks_its_window_not_the_ledger(ledger: Ledger) -> None:
    await _answers(ledger, "rare@hard", 3, 0)
    await _answers(ledger, "common", 60, 10)
    args = ("s", "rare", 50)
    small = _steps(ledger.path, learning._SIGNALS, args)
    await _answers(ledger, "common", 4000, 1000)
    large = _steps(ledger.path, learning._SIGNALS, args)
    signals = await learning.signals(ledger.quick, "s", "rare", 50, 250, 5)
    # A rare task's answers are found by its families' index, however many answers other tasks have.
    assert signals.answers == 3 and signals.longest == 7
    assert large <= small + 2, (small, large)
    # With too few answers of its own, every task's record is read (bounded by its own window).
    assert signals.any_answers == 250


_HAMMER = """
import asyncio, sys, time
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.budgets import BudgetLimits, reserve
from offload.infra.ledger.records import Attempt, record
from offload.core.pricing import Usage

async def main(db, tag, until):
    led = await Ledger.open(db)
    limits = BudgetLimits(session_pusd=10**18, daily_pusd=10**18, monthly_pusd=10**18)
    i = 0
    while time.time() < until:
        hold = await reserve(led, tag, 1000, limits)
        await record(led, Attempt(f"{tag}-{i}", tag, "t", "claude-haiku-5-5", Usage(10, 5), 900), hold)
        i += 1
    await led.close()

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


async def test_the_wal_stays_bounded_while_processes_write_without_pause(ledger: Ledger) -> None:
    # Several processes settling calls back to back: the WAL must restart now and then. (A
    # checkpoint run on a thread beside the writers never caught up: gigabytes in a minute.)
    until = time.time() + 4
    workers = [
        subprocess.Popen([sys.executable, "-c", _HAMMER, str(ledger.path), f"p{n}", str(until)]) for n in range(3)
    ]
    wal, largest = Path(f"{ledger.path}-wal"), 0
    try:
        while any(w.poll() is None for w in workers):
            largest = max(largest, wal.stat().st_size if wal.exists() else 0)
            await anyio.sleep(0.05)
    finally:
        for w in workers:
            w.wait(timeout=60)
    assert [w.returncode for w in workers] == [0, 0, 0]
    settled = (await ledger.conn.execute_fetchall("SELECT COUNT(*) FROM attempts"))[0][0]
    assert settled > 300, settled  # they did write hard
    assert largest < 48 * 1024 * 1024, largest


def _migrated_before(path: Path, version: int) -> sqlite3.Connection:
    """A ledger as a server of an earlier release left it: every migration below `version` applied."""
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT)")
    for number, name, sql in migrations():
        if number < version:
            old.executescript(sql)
            old.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-11-01')", (number, name))
    return old


async def test_answers_recorded_before_0160_get_their_lengths_on_the_next_open(ledger_target: Path) -> None:
    # A ledger as a server of the previous release left it: migrated up to 0150, with two answers.
    path = ledger_target
    old = _migrated_before(path, 160)
    now = utcnow()
    for i, (key, out, stop) in enumerate((("k1", 40, "end_turn"), ("k2", 90, "max_tokens"))):
        answer = Attempt(key, "s", "bench", "claude-haiku-5-5", Usage(10, out), 900, stop_reason=stop)
        old.execute(records._INSERT, records._row(answer, now, (None, None)))
        old.execute(
            "INSERT INTO calls (call_id, ts, session_id, family, tier, final_key) VALUES (?, ?, 's', 't', 'cheap', ?)",
            (f"c{i}", f"2026-11-0{i + 1}T00:00:00.000000Z", key),
        )
    old.close()
    led = await Ledger.open(path)  # this release: 0160 adds the lengths and fills them in
    try:
        rows = await led.conn.execute_fetchall("SELECT call_id, out_tokens, ended FROM calls ORDER BY call_id")
        signals = await learning.signals(led.quick, "s", "t", 50, 250, 1)
    finally:
        await led.close()
    assert [tuple(r) for r in rows] == [("c0", 40, 1), ("c1", 90, 0)]
    assert (signals.answers, signals.longest) == (1, 40)  # the answer cut at max_tokens sets no cap


async def test_answers_recorded_before_0180_are_read_by_their_task_at_every_difficulty(ledger_target: Path) -> None:
    # A ledger of the previous release (up to 0170): answers of task t at three stated difficulties
    # and of other tasks. 0180 gives each its task; a task's answers are then one index range,
    # however many difficulties and other tasks there are.
    path = ledger_target
    old = _migrated_before(path, 180)
    families = {"c0": "t", "c1": "t@hard", "c2": "t@easy", "c3": "t@medium", "c4": "tx@hard"}
    families |= {"c5": "v@eas", "c6": "U@EASY"}
    for i, (call_id, family) in enumerate(families.items()):
        old.execute(
            "INSERT INTO calls (call_id, ts, session_id, family, tier, final_key, out_tokens, ended)"
            " VALUES (?, ?, 's', ?, 'cheap', NULL, ?, 1)",
            (call_id, f"2026-11-0{i + 1}T00:00:00.000000Z", family, 10 * (i + 1)),
        )
    old.close()
    led = await Ledger.open(path)
    try:
        tasks = {str(r[0]): r[1] for r in await led.conn.execute_fetchall("SELECT call_id, task FROM calls")}
        t = await learning.signals(led.quick, "s", "t", 50, 250, 1)
        # This release writes by the same rule, so a label that itself ends like a difficulty ("t@hard"
        # given with none) is read as task t by every writer and by the reader alike.
        async with led.write() as conn:
            await learning.insert_call(conn, learning.CallRecord("c9", "s", "t@hard", "cheap", None, False), [])
        await led.conn.execute("UPDATE calls SET out_tokens = 5, ended = 1 WHERE call_id = 'c9'")
        as_label = await learning.signals(led.quick, "s", "t@hard", 50, 250, 1)
        steps = await led.conn.execute_fetchall("EXPLAIN QUERY PLAN " + learning._SIGNALS, ("s", "t", 50))
        plan = " ".join(str(r[-1]) for r in steps)
    finally:
        await led.close()
    # Difficulties are matched case-exactly, as engine.family_of writes them (SQLite's LIKE would not).
    assert tasks == {"c0": "t", "c1": "t", "c2": "t", "c3": "t", "c4": "tx", "c5": "v@eas", "c6": "U@EASY"}
    assert (t.answers, t.longest) == (4, 40)
    assert (as_label.answers, as_label.longest) == (5, 40)
    assert "calls_task (task=?)" in plan, plan


async def test_a_threaded_write_cancelled_while_waiting_for_the_lock_commits_nothing(ledger: Ledger) -> None:
    other = sqlite3.connect(ledger.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ledger.wconn.busy_timeout_ms = 3000
    try:
        started = time.monotonic()
        with anyio.move_on_after(0.2) as scope:
            async with ledger.write() as conn:  # bulk work: statements on the thread
                await conn.execute(
                    "INSERT INTO reservations (session_id, amount_pusd, created_at, expires_at, pid, host)"
                    " VALUES ('bulk', 1, '2026-01-01', '2999-01-01', 1, 'h')"
                )
        waited = time.monotonic() - started
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert scope.cancelled_caught
    assert waited < 1.0, waited  # let go within a wait step, not after the 3 s busy_timeout
    assert not ledger.wconn.in_transaction
    assert (await ledger.conn.execute_fetchall("SELECT COUNT(*) FROM reservations"))[0][0] == 0


_CLOSE_UNDER_READS = """
import asyncio, sys
from offload.infra.ledger.db import Ledger

async def main(db):
    for _ in range(40):
        led = await Ledger.open(db)

        async def reads():
            try:
                while True:
                    await led.quick.execute_fetchall("SELECT COUNT(*) FROM attempts")
                    await led.conn.execute_fetchall("SELECT COUNT(*) FROM reservations")
            except Exception:
                return  # closed under it: an error, never a crash

        tasks = [asyncio.create_task(reads()) for _ in range(4)]
        await asyncio.sleep(0.02)
        await led.close()
        await asyncio.gather(*tasks)

asyncio.run(main(sys.argv[1]))
"""


def test_closing_the_ledger_while_tasks_read_it_never_crashes_the_process(ledger_target: Path) -> None:
    # sqlite3 closed on the thread while the loop ran a statement on the same connection
    # segfaulted (6 of 15 runs); a subprocess, so a crash fails this test instead of the run.
    done = subprocess.run(
        [sys.executable, "-c", _CLOSE_UNDER_READS, str(ledger_target)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
