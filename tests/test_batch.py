"""The batch path end to end: real MCP client → server → real SDK over HTTP → emulator → SQLite.

The cost check is independent of offload's pricing code: the test downloads the emulator's
results itself with the SDK and prices the reported usage with hand-written batch rates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import anyio
import pytest
from anthropic.types.messages import MessageBatchResult
from mcp import Client

from helpers import query as db_rows
from offload.config.settings import Settings
from offload.mcp.server import build_server
from offload_emulator.config import EmulatorConfig

pytestmark = pytest.mark.anyio

# Haiku 5.5 at batch rates (50% of the published ones), pusd per token, written out by hand.
HAIKU_BATCH = {"in": 50_000, "w5m": 62_500, "w1h": 100_000, "read": 5_000, "out": 250_000}
SYSTEM = "You label support tickets by topic. " + " ".join(f"rule{i}: keep labels short." for i in range(600))


def succeeded(result: MessageBatchResult) -> anthropic.types.Message:
    assert result.type == "succeeded", result
    return result.message


def hand_cost(usage: anthropic.types.Usage) -> int:
    cc = usage.cache_creation
    w1h = cc.ephemeral_1h_input_tokens if cc else 0
    w5m = (usage.cache_creation_input_tokens or 0) - w1h
    return (
        usage.input_tokens * HAIKU_BATCH["in"]
        + w5m * HAIKU_BATCH["w5m"]
        + w1h * HAIKU_BATCH["w1h"]
        + (usage.cache_read_input_tokens or 0) * HAIKU_BATCH["read"]
        + usage.output_tokens * HAIKU_BATCH["out"]
    )


async def wait_done(c: Client, batch_id: str, timeout: float = 30) -> dict[str, Any]:
    with anyio.fail_after(timeout):
        while True:
            res = await c.call_tool("batch_status", {"batch_id": batch_id})
            assert not res.is_error, res
            data = res.structured_content
            assert isinstance(data, dict)
            if data["state"] == "done":
                return data
            await anyio.sleep(0.2)


async def test_thousand_item_batch_completes_and_settles_once_at_batch_rates(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    items = [f"ticket {i}: my invoice #{i} was charged twice" for i in range(1000)]
    with running(batch_delay_s=0.3) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            sub = await c.call_tool(
                "batch_submit",
                {"template": "Label this ticket:\n{item}", "items": items, "system": SYSTEM, "max_tokens": 64},
            )
            assert not sub.is_error, sub
            data = sub.structured_content
            assert isinstance(data, dict)
            bid = data["batch_id"]
            assert bid.startswith("b_") and data["requests"] == 1000 and len(data["api_batches"]) == 1
            assert data["model"] == "claude-haiku-5-5"
            status = await wait_done(c, bid)
            assert status["counts"] == {"succeeded": 1000} and status["pending"] == 0

            page = await c.call_tool("batch_results", {"batch_id": bid, "offset": 990, "limit": 20})
            assert not page.is_error, page
            pdata = page.structured_content
            assert isinstance(pdata, dict)
            assert [i["index"] for i in pdata["items"]] == list(range(990, 1000))
            assert all(i["status"] == "succeeded" and i["text"] for i in pdata["items"])
            assert pdata["items"][0]["label"] == items[990]

            out = await c.call_tool("batch_results", {"batch_id": bid, "write_to": "out/results.jsonl"})
            assert out.is_error  # the directory does not exist: refused with a clear message
            assert "does not exist" in out.content[0].text  # type: ignore[union-attr]
            (tmp_path / "out").mkdir()
            out = await c.call_tool("batch_results", {"batch_id": bid, "write_to": "out/results.jsonl"})
            assert not out.is_error, out
            md = await c.call_tool("batch_results", {"batch_id": bid, "write_to": "out/results.md"})
            assert not md.is_error, md
            api_ids = status["api_batches"]

        # Every item's full result is in the file, matched to its item.
        lines = [json.loads(x) for x in (tmp_path / "out/results.jsonl").read_text().splitlines()]
        assert [x["index"] for x in lines] == list(range(1000))
        assert [x["label"] for x in lines] == items
        assert (tmp_path / "out/results.md").read_text().count("\n## ") == 1000

        with anthropic.Anthropic(base_url=emu.url, api_key="test-key") as sdk:
            reported = {r.custom_id: r.result for bid_api in api_ids for r in sdk.messages.batches.results(bid_api)}
            sent = sdk.messages.batches.retrieve(api_ids[0])
        assert sent.request_counts.succeeded == 1000

    rows = db_rows(settings.db_path, "SELECT * FROM attempts WHERE batch = 1 ORDER BY id")
    assert len(rows) == 1000
    assert len({r["request_key"] for r in rows}) == 1000
    assert {r["outcome"] for r in rows} == {"ok"} and {r["batch_id"] for r in rows} == {bid}
    expected = sum(hand_cost(succeeded(res).usage) for res in reported.values())
    assert sum(r["cost_pusd"] for r in rows) == expected
    # Batch cache hits are best-effort ("typically 30% to 98%", batch-processing docs,
    # https://platform.claude.com/docs/en/build-with-claude/batch-processing): the emulator
    # honours a seeded share of lookups; the rest write the shared prefix again. A thousand
    # requests over an hour come seconds apart: 5m entries live through the batch, and a miss
    # then re-pays a 0.25x premium instead of 1h's 1x, so adaptive placement picks 5m.
    rate = EmulatorConfig.batch_cache_hit_rate
    hits = sum(1 for r in rows if r["cache_read"] > 0)
    assert (rate - 0.06) * 1000 <= hits <= (rate + 0.06) * 1000
    assert sum(r["cache_write_5m"] for r in rows) > 0 and sum(r["cache_write_1h"] for r in rows) == 0
    # Even so the cache pays for itself: cheaper than the same usage with every prompt token uncached.
    uncached = sum(
        (u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)) * HAIKU_BATCH["in"]
        + u.output_tokens * HAIKU_BATCH["out"]
        for u in (succeeded(res).usage for res in reported.values())
    )
    assert expected < uncached
    # The ledger's cache net gain is exactly that difference (reads saved minus write premiums).
    assert sum(r["cache_gain_pusd"] for r in rows) == uncached - expected
    assert db_rows(settings.db_path, "SELECT * FROM reservations") == []
    first = succeeded(reported["i5"]).content[0]
    assert first.type == "text"
    assert text_of_item(settings.db_path, bid, 5) == first.text


def text_of_item(db: Path, bid: str, idx: int) -> str:
    return str(db_rows(db, "SELECT text FROM batch_items WHERE batch_id = ? AND idx = ?", bid, idx)[0][0])


async def test_files_mode_reads_under_roots_and_errors_are_actionable(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):
        (docs / f"note{i}.txt").write_text(f"note number {i}: the build is red")
    outside = tmp_path.parent / "outside.txt"
    outside.write_text("secret")
    with running(batch_delay_s=0.1) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:

            async def err(args: dict[str, Any], tool: str = "batch_submit") -> str:
                res = await c.call_tool(tool, args)
                assert res.is_error, res
                return str(res.content[0].text)  # type: ignore[union-attr]

            assert "send exactly one of" in await err({})
            assert "together" in await err({"requests": [{"prompt": "a"}], "template": "{item}", "items": ["x"]})
            assert "no {item} placeholder" in await err({"template": "Label this", "items": ["x"]})
            assert "no {content} placeholder" in await err({"template": "{path}", "files": ["docs/*.txt"]})
            assert "unknown key(s) temperature" in await err({"requests": [{"prompt": "a", "temperature": 1}]})
            assert "used twice" in await err({"requests": [{"prompt": "a", "custom_id": "x"}] * 2})
            assert "outside the allowed roots" in await err({"template": "{content}", "files": [str(outside)]})
            assert "not allowed by policy" in await err({"template": "{item}", "items": ["x"], "tier": "gold"})
            assert "no such batch" in await err({"retry_failed": "b_nope"})
            assert "no batch 'b_nope'" in await err({"batch_id": "b_nope"}, "batch_status")
            none_open = await c.call_tool("batch_status", {})
            assert none_open.content[0].text == "no open batches"  # type: ignore[union-attr]

            sub = await c.call_tool("batch_submit", {"template": "Summarize {path}:\n{content}", "files": ["docs/*"]})
            assert not sub.is_error, sub
            assert isinstance(sub.structured_content, dict)
            bid = sub.structured_content["batch_id"]
            assert ".jsonl or .md" in await err({"batch_id": bid, "write_to": "r.txt"}, "batch_results")
            await wait_done(c, bid)
            page = await c.call_tool("batch_results", {"batch_id": bid})
            assert isinstance(page.structured_content, dict)
            assert [i["label"] for i in page.structured_content["items"]] == [f"docs/note{i}.txt" for i in range(3)]
            assert "no failed" in await err({"retry_failed": bid})
        sent = [r.body for r in emu.state.calls("/v1/messages/batches") if r.method == "POST"]
    prompts = [req["params"]["messages"][0]["content"][-1]["text"] for req in sent[0]["requests"]]
    assert prompts[1] == "docs/note1.txt:\nnote number 1: the build is red"


async def test_budget_refusal_names_what_is_left_and_holds_nothing(
    running: Callable[..., Any], make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from offload.config.settings import shipped

    policy = tmp_path / "tight.yaml"
    policy.write_text(shipped("default.yaml").read_text().replace("session_usd: 2", "session_usd: 0.01"))
    with running() as emu:
        settings = make_settings(emu.url, policy_path=policy)
        async with Client(build_server(settings)) as c:
            res = await c.call_tool("batch_submit", {"template": "Tag: {item}", "items": [f"x{i}" for i in range(50)]})
            assert res.is_error
            text = res.content[0].text  # type: ignore[union-attr]
            assert "session budget $0.01 would be exceeded" in text and "$0.01 left" in text, text
        assert emu.state.calls("/v1/messages/batches") == []
    assert db_rows(settings.db_path, "SELECT * FROM reservations") == []
    assert db_rows(settings.db_path, "SELECT * FROM batches") == []


async def test_the_batch_estimate_uses_how_long_the_models_answers_have_been(
    running: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    items = [f"ticket {i}" for i in range(4)]
    args = {"template": "Label: {item}", "items": items, "task": "classify", "max_tokens": 2000}
    with running(script=[{"match": "Label", "reply": "billing", "output_tokens": 3}]) as emu:
        settings = make_settings(emu.url)
        async with Client(build_server(settings)) as c:
            before = await c.call_tool("batch_submit", args)
            await wait_done(c, (before.structured_content or {})["batch_id"])
            for i in range(3):  # synchronous answers on the same model: 3 output tokens each
                await c.call_tool("routed_complete", {"prompt": f"Label: ticket {i}", "task": "classify"})
            after = await c.call_tool("batch_submit", args)
    first = Decimal((before.structured_content or {})["estimated_cost_usd"])
    second = Decimal((after.structured_content or {})["estimated_cost_usd"])
    # no history: 500 output tokens per answer assumed; then the observed 3 tokens
    per_item_out_first = 500 * Decimal(HAIKU_BATCH["out"]) / 10**12
    per_item_out_second = 3 * Decimal(HAIKU_BATCH["out"]) / 10**12
    assert first - second == len(items) * (per_item_out_first - per_item_out_second)
