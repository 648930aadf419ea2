"""Edge cases of the money path: bounds that budgets rely on, price-rule boundaries, windows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from helpers import ledger_rows
from offload.config.pricing import load_prices
from offload.config.settings import Settings, shipped
from offload.core.pricing import Usage
from offload.infra.ledger.budgets import BudgetLimits, Headroom, reserve
from offload.infra.ledger.db import Ledger
from offload.infra.ledger.records import Attempt, record
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

# Haiku 5.5, pusd per token, by hand: plain / long-prompt (> 100,000 prompt tokens).
HAIKU = {"in": 100_000, "w5m": 125_000, "w1h": 200_000, "read": 10_000, "out": 500_000}
HAIKU_LONG = {"in": 500_000, "w5m": 625_000, "w1h": 1_000_000, "read": 50_000, "out": 2_500_000}


def policy(tmp_path: Path, name: str, daily_usd: str) -> Path:
    text = shipped("default.yaml").read_text(encoding="utf-8")
    text = text.replace("  ttl: 5m\n", "  placement: always\n  ttl: 1h\n").replace(
        "daily_usd: 20", f'daily_usd: "{daily_usd}"'
    )
    text = text.replace("on_exceed: downgrade", "on_exceed: refuse").replace("max_steps: 2", "max_steps: 0")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_dense_context_file_cannot_settle_above_the_daily_budget(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # '.' is one token per byte: the document wrapper offload adds around a context file is then
    # not covered by the file's bytes, and a 1h cache write bills every prefix token at the top rate.
    (tmp_path / "d.txt").write_text("." * 9000, encoding="utf-8")
    args = {"prompt": "?", "context_files": ["d.txt"], "max_tokens": 16, "tier": "cheap"}
    script = [{"reply": "ok", "output_tokens": 16}]
    with running(script=script) as emu:
        free = make_settings(emu.url, policy_path=policy(tmp_path, "loose", "20"), db_path=tmp_path / "a.db")
        async with Client(build_server(free)) as c:
            first = await c.call_tool("routed_complete", args)
    assert not first.is_error, first
    (row,) = ledger_rows(tmp_path / "a.db")
    cost = int(row["cost_pusd"])
    assert int(row["cache_write_1h"]) > 9000 and int(row["output_tokens"]) == 16

    # The same call, fresh cache and ledger, with one picodollar less than it costs: refused.
    limit = Decimal(cost - 1) / 10**12
    with running(script=script) as emu:
        tight = make_settings(emu.url, policy_path=policy(tmp_path, "tight", str(limit)), db_path=tmp_path / "b.db")
        async with Client(build_server(tight)) as c:
            second = await c.call_tool("routed_complete", args)
    spent = sum(int(r["cost_pusd"]) for r in ledger_rows(tmp_path / "b.db"))
    assert spent <= cost - 1, f"settled {spent} pusd over a {cost - 1} pusd daily budget"
    assert second.is_error and "daily budget" in second.content[0].text  # type: ignore[union-attr]


def haiku(u: Usage, r: dict[str, int]) -> int:
    return (
        u.input_tokens * r["in"]
        + u.cache_write_5m * r["w5m"]
        + u.cache_write_1h * r["w1h"]
        + u.cache_read * r["read"]
        + u.output_tokens * r["out"]
    )


@pytest.mark.parametrize(
    ("usage", "long"),
    [
        (Usage(input_tokens=100_000, output_tokens=10), False),  # exactly at the threshold: plain
        (Usage(input_tokens=100_001, output_tokens=10), True),
        # cache tokens count toward the threshold, in every mix
        (Usage(input_tokens=1, cache_read=99_999, output_tokens=10), False),
        (Usage(input_tokens=1, cache_read=100_000, output_tokens=10), True),
        (Usage(input_tokens=2, cache_write_5m=50_000, cache_write_1h=49_999, cache_read=0), True),
        (Usage(input_tokens=1, cache_write_5m=50_000, cache_write_1h=49_999, output_tokens=7), False),
    ],
)
def test_long_prompt_rule_counts_cache_tokens_and_is_strictly_over(usage: Usage, long: bool) -> None:
    table = load_prices()
    rates = HAIKU_LONG if long else HAIKU
    assert table.cost("claude-haiku-5-5", usage) == haiku(usage, rates)
    half = {k: v // 2 for k, v in rates.items()}
    assert table.cost("claude-haiku-5-5", usage, batch=True) == haiku(usage, half)
    # the reservation for a prompt of that size always covers the settled cost, batch or not
    worst = table.worst_case("claude-haiku-5-5", usage.prompt_tokens, usage.output_tokens)
    assert worst >= table.cost("claude-haiku-5-5", usage)
    assert table.worst_case("claude-haiku-5-5", usage.prompt_tokens, usage.output_tokens, batch=True) >= (
        table.cost("claude-haiku-5-5", usage, batch=True)
    )


def test_huge_max_tokens_reservation_stays_exact_and_is_refused_cleanly() -> None:
    table = load_prices()
    worst = table.worst_case("claude-fable-5-1", 10**9, 10**9)  # no float, no overflow: Python ints
    assert worst == 10**9 * 20_000_000 + 10**9 * 50_000_000


async def test_huge_reservation_is_refused_with_the_budget_named(ledger: Ledger) -> None:
    from offload.core.errors import BudgetExceededError

    now = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(BudgetExceededError) as info:
        await reserve(ledger, "s", 10**30, BudgetLimits.from_usd(daily="5"), now=now)
    assert info.value.scope == "daily" and "daily budget $5.00 would be exceeded" in str(info.value)


async def test_month_and_day_roll_over_at_utc_midnight(ledger: Ledger) -> None:
    limits = BudgetLimits.from_usd(daily="1", monthly="1.5")
    late = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
    await record(ledger, Attempt("k1", "s", "t", "claude-haiku-5-5", Usage(), cost_pusd=10**12), now=late)
    from offload.core.errors import BudgetExceededError

    with pytest.raises(BudgetExceededError):  # the day is spent
        await reserve(ledger, "s", 1, limits, now=late)
    # a microsecond later it is December in UTC: a new day and a new month
    hold = await reserve(ledger, "s", 10**12, limits, now=datetime(2026, 12, 1, tzinfo=UTC))
    assert hold.amount_pusd == 10**12
    # 19:00 on Nov 30 in UTC-5 is already Dec 1 in UTC: budgets follow UTC, not the local clock
    from datetime import timedelta, timezone

    west = datetime(2026, 11, 30, 19, 0, 1, tzinfo=timezone(timedelta(hours=-5)))
    with pytest.raises(BudgetExceededError) as info:
        await reserve(ledger, "s", 6 * 10**11, limits, now=west)
    assert info.value.scope == "daily" and "resets 2026-12-02 00:00 UTC" in str(info.value)


def test_headroom_names_the_tightest_budget() -> None:
    assert Headroom(5, 3, 9).tightest == "daily"
    assert Headroom(3, 3, None).tightest == "session"
    assert Headroom(None, None, 1).tightest == "monthly"
    assert Headroom(None, None, None).tightest is None
