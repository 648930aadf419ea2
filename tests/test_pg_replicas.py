"""Eight servers on one PostgreSQL ledger behave as one service: the shared budget holds.

Two `offload serve --http` replicas and six stdio servers (real subprocesses, the real mcp client
over streamable HTTP and stdio), each as its own user on its own host id (no pid is trusted across
them), making 20 premium routed_complete calls against one $0.02 team budget, under the
emulator's seeded faults (429/500/529 the SDK retries, latency).
The budget is never overrun, every refusal names it, no hold outlives the run, and the ledger
has exactly one row per answer the emulator served.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from helpers import target_rows
from offload.config.settings import shipped
from offload.mcp.http import bind_socket
from pg_fixtures import new_database

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

VENV_BIN = Path(sys.executable).parent
STDIO, HTTP, CALLS = 6, 2, 20
LIMIT_PUSD = 2 * 10**10  # $0.02
FAULTS = "429=0.05,500=0.05,529=0.1,latency=10-60ms"


def _policy(tmp_path: Path) -> Path:
    text = shipped("default.yaml").read_text(encoding="utf-8")
    text = text.replace("  session_usd: 2\n", "  session_usd: 100\n")
    text = text.replace("  monthly_usd: 300\n", '  monthly_usd: 300\n  team_usd: "0.02"\n')
    text = text.replace("on_exceed: downgrade", "on_exceed: refuse")
    assert 'team_usd: "0.02"' in text and "on_exceed: refuse" in text
    path = tmp_path / "team.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _env(tmp_path: Path, db_url: str, api_url: str, session: str, lease_s: int = 30) -> dict[str, str]:
    return {
        # Each server stands for another machine and another engineer: holds are freed by lease only.
        "OFFLOAD_HOST_ID": f"host-{session}",
        "OFFLOAD_USER": f"user-{session}",
        "OFFLOAD_LEASE_S": str(lease_s),
        "HOME": str(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": db_url,
        "OFFLOAD_ROOTS": str(tmp_path),
        "OFFLOAD_POLICY": str(_policy(tmp_path)),
        "OFFLOAD_SESSION": session,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": api_url,
    }


def _replica(tmp_path: Path, env: dict[str, str], n: int) -> tuple[subprocess.Popen[bytes], str]:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()
    with (tmp_path / f"replica-{n}.log").open("wb") as fh:
        proc = subprocess.Popen([str(VENV_BIN / "offload"), "serve", "--http", f"127.0.0.1:{port}"], env=env, stderr=fh)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx2.get(f"{url}/healthz", timeout=1)
            return proc, url
        except httpx2.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / f"replica-{n}.log").read_text()
            time.sleep(0.2)


@asynccontextmanager
async def _stdio(tmp_path: Path, env: dict[str, str], n: int) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=str(VENV_BIN / "offload"), args=["serve"], env=env)
    with (tmp_path / f"stdio-{n}.log").open("w") as err:
        async with Client(stdio_client(params, errlog=err), read_timeout_seconds=120) as c:
            yield c


@asynccontextmanager
async def _http(url: str) -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client() as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), read_timeout_seconds=120) as c,
    ):
        yield c


async def _calls(c: Client, n: int, out: dict[str, list[Any]]) -> None:
    rng = random.Random(n)
    for i in range(CALLS):
        args = {"prompt": f"worker {n} call {i}: " + "sum these " * rng.randint(1, 10), "tier": "premium"}
        res = await c.call_tool("routed_complete", {**args, "max_tokens": rng.randint(40, 160)})
        text = res.content[0].text  # type: ignore[union-attr]
        (out["errors"] if res.is_error else out["answers"]).append(res.structured_content if not res.is_error else text)


async def test_two_http_replicas_and_six_stdio_servers_hold_one_budget_on_postgresql(
    running: Callable[..., Any], tmp_path: Path, pg_server: str
) -> None:
    db_url = new_database(pg_server)
    out: dict[str, list[Any]] = {"answers": [], "errors": []}
    replicas = []
    with running(faults=FAULTS, seed=15) as emu:
        try:
            for n in range(HTTP):
                replicas.append(_replica(tmp_path, _env(tmp_path, db_url, emu.url, f"replica-{n}"), n))
            with anyio.fail_after(240):
                async with AsyncExitStack() as stack:
                    clients = [await stack.enter_async_context(_http(url)) for _, url in replicas]
                    for n in range(STDIO):
                        env = _env(tmp_path, db_url, emu.url, f"stdio-{n}")
                        clients.append(await stack.enter_async_context(_stdio(tmp_path, env, n)))
                    async with anyio.create_task_group() as tg:
                        for n, c in enumerate(clients):
                            tg.start_soon(_calls, c, n, out)
        finally:
            for proc, _ in replicas:
                proc.terminate()
                proc.wait(timeout=30)
        served = [r for r in emu.state.calls("/v1/messages", "POST") if r.status == 200]
        faulted = [r for r in emu.state.calls("/v1/messages", "POST") if r.status != 200]

    assert len(out["answers"]) + len(out["errors"]) == (STDIO + HTTP) * CALLS
    ((spent, rows),) = target_rows(db_url, "SELECT SUM(cost_pusd), COUNT(*) FROM attempts")
    held = target_rows(db_url, "SELECT COUNT(*) FROM reservations")[0][0]
    assert 0 < int(spent) <= LIMIT_PUSD, spent  # never over
    assert held == 0  # no hold outlived the run
    assert rows == len(served) == sum(len(a["attempts"]) for a in out["answers"])  # one row per served answer
    assert faulted, "the seeded faults never fired: this run proved nothing about retries"
    refusals = [e for e in out["errors"] if "budget" in e]
    assert len(refusals) > 0 and len(out["answers"]) > 0
    for text in refusals:
        assert "team budget $0.02 would be exceeded" in text and "budgets.team_usd" in text, text
    # Anything else is an API failure past the SDK's retries, reported as such (never a silent loss).
    others = [e for e in out["errors"] if e not in refusals]
    assert all("Claude API error" in e and "after retries" in e for e in others), others
    assert len({r[0] for r in target_rows(db_url, "SELECT DISTINCT session_id FROM attempts")}) > 1


async def _doomed_call(url: str) -> None:
    """A premium call on a replica that is killed while the call is in flight."""
    try:
        async with _http(url) as c:
            await c.call_tool("routed_complete", {"prompt": "a long premium job", "tier": "premium", "max_tokens": 64})
    except BaseException as exc:  # the server died under the client: whatever the transport raises
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            raise


async def test_a_replica_killed_mid_call_frees_its_hold_within_its_lease_and_its_batch_is_collected_once_by_another(
    running: Callable[..., Any], tmp_path: Path, pg_server: str
) -> None:
    db_url = new_database(pg_server)
    lease_s = 4
    with running(batch_delay_s=2, faults="latency=1500ms") as emu:
        (a, a_url), (b, b_url) = (
            _replica(tmp_path, _env(tmp_path, db_url, emu.url, f"r{n}", lease_s=lease_s), n) for n in range(2)
        )
        try:
            async with _http(a_url) as c:
                sub = await c.call_tool("batch_submit", {"template": "Tag: {item}", "items": ["x", "y", "z"]})
            assert not sub.is_error, sub.content
            batch_id = sub.structured_content["batch_id"]
            held_by_a = f"SELECT COUNT(*) FROM reservations WHERE pid = {a.pid}"
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_doomed_call, a_url)
                    while target_rows(db_url, held_by_a) == [(0,)]:  # wait until its hold is taken
                        await anyio.sleep(0.05)
                    a.kill()  # SIGKILL, mid-call: no cleanup runs
                    killed_at = time.monotonic()
                    a.wait(timeout=30)
            assert target_rows(db_url, held_by_a) == [(1,)]  # left behind by the dead replica
            async with _http(b_url) as c:
                # Another host: A's pid means nothing here; its hold goes when its lease runs out.
                with anyio.fail_after(lease_s * 4):
                    while target_rows(db_url, held_by_a) != [(0,)]:
                        status = await c.call_tool("budget_status", {})
                        assert not status.is_error, status.content
                        await anyio.sleep(0.2)
                freed_after = time.monotonic() - killed_at
                with anyio.fail_after(60):
                    while (await c.call_tool("batch_status", {"batch_id": batch_id})).structured_content[
                        "state"
                    ] != "done":
                        await anyio.sleep(0.2)
                results = await c.call_tool("batch_results", {"batch_id": batch_id})
        finally:
            for proc in (a, b):
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)
    assert not results.is_error, results.content
    # Within the lease (plus the survivor's 0.2 s polling and one purge), not the hold's 10-minute expiry.
    assert freed_after <= lease_s + 2, freed_after
    # Collected by the survivor, each item settled exactly once, every hold gone.
    assert target_rows(db_url, "SELECT COUNT(*), COUNT(DISTINCT request_key) FROM attempts WHERE batch = 1") == [(3, 3)]
    assert target_rows(db_url, "SELECT COUNT(*) FROM batch_items WHERE result_type = 'succeeded'") == [(3,)]
    assert target_rows(db_url, "SELECT state FROM batches") == [("done",)]
    assert target_rows(db_url, "SELECT COUNT(*) FROM reservations") == [(0,)]
