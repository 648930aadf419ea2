"""Security and privacy through the real tools: the mcp Client in-memory, the real SDK over HTTP
to the emulator, real SQLite files read back as raw bytes."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from offload.config.settings import Settings, shipped
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

CANARY = "zq7-canary-prompt-4f1e"
API_KEY = "sk-ant-api03-CANARYKEY-9d8c7b6a5f4e3d2c1b0a"


def _ledger_bytes(db: Path) -> bytes:
    """Everything SQLite keeps on disk for the ledger: main file, WAL and journal."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file())


def _text(result: Any) -> str:
    return "".join(getattr(b, "text", "") for b in result.content) + json.dumps(result.structured_content)


def _policy(tmp_path: Path, store_text: bool) -> Path:
    path = tmp_path / "policy.yaml"
    shutil.copy(shipped("default.yaml"), path)
    text = path.read_text()
    assert "store_text" not in text or "store_text: false" in text
    path.write_text(text.replace("store_text: false", "") + f"\nstore_text: {str(store_text).lower()}\n")
    return path


async def _routed_and_summarize(settings: Settings) -> None:
    (settings.roots[0] / "notes.txt").write_text(f"meeting notes {CANARY} and more words\n" * 50)
    async with Client(build_server(settings)) as c:
        r = await c.call_tool("routed_complete", {"prompt": f"Say hello. {CANARY}", "context_files": ["notes.txt"]})
        assert not r.is_error, r
        long_text = "".join(f"Step {i} failed with code E{i:04d}: {CANARY} retried and gave up.\n" for i in range(2000))
        s = await c.call_tool("summarize_context", {"text": long_text, "target_tokens": 200})
        assert not s.is_error, s


async def test_default_policy_keeps_prompt_and_completion_text_out_of_the_ledger(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(emulator.url, policy_path=_policy(tmp_path, store_text=False))
    await _routed_and_summarize(settings)
    raw = _ledger_bytes(settings.db_path)
    assert b"attempts" in raw  # the ledger was written, so the absence below means something
    assert CANARY.encode() not in raw


async def test_store_text_opt_in_keeps_prompts_and_completions(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    import sqlite3

    settings = make_settings(emulator.url, policy_path=_policy(tmp_path, store_text=True))
    await _routed_and_summarize(settings)
    conn = sqlite3.connect(settings.db_path)
    try:
        rows = conn.execute("SELECT tool, prompt_text, completion_text FROM attempts ORDER BY id").fetchall()
    finally:
        conn.close()
    tools = {tool for tool, _, _ in rows}
    assert tools == {"routed_complete", "summarize_context"}
    for tool, prompt, completion in rows:
        assert prompt and CANARY in prompt, (tool, prompt)
        assert completion, tool


async def test_api_key_never_leaks_when_the_api_rejects_it(
    running: Any, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with running(api_key="sk-ant-the-right-key") as emu:
        settings = make_settings(emu.url, api_key=API_KEY)
        (settings.roots[0] / "a.txt").write_text("hello\n")
        async with Client(build_server(settings)) as c:
            outputs = [
                await c.call_tool("routed_complete", {"prompt": "hi"}),
                await c.call_tool("summarize_context", {"text": "some text to summarize. " * 20}),
                await c.call_tool("batch_submit", {"template": "{item}", "items": ["a", "b"]}),
                await c.call_tool("trim_result", {"path": "a.txt", "query": "what is the meaning?"}),
                await c.call_tool("budget_status", {}),
            ]
    texts = [_text(o) for o in outputs]
    assert outputs[0].is_error and "401" in texts[0] and "ANTHROPIC_API_KEY" in texts[0]
    for text in texts:
        assert API_KEY not in text and "CANARYKEY" not in text
    assert "CANARYKEY" not in caplog.text
    assert b"CANARYKEY" not in _ledger_bytes(settings.db_path)
    assert "CANARYKEY" not in repr(settings)


async def _done_batch(c: Client) -> str:
    sub = await c.call_tool("batch_submit", {"template": "Label {item}", "items": ["a", "b"]})
    assert not sub.is_error, sub
    assert isinstance(sub.structured_content, dict)
    bid = str(sub.structured_content["batch_id"])
    with anyio.fail_after(30):
        while True:
            st = await c.call_tool("batch_status", {"batch_id": bid})
            assert isinstance(st.structured_content, dict)
            if st.structured_content["state"] == "done":
                return bid
            await anyio.sleep(0.05)


async def test_write_to_never_clobbers_or_escapes(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    (outside / "notes.md").write_text("the user's notes outside\n")
    settings = make_settings(emulator.url)
    root = settings.roots[0]
    (root / "README.md").write_text("# my project\n")
    (root / "link.md").symlink_to(outside / "notes.md")
    os.link(outside / "notes.md", root / "hard.md")

    async with Client(build_server(settings)) as c:
        bid = await _done_batch(c)

        async def write(name: str) -> Any:
            return await c.call_tool("batch_results", {"batch_id": bid, "write_to": name})

        clobber = await write("README.md")
        assert clobber.is_error and "already exists" in _text(clobber), clobber
        link = await write("link.md")
        assert link.is_error and "symlink" in _text(link), link
        hard = await write("hard.md")
        assert hard.is_error and "already exists" in _text(hard), hard
        for name in ("r.jsonl", "r.md"):  # writing the same results again replaces the earlier file
            assert not (await write(name)).is_error
            assert not (await write(name)).is_error

    assert (root / "README.md").read_text() == "# my project\n"
    assert (outside / "notes.md").read_text() == "the user's notes outside\n"
    assert len((root / "r.jsonl").read_text().splitlines()) == 2
    marker, heading = (root / "r.md").read_text().split("\n")[:2]
    assert marker == f"<!-- written by offload batch_results: {bid} -->" and heading.startswith(f"# Batch {bid}")
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]
