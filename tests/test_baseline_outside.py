"""The reported baseline, checked from outside: the same stream sent to the baseline model.

A family's calls spread over tiers (each with its own cache and placement history) are priced as
the baseline model would have cached them; the check is the ledger's baseline against what the
emulator charges for the same calls forced to the baseline model (premium), on a fresh emulator
and ledger. Each stream is timed so that which calls overlap does not hang on the machine's speed:
either every call is answered before the next leaves, or all leave before any answer begins.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from emulator_fixtures import running
from helpers import query
from offload.config.settings import Settings
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

# One family's shared system prompt, long enough for every tier to cache (> 2,048 tokens).
SYSTEM = "You help a coding agent with code sub-tasks.\n" + "".join(
    f"- Guideline {i}: be exact, cite the file and line, keep it short.\n" for i in range(150)
)


async def _stream(settings: Settings, tiers: list[str], gap_s: float) -> tuple[int, int]:
    """(offload's cost, its reported baseline) for `tiers` sent `gap_s` apart, in pusd."""
    async with Client(build_server(settings)) as client:

        async def one(i: int) -> None:
            await anyio.sleep(i * gap_s)
            args = {"prompt": f"code question {i}: why", "system": SYSTEM, "tier": tiers[i], "max_tokens": 50}
            result = await client.call_tool("routed_complete", args)
            assert not result.is_error, result.content

        async with anyio.create_task_group() as tg:
            for i in range(len(tiers)):
                tg.start_soon(one, i)
    row = query(settings.db_path, "SELECT SUM(cost_pusd) AS cost, SUM(baseline_pusd) AS base FROM attempts")[0]
    return int(row["cost"]), int(row["base"])


@pytest.mark.parametrize(
    ("pattern", "gap_s", "latency"),
    [
        ("csp", 0.6, "100ms"),  # one after another, three tiers in turn: each tier's first two uncached
        ("cs", 0.6, "100ms"),
        ("cs", 0.05, "1500ms"),  # a fan-out: all six leave before any answer begins
    ],
)
async def test_the_reported_baseline_is_what_the_baseline_model_is_charged_for_the_same_stream(
    make_settings: Callable[..., Settings], tmp_path: Path, pattern: str, gap_s: float, latency: Any
) -> None:
    names = {"c": "cheap", "s": "standard", "p": "premium"}
    tiers = [names[pattern[i % len(pattern)]] for i in range(6)]
    with running(faults=f"latency={latency}") as emu:
        mixed = make_settings(emu.url, db_path=tmp_path / "mixed.db")
        cost, reported = await _stream(mixed, tiers, gap_s)
    with running(faults=f"latency={latency}") as emu:
        alone = make_settings(emu.url, db_path=tmp_path / "premium.db")
        measured, _ = await _stream(alone, ["premium"] * 6, gap_s)
    # Before this was fixed the reported baseline was 1.71x (three tiers), 1.36x (two) and 0.97x
    # (the fan-out) of the measured one; now within 0.4%: the user turn's few tokens, which stand
    # in for the system prompt's size until a call caches exactly it.
    assert abs(reported - measured) <= measured // 100, (reported, measured, cost)
