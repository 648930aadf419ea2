"""metered_call under cancellation: a host that gives up must not strand budget or lose a paid answer."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import TaskGroup
from mcp import Client

from helpers import query
from offload.config.pricing import load_prices
from offload.config.settings import Settings
from offload.core.errors import UpstreamError
from offload.core.pricing import Usage
from offload.core.request import Prompt, build_params
from offload.infra.detached import Detached, answered, host_closing, mark_answered
from offload.mcp.server import build_server
from offload.metering.metered import metered_call
from offload.state import open_state

pytestmark = pytest.mark.anyio


def _ledger_counts(db: Path) -> tuple[int, int, int]:
    held = query(db, "SELECT COUNT(*) FROM reservations")[0][0]
    rows, cost = query(db, "SELECT COUNT(*), COALESCE(SUM(cost_pusd), 0) FROM attempts")[0]
    return held, rows, cost


async def _settled(db: Path, timeout_s: float = 30) -> None:
    """Until no hold is left: every call in flight has been answered and recorded (or failed)."""
    with anyio.fail_after(timeout_s):
        while _ledger_counts(db)[0]:
            await anyio.sleep(0.05)


def _served_cost(emu: Any) -> tuple[int, int]:
    """Answers the emulator served, and their price from the usage it sent (the bill)."""
    prices = load_prices()
    served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
    return len(served), sum(prices.cost(str(r.model), Usage.from_api(r.usage)) for r in served)


async def test_a_cancelled_caller_stops_waiting_and_the_answer_it_paid_for_is_still_recorded(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # A cancel can't unbill a request the API is answering: the caller is let go at once, the
    # answer is recorded when it comes, and its hold is released then (not stranded, not lost).
    with running(faults="latency=800ms") as emu:
        settings = make_settings(emu.url)
        async with open_state(settings) as state:
            params = build_params("claude-haiku-5-5", Prompt(prompt="slow one"), max_tokens=100)
            started = time.monotonic()
            with anyio.move_on_after(0.3) as scope:
                await metered_call(state, "s1", tool="t", tier="cheap", params=params)
            assert scope.cancelled_caught
            assert time.monotonic() - started < 1.0  # not held until the answer came
            assert _ledger_counts(settings.db_path)[:2] == (1, 0)  # in flight: still held
            await _settled(settings.db_path)  # the answer comes, with nobody waiting for it
        assert _ledger_counts(settings.db_path) == (0, *_served_cost(emu))
        assert _served_cost(emu)[0] == 1


async def test_cancels_at_random_moments_over_mcp_lose_no_paid_answer(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # The window that lost answers: the API has answered (and billed) but the host's cancel lands
    # before the row is written. 24 concurrent calls over one server, each cancelled at a random
    # moment around the emulator's answer; every answer it served must be a row, priced the same.
    rng = random.Random(7)
    with running(faults="latency=120ms") as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as client:

            async def one(i: int) -> None:
                with anyio.move_on_after(rng.uniform(0.0, 0.3)):
                    args = {"prompt": f"Question {i}: " + "word " * 200, "tier": "premium", "max_tokens": 60}
                    await client.call_tool("routed_complete", args)

            async with anyio.create_task_group() as tg:
                for i in range(24):
                    tg.start_soon(one, i)
            await _settled(settings.db_path)  # calls whose callers left finish (not cut by the close)
        served, cost = _served_cost(emu)
        # Calls cancelled before their request left are never sent; the rest are carried to their
        # answer (before this fix, most were cut off and a few lost after being answered).
        assert served >= 8
        assert _ledger_counts(settings.db_path) == (0, served, cost)


async def test_a_closing_server_gives_calls_in_flight_a_grace_then_stops_them() -> None:
    detached = Detached()
    finished: list[str] = []
    stopped: list[str] = []

    async def work(seconds: float, name: str) -> str:
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            stopped.append(name)
            raise
        finished.append(name)
        return name

    results: dict[str, object] = {}

    async def call(seconds: float, name: str) -> None:
        try:
            results[name] = await detached.run(lambda: work(seconds, name))
        except UpstreamError as exc:
            results[name] = exc

    async with anyio.create_task_group() as tg, detached.open(grace_s=0.3):
        tg.start_soon(call, 0.1, "quick")
        tg.start_soon(call, 30.0, "slow")
        await anyio.sleep(0.01)
        assert detached.running == 2
    assert finished == ["quick"] and stopped == ["slow"]
    assert results["quick"] == "quick"
    assert "shutting down" in str(results["slow"])
    assert detached.running == 0


async def test_batch_submits_cancelled_at_random_moments_leave_no_hold_behind(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # A cancel that lands while the batch is being saved must give its worst case back: the
    # release in a cancelled scope never ran, and each such batch left its hold for 10 minutes.
    # Routed calls alongside keep the ledger's write lock busy, widening that window.
    rng = random.Random(3)
    with running(seed=1) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as client:

            async def submit(i: int) -> None:
                with anyio.move_on_after(rng.choice([x / 100 for x in range(5, 150, 3)])):
                    items = [f"thing {i}-{k}" for k in range(3)]
                    await client.call_tool("batch_submit", {"template": "Classify {item}", "items": items})

            async def noise(i: int) -> None:
                args = {"prompt": f"n{i} " + "w " * 50, "tier": "cheap", "max_tokens": 20}
                await client.call_tool("routed_complete", args)

            async with anyio.create_task_group() as tg:
                for i in range(30):
                    tg.start_soon(submit, i)
                    tg.start_soon(noise, i)
        stray = query(settings.db_path, "SELECT COUNT(*) FROM reservations WHERE host != 'batch'")[0][0]
        batches = query(settings.db_path, "SELECT COUNT(*) FROM batches")[0][0]
    assert 0 < batches < 30  # some were cancelled, some were saved
    assert stray == 0


def _until_stopped(stopped: list[str], name: str) -> Callable[[], Awaitable[str]]:
    """Work that waits on the API for good, and notes `name` in `stopped` when it is cut off."""

    async def work() -> str:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            stopped.append(name)
            raise
        return name

    return work


def _stuck(detached: Detached, stopped: list[str]) -> Callable[[], Coroutine[Any, Any, None]]:
    """A call through `detached` that waits on the API until it is stopped ("slow" in `stopped`)."""

    async def call() -> None:
        with contextlib.suppress(UpstreamError):
            await detached.run(_until_stopped(stopped, "slow"))

    return call


async def test_a_cancelled_close_stops_calls_in_flight_at_once() -> None:
    # SIGTERM after EOF: the host has lost patience, and a server killed while waiting would
    # leave its holds behind for its lease. The close stops waiting and stops the calls.
    detached = Detached()
    stopped: list[str] = []
    call = _stuck(detached, stopped)
    started = time.monotonic()
    with anyio.CancelScope() as outer:
        async with anyio.create_task_group() as tg, detached.open(grace_s=20):
            tg.start_soon(call)
            await anyio.sleep(0.05)
            outer.deadline = anyio.current_time() + 0.2  # the close below is cancelled 0.2 s in
    assert stopped == ["slow"]
    assert time.monotonic() - started < 5  # not the 20 s grace
    assert detached.running == 0


async def test_a_cancelled_redo_is_still_the_redo_a_repeat_of_it_is_told_not_paid_again(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    # The redo's rung is paid whatever the host does; its claim on the earlier call must stand
    # until that answer is recorded, or the same redo_of sent again pays for a second redo.
    with running(seed=12, faults="latency=400ms") as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as client:
            first = await client.call_tool("routed_complete", {"prompt": "What is 2+2?", "tier": "cheap"})
            call_id = first.structured_content["call_id"] if first.structured_content else ""
            with anyio.move_on_after(0.1) as scope:
                await client.call_tool("routed_complete", {"redo_of": call_id, "reason": "wrong"})
            assert scope.cancelled_caught
            again = await client.call_tool("routed_complete", {"redo_of": call_id, "reason": "wrong"})
            assert again.is_error and "already running" in again.content[0].text  # type: ignore[union-attr]
            await anyio.sleep(1.0)  # the redo's answer is in
            later = await client.call_tool("routed_complete", {"redo_of": call_id, "reason": "wrong"})
            assert later.is_error and "already redone as rc_" in later.content[0].text  # type: ignore[union-attr]
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
    assert [r.model for r in served] == ["claude-haiku-5-5", "claude-sonnet-5-5"]  # one redo, paid once
    redos = query(settings.db_path, "SELECT COUNT(*) FROM calls WHERE redo_of = ?", call_id)[0][0]
    verdict = query(settings.db_path, "SELECT verdict FROM calls WHERE call_id = ?", call_id)[0][0]
    assert (redos, verdict) == (1, "redone")


def _answered_and_waiting(detached: Detached) -> tuple[list[str], list[str], Callable[[TaskGroup], None]]:
    """(finished, stopped, start): `start(tg)` runs two calls through `detached`: one the API is
    answering (0.15 s to read, inside ANSWERED_GRACE_S) and one still waiting for it."""
    finished: list[str] = []
    stopped: list[str] = []

    async def being_answered() -> str:
        mark_answered()
        await anyio.sleep(0.15)
        finished.append("answered")
        return "answered"

    async def call(work: Callable[[], Any]) -> None:
        with contextlib.suppress(UpstreamError):
            await detached.run(work)

    def start(tg: TaskGroup) -> None:
        tg.start_soon(call, being_answered)
        tg.start_soon(call, _until_stopped(stopped, "waiting"))

    return finished, stopped, start


async def test_past_the_grace_a_call_the_api_is_answering_is_let_finish_the_rest_stop() -> None:
    # At the cut, a call whose answer has begun to arrive is billed: it gets a moment more to be
    # read and recorded. A call still waiting for the API is stopped (its hold is released).
    detached = Detached()
    finished, stopped, start = _answered_and_waiting(detached)
    async with anyio.create_task_group() as tg, detached.open(grace_s=0.05):
        start(tg)
        await anyio.sleep(0.01)
    assert (finished, stopped) == (["answered"], ["waiting"])


async def test_a_cancel_around_the_server_still_lets_a_call_being_answered_be_recorded() -> None:
    # SIGTERM while the session is still open cancels the server from outside: a call the API is
    # answering (billed) is reached only by the close's stop, which lets it finish; before, the
    # outer cancel cut it off first and its paid answer was never recorded.
    detached = Detached()
    finished, stopped, start = _answered_and_waiting(detached)
    with anyio.CancelScope() as outer:
        async with detached.open(grace_s=20), anyio.create_task_group() as tg:
            start(tg)
            await anyio.sleep(0.01)
            outer.cancel()
            await anyio.sleep(5)
    assert (finished, stopped) == (["answered"], ["waiting"])
    assert detached.running == 0


async def test_the_api_client_marks_a_call_answered_when_its_answer_begins(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running() as emu:
        async with open_state(make_settings(emu.url)) as state:
            params = build_params("claude-haiku-5-5", Prompt(prompt="hello"), max_tokens=50)

            async def call() -> tuple[bool, bool]:
                before = answered()
                await state.claude().create(params)
                return before, answered()

            assert await state.detached.run(call) == (False, True)


async def test_the_close_s_grace_counts_from_when_the_host_began_closing() -> None:
    # The stdio transport waits up to 0.5 s at EOF for answers to what was asked: that wait is
    # part of the grace, not added to it, or a close ran past the 2 s a host gives (2.1-2.6 s).
    detached = Detached()
    stopped: list[str] = []
    call = _stuck(detached, stopped)
    async with anyio.create_task_group() as tg, detached.open(grace_s=1.0):
        tg.start_soon(call)
        await anyio.sleep(0.01)
        host_closing()
        await anyio.sleep(0.8)  # the transport's wait, then the server's close begins
        began = time.monotonic()
    assert stopped == ["slow"]
    assert time.monotonic() - began < 0.8  # what was left of the grace (0.2 s), not all of it
