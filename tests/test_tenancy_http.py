"""Tenants over HTTP: token B cannot see or touch anything token A made, through any tool, and
the budget session comes from what the server vouches for, not from a client header.

Real parts: the app under uvicorn on loopback, the real mcp client over streamable HTTP, the
SDK to the emulator (batches included), a real SQLite ledger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from helpers import query, server_env, uvicorn_serving
from offload.config.settings import Settings
from offload.mcp.http import BindError, bind_socket, build_http_app, check_bind
from reliability.conftest import is_generic_error, result_text

pytestmark = pytest.mark.anyio

VENV_BIN = Path(sys.executable).parent
TOKEN_A = "tok-A-8f3c1e9d2b7a4c6e5d1f0a9b8c7d6e5f"
TOKEN_B = "tok-B-1d5e7f9a3c2b4e6d8f0a1b2c3d4e5f6a"


def _settings(tmp_path: Path, base_url: str) -> Settings:
    return Settings.from_env(
        {
            "HOME": str(tmp_path),
            "OFFLOAD_DB": str(tmp_path / "ledger.db"),
            "OFFLOAD_ROOTS": str(tmp_path),
            "OFFLOAD_SESSION": "srv",
            "OFFLOAD_HTTP_TOKENS": f"{TOKEN_A},{TOKEN_B}",
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": base_url,
        }
    )


@asynccontextmanager
async def client(url: str, token: str, *, mode: str = "auto", **headers: str) -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client(headers={"Authorization": f"Bearer {token}", **headers}) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as c,
    ):
        yield c


def _not_found(result: Any, what: str) -> None:
    text = result_text(result)
    assert result.is_error and not is_generic_error(text), text
    assert what in text, text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_token_b_sees_and_touches_nothing_token_a_made(
    running: Callable[..., Any], tmp_path: Path, mode: str
) -> None:
    doc = '{"items": [' + ",".join(f'{{"id": {i}, "secret": "A-only-{i}"}}' for i in range(200)) + "]}"
    with running(batch_delay_s=3600) as emu, uvicorn_serving(build_http_app(_settings(tmp_path, emu.url))) as url:
        async with client(url, TOKEN_A, mode=mode) as a:
            made = await a.call_tool("batch_submit", {"template": "Classify: {item}", "items": ["x", "y"]})
            assert not made.is_error, result_text(made)
            batch_id = made.structured_content["batch_id"]
            trimmed = await a.call_tool("trim_result", {"content": doc, "max_tokens": 60})
            handle = trimmed.structured_content["handle"]
            own_list = await a.call_tool("batch_status", {})
            own_one = await a.call_tool("batch_status", {"batch_id": batch_id})
            own_handle = await a.call_tool("trim_result", {"handle": handle, "fields": "items[0]"})
            own_budget = await a.call_tool("budget_status", {})
        async with client(url, TOKEN_B, mode=mode) as b:
            listed = await b.call_tool("batch_status", {})
            one = await b.call_tool("batch_status", {"batch_id": batch_id})
            results = await b.call_tool("batch_results", {"batch_id": batch_id})
            written = await b.call_tool("batch_results", {"batch_id": batch_id, "write_to": "out.jsonl"})
            retry = await b.call_tool("batch_submit", {"retry_failed": batch_id})
            stolen = await b.call_tool("trim_result", {"handle": handle})
            # The same content trimmed by B gets B's own handle, not a way to A's.
            same = await b.call_tool("trim_result", {"content": doc, "max_tokens": 60})
            budget = await b.call_tool("budget_status", {})

    assert batch_id in result_text(own_list) and not own_one.is_error and "A-only-0" in result_text(own_handle)
    assert own_budget.structured_content["pending_batches"] == 1
    assert budget.structured_content["pending_batches"] == 0
    assert not listed.is_error and batch_id not in result_text(listed)
    assert listed.structured_content == {"batches": []}
    for result in (one, results, written):
        _not_found(result, f"no batch {batch_id!r}")
    _not_found(retry, "no such batch")
    _not_found(stolen, "unknown")
    assert not same.is_error and same.structured_content["handle"] != handle
    assert not (tmp_path / "out.jsonl").exists()
    owners = {r["owner"] for r in query(tmp_path / "ledger.db", "SELECT owner FROM batches")}
    assert owners == {"token-1"}


async def test_a_client_header_does_not_choose_the_budget_session(running: Callable[..., Any], tmp_path: Path) -> None:
    with running() as emu, uvicorn_serving(build_http_app(_settings(tmp_path, emu.url))) as url:
        # Sessionless protocol: nothing checks this header, so it must not pick the session.
        async with client(url, TOKEN_B, **{"Mcp-Session-Id": "victimsession"}) as b:
            assert b.protocol_version == "2026-07-28"
            status = await b.call_tool("budget_status", {"scope": "session"})
    session = status.structured_content["session"]
    assert session == "srv:token-2", session


def test_a_short_token_is_refused_for_a_public_bind_without_naming_it(tmp_path: Path) -> None:
    short = Settings.from_env(
        {"HOME": str(tmp_path), "OFFLOAD_DB": str(tmp_path / "l.db"), "OFFLOAD_HTTP_TOKENS": f"{TOKEN_A},x"}
    )
    with pytest.raises(BindError, match="token-2 is shorter than 32") as exc:
        check_bind("0.0.0.0", 8765, short)
    assert "x," not in str(exc.value) and TOKEN_A not in str(exc.value)
    check_bind("127.0.0.1", 8765, short)  # loopback: any token will do
    check_bind("0.0.0.0", 8765, _settings(tmp_path, "http://127.0.0.1:9"))  # long tokens: fine


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, err: Path) -> None:
    """Until the `offload serve --http` subprocess answers /healthz (it fails fast if it exits)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except httpx2.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None, err.read_text()
            time.sleep(0.2)


def test_a_token_in_the_query_string_never_reaches_the_log(tmp_path: Path) -> None:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(tmp_path / "ledger.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
        "OFFLOAD_HTTP_TOKENS": TOKEN_A,
    }
    err = tmp_path / "stderr.log"
    with err.open("wb") as fh:
        proc = subprocess.Popen(
            [str(VENV_BIN / "offload"), "serve", "--http", f"127.0.0.1:{port}"], env=env, stderr=fh, cwd=tmp_path
        )
    try:
        _wait_healthy(proc, port, err)
        httpx2.get(f"http://127.0.0.1:{port}/mcp?token={TOKEN_A}&access_token={TOKEN_A}", timeout=5)
        httpx2.get(f"http://127.0.0.1:{port}/healthz?token={TOKEN_A}", timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    logs = err.read_text()
    assert "/healthz" in logs  # the access log is on: the absence below means something
    assert TOKEN_A not in logs, logs


@pytest.mark.anyio
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
async def test_a_stopped_http_server_with_a_call_in_flight_leaves_no_hold(
    running: Callable[..., Any], tmp_path: Path, sig: str
) -> None:
    # uvicorn waited for open requests without a limit: a supervisor's SIGKILL (docker stop: 10 s)
    # then left the call's hold for the server's lease; a hangup killed it outright. Both now stop
    # the server within its bounded grace, and the close releases what was held.
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    with running(faults="latency=60s") as emu:
        env = server_env(tmp_path, emu.url, "stopped")
        err = tmp_path / "stderr.log"
        with err.open("wb") as fh:
            args = [str(VENV_BIN / "offload"), "serve", "--http", f"127.0.0.1:{port}"]
            proc = subprocess.Popen(args, env=env, stderr=fh, cwd=tmp_path)
        try:
            _wait_healthy(proc, port, err)

            async def call() -> None:
                with contextlib.suppress(Exception):  # the server goes away under it
                    async with (
                        create_mcp_http_client() as http,
                        Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as c,
                    ):
                        await c.call_tool("routed_complete", {"prompt": "a very slow answer"})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                while not emu.state.calls("/v1/messages", "POST"):
                    await anyio.sleep(0.05)  # the call is with the API, its hold taken
                assert query(tmp_path / "ledger.db", "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 1
                proc.send_signal(getattr(signal, sig))
                code = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=30))  # not the call's 60 s
                tg.cancel_scope.cancel()
        finally:
            proc.kill()
            proc.wait()
    assert code in (0, -signal.SIGTERM), err.read_text()  # uvicorn re-raises a SIGTERM it handled
    assert query(tmp_path / "ledger.db", "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0, err.read_text()
