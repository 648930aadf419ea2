"""Pytest helpers for code that talks to the emulator.

Use from a conftest: ``from emulator_fixtures import emulator  # noqa: F401``,
or call ``running(...)`` directly for a custom configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from offload_emulator.config import EmulatorConfig
from offload_emulator.server import EmulatorHandle, serve_in_thread


def running(**overrides: Any) -> Any:
    """``with running(seed=1, faults="429=0.2") as emu:`` — an emulator with fast defaults."""
    options: dict[str, Any] = {"seed": 1, "batch_delay_s": 0.2}
    options.update(overrides)
    return serve_in_thread(EmulatorConfig(**options))


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    """A fresh emulator per test (seed 1, 0.2 s batch delay, fast retry hints)."""
    with running() as emu:
        yield emu
