"""Parallel requests and the prompt cache.

Prompt caching docs (https://platform.claude.com/docs/en/build-with-claude/prompt-caching):
"For concurrent requests, note that a cache entry only becomes available after the first
response begins. If you need cache hits for parallel requests, wait for the first response
before sending subsequent requests."
"""

from __future__ import annotations

from typing import Any

import anthropic
import anyio
import pytest

from emulator_fixtures import running

SONNET = "claude-sonnet-5-5"
SYSTEM = [{"type": "text", "text": " ".join(f"fact{i}" for i in range(900)), "cache_control": {"type": "ephemeral"}}]


async def ask(c: anthropic.AsyncAnthropic, i: int) -> Any:
    msg = await c.messages.create(
        model=SONNET,
        max_tokens=5,
        system=SYSTEM,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": f"question {i}"}],
    )
    return msg.usage


@pytest.mark.anyio
async def test_requests_started_together_all_miss_and_each_pays_the_write() -> None:
    # Every request waits 300 ms after arriving before it is answered, so all four have
    # arrived before the first response begins.
    with running(faults="latency=300ms") as emu:
        async with anthropic.AsyncAnthropic(base_url=emu.url, api_key="k", max_retries=0) as c:
            usages: list[Any] = [None] * 4

            async def one(i: int) -> None:
                usages[i] = await ask(c, i)

            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(one, i)
            assert all(u.cache_read_input_tokens == 0 for u in usages)
            assert all(u.cache_creation_input_tokens > 0 for u in usages)
            # Sent after those responses: it reads.
            later = await ask(c, 9)
            assert later.cache_read_input_tokens == usages[0].cache_creation_input_tokens


@pytest.mark.anyio
async def test_waiting_for_the_first_response_lets_the_rest_read() -> None:
    with running(faults="latency=300ms") as emu:
        async with anthropic.AsyncAnthropic(base_url=emu.url, api_key="k", max_retries=0) as c:
            first = await ask(c, 0)
            usages: list[Any] = [None] * 3

            async def one(i: int) -> None:
                usages[i] = await ask(c, i + 1)

            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(one, i)
    assert first.cache_creation_input_tokens > 0
    assert all(u.cache_read_input_tokens == first.cache_creation_input_tokens for u in usages)
    assert all(u.cache_creation_input_tokens == 0 for u in usages)
