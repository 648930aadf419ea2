"""Large inputs are sized by the API's count_tokens, not by their bytes: routing thresholds and
budget holds see the real prompt. Real MCP client → server → SDK → emulator → SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from offload.config.settings import Settings
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

POLICY = """
name: sized
tiers: {cheap: claude-haiku-5-5, standard: claude-sonnet-5-5, premium: claude-opus-5-5}
rules:
  - {name: long-input, when: {input_tokens_over: 150000}, tier: standard}
default_tier: cheap
baseline: claude-opus-5-5
budgets: {session_usd: 0.03, on_exceed: refuse}
caching: {placement: always}   # the first call writes the log's prefix, later ones read it
"""


async def test_a_large_log_is_routed_and_reserved_by_its_counted_tokens(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # ~250 KB of log: 250,890 tokens by the byte bound, ~92,000 by the tokenizer.
    log = "".join(
        f"2026-11-29 12:00:{i % 60:02d} INFO worker-{i % 7} request {i} served in 12 ms\n" for i in range(4000)
    )
    (tmp_path / "app.log").write_text(log)
    policy = tmp_path / "sized.yaml"
    policy.write_text(POLICY)
    with running() as emu:
        settings = make_settings(emu.url, policy_path=policy)
        async with Client(build_server(settings)) as c:
            args = {"prompt": "Which worker is slowest?", "context_files": ["app.log"]}
            first = await c.call_tool("routed_complete", args)
            second = await c.call_tool("routed_complete", {**args, "prompt": "Any errors?"})
            again = await c.call_tool("routed_complete", args)
        counts = emu.state.calls("/v1/messages/count_tokens")
        sent = [r for r in emu.state.calls("/v1/messages") if r.status == 200]
    for result in (first, second, again):
        # By bytes it would be 'standard' (over 150k), and a $0.03 budget would refuse the hold:
        # 250,890 x $0.125/MTok (a 5m cache write, the dearest rate this request can pay) > $0.03.
        assert not result.is_error, result.content
        assert result.structured_content["tier"] == "cheap"
    assert [r.model for r in sent] == ["claude-haiku-5-5"] * 3
    assert sent[0].usage["input_tokens"] + (sent[0].usage.get("cache_creation_input_tokens") or 0) < 100_000
    # counted once per distinct request: the repeated one comes from the cache
    assert len(counts) == 2
