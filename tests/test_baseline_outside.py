"""The reported baseline, checked from outside: the same stream sent to the baseline model.

A family's calls spread over tiers (each with its own cache and placement history) are priced as
the baseline model would have cached them; the check is the ledger's baseline against what the
emulator charges for the same calls forced to the baseline model (premium), on a fresh emulator
and ledger. Each stream is timed so that which calls overlap does not hang on the machine's speed:
either every call is answered before the next leaves, or all leave before any answer begins.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from emulator_fixtures import running
from helpers import query
from offload.config.settings import Settings, shipped
from offload.core.baseline_cache import BaselineCache
from offload.mcp.server import build_server
from offload.services import routed
from offload.state import open_state
from offload_emulator.clock import Clock

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


async def _streamed_then_short(settings: Settings, tiers: tuple[str, str]) -> tuple[int, int]:
    """A family's first call; then a long streamed answer, and a short call sent while it streams
    (after its answer began) that is answered before it ends. (cost, reported baseline), pusd."""
    base = {"system": SYSTEM, "max_tokens": 50}
    async with Client(build_server(settings)) as client:
        first = await client.call_tool("routed_complete", {**base, "prompt": "code question 0", "tier": tiers[0]})
        assert not first.is_error, first.content
        async with anyio.create_task_group() as tg:
            # Over the SDK's non-streaming limit: offload streams it (infra/claude.py).
            long = {**base, "prompt": "code question 1", "tier": tiers[0], "max_tokens": 30_000}
            tg.start_soon(client.call_tool, "routed_complete", long)
            await anyio.sleep(1.0)  # its headers are in: the answer has begun
            short = await client.call_tool("routed_complete", {**base, "prompt": "code question 2", "tier": tiers[1]})
            assert not short.is_error, short.content
    rows = query(settings.db_path, "SELECT cost_pusd, baseline_pusd FROM attempts ORDER BY id")
    assert len(rows) == 3
    return sum(int(r["cost_pusd"]) for r in rows), sum(int(r["baseline_pusd"]) for r in rows)


async def test_a_call_sent_while_another_streams_reads_what_that_one_began_to_write(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # The API serves a prefix once the response writing it has begun: the short call reads what
    # the streamed one writes (on the baseline model), though it is priced before that one ends.
    with running(stream_delay_s=0.6) as emu:
        cost, reported = await _streamed_then_short(
            make_settings(emu.url, db_path=tmp_path / "m.db"), ("cheap", "standard")
        )
    with running(stream_delay_s=0.6) as emu:
        measured, _ = await _streamed_then_short(
            make_settings(emu.url, db_path=tmp_path / "p.db"), ("premium", "premium")
        )
    assert abs(reported - measured) <= measured // 100, (reported, measured, cost)


# Streams on the emulator's clock, one call after another (its clock frozen, moved between calls):
# gaps of minutes to an hour without waiting for them.
T0 = 1_800_000_000.0


async def _clocked(
    tmp: Path, calls: list[tuple[float, dict[str, Any]]], *, placement: str = "", faults: str = ""
) -> Any:
    """(cost, reported baseline) of `calls` ((seconds from the start, routed_complete arguments))."""
    policy = tmp / "policy.yaml"
    text = shipped("default.yaml").read_text()
    if placement:
        text = text.replace("caching:\n  ttl: 5m\n", f"caching:\n  placement: {placement}\n  ttl: 5m\n")
    policy.write_text(text)
    clock = Clock(start=T0, frozen=not faults)
    with running(clock=clock, faults=faults or None) as emu:
        settings = Settings(
            policy_path=policy, db_path=tmp / "ledger.db", session_id="s", roots=(tmp,), api_key="k", base_url=emu.url
        )
        async with open_state(settings) as state:
            # The server's own clocks on the emulator's timeline (what a bench does to skip the waits).
            state.clock = lambda: datetime.fromtimestamp(clock.now(), UTC)
            state.baseline_cache = BaselineCache(clock=clock.now)

            async def one(at: float, args: dict[str, Any]) -> None:
                if faults:
                    await anyio.sleep(at)
                else:
                    clock.advance(max(0.0, T0 + at - clock.now()))
                await routed.routed_complete(state, "s", routed.RoutedArgs(**args))

            if faults:
                async with anyio.create_task_group() as tg:
                    for at, args in calls:
                        tg.start_soon(one, at, args)
            else:
                for at, args in calls:
                    await one(at, args)
    row = query(tmp / "ledger.db", "SELECT SUM(cost_pusd) AS cost, SUM(baseline_pusd) AS base FROM attempts")[0]
    return int(row["cost"]), int(row["base"])


def _calls(tiers: str, gap_s: float, system: str = SYSTEM, prompt: Callable[[int], str] = str) -> list[Any]:
    names = {"c": "cheap", "s": "standard", "p": "premium"}
    return [
        (i * gap_s, {"prompt": f"question {prompt(i)}", "system": system, "tier": names[t], "max_tokens": 50})
        for i, t in enumerate(tiers)
    ]


@pytest.mark.parametrize("gap_s", [100.0, 400.0, 1000.0])
async def test_a_stream_on_the_baseline_model_itself_reports_its_own_cost(tmp_path: Path, gap_s: float) -> None:
    # Here offload's cost is the baseline. Calls more than five minutes apart were priced as
    # reads of a cache the baseline model would not have kept (0.57x at 400 s): the baseline's
    # placement is now offload's own rule on the sends of every tier.
    cost, reported = await _clocked(tmp_path, _calls("pppppp", gap_s))
    assert reported == cost


async def test_a_stream_with_gaps_of_minutes_across_tiers(tmp_path: Path) -> None:
    (tmp_path / "mixed").mkdir()
    (tmp_path / "premium").mkdir()
    _, reported = await _clocked(tmp_path / "mixed", _calls("cspcspcspc", 400.0))
    measured, _ = await _clocked(tmp_path / "premium", _calls("pppppppppp", 400.0))
    assert abs(reported - measured) <= measured // 100, (reported, measured)  # 1.40x before


SHORT_SYSTEM = "You summarise diffs.\n" + "".join(f"- Rule {i}: keep it short and exact.\n" for i in range(10))


def _diff(i: int) -> str:
    return f"{i}:\n" + "".join(f"+ line {i}-{j}: changed value {j * i} in module m{j}\n" for j in range(150))


@pytest.mark.parametrize("placement", ["", "never"])
async def test_a_short_system_prompt_with_long_prompts_is_not_taken_for_a_cached_one(
    tmp_path: Path, placement: str
) -> None:
    # A system prompt below every model's minimum cacheable length, each prompt long and new: the
    # baseline caches nothing. Sizes were bounded by a whole prompt, priced as written and read
    # (0.36x); with `placement: never` the baseline was cached though nothing is (0.34x).
    (tmp_path / "mixed").mkdir()
    (tmp_path / "premium").mkdir()
    calls = _calls("cscscscs", 20.0, system=SHORT_SYSTEM, prompt=_diff)
    _, reported = await _clocked(tmp_path / "mixed", calls, placement=placement)
    premium = _calls("pppppppp", 20.0, system=SHORT_SYSTEM, prompt=_diff)
    measured, _ = await _clocked(tmp_path / "premium", premium, placement=placement)
    assert abs(reported - measured) <= measured // 100, (reported, measured)


async def test_a_retried_request_is_the_baseline_s_request_when_it_left_again(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # On the baseline model itself (so its cost is the baseline): A writes the system prompt; B
    # leaves before A's answer begins, is refused (529) and retried by the SDK after it began, so
    # B's retry reads. B was priced from its first try's time, as a write (1.2-2.2x under load).
    base = {"system": SYSTEM, "tier": "premium", "max_tokens": 50}
    with running(faults="latency=300ms") as emu:
        async with Client(build_server(make_settings(emu.url))) as client:
            assert not (await client.call_tool("routed_complete", {**base, "prompt": "question 0"})).is_error
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.call_tool, "routed_complete", {**base, "prompt": "question 1"})
                await anyio.sleep(0.05)  # A is with the API (its 0.3 s latency has begun)
                emu.state.faults.force(529)  # the next request, B's first try, is refused
                late = await client.call_tool("routed_complete", {**base, "prompt": "question 2"})
                assert not late.is_error, late.content
        statuses = [r.status for r in emu.state.calls("/v1/messages", "POST")]
    assert statuses.count(529) == 1 and statuses.count(200) == 3, statuses
    rows = query(tmp_path / "ledger.db", "SELECT cost_pusd, baseline_pusd, cache_read FROM attempts ORDER BY id")
    assert rows[-1]["cache_read"] > 0  # B's retry read what A wrote
    assert [r["baseline_pusd"] for r in rows] == [r["cost_pusd"] for r in rows]


MID_SYSTEM = "You are a careful summariser of engineering documents.\n" + "".join(
    f"- Rule {i}: quote the section number, keep each bullet under twenty words, never guess about item {i}.\n"
    for i in range(40)
)  # about 1,300 tokens: the baseline model caches it (512 and up), the cheap tier never does (2,048)


def _document(i: int) -> str:
    return f"Document {i}:\n" + "".join(
        f"Section {i}.{j}: the service handled {j * i} requests with latency {j + i} ms.\n" for j in range(100)
    )


@pytest.mark.parametrize(("tiers", "gap_s"), [("cccccccc", 20.0), ("cscscscs", 400.0)])
async def test_a_system_prompt_no_tier_caches_yet_is_counted_not_guessed(
    tmp_path: Path, tiers: str, gap_s: float
) -> None:
    # Its size was bounded by a whole request (system prompt and document) and never settled, as
    # no call cached it: 0.38x on the cheap tier alone. The API's free count_tokens now tells it
    # once. Across tiers, 400 s apart: hour-long writes were settled at the 5-minute rate (1.09x).
    (tmp_path / "mixed").mkdir()
    (tmp_path / "premium").mkdir()
    calls = _calls(tiers, gap_s, system=MID_SYSTEM, prompt=_document)
    _, reported = await _clocked(tmp_path / "mixed", calls)
    measured, _ = await _clocked(tmp_path / "premium", _calls("p" * len(tiers), gap_s, MID_SYSTEM, _document))
    assert abs(reported - measured) <= measured // 100, (reported, measured)


async def test_placement_always_is_the_baseline_s_placement_too(tmp_path: Path) -> None:
    # `caching.placement: always` writes every send for five minutes: 400 s apart, each a new
    # write. The baseline had applied the adaptive rule instead (an hour's write, then reads: 0.49x).
    (tmp_path / "mixed").mkdir()
    (tmp_path / "premium").mkdir()
    _, reported = await _clocked(tmp_path / "mixed", _calls("cscscs", 400.0), placement="always")
    measured, _ = await _clocked(tmp_path / "premium", _calls("pppppp", 400.0), placement="always")
    assert abs(reported - measured) <= measured // 100, (reported, measured)
