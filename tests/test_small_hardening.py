"""The smaller holes of issue 13: each through the real MCP client, real files, real SQLite."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from helpers import query
from offload.config.settings import Settings, shipped
from offload.mcp.http import bind_socket
from offload.mcp.server import build_server
from reliability.conftest import is_generic_error, result_text

pytestmark = pytest.mark.anyio


async def _finished_batch(c: Client, emu: Any) -> str:
    made = await c.call_tool("batch_submit", {"template": "Say {item}", "items": ["a", "b"]})
    assert not made.is_error, result_text(made)
    batch_id = str(made.structured_content["batch_id"])
    with anyio.fail_after(30):
        while True:
            status = await c.call_tool("batch_status", {"batch_id": batch_id})
            if status.structured_content["state"] == "done":
                return batch_id
            await anyio.sleep(0.2)


def _clear_error(result: Any, *says: str) -> str:
    text = result_text(result)
    assert result.is_error and not is_generic_error(text), text
    for s in says:
        assert s in text, text
    return text


async def test_write_to_never_clobbers_a_users_file_or_the_hosts_instructions(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Batch cooking plan\n\nmy own notes\n")
    (tmp_path / ".claude" / "commands").mkdir(parents=True)
    with running() as emu:
        async with Client(build_server(make_settings(emu.url))) as c:
            bid = await _finished_batch(c, emu)
            clobber = await c.call_tool("batch_results", {"batch_id": bid, "write_to": "notes.md"})
            claude_md = await c.call_tool("batch_results", {"batch_id": bid, "write_to": "CLAUDE.md"})
            command = await c.call_tool("batch_results", {"batch_id": bid, "write_to": ".claude/commands/x.md"})
            ours = await c.call_tool("batch_results", {"batch_id": bid, "write_to": "out.md"})
            again = await c.call_tool("batch_results", {"batch_id": bid, "write_to": "out.md"})
    _clear_error(clobber, "not written by offload")
    assert notes.read_text() == "# Batch cooking plan\n\nmy own notes\n"
    _clear_error(claude_md, "CLAUDE.md")
    _clear_error(command, ".claude")
    assert not (tmp_path / "CLAUDE.md").exists() and not (tmp_path / ".claude/commands/x.md").exists()
    assert not ours.is_error and not again.is_error, result_text(again)  # offload's own file: replaceable


async def test_bad_paths_and_numbers_give_clear_errors(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    os.symlink(tmp_path / "loop-b", tmp_path / "loop-a")
    os.symlink(tmp_path / "loop-a", tmp_path / "loop-b")
    (tmp_path / "d").mkdir()
    with running() as emu:
        async with Client(build_server(make_settings(emu.url))) as c:
            bid = await _finished_batch(c, emu)
            results = [
                await c.call_tool("batch_results", {"batch_id": bid, "write_to": "a\x00b.md"}),
                await c.call_tool("batch_results", {"batch_id": bid, "write_to": "loop-a/x.md"}),
                await c.call_tool("batch_results", {"batch_id": bid, "offset": 2**63}),
                await c.call_tool("trim_result", {"path": "loop-a"}),
                await c.call_tool("routed_complete", {"prompt": "x", "context_files": ["loop-a"]}),
                await c.call_tool("summarize_context", {"paths": ["loop-b"]}),
            ]
    for r in results:
        _clear_error(r)


async def test_a_glob_with_dotdot_after_a_wildcard_reveals_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    settings = make_settings(None, roots=(root,))
    async with Client(build_server(settings)) as c:
        exists = await c.call_tool("trim_result", {"path": "*/../../secret.txt"})
        missing = await c.call_tool("trim_result", {"path": "*/../../nothing-here.txt"})
    a, b = _clear_error(exists), _clear_error(missing)
    assert "TOPSECRET" not in a
    assert a.replace("secret.txt", "X") == b.replace("nothing-here.txt", "X")


async def test_a_batch_create_that_never_left_the_machine_releases_its_hold(
    make_settings: Callable[..., Settings],
) -> None:
    sock = bind_socket("127.0.0.1", 0)
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nothing listens there: every connection is refused before a byte is sent
    settings = make_settings(closed)
    async with Client(build_server(settings)) as c:
        made = await c.call_tool("batch_submit", {"template": "Say {item}", "items": ["a", "b"]})
    _clear_error(made, "did not accept", "nothing was sent")
    assert query(settings.db_path, "SELECT COUNT(*) AS n FROM reservations")[0]["n"] == 0
    assert {r["state"] for r in query(settings.db_path, "SELECT state FROM batch_parts")} == {"failed"}


@pytest.mark.parametrize(
    "value",
    ["9" * 4_400, "1" + "0" * 30],  # past Python's int-conversion limit; past what 64-bit picodollars hold
)
async def test_a_policy_edit_with_a_huge_number_keeps_the_last_good_policy(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path, value: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(Path(str(shipped("default.yaml"))).read_text())
    with running() as emu:
        async with Client(build_server(make_settings(emu.url, policy_path=policy))) as c:
            assert not (await c.call_tool("routed_complete", {"prompt": "before"})).is_error
            text = policy.read_text()
            st = policy.stat()
            policy.write_text(text.replace("session_usd:", f"session_usd: {value}  # was:", 1))
            os.utime(policy, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
            after = await c.call_tool("routed_complete", {"prompt": "after"})
            status = await c.call_tool("budget_status", {})
    assert not after.is_error, result_text(after)
    assert not status.is_error, result_text(status)
    assert "policy file error (last good policy kept)" in result_text(status), result_text(status)
