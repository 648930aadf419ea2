"""spend_rollup and spend_by_day (migration 0150): budget reads sum per-day rows, which triggers on attempts keep equal
to summing the attempts themselves, on both backends, through duplicates, NULL and '' names, day and
month boundaries, deletes, key rewrites, a ledger written before 0150, and `offload ledger migrate`."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from helpers import target_rows
from offload.core.pricing import Usage
from offload.infra.ledger import db, pg, transfer
from offload.infra.ledger import windows as w
from offload.infra.ledger.budgets import BudgetLimits, Who, scope_states
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record, record_many
from offload.infra.ledger.statusline import read_statusline
from pg_fixtures import new_database

pytestmark = pytest.mark.anyio

# The last microsecond of November and the first of December: a day and a month boundary.
EDGE = datetime(2026, 12, 1, tzinfo=UTC)
STAMPS = [EDGE - timedelta(microseconds=1), EDGE, EDGE + timedelta(hours=23, minutes=59), EDGE - timedelta(days=3)]
ROLLUP = "SELECT day, session_id, user_key, project_key, cost_pusd, n FROM spend_rollup ORDER BY 1, 2, 3, 4"
# What the rollup must equal: the attempts summed by day, session, user and project, NULL apart from ''.
GROUPED = (
    "SELECT substr(ts, 1, 10), session_id, COALESCE('=' || user_name, ''), COALESCE('=' || project, ''),"
    " SUM(cost_pusd), COUNT(*) FROM attempts GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
)
# And the sessionless level, the same without the session.
BY_DAY = "SELECT day, user_key, project_key, cost_pusd, n FROM spend_by_day ORDER BY 1, 2, 3"
GROUPED_BY_DAY = (
    "SELECT substr(ts, 1, 10), COALESCE('=' || user_name, ''), COALESCE('=' || project, ''),"
    " SUM(cost_pusd), COUNT(*) FROM attempts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
)
LIMITS = BudgetLimits(10**18, 10**18, 10**18, 10**18, 10**18, 10**18)
NAMES = [None, "", "ana", "bo"]


def _attempts(rng: random.Random, n: int, prefix: str) -> list[Attempt]:
    return [
        Attempt(
            f"{prefix}{i}",
            f"s{rng.randrange(4)}",
            "routed_complete",
            "claude-haiku-5-5",
            Usage(10, 5),
            rng.choice([0, 1, 999_999_999_999, rng.randrange(10**9)]),
            ts=rng.choice(STAMPS),
            user=rng.choice(NAMES),
            project=rng.choice(NAMES),
        )
        for i in range(n)
    ]


async def _rows(led: Ledger, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await (await led.conn.execute(sql)).fetchall()]


async def _assert_rollups_equal_the_attempts(led: Ledger) -> list[tuple[Any, ...]]:
    """Both levels equal GROUP BY over attempts; the per-session rows, for further checks."""
    rollup = await _rows(led, ROLLUP)
    assert rollup == await _rows(led, GROUPED)
    assert await _rows(led, BY_DAY) == await _rows(led, GROUPED_BY_DAY)
    return rollup


async def _old_sums(led: Ledger, session: str, now: datetime, who: Who) -> dict[str, int]:
    """Each scope's spend as budgets read it before 0150: straight from attempts, by time stamp."""
    d0, d1, m0, m1 = (w.iso(t) for t in (w.day_start(now), w.next_day(now), w.month_start(now), w.next_month(now)))
    ask = "SELECT COALESCE(SUM(cost_pusd), 0) FROM attempts WHERE "
    out = {}
    for scope, where, args in (
        ("session", "session_id = ?", (session,)),
        ("daily", "ts >= ? AND ts < ?", (d0, d1)),
        ("monthly", "ts >= ? AND ts < ?", (m0, m1)),
        ("user", ("user_name IS NULL" if who.user is None else "user_name = ?") + " AND ts >= ? AND ts < ?",
         (*(() if who.user is None else (who.user,)), m0, m1)),
        ("project", ("project IS NULL" if who.project is None else "project = ?") + " AND ts >= ? AND ts < ?",
         (*(() if who.project is None else (who.project,)), m0, m1)),
    ):  # fmt: skip
        out[scope] = int((await led.conn.execute_fetchall(ask + where, args))[0][0])
    out["team"] = out["monthly"]
    return out


async def _assert_budgets_read_as_before(led: Ledger) -> None:
    for now in (*STAMPS, EDGE + timedelta(days=40)):
        for session in ("s0", "s3", "nobody"):
            for who in (Who(), Who("", ""), Who("ana", None), Who(None, "bo")):
                states = await scope_states(led.conn, session, LIMITS, now, who)
                assert {s.scope: s.spent_pusd for s in states} == await _old_sums(led, session, now, who)


async def test_rollup_equals_the_attempts_summed_through_duplicates_boundaries_and_empty_names(ledger: Ledger) -> None:
    rng = random.Random(150)
    made = _attempts(rng, 300, "k")
    for a in made[:40]:
        assert await record(ledger, a)
    assert await record_many(ledger, made[40:]) == 260
    # Retried records and a batch collected twice: the same request_keys again, with other figures.
    again = [Attempt(**{**a.__dict__, "cost_pusd": 7, "user": "mallory"}) for a in made[::3]]
    assert await record_many(ledger, again) == 0
    assert not await record(ledger, again[0])
    # A user and a project spelled '' are not the same budget as unknown ones (own=True writes them as given).
    async with ledger.write() as conn:
        await conn.execute(
            "INSERT INTO attempts (request_key, ts, session_id, tool, model, cost_pusd, user_name, project)"
            " VALUES ('empty', ?, 's0', 't', 'm', 5, '', '')",
            (w.iso(EDGE),),
        )

    rollup = await _assert_rollups_equal_the_attempts(ledger)
    assert {r[2] for r in rollup} == {"", "=", "=ana", "=bo"}  # NULL and '' kept apart
    assert {r[0] for r in rollup} == {"2026-11-28", "2026-11-30", "2026-12-01"}
    assert sum(int(r[5]) for r in rollup) == 301
    await _assert_budgets_read_as_before(ledger)


async def test_deletes_and_rewrites_keep_the_rollup_equal(ledger: Ledger) -> None:
    rng = random.Random(7)
    await record_many(ledger, _attempts(rng, 120, "d"))
    async with ledger.write() as conn:
        await conn.execute("DELETE FROM attempts WHERE session_id = 's1'")
        await conn.execute("UPDATE attempts SET cost_pusd = cost_pusd + 3, user_name = 'zed' WHERE session_id = 's2'")
        await conn.execute("UPDATE attempts SET ts = ? WHERE session_id = 's3'", (w.iso(EDGE + timedelta(days=5)),))
        # Not a key or the cost: the rollup is not touched (learning zeroes a baseline this way).
        await conn.execute("UPDATE attempts SET baseline_pusd = 0")
    rollup = await _assert_rollups_equal_the_attempts(ledger)
    assert not [r for r in rollup if r[1] == "s1"]  # a group's last attempt takes its row with it
    assert {r[2] for r in rollup if r[1] == "s2"} == {"=zed"}
    await _assert_budgets_read_as_before(ledger)

    async with ledger.write() as conn:
        await conn.execute("DELETE FROM attempts")
    assert await _rows(ledger, ROLLUP) == await _rows(ledger, BY_DAY) == []


def _ledger_at_0140(target: Path | str) -> None:
    """A ledger as servers before 0150 left it: every migration up to 0140, applied as they did."""
    ddl = "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    if isinstance(target, Path):
        conn = sqlite3.connect(target)
        try:
            conn.execute(ddl)
            for version, name, sql in db.migrations():
                if version <= 140:
                    conn.executescript(sql)
                    conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 'then')", (version, name))
            conn.commit()
        finally:
            conn.close()
        return
    with psycopg.connect(target, autocommit=True) as pconn:
        pconn.execute(ddl)
        for version, name, sql in pg.migrations():
            if version <= 140:
                pconn.execute(sql.encode())
                pconn.execute("INSERT INTO schema_migrations VALUES (%s, %s, 'then')", (version, name))


def _write_old_attempts(target: Path | str, rows: Sequence[tuple[Any, ...]]) -> None:
    _write(
        target,
        "INSERT INTO attempts (request_key, ts, session_id, tool, model, cost_pusd, user_name, project)"
        " VALUES (?, ?, ?, 'routed_complete', 'claude-haiku-5-5', ?, ?, ?)",
        rows,
    )
    # A monthly limit alone, so what the status line shows left is the month's.
    _write(
        target,
        "INSERT INTO policy_snapshots (ts, session_id, policy, daily_pusd, monthly_pusd) VALUES (?, 's0', 'p', ?, ?)",
        [(w.iso(EDGE), None, 10**15)],
    )


def _write(target: Path | str, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    if isinstance(target, Path):
        conn = sqlite3.connect(target)
        try:
            with conn:
                conn.executemany(sql, rows)
        finally:
            conn.close()
        return
    with psycopg.connect(target) as pconn, pconn.cursor() as cur:
        cur.executemany(sql.replace("?", "%s"), rows)


async def test_a_ledger_written_before_0150_is_backfilled_when_opened(
    ledger_target: Path | str, tmp_path: Path
) -> None:
    _ledger_at_0140(ledger_target)
    rng = random.Random(140)
    old = [
        (f"o{i}", w.iso(rng.choice(STAMPS)), f"s{rng.randrange(4)}", rng.randrange(10**12), rng.choice(NAMES),
         rng.choice(NAMES))
        for i in range(200)
    ]  # fmt: skip
    _write_old_attempts(ledger_target, old)
    assert "spend_rollup" not in str(target_rows(ledger_target, "SELECT name FROM sqlite_master"))
    # `offload statusline` reads ledgers without migrating them: from attempts until 0150 is there.
    lines = [read_statusline(ledger_target, now, session_id="s0") for now in STAMPS]
    assert all(" left · " in line and "this session $" in line for line in lines), lines

    led = await Ledger.open(ledger_target, spool=tmp_path / "spool.db")
    try:
        rollup = await _assert_rollups_equal_the_attempts(led)
        assert sum(int(r[5]) for r in rollup) == 200
        await _assert_budgets_read_as_before(led)
        assert [read_statusline(ledger_target, now, session_id="s0") for now in STAMPS] == lines
        # Written after the upgrade, on top of the backfill: the triggers carry on from it.
        await record_many(led, _attempts(rng, 50, "new"))
        await _assert_rollups_equal_the_attempts(led)
        await _assert_budgets_read_as_before(led)
    finally:
        await led.close()


async def test_ledger_migrate_rebuilds_the_rollup_from_the_copied_attempts_once(tmp_path: Path, pg_server: str) -> None:
    source = tmp_path / "old.db"
    led = await Ledger.open(source)
    try:
        await record_many(led, _attempts(random.Random(3), 150, "m"))
    finally:
        await led.close()
    url = new_database(pg_server)
    target = await Ledger.open(url, spool=tmp_path / "spool.db")
    try:
        for run in range(2):  # a second run copies nothing, and must not add to the rollup either
            reports = await transfer.migrate(source, target)
            assert all(r.ok for r in reports) and not {"spend_rollup", "spend_by_day"} & {r.table for r in reports}
            assert [r.inserted for r in reports if r.table == "attempts"] == [150 if run == 0 else 0]
            await _assert_rollups_equal_the_attempts(target)
            # Sorted here: the two backends may collate '' and '=...' keys differently.
            for sql in (ROLLUP, BY_DAY):
                assert sorted(target_rows(url, sql)) == sorted(target_rows(source, sql))
    finally:
        await target.close()


async def test_writers_racing_on_one_ledger_keep_the_rollup_equal(ledger_target: Path | str, tmp_path: Path) -> None:
    # Two connections, as two server processes have: each its own write lock turn, and half of
    # their request_keys the same (a result collected by both), which must count once.
    leds = [await Ledger.open(ledger_target, spool=tmp_path / f"spool{i}.db") for i in range(2)]
    try:

        async def write(led: Ledger, seed: int) -> int:
            made = _attempts(random.Random(seed), 60, "race")  # the same keys from both, other figures
            inserted = 0
            for a in made[:30]:
                inserted += await record(led, Attempt(**{**a.__dict__, "request_key": f"{a.request_key}-{seed}"}))
            for a in made[30:]:
                inserted += await record(led, a)
            return inserted

        counts = await asyncio.gather(write(leds[0], 1), write(leds[1], 2))
        assert sum(counts) == 30 + 30 + 30  # own keys from both, the shared 30 once
        rollup = await _assert_rollups_equal_the_attempts(leds[0])
        assert sum(int(r[5]) for r in rollup) == 90
        await _assert_budgets_read_as_before(leds[1])
    finally:
        for led in leds:
            await led.close()
