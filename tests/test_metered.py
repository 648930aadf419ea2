"""metered_call under cancellation: a host that gives up must not strand budget or lose a cost."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from offload.config.settings import Settings
from offload.core.request import Prompt, build_params
from offload.metering.metered import metered_call
from offload.state import open_state

pytestmark = pytest.mark.anyio


async def test_a_call_cancelled_in_flight_frees_its_reservation(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running(faults="latency=1500ms") as emu:
        settings = make_settings(emu.url)
        async with open_state(settings) as state:
            params = build_params("claude-haiku-5-5", Prompt(prompt="slow one"), max_tokens=100)
            with anyio.move_on_after(0.5) as scope:
                await metered_call(state, "s1", tool="t", tier="cheap", params=params)
            assert scope.cancelled_caught
    conn = sqlite3.connect(settings.db_path)
    held = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
    rows = conn.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    conn.close()
    assert (held, rows) == (0, 0)
