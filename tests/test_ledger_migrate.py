"""`offload ledger migrate SQLITE_FILE POSTGRES_URL`: all history moves, to the row and the picodollar;
a second run adds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import target_rows
from offload.config.settings import shipped
from offload.core.pricing import Usage
from offload.infra.ledger import batches as store
from offload.infra.ledger.budgets import BudgetLimits, reserve
from offload.infra.ledger.context import record_kept_out
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.handles import load, save
from offload.infra.ledger.learning import CallRecord, record_call
from offload.infra.ledger.records import Attempt, record, record_policy
from pg_fixtures import new_database

pytestmark = pytest.mark.anyio


def offload(*argv: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "offload.cli.main", *argv], capture_output=True, text=True, timeout=120
    )


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MONEY = "SELECT COUNT(*), SUM(cost_pusd), SUM(baseline_pusd), SUM(cache_gain_pusd) FROM attempts"


async def _history(db: Path) -> str:
    """A SQLite ledger with a row in every table, odd money amounts, a live batch hold; the handle's text."""
    led = await Ledger.open(db)
    try:
        limits = BudgetLimits(daily_pusd=10**15)
        for i in range(25):
            hold = await reserve(led, f"s{i % 3}", 10**9 + i, limits, now=NOW)
            a = Attempt(f"k{i}", f"s{i % 3}", "routed_complete", "claude-haiku-5-5", Usage(10 + i, 5), 123_456_789 + i)
            await record(led, Attempt(**{**a.__dict__, "baseline_pusd": 7 * i + 1, "cache_gain_pusd": -i}), hold)
        await reserve(led, "still-held", 555, limits, now=NOW)
        batch_hold = await reserve(led, "s1", 2 * 10**9 + 7, limits)
        nb = store.NewBatch("b_1", "s1", "default", "cheap", "claude-haiku-5-5", "claude-opus-5-5", 2, 2 * 10**9 + 7,
                            1, 2, "{}")  # fmt: skip
        await store.create(led, nb, [(0, 0, "a", "a", None, 10**9), (1, 0, "b", "b", "sys", 10**9 + 7)], [1],
                           batch_hold)  # fmt: skip
        await record_policy(led, "s1", "default", BudgetLimits.from_usd(daily="20"), ["0.8"], now=NOW)
        text = "kept content ünïcode " * 50
        await save(led, text, "text", now=NOW)
        await record_call(led, CallRecord("rc_1", "s1", "code", "cheap", "k1", True), [("cheap", True)], now=NOW)
        await record_kept_out(led, "s1", "trim_result", 1000, 40, now=NOW)
        await record_kept_out(led, "s1", "trim_result", 1000, 40, now=NOW)  # a true duplicate stays two rows
        return text
    finally:
        await led.close()


async def test_migrate_moves_every_row_and_picodollar_and_a_rerun_adds_nothing(tmp_path: Path, pg_server: str) -> None:
    db = tmp_path / "old.db"
    text = await _history(db)
    url = new_database(pg_server)

    done = offload("ledger", "migrate", str(db), url)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert (
        "ok       attempts: 25 rows, 25 there, 25 new; cost_pusd $0.0031 = $0.0031 (3086420025 = 3086420025 pusd)"
        in out
    )
    assert "context_kept_out: 2 rows, 2 there, 2 new" in out
    assert "every row and every picodollar" in out and "MISMATCH" not in out
    for sql in (
        MONEY,
        "SELECT COUNT(*), SUM(amount_pusd) FROM reservations",
        "SELECT id, worst_pusd, state FROM batches",
        "SELECT batch_id, idx, label, system, worst_pusd FROM batch_items ORDER BY idx",
        "SELECT COUNT(*) FROM batch_parts",
        "SELECT call_id, final_key, checked FROM calls",
        "SELECT family, tier, adequate FROM tier_evidence",
        "SELECT daily_pusd, warn_at FROM policy_snapshots",
        "SELECT tool, tokens_in, tokens_out FROM context_kept_out",
    ):
        assert target_rows(url, sql) == target_rows(db, sql), sql
    # The batch still owns its hold, under the id that hold got in PostgreSQL.
    assert target_rows(url, "SELECT r.amount_pusd FROM batches b JOIN reservations r ON r.id = b.reservation_id") == [
        (2 * 10**9 + 7,)
    ]
    led = await Ledger.open(url, spool=tmp_path / "spool.db")
    try:
        assert await load(led, target_rows(db, "SELECT id FROM handles")[0][0]) == text
    finally:
        await led.close()

    # `offload spend` reads the shared ledger too, and reports the same figures as from the file.
    for by in ("session", "model", "day", "user"):
        reports = [
            offload("spend", "--db", target, "--by", by, "--since", "2026-01-01", "--json") for target in (str(db), url)
        ]
        assert all(r.returncode == 0 for r in reports), [r.stderr for r in reports]
        lite, shared = (json.loads(r.stdout) for r in reports)
        assert shared["db"] == "the PostgreSQL ledger" and "postgres@" not in reports[1].stdout
        assert (shared["rows"], shared["total"]) == (lite["rows"], lite["total"]), by
    assert [r["key"] for r in shared["rows"]] == ["(none)"] and shared["total"]["calls"] == 25

    listed = [offload("batches", "--db", target, "--all", "--json") for target in (str(db), url)]
    assert all(r.returncode == 0 for r in listed), [r.stderr for r in listed]
    assert json.loads(listed[0].stdout) == json.loads(listed[1].stdout) != []

    host = json.dumps({"session_id": "s1"})
    lines = [
        subprocess.run([sys.executable, "-m", "offload.cli.main", "statusline", "--db", target], input=host,
                       capture_output=True, text=True, timeout=60).stdout
        for target in (str(db), url)
    ]  # fmt: skip
    assert lines[0] == lines[1] and " left" in lines[1] and "this session $0.0010" in lines[1], lines

    # Learned start tiers read the same from either ledger, and can be forgotten on the shared one.
    learning = tmp_path / "learning.yaml"
    learning.write_text(shipped("default.yaml").read_text().replace("  enabled: false", "  enabled: true"))
    explain = ("policy", "explain", str(learning), "fix this bug", "--task", "code", "--db")
    explained = [offload(*explain, target) for target in (str(db), url)]
    assert explained[0].stdout == explained[1].stdout and "  code: adequate" in explained[1].stdout, explained
    forgot = offload("policy", "reset-learning", "--family", "code", "--db", url)
    assert forgot.returncode == 0 and "forgot 1 learned outcome(s) of code in the PostgreSQL ledger" in forgot.stdout
    assert target_rows(url, "SELECT COUNT(*) FROM tier_evidence") == [(0,)]
    offload("ledger", "migrate", str(db), url)  # (puts the evidence back, as a re-run copies what is missing)

    done = offload("ledger", "migrate", str(db), url)  # harmless to repeat
    assert done.returncode == 0, done.stderr
    again = done.stdout
    assert "attempts: 25 rows, 25 there, 0 new" in again and " new;" in again
    assert all(", 0 new" in line for line in again.splitlines()[:-1]), again
    assert target_rows(url, MONEY) == target_rows(db, MONEY)
    assert target_rows(url, "SELECT COUNT(*) FROM context_kept_out") == [(2,)]


def test_migrate_refuses_what_is_not_a_ledger(tmp_path: Path, pg_server: str) -> None:
    url = new_database(pg_server)
    done = offload("ledger", "migrate", str(tmp_path / "missing.db"), url)
    assert done.returncode == 1 and "no such ledger file" in done.stderr
    junk = tmp_path / "junk.db"
    junk.write_text("not sqlite at all " * 100)
    done = offload("ledger", "migrate", str(junk), url)
    assert done.returncode == 1 and "is not an offload ledger" in done.stderr
