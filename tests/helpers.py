"""Small helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import psycopg
import uvicorn

from offload.mcp.http import bind_socket

# DESIGN.md §3: names other code, docs and users' prompts rely on.
CONTRACT_TOOLS = (
    "routed_complete",
    "batch_submit",
    "batch_status",
    "batch_results",
    "summarize_context",
    "trim_result",
    "budget_status",
)


def query(db: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    """Read a ledger file the way an auditor would: plain sqlite3, no offload code."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def ledger_rows(db: Path) -> list[sqlite3.Row]:
    """Every attempt row, in the order they were recorded."""
    return query(db, "SELECT * FROM attempts ORDER BY id")


@contextmanager
def uvicorn_serving(app: Any) -> Iterator[str]:
    """A real ASGI app under uvicorn in a thread on a kernel-picked loopback port; yields its base URL."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(400):
            if server.started or not thread.is_alive():
                break
            threading.Event().wait(0.025)
        assert server.started, "uvicorn did not start within 10 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"


def handshake(client_name: str) -> list[dict[str, Any]]:
    """The raw JSON-RPC opening a handshake-era stdio client sends."""
    return [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": client_name, "version": "0"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
    ]


VENV_BIN = Path(sys.executable).parent


def server_env(tmp_path: Path, base_url: str, session: str) -> dict[str, str]:
    """The environment an `offload serve` subprocess under test gets (a stdio client passes no more)."""
    return {
        "HOME": str(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(tmp_path / "ledger.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
        "OFFLOAD_SESSION": session,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": base_url,
    }


async def ledger_query(ledger: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows as plain tuples through the ledger's own read connection, on either backend."""
    return [tuple(r) for r in await (await ledger.conn.execute(sql, args)).fetchall()]


def target_rows(target: Path | str, sql: str) -> list[tuple[Any, ...]]:
    """Read a ledger from outside offload, the way an auditor would: plain sqlite3 or psycopg."""
    if isinstance(target, str):
        with psycopg.connect(target) as pconn:
            return [tuple(r) for r in pconn.execute(sql).fetchall()]
    conn = sqlite3.connect(target)
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def children_serving(db: Path) -> list[int]:
    """Pids of this test process's children running `offload serve` on the ledger `db`."""
    found = []
    for child in psutil.Process().children():
        try:
            if child.environ().get("OFFLOAD_DB") == str(db):
                found.append(child.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # gone (or going) already: not serving
    return found
