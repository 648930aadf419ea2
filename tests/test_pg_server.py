"""Every tool through the real server with its ledger on PostgreSQL: the same behaviour as on SQLite.

In-memory mcp Client → server → real SDK over HTTP → emulator; the ledger a fresh PostgreSQL
database, read back with psycopg (no offload code) to check what the tools reported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
from mcp import Client

from helpers import target_rows, uvicorn_serving
from offload.config.settings import Settings, ledger_location
from offload.core.errors import BudgetExceededError, ConfigError, LedgerUnavailableError
from offload.core.pricing import Usage
from offload.infra.ledger import pg
from offload.infra.ledger.budgets import BudgetLimits, headroom, reserve
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record
from offload.mcp.http import build_http_app
from offload.mcp.server import build_server
from pg_fixtures import new_database
from test_batch import wait_done

pytestmark = pytest.mark.anyio


async def test_all_tools_on_a_postgresql_ledger(
    running: Callable[..., Any], make_settings: Callable[..., Settings], pg_server: str
) -> None:
    url = new_database(pg_server)
    doc = '{"items": [' + ",".join(f'{{"id": {i}, "note": "n{i}"}}' for i in range(300)) + "]}"
    with running() as emu:
        settings = make_settings(emu.url, db_url=url)
        async with Client(build_server(settings)) as c:
            first = await c.call_tool("routed_complete", {"prompt": "Name a colour.", "task": "summarize"})
            assert not first.is_error, first.content
            redo = await c.call_tool("routed_complete", {"redo_of": first.structured_content["call_id"]})
            assert not redo.is_error, redo.content
            trimmed = await c.call_tool("trim_result", {"content": doc, "max_tokens": 60})
            again = await c.call_tool(
                "trim_result", {"handle": trimmed.structured_content["handle"], "fields": "items[0]"}
            )
            summary = await c.call_tool("summarize_context", {"text": "A long note about colours. " * 400})
            sub = await c.call_tool("batch_submit", {"template": "Tag: {item}", "items": ["a", "b", "c"]})
            assert not sub.is_error, sub.content
            done = await wait_done(c, sub.structured_content["batch_id"])
            results = await c.call_tool("batch_results", {"batch_id": sub.structured_content["batch_id"]})
            status = await c.call_tool("budget_status", {"scope": "session"})
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]

    assert not again.is_error and '"n0"' in again.content[0].text  # type: ignore[union-attr]
    assert not summary.is_error and not results.is_error and done["state"] == "done"
    assert results.content[0].text.count("\n") >= 3  # type: ignore[union-attr]
    # What the server said it spent is what PostgreSQL holds, to the picodollar.
    ((sync_rows, sync_cost),) = target_rows(url, "SELECT COUNT(*), SUM(cost_pusd) FROM attempts WHERE batch = 0")
    assert sync_rows == len(served)  # routed calls and the summary's: one row per served answer
    assert target_rows(url, "SELECT COUNT(*) FROM attempts WHERE batch = 1") == [(3,)]
    ((total,),) = target_rows(url, "SELECT SUM(cost_pusd) FROM attempts")
    data = status.structured_content
    assert data is not None and data["calls"] == sync_rows + 3, data
    assert int(total) > int(sync_cost) > 0
    assert target_rows(url, "SELECT verdict FROM calls WHERE verdict IS NOT NULL") == [("redone",)]
    assert target_rows(url, "SELECT COUNT(*) FROM reservations") == [(0,)]
    assert target_rows(url, "SELECT COUNT(*) FROM handles") == [(1,)]
    assert target_rows(url, "SELECT COUNT(*) FROM context_kept_out")[0][0] >= 2
    assert target_rows(url, "SELECT COUNT(*) FROM policy_snapshots")[0][0] == 1


def test_offload_db_url_selects_postgresql_and_keeps_a_local_journal_per_database(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "OFFLOAD_DB": "postgresql://team@db.example:5432/offload"}
    s = Settings.from_env(env)
    assert s.db_url == env["OFFLOAD_DB"] and s.ledger_target == env["OFFLOAD_DB"]
    assert s.db_path.parent == tmp_path / ".local/share/offload" and s.db_path.name.startswith("pg-")
    other = ledger_location("postgres://team@db.example:5432/other", env)
    assert other[1] == "postgres://team@db.example:5432/other" and other[0] != s.db_path
    assert "team@db" not in repr(s)  # the URL may carry a password: kept out of reprs and logs
    plain = Settings.from_env({"HOME": str(tmp_path), "OFFLOAD_DB": str(tmp_path / "l.db")})
    assert plain.db_url is None and plain.ledger_target == tmp_path / "l.db"


async def test_an_unreachable_postgresql_is_a_config_error_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        await Ledger.open("postgresql://team:s3cret@127.0.0.1:9/offload", spool=tmp_path / "s.db")
    assert "cannot connect" in str(exc.value) and "OFFLOAD_DB" in str(exc.value)
    assert "s3cret" not in str(exc.value) and "team:***@" in str(exc.value)


async def test_healthz_reports_whether_the_shared_ledger_answers(
    make_settings: Callable[..., Settings], pg_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = new_database(pg_server)
    name = url.rsplit("/", 1)[1]
    with uvicorn_serving(build_http_app(make_settings(db_url=url))) as base:
        async with httpx2.AsyncClient() as http:
            up = await http.get(f"{base}/healthz")
            with psycopg.connect(pg_server, autocommit=True) as admin:  # the database goes away under a replica
                admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
            down = await http.get(f"{base}/healthz")
    assert up.status_code == 200 and up.json()["ledger"] == "ok" and up.json()["ok"] is True
    assert down.status_code == 503 and down.json()["ledger"] == "unreachable" and down.json()["ok"] is False
    assert name not in down.text and "127.0.0.1" not in down.text  # the why is for the log only
    assert any(name in r.getMessage() for r in caplog.records if "healthz" in r.getMessage())


async def test_dropped_connections_are_replaced_without_losing_or_doubling_a_write(
    pg_server: str, tmp_path: Path
) -> None:
    url = new_database(pg_server)
    name = url.rsplit("/", 1)[1]
    led = await Ledger.open(url, spool=tmp_path / "spool.db")
    limits = BudgetLimits(daily_pusd=1000)
    try:
        hold = await reserve(led, "s1", 400, limits)
        with psycopg.connect(pg_server, autocommit=True) as admin:  # a restart, a failover, an idle reaper
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        assert (await headroom(led, "s1", limits)).daily_pusd == 600  # the read reconnects
        await record(led, Attempt("k1", "s1", "t", "claude-haiku-5-5", Usage(1, 1), 300), hold)  # so does the write
        with pytest.raises(BudgetExceededError, match="daily budget"):
            await reserve(led, "s1", 701, limits)
    finally:
        await led.close()
    assert target_rows(url, "SELECT request_key, cost_pusd FROM attempts") == [("k1", 300)]
    assert target_rows(url, "SELECT COUNT(*) FROM reservations") == [(0,)]


async def test_a_held_write_lock_is_waited_for_then_reported_not_waited_on_forever(
    pg_server: str, tmp_path: Path
) -> None:
    url = new_database(pg_server)
    led = await Ledger.open(url, spool=tmp_path / "spool.db", busy_timeout_ms=300)
    limits = BudgetLimits(daily_pusd=1000)
    try:
        with psycopg.connect(url) as other:  # another process mid-write: it holds the ledger's lock
            other.execute("SELECT pg_advisory_xact_lock(%s)", (pg.WRITE_LOCK_KEY,))
            with pytest.raises(LedgerUnavailableError, match="could not be written"):
                await reserve(led, "s1", 100, limits)
        hold = await reserve(led, "s1", 100, limits)  # committed by the `with`: the lock is free again
        assert hold.amount_pusd == 100
    finally:
        await led.close()
    assert target_rows(url, "SELECT COUNT(*) FROM reservations") == [(1,)]
