"""Checks can't hurt: a broken schema costs no call, a check that breaks after the call still
returns and records the paid answer, schemas fetch nothing, caller regexes are time-bounded.

Real parts: the in-memory MCP client, the real server, the SDK over HTTP to the emulator, SQLite.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
from mcp import Client

from helpers import query
from offload.config.settings import Settings
from offload.core.safe_regex import MAX_PATTERN_CHARS
from offload.mcp.server import build_server
from reliability.conftest import is_generic_error, result_text

pytestmark = pytest.mark.anyio

EVIL = r"(a|aa)+$"  # exponential backtracking on "aaa...ab"
EVIL_ANSWER = "a" * 60 + "b"


def _served(emu: Any) -> int:
    return len([r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200])


@contextmanager
def _listener() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback TCP listener that records every connection it gets."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.1)
    got: list[bytes] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            got.append(conn.recv(1024))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], got
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": 12}, "not a valid JSON Schema"),
        ({"$ref": "#/$defs/missing"}, "does not resolve"),
        ({"$ref": "#"}, "refers to itself"),
        (
            {
                "$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}},
                "$ref": "#/$defs/a",
            },
            "refers to itself",
        ),
        ({"$ref": "file:///etc/passwd"}, "fetches no URLs or files"),
        ({"type": "string", "pattern": "a" * (MAX_PATTERN_CHARS + 1)}, f"limit is {MAX_PATTERN_CHARS:,}"),
        ({"type": "string", "pattern": "(unclosed"}, "is not a 'regex'"),
    ],
)
async def test_a_broken_schema_is_refused_before_any_call(
    running: Callable[..., Any], make_settings: Callable[..., Settings], schema: dict[str, Any], says: str
) -> None:
    with running() as emu:
        async with Client(build_server(make_settings(emu.url))) as c:
            result = await c.call_tool("routed_complete", {"prompt": "give JSON", "response_schema": schema})
        calls = emu.state.calls("/v1/messages", "POST")
    text = result_text(result)
    assert result.is_error and says in text and not is_generic_error(text), text
    assert calls == []


async def test_a_remote_ref_makes_no_request(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with _listener() as (port, got), running() as emu:
        schema = {"$ref": f"http://127.0.0.1:{port}/schema.json"}
        async with Client(build_server(make_settings(emu.url))) as c:
            result = await c.call_tool("routed_complete", {"prompt": "give JSON", "response_schema": schema})
        await anyio.sleep(0.3)
    assert result.is_error and "fetches no URLs" in result_text(result)
    assert got == []


async def test_a_recursive_schema_that_descends_still_works(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    tree = {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}, "required": ["kids"]}
    with running(script=[{"reply": '{"kids": [{"kids": []}]}'}]) as emu:
        async with Client(build_server(make_settings(emu.url))) as c:
            result = await c.call_tool(
                "routed_complete", {"prompt": "tree", "response_schema": tree, "tier": "premium"}
            )
    assert not result.is_error, result_text(result)
    assert result.structured_content is not None and result.structured_content["check_passed"] is True


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        ({"must_match": EVIL}, EVIL_ANSWER),
        ({"response_schema": {"type": "string", "pattern": EVIL}}, f'"{EVIL_ANSWER}"'),
        (
            {"response_schema": {"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False}},
            f'{{"{EVIL_ANSWER}": 1}}',
        ),
        ({"response_schema": {"type": "array"}}, "[" * 100_000 + "]" * 100_000),  # nested past the recursion limit
    ],
)
async def test_a_check_that_breaks_on_the_answer_returns_and_records_it(
    running: Callable[..., Any], make_settings: Callable[..., Settings], args: dict[str, Any], reply: str
) -> None:
    settings = make_settings(None)
    with running(script=[{"reply": reply}]) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            status_times: list[float] = []

            async def other_client() -> None:
                for _ in range(5):
                    t0 = time.monotonic()
                    assert not (await c.call_tool("budget_status", {"scope": "session"})).is_error
                    status_times.append(time.monotonic() - t0)

            t0 = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(other_client)
                result = await c.call_tool("routed_complete", {"prompt": "check me", "tier": "premium", **args})
            took = time.monotonic() - t0
        served = _served(emu)
    text = result_text(result)
    assert not result.is_error, text
    assert text.startswith(reply[:50]) and "check failed" in text.splitlines()[-1]
    assert took < 5, took  # the stated bound is 1 s per check; generous under a loaded CI
    assert max(status_times) < 2, status_times
    assert len(query(settings.db_path, "SELECT * FROM attempts")) == served == 1
    assert query(settings.db_path, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0


async def test_an_oversized_must_match_is_refused_naming_the_limit(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    with running() as emu:
        async with Client(build_server(make_settings(emu.url))) as c:
            result = await c.call_tool("routed_complete", {"prompt": "x", "must_match": "a" * 5000})
        calls = emu.state.calls("/v1/messages", "POST")
    assert result.is_error and f"limit is {MAX_PATTERN_CHARS:,}" in result_text(result)
    assert calls == []
