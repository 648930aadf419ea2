"""Stored payloads are forgotten on schedule; spend history never is (the contract on both backends)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from helpers import ledger_query, ledger_rows
from offload.config.settings import Settings
from offload.core.pricing import Usage
from offload.infra.ledger import batches as store
from offload.infra.ledger.budgets import BudgetLimits, reserve
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt
from offload.mcp.server import build_server
from test_batch import wait_done

pytestmark = pytest.mark.anyio
SHARED = '{"prefix": "secret prefix"}'


def _age(db: Path, sql: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql)
    conn.close()


async def test_old_batch_prompts_answers_and_trim_originals_are_forgotten_at_start(
    emulator: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(emulator.url)
    async with Client(build_server(settings)) as c:
        sub = await c.call_tool("batch_submit", {"template": "Tag: {item}", "items": ["secret-item-a", "secret-b"]})
        bid = sub.structured_content["batch_id"]
        await wait_done(c, bid)
        trimmed = await c.call_tool("trim_result", {"content": "confidential line\n" * 2000, "max_tokens": 60})
        handle = trimmed.structured_content["handle"]
    spend_before = [(r["request_key"], r["cost_pusd"]) for r in ledger_rows(settings.db_path)]
    assert len(spend_before) == 2

    # Thirty days later (settled 30 days ago; the handle unused for 8).
    _age(settings.db_path, "UPDATE batches SET settled_at = '2000-01-01T00:00:00.000000Z'")
    _age(settings.db_path, "UPDATE handles SET last_used_at = '2000-01-01T00:00:00.000000Z'")
    async with Client(build_server(settings)) as c:
        results = await c.call_tool("batch_results", {"batch_id": bid})
        again = await c.call_tool("trim_result", {"handle": handle})
        retry = await c.call_tool("batch_submit", {"retry_failed": bid})

    # secure_delete: what was forgotten is overwritten, not left in free pages or the WAL.
    raw = b"".join(p.read_bytes() for p in settings.db_path.parent.glob("ledger.db*"))
    assert b"secret-item-a" not in raw and b"confidential line" not in raw
    conn = sqlite3.connect(settings.db_path)
    items = conn.execute("SELECT label, body, text FROM batch_items").fetchall()
    conn.close()
    assert items == [("item 0", "", None), ("item 1", "", None)]
    # Spend history is untouched.
    assert [(r["request_key"], r["cost_pusd"]) for r in ledger_rows(settings.db_path)] == spend_before
    assert not results.is_error  # counts and costs still answer
    assert again.is_error and "handle" in again.content[0].text  # type: ignore[union-attr]
    assert retry.is_error and "forgotten" in retry.content[0].text  # type: ignore[union-attr]


async def test_forgetting_payloads_blanks_only_old_settled_batches_on_either_backend(ledger: Ledger) -> None:
    """The ledger's retention contract, on SQLite and PostgreSQL alike (no server involved)."""
    hold = await reserve(ledger, "s1", 2000, BudgetLimits())
    nb = store.NewBatch("b_old", "s1", "default", "cheap", "claude-haiku-5-5", "claude-opus-5-5", 2, 2000, 1, 2, SHARED)
    await store.create(
        ledger, nb, [(0, 0, "secret a", "body a", "sys", 1000), (1, 0, "secret b", "b", None, 1000)], [2], hold
    )
    ref = store.PartRef("b_old", 0, "msgbatch_x", "ended", 1)
    settled = [
        store.Settled(i, "succeeded", f"answer {i}", "end_turn", None, Attempt(
            f"batch:x:{i}", "s1", "batch_results", "claude-haiku-5-5", Usage(3, 4), 400 + i, batch=True))
        for i in (0, 1)
    ]  # fmt: skip
    assert await store.settle(ledger, ref, settled) == 2
    assert await store.part_collected(ledger, ref) is True
    later = datetime.now(UTC) + timedelta(days=30)
    assert await store.forget_payloads(ledger, now=datetime.now(UTC)) == 0  # not old yet
    assert await store.forget_payloads(ledger, now=later) == 2
    assert await store.forget_payloads(ledger, now=later) == 0  # each batch is forgotten once
    kept = await ledger_query(ledger, "SELECT label, body, system, text, cost_pusd FROM batch_items ORDER BY idx")
    assert kept == [("item 0", "", None, None, 400), ("item 1", "", None, None, 401)]
    assert await ledger_query(ledger, "SELECT shared FROM batches") == [("{}",)]
    # Spend history is never forgotten, and the batch's hold is gone with its settlement.
    assert await ledger_query(ledger, "SELECT SUM(cost_pusd), COUNT(*) FROM attempts") == [(801, 2)]
    assert await ledger_query(ledger, "SELECT COUNT(*) FROM reservations") == [(0,)]
