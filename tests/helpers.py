"""Small helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

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


def ledger_rows(db: Path) -> list[sqlite3.Row]:
    """Every attempt row of a ledger file, read the way an auditor would: plain sqlite3."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM attempts ORDER BY id").fetchall()
    finally:
        conn.close()


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
