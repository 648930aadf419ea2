"""Cache placement from the ledger's reuse history, end to end: real MCP clients, the emulator, SQLite.

A prefix's history lives in the ledger, so a server process learns from calls another process
made: here the first use goes through `offload serve` over stdio, the next two through a second
server in this process.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from helpers import query
from offload.config.policy import PolicyHolder
from offload.config.pricing import load_prices
from offload.config.settings import Settings, shipped
from offload.core.cache_placement import Expect, Ttl
from offload.core.request import Prompt
from offload.infra.ledger import prefixes
from offload.infra.ledger.db import Ledger
from offload.mcp.server import build_server
from offload.metering.placement import placed_params
from offload.state import AppState

pytestmark = pytest.mark.anyio

VENV_BIN = Path(sys.executable).parent


def _files(root: Path) -> None:
    # Over Haiku 5.5's 2,048-token minimum cacheable prefix.
    for i in range(2):
        (root / f"lib{i}.py").write_text("".join(f"def f_{i}_{n}(x):\n    return x + {n}\n" for n in range(500)))


def _ask(prompt: str) -> dict[str, Any]:
    return {"prompt": prompt, "context_files": ["*.py"], "difficulty": "easy"}


def _cache_tokens(emu: Any) -> list[tuple[int, int]]:
    """(cache_creation, cache_read) of each answered Messages call, as the emulator billed it."""
    calls = [r for r in emu.state.calls("/v1/messages") if r.status == 200]
    return [
        (r.usage.get("cache_creation_input_tokens") or 0, r.usage.get("cache_read_input_tokens") or 0) for r in calls
    ]


async def test_reuse_history_is_shared_across_server_processes_through_the_ledger(
    emulator: Any, make_settings: Any, tmp_path: Path
) -> None:
    _files(tmp_path)
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(tmp_path / "ledger.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": emulator.url,
    }
    params = StdioServerParameters(command=str(VENV_BIN / "offload"), args=["serve"], env=env)
    with (tmp_path / "stderr.log").open("w") as err:
        async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
            one_off = await c.call_tool("routed_complete", _ask("What does f_0_7 add?"))
    assert not one_off.is_error, one_off
    # The first use of a new set of context files places no breakpoint: nothing is written.
    assert _cache_tokens(emulator) == [(0, 0)]
    assert "cache_control" not in str(emulator.state.calls("/v1/messages")[-1].body)

    settings: Settings = make_settings(emulator.url)
    assert settings.db_path == tmp_path / "ledger.db"
    async with Client(build_server(settings)) as c:
        second = await c.call_tool("routed_complete", _ask("What does f_1_9 add?"))
        third = await c.call_tool("routed_complete", _ask("What does f_1_3 add?"))
    assert not second.is_error and not third.is_error
    (_, _), (written, read2), (written3, read3) = _cache_tokens(emulator)
    # This process saw the other's use a moment ago: reuse is under way, so a 5m write...
    assert written > 2048 and read2 == 0
    assert "'ttl': '5m'" in str(emulator.state.calls("/v1/messages")[1].body)
    # ...which the next call reads.
    assert (written3, read3) == (0, written)
    uses = query(settings.db_path, "SELECT ttl FROM prefix_uses ORDER BY id")
    assert [u["ttl"] for u in uses] == [None, "5m", "5m"]


@pytest.mark.parametrize(("placement", "expected"), [("never", [None, None]), ("always", ["5m", "5m"])])
async def test_policy_placement_never_and_always_override_the_history(
    emulator: Any, make_settings: Any, tmp_path: Path, placement: str, expected: list[str | None]
) -> None:
    _files(tmp_path)
    text = shipped("default.yaml").read_text()
    assert "caching:\n  ttl: 5m\n" in text
    policy = tmp_path / "policy.yaml"
    policy.write_text(text.replace("caching:\n  ttl: 5m\n", f"caching:\n  placement: {placement}\n  ttl: 5m\n"))
    settings: Settings = make_settings(emulator.url, policy_path=policy)
    async with Client(build_server(settings)) as c:
        for q in ("What does f_0_1 add?", "What does f_0_2 add?"):
            assert not (await c.call_tool("routed_complete", _ask(q))).is_error
    sent = [str(r.body) for r in emulator.state.calls("/v1/messages") if r.status == 200]
    assert ["'ttl': '5m'" in s for s in sent] == [e is not None for e in expected]
    written = [w for w, _ in _cache_tokens(emulator)]
    assert (written[0] > 0) == (placement == "always") and (sum(written) == 0) == (placement == "never")
    # Fixed placements keep no history: there is no decision for it to inform.
    assert query(settings.db_path, "SELECT * FROM prefix_uses") == []


@pytest.mark.parametrize(("items", "ttl"), [(3, None), (40, "5m")])
async def test_a_batch_caches_its_shared_prefix_only_when_its_requests_can_repay_the_write(
    emulator: Any, make_settings: Any, items: int, ttl: str | None
) -> None:
    # A 4k-token instruction head shared by every request. At the documented low-end hit rate
    # (30%) over an hour, 40 requests come 90 s apart: a 5m write pays; 3 requests 20 minutes
    # apart can't repay even that, and a 1h write never pays at 30%.
    head = "Label the review as positive, negative or mixed. " * 400
    settings: Settings = make_settings(emulator.url)
    async with Client(build_server(settings)) as c:
        sub = await c.call_tool(
            "batch_submit",
            {"template": head + "\nReview: {item}", "items": [f"review {i}" for i in range(items)], "max_tokens": 8},
        )
    assert not sub.is_error, sub
    (create,) = [r for r in emulator.state.calls("/v1/messages/batches") if r.method == "POST"]
    sent = [str(line["params"]) for line in create.body["requests"]]
    assert len(sent) == items
    if ttl is None:
        assert not any("cache_control" in s for s in sent)
    else:
        assert all(f"'ttl': '{ttl}'" in s for s in sent)


async def test_uses_are_read_and_recorded_in_one_step_and_forgotten_after_a_week(ledger: Ledger) -> None:
    seen: list[dict[str, list[tuple[float, str | None]]]] = []

    def decide(history: Mapping[str, prefixes.Uses]) -> dict[str, Ttl | None]:
        seen.append({k: list(v) for k, v in history.items()})
        return {"p": "5m"}

    old = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    await prefixes.place(ledger, ["p"], old, decide)
    await prefixes.place(ledger, ["p"], old + timedelta(seconds=90), decide)
    assert seen[0] == {"p": []} and seen[1] == {"p": [(old.timestamp(), "5m")]}
    await prefixes.prune(ledger, now=old + timedelta(days=8))
    await prefixes.place(ledger, ["p"], old + timedelta(days=8), decide)
    assert seen[2] == {"p": []}


async def test_a_locked_ledger_costs_placement_its_history_never_the_call(tmp_path: Path, make_settings: Any) -> None:
    settings: Settings = make_settings()
    prices = load_prices()
    led = await Ledger.open(tmp_path / "locked.db", busy_timeout_ms=20, busy_retries=1)
    state = AppState(settings, led, prices, PolicyHolder(settings.policy_path, known_models=prices.models))
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    doc = (("a.md", "word " * 4000),)
    try:
        other.execute("BEGIN IMMEDIATE")
        # No history to read: a one-off stays uncached, a fan-out's structural reuse still caches.
        alone = await placed_params(state, "claude-haiku-5-5", Prompt(prompt="q", documents=doc), max_tokens=8)
        assert "cache_control" not in str(alone)
        fan = await placed_params(
            state, "claude-haiku-5-5", Prompt(prompt="q", documents=doc), max_tokens=8, expect=Expect(reuses=3)
        )
        assert fan["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    finally:
        other.execute("ROLLBACK")
        other.close()
        await led.close()
