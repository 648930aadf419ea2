"""summarize_context end to end: real MCP client → server → real SDK over HTTP → emulator → SQLite.

The emulator is scripted to answer like a model that drops identifiers, so the test can see
them restored; it applies Haiku 5.5's 2048-token cache minimum, so the shared prefix here is a
realistically long brief (focus + keep list).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from helpers import ledger_rows as rows
from offload.config.settings import Settings, shipped
from offload.core.money import usd_json
from offload.mcp.server import build_server

pytestmark = pytest.mark.anyio

CHUNK_ASK = "Summarize this in at most"
MERGE_ASK = "Merge these partial summaries"
KEEP = tuple(
    [f"checkout-svc-{i:02d}" for i in range(30)]
    + [f"billing.retry_budget_ms.region_{i}" for i in range(25)]
    + ["INC-2291", "payments-gateway", "feature_flag.fast_checkout"]
)
FOCUS = " ".join(
    f"Point {i}: explain for the on-call engineer whether the checkout outage, its retries, its database "
    f"load and its rollback affected step {i} of the payment flow, and what is still open for step {i}."
    for i in range(30)
)
SCRIPT = [
    {"match": MERGE_ASK, "reply": "Checkout failed after the deploy; see services/checkout/handler.py. INC-2291."},
    {"match": CHUNK_ASK, "reply": "Part: checkout errors in services/checkout/handler.py after deploy."},
]


def message_calls(emu: Any) -> list[Any]:
    return [r for r in emu.state.calls("/v1/messages") if r.status == 200]


def last_text(call: Any) -> str:
    return str(call.body["messages"][-1]["content"][-1]["text"])


def incident_files(root: Path) -> list[Path]:
    """Three ~140 kB files (~105k tokens together): more than two 50k-token chunks."""
    root.mkdir()
    log = [
        f"2025-03-01 10:{i // 60 % 60:02d}:{i % 60:02d} INFO checkout request id=r{i} served in {40 + i % 9} ms"
        for i in range(1900)
    ]
    log[700] = "2025-03-01 10:11:40 ERROR payment client raised E1234: upstream returned HTTP 503 after 250 ms"
    notes = [
        f"Note {i}: the retry loop in services/checkout/handler.py retried order o{i} and logged the attempt."
        for i in range(1400)
    ]
    notes[300] = "- Do not restart the primary database during business hours."
    notes[301] = "Status page: https://status.example.com/incidents/981"
    runbook = [
        f"Step {i}: check dashboard panel p{i} and compare with the baseline before rollback." for i in range(1700)
    ]
    out = []
    for name, lines in (("app.log", log), ("notes.md", notes), ("runbook.md", runbook)):
        p = root / name
        p.write_text("\n".join(lines) + "\n")
        out.append(p)
    return out


async def test_several_files_are_summarized_in_parallel_chunks_with_cache_reads_and_keep_items(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    incident_files(tmp_path / "incident")
    seen: list[tuple[int | float, int | float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    # Latency makes concurrency visible in arrival times: sequential calls would arrive >= 0.5 s apart.
    with running(script=SCRIPT, faults="latency=500ms") as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            result = await c.call_tool(
                "summarize_context",
                {"paths": ["incident/*"], "focus": FOCUS, "keep": list(KEEP), "target_tokens": 500},
                progress_callback=on_progress,
            )
        calls = message_calls(emu)
    assert not result.is_error, result.content
    text = str(result.content[0].text)  # type: ignore[union-attr]
    data = result.structured_content
    assert data is not None

    chunk_calls = [c for c in calls if CHUNK_ASK in last_text(c)]
    merges = [c for c in calls if MERGE_ASK in last_text(c)]
    warm = [c for c in calls if c.body["max_tokens"] == 0]
    assert len(chunk_calls) >= 3 and len(merges) == 1 and len(warm) == 1
    assert len(calls) == len(chunk_calls) + 2
    assert data["chunk_calls"] == len(chunk_calls) and data["calls"] == len(calls)
    # The shared prefix: the same bytes on every call, under a cache breakpoint, nothing chunk-specific.
    systems = {json.dumps(c.body["system"], sort_keys=True) for c in calls}
    assert len(systems) == 1
    system = calls[0].body["system"][0]
    assert system["cache_control"]["type"] == "ephemeral" and "INC-2291" in system["text"]
    assert "served in" not in system["text"]
    # A max_tokens: 0 pre-warm wrote the prefix and billed no output ("Pre-warming the cache",
    # https://platform.claude.com/docs/en/build-with-claude/prompt-caching); every chunk then
    # started together after its response and read it.
    (first,) = warm
    assert first.usage["cache_creation_input_tokens"] > 0 and first.usage["output_tokens"] == 0
    assert all(c.usage["cache_read_input_tokens"] > 0 for c in [*chunk_calls, *merges])
    assert min(c.at for c in chunk_calls) >= first.at + 0.5
    assert max(c.at for c in chunk_calls) - min(c.at for c in chunk_calls) < 0.5
    assert data["truncated_calls"] == 0
    # Every line of the input went to exactly one chunk call, with its file named.
    sent = "\n".join(last_text(c) for c in chunk_calls)
    for marker in ("id=r0 ", "id=r1899 ", "order o0 ", "order o1399 ", "panel p0 ", "panel p1699 ", "E1234"):
        assert sent.count(marker) == 1, marker
    assert "=== incident/notes.md" in sent

    # What the model dropped is appended verbatim; what it kept is not repeated.
    summary, kept = text.split("\n\nKept verbatim:\n", 1)
    assert summary.startswith("Checkout failed after the deploy")
    kept_lines = kept.splitlines()
    for item in KEEP:
        assert item in text, item
        assert (f"- {item}" in kept_lines) == (item != "INC-2291")
    for item in ("E1234", "HTTP 503", "250 ms", "https://status.example.com/incidents/981"):
        assert f"- {item}" in kept_lines, item
    assert "- Do not restart the primary database during business hours." in kept_lines
    assert "- services/checkout/handler.py" not in kept_lines
    assert set(KEEP) - {"INC-2291"} <= set(data["kept_verbatim"])

    # Reported tokens and money are the ledger's, to the picodollar.
    ledger = rows(settings.db_path)
    assert len(ledger) == len(calls) and {r["tool"] for r in ledger} == {"summarize_context"}
    assert {(r["tier"], r["model"]) for r in ledger} == {("cheap", "claude-haiku-5-5")}
    assert data["cost_usd"] == usd_json(sum(r["cost_pusd"] for r in ledger))
    usage = data["usage"]
    assert usage["input_tokens"] == sum(r["input_tokens"] for r in ledger)
    assert usage["output_tokens"] == sum(r["output_tokens"] for r in ledger)
    assert usage["cache_write_tokens"] == sum(r["cache_write_5m"] + r["cache_write_1h"] for r in ledger)
    assert data["cache_read_tokens"] == usage["cache_read_tokens"] == sum(r["cache_read"] for r in ledger) > 0
    assert data["cache_read_tokens"] == sum(c.usage["cache_read_input_tokens"] for c in calls)
    assert data["tokens_in"] > 100_000 and data["tokens_out"] < data["tokens_in"] // 50
    footer = text.splitlines()[-1]
    assert footer.startswith("[haiku-5-5 · $") and f"{len(chunk_calls)} chunk calls + merge" in footer
    assert "cached " in footer and "kept verbatim" in footer
    # Progress went up to the total (chunk calls + merge).
    steps = len(chunk_calls) + len(merges)  # the pre-warm is not a step the host waits on
    assert seen[-1] == (steps, steps)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


async def test_one_chunk_needs_no_merge_and_text_input_works(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    material = "\n".join(f"Line {i}: the cache warmed up in {i} ms on host h{i}." for i in range(400))
    material += "\nWe decided to keep the 5m TTL. Error ECONNRESET seen on /var/log/app/cache.log\n"
    with running(script=[{"match": CHUNK_ASK, "reply": "Cache warm-up times were measured on 400 hosts."}]) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            result = await c.call_tool("summarize_context", {"text": material, "target_tokens": 120})
        calls = message_calls(emu)
    assert not result.is_error, result.content
    text = str(result.content[0].text)  # type: ignore[union-attr]
    data = result.structured_content
    assert data is not None
    assert len(calls) == 1 and data["chunk_calls"] == data["calls"] == 1
    assert "Part 1 of" not in last_text(calls[0])
    assert "system" in calls[0].body and "cache_control" not in calls[0].body["system"][0]  # too short to cache
    for item in ("We decided to keep the 5m TTL.", "ECONNRESET", "/var/log/app/cache.log"):
        assert f"- {item}" in text
    assert "merge" not in text.splitlines()[-1]
    (row,) = rows(settings.db_path)
    assert data["cost_usd"] == usd_json(row["cost_pusd"])


async def test_input_within_target_is_returned_as_is_for_free(
    emulator: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(emulator.url)
    async with Client(build_server(settings)) as c:
        result = await c.call_tool("summarize_context", {"text": "Deploy done in 3 min.", "target_tokens": 100})
    assert not result.is_error
    assert str(result.content[0].text).startswith("Deploy done in 3 min.\n[not summarized")  # type: ignore[union-attr]
    assert result.structured_content is not None and result.structured_content["cost_usd"] == "0"
    assert message_calls(emulator) == [] and rows(settings.db_path) == []


async def test_a_job_over_budget_is_refused_before_any_call(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    policy = tmp_path / "tight.yaml"
    policy.write_text(shipped("default.yaml").read_text().replace("session_usd: 2", "session_usd: 0.001"))
    settings = make_settings(emulator.url, policy_path=policy)
    incident_files(tmp_path / "incident")
    async with Client(build_server(settings)) as c:
        result = await c.call_tool("summarize_context", {"paths": ["incident/*.md"]})
    assert result.is_error
    msg = str(result.content[0].text)  # type: ignore[union-attr]
    assert "would cost about $" in msg and "send less material" in msg
    # It names the budget and its figures, as routed_complete's refusals do.
    assert "but the session budget ($0.0010: spent $0.00, reserved $0.00) has only $0.0010 left" in msg, msg
    assert message_calls(emulator) == [] and rows(settings.db_path) == []


async def test_bad_input_says_what_to_send(
    emulator: Any, make_settings: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("other") / "x.md"
    outside.write_text("secret\n")
    async with Client(build_server(make_settings(emulator.url))) as c:
        empty = await c.call_tool("summarize_context", {"text": "  "})
        refused = await c.call_tool("summarize_context", {"paths": [str(outside)]})
    assert empty.is_error and "send `text`" in str(empty.content[0].text)  # type: ignore[union-attr]
    assert refused.is_error and "outside the allowed roots" in str(refused.content[0].text)  # type: ignore[union-attr]
    assert message_calls(emulator) == []


async def test_a_failed_chunk_call_surfaces_its_error_and_every_paid_call_stays_in_the_ledger(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    script = [
        {"match": "Part 2 of", "error": {"status": 500, "type": "api_error", "message": "boom"}},
        *SCRIPT,
    ]
    incident_files(tmp_path / "incident")
    with running(script=script) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            result = await c.call_tool(
                "summarize_context", {"paths": ["incident/*"], "focus": FOCUS, "keep": list(KEEP)}
            )
        answered = message_calls(emu)
    assert result.is_error
    msg = str(result.content[0].text)  # type: ignore[union-attr]
    assert "Claude API error 500 api_error: boom" in msg
    # The pre-warm, then chunks 1-3 together: 2 failed (after the SDK's retries), 1 and 3 were paid for.
    assert len(answered) == 3 and not any(MERGE_ASK in last_text(c) for c in answered)
    ledger = rows(settings.db_path)
    assert len(ledger) == 3 and all(r["cost_pusd"] > 0 for r in ledger)
    assert sorted(r["outcome"] for r in ledger) == ["ok", "ok", "prewarm"]
    conn = sqlite3.connect(settings.db_path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM reservations").fetchone() == (0,)
    finally:
        conn.close()
