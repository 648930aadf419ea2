"""Stored payloads are forgotten on schedule; spend history never is."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from helpers import ledger_rows
from offload.config.settings import Settings
from offload.mcp.server import build_server
from test_batch import wait_done

pytestmark = pytest.mark.anyio


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
