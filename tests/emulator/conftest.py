from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anthropic
import pytest

from emulator_fixtures import emulator
from offload_emulator.server import EmulatorHandle

__all__ = ["emulator"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def client(emulator: EmulatorHandle) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.url, api_key="test-key") as c:
        yield c


@pytest.fixture
async def aclient(emulator: EmulatorHandle) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=emulator.url, api_key="test-key") as c:
        yield c
