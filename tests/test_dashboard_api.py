"""`offload dashboard`'s JSON and its guards, over real HTTP (uvicorn) on real SQLite files."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2

from helpers import query, uvicorn_serving
from offload.cli.dashboard import build_app
from offload.cli.dashboard_data import fold
from offload.config.settings import Settings
from offload.core.pricing import Usage
from offload.infra.ledger.budgets import BudgetLimits
from offload.infra.ledger.context import record_kept_out
from offload.infra.ledger.dashboard import Point, reading, since_filter
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.learning import CallRecord, mark_judged, record_call
from offload.infra.ledger.records import Attempt, record, record_policy
from transcript_fixtures import assistant, write_transcript

TOKEN = "tok-dash-3c9e1f7a2b"
CENT = 10**10
NOW = datetime.now(UTC)


def _settings(tmp_path: Path, *tokens: str) -> Settings:
    env = {"HOME": str(tmp_path), "OFFLOAD_DB": str(tmp_path / "ledger.db"), "OFFLOAD_HTTP_TOKENS": ",".join(tokens)}
    return Settings.from_env(env)


async def _fill(path: Path) -> None:
    led = await Ledger.open(path)
    try:
        for key, model, tier, cost, ts in (
            ("a1", "claude-haiku-5-5", "cheap", 100 * CENT, NOW - timedelta(hours=1)),
            ("a2", "claude-sonnet-5-5", "standard", 23 * CENT, NOW - timedelta(days=3)),
            ("a3", "claude-opus-5-5", "premium", 700 * CENT, NOW - timedelta(days=40)),
        ):
            a = Attempt(
                key, "s1", "routed_complete", model, Usage(10, 5, cache_read=40), cost, cost * 3, tier=tier, ts=ts
            )
            await record(led, a)
        await record_policy(led, "s1", "default", BudgetLimits.from_usd(session="2", daily="20"), ["0.8"])
    finally:
        await led.close()


def test_json_for_a_period(tmp_path: Path) -> None:
    asyncio.run(_fill(tmp_path / "ledger.db"))
    with uvicorn_serving(build_app(_settings(tmp_path), transcripts=tmp_path / "none")) as url, httpx2.Client() as h:
        week = h.get(f"{url}/api/summary?since=7d").json()
        day = h.get(f"{url}/api/series?since=24h").json()
        month = {by: h.get(f"{url}/api/series?by={by}").json()["by"][by] for by in ("tier", "project")}
        bad_by = h.get(f"{url}/api/series?by=colour")
        daily_buckets = h.get(f"{url}/api/series?since=30d").json()["bucket"]
        sessions = h.get(f"{url}/api/sessions?since=90d").json()
        bad = h.get(f"{url}/api/summary?since=last+week")
        page = h.get(f"{url}/")
    assert week["totals"]["cost"]["usd"] == "1.23" and week["totals"]["calls"] == 2
    assert week["totals"]["baseline"]["usd"] == "3.69" and week["totals"]["saved_pct"] == "66.7"
    assert week["cache"]["hit_pct"] == "80.0"  # 80 read of 100 prompt tokens
    daily = next(b for b in week["budgets"]["scopes"] if b["scope"] == "daily")
    assert daily["limit"]["usd"] == "20" and daily["resets_at"].endswith("T00:00:00.000000Z")
    monthly = next(b for b in week["budgets"]["scopes"] if b["scope"] == "monthly")
    assert monthly["limit"] is None
    assert day["bucket"] == "hour" and [p["key"] for p in day["by"]["model"]] == ["claude-haiku-5-5"]
    assert {p["key"] for p in month["tier"]} == {"cheap", "standard"} and daily_buckets == "day"
    assert bad_by.status_code == 400 and "expected one of model, tier, tool, session, project" in bad_by.json()["error"]
    has_project = any(r["name"] == "project" for r in query(tmp_path / "ledger.db", "PRAGMA table_info(attempts)"))
    # Without a project column (ledgers before it) the breakdown is null and the page says so.
    assert (month["project"] is None) is not has_project
    assert [(r["session"], r["offload_calls"], r["offload_cost"]["usd"]) for r in sessions["sessions"]] == [
        ("s1", 3, "8.23")
    ]
    assert sessions["host"]["files"] == 0
    assert bad.status_code == 400 and "expected a date" in bad.json()["error"]
    assert page.status_code == 200 and "<svg" not in page.text and "/api/summary" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere


def test_no_ledger_yet(tmp_path: Path) -> None:
    with uvicorn_serving(build_app(_settings(tmp_path), transcripts=tmp_path)) as url, httpx2.Client() as h:
        doc = h.get(f"{url}/api/summary").json()
        series = h.get(f"{url}/api/series").json()
    assert doc["ledger"] is False and doc["db"].endswith("ledger.db")
    assert series["by"]["model"] is None


def test_tokens_guard_the_data_not_the_page(tmp_path: Path) -> None:
    with uvicorn_serving(build_app(_settings(tmp_path, TOKEN), transcripts=tmp_path)) as url, httpx2.Client() as h:
        assert h.get(f"{url}/").status_code == 200
        for path in ("/api/summary", "/api/series", "/api/sessions"):
            refused = h.get(f"{url}{path}")
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            assert h.get(f"{url}{path}", headers={"Authorization": "Bearer nope"}).status_code == 401
            assert h.get(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_loopback_without_tokens_refuses_foreign_host_names(tmp_path: Path) -> None:
    # A web page whose name was rebound to 127.0.0.1 sends its own name as Host.
    with uvicorn_serving(build_app(_settings(tmp_path), transcripts=tmp_path)) as url, httpx2.Client() as h:
        assert h.get(f"{url}/api/summary", headers={"Host": "evil.example:8766"}).status_code == 421
        assert h.get(f"{url}/api/summary", headers={"Host": "localhost:8766"}).status_code == 200
        assert h.get(f"{url}/api/summary", headers={"Host": "[::1]:8766"}).status_code == 200


def test_off_loopback_without_a_token_exits_2(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "dashboard", "--host", "0.0.0.0", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "offload dashboard: refusing to serve HTTP on 0.0.0.0:0 without a token" in out.stderr


def test_many_keys_fold_into_other_with_exact_totals() -> None:
    points = [Point("2026-11-29", f"s{i:02d}", 1, (i + 1) * CENT, 0) for i in range(25)]
    points += [Point("2026-11-30", "s00", 2, 7, 0)]
    folded = fold(points, 10)
    keys = {p.key for p in folded}
    assert len(keys) == 10 and "(other)" in keys and "s24" in keys and "s00" not in keys
    assert sum(p.cost_pusd for p in folded) == sum(p.cost_pusd for p in points)
    assert sum(p.calls for p in folded) == 27
    other = [p for p in folded if p.key == "(other)"]
    assert [p.bucket for p in other] == ["2026-11-29", "2026-11-30"] and other[1].cost_pusd == 7


def test_wide_windows_scan_the_table_narrow_ones_use_the_index(tmp_path: Path) -> None:
    asyncio.run(_fill(tmp_path / "ledger.db"))  # rows 1 hour, 3 days and 40 days old
    with reading(tmp_path / "ledger.db") as conn:
        assert conn is not None
        assert since_filter(conn, NOW - timedelta(days=90)) == "+ts >= ?"
        assert since_filter(conn, NOW - timedelta(minutes=1)) == "ts >= ?"


def test_polling_sees_every_new_attempt(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    asyncio.run(_fill(db))

    async def one_more() -> None:
        led = await Ledger.open(db)
        try:
            await record(led, Attempt("a4", "s1", "trim_result", "claude-haiku-5-5", Usage(1, 1), 7, 7, ts=NOW))
        finally:
            await led.close()

    with uvicorn_serving(build_app(_settings(tmp_path), transcripts=tmp_path)) as url, httpx2.Client() as h:
        before = (h.get(f"{url}/api/summary?since=7d").json(), h.get(f"{url}/api/series?since=7d&by=tool").json())
        asyncio.run(one_more())
        after = (h.get(f"{url}/api/summary?since=7d").json(), h.get(f"{url}/api/series?since=7d&by=tool").json())
    assert before[0]["totals"]["cost"]["usd"] == "1.23"
    assert after[0]["totals"]["cost"]["usd"] == "1.230000000007"
    assert "trim_result" not in {p["key"] for p in before[1]["by"]["tool"]}
    assert "trim_result" in {p["key"] for p in after[1]["by"]["tool"]}


def test_sessions_show_what_was_kept_out_of_context(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    asyncio.run(_fill(db))

    async def kept() -> None:
        led = await Ledger.open(db)
        try:
            await record_kept_out(led, "s1", "trim_result", 12_000, 300, now=NOW)
            await record_kept_out(led, "s1", "summarize_context", 5_000, 600, now=NOW)
            await record_kept_out(led, "only-trims", "trim_result", 900, 100, now=NOW)
            await record_kept_out(led, "s1", "trim_result", 50_000, 10, now=NOW - timedelta(days=60))
        finally:
            await led.close()

    asyncio.run(kept())
    with uvicorn_serving(build_app(_settings(tmp_path), transcripts=tmp_path)) as url, httpx2.Client() as h:
        doc = h.get(f"{url}/api/sessions?since=7d").json()
    by = {r["session"]: r for r in doc["sessions"]}
    assert (by["s1"]["kept_out_tokens"], by["s1"]["context_calls"]) == (11_700 + 4_400, 2)
    # A session that only trimmed (no paid call) still shows.
    assert (by["only-trims"]["kept_out_tokens"], by["only-trims"]["offload_calls"]) == (800, 0)


async def _answers(path: Path) -> None:
    led = await Ledger.open(path)
    try:
        for call_id, checked in (("rc_checked", True), ("rc_redone", True), ("rc_plain", False)):
            await record_call(led, CallRecord(call_id, "s1", "classify", "cheap", "a1", checked), [("cheap", None)])
        assert await mark_judged(led, "rc_redone", "redone", keep_baseline=False)
    finally:
        await led.close()


def test_host_bill_uses_the_users_price_file(tmp_path: Path) -> None:
    # A model only the user's OFFLOAD_PRICING knows: the page must price it as `serve` does,
    # not call it unpriced (or price an overridden model at the shipped rate).
    prices = tmp_path / "mine.yaml"
    prices.write_text(
        'models:\n  claude-custom-1:\n    as_of: "2026-11-01"\n    input: "1"\n    cache_write_5m: "1.25"\n'
        '    cache_write_1h: "2"\n    cache_read: "0.10"\n    output: "5"\n    min_cacheable_tokens: 1024\n',
        encoding="utf-8",
    )
    usage = {"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 0}
    when = (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    write_transcript(
        tmp_path / "t" / "-p" / "h1.jsonl", [assistant("h1", "m1", "r1", "claude-custom-1", usage, ts=when)]
    )
    settings = replace(_settings(tmp_path), pricing_path=prices)
    with uvicorn_serving(build_app(settings, transcripts=tmp_path / "t")) as url, httpx2.Client() as h:
        host = h.get(f"{url}/api/sessions?since=7d").json()["host"]
    assert host["unpriced"] == {} and host["turns"] == 1
    assert host["cost"]["usd"] == "0.002"  # 1000 x $1/M + 200 x $5/M, by hand


def _dashboard(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "dashboard", *args],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_port_and_bad_price_file_are_one_line_exit_2(tmp_path: Path) -> None:
    port = _dashboard(tmp_path, "--port", "99999")
    assert port.returncode == 2 and port.stdout == ""
    assert port.stderr == "offload dashboard: port 99999: expected 0-65535 (0: any free port)\n"
    (tmp_path / "p.yaml").write_text("models: [", encoding="utf-8")
    prices = _dashboard(tmp_path, "--port", "0", OFFLOAD_PRICING=str(tmp_path / "p.yaml"))
    assert prices.returncode == 2 and prices.stdout == ""  # refused before the URL line
    lines = prices.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("offload dashboard: ") and str(tmp_path / "p.yaml") in lines[0]


def test_unreadable_ledger_and_far_since_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").mkdir()  # where a file should be: sqlite cannot open it
    with uvicorn_serving(build_app(_settings(tmp_path), transcripts=tmp_path / "none")) as url, httpx2.Client() as h:
        broken = h.get(f"{url}/api/summary")
        far = h.get(f"{url}/api/summary?since=99999999d")
    assert broken.status_code == 500
    assert broken.json()["error"].startswith(f"{tmp_path / 'ledger.db'}: cannot read the ledger (")
    assert far.status_code == 400 and far.json()["error"].startswith("since '99999999d': too far back")


async def _fill_pct(path: Path) -> None:
    led = await Ledger.open(path)
    try:  # saved 3 of 2000 pusd = 0.15 %: a decimal tie that binary floats round down
        await record(led, Attempt("p1", "s1", "routed_complete", "claude-haiku-5-5", Usage(1, 1), 1997, 2000, ts=NOW))
    finally:
        await led.close()


def test_answers_are_counted_by_what_became_of_them(tmp_path: Path) -> None:
    asyncio.run(_fill(tmp_path / "ledger.db"))
    asyncio.run(_answers(tmp_path / "ledger.db"))
    with uvicorn_serving(build_app(_settings(tmp_path), transcripts=tmp_path / "none")) as url, httpx2.Client() as h:
        q = h.get(f"{url}/api/summary?since=7d").json()["quality"]
    # A redone answer counts as redone even though its check had passed: the host's verdict wins.
    assert (q["answers"], q["checked"], q["redone"], q["unchecked"]) == (3, 1, 1, 1)


def test_percentages_round_as_spend_json_does(tmp_path: Path) -> None:
    asyncio.run(_fill_pct(tmp_path / "ledger.db"))
    with uvicorn_serving(build_app(_settings(tmp_path), transcripts=tmp_path / "none")) as url, httpx2.Client() as h:
        page = h.get(f"{url}/api/summary?since=7d").json()["totals"]["saved_pct"]
    spend = subprocess.run(
        [sys.executable, "-m", "offload.cli.main", "spend", "--json", "--since", "7d"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "OFFLOAD_DB": str(tmp_path / "ledger.db")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert spend.returncode == 0, spend.stderr
    assert page == json.loads(spend.stdout)["total"]["saved_pct"] == "0.2"


def test_with_tokens_the_start_up_says_how_to_open_the_page_without_printing_one(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "OFFLOAD_HTTP_TOKENS": TOKEN}
    with subprocess.Popen(
        [sys.executable, "-m", "offload.cli.main", "dashboard", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            first, second = proc.stdout.readline(), proc.stdout.readline()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    url = first.split()[3]
    assert second == f"the data needs a token: open {url}#token=<one of OFFLOAD_HTTP_TOKENS>\n"
    assert TOKEN not in first + second
    page = (Path(__file__).parents[1] / "server/offload/cli/dashboard.html").read_text(encoding="utf-8")
    assert "#token=" in page.split("async function getJSON")[1].split("function render")[0]  # the 401 says it too
