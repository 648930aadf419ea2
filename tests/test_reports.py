"""budget_status summary, and `offload spend` / `offload statusline` run as real processes."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from offload.core.pricing import Usage
from offload.infra.ledger.budgets import BudgetLimits
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record, record_policy
from offload.infra.ledger.reports import summary

USD = 10**12
CENT = 10**10
NOW = datetime.now(UTC)


def _attempts() -> list[Attempt]:
    def a(
        key: str, session: str, model: str, usage: Usage, cost: int, base: int, ts: datetime, gain: int = 0
    ) -> Attempt:
        return Attempt(key, session, "routed_complete", model, usage, cost, base, ts=ts, cache_gain_pusd=gain)

    return [
        a("a1", "s1", "claude-haiku-5-5", Usage(1000, 100, cache_read=3000), 100 * CENT, 400 * CENT, NOW, 30 * CENT),
        a("a2", "s1", "claude-sonnet-5-5", Usage(10, 5), 23 * CENT, 179 * CENT, NOW, -5 * CENT),
        a("a3", "s2", "claude-haiku-5-5", Usage(1, 1), 500 * CENT, 500 * CENT, NOW - timedelta(days=10)),
        a("a4", "s3", "claude-opus-5-5", Usage(1, 1), 700 * CENT, 700 * CENT, NOW - timedelta(days=40)),
    ]


async def _build(path: Path) -> None:
    led = await Ledger.open(path)
    try:
        for att in _attempts():
            await record(led, att)
        await record_policy(led, "s1", "default", BudgetLimits.from_usd(daily="20", monthly="300"), ["0.8"])
    finally:
        await led.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    asyncio.run(_build(path))
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_summary_for_budget_status(tmp_path: Path) -> None:
    path = tmp_path / "summary.db"
    await _build(path)
    led = await Ledger.open(path)
    try:
        s = await summary(led, "s1", BudgetLimits.from_usd(session="2", daily="20"), window="session")
    finally:
        await led.close()
    assert (s.calls, s.cost_pusd, s.baseline_pusd) == (2, 123 * CENT, 579 * CENT)
    assert s.saved_pusd == 456 * CENT
    assert str(s.saved_pct) == "78.8"  # 4.56 / 5.79 = 0.78756
    assert str(s.cache_hit_pct) == "74.8"  # 3000 / (1000 + 3000 + 10) = 0.74813
    assert [(m.model, m.calls, m.cost_pusd) for m in s.top_models] == [
        ("claude-haiku-5-5", 1, 100 * CENT),
        ("claude-sonnet-5-5", 1, 23 * CENT),
    ]
    session, daily, monthly = s.scopes
    assert (session.spent_pusd, session.remaining_pusd) == (123 * CENT, 77 * CENT)
    assert (daily.spent_pusd, daily.remaining_pusd) == (123 * CENT, 1877 * CENT)
    assert monthly.limit_pusd is None and monthly.remaining_pusd is None
    assert s.pending_batches == 0
    assert s.cache_gain_pusd == 25 * CENT  # +0.30 read savings, -0.05 write premium


def offload(db: Path | None, *args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_") and k != "COLUMNS"}
    env.update(env_extra or {})
    if db is not None:
        env["OFFLOAD_DB"] = str(db)
    return subprocess.run(
        [sys.executable, "-m", "offload.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_spend_json_is_exact_and_windowed(db: Path) -> None:
    out = offload(db, "spend", "--by", "model", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    got = {
        r["key"]: (r["calls"], r["cost_usd"], r["baseline_usd"], r["saved_usd"], r["saved_pct"]) for r in doc["rows"]
    }
    # default window is 30 days: the 40-day-old opus call is out
    assert got == {
        "claude-haiku-5-5": (2, "6", "9", "3", "33.3"),
        "claude-sonnet-5-5": (1, "0.23", "1.79", "1.56", "87.2"),
    }
    t = doc["total"]
    assert (t["calls"], t["cost_usd"], t["baseline_usd"], t["saved_usd"], t["saved_pct"]) == (
        3, "6.23", "10.79", "4.56", "42.3"
    )  # fmt: skip
    assert {r["key"]: r["cache_net_gain_usd"] for r in doc["rows"]} == {
        "claude-haiku-5-5": "0.3",
        "claude-sonnet-5-5": "-0.05",
    }
    assert t["cache_net_gain_usd"] == "0.25"

    week = json.loads(offload(db, "spend", "--by", "session", "--since", "7d", "--json").stdout)
    assert [(r["key"], r["cost_usd"]) for r in week["rows"]] == [("s1", "1.23")]
    since = (NOW - timedelta(days=45)).strftime("%Y-%m-%d")
    everything = json.loads(offload(db, "spend", "--since", since, "--json").stdout)
    assert everything["total"]["cost_usd"] == "13.23"


def test_spend_of_a_ledger_from_before_cache_gain_was_recorded(db: Path) -> None:
    # `offload spend` reads without migrating: a file last opened before 0050 has no such column.
    conn = sqlite3.connect(db)
    conn.execute("ALTER TABLE attempts DROP COLUMN cache_gain_pusd")
    conn.commit()
    conn.close()
    out = offload(db, "spend", "--by", "model", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["total"]["cost_usd"] == "6.23" and doc["total"]["cache_net_gain_usd"] == "0"


def test_spend_table_and_bad_since(db: Path) -> None:
    out = offload(db, "spend", "--by", "tool")
    assert out.returncode == 0, out.stderr
    assert "routed_complete" in out.stdout and "total" in out.stdout and "$6.23" in out.stdout
    assert "cache net" in out.stdout and "$0.25" in out.stdout
    bad = offload(db, "spend", "--since", "last week")
    assert bad.returncode == 1
    assert "--since 'last week': expected a date like 2026-11-01 or a span like 7d or 24h" in bad.stderr


def test_statusline_line(db: Path) -> None:
    out = offload(db, "statusline")
    assert out.returncode == 0, out.stderr
    # today: $1.00 + $0.23; left: $20 daily - $1.23; saved $5.79 - $1.23 = $4.56 (78.7%, floored)
    assert out.stdout == "offload $1.23 today · $18.77 left · saved $4.56 (78%)\n"


def test_statusline_without_a_ledger_is_friendly(tmp_path: Path) -> None:
    out = offload(tmp_path / "nope.db", "statusline")
    assert (out.returncode, out.stdout) == (0, "offload: no spend yet\n")
    assert not (tmp_path / "nope.db").exists()  # read-only: never creates the file


def test_statusline_imports_nothing_heavy(db: Path) -> None:
    code = (
        "import sys\nfrom offload.cli.main import main\nmain(['statusline'])\n"
        "heavy = {'anyio', 'rich', 'pydantic', 'mcp', 'anthropic', 'yaml', 'httpx2', 'asyncio'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    env = {**os.environ, "OFFLOAD_DB": str(db)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"


def test_spend_on_80_columns_shows_whole_amounts_and_model_names(db: Path) -> None:
    out = offload(db, "spend", "--by", "model", env_extra={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, out.stdout
    assert "…" not in out.stdout
    haiku = next(line for line in lines if "claude-haiku-5-5" in line).split()
    assert haiku == ["claude-haiku-5-5", "2", "$6.00", "$9.00", "$3.00", "33.3%"]
    sonnet = next(line for line in lines if "claude-sonnet-5-5" in line).split()
    assert sonnet == ["claude-sonnet-5-5", "1", "$0.2300", "$1.79", "$1.56", "87.2%"]
    assert next(line for line in lines if line.strip().startswith("total")).split()[2] == "$6.23"


def test_spend_csv_has_one_row_per_group(db: Path) -> None:
    out = offload(db, "spend", "--by", "model", "--csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.reader(io.StringIO(out.stdout)))
    header = "model,calls,input_tokens,output_tokens,cache_read_tokens,cost_usd,baseline_usd,saved_usd,saved_pct"
    assert rows[0] == header.split(",")
    assert [(r[0], r[1], r[5], r[6]) for r in rows[1:]] == [
        ("claude-haiku-5-5", "2", "6", "9"),
        ("claude-sonnet-5-5", "1", "0.23", "1.79"),
    ]


def test_spend_on_a_missing_ledger_names_the_path(tmp_path: Path) -> None:
    out = offload(tmp_path / "typo.db", "spend")
    assert out.returncode == 1
    assert out.stderr.startswith(f"offload spend: no ledger at {tmp_path / 'typo.db'}")
    assert not (tmp_path / "typo.db").exists()


def test_statusline_reads_claude_codes_stdin_json(db: Path) -> None:
    host = json.dumps({"session_id": "s1", "cost": {"total_cost_usd": 2.5}, "future_field": [1, 2]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env["OFFLOAD_DB"] = str(db)
    out = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "statusline"], input=host, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "offload $1.23 today · $18.77 left · saved $4.56 (78%) · this session $1.23 · host $2.50\n"


@pytest.mark.parametrize("raw", ["", "not json", "[1, 2]", '{"session_id": 7, "cost": {"total_cost_usd": "x"}}'])
def test_statusline_ignores_odd_host_input(db: Path, raw: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env["OFFLOAD_DB"] = str(db)
    out = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "statusline"], input=raw, env=env, capture_output=True, text=True
    )
    assert (out.returncode, out.stdout) == (0, "offload $1.23 today · $18.77 left · saved $4.56 (78%)\n")
