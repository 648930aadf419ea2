"""Claude Code's session and project reach the ledger: a real stdio server, the real SDK, the emulator."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from helpers import query
from offload.config.settings import Settings
from offload_emulator.server import EmulatorHandle

VENV_BIN = Path(sys.executable).parent
OFFLOAD = str(VENV_BIN / "offload")


def test_host_variables_name_session_and_project_and_offload_ones_win() -> None:
    host = {"CLAUDE_CODE_SESSION_ID": "cc-123", "CLAUDE_PROJECT_DIR": "/work/app"}
    s = Settings.from_env(host)
    assert (s.session_id, s.project, s.user) == ("cc-123", "/work/app", None)
    ours = Settings.from_env({**host, "OFFLOAD_SESSION": "mine", "OFFLOAD_PROJECT": "billing", "OFFLOAD_USER": "ana"})
    assert (ours.session_id, ours.project, ours.user) == ("mine", "billing", "ana")


def test_an_unexpanded_placeholder_names_nothing() -> None:
    # What Claude Code passes for "${CLAUDE_CODE_SESSION_ID}" when the variable is unset.
    s = Settings.from_env({"OFFLOAD_SESSION": "${CLAUDE_CODE_SESSION_ID}", "CLAUDE_CODE_SESSION_ID": "cc-9"})
    assert s.session_id == "cc-9"
    alone = Settings.from_env({"OFFLOAD_SESSION": "${CLAUDE_CODE_SESSION_ID}"})
    assert alone.session_id.startswith("s-") and alone.project is None


@pytest.mark.anyio
async def test_a_server_started_by_claude_code_records_its_session_and_project(
    tmp_path: Path, emulator: EmulatorHandle
) -> None:
    db = tmp_path / "ledger.db"
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(db),
        "OFFLOAD_ROOTS": str(tmp_path),
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": emulator.url,
        # As Claude Code sets them in a stdio server's environment.
        "CLAUDE_CODE_SESSION_ID": "5f0c7d1e-cc-session",
        "CLAUDE_PROJECT_DIR": "/home/ana/shop",
        "OFFLOAD_USER": "ana",
    }
    params = StdioServerParameters(command=OFFLOAD, args=["serve"], env=env)
    with (tmp_path / "stderr.log").open("w") as err:
        async with Client(stdio_client(params, errlog=err), read_timeout_seconds=60) as c:
            out = await c.call_tool("routed_complete", {"prompt": "Classify: 'great product'", "task": "classify"})
    assert not out.is_error, out
    rows = query(db, "SELECT session_id, project, user_name, cost_pusd FROM attempts")
    assert rows and all(
        (r["session_id"], r["project"], r["user_name"]) == ("5f0c7d1e-cc-session", "/home/ana/shop", "ana")
        for r in rows
    )
    cost = sum(int(r["cost_pusd"]) for r in rows)
    assert cost > 0

    for by, key in (("project", "/home/ana/shop"), ("user", "ana"), ("session", "5f0c7d1e-cc-session")):
        done = subprocess.run(
            [OFFLOAD, "spend", "--by", by, "--json", "--db", str(db)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert [r["key"] for r in doc["rows"]] == [key]
        assert doc["rows"][0]["calls"] == len(rows)


def test_spend_by_project_on_a_ledger_from_before_the_columns_says_how_it_gets_them(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE attempts (ts TEXT, session_id TEXT, tool TEXT, model TEXT, input_tokens INT,"
        " output_tokens INT, cache_write_5m INT, cache_write_1h INT, cache_read INT, cost_pusd INT, baseline_pusd INT)"
    )
    conn.close()
    done = subprocess.run(
        [OFFLOAD, "spend", "--by", "project", "--db", str(db)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert "predates project and user tracking; any `offload serve` on it adds them" in done.stderr
