"""The API key never leaks: not in stderr logs, not in the SQLite files, not in any tool output.

Real stdio server sessions (`offload serve` subprocess, the real mcp client) against the
emulator: successful calls, a rejected request, a scripted API error, and a 401 from an
emulator that expects a different key.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from .conftest import result_text

pytestmark = pytest.mark.anyio

VENV_BIN = Path(sys.executable).parent
# Distinctive enough that a hit can only be the key itself; the tail is checked on its own too,
# since a log might print a key partly masked.
KEY = "sk-ant-api03-LEAKCANARY-7f3c9a1e5b2d4c6e8a0b"
TAIL = KEY[-12:]


def _params(tmp_path: Path, base_url: str) -> StdioServerParameters:
    env = {
        "HOME": str(tmp_path),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "OFFLOAD_DB": str(tmp_path / "ledger.db"),
        "OFFLOAD_ROOTS": str(tmp_path),
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": base_url,
    }
    return StdioServerParameters(command=str(VENV_BIN / "offload"), args=["serve"], env=env)


async def _session(tmp_path: Path, base_url: str, calls: list[tuple[str, dict[str, Any]]], log: Path) -> list[Any]:
    with log.open("a") as err:
        async with Client(stdio_client(_params(tmp_path, base_url), errlog=err), read_timeout_seconds=60) as c:
            return [await c.call_tool(name, args) for name, args in calls]


def _dump(result: Any) -> str:
    return result_text(result) + json.dumps(result.structured_content or {})


async def test_api_key_never_reaches_logs_database_or_tool_output(running: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("the build failed on step 3\n")
    log = tmp_path / "server.stderr"
    script = [{"match": "explode", "error": {"status": 500, "type": "api_error", "message": "scripted failure"}}]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("routed_complete", {"prompt": "classify: spam or ham? 'win a prize'", "task": "classify"}),
        ("routed_complete", {"prompt": "what failed?", "context_files": ["notes.txt"], "difficulty": "hard"}),
        ("routed_complete", {"prompt": "explode please"}),  # upstream 500 after retries
        ("routed_complete", {"prompt": "x", "must_match": "("}),  # rejected before any API call
        ("routed_complete", {"prompt": "y", "context_files": ["../../etc/passwd"]}),
        ("budget_status", {}),
    ]
    with running(api_key=KEY, script=script) as good:
        results = await _session(tmp_path, good.url, calls, log)
        accepted = [r.status for r in good.state.calls("/v1/messages")]
    with running(api_key="sk-ant-some-other-key") as wrong:
        results += await _session(tmp_path, wrong.url, [("routed_complete", {"prompt": "z"})], log)
        rejected = [r.status for r in wrong.state.calls("/v1/messages")]

    # The session did what it claims: answers, errors and a 401, so every path was exercised.
    assert [r.is_error for r in results] == [False, False, True, True, True, False, True], [
        result_text(r) for r in results
    ]
    assert 200 in accepted  # the server sent the key and the emulator that expects it accepted it
    assert "500" in result_text(results[2])
    assert rejected == [401] and "401" in result_text(results[-1]), result_text(results[-1])

    outputs = "\n".join(_dump(r) for r in results)
    logs = log.read_text()
    assert "offload" in logs  # the server did log (to stderr) while we watched
    for where, text in (("tool output", outputs), ("stderr log", logs)):
        assert KEY not in text and TAIL not in text, f"API key leaked into the {where}"

    files = [p for p in tmp_path.iterdir() if p.name.startswith("ledger.db")]
    assert tmp_path / "ledger.db" in files
    for path in files:  # the database, and its -wal / -shm if still present
        raw = path.read_bytes()
        for needle in (KEY, TAIL):
            for enc in ("utf-8", "utf-16-le"):
                assert needle.encode(enc) not in raw, f"API key found in {path.name}"
