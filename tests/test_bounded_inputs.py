"""Inputs that used to stall the server get a clear error or a result within a stated bound
(README "Limits"), and another client is answered meanwhile.

Real parts: the in-memory MCP client and server, the SDK to the emulator, SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from mcp import Client

from offload.config.settings import Settings
from offload.mcp.server import build_server
from offload.trim import identifiers
from offload.trim.jsondoc import MAX_JMESPATH_CHARS, MAX_JMESPATH_GROWTH
from reliability.conftest import is_generic_error, result_text

pytestmark = pytest.mark.anyio

DOC = '{"items": [{"id": 1, "name": "a", "tags": ["x"]}, {"id": 2, "name": "b", "tags": []}], "next": null}'


def _bomb(levels: int) -> str:
    return " | ".join(["{a: @, b: @}"] * levels)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        (_bomb(20), f"more than {MAX_JMESPATH_GROWTH} times"),
        ("[" * 600 + "@" + "]" * 600, "limit"),
        ("a." * (MAX_JMESPATH_CHARS // 2 + 1) + "b", f"limit is {MAX_JMESPATH_CHARS:,}"),
    ],
)
async def test_a_jmespath_bomb_gets_a_clear_error_at_once(
    make_settings: Callable[..., Settings], fields: str, says: str
) -> None:
    async with Client(build_server(make_settings())) as c:
        t0 = time.monotonic()
        result = await c.call_tool("trim_result", {"content": DOC, "fields": fields})
        took = time.monotonic() - t0
    text = result_text(result)
    assert result.is_error and says in text and not is_generic_error(text), text
    assert took < 2, took


async def test_ordinary_jmespath_still_works(make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings())) as c:
        result = await c.call_tool("trim_result", {"content": DOC, "fields": "items[].{id: id, name: name} | [0]"})
    assert not result.is_error, result_text(result)
    assert '"id": 1' in result_text(result) or '"id":1' in result_text(result)


def _many_long_urls(size: int) -> str:
    lines, n, i = [], 0, 0
    while n < size:
        line = "see https://example.com/" + "segment/" * 15 + f"{i} and src/mod{i}/file{i}.py:{i} E{1000 + i % 9000}"
        lines.append(line)
        n += len(line) + 1
        i += 1
    return "\n".join(lines)


def test_identifier_restore_is_linear_on_ten_megabytes() -> None:
    text = _many_long_urls(10_000_000)
    found = identifiers.extract(text)
    t0 = time.monotonic()
    restored = identifiers.restore(identifiers.missing(found, "a short summary"))
    took = time.monotonic() - t0
    assert len(found) > 50_000 and restored.restored and restored.omitted > 0
    assert took < 2, took  # README Limits: identifier restore within 1 s on 10 MB (quadratic: minutes)


async def test_summarize_ten_megabytes_answers_and_others_are_served_meanwhile(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    text = _many_long_urls(10_000_000)
    with running() as emu:
        async with Client(build_server(make_settings(emu.url)), read_timeout_seconds=300) as c:
            waits: list[float] = []

            async def other_client() -> None:
                await anyio.sleep(0.5)
                for _ in range(10):
                    t0 = time.monotonic()
                    assert not (await c.call_tool("budget_status", {"scope": "session"})).is_error
                    waits.append(time.monotonic() - t0)
                    await anyio.sleep(0.2)

            t0 = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(other_client)
                result = await c.call_tool("summarize_context", {"text": text})
            took = time.monotonic() - t0
    assert not result.is_error, result_text(result)[:500]
    assert "Kept verbatim:" in result_text(result)
    assert took < 120, took
    assert max(waits) < 3, waits
