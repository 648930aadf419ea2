"""Injected API faults: every routed_complete ends in an answer or a clear error, and the
ledger holds exactly one priced row per response the API actually served.

Real parts only: the in-memory MCP client, the real server, the real SDK over HTTP to the
emulator (seeded faults: 429/529/500, dropped connections, slow replies), a real SQLite file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client

from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.money import usd_json
from offload.core.pricing import Usage
from offload.mcp.server import build_server

from .conftest import is_generic_error, ledger_rows, result_text

pytestmark = pytest.mark.anyio

# 20% of requests fail (the SDK retries each up to twice), every request is 5-40 ms slow.
FAULTS = "429=0.08,529=0.05,500=0.04,drop=0.03,latency=5-40ms"
CALLS = 48
CONCURRENCY = 6


async def test_faulty_api_every_call_ends_clearly_and_no_cost_is_lost_or_doubled(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    outcomes: dict[int, tuple[bool, str]] = {}
    with running(seed=20260421, faults=FAULTS) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as client:

            async def one(i: int, limiter: anyio.CapacityLimiter) -> None:
                async with limiter:
                    # Hard prompts carry a check the default reply fails, so some calls climb the
                    # ladder: several priced rungs per tool call, each exposed to faults.
                    args: dict[str, Any] = {"prompt": f"task {i}: name a prime above {i * 7}"}
                    if i % 4 == 0:
                        args["must_match"] = r"^PRIME \d+$"
                    result = await client.call_tool("routed_complete", args)
                    outcomes[i] = (bool(result.is_error), result_text(result))

            limiter = anyio.CapacityLimiter(CONCURRENCY)
            async with anyio.create_task_group() as tg:
                for i in range(CALLS):
                    tg.start_soon(one, i, limiter)
            # Three forced failures in a row exhaust the SDK's two retries: the error path for sure.
            emu.state.faults.force(529, 529, 529)
            forced = await client.call_tool("routed_complete", {"prompt": "one more task"})
            status = await client.call_tool("budget_status", {})
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
        injected = dict(emu.state.faults.injected)

    assert injected.get("drop", 0) > 0 and injected.get("429", 0) > 0 and injected.get("529", 0) > 0, injected
    assert len(outcomes) == CALLS
    for i, (is_error, text) in sorted(outcomes.items()):
        assert text.strip(), f"call {i} returned nothing"
        if is_error:
            assert not is_generic_error(text), f"call {i}: unexplained error {text!r}"
            assert "Claude API" in text and "try again" in text, f"call {i}: {text!r}"
        else:
            assert text.splitlines()[-1].startswith("["), f"call {i}: no footer in {text!r}"
    assert forced.is_error and "529" in result_text(forced) and not is_generic_error(result_text(forced))
    assert not status.is_error, result_text(status)

    # One ledger row per 200 the emulator sent: nothing served goes unbilled, nothing twice.
    rows = ledger_rows(settings.db_path, "SELECT * FROM attempts ORDER BY id")
    assert len(rows) == len(served), (len(rows), len(served))
    prices = load_prices()
    expected = sorted(prices.cost(str(r.model), Usage.from_api(r.usage)) for r in served)
    assert sorted(int(r["cost_pusd"]) for r in rows) == expected
    assert len({r["request_key"] for r in rows}) == len(rows)
    assert ledger_rows(settings.db_path, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
    # budget_status reports exactly the ledger's total.
    total = sum(int(r["cost_pusd"]) for r in rows)
    data = status.structured_content
    assert data is not None
    assert data["scopes"]["session"]["spent_usd"] == usd_json(total)
    assert data["calls"] == len(rows)
