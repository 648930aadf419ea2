"""Handles in a real ledger (SQLite file and PostgreSQL database): save once, reslice later without resending."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fixtures.realistic import FAILING_ERROR, ci_log
from offload.core.errors import InputError
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.handles import kind_of, load, prune, save
from offload.trim.content import trim


@pytest.mark.anyio
async def test_second_slice_from_handle_in_another_connection(ledger_target: Path | str) -> None:
    db = ledger_target
    log = ci_log()
    ledger = await Ledger.open(db)
    try:
        first = trim(log, max_tokens=300)
        handle = await save(ledger, log, first.kind)
        assert handle.startswith("h_") and len(handle) == 14
    finally:
        await ledger.close()
    # A later call (here: a fresh connection, as another session would have) asks a new question.
    ledger = await Ledger.open(db)
    try:
        again = await load(ledger, handle)
        assert again == log
        assert await kind_of(ledger, handle) == "log"
        second = trim(again, query="RoundingMismatch", max_tokens=300)
        assert second.query_answered is True
        assert "RoundingMismatch: 10.01 != 10.00" in second.text
        assert FAILING_ERROR in second.text or "RoundingMismatch" in second.text
        row = await (await ledger.conn.execute("SELECT bytes, length(content) FROM handles")).fetchone()
        assert row is not None and row[0] == len(log.encode()) and row[1] < row[0] / 5  # compressed
    finally:
        await ledger.close()


@pytest.mark.anyio
async def test_same_content_same_handle_one_row(ledger_target: Path | str) -> None:
    ledger = await Ledger.open(ledger_target)
    try:
        a = await save(ledger, "héllo wörld", "text")
        b = await save(ledger, "héllo wörld", "text")
        c = await save(ledger, "something else", "text")
        assert a == b != c
        row = await (await ledger.conn.execute("SELECT count(*) FROM handles")).fetchone()
        assert row is not None and row[0] == 2
        assert await load(ledger, a) == "héllo wörld"
    finally:
        await ledger.close()


@pytest.mark.anyio
async def test_unknown_handle_says_what_to_send(ledger_target: Path | str) -> None:
    ledger = await Ledger.open(ledger_target)
    try:
        with pytest.raises(InputError) as exc:
            await load(ledger, "h_000000000000")
        assert "unknown or expired" in str(exc.value) and "send the content or its path" in str(exc.value)
    finally:
        await ledger.close()


@pytest.mark.anyio
async def test_prune_drops_only_unused_handles(ledger_target: Path | str) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ledger = await Ledger.open(ledger_target)
    try:
        old = await save(ledger, "old", "text", now=t0)
        used = await save(ledger, "used", "text", now=t0)
        await load(ledger, used, now=t0 + timedelta(days=6))  # a load refreshes it
        fresh = await save(ledger, "fresh", "text", now=t0 + timedelta(days=8))
        assert await prune(ledger, 7, now=t0 + timedelta(days=8)) == 1
        with pytest.raises(InputError):
            await load(ledger, old)
        assert await load(ledger, used) == "used"
        assert await load(ledger, fresh) == "fresh"
    finally:
        await ledger.close()
