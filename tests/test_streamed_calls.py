"""Long answers stream, and a stream that breaks is recorded once, never twice.

The SDK requires streaming for a request it expects to outlast its 10-minute timeout:
3,600 s x max_tokens / 128,000 > 600 s, i.e. max_tokens > 21,333 (anthropic-sdk-python,
src/anthropic/_base_client.py `_calculate_nonstreaming_timeout`; errors page: "Consider using
the streaming Messages API ... for long running requests, especially those over 10 minutes").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from helpers import ledger_rows
from helpers import query as db_rows
from offload.config.settings import Settings
from offload.infra.claude import STREAM_ABOVE_MAX_TOKENS
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

OFFLOAD = shutil.which("offload") or str(Path(sys.executable).with_name("offload"))
LONG_REPLY = " ".join(f"word{i}" for i in range(4000))


def routed(max_tokens: int) -> dict[str, Any]:
    return {"prompt": "Write the long report.", "tier": "cheap", "max_tokens": max_tokens}


async def test_a_large_max_tokens_streams_and_is_billed_like_the_plain_call(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    assert STREAM_ABOVE_MAX_TOKENS == 21_333  # 3600 * 21_333 / 128_000 = 599.99 s; 21_334 is past 600 s
    with running(script=[{"reply": LONG_REPLY}]) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            for max_tokens in (STREAM_ABOVE_MAX_TOKENS, STREAM_ABOVE_MAX_TOKENS + 1):
                result = await c.call_tool("routed_complete", routed(max_tokens))
                assert not result.is_error, result
                assert LONG_REPLY[-40:] in result.content[0].text  # type: ignore[union-attr]
        calls = [r for r in emu.state.calls("/v1/messages") if r.status == 200]
    assert [bool(r.body.get("stream")) for r in calls] == [False, True]
    rows = ledger_rows(settings.db_path)
    assert len(rows) == 2
    for row, call in zip(rows, calls, strict=True):
        assert call.usage is not None
        assert (row["input_tokens"], row["output_tokens"]) == (call.usage["input_tokens"], call.usage["output_tokens"])
    # The same prompt and answer: the streamed call is billed exactly as the plain one.
    assert rows[0]["cost_pusd"] == rows[1]["cost_pusd"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def emulator_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, threading.Event]]:
    """`offload emulator` streaming slowly; the event is set once a Messages response has begun."""
    script = tmp_path / "script.yaml"
    script.write_text(f'- reply: "{LONG_REPLY}"\n')
    port = _free_port()
    proc = subprocess.Popen(
        [OFFLOAD, "emulator", "--port", str(port), "--script", str(script), "--stream-delay", "0.02", "-v"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    began = threading.Event()

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # uvicorn logs a request when its response starts
            if '"POST /v1/messages HTTP/1.1" 200' in line:
                began.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.05)
        yield proc, f"http://127.0.0.1:{port}", began
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        watcher.join(10)  # stderr is at EOF once the process is gone
        assert proc.stderr is not None
        proc.stderr.close()


async def test_killing_the_api_mid_stream_leaves_one_ledger_row_not_two(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with emulator_process(tmp_path) as (proc, url, began):
        settings = make_settings(url)
        async with Client(build_server(settings)) as c:
            outcome: list[Any] = []

            async def call() -> None:
                outcome.append(await c.call_tool("routed_complete", routed(30_000)))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                with anyio.fail_after(30):
                    while not began.is_set():
                        await anyio.sleep(0.02)
                await anyio.sleep(0.3)  # some text has streamed
                os.kill(proc.pid, signal.SIGKILL)
            (result,) = outcome
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert result.is_error
    assert "stream broke off" in result.content[0].text
    rows = ledger_rows(settings.db_path)
    # The prompt was read and some answer generated before the break: billed once, recorded once.
    assert len(rows) == 1
    (row,) = rows
    assert row["outcome"] == "dropped" and row["input_tokens"] > 0 and row["cost_pusd"] > 0
    assert db_rows(settings.db_path, "SELECT * FROM reservations") == []
